#!/usr/bin/env bash
# Installs what Shop needs, if anything is missing: Debian packages (as
# root with apt-get, else through sudo, else it prints the line to run),
# Apache Kafka's jars (Maven, once, into .cache/kafka/libs), then the npm
# packages of package.json (Swagger UI, lint and test tools).
#
#   deps.sh        what `make start` needs
#   deps.sh build  that, plus what compiling the tests needs (Criterion)
#   deps.sh test   that, plus what `make test` needs (Criterion, Chromium, ...)
#   deps.sh bench  that, plus what `make bench` needs (wrk, jq, gnuplot)
#   deps.sh format that, plus clang-format
#   deps.sh fuzz   that, plus clang 14 and its libFuzzer
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/env.sh" # ZIPKIN_VERSION

packages=(
  # build
  gcc make pkg-config libc6-dev
  libmicrohttpd-dev libjansson-dev libpq-dev librdkafka-dev libwslay-dev nettle-dev libsodium-dev
  libcurl4-openssl-dev
  # run: the database, the broker (Debian's Java 17 runs Apache Kafka, which
  # Maven fetches; kcat asks it for metadata), the gateway
  postgresql-15 postgresql-client-15 openjdk-17-jre-headless maven kcat nginx
  curl util-linux procps iproute2 passwd
)
# The replicated database tier (DB_NODES=3, and make test's drill of it):
# Patroni and its consensus store, etcd.
if [ "${DB_NODES:-1}" != 1 ] || [ "${1:-}" = test ]; then packages+=(patroni python3-etcd etcd-server); fi
case "${1:-}" in
  build) packages+=(libcriterion-dev) ;;                                          # tests compile
  # + a bench smoke, the fuzz smoke (clang's libFuzzer), schemathesis (venv)
  test) packages+=(libcriterion-dev clang-format chromium wrk jq gnuplot-nox clang-14 libclang-rt-14-dev python3-venv) ;;
  fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;
  mutants) packages+=(libcriterion-dev patch) ;;
  bench) packages+=(wrk jq gnuplot-nox) ;;
  format) packages+=(clang-format) ;;
esac
# Node.js may come from elsewhere than Debian (it carries its own npm then):
# only a machine without node or npm gets Debian's.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
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
fi

# Apache Kafka's jars, as kafka/pom.xml pins them, fetched once: a later
# run, even offline, finds them in place (a new pom fetches again).
kafka_libs=$ROOT/.cache/kafka/libs
stamp=$(sha256sum "$ROOT/kafka/pom.xml" | cut -c1-16)
if [ "$(cat "$kafka_libs/.complete" 2>/dev/null)" != "$stamp" ]; then
  echo "Fetching Apache Kafka's jars with Maven (once; about 50 MB into .cache/kafka)"
  rm -rf "$kafka_libs.tmp"
  mkdir -p "$ROOT/.cache/kafka"
  # Maven's output (and its terminal colour codes) goes to a log, shown on failure.
  mvn -q -B -f "$ROOT/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$kafka_libs.tmp" >"$ROOT/.cache/kafka/mvn.log" 2>&1 || {
    cat "$ROOT/.cache/kafka/mvn.log" >&2
    echo "Maven could not fetch Apache Kafka (log: .cache/kafka/mvn.log)" >&2
    exit 1
  }
  echo "$stamp" >"$kafka_libs.tmp/.complete"
  rm -rf "$kafka_libs"
  mv "$kafka_libs.tmp" "$kafka_libs"
fi

# The Zipkin server (one executable jar, the tracing backend the stack runs),
# fetched once by Maven like Kafka's jars.
zipkin_dir=$ROOT/.cache/zipkin
if [ "$(cat "$zipkin_dir/.complete" 2>/dev/null)" != "$ZIPKIN_VERSION" ]; then
  echo "Fetching the Zipkin server $ZIPKIN_VERSION with Maven (once; about 80 MB into .cache/zipkin)"
  rm -rf "$zipkin_dir.tmp"
  mkdir -p "$zipkin_dir.tmp"
  mvn -q -B dependency:copy -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
    -DoutputDirectory="$zipkin_dir.tmp" -Dmdep.stripVersion=true >"$ROOT/.cache/zipkin.log" 2>&1 || {
    cat "$ROOT/.cache/zipkin.log" >&2
    echo "Maven could not fetch the Zipkin server (log: .cache/zipkin.log)" >&2
    exit 1
  }
  echo "$ZIPKIN_VERSION" >"$zipkin_dir.tmp/.complete"
  rm -rf "$zipkin_dir"
  mv "$zipkin_dir.tmp" "$zipkin_dir"
fi

# npm packages, exactly as package-lock.json says, when it changed.
cd "$ROOT"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "Installing npm packages (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# schemathesis for `make test`: the versions of tests/schemathesis/
# requirements.txt (all pinned) in a virtual environment of its own, made
# again when that file changes.
if [ "${1:-}" = test ]; then
  venv=$ROOT/.cache/schemathesis
  req=$ROOT/tests/schemathesis/requirements.txt
  if [ ! -f "$venv/.complete" ] || ! cmp -s "$req" "$venv/.complete"; then
    echo "Installing schemathesis into .cache/schemathesis (pip, pinned)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >"$ROOT/.cache/schemathesis.log" 2>&1 || {
      cat "$ROOT/.cache/schemathesis.log" >&2
      echo "pip could not install schemathesis (log: .cache/schemathesis.log)" >&2
      exit 1
    }
    cp "$req" "$venv/.complete"
  fi
fi
