#!/usr/bin/env bash
# Mutation testing of the code the simulator exists to protect: Raft (core/src/raft), storage
# (core/src/storage) and the state machine (core/src/kv). cargo-mutants changes one thing at a
# time (a `>` into `>=`, a function body into a default value, a `&&` into `||`...), and each
# mutant must be caught by the core tests plus a short simulator campaign. A mutant that
# survives is either a blind spot (write the check or fault that kills it) or equivalent
# (explain why in the report).
#
#   ci/mutants.sh                          # every file of the three directories (many hours)
#   ci/mutants.sh core/src/raft/quorum.rs  # some files
#   MUTANTS_SEEDS=200 ci/mutants.sh ...    # seeds of the campaign each mutant must pass (100)
#   MUTANTS_JOBS=2 ci/mutants.sh ...       # mutants built and tested at once (1)
#
# Results go to target/mutants/mutants.out (cargo-mutants' own layout: caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json); the kill rate per file is printed at the end, in
# the form the README's mutation table takes. Not part of .ci/run: one mutant costs a build
# and a campaign, so the whole set takes hours on two cores.
#
# KNOWN ISSUE (cargo-mutants 27.1.0, 2026-12-06): the baseline ran only conclave-core's tests
# (`cargo test --package=conclave-core`) despite --test-package, and likewise with
# --test-workspace=true or `test_package` in .cargo/mutants.toml (checked in the baseline log,
# build and test steps alike), so the simulator was not yet
# part of the test. No kill rate has been recorded until that is resolved.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants > /dev/null; then
  echo "installing cargo-mutants (cargo install --locked cargo-mutants)" >&2
  cargo install --locked cargo-mutants
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(core/src/raft core/src/storage core/src/kv)
fi
file_args=()
for file in "${files[@]}"; do
  if [ -d "$file" ]; then
    file_args+=(--file "$file/**/*.rs")
  else
    file_args+=(--file "$file")
  fi
done

out=target/mutants
mkdir -p "$out"
# The campaign each mutant must pass (sim/tests/seeds.rs reads CONCLAVE_SEEDS); the planted-bug
# and shrinking tests prove the harness itself and would only repeat the campaign's work.
export CONCLAVE_SEEDS="${MUTANTS_SEEDS:-100}"
status=0
cargo mutants \
  --package conclave-core \
  "${file_args[@]}" \
  --test-package conclave-core --test-package conclave-sim \
  --jobs "${MUTANTS_JOBS:-1}" \
  --output "$out" \
  --no-shuffle \
  -- -- --skip caught --skip shrink || status=$?
# cargo-mutants exits 2 when some mutants survived, 3 on timeouts: still worth a report.
case $status in 0 | 2 | 3) ;; *) exit $status ;; esac

python3 - "$out/mutants.out/outcomes.json" <<'PY'
import collections, json, sys

outcomes = json.load(open(sys.argv[1]))["outcomes"]
per_file = collections.defaultdict(collections.Counter)
for outcome in outcomes:
    scenario = outcome.get("scenario")
    if not isinstance(scenario, dict) or "Mutant" not in scenario:
        continue  # the baseline run
    per_file[scenario["Mutant"]["file"]][outcome["summary"]] += 1

print("| file | mutants | caught | missed | timeout | unviable | kill rate |")
print("|---|---|---|---|---|---|---|")
total = collections.Counter()
for file in sorted(per_file):
    counts = per_file[file]
    total.update(counts)
    viable = counts["CaughtMutant"] + counts["MissedMutant"] + counts["Timeout"]
    killed = counts["CaughtMutant"] + counts["Timeout"]
    rate = f"{100 * killed / viable:.0f}%" if viable else "-"
    print(f"| `{file}` | {sum(counts.values())} | {counts['CaughtMutant']} | "
          f"{counts['MissedMutant']} | {counts['Timeout']} | {counts['Unviable']} | {rate} |")
viable = total["CaughtMutant"] + total["MissedMutant"] + total["Timeout"]
killed = total["CaughtMutant"] + total["Timeout"]
if viable:
    print(f"\nall: {killed} of {viable} viable mutants killed ({100 * killed / viable:.1f}%)")
PY
echo "missed mutants: $out/mutants.out/missed.txt"
