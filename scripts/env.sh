# Settings shared by the stack scripts; every one can be overridden from the
# environment. Sourced, not run.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOP_VAR=${SHOP_VAR:-$ROOT/var}
SHOP_BUILD=${SHOP_BUILD:-$ROOT/build}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-54320}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
ORDERS_PORT=${ORDERS_PORT:-8080}
# One orders instance per port; the gateway balances across them.
ORDERS_PORTS=${ORDERS_PORTS:-$ORDERS_PORT}
PAYMENTS_PORT=${PAYMENTS_PORT:-8081}
SHOP_LOG_LEVEL=${SHOP_LOG_LEVEL:-info}
# The user PostgreSQL runs as: it refuses to run as root.
if [ "$(id -u)" = 0 ]; then PG_USER=${PG_USER:-postgres}; else PG_USER=$(id -un); fi

LOG_DIR=$SHOP_VAR/log
RUN_DIR=$SHOP_VAR/run
BROKER_ADDR_FILE=$SHOP_VAR/broker.addr
DB_URL_BASE="postgresql://shop@127.0.0.1:$PG_PORT"
ORDERS_DATABASE_URL=${ORDERS_DATABASE_URL:-$DB_URL_BASE/orders}
PAYMENTS_DATABASE_URL=${PAYMENTS_DATABASE_URL:-$DB_URL_BASE/payments}
