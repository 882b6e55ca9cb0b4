#!/usr/bin/env bash
# The local stack: PostgreSQL (one server, or DB_NODES nodes under Patroni
# with etcd), Apache Kafka (KAFKA_NODES KRaft nodes), the services and the
# gateway, each a background process with its pid file
# under var/run and its log under var/log.
#
#   stack.sh up      start every part that is not running (touches no data)
#   stack.sh down    stop every part, leaving no process behind
#   stack.sh status  say what runs
#   stack.sh wipe    stop, then delete var/ (all data)
#   stack.sh pg-stop | pg-start     one part alone (used by the tests)
#   stack.sh broker-stop | broker-start    every Kafka node
#   stack.sh broker-wipe     stop Kafka and delete its logs (a lost disk);
#                            the next start formats the nodes empty
#   stack.sh services-stop | services-start
#   stack.sh zipkin-stop | zipkin-start    the tracing backend
#   stack.sh kill NAME       SIGKILL a part (postgres, kafka, kafka-2, zipkin, gateway,
#                            orders, payments-8083, ...; chaos tests); `up`
#                            restarts it. With DB_NODES=3, db-N (or
#                            db-leader) is a node's Patroni and PostgreSQL
#                            together, as a lost machine; `up` has it rejoin
#   stack.sh db-leader       the number of the database cluster's leader
#   stack.sh kill-every SERVICE     SIGKILL every instance of a service
#   stack.sh freeze-every SERVICE | thaw-every SERVICE   the same, SIGSTOP / SIGCONT
#   stack.sh restart SERVICE        stop and start every instance of a
#                            service with the environment's settings
#   stack.sh stop NAME       SIGTERM a part, as an operator would
#   stack.sh freeze NAME | thaw NAME     SIGSTOP / SIGCONT a part (db-N: a
#                            node's Patroni and its whole PostgreSQL)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# Runs a command as user $1 when root, else as ourselves (exec, no extra
# process): the servers refuse root, or should.
as_user() {
  local user=$1; shift
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$user" --regid="$(id -gn "$user")" --init-groups -- "$@"
  else
    "$@"
  fi
}
as_pg() { as_user "$PG_USER" "$@"; }

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

# SIGKILL, as a crash would, and waits until the process is gone or a
# zombie (nobody may reap it here): either way, dead. Bounded: 10 s.
kill_pid() {
  local pid=$1 i
  kill -KILL "$pid" 2>/dev/null || return 0
  for i in $(seq 200); do
    [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || return 0
    sleep 0.05
  done
  die "process $pid did not die from SIGKILL within 10 s"
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

# Waits until COMMAND succeeds, for SECONDS at most (by the clock: each
# probe must bound its own time too, as `curl --max-time` does). LOG=file
# is quoted on failure; WATCH=pid gives up at once when that process ends
# (a service that cannot bind its port exits: no point waiting for it).
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 deadline; shift 2
  deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    "$@" >/dev/null 2>&1 && return 0
    if [ -n "${WATCH:-}" ] && ! kill -0 "$WATCH" 2>/dev/null; then
      [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -n 8 "$LOG" >&2
      die "$what exited before it came up; see $LOG_DIR"
    fi
    sleep 0.1
  done
  [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -n 8 "$LOG" >&2
  die "$what did not come up within ${secs}s; see $LOG_DIR"
}

# An HTTP probe that cannot hang: a port that accepts and never answers
# costs two seconds, not for ever.
http_ok() { curl -fsS --connect-timeout 1 --max-time 2 -o /dev/null "$1"; }

# ---- data folders ----

# The data folder of a server that runs as user $2: var/$1, unless that user
# cannot reach it (a checkout under /root, say); then a new private folder
# under /var/tmp (mktemp: a name nobody can guess or plant a symlink at
# beforehand, mode 0700), with var/$1 a symlink to it. Prints its real path.
data_dir() {
  local d=$SHOP_VAR/$1 user=$2
  if [ ! -e "$d" ]; then
    mkdir -p "$d"
    chmod 700 "$d"
    [ "$(id -u)" = 0 ] && chown "$user:" "$d"
    if ! as_user "$user" test -w "$d"/. 2>/dev/null; then
      rmdir "$d"
      local alt
      alt=$(mktemp -d "/var/tmp/shop-$1.XXXXXXXXXX")
      chown "$user:" "$alt"
      ln -s "$alt" "$d"
      say "$user cannot enter $SHOP_VAR; the $1 data lives in $alt (var/$1 links there)" >&2
    fi
  fi
  readlink -f "$d"
}

# ---- PostgreSQL ----

pg_data() { data_dir pg "$PG_USER"; }

# The database password: generated once into var/pg-password (0600), and
# given to every client of ours through a pgpass file (PGPASSFILE, set by
# env.sh), never on a command line. The cluster accepts TCP from 127.0.0.1
# with SCRAM only: another local user of the machine cannot get in.
pg_secret() {
  local secret=$SHOP_VAR/pg-password
  if [ ! -s "$secret" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '\n/+=' >"$secret.tmp" && mv "$secret.tmp" "$secret")
  fi
  # Replaced whole (a new file, then a rename): a client reading it while
  # `up` runs again (the drills do that mid-burst) never finds it empty.
  (umask 077 && printf '127.0.0.1:*:*:shop:%s\n' "$(cat "$secret")" >"$PGPASSFILE.tmp" &&
    mv -f "$PGPASSFILE.tmp" "$PGPASSFILE")
}

pg_hba() { # written at every start, like shop.conf
  as_pg tee "$1/pg_hba.conf" >/dev/null <<HBA
# Written by scripts/stack.sh: TCP from loopback, SCRAM passwords only
# (there is no Unix socket). The password is in var/pg-password.
host all all 127.0.0.1/32 scram-sha-256
HBA
}

pg_ready() { "$PG_BIN/pg_isready" -q -t 2 -h 127.0.0.1 -p "$PG_PORT" -d postgres -U shop; }

pg_pid() {
  local data pid
  data=$(pg_data)
  [ -f "$data/postmaster.pid" ] || return 1
  pid=$(head -1 "$data/postmaster.pid")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres || return 1
  echo "$pid"
}

# PG_PORT lies in the kernel's range of ephemeral ports (32768-60999). A
# client that connects to it while PostgreSQL is down (the services'
# pools, pg_isready) walks through ephemeral ports and, sooner or later,
# gets PG_PORT itself as its own source port: TCP connects the socket to
# itself, and after it closes, TIME_WAIT holds the port for a minute, so the
# postmaster cannot bind it ("Address already in use"). Root reserves the
# port (net.ipv4.ip_local_reserved_ports: never handed out as a source
# port), which prevents it; without root, the start is retried past
# TIME_WAIT.
reserve_port() {
  local port=$1 f=/proc/sys/net/ipv4/ip_local_reserved_ports cur item
  [ "$(id -u)" = 0 ] && [ -w "$f" ] || return 0
  cur=$(cat "$f")
  for item in ${cur//,/ }; do
    if [ "${item#*-}" != "$item" ]; then
      [ "$port" -ge "${item%-*}" ] && [ "$port" -le "${item#*-}" ] && return 0
    elif [ "$item" = "$port" ]; then
      return 0
    fi
  done
  echo "${cur:+$cur,}$port" >"$f" 2>/dev/null || true
}

# Starts the postmaster and waits until it answers; a port held for now
# (see reserve_port) is tried again every second for 75 s.
pg_launch() {
  local data=$1 attempt pid said=""
  for attempt in $(seq 75); do
    # Opened by this shell, so the log need not be writable by PG_USER.
    setsid "${BASH_SOURCE[0]}" exec-postgres "$data" >>"$LOG_DIR/postgres.log" 2>&1 </dev/null &
    pid=$!
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
      pg_ready && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && break # running but not answering: give up below
    tail -n 6 "$LOG_DIR/postgres.log" | grep -q 'could not bind' || break
    [ -n "$said" ] || say "PostgreSQL: port $PG_PORT is held for now (TIME_WAIT?); trying again every second" >&2
    said=1
    sleep 1
  done
  tail -n 8 "$LOG_DIR/postgres.log" >&2
  die "PostgreSQL did not come up; see $LOG_DIR/postgres.log"
}

pg_start() {
  [ "$DB_NODES" = 1 ] || { cluster_start; return; }
  local data legacy=0
  # Our own psql and createdb calls below give up on a server that does
  # not answer (the services set their own timeouts in db.c).
  local -x PGCONNECT_TIMEOUT=5
  data=$(pg_data)
  # A cluster made before passwords (trust): give it one once it runs.
  [ -f "$data/PG_VERSION" ] && [ ! -s "$SHOP_VAR/pg-password" ] && legacy=1
  pg_secret
  if [ ! -f "$data/PG_VERSION" ]; then
    # The postgres user may not open our file: a private copy of its own
    # (mktemp, 0600), deleted right after.
    local pwfile
    pwfile=$(as_pg mktemp)
    as_pg tee "$pwfile" <"$SHOP_VAR/pg-password" >/dev/null
    as_pg "$PG_BIN/initdb" -D "$data" -U shop --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
      --locale=C.UTF-8 --no-instructions >>"$LOG_DIR/postgres.log" 2>&1 || {
      rm -f "$pwfile"
      die "initdb failed; see $LOG_DIR/postgres.log"
    }
    rm -f "$pwfile"
    echo "include_if_exists = 'shop.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
  fi
  [ "$legacy" = 1 ] || pg_hba "$data"
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
# What each statement costs and what the WAL does, for make bench's
# profile (pg_stat_statements, pg_stat_wal); both cheap enough to keep on.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_wal_io_timing = on
# The outboxes are queues (a row in and out per order): vacuumed and
# analyzed every 10 s rather than every minute, their heaps stay small, and
# a new database's tables get statistics within seconds.
autovacuum_naptime = 10s
CONF
  if ! pg_pid >/dev/null; then
    # A postmaster killed hard leaves its lock file; if the pid in it is not
    # a live postgres (gone, or a zombie nobody reaped), PostgreSQL would
    # still refuse to start on it.
    rm -f "$data/postmaster.pid"
    reserve_port "$PG_PORT"
    pg_launch "$data"
  fi
  if [ "$legacy" = 1 ]; then
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U shop -d postgres -qX -v ON_ERROR_STOP=1 \
      <<<"ALTER ROLE shop PASSWORD '$(cat "$SHOP_VAR/pg-password")'" >/dev/null
    pg_hba "$data"
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U shop -d postgres -qXtAc "SELECT pg_reload_conf()" >/dev/null
    say "the database now asks for the password in var/pg-password (was: trust)" >&2
  fi
  pg_databases
}

# The services' databases, made where missing (on the leader: every
# node's address, PGTARGETSESSIONATTRS=read-write).
pg_databases() {
  local db
  for db in identity orders payments; do
    if [ -z "$("$PG_BIN/psql" -h "$PG_HOSTS" -p "$PG_PORTS" -U shop -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      "$PG_BIN/createdb" -h "$PG_HOSTS" -p "$PG_PORTS" -U shop "$db"
    fi
  done
}

pg_stop() {
  [ "$DB_NODES" = 1 ] || { cluster_stop; return; }
  local data
  data=$(pg_data)
  pg_pid >/dev/null || return 0
  # Fast (clients cut, a clean checkpoint); if that does not finish in 30 s
  # (a backend that does not answer), immediate: down means down.
  as_pg "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w -t 30 >>"$LOG_DIR/postgres.log" 2>&1 ||
    as_pg "$PG_BIN/pg_ctl" stop -D "$data" -m immediate -w -t 30 >>"$LOG_DIR/postgres.log" 2>&1 || true
}

# ---- the database cluster (DB_NODES > 1): etcd and Patroni ----

# Node N: PostgreSQL on PG_PORT+N-1, its data in var/pg-N, managed by its
# own Patroni ("db-N": pid file, log with PostgreSQL's own lines, REST API
# on PATRONI_PORT+N-1). One etcd member holds the leader key. Everything
# runs as PG_USER.
db_port() { echo $((PG_PORT + $1 - 1)); }
patroni_port() { echo $((PATRONI_PORT + $1 - 1)); }
patroni_pid() { alive_pid "db-$1" "bin/patroni"; }
etcd_pid() { alive_pid etcd "etcd --name shop"; }
# The postmaster of node N (Patroni starts it detached, as pg_ctl does).
node_pg_pid() {
  local f pid
  f=$(readlink -f "$SHOP_VAR/pg-$1")/postmaster.pid
  [ -f "$f" ] || return 1
  pid=$(head -1 "$f" 2>/dev/null)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres || return 1
  echo "$pid"
}
# A node's view of itself (Patroni's GET /patroni), "" when it does not answer.
patroni_get() { curl -fsS --connect-timeout 1 --max-time 2 "http://127.0.0.1:$(patroni_port "$1")/$2" 2>/dev/null; }
# The node that leads now (its number), from the nodes' own REST APIs: the
# one whose /primary answers 200 (Patroni says so only while it holds the
# leader key and its PostgreSQL runs read-write).
db_leader() {
  local i
  for i in $(seq "$DB_NODES"); do
    curl -fsS --connect-timeout 1 --max-time 2 -o /dev/null "http://127.0.0.1:$(patroni_port "$i")/primary" 2>/dev/null &&
      { echo "$i"; return 0; }
  done
  return 1
}
# True when node N streams from the leader as its synchronous standby.
db_sync_ready() {
  local i
  for i in $(seq "$DB_NODES"); do
    curl -fsS --connect-timeout 1 --max-time 2 -o /dev/null "http://127.0.0.1:$(patroni_port "$i")/sync" 2>/dev/null && return 0
  done
  return 1
}
# True when every node runs: the leader and each replica streaming.
db_all_running() {
  local i
  db_leader >/dev/null || return 1
  for i in $(seq "$DB_NODES"); do
    [ "$i" = "$(db_leader)" ] && continue
    curl -fsS --connect-timeout 1 --max-time 2 -o /dev/null \
      "http://127.0.0.1:$(patroni_port "$i")/replica?lag=16MB" 2>/dev/null || return 1
  done
}

etcd_start() {
  etcd_pid >/dev/null && return 0
  command -v etcd >/dev/null || die "etcd is not installed: run make start (scripts/deps.sh) once"
  local data as=() peer=http://127.0.0.1:$((ETCD_PORT + 1))
  data=$(data_dir etcd "$PG_USER")
  [ "$(id -u)" = 0 ] && as=(setpriv --reuid="$PG_USER" --regid="$(id -gn "$PG_USER")" --init-groups --)
  # One member on loopback: the cluster's consensus store, not its data.
  # (etcd reads ETCD_* variables as its flags: ETCD_PORT is not one.)
  (cd / && spawn etcd "${as[@]}" env -u ETCD_PORT etcd --name shop --data-dir "$data/member-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "shop=$peer" \
    --enable-v2 --auto-compaction-mode periodic --auto-compaction-retention 1h --log-level warn)
  LOG=$LOG_DIR/etcd.log WATCH=$(cat "$RUN_DIR/etcd.pid") wait_for 30 etcd \
    http_ok "http://127.0.0.1:$ETCD_PORT/health"
}

etcd_stop() {
  local pid
  pid=$(etcd_pid) && stop_pid "$pid"
  rm -f "$RUN_DIR/etcd.pid"
}

# Node N's Patroni configuration, written at every start (mode 0600: it
# holds the passwords). What the cluster shares (timings, synchronous
# mode, PostgreSQL's settings) is written into etcd by the first node's
# bootstrap; a change to it later goes through patronictl edit-config.
patroni_conf() { # patroni_conf N DATA_DIR
  local n=$1 data=$2 dir conf
  dir=$(data_dir patroni "$PG_USER")
  conf=$dir/db-$n.yml
  as_pg tee "$conf.tmp" >/dev/null <<YAML
# Written by scripts/stack.sh (DB_NODES=$DB_NODES): node $n of the cluster.
scope: shop
namespace: /shop/
name: db-$n
log:
  level: INFO
  format: '%(asctime)s patroni %(levelname)s: %(message)s'
restapi:
  listen: 127.0.0.1:$(patroni_port "$n")
  connect_address: 127.0.0.1:$(patroni_port "$n")
# etcd's v2 API: Patroni 3.0.2's etcd3 client (Debian 12's) renews an
# expired leader key without checking that no other node took it, so a
# leader frozen past its ttl took the key back from the new leader on
# waking (seen by our drill; fixed upstream after 3.0.2, patroni pull request 2689). Its v2
# client renews only its own key (prevValue) and creates one only where
# none is (prevExist=false).
etcd:
  host: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    ttl: $PATRONI_TTL
    loop_wait: $PATRONI_LOOP_WAIT
    retry_timeout: $PATRONI_RETRY_TIMEOUT
    # A COMMIT answers once a second node has it (synchronous_commit on,
    # one synchronous standby), and only that standby may be promoted;
    # strict: with no standby left, writes wait rather than go on alone
    # (docs/decisions.md).
    synchronous_mode: true
    synchronous_mode_strict: true
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 200
        shared_buffers: 256MB
        wal_buffers: 16MB
        max_wal_size: 4GB
        checkpoint_timeout: 15min
        checkpoint_completion_target: 0.9
        shared_preload_libraries: pg_stat_statements
        pg_stat_statements.track: all
        track_wal_io_timing: 'on'
        autovacuum_naptime: 10s
        wal_keep_size: 512MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - auth: scram-sha-256
postgresql:
  listen: 127.0.0.1:$(db_port "$n")
  connect_address: 127.0.0.1:$(db_port "$n")
  data_dir: $data
  bin_dir: $PG_BIN
  pgpass: $dir/db-$n.pgpass
  authentication:
    superuser:
      username: shop
      password: '$(cat "$SHOP_VAR/pg-password")'
    replication:
      username: replicator
      password: '$(cat "$SHOP_VAR/pg-replication-password")'
  parameters:
    unix_socket_directories: ''
    logging_collector: 'off'
  pg_hba:
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  # A node that cannot be rewound onto the leader's history is cloned again.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  basebackup:
    - checkpoint: fast
tags:
  nofailover: false
  noloadbalance: false
YAML
  as_pg mv "$conf.tmp" "$conf"
  echo "$conf"
}

patroni_start() { # patroni_start N
  local n=$1 data conf as=()
  patroni_pid "$n" >/dev/null && return 0
  command -v patroni >/dev/null || die "Patroni is not installed: run make start (scripts/deps.sh) once"
  data=$(data_dir "pg-$n" "$PG_USER")
  conf=$(patroni_conf "$n" "$data")
  [ "$(id -u)" = 0 ] && as=(setpriv --reuid="$PG_USER" --regid="$(id -gn "$PG_USER")" --init-groups --)
  # Not our clients' PGTARGETSESSIONATTRS: Patroni connects to its own
  # node, a replica as well.
  (cd / && spawn "db-$n" "${as[@]}" env -u PGTARGETSESSIONATTRS patroni "$conf")
}

# etcd, then every node's Patroni (the first to take the initialize key
# makes the cluster, the others clone it), not waiting for them.
cluster_spawn() {
  local i
  pg_secret
  if [ ! -s "$SHOP_VAR/pg-replication-password" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '\n/+=' >"$SHOP_VAR/pg-replication-password")
  fi
  etcd_start
  for i in $(seq "$DB_NODES"); do
    reserve_port "$(db_port "$i")"
    patroni_start "$i"
  done
}

# The cluster spawned, then waited for: a leader and a synchronous standby
# (until then a COMMIT would wait); then the databases.
cluster_start() {
  local -x PGCONNECT_TIMEOUT=5
  cluster_spawn
  LOG=$LOG_DIR/db-1.log WATCH=$(cat "$RUN_DIR/db-1.pid") wait_for 120 "the database cluster's leader" db_leader
  LOG=$LOG_DIR/db-1.log wait_for 120 "a synchronous standby of the database cluster" db_sync_ready
  pg_databases
}

cluster_stop() {
  local i leader pid
  leader=$(db_leader 2>/dev/null || true)
  # Replicas first, the leader last: stopping the leader first would hand
  # its role to a replica that is about to stop.
  for i in $(seq "$DB_NODES") ; do
    [ "$i" = "$leader" ] && continue
    pid=$(patroni_pid "$i") && stop_pid "$pid"
  done
  [ -n "$leader" ] && pid=$(patroni_pid "$leader") && stop_pid "$pid"
  # A node whose Patroni was killed leaves its PostgreSQL running.
  for i in $(seq "$DB_NODES"); do
    rm -f "$RUN_DIR/db-$i.pid"
    pid=$(node_pg_pid "$i") && stop_pid "$pid"
  done
  etcd_stop
}

# The pids of node N as a lost machine would lose them: its Patroni and its
# whole PostgreSQL (postmaster and every backend).
node_pids() {
  local pid
  pid=$(patroni_pid "$1") && echo "$pid"
  if pid=$(node_pg_pid "$1"); then echo "$pid"; pgrep -P "$pid" || true; fi
}

node_kill() {
  local pids
  pids=$(node_pids "$1")
  [ -n "$pids" ] || die "db-$1 is not running"
  # All at once (kill takes them together): no moment with Patroni gone and
  # PostgreSQL still serving, or the other way round.
  kill -KILL $pids 2>/dev/null || true
  local pid
  for pid in $pids; do kill_pid "$pid"; done
}

node_signal() { # node_signal N STOP|CONT
  local pids
  pids=$(node_pids "$1")
  [ -n "$pids" ] || die "db-$1 is not running"
  kill "-$2" $pids
}

# Each node with its role (leader, sync_standby, replica), state and lag,
# as the cluster's members say (Patroni's GET /cluster, from the first
# node that answers), its pids and its addresses.
cluster_status() {
  local i p pg roles="" line
  for i in $(seq "$DB_NODES"); do roles=$(patroni_get "$i" cluster) && [ -n "$roles" ] && break; done
  for i in $(seq "$DB_NODES"); do
    p=$(patroni_pid "$i") || p=""
    pg=$(node_pg_pid "$i") || pg=""
    line=$(python3 -c 'import json, sys
try: members = json.loads(sys.argv[1])["members"]
except Exception: members = []
m = [m for m in members if m.get("name") == sys.argv[2]]
if not m: print("not in the cluster now")
else:
    m = m[0]
    lag = m.get("lag")
    print(m.get("role", "?") + ", " + m.get("state", "?") + ("" if lag in (None, "", 0) else ", %s bytes behind" % lag))' "$roles" "db-$i" 2>/dev/null || echo "?")
    if [ -n "$p" ]; then
      say "  $(printf '%-10s' "db-$i") pid $p (postgres ${pg:-none})   127.0.0.1:$(db_port "$i")  $line  (Patroni: http://127.0.0.1:$(patroni_port "$i")/)"
    else say "  $(printf '%-10s' "db-$i") stopped${pg:+ (its postgres $pg still runs)}"; fi
  done
  if p=$(etcd_pid); then say "  etcd       pid $p   http://127.0.0.1:$ETCD_PORT  (the cluster's leader key)"
  else say "  etcd       stopped"; fi
}

# ---- Apache Kafka (KRaft) ----

# Node 1 is "kafka", the others "kafka-2", "kafka-3", ... (pid and log names).
kafka_name() { if [ "$1" = 1 ]; then echo kafka; else echo "kafka-$1"; fi; }
# Replicas per partition (3, or fewer nodes) and how many must be in sync
# for a write to count (2 of 3).
kafka_replication() { echo $((KAFKA_NODES < 3 ? KAFKA_NODES : 3)); }
kafka_min_isr() { echo $((KAFKA_NODES < 3 ? 1 : 2)); }
kafka_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }

kafka_user() {
  [ "$(id -u)" = 0 ] || return 0
  id -u "$KAFKA_USER" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$KAFKA_USER"
}

# A folder of fetched jars (DIR, with its .complete stamp), readable by the
# Kafka user (who runs the Java servers): DIR itself, or a hard-linked copy
# of it under /var/tmp when that user cannot enter the checkout, found again
# through the link var/NAME while the jars are the same.
runnable_copy() { # runnable_copy DIR NAME
  local dir=$1 link=$SHOP_VAR/$2 alt old
  if as_user "$KAFKA_USER" test -r "$dir/.complete" 2>/dev/null; then
    echo "$dir"
    return
  fi
  if [ -L "$link" ] && cmp -s "$link/.complete" "$dir/.complete"; then
    readlink -f "$link"
    return
  fi
  # A fresh private folder (mktemp: nobody can plant one at a guessed name).
  alt=$(mktemp -d "/var/tmp/shop-$2.XXXXXXXXXX")
  cp -al "$dir/." "$alt/" 2>/dev/null || cp -a "$dir/." "$alt/"
  chmod -R a+rX "$alt"
  old=$(readlink -f "$link" 2>/dev/null || true)
  ln -sfn "$alt" "$link"
  [ -n "$old" ] && [ "$old" != "$alt" ] && rm -rf "$old"
  echo "$alt"
}

# The broker's classpath folder, readable by the Kafka user.
kafka_libs() {
  [ -f "$KAFKA_LIBS/.complete" ] ||
    die "Apache Kafka's jars are not in $KAFKA_LIBS: run make start (or scripts/deps.sh) once"
  runnable_copy "$KAFKA_LIBS" kafka-libs
}

# Runs one of Kafka's command-line tools (a Java main class) as ourselves.
kafka_tool() {
  "$KAFKA_JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$ROOT/kafka/tools-log4j.properties" -cp "$KAFKA_LIBS/*" "$@"
}

# The brokers' passwords: made once, before the first format (the
# SCRAM users are written into the cluster's metadata then), kept in
# var/kafka-secrets (0700, each file 0600), never on a command line (the
# format reads them from an @argfile the Kafka user alone can read). A
# cluster formatted before them cannot be entered: it must be made anew.
kafka_secrets() { # kafka_secrets BASE
  local base=$1 who pw formatted=0
  for who in $(seq "$KAFKA_NODES"); do [ -f "$base/node-$who/data/meta.properties" ] && formatted=1; done
  if [ ! -s "$KAFKA_SECRETS/broker" ]; then
    [ "$formatted" = 0 ] ||
      die "$SHOP_VAR/kafka was made without broker passwords (before SASL/SCRAM): run scripts/stack.sh broker-wipe (or make clean) to make it anew"
    (umask 077 && mkdir -p "$KAFKA_SECRETS")
    for who in broker orders payments; do
      (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$KAFKA_SECRETS/$who")
    done
  fi
  pw=$(cat "$KAFKA_SECRETS/broker")
  (umask 077 && cat >"$KAFKA_SECRETS/admin.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$pw";
PROPS
  cat >"$KAFKA_SECRETS/admin.kcat" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanisms=SCRAM-SHA-512
sasl.username=broker
sasl.password=$pw
PROPS
  )
}

# kcat as the brokers' own principal (the only one that may see everything).
kcat_admin() { kcat -F "$KAFKA_SECRETS/admin.kcat" "$@"; }

# Formats each node's storage once (the cluster id is kept in var/kafka, so
# a node whose data was lost is formatted into the same cluster, with the
# same SCRAM users) and renders its configuration at every start.
kafka_prepare() {
  kafka_user
  local base voters="" i id pw
  base=$(data_dir kafka "$KAFKA_USER")
  if [ -s "$base/nodes" ] && [ "$(cat "$base/nodes")" != "$KAFKA_NODES" ]; then
    die "$SHOP_VAR/kafka holds a cluster of $(cat "$base/nodes") node(s), not $KAFKA_NODES: run with KAFKA_NODES=$(cat "$base/nodes"), or make clean first"
  fi
  kafka_secrets "$base"
  pw=$(cat "$KAFKA_SECRETS/broker")
  if [ ! -s "$base/cluster.id" ]; then
    id=$(kafka_tool kafka.tools.StorageTool random-uuid) || die "kafka-storage random-uuid failed"
    echo "$id" | as_user "$KAFKA_USER" tee "$base/cluster.id" >/dev/null
  fi
  echo "$KAFKA_NODES" | as_user "$KAFKA_USER" tee "$base/nodes" >/dev/null
  for i in $(seq "$KAFKA_NODES"); do voters+="${voters:+,}$i@127.0.0.1:$(($(kafka_port "$i") + 1))"; done
  local replication min_isr
  replication=$(kafka_replication) min_isr=$(kafka_min_isr)
  for i in $(seq "$KAFKA_NODES"); do
    local node=$base/node-$i
    as_user "$KAFKA_USER" mkdir -p "$node"
    # Holds the brokers' password: 0600 before anything is written to it.
    as_user "$KAFKA_USER" touch "$node/server.properties"
    as_user "$KAFKA_USER" chmod 600 "$node/server.properties"
    sed -e "s|@NODE_ID@|$i|" -e "s|@VOTERS@|$voters|" -e "s|@HOST@|127.0.0.1|g" \
      -e "s|@PORT@|$(kafka_port "$i")|g" -e "s|@CONTROLLER_PORT@|$(($(kafka_port "$i") + 1))|g" \
      -e "s|@DATA_DIR@|$node/data|" -e "s|@REPLICATION@|$replication|g" -e "s|@MIN_ISR@|$min_isr|g" \
      -e "s|@BROKER_PASSWORD@|$pw|g" \
      "$ROOT/kafka/server.properties.template" | as_user "$KAFKA_USER" tee "$node/server.properties" >/dev/null
    as_user "$KAFKA_USER" tee "$node/log4j.properties" <"$ROOT/kafka/log4j.properties" >/dev/null
    if [ ! -f "$node/data/meta.properties" ]; then
      # Formatted now: the ACLs (metadata too) must be set again.
      rm -f "$base/acls.done"
      local who args=$node/format.args
      as_user "$KAFKA_USER" sh -c 'umask 077; cat >"$1"' _ "$args" <<ARGS
kafka.tools.StorageTool format --ignore-formatted -t $(cat "$base/cluster.id") -c $node/server.properties
$(for who in broker orders payments; do echo "--add-scram SCRAM-SHA-512=[name=$who,password=$(cat "$KAFKA_SECRETS/$who")]"; done)
ARGS
      as_user "$KAFKA_USER" "$KAFKA_JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j.configuration="file:$node/log4j.properties" -cp "$(kafka_libs)/*" "@$args" \
        >>"$LOG_DIR/$(kafka_name "$i").log" 2>&1 || {
        rm -f "$args"
        die "formatting Kafka node $i failed; see $LOG_DIR/$(kafka_name "$i").log"
      }
      rm -f "$args"
    fi
  done
}

kafka_node_conf() { echo "$(readlink -f "$SHOP_VAR/kafka")/node-$1/server.properties"; }

kafka_pid() { alive_pid "$(kafka_name "$1")" "kafka.Kafka $(kafka_node_conf "$1")"; }

# True when node $1 answers a metadata request.
kafka_answers() { kcat_admin -L -b "127.0.0.1:$(kafka_port "$1")" -m 2 >/dev/null 2>&1; }

# The partition count of topic $2 in kcat's listing $1, empty when absent.
topic_partitions() { sed -n "s/^ *topic \"$2\" with \([0-9]*\) partitions:.*/\1/p" <<<"$1"; }

# True when every topic of ours has at least KAFKA_PARTITIONS partitions
# (a topic made with more keeps them: Kafka cannot remove partitions), each
# with a leader.
kafka_topics_ready() {
  local out t n
  out=$(kcat_admin -L -b "$KAFKA_BROKERS" -m 3 2>/dev/null) || return 1
  for t in $KAFKA_TOPICS; do
    n=$(topic_partitions "$out" "$t")
    [ "${n:-0}" -ge "$KAFKA_PARTITIONS" ] || return 1
  done
  ! grep -q 'leader -1' <<<"$out"
}

# Creates the topics that do not exist yet: KAFKA_PARTITIONS partitions,
# three replicas (or as many as there are nodes), two of them in sync for a
# write to count when there are three.
kafka_topics_create() {
  local out t n
  out=$(kcat_admin -L -b "$KAFKA_BROKERS" -m 10 2>/dev/null) || die "Kafka does not answer at $KAFKA_BROKERS"
  for t in $KAFKA_TOPICS; do
    n=$(topic_partitions "$out" "$t")
    if [ -n "$n" ]; then
      [ "$n" -gt "$KAFKA_PARTITIONS" ] &&
        echo "note: topic $t keeps its $n partitions (KAFKA_PARTITIONS is $KAFKA_PARTITIONS; Kafka cannot remove partitions: \`make clean\` makes it anew)" >&2
      continue
    fi
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
      --command-config "$KAFKA_SECRETS/admin.properties" --create \
      --if-not-exists --topic "$t" --partitions "$KAFKA_PARTITIONS" --replication-factor "$(kafka_replication)" \
      --config "min.insync.replicas=$(kafka_min_isr)" 2>&1 | grep -v -e 'WARNING: Due to limitations' -e '^Created topic' >&2 || true
  done
}

# Who may do what on the broker, set once after each format (the ACLs live
# in the cluster's metadata): each service writes the one topic it
# produces, reads the one it consumes in its own consumer group, and
# nothing else but orders seeing how far payments' group has read.
# Kafka's AclCommand, one JVM per grant, run side by side.
kafka_acls_create() {
  local base pids=() rc=0 pid
  base=$(readlink -f "$SHOP_VAR/kafka")
  [ -f "$base/acls.done" ] && return 0
  acl() { kafka_tool kafka.admin.AclCommand --bootstrap-server "$KAFKA_BROKERS" \
    --command-config "$KAFKA_SECRETS/admin.properties" --add "$@" >/dev/null; }
  acl --allow-principal User:orders --operation Write --topic payment.requests & pids+=($!)
  acl --allow-principal User:orders --operation Read --topic payment.results --group orders & pids+=($!)
  # How far payments has read (its group's offsets): re-drive waits for it.
  acl --allow-principal User:orders --operation Describe --group payments & pids+=($!)
  acl --allow-principal User:payments --operation Write --topic payment.results & pids+=($!)
  acl --allow-principal User:payments --operation Read --topic payment.requests --group payments & pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  [ "$rc" = 0 ] || die "setting Kafka's ACLs failed"
  touch "$base/acls.done"
}

# Starts every node that is not running, waits until each answers and our
# topics are there with a leader for every partition.
kafka_start() {
  local i libs started=()
  for i in $(seq "$KAFKA_NODES"); do kafka_pid "$i" >/dev/null || started+=("$i"); done
  [ ${#started[@]} -gt 0 ] || return 0
  kafka_prepare
  libs=$(kafka_libs)
  for i in "${started[@]}"; do
    local conf as=()
    conf=$(kafka_node_conf "$i")
    [ "$(id -u)" = 0 ] && as=(setpriv --reuid="$KAFKA_USER" --regid="$(id -gn "$KAFKA_USER")" --init-groups --)
    # What bin/kafka-server-start.sh would run, with a capped heap.
    spawn "$(kafka_name "$i")" "${as[@]}" "$KAFKA_JAVA" "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      "-Dlog4j.configuration=file:${conf%/*}/log4j.properties" -cp "$libs/*" kafka.Kafka "$conf"
  done
  for i in "${started[@]}"; do
    LOG=$LOG_DIR/$(kafka_name "$i").log WATCH=$(cat "$RUN_DIR/$(kafka_name "$i").pid") \
      wait_for 90 "Kafka node $i" kafka_answers "$i"
  done
  kafka_topics_create
  kafka_acls_create
  wait_for 60 "Kafka's topics" kafka_topics_ready
}

# Stops every node with a controlled shutdown (SIGTERM: leaderships move
# first, logs close cleanly), all at once so that the quorum stays up while
# they do; SIGKILL after 60 s.
kafka_stop() {
  local i pids=() pid
  for i in $(seq "$KAFKA_NODES"); do
    pid=$(kafka_pid "$i") && pids+=("$pid") && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for i in $(seq "$KAFKA_NODES"); do rm -f "$RUN_DIR/$(kafka_name "$i").pid"; done
}

# The broker's data lost, as when its machine dies with its disk: every
# node killed (SIGKILL: no controlled shutdown hands anything over), every
# node's log folder deleted, so that the next start formats them empty
# (same cluster id). The chaos drills use it.
kafka_wipe_data() {
  local pid
  for i in $(seq "$KAFKA_NODES"); do
    pid=$(kafka_pid "$i") && kill_pid "$pid"
  done
  kafka_stop
  local i base
  base=$(readlink -f "$SHOP_VAR/kafka")
  for i in $(seq "$KAFKA_NODES"); do rm -rf "$base/node-$i/data"; done
}

# ---- Zipkin (traces) ----

# The Zipkin server: in-memory storage, a small heap, on 127.0.0.1 only
# (Armeria's port settings: QUERY_PORT alone would listen everywhere), run
# by the same OpenJDK as Kafka and as the same unprivileged user. It keeps
# nothing on disk: its traces last until it stops.
zipkin_pid() { alive_pid zipkin "zipkin-server-exec.jar"; }
zipkin_answers() { http_ok "http://127.0.0.1:$ZIPKIN_PORT/health"; }

zipkin_spawn() {
  [ "$TRACING" = on ] || return 0
  zipkin_pid >/dev/null && return 0
  [ -f "$ZIPKIN_JAR" ] ||
    die "the Zipkin server is not in $ZIPKIN_JAR: run make start (or scripts/deps.sh) once"
  kafka_user
  local dir as=()
  dir=$(runnable_copy "${ZIPKIN_JAR%/*}" zipkin-jar)
  [ "$(id -u)" = 0 ] && as=(setpriv --reuid="$KAFKA_USER" --regid="$(id -gn "$KAFKA_USER")" --init-groups --)
  (cd / && spawn zipkin "${as[@]}" env STORAGE_TYPE=mem MEM_MAX_SPANS="$ZIPKIN_MAX_SPANS" \
    SELF_TRACING_ENABLED=false "$KAFKA_JAVA" "-Xms$ZIPKIN_HEAP" "-Xmx$ZIPKIN_HEAP" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -jar "$dir/zipkin-server-exec.jar" --armeria.ports[0].ip=127.0.0.1 \
    --armeria.ports[0].port="$ZIPKIN_PORT" --armeria.ports[0].protocols=http)
}

# Started first and waited for last (before the services, which send it
# their spans): the JVM's start overlaps the database's and Kafka's.
zipkin_wait() {
  [ "$TRACING" = on ] || return 0
  zipkin_pid >/dev/null && zipkin_answers && return 0
  zipkin_spawn
  LOG=$LOG_DIR/zipkin.log WATCH=$(cat "$RUN_DIR/zipkin.pid") wait_for 90 "Zipkin" zipkin_answers
}

zipkin_stop() {
  local pid
  pid=$(zipkin_pid) && stop_pid "$pid"
  rm -f "$RUN_DIR/zipkin.pid"
}

# The services' tracing settings: spans to the stack's Zipkin, or none;
# the sampler the environment names, or TRACES_PER_SECOND new traces a
# second.
tracing_env() {
  if [ "$TRACING" = on ]; then
    echo "OTEL_TRACES_EXPORTER=zipkin OTEL_EXPORTER_ZIPKIN_ENDPOINT=http://127.0.0.1:$ZIPKIN_PORT/api/v2/spans"
    [ -n "${OTEL_TRACES_SAMPLER:-}" ] ||
      echo "OTEL_TRACES_SAMPLER=parentbased_ratelimiting OTEL_TRACES_SAMPLER_ARG=$TRACES_PER_SECOND"
  else
    echo "OTEL_TRACES_EXPORTER=none"
  fi
}

# ---- services ----

service_start() { # service_start NAME PORT ENV...   (NAME: orders, orders-8090, payments)
  local name=$1 port=$2 bin=${1%%-*}; shift 2
  alive_pid "$name" "bin/$bin" >/dev/null && return 0
  [ -x "$SHOP_BUILD/bin/$bin" ] || die "$SHOP_BUILD/bin/$bin is not built: run make build"
  # $(tracing_env) unquoted: its words are NAME=VALUE pairs
  (cd "$ROOT" && spawn "$name" env HTTP_PORT="$port" KAFKA_BROKERS="$KAFKA_BROKERS" \
    LOG_LEVEL="$SHOP_LOG_LEVEL" $(tracing_env) "$@" "$SHOP_BUILD/bin/$bin")
  LOG=$LOG_DIR/$name.log WATCH=$(cat "$RUN_DIR/$name.pid") wait_for 20 "$name" \
    http_ok "http://127.0.0.1:$port/healthz"
}

service_stop() {
  local pid
  pid=$(alive_pid "$1" "bin/${1%%-*}") && stop_pid "$pid"
  rm -f "$RUN_DIR/$1.pid"
}

# ---- gateway (nginx) ----

# nginx's workers never run as root: started by root, they run as nobody;
# when nobody cannot read the checkout (under /root, say), the files they
# serve are copied to a private folder nobody can (data_dir), refreshed at
# every start. Their temporary folders live there too.
gateway_render() {
  local dir=$SHOP_VAR/gateway orders="" payments="" port user_line="" static=$ROOT work=$SHOP_VAR/gateway
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    user_line="user nobody nogroup;"
    if ! setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        test -r "$ROOT/web/index.html" -a -r "$ROOT/gateway/docs/index.html" -a -x "$dir" 2>/dev/null; then
      work=$(data_dir gateway-files nobody)
      static=$work/static
      rm -rf "$static"
      mkdir -p "$static/gateway" "$static/node_modules"
      cp -r "$ROOT/web" "$static/web"
      cp -r "$ROOT/gateway/docs" "$static/gateway/docs"
      [ -d "$ROOT/node_modules/swagger-ui-dist" ] && cp -r "$ROOT/node_modules/swagger-ui-dist" "$static/node_modules/"
    fi
  fi
  mkdir -p "$work"/{client_body,proxy,fastcgi,uwsgi,scgi}
  [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$work"/{client_body,proxy,fastcgi,uwsgi,scgi}
  [ "$work" != "$dir" ] && [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$work"
  for port in $ORDERS_PORTS; do orders+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'; done
  for port in $PAYMENTS_PORTS; do payments+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'; done
  local identity=""
  for port in $IDENTITY_PORTS; do identity+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'; done
  # Per client address: requests a second (burst on top), connections, and
  # WebSockets; addresses in GATEWAY_UNLIMITED are not limited (the
  # benchmark's and the tests' load generators).
  local unlimited="" a
  for a in $GATEWAY_UNLIMITED; do unlimited+="        $a 0;"$'\n'; done
  sed -e "s|@VAR@|$SHOP_VAR|g" -e "s|@STATIC@|$static|g" -e "s|@WORK@|$work|g" -e "s|@PORT@|$GATEWAY_PORT|g" \
      -e "s|@HOST@|127.0.0.1|g" -e "s|@USER_LINE@|$user_line|" -e "s|@RATE@|$GATEWAY_RATE|g" \
      -e "s|@BURST@|$GATEWAY_BURST|g" -e "s|@CONNS@|$GATEWAY_CONNS|g" -e "s|@WS_CONNS@|$GATEWAY_WS_CONNS|g" \
      -e "s|@SIGNIN_RATE@|$GATEWAY_SIGNIN_RATE|g" -e "s|@ZIPKIN@|127.0.0.1:$ZIPKIN_PORT|g" \
      "$ROOT/gateway/nginx.conf.template" >"$dir/nginx.conf.tmp"
  awk -v o="${orders%$'\n'}" -v p="${payments%$'\n'}" -v i="${identity%$'\n'}" -v u="${unlimited%$'\n'}" \
    '{ if ($0 == "@ORDERS_SERVERS@") print o; else if ($0 == "@PAYMENTS_SERVERS@") print p;
       else if ($0 == "@IDENTITY_SERVERS@") print i;
       else if ($0 == "@UNLIMITED@") { if (u != "") print u } else print }' \
    "$dir/nginx.conf.tmp" >"$dir/nginx.conf"
  rm -f "$dir/nginx.conf.tmp"
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
  LOG=$LOG_DIR/gateway.error.log WATCH=$(cat "$RUN_DIR/gateway.pid") wait_for 10 gateway \
    http_ok "http://127.0.0.1:$GATEWAY_PORT/healthz"
}

gateway_stop() {
  local pid
  pid=$(alive_pid gateway "nginx: master") && stop_pid "$pid"
  rm -f "$RUN_DIR/gateway.pid"
}

# The name of a service's instance on a port: the first of its ports gets
# the plain name ("orders"), the others "orders-PORT".
instance_name() { # instance_name SERVICE PORT PORTS
  if [ "$2" = "${3%% *}" ]; then echo "$1"; else echo "$1-$2"; fi
}

services_start() {
  local port
  # Identity first: it makes the signing key on its first start, and the
  # other services read its public half.
  for port in $IDENTITY_PORTS; do
    service_start "$(instance_name identity "$port" "$IDENTITY_PORTS")" "$port" \
      IDENTITY_DATABASE_URL="$IDENTITY_DATABASE_URL" AUTH_PRIVATE_KEY_FILE="$AUTH_KEY_FILE" \
      ALLOWED_ORIGINS="$ALLOWED_ORIGINS"
  done
  for port in $PAYMENTS_PORTS; do
    service_start "$(instance_name payments "$port" "$PAYMENTS_PORTS")" "$port" \
      PAYMENTS_DATABASE_URL="$PAYMENTS_DATABASE_URL" AUTH_PUBLIC_KEY_FILE="$AUTH_KEY_FILE.pub" \
      ALLOWED_ORIGINS="$ALLOWED_ORIGINS" KAFKA_SASL_USERNAME=payments \
      KAFKA_SASL_PASSWORD_FILE="$KAFKA_SECRETS/payments"
  done
  for port in $ORDERS_PORTS; do
    # ORDERS_WRITERS_<port>: that instance's writers (the tests run one
    # instance with two, the other with the default).
    local writers_var=ORDERS_WRITERS_$port
    service_start "$(instance_name orders "$port" "$ORDERS_PORTS")" "$port" \
      ORDERS_DATABASE_URL="$ORDERS_DATABASE_URL" AUTH_PUBLIC_KEY_FILE="$AUTH_KEY_FILE.pub" \
      ALLOWED_ORIGINS="$ALLOWED_ORIGINS" KAFKA_SASL_USERNAME=orders \
      KAFKA_SASL_PASSWORD_FILE="$KAFKA_SECRETS/orders" ${!writers_var:+ORDERS_WRITERS=${!writers_var}}
  done
}

services_stop() {
  local port
  for port in $ORDERS_PORTS; do service_stop "$(instance_name orders "$port" "$ORDERS_PORTS")"; done
  for port in $PAYMENTS_PORTS; do service_stop "$(instance_name payments "$port" "$PAYMENTS_PORTS")"; done
  for port in $IDENTITY_PORTS; do service_stop "$(instance_name identity "$port" "$IDENTITY_PORTS")"; done
}

# ---- commands ----

up() {
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  echo "$DB_NODES" >"$SHOP_VAR/db-nodes"
  zipkin_spawn
  if [ "$DB_NODES" = 1 ]; then
    pg_start
    kafka_start
  else # the nodes elect a leader and clone it while Kafka starts
    cluster_spawn
    kafka_start
    pg_start
  fi
  zipkin_wait
  services_start
  gateway_start
  status
}

down() {
  [ -d "$SHOP_VAR" ] || return 0
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  gateway_stop
  services_stop
  kafka_stop
  pg_stop
  zipkin_stop
}

services_status() { # services_status SERVICE PORTS
  local port name p
  for port in $2; do
    name=$(instance_name "$1" "$port" "$2")
    if p=$(alive_pid "$name" "bin/$1"); then
      say "  $(printf '%-10s' "$name") pid $p   http://127.0.0.1:$port  (docs: /docs/)"
    else say "  $(printf '%-10s' "$name") stopped"; fi
  done
}

status() {
  local p i name
  say "Shop ($SHOP_VAR):"
  if [ "$DB_NODES" != 1 ]; then
    say "  database   $DB_NODES nodes (Patroni; databases identity, orders, payments on the leader)"
    cluster_status
  elif p=$(pg_pid 2>/dev/null); then say "  postgres   pid $p   postgresql://shop@127.0.0.1:$PG_PORT (databases: identity, orders, payments)"
  else say "  postgres   stopped"; fi
  for i in $(seq "$KAFKA_NODES"); do
    name=$(kafka_name "$i")
    if p=$(kafka_pid "$i"); then
      say "  $(printf '%-10s' "$name") pid $p   127.0.0.1:$(kafka_port "$i")  (Apache Kafka, KRaft node $i of $KAFKA_NODES)"
    else say "  $(printf '%-10s' "$name") stopped"; fi
  done
  services_status identity "$IDENTITY_PORTS"
  services_status orders "$ORDERS_PORTS"
  services_status payments "$PAYMENTS_PORTS"
  if [ "$TRACING" != on ]; then say "  zipkin     off (TRACING=off)"
  elif p=$(zipkin_pid); then
    say "  zipkin     pid $p   http://127.0.0.1:$ZIPKIN_PORT/zipkin/  (traces, in memory)"
  else say "  zipkin     stopped"; fi
  if p=$(alive_pid gateway "nginx: master"); then
    say "  gateway    pid $p   http://127.0.0.1:$GATEWAY_PORT  (shop: /  API: /api/  docs: /docs/)"
  else say "  gateway    stopped"; fi
  say "  logs       $LOG_DIR/"
  say ""
  say "Open http://localhost:$GATEWAY_PORT/ to shop."
  [ "$TRACING" = on ] && say "Open http://localhost:$GATEWAY_PORT/zipkin/ to see each order's trace."
  return 0
}

# The pid of a part by name: postgres, kafka (kafka-2, ...; "broker" is
# kafka), gateway, orders, orders-PORT, payments, payments-PORT.
part_pid() {
  case "$1" in
    postgres) pg_pid ;;
    db-leader) patroni_pid "$(db_leader)" ;;
    db-*) patroni_pid "${1#db-}" ;;
    etcd) etcd_pid ;;
    gateway) alive_pid gateway "nginx: master" ;;
    zipkin) zipkin_pid ;;
    broker | kafka) kafka_pid 1 ;;
    kafka-*) kafka_pid "${1#kafka-}" ;;
    *) alive_pid "$1" "bin/${1%%-*}" ;;
  esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) mkdir -p "$LOG_DIR" "$RUN_DIR"; status ;;
  pg-start) mkdir -p "$LOG_DIR" "$RUN_DIR"; pg_start ;;
  pg-stop) pg_stop ;;
  broker-start) mkdir -p "$LOG_DIR" "$RUN_DIR"; kafka_start ;;
  broker-stop) kafka_stop ;;
  broker-wipe) kafka_wipe_data ;;
  zipkin-start) mkdir -p "$LOG_DIR" "$RUN_DIR"; zipkin_wait ;;
  zipkin-stop) zipkin_stop ;;
  services-start) services_start ;;
  # Makes $2 an operator with a new random password, printed once.
  operator) [ -n "${2:-}" ] || die "usage: stack.sh operator USER_ID"
    { [ "$DB_NODES" = 1 ] && pg_pid >/dev/null || db_leader >/dev/null; } || die "the database is not running: make run first"
    (cd "$ROOT" && IDENTITY_DATABASE_URL="$IDENTITY_DATABASE_URL" "$SHOP_BUILD/bin/identity" operator "$2") ;;
  gateway-restart) mkdir -p "$LOG_DIR" "$RUN_DIR"; gateway_stop; gateway_start ;; # after changing its settings
  services-stop) services_stop ;;
  # The number of the database cluster's leader now (DB_NODES > 1).
  db-leader) db_leader || die "the database cluster has no leader now" ;;
  kill) # SIGKILL one part, as a crash would (the chaos drills); a node of
    # the database cluster (db-N, db-leader) loses its Patroni and its
    # PostgreSQL together, as with a lost machine
    if [[ "$2" == db-* ]]; then
      n=${2#db-}; [ "$n" = leader ] && { n=$(db_leader) || die "the database cluster has no leader now"; }
      node_kill "$n"; exit 0
    fi
    pid=$(part_pid "$2") || die "$2 is not running"
    kill_pid "$pid" ;;
  kill-every) # SIGKILL every instance of a service (orders, payments, identity)
    ports_var=$(tr '[:lower:]' '[:upper:]' <<<"$2")_PORTS
    [ -n "${!ports_var:-}" ] || die "usage: stack.sh kill-every orders|payments|identity"
    for port in ${!ports_var}; do
      pid=$(part_pid "$(instance_name "$2" "$port" "${!ports_var}")") && kill_pid "$pid"
    done ;;
  freeze-every | thaw-every) # SIGSTOP / SIGCONT every instance of a service
    ports_var=$(tr '[:lower:]' '[:upper:]' <<<"$2")_PORTS
    [ -n "${!ports_var:-}" ] || die "usage: stack.sh $1 orders|payments|identity"
    sig=$([ "$1" = freeze-every ] && echo STOP || echo CONT)
    for port in ${!ports_var}; do
      pid=$(part_pid "$(instance_name "$2" "$port" "${!ports_var}")") && kill "-$sig" "$pid"
    done ;;
  restart) # stop and start every instance of a service, with the settings
    # of the environment now (the drills turn re-drive off and on)
    ports_var=$(tr '[:lower:]' '[:upper:]' <<<"$2")_PORTS
    [ -n "${!ports_var:-}" ] || die "usage: stack.sh restart orders|payments|identity"
    for port in ${!ports_var}; do service_stop "$(instance_name "$2" "$port" "${!ports_var}")"; done
    services_start ;;
  stop) pid=$(part_pid "$2") && stop_pid "$pid" ;; # a clean stop of one part (SIGTERM)
  # A stalled part (SIGSTOP): its sockets stay open and nothing answers, as
  # with a host that hangs. For postgres, the whole server: the postmaster
  # and every backend (a frozen postmaster alone still serves the
  # connections it has).
  freeze | thaw) [[ "$2" == db-* ]] || exec "$0" "$1-part" "$2" # a database node: Patroni and PostgreSQL
    n=${2#db-}; [ "$n" = leader ] && { n=$(db_leader) || die "the database cluster has no leader now"; }
    node_signal "$n" "$([ "$1" = freeze ] && echo STOP || echo CONT)" ;;
  freeze-part) pid=$(part_pid "$2") || die "$2 is not running"
    kill -STOP "$pid"
    [ "$2" = postgres ] && pkill -STOP -P "$pid" || true ;;
  thaw-part) pid=$(part_pid "$2") || die "$2 is not running"
    [ "$2" = postgres ] && pkill -CONT -P "$pid" || true
    kill -CONT "$pid" ;;
  # Deletes all data: var/, and the folders under /var/tmp it may link to.
  wipe) down
    for d in pg pg-1 pg-2 pg-3 pg-4 pg-5 etcd patroni kafka kafka-libs zipkin-jar gateway-files; do [ -L "$SHOP_VAR/$d" ] && rm -rf "$(readlink -f "$SHOP_VAR/$d")"; done
    rm -rf "$SHOP_VAR" ;;
  # The postgres server in the foreground, as PG_USER (pg_start detaches it).
  exec-postgres) exec_as=(); [ "$(id -u)" = 0 ] && exec_as=(setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups --)
    exec "${exec_as[@]}" "$PG_BIN/postgres" -D "$2" ;;
  *) die "usage: stack.sh up|down|status|wipe|pg-start|pg-stop|broker-start|broker-stop|broker-wipe|zipkin-start|zipkin-stop|services-start|services-stop|gateway-restart|operator NAME|db-leader|kill NAME|kill-every SERVICE|freeze-every SERVICE|thaw-every SERVICE|restart SERVICE|stop NAME|freeze NAME|thaw NAME" ;;
esac
