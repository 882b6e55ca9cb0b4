#!/bin/sh
# Makes the Kafka passwords docker-compose.yml hands to the broker and the
# services (compose secrets), once: deploy/secrets/kafka-{broker,orders,
# payments}. The folder is the owner's alone (0700); the files inside are
# readable (0644) so that the containers' own users can read them through
# the bind mount. Never committed (.gitignore).
set -eu
dir=$(dirname "$0")/secrets
mkdir -p "$dir"
chmod 700 "$dir"
for who in broker orders payments; do
  [ -s "$dir/kafka-$who" ] && continue
  head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$dir/kafka-$who"
  chmod 644 "$dir/kafka-$who"
done
echo "Kafka passwords in $dir"
