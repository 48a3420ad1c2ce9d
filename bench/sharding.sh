#!/usr/bin/env bash
# What sharding costs and gives, on this machine: 3-node Conclave clusters on loopback (fsync
# on, 16-byte keys, 100-byte values) created with --shards 1, 4, 16 and 64, each loaded with
# puts at 64 connections by `conclave bench` (which sends each key to its shard's leader, as
# the cluster's clients do); then 3 nodes with 1,000 idle shards, whose CPU and memory are
# read from /proc over a quiet interval. Prints puts/s and latency per shard count, the
# 16-shard cluster against the single group (targets: at least 90% of the puts/s, p99 at most
# 1.5x), and the idle figures (targets: under 5% of one core for the three nodes together,
# under 200 MB resident each). Rounds alternate the order of the shard counts.
#
#   bench/sharding.sh [--rounds N] [--duration 10s] [--warmup 2s] [--shards "1 4 16 64"]
#                     [--idle-shards 1000] [--idle-seconds 30]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=1
DURATION=10s
WARMUP=2s
SHARD_COUNTS="1 4 16 64"
IDLE_SHARDS=1000
IDLE_SECONDS=30
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --shards) SHARD_COUNTS="$2"; shift 2 ;;
    --idle-shards) IDLE_SHARDS="$2"; shift 2 ;;
    --idle-seconds) IDLE_SECONDS="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

unset RUSTFLAGS
echo "== building conclave (release)"
cargo build --release --locked --bin conclave
CONCLAVE="$PWD/target/release/conclave"

WORK="$(mktemp -d /var/tmp/conclave-sharding.XXXXXX)"   # a real disk: /tmp may be tmpfs
PIDS=()
stop_cluster() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORTS=(28101 28102 28103)
ENDPOINTS=":28101,:28102,:28103"

# start_cluster SHARDS: a fresh 3-node cluster with SHARDS shards; returns once every shard
# has a leader and the leaderships are balanced (the cluster moves them until each node leads
# within one of the others: its steady state).
start_cluster() {
  local shards="$1" dir="$WORK/cluster-$1-$RANDOM"
  for port in "${PORTS[@]}"; do
    RUST_LOG=warn "$CONCLAVE" serve --port "$port" --peers="$ENDPOINTS" --shards "$shards" \
      --working-dir "$dir/$port" >"$dir-$port.log" 2>&1 &
    PIDS+=($!)
  done
  local deadline=$((SECONDS + 300))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$CONCLAVE" shards --json --endpoints "$ENDPOINTS" --timeout-secs 2 2>/dev/null \
      | python3 -c '
import collections, json, sys
s = json.load(sys.stdin)["shards"]
led = collections.Counter(x.get("leader") for x in s)
even = max(led.values()) - min(led.get(p, 0) for p in (28101, 28102, 28103)) <= 1
sys.exit(0 if all(x.get("leader") for x in s) and (len(s) == 1 or even) else 1)' 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "the $shards-shard cluster did not elect and balance every leader in time; logs in $dir-*.log" >&2
  exit 1
}

# bench -> "ops_per_second p50_ms p99_ms"
bench() {
  local json
  json="$("$CONCLAVE" bench --target-endpoints "$ENDPOINTS" --connections 64 \
    --duration "$DURATION" --warmup "$WARMUP" --keys 10000 --key-bytes 16 --value-bytes 100 \
    --mix put=100 --bench-json)"
  local ops p50 p99
  ops="$(grep -o '"ops_per_second":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  p50="$(grep -o '"p50_ms":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  p99="$(grep -o '"p99_ms":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  if ! grep -q '"errors":{}' <<<"$json"; then echo "  (errors: $(grep -o '"errors":{[^}]*}' <<<"$json"))" >&2; fi
  echo "$ops $p50 $p99"
}

declare -A RESULT
for round in $(seq 1 "$ROUNDS"); do
  order="$SHARD_COUNTS"
  if [ $((round % 2)) -eq 0 ]; then order="$(tr ' ' '\n' <<<"$SHARD_COUNTS" | tac | tr '\n' ' ')"; fi
  for shards in $order; do
    echo "  round $round: $shards shard(s), puts at 64 connections" >&2
    start_cluster "$shards"
    RESULT["$round|$shards"]="$(bench)"
    stop_cluster
  done
done

median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "date: $(date -u +%Y-%m-%d), machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: bench/sharding.sh --rounds $ROUNDS --duration $DURATION --warmup $WARMUP --shards \"$SHARD_COUNTS\" --idle-shards $IDLE_SHARDS --idle-seconds $IDLE_SECONDS"
echo "puts at 64 connections, 3 nodes (median of $ROUNDS round(s)):"
printf '%8s %12s %9s %9s\n' shards "puts/s" "p50 ms" "p99 ms"
declare -A OPS P99
for shards in $SHARD_COUNTS; do
  ops=(); p50=(); p99=()
  for round in $(seq 1 "$ROUNDS"); do
    read -r o f n <<<"${RESULT["$round|$shards"]}"
    ops+=("$o"); p50+=("$f"); p99+=("$n")
  done
  OPS[$shards]="$(median "${ops[@]}")"; P99[$shards]="$(median "${p99[@]}")"
  printf '%8s %12.0f %9.2f %9.2f\n' "$shards" "${OPS[$shards]}" "$(median "${p50[@]}")" "${P99[$shards]}"
done
if [ -n "${OPS[1]:-}" ] && [ -n "${OPS[16]:-}" ]; then
  awk -v s="${OPS[16]}" -v o="${OPS[1]}" 'BEGIN { r = s / o; printf "  16 shards against 1: %.2fx the puts/s (target >= 0.90): %s\n", r, (r >= 0.9) ? "met" : "missed" }'
  awk -v s="${P99[16]}" -v o="${P99[1]}" 'BEGIN { r = s / o; printf "  16 shards against 1: %.2fx the p99 (target <= 1.50): %s\n", r, (r <= 1.5) ? "met" : "missed" }'
fi

# Idle: CPU ticks (utime + stime) of the three nodes over IDLE_SECONDS, and each one's RSS.
ticks_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo
echo "== $IDLE_SHARDS idle shards on 3 nodes"
start_cluster "$IDLE_SHARDS"
sleep 10   # the last leadership moves settle; idle groups quiesce
before=0; for pid in "${PIDS[@]}"; do before=$((before + $(ticks_of "$pid"))); done
sleep "$IDLE_SECONDS"
after=0; for pid in "${PIDS[@]}"; do after=$((after + $(ticks_of "$pid"))); done
hz="$(getconf CLK_TCK)"
awk -v t=$((after - before)) -v hz="$hz" -v s="$IDLE_SECONDS" 'BEGIN { p = 100 * t / hz / s; printf "  CPU of the 3 nodes together: %.2f%% of one core over %d s (target < 5%%): %s\n", p, s, (p < 5) ? "met" : "missed" }'
for pid in "${PIDS[@]}"; do
  rss_kb="$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")"
  awk -v k="$rss_kb" -v pid="$pid" 'BEGIN { m = k / 1024; printf "  node pid %d: %.0f MB resident (target < 200 MB): %s\n", pid, m, (m < 200) ? "met" : "missed" }'
done
