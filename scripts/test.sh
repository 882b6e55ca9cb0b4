#!/usr/bin/env bash
# `make test`: installs what is missing, builds (plain, then with ASan and
# UBSan), runs the unit tests, starts a separate test stack (its own
# PostgreSQL cluster, Apache Kafka node and services under var/test, on
# ports of its own, so a running `make run` stack is left alone), runs the
# integration tests, the chaos drills, the gateway/browser/contract tests,
# schemathesis and a benchmark smoke against it with the sanitizer builds
# (the libFuzzer targets run a few seconds each before), then a three-node
# Kafka cluster drill on a second stack (var/test-cluster), and stops every
# stack, whatever happened. Its last lines name the steps that failed and
# count what passed and failed; it exits non-zero when anything failed
# (packages, build, a stack that did not start, a suite, a suite that ran
# no test, a sanitizer report in a service's log).
#
# SUITE runs some steps only (`make test SUITE=unit`, or several:
# SUITE="unit integration"; default: all, in the order of ALL_STEPS; `bench`
# names both benchmark smokes). TEST narrows them to the tests of that name:
# a Criterion --filter for the C suites (TEST='refund/*',
# TEST='orders_api/creates_an_order') and node's --test-name-pattern for
# the browser and contract tests; a suite where it matches nothing fails.
# TEST_STEPS is SUITE's older name.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

. scripts/test-env.sh
# Criterion forks each test; its own runner output goes to stderr.
CRITERION=(--jobs 1 --full-stats)

# The steps of a run, in order; TEST_STEPS picks some (the test of this
# script runs a step or two of a run of its own: tests/scripts/runner.sh).
ALL_STEPS="format lint unit fuzz integration chaos e2e schemathesis bench-smoke bench-long-smoke cluster runner"
TEST_STEPS=" $(tr ',' ' ' <<<"${SUITE:-${TEST_STEPS:-$ALL_STEPS}}") "
TEST_STEPS=${TEST_STEPS// bench / bench-smoke bench-long-smoke }
for s in $TEST_STEPS; do
  [[ " $ALL_STEPS " == *" $s "* ]] || {
    echo "make test: no suite \"$s\"; the suites are: $ALL_STEPS (and bench: both bench steps)" >&2
    exit 2
  }
done
wanted() { [[ " $TEST_STEPS " == *" $1 "* ]]; }
# TEST as each runner takes it (none: the suite's whole).
CR_FILTER=()
[ -z "${TEST:-}" ] || CR_FILTER=(--filter "$TEST")
# Where the first test stack lives and the offset of its ports: a run of
# this script inside another (tests/scripts/runner.sh) moves both.
TEST_VAR=${TEST_VAR:-var/test}
TEST_PORT_OFFSET=${TEST_PORT_OFFSET:-0}

# Until the cluster drill, the first test stack: what `trap finish` stops.
test_stack "$TEST_VAR" "$TEST_PORT_OFFSET" 1
status=0
passed=0 failed=0
failed_steps=()
step_name=setup
LOGS=$ROOT/build/test-logs${TEST_LOG_SUFFIX:-}
mkdir -p "$LOGS"

# Says which step runs now: a failure outside any suite names it.
step() { # step NAME HEADLINE
  step_name=$1
  echo "== $2"
}

# Records a failed step once (a suite and the sanitizer check may both
# name the same one).
fail_step() {
  local s
  status=1
  for s in "${failed_steps[@]}"; do [ "$s" = "$1" ] && return 0; done
  failed_steps+=("$1")
}

# Runs one suite, shows its output, and adds its counts to the tally:
# Criterion's "Synthesis" line, node's "# pass"/"# fail", or one check. A
# suite that ran no test at all (a filter that matches nothing, a file that
# defines none) fails: a run that did not run proves nothing.
suite() { # suite NAME COMMAND...
  local name=$1 rc p f kind=check
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  local pid=$!
  tail -n +1 -f --pid="$pid" "$LOGS/$name.log" 2>/dev/null || true
  wait "$pid" && rc=0 || rc=$?
  if line=$(grep -a 'Synthesis: Tested:' "$LOGS/$name.log" | tail -1) && [ -n "$line" ]; then
    kind=tests
    p=$(sed 's/.*Passing: \([0-9]*\).*/\1/' <<<"$line")
    f=$(( $(sed 's/.*Failing: \([0-9]*\).*/\1/' <<<"$line") + $(sed 's/.*Crashing: \([0-9]*\).*/\1/' <<<"$line") ))
  elif grep -aq '^# pass ' "$LOGS/$name.log"; then
    kind=tests
    p=$(grep -a '^# pass ' "$LOGS/$name.log" | awk '{s += $3} END {print s}')
    f=$(grep -a '^# fail ' "$LOGS/$name.log" | awk '{s += $3} END {print s}')
  else
    p=$((rc == 0)) f=$((rc != 0))
  fi
  if [ "$kind" = tests ] && [ "$((p + f))" = 0 ]; then
    echo "suite $name ran no test" >&2
    rc=1
  fi
  [ "$rc" = 0 ] || { fail_step "$name"; [ "$f" -gt 0 ] || f=1; }
  passed=$((passed + p)) failed=$((failed + f))
  # What failed and why, again at the very end: a CI shows only the tail.
  if [ "$rc" != 0 ]; then
    local why
    why=$(grep -a -E '^\[(FAIL|----)\]|^not ok' "$LOGS/$name.log" | grep -a -v -e 'Criterion v' -e '^\[----\] *$' | tail -n 24 || true)
    [ -n "$why" ] || why=$(tail -n 6 "$LOGS/$name.log" || true)
    failures+="[$name]"$'\n'"$why"$'\n'
  fi
}

stop_stack() {
  [ "${stopped_var:-}" != "$SHOP_VAR" ] || return 0
  stopped_var=$SHOP_VAR
  scripts/stack.sh down || true
  # A sanitizer report or a failed assertion (a library's abort) in a
  # service's log fails the run even if no test saw it: `stack.sh up`
  # restarts a service that died, and a drill can go on unaware.
  if grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|: Assertion .* failed' "$SHOP_VAR"/log/*.log 2>/dev/null; then
    echo "sanitizer reports or failed assertions in the logs above" >&2
    fail_step "sanitizer reports ($SHOP_VAR/log)"
    failed=$((failed + 1))
  fi
}
# Runs at every exit. `set -e` ends the script on any failing command
# outside a suite (packages, build, a stack that does not come up): that
# exit status is kept, never replaced by the suites' tally.
finish() {
  local rc=$?
  [ "$rc" = 0 ] || { fail_step "$step_name (exit $rc)"; failed=$((failed + 1)); }
  trap - EXIT
  stop_stack
  if [ "$status" = 0 ]; then
    echo "ALL TESTS PASSED"
  else
    [ -z "${failures:-}" ] || printf 'what failed (from build/test-logs):\n%s' "$failures"
    echo "failed steps: ${failed_steps[*]}"
    echo "TESTS FAILED"
  fi
  echo "tests: $passed passed, $failed failed"
  exit "$status"
}
trap finish EXIT

step build "packages and build (plain, then with ASan and UBSan)"
scripts/deps.sh test
make --no-print-directory build
make --no-print-directory BUILD=build/san SAN=1 build

# Starts the test stack in var (wiped first), timed.
fresh_stack() { # fresh_stack WHAT
  scripts/stack.sh down >/dev/null 2>&1 || true
  scripts/stack.sh wipe >/dev/null 2>&1 || true
  local t0
  t0=$(date +%s)
  scripts/stack.sh up
  echo "   (the $1 came up in $(($(date +%s) - t0)) s)"
}

if wanted runner; then
  step runner "the test command itself: a run that cannot start its stack, or runs no test, fails"
  suite runner tests/scripts/runner.sh
fi

if wanted format; then
  step format "C formatting (clang-format, .clang-format; fix with make format)"
  suite format bash -c "find src tests bench -name '*.[ch]' -not -path '*/corpus/*' | xargs clang-format --dry-run --Werror"
fi

if wanted lint; then
  step lint "OpenAPI lint (@redocly/cli)"
  suite lint npx --no-install redocly lint api/orders.yaml api/payments.yaml api/identity.yaml
  step settings "the README's settings table is what the services' own tables say (scripts/settings.sh)"
  suite settings scripts/settings.sh --check
  # make mutants is too long for every run; a mutant that no longer applies
  # would only be found there. Each must still apply to today's code.
  step mutants-apply "every mutant of make mutants still applies to the code"
  suite mutants-apply bash -c 'for p in tests/mutants/*.patch; do git apply --check "$p" || { echo "$p no longer applies: make it again from the code" >&2; exit 1; }; done'
fi

if wanted unit; then
  step unit "unit tests (sanitizers on)"
  suite unit build/san/tests/unit "${CRITERION[@]}" "${CR_FILTER[@]}"
fi

if wanted fuzz; then
  step fuzz "fuzz smoke: every libFuzzer target for a few seconds (make fuzz runs them longer)"
  suite fuzz env FUZZ_SECONDS="${FUZZ_SMOKE_SECONDS:-5}" scripts/fuzz.sh
  step fuzz-db "fuzz smoke against a real database: any 5xx, or a 2xx for a body the OpenAPI document refuses, is a finding"
  suite fuzz-db env FUZZ_DB=1 FUZZ_SECONDS="${FUZZ_SMOKE_SECONDS:-5}" scripts/fuzz.sh
fi

stack_steps="integration chaos e2e schemathesis bench-smoke bench-long-smoke"
needs_stack=0
for s in $stack_steps; do wanted "$s" && needs_stack=1; done
if [ "$needs_stack" = 1 ]; then
  step stack "the test stack: PostgreSQL, Apache Kafka, two instances of each service, the gateway"
  fresh_stack "test stack"
fi

if wanted integration; then
  step integration "integration tests: real PostgreSQL and Apache Kafka (sanitizers on)"
  suite integration build/san/tests/integration "${CRITERION[@]}" "${CR_FILTER[@]}"
fi

if wanted chaos; then
  step chaos "chaos drills: Kafka killed, frozen and wiped, kill -9, database down, rebalance (sanitizers on)"
  # Re-drive off (an hour): a drill whose message was acknowledged and
  # dropped would otherwise be healed within seconds and pass. The one drill
  # that needs it (the broker's data lost) turns it on for itself.
  REDRIVE_AFTER_MS=3600000 scripts/stack.sh restart orders >/dev/null
  suite chaos env REDRIVE_AFTER_MS=3600000 TEST_USER_PREFIX=chaos- build/san/tests/chaos "${CRITERION[@]}" --filter "${TEST:-chaos/*}"
  # The books of every drill's users at once, once they all ended.
  suite reconcile-chaos env RECONCILE_USERS='chaos-%' scripts/reconcile.sh
  scripts/stack.sh restart orders >/dev/null
fi

if wanted e2e; then
  step e2e "through the gateway: live status, browser story, API contract"
  # One file at a time: they share the stack (Node 18 has no --test-concurrency).
  # A socket a failed test left open would keep node running for ever: each
  # file gets five minutes.
  files=(tests/e2e/live_status.test.mjs tests/e2e/shop.test.mjs tests/e2e/gateway.test.mjs tests/e2e/traces.test.mjs tests/contract/contract.test.mjs)
  if [ -z "${TEST:-}" ]; then
    for f in "${files[@]}"; do
      suite "node-$(basename "$f" .test.mjs)" timeout --kill-after=10 300 node --no-warnings --test "$f"
    done
  else # the tests of that name, wherever they are: one suite, counted together
    suite node-e2e bash -c 'rc=0; for f in "${@:2}"; do
      timeout --kill-after=10 300 node --no-warnings --test --test-name-pattern "$1" "$f" || rc=1; done; exit $rc' \
      - "$TEST" "${files[@]}"
  fi
fi

if wanted schemathesis; then
  step schemathesis "schemathesis: both OpenAPI documents against the services (every phase, every check)"
  suite schemathesis timeout --kill-after=10 300 tests/schemathesis/run.sh
fi

if wanted bench-smoke; then
  step bench-smoke "benchmark smoke: make bench in a few seconds (honesty checks asserted, speed not)"
  suite bench-smoke env BENCH_BUILD="$ROOT/build" BENCH_OUT="$ROOT/build/bench-smoke" BENCH_SECONDS=2 \
    BENCH_WARMUP_SECONDS=1 BENCH_RATE=100 BENCH_RATES="100 200" BENCH_STEP_SECONDS=1 BENCH_USERS=10 \
    BENCH_PGBENCH_SECONDS=1 BENCH_READ_SECONDS=1 scripts/bench.sh
  grep -A12 '^| figure' "$ROOT/build/bench-smoke/results.md" 2>/dev/null || true
fi

if wanted bench-long-smoke; then
  step bench-long-smoke "long-run smoke: BENCH_ORDERS=300 in segments of 100 (the path of the million-order run; tokens renewed every second; the profile; the hops)"
  suite bench-long-smoke bash -c 'env BENCH_BUILD="$0/build" BENCH_OUT="$0/build/bench-long-smoke" \
    BENCH_ORDERS=300 BENCH_SEGMENT=100 BENCH_RATE=100 BENCH_WARMUP_SECONDS=1 BENCH_USERS=10 \
    BENCH_PGBENCH_SECONDS=1 BENCH_READ_SECONDS=1 LOADGEN_TOKEN_REFRESH_S=1 scripts/bench.sh >/dev/null &&
    jq -e "(.long.segments | length) == 3 and ([.long.segments[].final] | add) == 300
           and (.memory_mib | length) >= 1 and (.sizes_bytes[\"payments.inbox\"] > 0)
           and .profile.cpu_pct_of_one_core.postgres > 0 and (.profile.statements | length) > 0
           and .profile.wal.records > 0 and .profile.counters[\"orders.group_commits_total\"] > 0
           and .reads_per_statement >= 1 and .hops.orders == 300 and .hops.total_ms.p50 > 0" \
      "$0/build/bench-long-smoke/results.json"' "$ROOT"
fi
if [ "$needs_stack" = 1 ]; then stop_stack; fi

if wanted cluster; then
  step cluster "three-node Kafka and database clusters: nodes killed mid-burst, one after the other; the database's leader cut off (sanitizers on)"
  test_stack "$TEST_VAR-cluster" $((TEST_PORT_OFFSET + 100)) 3 3
  # Four JVMs on two cores would be one too many: its drill tests the
  # broker, and the main stack's tests the traces.
  export TRACING=off
  fresh_stack "cluster stack"
  suite cluster build/san/tests/chaos "${CRITERION[@]}" --filter "${TEST:-cluster/*}"
  # Browsers told to resync, /readyz naming the new leader (node's WebSocket).
  [ -n "${TEST:-}" ] || suite node-db-failover timeout --kill-after=10 300 \
    node --no-warnings --test tests/e2e/db_failover.test.mjs
fi
