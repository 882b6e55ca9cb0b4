#!/usr/bin/env bash
# `make mutants`: deliberate bugs, each of which a test must catch.
#
# Each tests/mutants/NN-name.patch is one bug (a patch git applies) with a
# header: "Mutant: what it breaks" and one "Caught-by: SUITE FILTER" line per
# test meant to catch it (SUITE: unit, integration or chaos, the Criterion
# binaries of build/san/tests; FILTER: a Criterion --filter). For each, in a
# copy of the tree (the files as they are now, with the sanitizer build's
# objects, so only what the patch touches is compiled again), the script
# applies the patch, builds, starts a fresh test stack of the copy's own
# (var/ of the copy, ports 300 above the test stack's) and runs the named
# tests in turn until one fails: that test caught it. A mutant no named test
# catches survives, and fails the run.
#
# First, a control: the same tests on the copy without any patch must all
# pass, or a "caught" would mean nothing.
#
# Re-drive is off for the whole run (REDRIVE_AFTER_MS an hour), as in the
# chaos suite: no mutant may be rescued by it. MUTANTS picks some patches
# (default: all); the table goes to build/mutants/results.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/build/mutants
MUTANTS=${MUTANTS:-$(ls tests/mutants/*.patch)}
TEST_TIMEOUT=${MUTANT_TEST_TIMEOUT:-400}

scripts/deps.sh test
scripts/deps.sh mutants
make --no-print-directory BUILD=build/san SAN=1 build
mkdir -p "$OUT"

# The tests a patch names: "SUITE FILTER" lines.
caught_by() { sed -n 's/^Caught-by: //p' "$1"; }
title() { sed -n 's/^Mutant: //p' "$1"; }

# The tree as it was when the run began (tracked and new files, not what
# git ignores), with the sanitizer build's objects and their times: every
# mutant starts from this, whatever changes in the checkout meanwhile.
BASE=$OUT/base
rm -rf "$BASE"
mkdir -p "$BASE/build"
git ls-files -z -c -o --exclude-standard | xargs -0 cp --parents -p -t "$BASE"
cp -a build/san "$BASE/build/san"
ln -s "$ROOT/node_modules" "$BASE/node_modules"

copy_tree() { # copy_tree DEST
  rm -rf "$1"
  cp -a "$BASE" "$1"
}

# Runs `suite filter` in the copy against its stack; 0 when it passed.
run_test() { # run_test TREE SUITE FILTER LOG
  local tree=$1 suite=$2 filter=$3 log=$4
  (cd "$tree" && timeout --kill-after=10 "$TEST_TIMEOUT" "build/san/tests/$suite" --jobs 1 \
    --filter "$filter" >>"$log" 2>&1) || return 1
  # A filter that matched nothing proves nothing.
  grep -q 'Synthesis: Tested: [1-9]' "$log"
}

# In its own shell: builds the copy, starts its stack, runs the tests;
# prints the test that failed ("" when all passed), stops the stack.
try_tree() { # try_tree TREE TESTS_FILE LOG
  local tree=$1 tests=$2 log=$3
  (
    cd "$tree"
    ROOT=$tree
    export KAFKA_LIBS=$ROOT_OF_CHECKOUT/.cache/kafka/libs
    . scripts/test-env.sh
    export REDRIVE_AFTER_MS=3600000
    export TRACING=off # no mutant is of the traces: no Zipkin to start
    test_stack var/mutant 300 1
    trap 'scripts/stack.sh wipe >/dev/null 2>&1 || true' EXIT
    make --no-print-directory BUILD=build/san SAN=1 build/san/bin/orders build/san/bin/payments \
      build/san/bin/identity build/san/tests/unit build/san/tests/integration \
      build/san/tests/chaos >>"$log" 2>&1 || { echo "(does not build)"; exit 0; }
    scripts/stack.sh wipe >/dev/null 2>&1 || true
    scripts/stack.sh up >>"$log" 2>&1 || { echo "(its stack does not start)"; exit 0; }
    while read -r suite filter; do
      echo "== $suite $filter" >>"$log"
      if ! run_test "$tree" "$suite" "$filter" "$log"; then
        echo "$suite $filter"
        exit 0
      fi
    done <"$tests"
    echo ""
  )
}
export ROOT_OF_CHECKOUT=$ROOT

status=0
rows=()
# The control: every test any mutant names, on the tree as it is.
all_tests=$OUT/all-tests.txt
for m in $MUTANTS; do caught_by "$m"; done | sort -u >"$all_tests"
echo "== control: the $(wc -l <"$all_tests") named tests on the unpatched tree must pass"
copy_tree "$OUT/tree"
: >"$OUT/control.log"
t0=$SECONDS
failed=$(try_tree "$OUT/tree" "$all_tests" "$OUT/control.log")
if [ -n "$failed" ]; then
  echo "control FAILED: $failed (see $OUT/control.log); a mutant's result would mean nothing"
  exit 1
fi
echo "   all passed ($((SECONDS - t0)) s)"

for m in $MUTANTS; do
  name=$(basename "$m" .patch)
  echo "== $name: $(title "$m")"
  copy_tree "$OUT/tree"
  log=$OUT/$name.log
  : >"$log"
  # GNU patch, not git apply: the copy lies inside this repository, where
  # git apply would take the paths as the repository's own.
  if ! patch -d "$OUT/tree" -p1 --quiet --no-backup-if-mismatch <"$m" >>"$log" 2>&1; then
    echo "   the patch does not apply (see $log)"
    rows+=("| $name | $(title "$m") | **does not apply** | |")
    status=1
    continue
  fi
  caught_by "$m" >"$OUT/$name.tests"
  t0=$SECONDS
  by=$(try_tree "$OUT/tree" "$OUT/$name.tests" "$log")
  secs=$((SECONDS - t0))
  if [ -z "$by" ] || [[ "$by" == "("* ]]; then
    echo "   SURVIVED${by:+ $by} ($secs s; log: $log)"
    rows+=("| $name | $(title "$m") | **survived** ${by} | $secs |")
    status=1
  else
    echo "   caught by $by ($secs s)"
    rows+=("| $name | $(title "$m") | \`$by\` | $secs |")
  fi
done
rm -rf "$OUT/tree" "$BASE"

{
  echo "| mutant | the bug | caught by | s |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$OUT/results.md"
cat "$OUT/results.md"
if [ "$status" = 0 ]; then
  echo "mutants: every one of ${#rows[@]} caught"
else
  echo "mutants: SOME SURVIVED or did not apply"
fi
exit "$status"
