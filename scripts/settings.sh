#!/usr/bin/env bash
# The README's settings table, made from the settings tables the services
# declare (each module's, src/lib/*.c and src/*/main.c), as their
# `--settings-tsv` prints them: one row per setting (a setting two services
# read alike is one row naming both).
#
#   scripts/settings.sh          rewrites the table in README.md
#   scripts/settings.sh --check  fails, showing the difference, when the
#                                README's table is not what the services say
#
# BUILD (default build) is where the services are built.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BUILD:-build}/bin
BEGIN='<!-- settings: made by scripts/settings.sh from the services'"'"' tables; edit those, not this -->'
END='<!-- settings: end -->'

table() {
  echo '| variable | default | range | read by | meaning |'
  echo '|---|---|---|---|---|'
  for svc in identity orders payments; do
    "$BIN/$svc" --settings-tsv | awk -v svc="$svc" -F'\t' '{print $0 "\t" svc}'
  done | awk -F'\t' '
    { key = $1 "\t" $2 "\t" $3 "\t" $5
      if (!(key in who)) { order[n++] = key; mod[key] = $4 }
      who[key] = who[key] (who[key] ? ", " : "") $6 }
    END {
      for (i = 0; i < n; i++) {
        split(order[i], f, "\t")
        services = (who[order[i]] == "identity, orders, payments") ? "all" : who[order[i]]
        printf "| `%s` | `%s` | %s | %s | %s |\n", f[1], f[2], f[3], services, f[4]
      }
    }'
}

new=$(mktemp)
trap 'rm -f "$new"' EXIT
awk -v begin="$BEGIN" -v end="$END" -v tablefile=<(table) '
  $0 == begin { print; while ((getline line < tablefile) > 0) print line; skip = 1; next }
  $0 == end { skip = 0 }
  !skip { print }' README.md >"$new"
grep -qxF "$BEGIN" README.md || { echo "settings: README.md has no line: $BEGIN" >&2; exit 1; }
if [ "${1:-}" = --check ]; then
  if ! diff -u README.md "$new"; then
    echo "settings: README.md's table differs from the services' own (scripts/settings.sh rewrites it)" >&2
    exit 1
  fi
  echo "settings: README.md's table is the services' own"
else
  cp "$new" README.md
  echo "settings: README.md's table made from the services' tables"
fi
