#!/usr/bin/env bash
# Time-boxed smoke test of the cargo-fuzz targets (fuzz/fuzz_targets/).
#
#   scripts/fuzz-smoke.sh [SECS]      (default 20)
#
# 1. Fuzzes the fixed model with each target (`scenario`, and `migration`,
#    `pmd_share` and `thp` if they exist) for SECS seconds: must find nothing.
# 2. Fuzzes a bug variant per target (scenario: hvo-restore-fail-frees,
#    migration: migrate-expected-refs-undercount, pmd_share:
#    pmd-unshare-no-gup-fast-sync, thp: fork-shares-pinned-page) with a fixed libFuzzer
#    seed for at most FIND_SECS seconds (default 3 x SECS; it stops at the
#    first crash, typically within 10 s): must crash and write an artifact,
#    and the scenario the target writes to $MMHARNESS_CRASH_DIR must replay
#    to a violation with `mmharness replay`.
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
unset MMHARNESS_VARIANTS MMHARNESS_HVO_MODE MMHARNESS_CPUS MMHARNESS_OPS MMHARNESS_CRASH_DIR

echo "fuzz-smoke: building the fuzz targets and mmharness"
cargo fuzz build --sanitizer none
cargo build --release --quiet
targets=(scenario)
# Not `cargo fuzz list | grep -q`: grep may exit first, and pipefail would
# then count cargo fuzz's SIGPIPE as "no such target".
for t in migration pmd_share thp; do
    if grep -qx "$t" <<<"$(cargo fuzz list)"; then
        targets+=("$t")
    fi
done

# fuzz TARGET NAME TIME [LIBFUZZER-ARG...] [-- ENV=VALUE...]: one
# time-boxed run with its own corpus, artifacts and crash dir under
# $work/NAME; sets $status.
fuzz() {
    local target="$1" name="$2" time="$3"
    shift 3
    local args=() envs=()
    while [[ $# -gt 0 && "$1" != -- ]]; do args+=("$1"); shift; done
    if [[ $# -gt 0 ]]; then shift; envs=("$@"); fi
    mkdir -p "$work/$name/corpus" "$work/$name/artifacts" "$work/$name/json"
    set +e
    env "${envs[@]}" MMHARNESS_CRASH_DIR="$work/$name/json" \
        cargo fuzz run "$target" --sanitizer none "$work/$name/corpus" -- \
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

declare -A variant=([scenario]=hvo-restore-fail-frees [migration]=migrate-expected-refs-undercount [pmd_share]=pmd-unshare-no-gup-fast-sync [thp]=fork-shares-pinned-page)
for t in "${targets[@]}"; do
    v="${variant[$t]}"
    name="$t-$v"
    echo "fuzz-smoke: $t, $v, at most ${find_secs}s: must crash"
    fuzz "$t" "$name" "$find_secs" -seed=1 -- MMHARNESS_VARIANTS="$v"
    artifacts=("$work/$name/artifacts"/crash-*)
    if [[ $status == 0 || ! -e "${artifacts[0]}" ]]; then
        echo "fuzz-smoke: FAIL: target $t found no crash on $v (exit $status)" >&2
        tail -n 40 "$work/$name/log" >&2
        exit 1
    fi
    artifact="${artifacts[0]}"
    echo "fuzz-smoke: $name: crash after $(grep -oE '^#[0-9]+' "$work/$name/log" | tail -n 1 | tr -d '#') runs"
    grep -m1 '^==== mmharness:' "$work/$name/log" | sed "s/^==== /fuzz-smoke: $name: /"
    json="$work/$name/json/$(basename "$artifact" | sed 's/^crash-//').json"
    if [[ ! -f "$json" ]]; then
        echo "fuzz-smoke: FAIL: $artifact has no scenario $json" >&2
        exit 1
    fi
    set +e
    ./target/release/mmharness replay --quiet "$json"
    replay=$?
    set -e
    if [[ $replay != 1 ]]; then
        echo "fuzz-smoke: FAIL: mmharness replay $json exited $replay, expected 1 (violation)" >&2
        exit 1
    fi
done

keep=0
echo "fuzz-smoke: OK"
