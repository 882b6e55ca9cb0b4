#!/usr/bin/env bash
# A/B of settings for reads on the running stack (`make start`): restarts
# orders and payments with the environment given, reads as `make bench`
# does (wrk, 64 connections, bench/reads.lua: one user's orders in turn and
# their account) for 2 s unmeasured, then AB_SECONDS (8), and prints one
# line: reads a second, the machine's CPU a read (/proc/stat, every
# program and the kernel), and how many reads a statement carried. Run the
# two sides alternately, several times each:
#
#   READ_THREADS=0 bench/ab-reads.sh off; bench/ab-reads.sh default; ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export GATEWAY_UNLIMITED=${GATEWAY_UNLIMITED:-127.0.0.1}
. scripts/env.sh
. bench/profile.sh
AB_SECONDS=${AB_SECONDS:-8}
OUT=$ROOT/build/ab
mkdir -p "$OUT"
psql_() { "$PG_BIN/psql" -h "$PG_HOSTS" -p "$PG_PORTS" -U shop -v ON_ERROR_STOP=1 -qAt "$@"; }
GATEWAY=http://127.0.0.1:$GATEWAY_PORT

# A reader with orders: made once (one user, 300 orders), then reused.
RUN=abreads
export BENCH_USER_ID="bench-$RUN-0"
if [ "$(psql_ -d orders -c "SELECT count(*) FROM orders WHERE user_id = '$BENCH_USER_ID'")" = 0 ]; then
  scripts/stack.sh gateway-restart >/dev/null
  build/bin/loadgen "$GATEWAY" "$RUN" 1 100 3 "" 1 0 >/dev/null 2>&1
fi

restart_services

BENCH_TOKEN=$(curl -fsS -X POST "$GATEWAY/api/sessions" -H 'Content-Type: application/json' \
  -d "{\"user_id\":\"$BENCH_USER_ID\",\"password\":\"bench password $RUN\"}" | jq -r .token)
export BENCH_TOKEN
BENCH_ORDER_IDS=$(psql_ -d orders -c "SELECT id FROM orders WHERE user_id = '$BENCH_USER_ID' LIMIT 1000" | tr '\n' ' ')
export BENCH_ORDER_IDS
wrk -t2 -c64 -d2s -s bench/reads.lua "$GATEWAY" >/dev/null

busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; } # ticks, all cores
service_counters >"$OUT/reads.before"
b0=$(busy)
wrk -t2 -c64 -d"${AB_SECONDS}s" -s bench/reads.lua "$GATEWAY" >"$OUT/wrk.txt"
b1=$(busy)
service_counters >"$OUT/reads.after"
rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$OUT/wrk.txt")
batch=$(join <(sort "$OUT/reads.before") <(sort "$OUT/reads.after") | awk '
  /reads_group_requests_total/ { r += $3 - $2 } /reads_group_commits_total/ { c += $3 - $2 }
  END { if (c > 0) printf "%.1f", r / c; else printf "1 (no read group)" }')
awk -v name="${1:-run}" -v r="$rps" -v t=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v s="$AB_SECONDS" -v b="$batch" \
  'BEGIN { printf "%s: %.0f reads/s, %.1f µs of CPU a read (%.2f cores busy), %s reads a statement\n",
           name, r, t / hz * 1e6 / (r * s), t / hz / s, b }'
grep -q 'Non-2xx' "$OUT/wrk.txt" && grep 'Non-2xx' "$OUT/wrk.txt" || true
