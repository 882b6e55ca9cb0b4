#!/bin/sh
# Renders gateway/nginx.conf.template for the nginx image: the same
# template as the embedded stack, with the compose service names upstream.
set -eu
root=/srv/shop
var=/var/cache/nginx/shop
mkdir -p "$var/run" "$var/log" "$var/gateway"
orders=""; for s in $ORDERS_SERVERS; do orders="$orders        server $s;\n"; done
payments=""; for s in $PAYMENTS_SERVERS; do payments="$payments        server $s;\n"; done
identity=""; for s in $IDENTITY_SERVERS; do identity="$identity        server $s;\n"; done
mkdir -p "$var/work/client_body" "$var/work/proxy" "$var/work/fastcgi" "$var/work/uwsgi" "$var/work/scgi"
chown -R nginx "$var/work"
sed -e "s|@VAR@|$var|g" -e "s|@STATIC@|$root|g" -e "s|@WORK@|$var/work|g" -e "s|@PORT@|8000|g" \
    -e "s|@HOST@|0.0.0.0|g" -e "s|@USER_LINE@|user nginx;|" \
    -e "s|@RATE@|${GATEWAY_RATE:-100}|g" -e "s|@BURST@|${GATEWAY_BURST:-200}|g" \
    -e "s|@CONNS@|${GATEWAY_CONNS:-256}|g" -e "s|@WS_CONNS@|${GATEWAY_WS_CONNS:-16}|g" \
    -e "s|@SIGNIN_RATE@|${GATEWAY_SIGNIN_RATE:-30}|g" -e "/^@UNLIMITED@\$/d" \
    -e "s|@ZIPKIN@|${ZIPKIN:-zipkin:9411}|g" \
    -e "s|^@ORDERS_SERVERS@\$|$orders|" -e "s|^@PAYMENTS_SERVERS@\$|$payments|" \
    -e "s|^@IDENTITY_SERVERS@\$|$identity|" \
    "$root/gateway/nginx.conf.template" > /etc/nginx/nginx.conf
ln -sf /dev/stdout "$var/log/gateway.log"
ln -sf /dev/stderr "$var/log/gateway.error.log"
