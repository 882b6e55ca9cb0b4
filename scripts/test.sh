#!/usr/bin/env bash
# `make test`: installs what is missing, builds (plain, then with ASan and
# UBSan), runs the unit tests, starts a separate test stack (its own
# PostgreSQL cluster, dev broker and services under var/test, on ports of
# its own, so a running `make run` stack is left alone), runs the
# integration tests against it with the sanitizer builds, and stops it,
# whatever happened.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/deps.sh test
make --no-print-directory build
make --no-print-directory BUILD=build/san SAN=1 build

export SHOP_ROOT=$ROOT
export SHOP_VAR=$ROOT/var/test
export SHOP_BUILD=$ROOT/build/san
export PG_PORT=${TEST_PG_PORT:-54330}
export GATEWAY_PORT=${TEST_GATEWAY_PORT:-18000}
export ORDERS_PORT=${TEST_ORDERS_PORT:-18080}
# Two orders instances behind the gateway, as when scaled out.
export ORDERS_PORTS="$ORDERS_PORT $((ORDERS_PORT + 2))"
export PAYMENTS_PORT=${TEST_PAYMENTS_PORT:-18081}
export SHOP_LOG_LEVEL=info
# Heal lost messages sooner than the default 5 s, so the drills end sooner.
export REDRIVE_AFTER_MS=1000 REDRIVE_MAX_MS=4000 PURGE_INTERVAL_MS=500
# Ping idle WebSockets after 1 s (drop after 3 s of silence).
export WS_PING_MS=1000
export DEVBROKER_TOPICS=payment.requests,payment.results,shop.test
export SHOP_GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT
export SHOP_ORDERS_URL=http://127.0.0.1:$ORDERS_PORT
export SHOP_ORDERS_URLS="http://127.0.0.1:$ORDERS_PORT http://127.0.0.1:$((ORDERS_PORT + 2))"
export SHOP_PAYMENTS_URL=http://127.0.0.1:$PAYMENTS_PORT
export ORDERS_DATABASE_URL=postgresql://shop@127.0.0.1:$PG_PORT/orders
export PAYMENTS_DATABASE_URL=postgresql://shop@127.0.0.1:$PG_PORT/payments
# Leaks are real failures; librdkafka's own threads end after destroy.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Criterion forks each test; its own runner output goes to stderr.
CRITERION=(--jobs 1 --full-stats)

status=0
stop_stack() {
  scripts/stack.sh down || true
  # A sanitizer report in a service's log fails the run even if no test saw it.
  if grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$SHOP_VAR"/log/*.log 2>/dev/null; then
    echo "sanitizer reports in the logs above" >&2
    status=1
  fi
}
finish() {
  stop_stack
  if [ "$status" = 0 ]; then echo "ALL TESTS PASSED"; else echo "TESTS FAILED"; fi
  exit "$status"
}
trap finish EXIT

echo "== C formatting (clang-format, .clang-format; fix with make format)"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror || status=1

echo "== OpenAPI lint (@redocly/cli)"
npx --no-install redocly lint api/orders.yaml api/payments.yaml || status=1

echo "== unit tests (sanitizers on)"
build/san/tests/unit "${CRITERION[@]}" || status=1

echo "== integration tests: real PostgreSQL and dev broker (sanitizers on)"
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$SHOP_VAR"
scripts/stack.sh up
export KAFKA_BROKERS=$(cat "$SHOP_VAR/broker.addr")
build/san/tests/integration "${CRITERION[@]}" || status=1

echo "== chaos drills: broker loss, kill -9, database down (sanitizers on)"
build/san/tests/chaos "${CRITERION[@]}" || status=1

echo "== through the gateway: live status, browser story, API contract"
node --experimental-websocket --no-warnings --test --test-concurrency=1 \
  tests/e2e/live_status.test.mjs tests/e2e/shop.test.mjs tests/contract/contract.test.mjs || status=1

echo "== benchmark smoke: make bench in a few seconds (honesty checks asserted, speed not)"
BENCH_BUILD=$ROOT/build BENCH_OUT=$ROOT/build/bench-smoke BENCH_SECONDS=2 BENCH_WARMUP_SECONDS=1 BENCH_RATE=100 \
  BENCH_RATES="100 200" BENCH_STEP_SECONDS=1 BENCH_USERS=10 BENCH_PGBENCH_SECONDS=1 \
  BENCH_READ_SECONDS=1 scripts/bench.sh >"$ROOT/build/bench-smoke.log" 2>&1 || {
  status=1
  tail -20 "$ROOT/build/bench-smoke.log"
}
grep -A12 '^| figure' "$ROOT/build/bench-smoke/results.md" 2>/dev/null || true
