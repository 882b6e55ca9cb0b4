#!/bin/sh
# Runs Apache Kafka in its own image (apache/kafka) with the embedded
# stack's settings: kafka/server.properties.template rendered for one
# combined broker and controller, SASL on every listener, the
# StandardAuthorizer. The SCRAM users (broker, orders, payments) are written
# into the metadata when the storage is formatted, from the compose
# secrets (deploy/make-secrets.sh makes them). The brokers' password also
# goes into an admin client file for the healthcheck and the topics job.
set -eu
umask 077
pw=$(cat /run/secrets/kafka-broker)
conf=/tmp/server.properties
sed -e "s|@NODE_ID@|1|" -e "s|@VOTERS@|1@kafka:9093|" -e "s|@HOST@|kafka|g" \
    -e "s|@PORT@|9092|g" -e "s|@CONTROLLER_PORT@|9093|g" -e "s|@DATA_DIR@|/var/lib/kafka/data|" \
    -e "s|@REPLICATION@|1|g" -e "s|@MIN_ISR@|1|g" -e "s|@BROKER_PASSWORD@|$pw|g" \
    /shop/server.properties.template >"$conf"
cat >/tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$pw";
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" -c "$conf" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$pw]" \
    --add-scram "SCRAM-SHA-512=[name=orders,password=$(cat /run/secrets/kafka-orders)]" \
    --add-scram "SCRAM-SHA-512=[name=payments,password=$(cat /run/secrets/kafka-payments)]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
