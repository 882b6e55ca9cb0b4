#!/usr/bin/env bash
# make reconcile: checks the books of the running shop (README, "The
# books"). First each service's own (GET /reconciliation, as an operator:
# the ledger sums to zero, each balance equals its entries, each decided
# order was charged once, each refund credited once; each order's refunds
# add up), then the two databases against each other: every paid order has
# exactly one debit of its amount, every other order none net, every debit
# an order, every completed refund exactly one credit and every credit a
# completed refund, no order refunded above its amount. Prints each check
# with its count; exits 1 on any mismatch, 2 when it cannot check.
#
#   RECONCILE_USERS   a LIKE pattern of the user ids to check (default: all)
#
# What is in flight (NEW orders, PENDING refunds) is counted and not
# judged: run it on a quiet shop to check everything.
set -euo pipefail
. "$(dirname "$0")/env.sh"
USERS=${RECONCILE_USERS:-%}
[[ $USERS =~ ^[A-Za-z0-9_.%-]{1,64}$ ]] || { echo "reconcile: RECONCILE_USERS must be a LIKE pattern of user ids" >&2; exit 2; }
psql_() { "$PG_BIN/psql" -h "$PG_HOSTS" -p "$PG_PORTS" -U shop -v ON_ERROR_STOP=1 -qAt "$@"; }
export PGCONNECT_TIMEOUT=5

failed=0
report() { # name checked mismatches example
  if [ "$3" = 0 ]; then
    printf 'ok    %-40s %10s checked\n' "$1" "$2"
  else
    printf 'FAIL  %-40s %10s checked, %s mismatches, e.g. %s\n' "$1" "$2" "$3" "$4"
    failed=1
  fi
}

# 1. Each service's own books, through its operator endpoint.
token=$(cd "$ROOT" && AUTH_PRIVATE_KEY_FILE="$AUTH_KEY_FILE" LOG_LEVEL=warn "$SHOP_BUILD/bin/identity" operator-token reconcile) ||
  { echo "reconcile: no operator token (has the shop run here?)" >&2; exit 2; }
for service in orders payments; do
  port_var=${service^^}_PORT
  answer=$(curl -fsS --max-time 300 -H "Authorization: Bearer $token" \
    "http://127.0.0.1:${!port_var}/reconciliation?users=$(jq -rn --arg u "$USERS" '$u|@uri')") ||
    { echo "reconcile: $service did not answer (is the shop running? make start)" >&2; exit 2; }
  while IFS=$'\t' read -r name checked mismatches example; do
    if [ "$name" = in_flight ]; then
      in_flight=$checked
      continue
    fi
    report "$service/$name" "$checked" "$mismatches" "$example"
  done < <(jq -r '.checks[] | [.name, .checked, .mismatches, (.example // "")] | @tsv' <<<"$answer")
done

# 2. The two databases against each other: orders' facts copied into
#    temporary tables of one session on payments' database
#    (scripts/reconcile.sql). USERS is checked above: no quote can be in it.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql_ -d orders -c "\\copy (SELECT id, status, amount, refunded_amount FROM orders WHERE user_id LIKE '$USERS') TO '$work/orders.tsv'"
psql_ -d orders -c "\\copy (SELECT id, order_id, amount, status FROM refunds WHERE user_id LIKE '$USERS') TO '$work/refunds.tsv'"
while IFS='|' read -r name checked mismatches example; do
  report "across/$name" "$checked" "$mismatches" "$example"
done < <(psql_ -d payments -v users="$USERS" \
  -c "CREATE TEMP TABLE o (id uuid PRIMARY KEY, status text, amount bigint, refunded bigint)" \
  -c "CREATE TEMP TABLE r (id uuid PRIMARY KEY, order_id uuid, amount bigint, status text)" \
  -c "\\copy o FROM '$work/orders.tsv'" -c "\\copy r FROM '$work/refunds.tsv'" \
  -f "$ROOT/scripts/reconcile.sql")

printf '%-46s %10s\n' "in flight (NEW orders, PENDING refunds)" "${in_flight:-0}"
if [ "$failed" = 0 ]; then
  echo "reconcile: the books hold (users LIKE '$USERS')"
else
  echo "reconcile: MISMATCHES (users LIKE '$USERS')"
fi
exit "$failed"
