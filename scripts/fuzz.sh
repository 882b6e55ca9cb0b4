#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of tests/fuzz with clang (ASan,
# UBSan, coverage) into build/fuzz and runs each for FUZZ_SECONDS (60), one
# after the other, from the checked-in seeds (tests/fuzz/corpus/TARGET) plus
# what earlier runs found (build/fuzz/corpus/TARGET, not checked in). Prints
# each target's executions and findings; fails on any crash, leak,
# sanitizer report or broken invariant, leaving the input that caused it in
# build/fuzz/artifacts/ (add it to the seeds once fixed: a regression input).
# FUZZ_TARGETS picks some (default: every tests/fuzz/fuzz_*.c).
#
# FUZZ_DB=1 (make fuzz FUZZ_DB=1) runs the HTTP targets against a real
# PostgreSQL instead of a dead port: a server of its own (var/fuzz, port
# 54730) with the services' databases, migrated by the targets. Then any
# 5xx is a finding, and so is a 2xx for a request body the OpenAPI document
# refuses (tests/fuzz/accepted.mjs checks every accepted body after the run).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_DB=${FUZZ_DB:-0}
OUT=$ROOT/build/fuzz

scripts/deps.sh fuzz
if [ "$FUZZ_DB" = 1 ]; then
  targets=${FUZZ_TARGETS:-fuzz_http_orders fuzz_http_payments}
  # A PostgreSQL of the fuzz run's own, stopped whatever happens.
  export SHOP_VAR=$ROOT/var/fuzz PG_PORT=54730
  export PGPASSFILE=$SHOP_VAR/pgpass
  trap 'scripts/stack.sh pg-stop >/dev/null 2>&1 || true' EXIT
  scripts/stack.sh pg-start >/dev/null
  export FUZZ_ORDERS_DATABASE_URL=postgresql://shop@127.0.0.1:$PG_PORT/orders
  export FUZZ_PAYMENTS_DATABASE_URL=postgresql://shop@127.0.0.1:$PG_PORT/payments
else
  targets=${FUZZ_TARGETS:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}
fi
# shellcheck disable=SC2086 # one word per target
make --no-print-directory -j2 BUILD=build/fuzz SAN=fuzz CC=clang-14 $(printf 'build/fuzz/%s ' $targets)

status=0 total=0
mkdir -p "$OUT/artifacts"
printf '%-20s %12s %10s %8s  %s\n' target executions "exec/s" corpus result
for t in $targets; do
  mkdir -p "$OUT/corpus/$t"
  log=$OUT/$t.log
  # -timeout: one input may not take 10 s; -rss_limit_mb: nor 2 GB. The
  # outer timeout: a target stuck for good (once, a crash report deadlocked
  # in the sanitizer's leak check, with libmicrohttpd's threads running)
  # fails the run instead of hanging it.
  accepted=$OUT/accepted-$t.txt
  : >"$accepted"
  if FUZZ_ACCEPTED=$accepted timeout --signal=KILL $((FUZZ_SECONDS + 120)) "$OUT/$t" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$OUT/artifacts/$t-" "$OUT/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    result=ok
  else
    result="FOUND: $(grep -m1 -E 'ERROR: |runtime error|deadly signal|SUMMARY' "$log" | cut -c1-80) (log: $log)"
    status=1
  fi
  execs=$(grep -o 'number_of_executed_units: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  rate=$(grep -o 'average_exec_per_sec: *[0-9]*' "$log" | tail -1 | awk '{print $2}')
  corpus=$(find "$OUT/corpus/$t" "tests/fuzz/corpus/$t" -type f | wc -l)
  printf '%-20s %12s %10s %8s  %s\n' "$t" "${execs:-0}" "${rate:-0}" "$corpus" "$result"
  total=$((total + ${execs:-0}))
done
if [ "$FUZZ_DB" = 1 ]; then
  # Every body a service accepted, against its OpenAPI document.
  for t in $targets; do
    service=${t#fuzz_http_}
    node --no-warnings tests/fuzz/accepted.mjs "$service" "$OUT/accepted-$t.txt" || status=1
  done
fi
echo "fuzz: $total executions in all, $([ "$status" = 0 ] && echo "no findings" || echo "FINDINGS above")"
exit "$status"
