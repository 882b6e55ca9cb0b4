# Sourced by scripts/bench.sh, bench/ab.sh and bench/ab-reads.sh: the
# services restarted for an A/B (restart_services), and the profile of a
# measured stretch of load, between two files the load generator creates
# (LOADGEN_MARK=PATH: PATH.start, PATH.end). CPU per program from /proc
# (ticks of every process, by name), PostgreSQL's statements
# (pg_stat_statements) and WAL (pg_stat_wal), and how the services batched
# (their /metrics). Needs psql_, OUT, ORDERS_PORT and PAYMENTS_PORT; writes
# $OUT/profile.json. hops_measured splits each measured order's latency
# at its transactions' timestamps.
cpu_ticks() { # -> "name ticks" per program, all its processes and threads
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{ # (processes come and go meanwhile)
    i = index($0, "("); j = length($0); while (substr($0, j, 1) != ")") j--
    name = substr($0, i + 1, j - i - 1); gsub(/ /, "_", name)
    split(substr($0, j + 2), f, " ")
    ticks[name] += f[12] + f[13] } END { for (n in ticks) print n, ticks[n] }'
}
service_counters() { # -> "service.metric value" for the batching counters
  local svc port
  for svc in orders payments; do
    port=$([ "$svc" = orders ] && echo "$ORDERS_PORT" || echo "$PAYMENTS_PORT")
    curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | awk -v s="$svc" '
      /^(group_commits_total|group_requests_total|outbox_published_total|outbox_relay_batch_size_count|consumer_batches_total|consumer_messages_total)[{ ]/ {
        read = $1 ~ /group="reads"/; sub(/[{ ].*/, "", $1)
        print s "." (read ? "reads_" : "") $1, $NF }'
  done
}
restart_services() { # orders and payments again, with the environment given (A/B)
  local svc pid
  for svc in orders payments; do # stopped by their pid files, started again by stack.sh
    pid=$(cat "$SHOP_VAR/run/$svc.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -n "$pid" ] && [ -e "/proc/$pid" ] || break; sleep 0.1; done
  done
  scripts/stack.sh up >/dev/null
  scripts/stack.sh gateway-restart >/dev/null
}
profile_measured() {
  local mark=$1 have_pss t0 t1 reset=()
  # The statements' view, only where the cluster loads the module
  # (scripts/stack.sh); without it the view exists but cannot be read.
  have_pss=$(psql_ -d postgres -c "SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements'")
  [ "$have_pss" = t ] && psql_ -d postgres -c "SET client_min_messages = warning" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
  [ "$have_pss" = t ] && reset=(-c "SELECT pg_stat_statements_reset()")
  until [ -e "$mark.start" ]; do sleep 0.05; done
  # As little as can be at the start of the measured part: one psql, the
  # CPU counters, the services' counters.
  psql_ -d postgres "${reset[@]}" -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
  cpu_ticks >"$OUT/cpu.before"; service_counters >"$OUT/counters.before"
  t0=$(date +%s.%N)
  until [ -e "$mark.end" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  cpu_ticks >"$OUT/cpu.after"; service_counters >"$OUT/counters.after"
  local statements='[]' wal
  [ "$have_pss" = t ] && statements=$(psql_ -d postgres -c "
    SELECT coalesce(json_agg(x ORDER BY x.total_ms DESC), '[]') FROM (
      SELECT d.datname AS db, s.calls, round(s.total_exec_time::numeric, 1) AS total_ms,
             round((s.total_exec_time / s.calls)::numeric, 3) AS ms_per_call,
             round(s.rows::numeric / s.calls, 1) AS rows_per_call,
             left(regexp_replace(s.query, '\s+', ' ', 'g'), 100) AS query
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
       WHERE s.toplevel AND d.datname IN ('orders', 'payments', 'identity')
       ORDER BY s.total_exec_time DESC LIMIT 12) x")
  wal=$(psql_ -d postgres -c "SELECT row_to_json(w) FROM (SELECT wal_records AS records, wal_fpi AS full_pages,
        wal_bytes::bigint AS bytes, wal_write AS writes, wal_sync AS syncs, round(wal_sync_time::numeric, 1) AS sync_ms
        FROM pg_stat_wal) w")
  local secs cpu counters
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  cpu=$(awk -v hz="$(getconf CLK_TCK)" -v secs="$secs" 'NR == FNR { b[$1] = $2; next }
        { p = ($2 - b[$1]) / hz / secs * 100; if (p >= 0.5) printf "%s\"%s\": %.1f", (n++ ? ", " : "{"), $1, p }
        END { print (n ? "}" : "{}") }' "$OUT/cpu.before" "$OUT/cpu.after")
  counters=$(awk 'NR == FNR { b[$1] = $2; next } { printf "%s\"%s\": %d", (n++ ? ", " : "{"), $1, $2 - b[$1] }
        END { print (n ? "}" : "{}") }' "$OUT/counters.before" "$OUT/counters.after")
  jq -n --argjson seconds "$secs" --argjson cpu "$cpu" --argjson statements "$statements" \
    --argjson wal "${wal:-null}" --argjson counters "$counters" \
    '{seconds: $seconds, cpu_pct_of_one_core: $cpu, statements: $statements, wal: $wal, counters: $counters}' \
    >"$OUT/profile.json"
}

# Each order's latency split at its transactions' timestamps, from the
# databases' own clock (one cluster): due (when the load generator was to
# send it) -> orders.created_at (its transaction began) -> the payments
# inbox's processed_at (its payment's transaction began) -> orders.updated_at
# (its status update's transaction began) -> final (its status arrived on
# the WebSocket). Before the first timestamp are the client, nginx, the
# HTTP thread and the group commit's queue; each hop is a commit, a relay
# round, the broker and a consumer's fetch and gather; after the last are
# the update's commit, the NOTIFY and the push. $1: the load generator's
# LOADGEN_ORDERS file (id due answered final, real-time seconds).
# -> JSON: {orders, before_ms, to_payments_ms, to_orders_ms, after_ms,
# total_ms}, each {p50, p90, p99}; {} without the file or its orders.
hops_measured() {
  local orders=$1 t0
  [ -s "$orders" ] || { echo '{}'; return; }
  t0=$(awk 'NR == 1 || $2 < t { t = $2 } END { printf "%.3f", t }' "$orders")
  # (\copy takes one line)
  psql_ -d payments -c "\\copy (SELECT order_id, extract(epoch FROM processed_at) FROM inbox WHERE processed_at >= to_timestamp($t0)) TO STDOUT" |
    psql_ -d orders -c "CREATE TEMP TABLE hop_inbox (order_id uuid, at float8)" \
      -c "CREATE TEMP TABLE hop_client (order_id uuid, due float8, answered float8, final float8)" \
      -c "\\copy hop_inbox FROM pstdin" -c "\\copy hop_client FROM '$orders' WITH (DELIMITER ' ')" -c "
      WITH part AS (
        SELECT x.k, x.s * 1000 AS ms
          FROM hop_client c JOIN orders o ON o.id = c.order_id JOIN hop_inbox i USING (order_id),
               LATERAL (VALUES
                 ('before_ms', extract(epoch FROM o.created_at) - c.due),
                 ('to_payments_ms', i.at - extract(epoch FROM o.created_at)),
                 ('to_orders_ms', extract(epoch FROM o.updated_at) - i.at),
                 ('after_ms', c.final - extract(epoch FROM o.updated_at)),
                 ('total_ms', c.final - c.due)) AS x(k, s)),
      q AS (
        SELECT k, count(*) AS n,
               percentile_cont('{0.5,0.9,0.99}'::float8[]) WITHIN GROUP (ORDER BY ms) AS v
          FROM part GROUP BY k)
      SELECT coalesce(jsonb_build_object('orders', max(n)) || jsonb_object_agg(k, jsonb_build_object(
               'p50', round(v[1]::numeric, 1), 'p90', round(v[2]::numeric, 1), 'p99', round(v[3]::numeric, 1))),
             '{}')
        FROM q" || echo '{}'
}
