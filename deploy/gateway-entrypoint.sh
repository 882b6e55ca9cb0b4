#!/bin/sh
# Renders gateway/nginx.conf.template for the nginx image: the same
# template as the embedded stack, with the compose service names upstream.
set -eu
root=/srv/shop
var=/var/cache/nginx/shop
mkdir -p "$var/run" "$var/log" "$var/gateway"
orders=""; for s in $ORDERS_SERVERS; do orders="$orders        server $s;\n"; done
payments=""; for s in $PAYMENTS_SERVERS; do payments="$payments        server $s;\n"; done
sed -e "s|@VAR@|$var|g" -e "s|@ROOT@|$root|g" -e "s|@PORT@|8000|g" -e "s|@HOST@|0.0.0.0|g" \
    -e "s|@USER_LINE@|user nginx;|" \
    -e "s|^@ORDERS_SERVERS@\$|$orders|" -e "s|^@PAYMENTS_SERVERS@\$|$payments|" \
    "$root/gateway/nginx.conf.template" > /etc/nginx/nginx.conf
ln -sf /dev/stdout "$var/log/gateway.log"
ln -sf /dev/stderr "$var/log/gateway.error.log"
