#!/usr/bin/env bash
# schemathesis, a conformance suite written by others, against both
# services of the running test stack and their OpenAPI documents: every
# phase (the documents' examples, coverage of each constraint's edges,
# property-based fuzzing, and stateful sequences following the documents'
# links), every check (no 5xx, statuses, content types, headers and bodies
# as documented, invalid input refused, valid input accepted). The pinned
# release lives in .cache/schemathesis (scripts/deps.sh test makes it from
# requirements.txt). Settings: tests/schemathesis/schemathesis.toml.
#
# One worker: with several threads, Python 3.11's parser can fail
# ("AST constructor recursion depth mismatch", CPython gh-106905) inside
# hypothesis, an error of the tool, not of the API.
#
# Left out, with the reason: GET /ws, a WebSocket upgrade (101 and then
# frames), which an HTTP request/response tool cannot follow; its
# handshake and refusals are tested by tests/contract and tests/e2e.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ST=$ROOT/.cache/schemathesis/bin/schemathesis
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-50}
mkdir -p "$ROOT/build/schemathesis"
cd "$ROOT/build/schemathesis" # its .hypothesis database stays here

# A user of its own, signed up and in through identity: its token goes with
# every request to orders and payments (their every operation wants one).
identity=${SHOP_IDENTITY_URL:-http://127.0.0.1:18084}
creds="{\"user_id\":\"schemathesis-$$\",\"password\":\"a long test password\"}"
curl -fsS -o /dev/null -X POST "$identity/users" -H 'Content-Type: application/json' -d "$creds"
token=$(curl -fsS -X POST "$identity/sessions" -H 'Content-Type: application/json' -d "$creds" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

status=0
run() { # run NAME URL [options]
  local name=$1 url=$2
  shift 2
  echo "== schemathesis: $name ($url)"
  "$ST" --config-file "$ROOT/tests/schemathesis/schemathesis.toml" run "$ROOT/api/$name.yaml" \
    --url "$url" --checks all --phases examples,coverage,fuzzing,stateful \
    --max-examples "$EXAMPLES" --workers 1 "$@" || status=1
}
run payments "${SHOP_PAYMENTS_URL:-http://127.0.0.1:18081}" -H "Authorization: Bearer $token"
run orders "${SHOP_ORDERS_URL:-http://127.0.0.1:18080}" --exclude-path /ws -H "Authorization: Bearer $token"
run identity "$identity"
exit "$status"
