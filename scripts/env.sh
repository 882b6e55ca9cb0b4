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
# One payments instance per port; they share the consumer group (Kafka
# spreads the partitions over them) and the gateway balances across them.
PAYMENTS_PORTS=${PAYMENTS_PORTS:-$PAYMENTS_PORT}
IDENTITY_PORT=${IDENTITY_PORT:-8082}
IDENTITY_PORTS=${IDENTITY_PORTS:-$IDENTITY_PORT}
SHOP_LOG_LEVEL=${SHOP_LOG_LEVEL:-info}
# The gateway's limits per client address: API requests a second and the
# burst allowed on top (beyond: 429), open connections, open WebSockets.
# Addresses in GATEWAY_UNLIMITED (space-separated) are exempt.
GATEWAY_RATE=${GATEWAY_RATE:-100}
GATEWAY_BURST=${GATEWAY_BURST:-200}
GATEWAY_CONNS=${GATEWAY_CONNS:-256}
GATEWAY_WS_CONNS=${GATEWAY_WS_CONNS:-16}
# Sign-ins and sign-ups a minute per address (a burst of 10 on top); the
# identity service also slows failures per user id.
GATEWAY_SIGNIN_RATE=${GATEWAY_SIGNIN_RATE:-30}
GATEWAY_UNLIMITED=${GATEWAY_UNLIMITED:-}
# The user PostgreSQL runs as: it refuses to run as root.
if [ "$(id -u)" = 0 ]; then PG_USER=${PG_USER:-postgres}; else PG_USER=$(id -un); fi

# Apache Kafka (KRaft): KAFKA_NODES nodes, each a combined broker and
# controller. Node N listens on KAFKA_PORT + 2(N-1) for clients and the next
# port for the controller quorum: 9092/9093, 9094/9095, 9096/9097.
KAFKA_NODES=${KAFKA_NODES:-1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
# Partitions of each topic: at most this many instances of a service
# consume in parallel, and every request to the broker pays for each
# partition in it: at 1,000 orders/s, 8 instead of 4 cost the broker about
# 6 % of a core more (bench/README.md). A topic that has more keeps them.
KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-4}
KAFKA_TOPICS=${KAFKA_TOPICS:-payment.requests payment.results}
KAFKA_JAVA=${KAFKA_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}
# Where scripts/deps.sh puts the broker's jars (fetched once by Maven).
KAFKA_LIBS=${KAFKA_LIBS:-$ROOT/.cache/kafka/libs}
# The user Kafka runs as when started by root (created when missing).
if [ "$(id -u)" = 0 ]; then KAFKA_USER=${KAFKA_USER:-shop-kafka}; else KAFKA_USER=$(id -un); fi
kafka_brokers() {
  local i out=""
  for i in $(seq "$KAFKA_NODES"); do out+="${out:+,}127.0.0.1:$((KAFKA_PORT + 2 * (i - 1)))"; done
  echo "$out"
}
KAFKA_BROKERS=${KAFKA_BROKERS:-$(kafka_brokers)}
# The broker's passwords (SASL/SCRAM-SHA-512; scripts/stack.sh makes them
# when it formats the broker's storage), one file per principal, mode 0600:
# broker (the brokers' own, the only super user, which the scripts and the
# tests administer with), orders, payments; and the admin client settings
# for Kafka's tools (admin.properties) and kcat (admin.kcat).
KAFKA_SECRETS=$SHOP_VAR/kafka-secrets

# Traces (docs/architecture.md, "Traces"): with TRACING=on the stack runs
# the Zipkin server (in memory, on 127.0.0.1:ZIPKIN_PORT, its UI also at
# the gateway's /zipkin/ for loopback clients) and the services send it
# their spans; TRACING=off runs neither. The services read the
# OpenTelemetry SDK's variables (OTEL_TRACES_SAMPLER, _ARG, ...) from the
# environment as well. Why on by default: bench/README.md, "Tracing".
TRACING=${TRACING:-on}
# New traces each service records a second, at most (OpenTelemetry's
# OTEL_TRACES_SAMPLER=parentbased_ratelimiting, unless OTEL_TRACES_SAMPLER
# is set): every order placed by hand is traced, and at 1,000 orders/s one
# in a hundred, which costs nothing measurable where 100 % costs a third
# of the throughput (bench/README.md, "Tracing").
TRACES_PER_SECOND=${TRACES_PER_SECOND:-10}
ZIPKIN_VERSION=${ZIPKIN_VERSION:-3.4.4}
ZIPKIN_PORT=${ZIPKIN_PORT:-9411}
ZIPKIN_HEAP=${ZIPKIN_HEAP:-256m}
# Spans Zipkin keeps (its in-memory store drops the oldest traces past it):
# 200,000 outgrew a 256 MB heap (OutOfMemoryError at 100 % sampling and
# 1,000 orders/s); 50,000 is the last four thousand traced orders.
ZIPKIN_MAX_SPANS=${ZIPKIN_MAX_SPANS:-50000}
ZIPKIN_JAR=${ZIPKIN_JAR:-$ROOT/.cache/zipkin/zipkin-server-exec.jar}

# The database tier: DB_NODES=1, one PostgreSQL server on PG_PORT; or a
# replicated cluster of DB_NODES (3) PostgreSQL 15 nodes managed by
# Patroni, on PG_PORT, PG_PORT+1, PG_PORT+2, with one etcd member as its
# consensus store (ETCD_PORT for clients, the next port for peers) and
# each node's Patroni REST API on PATRONI_PORT+N-1. The services follow the
# leader by themselves (every node in their URL, target_session_attrs=
# read-write; docs/decisions.md says why not a proxy).
# A stack started with DB_NODES=3 remembers it (var/db-nodes): make stop,
# make status and make run need not be told again.
DB_NODES=${DB_NODES:-$(cat "$SHOP_VAR/db-nodes" 2>/dev/null || echo 1)}
# (Not etcd's own 2379: Debian's etcd-server package may run one there.)
ETCD_PORT=${ETCD_PORT:-12379}
PATRONI_PORT=${PATRONI_PORT:-8008}
# Patroni's timings (seconds): the leader key lives PATRONI_TTL after its
# last renewal, each node runs its loop every PATRONI_LOOP_WAIT, and a call
# to etcd or PostgreSQL is retried for PATRONI_RETRY_TIMEOUT (loop_wait +
# 2 x retry_timeout must fit in the ttl). A lost leader is replaced within
# ttl + loop_wait + a promotion: README.md, "The database cluster".
PATRONI_TTL=${PATRONI_TTL:-10}
PATRONI_LOOP_WAIT=${PATRONI_LOOP_WAIT:-2}
PATRONI_RETRY_TIMEOUT=${PATRONI_RETRY_TIMEOUT:-4}
# Every node's address for libpq's -h/-p (psql, pgbench): the one server,
# or the cluster's three; PGTARGETSESSIONATTRS makes a client of ours pick
# the leader among them.
db_hosts() { local i out=""; for i in $(seq "$DB_NODES"); do out+="${out:+,}127.0.0.1"; done; echo "$out"; }
db_ports() { local i out=""; for i in $(seq "$DB_NODES"); do out+="${out:+,}$((PG_PORT + i - 1))"; done; echo "$out"; }
PG_HOSTS=$(db_hosts)
PG_PORTS=$(db_ports)
[ "$DB_NODES" = 1 ] || export PGTARGETSESSIONATTRS=read-write
# A service's database URL: every node, the read-write one wanted.
db_url() { # db_url DATABASE
  local i hosts=""
  for i in $(seq "$DB_NODES"); do hosts+="${hosts:+,}127.0.0.1:$((PG_PORT + i - 1))"; done
  if [ "$DB_NODES" = 1 ]; then echo "postgresql://shop@$hosts/$1"
  else echo "postgresql://shop@$hosts/$1?target_session_attrs=read-write"; fi
}

# The database password's pgpass file (scripts/stack.sh writes it): every
# client of ours (services, psql, pgbench, tests) reads it from here.
export PGPASSFILE=$SHOP_VAR/pgpass
LOG_DIR=$SHOP_VAR/log
RUN_DIR=$SHOP_VAR/run
ORDERS_DATABASE_URL=${ORDERS_DATABASE_URL:-$(db_url orders)}
PAYMENTS_DATABASE_URL=${PAYMENTS_DATABASE_URL:-$(db_url payments)}
IDENTITY_DATABASE_URL=${IDENTITY_DATABASE_URL:-$(db_url identity)}
# The identity service's signing key (made on its first start, mode 0600)
# and its public half (.pub), which orders and payments read.
AUTH_KEY_FILE=${AUTH_KEY_FILE:-$SHOP_VAR/identity-signing.key}
# Where the shop's page is served from: a request that the session cookie
# carries must come from there (no cross-site request forgery).
ALLOWED_ORIGINS=${ALLOWED_ORIGINS:-http://localhost:$GATEWAY_PORT http://127.0.0.1:$GATEWAY_PORT}
