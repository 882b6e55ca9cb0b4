#!/usr/bin/env bash
# The test command tested: `make test` (scripts/test.sh) must fail, and say
# which step failed, whenever a step fails, including the ones outside any
# suite. Each case runs a step or two of a run of its own (SUITE), in
# var/test-runner on ports 200 above the test stack's, and checks its exit
# status and last lines:
#   1. a test stack that cannot start (the identity service's port taken)
#      fails the run, and the suites that needed it never count as passed;
#   2. a suite that ran no test (a filter that matches nothing) fails it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OFFSET=200
OUT=$ROOT/build/test-runner
mkdir -p "$OUT"
fails=0

holder=""
cleanup() { [ -z "$holder" ] || kill "$holder" 2>/dev/null || true; }
trap cleanup EXIT

check() { # check NAME LOG RC WANT_TEXT...
  local name=$1 log=$2 rc=$3 want
  shift 3
  if [ "$rc" = 0 ]; then
    echo "FAIL $name: the run exited 0"; fails=$((fails + 1)); return
  fi
  if grep -q '^ALL TESTS PASSED' "$log"; then
    echo "FAIL $name: the run said ALL TESTS PASSED"; fails=$((fails + 1)); return
  fi
  for want in "$@"; do
    if ! grep -qF -- "$want" "$log"; then
      echo "FAIL $name: no \"$want\" in its output ($log)"; fails=$((fails + 1)); return
    fi
  done
  echo "ok   $name (exit $rc)"
}

run() { # run LOG ENV... : one nested run, its status in $rc
  local log=$1
  shift
  rc=0
  # No Zipkin: these runs test the runner, and a JVM's start would only slow them.
  env TEST_VAR=var/test-runner TEST_PORT_OFFSET=$OFFSET TEST_LOG_SUFFIX=-runner TRACING=off "$@" \
    timeout --kill-after=10 240 scripts/test.sh >"$log" 2>&1 || rc=$?
}

# 1. The identity service's port taken by a listener that accepts and never
#    answers (the identity instance cannot bind it and exits).
port=$((18084 + OFFSET))
python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True); time.sleep(600)' "$port" >"$OUT/holder.log" 2>&1 &
holder=$!
for _ in $(seq 50); do grep -q listening "$OUT/holder.log" && break; sleep 0.1; done
t0=$SECONDS
run "$OUT/stack-cannot-start.log" SUITE=integration
check "a stack that cannot start fails the run ($((SECONDS - t0)) s)" "$OUT/stack-cannot-start.log" "$rc" \
  "failed steps: stack" "TESTS FAILED" "identity exited before it came up"
kill "$holder" 2>/dev/null || true
holder=""
# The nested run stopped its stack; its data goes too (never var/test,
# which the outer run's environment names).
SHOP_VAR=$ROOT/var/test-runner scripts/stack.sh wipe >/dev/null 2>&1 || true

# 2. A suite whose filter matches no test.
run "$OUT/no-test.log" SUITE=unit TEST='no_such_suite/*'
check "a suite that ran no test fails the run" "$OUT/no-test.log" "$rc" \
  "suite unit ran no test" "failed steps: unit" "TESTS FAILED"

echo "runner: $((2 - fails)) of 2 cases as expected"
[ "$fails" = 0 ]
