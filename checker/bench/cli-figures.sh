#!/usr/bin/env bash
# The CLI figures of checker/README.md: writes the benchmark histories with
# `conclave-checker generate`, then checks each with `conclave-checker check` (and, to compare,
# with another checker: OTHER="command that takes the file as its last argument", e.g. an older
# build: OTHER="/path/to/conclave-checker check --no-html"), printing the
# verdict line, the check and read times the checker reports, and the user time and peak
# resident memory that /usr/bin/time measures.
#
#   checker/bench/cli-figures.sh [--large] [--dir DIR]
#
# --large adds the 10,000,000-operation history (1.1 GB of JSON Lines, about a minute to write).
# The binary is target/release/conclave-checker (build it first:
# cargo build --release -p conclave-checker), or $CHECKER.
set -euo pipefail
cd "$(dirname "$0")/../.."

checker="${CHECKER:-target/release/conclave-checker}"
dir="${TMPDIR:-/tmp}/conclave-checker-figures"
large=false
while [ $# -gt 0 ]; do
  case "$1" in
    --large) large=true ;;
    --dir) dir="$2"; shift ;;
    *) echo "usage: $0 [--large] [--dir DIR]" >&2; exit 3 ;;
  esac
  shift
done
[ -x "$checker" ] || { echo "no $checker: cargo build --release -p conclave-checker" >&2; exit 3; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (GNU time) for the peak memory" >&2; exit 3; }
mkdir -p "$dir"

generate() { # name, then generate's arguments
  local file="$dir/$1.jsonl"; shift
  [ -s "$file" ] || "$checker" generate "$@" > "$file"
  echo "$file"
}

measure() { # label, command...
  local label="$1"; shift
  local out
  out="$( { /usr/bin/time -f 'TIME %U user s, %M KB peak' "$@" 2>&1 || true; } \
    | grep -E '^verdict|^time:|^TIME|^undecided' | tr '\n' ' ')"
  printf '%-46s %s\n' "$label" "$out"
}

files=()
for anomaly in stale-read phantom-read lost-write double-cas resurrected-delete; do
  files+=("$(generate "10k-4keys-64clients-$anomaly" --ops 10000 --keys 4 --clients 64 --seed 7 \
    --anomaly "$anomaly")")
  files+=("$(generate "100k-1key-64clients-$anomaly" --ops 100000 --keys 1 --clients 64 --seed 7 \
    --anomaly "$anomaly")")
done
files+=("$(generate "100k-1key-64clients" --ops 100000 --keys 1 --clients 64 --seed 7)")
files+=("$(generate "1m-1000keys-16clients" --ops 1000000 --keys 1000 --clients 16 --seed 11)")
if $large; then
  files+=("$(generate "10m-10000keys-64clients" --ops 10000000 --keys 10000 --clients 64 \
    --seed 13)")
fi

for file in "${files[@]}"; do
  measure "$(basename "$file")" "$checker" check --no-html "$file"
  if [ -n "${OTHER:-}" ]; then
    # shellcheck disable=SC2086 # OTHER is a command line
    measure "  other: $(basename "$file")" $OTHER "$file"
  fi
done
