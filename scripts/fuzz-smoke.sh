#!/usr/bin/env bash
# Time-boxed smoke test of every cargo-fuzz target (fuzz/fuzz_targets/).
#
#   scripts/fuzz-smoke.sh [SECS]      (default 20)
#
# 1. Fuzzes the fixed model with each target `cargo fuzz list` names (but
#    `trivial`) for SECS seconds: must find nothing. `parser` starts from
#    corpus/.
# 2. Fuzzes a bug variant per scenario target that has one below, with a
#    fixed libFuzzer seed, for at most FIND_SECS seconds (default 3 x SECS;
#    it stops at the first crash): must crash, write the artifact and its
#    `.settings`, and `mmharness import` must turn it into a scenario that
#    `mmharness replay` reproduces.
# 3. Cross-replay: the crash bolero found (tests/fixtures/) crashes the
#    built `scenario` target under its variant and runs clean on the fixed
#    model. (tests/bolero.rs replays cargo-fuzz's crash under bolero.)
# 4. The `scenario` target built by scripts/fuzz-kcov.sh (the model's
#    coverage only, as libFuzzer's extra counters): clean on the fixed
#    model for SECS seconds while its corpus grows (so libFuzzer gets the
#    model's coverage: without it the corpus stays empty), and it finds a
#    variant.
# Installs cargo-fuzz if it is missing. Works on stable (--sanitizer none).
# Corpora, logs and artifacts go to a temporary directory, removed on
# success and kept (path printed) on failure.
set -euo pipefail

secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECS]" >&2
    exit 2
fi
find_secs="${FIND_SECS:-$((3 * secs))}"
cd "$(dirname "$0")/.."
root="$PWD"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mmharness-fuzz-smoke.XXXXXX")"
keep=1
cleanup() {
    if [[ $keep == 0 ]]; then
        rm -rf "$work"
    else
        echo "fuzz-smoke: logs, corpora and artifacts kept in $work" >&2
    fi
}
trap cleanup EXIT

# The fuzz runs' own environment: nothing inherited from the caller.
unset MMHARNESS_VARIANTS MMHARNESS_HVO_MODE MMHARNESS_CPUS MMHARNESS_OPS \
    MMHARNESS_MEMORY_BLOCKS MMHARNESS_HUGETLB_ORDER MMHARNESS_CRASH_DIR

echo "fuzz-smoke: building the fuzz targets and mmharness"
cargo fuzz build -O --sanitizer none --no-trace-compares
cargo build --release --quiet
mmharness="$root/target/release/mmharness"
# Not `cargo fuzz list | ...` under pipefail: a reader that exits first
# would count cargo fuzz's SIGPIPE as a failure.
# `trivial` fuzzes nothing (libFuzzer's own speed, for `mmharness bench`).
targets=()
while read -r t; do
    [[ -n "$t" && "$t" != trivial ]] && targets+=("$t")
done <<<"$(cargo fuzz list)"

# How fuzz() runs a target: `cargo fuzz run TARGET` with the README's
# build flags, or scripts/fuzz-kcov.sh (which adds its own).
runner=(cargo fuzz run)
build_flags=(-O --sanitizer none --no-trace-compares)

# fuzz TARGET NAME TIME [LIBFUZZER-ARG...] [-- ENV=VALUE...]: one
# time-boxed run with its own corpus and artifacts under $work/NAME; sets
# $status.
fuzz() {
    local target="$1" name="$2" time="$3"
    shift 3
    local args=() envs=()
    while [[ $# -gt 0 && "$1" != -- ]]; do args+=("$1"); shift; done
    if [[ $# -gt 0 ]]; then shift; envs=("$@"); fi
    mkdir -p "$work/$name/corpus" "$work/$name/artifacts"
    local seeds=()
    if [[ $target == parser ]]; then seeds=("$root/corpus"); fi
    set +e
    env "${envs[@]}" "${runner[@]}" "$target" "${build_flags[@]}" "$work/$name/corpus" "${seeds[@]}" -- \
        -max_total_time="$time" -artifact_prefix="$work/$name/artifacts/" "${args[@]}" \
        >"$work/$name/log" 2>&1
    status=$?
    set -e
    grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$name/log" | sed "s/^/fuzz-smoke: $name: /" || true
}

for t in "${targets[@]}"; do
    echo "fuzz-smoke: $t, fixed model, ${secs}s: must find nothing"
    fuzz "$t" "$t-fixed" "$secs"
    if [[ $status != 0 ]] || compgen -G "$work/$t-fixed/artifacts/*" >/dev/null; then
        echo "fuzz-smoke: FAIL: target $t crashed on the fixed model (exit $status)" >&2
        sed -n '/^==== mmharness/,/^==== end of scenario/p' "$work/$t-fixed/log" >&2
        tail -n 40 "$work/$t-fixed/log" >&2
        exit 1
    fi
done

# A variant each scenario target finds within seconds (a subsystem's new
# target adds its own here).
declare -A variant=(
    [scenario]=hvo-restore-fail-frees
    [hvo]=hvo-no-rcu-sync
    [migration]=migrate-expected-refs-undercount
    [pmd_share]=pmd-unshare-no-gup-fast-sync
    [thp]=fork-shares-pinned-page
)
for t in "${targets[@]}"; do
    v="${variant[$t]:-}"
    [[ -n "$v" ]] || continue
    name="$t-$v"
    echo "fuzz-smoke: $t, $v, at most ${find_secs}s: must crash"
    fuzz "$t" "$name" "$find_secs" -seed=1 -- MMHARNESS_VARIANTS="$v"
    artifacts=("$work/$name/artifacts"/crash-*[^s])
    if [[ $status == 0 || ! -e "${artifacts[0]}" ]]; then
        echo "fuzz-smoke: FAIL: target $t found no crash on $v (exit $status)" >&2
        tail -n 40 "$work/$name/log" >&2
        exit 1
    fi
    artifact="${artifacts[0]}"
    echo "fuzz-smoke: $name: crash after $(grep -oE '^#[0-9]+' "$work/$name/log" | tail -n 1 | tr -d '#') runs"
    grep -m1 '^==== mmharness:' "$work/$name/log" | sed "s/^==== /fuzz-smoke: $name: /"
    if [[ ! -f "$artifact.settings" ]]; then
        echo "fuzz-smoke: FAIL: no settings recorded beside $artifact" >&2
        exit 1
    fi
    # The settings come from the .settings file: nothing else is given.
    set +e
    "$mmharness" import "$artifact" --out "$work/$name/scenario.json" >"$work/$name/import.log" 2>&1
    imported=$?
    "$mmharness" replay --quiet "$work/$name/scenario.json" >"$work/$name/replay.log" 2>&1
    replay=$?
    set -e
    if [[ $imported != 1 || $replay != 1 ]]; then
        echo "fuzz-smoke: FAIL: mmharness import exited $imported and replay $replay, expected 1 and 1 (violation)" >&2
        cat "$work/$name/import.log" "$work/$name/replay.log" >&2
        exit 1
    fi
    grep -m1 'reproduces' "$work/$name/replay.log" | sed "s/^/fuzz-smoke: $name: replay: /"
done

# replay TARGET FILE [ENV=VALUE...]: run the built target once on FILE; sets
# $status.
replay() {
    local target="$1" file="$2" log="$work/replay-$1-$(basename "$2")-$#.log"
    shift 2
    set +e
    env "$@" cargo fuzz run "$target" -O --sanitizer none --no-trace-compares "$file" -- \
        -runs=1 -artifact_prefix="$work/" >"$log" 2>&1
    status=$?
    set -e
    replay_log="$log"
}
bolero_crash=tests/fixtures/bolero-scenario-hvo-no-rcu-sync
echo "fuzz-smoke: cross-replay: bolero's crash under cargo fuzz's scenario target"
replay scenario "$bolero_crash" MMHARNESS_VARIANTS=hvo-no-rcu-sync
if [[ $status == 0 ]] || ! grep -q '^==== mmharness: VIOLATION of no-write-through-ro-vmemmap' "$replay_log"; then
    echo "fuzz-smoke: FAIL: bolero's crash did not crash the scenario target (exit $status)" >&2
    tail -n 40 "$replay_log" >&2
    exit 1
fi
grep -m1 '^==== mmharness:' "$replay_log" | sed 's/^==== /fuzz-smoke: cross-replay: /'
replay scenario "$bolero_crash"
if [[ $status != 0 ]]; then
    echo "fuzz-smoke: FAIL: bolero's crash fails the fixed model too (exit $status)" >&2
    tail -n 40 "$replay_log" >&2
    exit 1
fi
echo "fuzz-smoke: cross-replay: clean on the fixed model"

echo "fuzz-smoke: building the scenario target with scripts/fuzz-kcov.sh"
scripts/fuzz-kcov.sh build scenario
runner=(scripts/fuzz-kcov.sh run)
build_flags=()
echo "fuzz-smoke: scenario (kcov only), fixed model, ${secs}s: must find nothing, corpus must grow"
fuzz scenario kcov-fixed "$secs"
kept=$(find "$work/kcov-fixed/corpus" -type f | wc -l)
if [[ $status != 0 ]] || compgen -G "$work/kcov-fixed/artifacts/*" >/dev/null || [[ $kept -lt 10 ]]; then
    echo "fuzz-smoke: FAIL: kcov-only scenario target exited $status and kept $kept inputs (expected 0 and at least 10)" >&2
    tail -n 40 "$work/kcov-fixed/log" >&2
    exit 1
fi
echo "fuzz-smoke: kcov-fixed: $kept inputs kept"
v=ref-no-fake-head-check
echo "fuzz-smoke: scenario (kcov only), $v, at most ${find_secs}s: must crash"
fuzz scenario "kcov-$v" "$find_secs" -seed=1 -- MMHARNESS_VARIANTS="$v"
if [[ $status == 0 ]] || ! compgen -G "$work/kcov-$v/artifacts/crash-*" >/dev/null; then
    echo "fuzz-smoke: FAIL: kcov-only scenario target found no crash on $v (exit $status)" >&2
    tail -n 40 "$work/kcov-$v/log" >&2
    exit 1
fi
grep -m1 '^==== mmharness:' "$work/kcov-$v/log" | sed "s/^==== /fuzz-smoke: kcov-$v: /"

keep=0
echo "fuzz-smoke: OK"
