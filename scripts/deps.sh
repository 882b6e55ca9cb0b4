#!/usr/bin/env bash
# Installs the Debian packages Shop needs, if any is missing. As root it
# runs apt-get itself; otherwise through sudo; otherwise it prints the line.
set -euo pipefail

packages=(
  # build
  gcc make pkg-config libc6-dev
  libmicrohttpd-dev libjansson-dev libpq-dev librdkafka-dev libwslay-dev nettle-dev
  libcurl4-openssl-dev
  # run
  postgresql-15 postgresql-client-15 curl util-linux procps iproute2
  # test
  libcriterion-dev
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "Run as root (or with sudo):" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
