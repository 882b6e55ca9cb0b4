# The test stacks' settings, shared by scripts/test.sh and
# scripts/mutants.sh: sourced with ROOT set to the checkout to test (and the
# current folder there). Sets the environment the services and the tests
# read, and test_stack, which places one stack.
export SHOP_ROOT=$ROOT
export SHOP_BUILD=$ROOT/build/san
export SHOP_LOG_LEVEL=info
# Heal lost messages sooner than the default 5 s, so the drills end sooner.
export REDRIVE_AFTER_MS=1000 REDRIVE_MAX_MS=4000 PURGE_INTERVAL_MS=500
# An order not taken by the database within 4 s (not 10) is answered
# not_created: the deadline test waits seconds, not tens of them.
export ORDERS_CREATE_DEADLINE_MS=4000
# Ping idle WebSockets after 1 s (drop after 3 s of silence).
export WS_PING_MS=1000
# A frozen broker fails a message after 10 s (not 30), and a consumer that
# stopped polling leaves its group after 10 s (not 5 min): the drills that
# test both take seconds, not minutes.
export KAFKA_MESSAGE_TIMEOUT_MS=10000 KAFKA_MAX_POLL_INTERVAL_MS=10000
export KAFKA_TOPICS="payment.requests payment.results shop.test"
# The tests' own clients connect from 127.0.0.1 and are not rate-limited;
# the gateway's limits are tested from 127.0.0.2 (tests/e2e/gateway.test.mjs).
export GATEWAY_UNLIMITED=127.0.0.1
# Leaks are real failures; librdkafka's own threads end after destroy.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Spans reach Zipkin within 0.2 s of their end (not 5 s): the trace tests
# wait for a condition, and it comes sooner.
export OTEL_BSP_SCHEDULE_DELAY=200
# A collector that does not answer costs a batch after 3 s (not 10): the
# test that hangs Zipkin waits that long to see the loss counted.
export OTEL_EXPORTER_ZIPKIN_TIMEOUT=3000
# Every trace recorded (not the stack's ten new ones a second): the tests
# look for the traces of orders they place in bursts.
export OTEL_TRACES_SAMPLER=parentbased_always_on
# The settings of one test stack; every URL and port the tests read.
# test_stack VAR_DIR BASE_PORT_OFFSET KAFKA_NODES [DB_NODES]
test_stack() {
  local off=$2
  export SHOP_VAR=$ROOT/$1 KAFKA_NODES=$3 DB_NODES=${4:-1} PGPASSFILE=$ROOT/$1/pgpass
  export PATRONI_PORT=$((18090 + off)) ETCD_PORT=$((22379 + off))
  export PG_PORT=$((54330 + off)) GATEWAY_PORT=$((18000 + off)) ORDERS_PORT=$((18080 + off))
  export PAYMENTS_PORT=$((18081 + off)) KAFKA_PORT=$((19092 + off)) IDENTITY_PORT=$((18084 + off))
  export ZIPKIN_PORT=$((19411 + off)) SHOP_ZIPKIN_URL=http://127.0.0.1:$((19411 + off))
  # Two instances of each service behind the gateway, as when scaled out.
  export ORDERS_PORTS="$ORDERS_PORT $((ORDERS_PORT + 2))"
  # The second orders instance with two group-commit writers, the first
  # with the default (one): the group tests run against both.
  export "ORDERS_WRITERS_$((ORDERS_PORT + 2))=2"
  export PAYMENTS_PORTS="$PAYMENTS_PORT $((PAYMENTS_PORT + 2))"
  # Every node's address, as the stack computes it (scripts/env.sh).
  KAFKA_BROKERS=$(unset KAFKA_BROKERS && . scripts/env.sh && kafka_brokers)
  export KAFKA_BROKERS
  export SHOP_GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT
  export SHOP_ORDERS_URL=http://127.0.0.1:$ORDERS_PORT
  export SHOP_ORDERS_URLS="http://127.0.0.1:$ORDERS_PORT http://127.0.0.1:$((ORDERS_PORT + 2))"
  export SHOP_PAYMENTS_URL=http://127.0.0.1:$PAYMENTS_PORT
  export SHOP_PAYMENTS_URLS="http://127.0.0.1:$PAYMENTS_PORT http://127.0.0.1:$((PAYMENTS_PORT + 2))"
  # Every database node's address (one, or the cluster's), as the stack
  # computes them; libpq clients of the scripts pick the leader.
  local urls
  urls=$(unset ORDERS_DATABASE_URL PAYMENTS_DATABASE_URL IDENTITY_DATABASE_URL && . scripts/env.sh &&
    echo "$ORDERS_DATABASE_URL $PAYMENTS_DATABASE_URL $IDENTITY_DATABASE_URL")
  read -r ORDERS_DATABASE_URL PAYMENTS_DATABASE_URL IDENTITY_DATABASE_URL <<<"$urls"
  export ORDERS_DATABASE_URL PAYMENTS_DATABASE_URL IDENTITY_DATABASE_URL
  if [ "$DB_NODES" = 1 ]; then unset PGTARGETSESSIONATTRS; else export PGTARGETSESSIONATTRS=read-write; fi
  export SHOP_IDENTITY_URL=http://127.0.0.1:$IDENTITY_PORT
  export AUTH_KEY_FILE=$SHOP_VAR/identity-signing.key
  # The tests' own Kafka clients (injecting forged messages, reading the
  # partitions) are the operator's: the brokers' principal. The services
  # are started with their own (scripts/stack.sh).
  export KAFKA_SASL_USERNAME=broker KAFKA_SASL_PASSWORD_FILE=$SHOP_VAR/kafka-secrets/broker
}
