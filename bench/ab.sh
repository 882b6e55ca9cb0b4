#!/usr/bin/env bash
# A/B of settings on the running stack (`make start`): restarts orders and
# payments with the environment given, places AB_RATE orders/s (1000) for
# AB_SECONDS (10) after AB_WARMUP_SECONDS (20) of the same, and prints
# four lines: latency, the CPU per order of PostgreSQL + the broker + the
# services + nginx, how they batched, and where the time went (each hop;
# bench/profile.sh). Run the two sides alternately, several times each: a
# single run moves by +-30 %.
#
#   ORDERS_WRITERS=1 bench/ab.sh one-writer; bench/ab.sh default; ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export GATEWAY_UNLIMITED=${GATEWAY_UNLIMITED:-127.0.0.1}
. scripts/env.sh
. bench/profile.sh
AB_RATE=${AB_RATE:-1000} AB_SECONDS=${AB_SECONDS:-10} AB_WARMUP_SECONDS=${AB_WARMUP_SECONDS:-20}
OUT=$ROOT/build/ab
mkdir -p "$OUT"
psql_() { "$PG_BIN/psql" -h "$PG_HOSTS" -p "$PG_PORTS" -U shop -v ON_ERROR_STOP=1 -qAt "$@"; }

restart_services

rm -f "$OUT"/mark.* "$OUT/orders.txt"
profile_measured "$OUT/mark" &
profiler=$!
trap 'kill $profiler 2>/dev/null || true' EXIT
LOADGEN_MARK="$OUT/mark" LOADGEN_ORDERS="$OUT/orders.txt" build/bin/loadgen "http://127.0.0.1:$GATEWAY_PORT" "ab$(date +%s%N)" 100 \
  "$AB_RATE" "$AB_SECONDS" "" 5 "$AB_WARMUP_SECONDS" 2>/dev/null >"$OUT/loadgen.json"
wait "$profiler"
jq -r --arg name "${1:-run}" --argjson rate "$AB_RATE" --slurpfile lg "$OUT/loadgen.json" '
  .cpu_pct_of_one_core as $c | .counters as $k |
  ([$c.postgres, $c.java, $c.orders, $c.payments, $c.nginx] | map(. // 0) | add) as $stack |
  def per(a; b): if (b // 0) > 0 then (a / b * 100 | floor / 100) else 0 end;
  "\($name): p50 \($lg[0].p50_ms | floor) ms, p99 \($lg[0].p99_ms | floor) ms;",
  "  CPU \(per($stack * 10; $rate)) ms an order (PostgreSQL \($c.postgres // 0) %, broker \($c.java // 0) %, orders \($c.orders // 0) %, payments \($c.payments // 0) %, nginx \($c.nginx // 0) % of a core; load generator \(if $c.loadgen then "\($c.loadgen) %" else "not sampled (it had exited)" end));",
  "  \(per($k["orders.group_requests_total"]; $k["orders.group_commits_total"])) orders a group commit, relays \(per($k["orders.outbox_published_total"]; $k["orders.outbox_relay_batch_size_count"])) / \(per($k["payments.outbox_published_total"]; $k["payments.outbox_relay_batch_size_count"])) messages a round, \(per(.wal.syncs; $rate * .seconds)) WAL flushes an order"
' "$OUT/profile.json"
hops_measured "$OUT/orders.txt" | jq -r 'select(.orders) | "  where it went, p50 / p99 ms: before the transaction \(.before_ms.p50) / \(.before_ms.p99), orders -> payments \(.to_payments_ms.p50) / \(.to_payments_ms.p99), payments -> orders \(.to_orders_ms.p50) / \(.to_orders_ms.p99), after the update \(.after_ms.p50) / \(.after_ms.p99)"'
