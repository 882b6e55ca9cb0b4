#!/usr/bin/env bash
# The local stack: PostgreSQL, the dev broker and the services, each a
# background process with its pid file under var/run and its log under
# var/log.
#
#   stack.sh up      start every part that is not running (touches no data)
#   stack.sh down    stop every part, leaving no process behind
#   stack.sh status  say what runs
#   stack.sh wipe    stop, then delete var/ (all data)
#   stack.sh pg-stop | pg-start     one part alone (used by the tests)
#   stack.sh broker-stop | broker-start
#   stack.sh kill NAME       SIGKILL a part (postgres, broker, gateway, orders,
#                            payments; chaos tests); `up` restarts it
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# Runs a command as the PostgreSQL user (exec, no extra process).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$@"
  else
    "$@"
  fi
}

# ---- process bookkeeping ----

# Prints the pid in var/run/$1.pid if that process is alive and is $2.
alive_pid() {
  local f=$RUN_DIR/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

# Starts "$@" detached, logging to var/log/$1.log; records its pid.
spawn() {
  local name=$1; shift
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

# Sends TERM, waits up to 15 s, then KILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 i; shift 2
  for i in $(seq $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what did not come up within ${secs}s; see $LOG_DIR"
}

# ---- PostgreSQL ----

# The data directory: var/pg, unless the PostgreSQL user cannot reach it
# (a checkout under /root, say); then a folder under /var/tmp, with var/pg
# a symlink to it.
pg_data() {
  local d=$SHOP_VAR/pg
  if [ ! -e "$d" ]; then
    mkdir -p "$d"
    chmod 700 "$d"
    [ "$(id -u)" = 0 ] && chown "$PG_USER:" "$d"
    if ! as_pg test -w "$d"/. 2>/dev/null; then
      rmdir "$d"
      local alt
      alt=/var/tmp/shop-pg-$(printf '%s' "$SHOP_VAR" | md5sum | cut -c1-12)
      mkdir -p "$alt"
      chmod 700 "$alt"
      chown "$PG_USER:" "$alt"
      ln -s "$alt" "$d"
      say "PostgreSQL user $PG_USER cannot enter $SHOP_VAR; its data lives in $alt (var/pg links there)" >&2
    fi
  fi
  readlink -f "$d"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U shop; }

pg_pid() {
  local data pid
  data=$(pg_data)
  [ -f "$data/postmaster.pid" ] || return 1
  pid=$(head -1 "$data/postmaster.pid")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres || return 1
  echo "$pid"
}

pg_start() {
  local data
  data=$(pg_data)
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$data" -U shop --auth=trust -E UTF8 --locale=C.UTF-8 \
      --no-instructions >>"$LOG_DIR/postgres.log" 2>&1 || die "initdb failed; see $LOG_DIR/postgres.log"
    echo "include_if_exists = 'shop.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
  fi
  # Rewritten at every start, so that an existing cluster follows too.
  as_pg tee "$data/shop.conf" >/dev/null <<CONF
# Shop's embedded cluster (written by scripts/stack.sh): loopback only, no
# Unix socket. Durability as PostgreSQL ships it (fsync, synchronous_commit);
# WAL sized so that a benchmark's writes do not force checkpoints.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
wal_buffers = 16MB
max_wal_size = 4GB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
logging_collector = off
CONF
  if ! pg_pid >/dev/null; then
    # A postmaster killed hard leaves its lock file; if the pid in it is not
    # a live postgres (gone, or a zombie nobody reaped), PostgreSQL would
    # still refuse to start on it.
    rm -f "$data/postmaster.pid"
    # Opened by this shell, so the log need not be writable by PG_USER.
    setsid "${BASH_SOURCE[0]}" exec-postgres "$data" >>"$LOG_DIR/postgres.log" 2>&1 </dev/null &
    wait_for 30 PostgreSQL pg_ready
  fi
  local db
  for db in orders payments; do
    if [ -z "$("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U shop -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U shop "$db"
    fi
  done
}

pg_stop() {
  local data
  data=$(pg_data)
  pg_pid >/dev/null || return 0
  as_pg "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w -t 30 >>"$LOG_DIR/postgres.log" 2>&1 || true
}

# ---- dev broker ----

broker_start() {
  alive_pid broker devbroker >/dev/null && return 0
  # Come back on the same port as last time, so running clients reconnect.
  local port=0
  [ -f "$BROKER_ADDR_FILE" ] && port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$BROKER_ADDR_FILE")
  rm -f "$BROKER_ADDR_FILE"
  DEVBROKER_PORT=${port:-0} DEVBROKER_ADDR_FILE=$BROKER_ADDR_FILE LOG_LEVEL=$SHOP_LOG_LEVEL \
    spawn broker "$SHOP_BUILD/bin/devbroker"
  for _ in $(seq 50); do
    [ -s "$BROKER_ADDR_FILE" ] && return 0
    alive_pid broker devbroker >/dev/null || break
    sleep 0.1
  done
  if [ "$port" != 0 ]; then # the old port is taken: any free one will do
    say "dev broker: port $port is taken, taking another" >&2
    DEVBROKER_PORT=0 DEVBROKER_ADDR_FILE=$BROKER_ADDR_FILE spawn broker "$SHOP_BUILD/bin/devbroker"
    wait_for 5 "dev broker" test -s "$BROKER_ADDR_FILE"
    return 0
  fi
  die "dev broker did not start; see $LOG_DIR/broker.log"
}

broker_stop() {
  local pid
  pid=$(alive_pid broker devbroker) && stop_pid "$pid"
  rm -f "$RUN_DIR/broker.pid"
}

# ---- services ----

service_start() { # service_start NAME PORT ENV...   (NAME: orders, orders-8082, payments)
  local name=$1 port=$2 bin=${1%%-*}; shift 2
  alive_pid "$name" "bin/$bin" >/dev/null && return 0
  [ -x "$SHOP_BUILD/bin/$bin" ] || die "$SHOP_BUILD/bin/$bin is not built: run make build"
  (cd "$ROOT" && spawn "$name" env HTTP_PORT="$port" KAFKA_BROKERS="$(cat "$BROKER_ADDR_FILE")" \
    LOG_LEVEL="$SHOP_LOG_LEVEL" "$@" "$SHOP_BUILD/bin/$bin")
  wait_for 20 "$name" curl -fsS "http://127.0.0.1:$port/healthz"
}

service_stop() {
  local pid
  pid=$(alive_pid "$1" "bin/${1%%-*}") && stop_pid "$pid"
  rm -f "$RUN_DIR/$1.pid"
}

# ---- gateway (nginx) ----

gateway_render() {
  local dir=$SHOP_VAR/gateway orders="" payments="" port user_line=""
  mkdir -p "$dir"/{client_body,proxy,fastcgi,uwsgi,scgi}
  for port in $ORDERS_PORTS; do orders+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'; done
  payments="        server 127.0.0.1:$PAYMENTS_PORT;"
  if [ "$(id -u)" = 0 ]; then
    # Workers drop to nobody when nobody can read the files they serve.
    if setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        test -r "$ROOT/web/index.html" -a -r "$ROOT/gateway/docs/index.html" 2>/dev/null; then
      user_line="user nobody nogroup;"
    else
      user_line="user root root; # nobody cannot enter $ROOT"
    fi
  fi
  sed -e "s|@VAR@|$SHOP_VAR|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$GATEWAY_PORT|g" \
      -e "s|@HOST@|127.0.0.1|g" -e "s|@USER_LINE@|$user_line|" \
      "$ROOT/gateway/nginx.conf.template" >"$dir/nginx.conf.tmp"
  awk -v o="${orders%$'\n'}" -v p="$payments" \
    '{ if ($0 == "@ORDERS_SERVERS@") print o; else if ($0 == "@PAYMENTS_SERVERS@") print p; else print }' \
    "$dir/nginx.conf.tmp" >"$dir/nginx.conf"
  rm -f "$dir/nginx.conf.tmp"
  if [ "$(id -u)" = 0 ] && [ "${user_line#user nobody}" != "$user_line" ]; then
    chown -R nobody:nogroup "$dir"/{client_body,proxy,fastcgi,uwsgi,scgi}
  fi
}

gateway_start() {
  alive_pid gateway "nginx: master" >/dev/null && return 0
  # Workers of a master killed hard go on serving the port: stop them, or
  # the new master cannot listen.
  local pid
  for pid in $(ss -ltnpH "sport = :$GATEWAY_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] && stop_pid "$pid"
  done
  gateway_render
  nginx -t -q -p "$SHOP_VAR/gateway" -c "$SHOP_VAR/gateway/nginx.conf" 2>>"$LOG_DIR/gateway.error.log" ||
    die "the gateway configuration does not load; see $LOG_DIR/gateway.error.log"
  spawn gateway nginx -p "$SHOP_VAR/gateway" -c "$SHOP_VAR/gateway/nginx.conf" -g "daemon off;"
  wait_for 10 gateway curl -fsS "http://127.0.0.1:$GATEWAY_PORT/healthz"
}

gateway_stop() {
  local pid
  pid=$(alive_pid gateway "nginx: master") && stop_pid "$pid"
  rm -f "$RUN_DIR/gateway.pid"
}

# The name of the orders instance on a port: the first is "orders".
orders_name() {
  local first=${ORDERS_PORTS%% *}
  if [ "$1" = "$first" ]; then echo orders; else echo "orders-$1"; fi
}

# ---- commands ----

up() {
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  pg_start
  broker_start
  service_start payments "$PAYMENTS_PORT" PAYMENTS_DATABASE_URL="$PAYMENTS_DATABASE_URL"
  local port
  for port in $ORDERS_PORTS; do
    service_start "$(orders_name "$port")" "$port" ORDERS_DATABASE_URL="$ORDERS_DATABASE_URL"
  done
  gateway_start
  status
}

down() {
  [ -d "$SHOP_VAR" ] || return 0
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  gateway_stop
  local port
  for port in $ORDERS_PORTS; do service_stop "$(orders_name "$port")"; done
  service_stop payments
  broker_stop
  pg_stop
}

status() {
  local p
  say "Shop ($SHOP_VAR):"
  if p=$(pg_pid 2>/dev/null); then say "  postgres   pid $p   $DB_URL_BASE (databases: orders, payments)"; else say "  postgres   stopped"; fi
  if p=$(alive_pid broker devbroker); then say "  broker     pid $p   $(cat "$BROKER_ADDR_FILE" 2>/dev/null)"; else say "  broker     stopped"; fi
  local port name
  for port in $ORDERS_PORTS; do
    name=$(orders_name "$port")
    if p=$(alive_pid "$name" bin/orders); then
      say "  $(printf '%-10s' "$name") pid $p   http://127.0.0.1:$port  (docs: /docs/)"
    else say "  $(printf '%-10s' "$name") stopped"; fi
  done
  if p=$(alive_pid payments bin/payments); then
    say "  payments   pid $p   http://127.0.0.1:$PAYMENTS_PORT  (docs: /docs/)"
  else say "  payments   stopped"; fi
  if p=$(alive_pid gateway "nginx: master"); then
    say "  gateway    pid $p   http://127.0.0.1:$GATEWAY_PORT  (shop: /  API: /api/  docs: /docs/)"
  else say "  gateway    stopped"; fi
  say "  logs       $LOG_DIR/"
  say ""
  say "Open http://localhost:$GATEWAY_PORT/ to shop."
}


case "${1:-}" in
  up) up ;;
  down) down ;;
  status) mkdir -p "$LOG_DIR" "$RUN_DIR"; status ;;
  pg-start) mkdir -p "$LOG_DIR" "$RUN_DIR"; pg_start ;;
  pg-stop) pg_stop ;;
  broker-start) mkdir -p "$LOG_DIR" "$RUN_DIR"; broker_start ;;
  broker-stop) broker_stop ;;
  kill) # SIGKILL one part, as a crash would (the chaos drills)
    case "$2" in
      postgres) pid=$(pg_pid) ;;
      gateway) pid=$(alive_pid gateway "nginx: master") ;;
      broker) pid=$(alive_pid broker devbroker) ;;
      *) pid=$(alive_pid "$2" "bin/${2%%-*}") ;;
    esac
    kill -KILL "$pid"
    # Gone, or a zombie (nobody may reap it here): either way, dead.
    while [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.05; done ;;
  # Deletes all data: var/, and the PostgreSQL folder var/pg may link to.
  wipe) down; [ -L "$SHOP_VAR/pg" ] && rm -rf "$(readlink -f "$SHOP_VAR/pg")"; rm -rf "$SHOP_VAR" ;;
  # The postgres server in the foreground, as PG_USER (pg_start detaches it).
  exec-postgres) exec_as=(); [ "$(id -u)" = 0 ] && exec_as=(setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups --)
    exec "${exec_as[@]}" "$PG_BIN/postgres" -D "$2" ;;
  *) die "usage: stack.sh up|down|status|wipe|pg-start|pg-stop|broker-start|broker-stop" ;;
esac
