#!/usr/bin/env bash
# Conclave and etcd side by side, on this machine, under the same load from the same generator
# (`conclave bench`): a 3-member etcd cluster and a 3-node Conclave cluster on loopback, both
# with fsync on, 16-byte keys and 100-byte values. Scenarios: put at 1, 16 and 64 connections;
# linearizable get at 64; lease get at 64 (etcd: serializable get). Rounds alternate which
# system goes first so that drift over the run hits both. Prints one table with the ratios, then
# the medians over the rounds with the issue's targets checked against them, and stops every
# process it started.
#
#   bench/compare-etcd.sh [--rounds N] [--duration 10s] [--warmup 2s] [--keys 10000]
#
# Installs etcd from Debian's `etcd-server` package if `etcd` is missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=1
DURATION=10s
WARMUP=2s
KEYS=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --keys) KEYS="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

unset RUSTFLAGS
if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd (Debian package etcd-server)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
echo "== building conclave (release)"
cargo build --release --locked --bin conclave
CONCLAVE="$PWD/target/release/conclave"

WORK="$(mktemp -d /var/tmp/conclave-vs-etcd.XXXXXX)"   # a real disk: /tmp may be tmpfs
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ETCD_CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
ETCD_ENDPOINTS="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
CONCLAVE_ENDPOINTS=":28001,:28002,:28003"

start_clusters() {
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new --log-level error \
      >"$WORK/etcd-$i.log" 2>&1 &
    PIDS+=($!)
  done
  for port in 28001 28002 28003; do
    RUST_LOG=warn "$CONCLAVE" serve --port "$port" --peers="$CONCLAVE_ENDPOINTS" --lease-reads \
      --working-dir "$WORK/conclave-$port" >"$WORK/conclave-$port.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 1 100); do
    if curl -sf -X POST http://127.0.0.1:23791/v3/maintenance/status -d '{}' >/dev/null 2>&1 \
      && curl -sf http://127.0.0.1:28001/cluster/info | grep -q '"leader":[0-9]'; then
      return 0
    fi
    sleep 0.2
  done
  echo "the clusters did not come up; logs in $WORK" >&2
  exit 1
}

# bench SYSTEM CONNECTIONS MIX CONSISTENCY -> "ops_per_second p50_ms p99_ms"
bench() {
  local system="$1" connections="$2" mix="$3" consistency="$4" endpoints
  if [ "$system" = etcd ]; then endpoints="$ETCD_ENDPOINTS"; else endpoints="$CONCLAVE_ENDPOINTS"; fi
  local json
  json="$("$CONCLAVE" bench --target "$system" --target-endpoints "$endpoints" \
    --connections "$connections" --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" \
    --key-bytes 16 --value-bytes 100 --mix "$mix" --consistency "$consistency" --bench-json)"
  # The report's "all" object comes first (keys are sorted).
  local ops p50 p99
  ops="$(grep -o '"ops_per_second":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  p50="$(grep -o '"p50_ms":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  p99="$(grep -o '"p99_ms":[0-9.]*' <<<"$json" | head -1 | cut -d: -f2)"
  if grep -q '"errors":{}' <<<"$json"; then :; else echo "  ($system: errors: $(grep -o '"errors":{[^}]*}' <<<"$json"))" >&2; fi
  echo "$ops $p50 $p99"
}

SCENARIOS=(
  "put, 1 connection|1|put=100|linearizable"
  "put, 16 connections|16|put=100|linearizable"
  "put, 64 connections|64|put=100|linearizable"
  "linearizable get, 64|64|get=100|linearizable"
  "lease get, 64 (etcd: serializable)|64|get=100|lease"
)

# The disk's synced-write latency, before and after: on a shared virtual disk it drifts by
# several times over an hour, and the single-connection put p50 of both systems follows it.
disk_sync_ms() {
  local seconds
  seconds="$(dd if=/dev/zero of="$WORK/disk-probe" bs=4k count=500 oflag=dsync 2>&1 | awk '/copied/ { print $(NF-3) }')"
  rm -f "$WORK/disk-probe"
  awk -v s="$seconds" 'BEGIN { printf "%.3f", s * 1000 / 500 }'
}
DISK_BEFORE_MS="$(disk_sync_ms)"

echo "== starting a 3-member etcd ($(etcd --version | head -1)) and a 3-node Conclave cluster in $WORK"
start_clusters
echo "== preloading $KEYS keys into each"
"$CONCLAVE" bench --target etcd --target-endpoints "$ETCD_ENDPOINTS" --connections 16 --duration 1s --warmup 0s --keys "$KEYS" --preload --bench-json >/dev/null
"$CONCLAVE" bench --target conclave --target-endpoints "$CONCLAVE_ENDPOINTS" --connections 16 --duration 1s --warmup 0s --keys "$KEYS" --preload --bench-json >/dev/null

declare -A RESULT
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="etcd conclave"; else order="conclave etcd"; fi
  for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r name connections mix consistency <<<"$scenario"
    for system in $order; do
      echo "  round $round: $system — $name" >&2
      RESULT["$round|$name|$system"]="$(bench "$system" "$connections" "$mix" "$consistency")"
    done
  done
done

echo
echo "date: $(date -u +%Y-%m-%d), machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk: a 4 KiB O_DSYNC write (dd, 500 writes) took $DISK_BEFORE_MS ms before the clusters started and $(disk_sync_ms) ms after the last round"
echo "command: bench/compare-etcd.sh --rounds $ROUNDS --duration $DURATION --warmup $WARMUP --keys $KEYS"
printf '%-38s %6s %12s %9s %9s %12s %9s %9s %8s\n' scenario round "etcd ops/s" "p50 ms" "p99 ms" "conclave" "p50 ms" "p99 ms" ratio
for round in $(seq 1 "$ROUNDS"); do
  for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$scenario"
    read -r e_ops e_p50 e_p99 <<<"${RESULT["$round|$name|etcd"]}"
    read -r c_ops c_p50 c_p99 <<<"${RESULT["$round|$name|conclave"]}"
    ratio="$(awk -v c="$c_ops" -v e="$e_ops" 'BEGIN { if (e > 0) printf "%.1fx", c / e; else print "-" }')"
    printf '%-38s %6s %12.0f %9.2f %9.2f %12.0f %9.2f %9.2f %8s\n' "$name" "$round" "$e_ops" "$e_p50" "$e_p99" "$c_ops" "$c_p50" "$c_p99" "$ratio"
  done
done

# The median of its arguments (the mean of the middle two for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Per scenario, the median of each figure over the rounds; the ratio is taken per round first
# (etcd and Conclave ran back to back in a round), then its median.
declare -A MEDIAN
echo
echo "median of $ROUNDS round(s):"
printf '%-38s %12s %9s %9s %12s %9s %9s %8s\n' scenario "etcd ops/s" "p50 ms" "p99 ms" "conclave" "p50 ms" "p99 ms" ratio
for scenario in "${SCENARIOS[@]}"; do
  IFS='|' read -r name _ _ _ <<<"$scenario"
  e_ops=(); e_p50=(); e_p99=(); c_ops=(); c_p50=(); c_p99=(); ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    read -r eo e5 e9 <<<"${RESULT["$round|$name|etcd"]}"
    read -r co c5 c9 <<<"${RESULT["$round|$name|conclave"]}"
    e_ops+=("$eo"); e_p50+=("$e5"); e_p99+=("$e9"); c_ops+=("$co"); c_p50+=("$c5"); c_p99+=("$c9")
    ratios+=("$(awk -v c="$co" -v e="$eo" 'BEGIN { if (e > 0) print c / e; else print 0 }')")
  done
  MEDIAN["$name|ratio"]="$(median "${ratios[@]}")"
  MEDIAN["$name|c_ops"]="$(median "${c_ops[@]}")"
  MEDIAN["$name|c_p50"]="$(median "${c_p50[@]}")"
  MEDIAN["$name|c_p99"]="$(median "${c_p99[@]}")"
  MEDIAN["$name|e_p99"]="$(median "${e_p99[@]}")"
  printf '%-38s %12.0f %9.2f %9.2f %12.0f %9.2f %9.2f %7.1fx\n' "$name" "$(median "${e_ops[@]}")" \
    "$(median "${e_p50[@]}")" "${MEDIAN["$name|e_p99"]}" "${MEDIAN["$name|c_ops"]}" \
    "${MEDIAN["$name|c_p50"]}" "${MEDIAN["$name|c_p99"]}" "${MEDIAN["$name|ratio"]}"
done

# verdict WHAT VALUE TARGET higher|lower UNIT: "met" or by how much it is missed. Latencies are
# printed to the microsecond, so a verdict never disagrees with the figure beside it.
verdict() {
  awk -v what="$1" -v v="$2" -v t="$3" -v dir="$4" -v unit="$5" 'BEGIN {
    digits = (unit == " ms") ? 3 : (unit == "x") ? 2 : 0
    met = (dir == "higher") ? (v >= t) : (v <= t)
    printf "  %-52s %12.*f%s  target %s%.*f%s: ", what, digits, v, unit, (dir == "higher") ? ">= " : "<= ", digits, t, unit
    if (met) print "met"
    else printf "missed by %.0f%%\n", 100 * ((dir == "higher") ? (t - v) / t : (v - t) / t)
  }'
}
PUT1="put, 1 connection"; PUT64="put, 64 connections"
LIN="linearizable get, 64"; LEASE="lease get, 64 (etcd: serializable)"
echo
echo "targets (issue 7), on the medians:"
verdict "puts at 64 connections, times etcd" "${MEDIAN["$PUT64|ratio"]}" 5 higher "x"
verdict "puts at 64 connections, p99 (target: etcd's p99)" "${MEDIAN["$PUT64|c_p99"]}" "${MEDIAN["$PUT64|e_p99"]}" lower " ms"
verdict "put at 1 connection, p50" "${MEDIAN["$PUT1|c_p50"]}" 0.5 lower " ms"
verdict "linearizable gets at 64, times etcd" "${MEDIAN["$LIN|ratio"]}" 5 higher "x"
verdict "lease gets at 64, times etcd" "${MEDIAN["$LEASE|ratio"]}" 10 higher "x"
verdict "floor: puts at 64 connections" "${MEDIAN["$PUT64|c_ops"]}" 10000 higher " /s"
verdict "floor: put p99 at 64 connections" "${MEDIAN["$PUT64|c_p99"]}" 10 lower " ms"
