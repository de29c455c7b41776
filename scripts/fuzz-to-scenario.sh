#!/usr/bin/env bash
# Turn a libFuzzer crash artifact of the `scenario` target into a scenario
# file that `mmharness replay` and `mmharness minimize` read.
#
#   scripts/fuzz-to-scenario.sh ARTIFACT [OUT.json]
#
# Run it with the same MMHARNESS_VARIANTS / MMHARNESS_HVO_MODE /
# MMHARNESS_CPUS / MMHARNESS_OPS, and the same TARGET (default: scenario;
# e.g. TARGET=migration), as the fuzzing run that found the artifact: the bytes
# decode to a different scenario under other settings. OUT defaults to
# counterexamples/fuzz-<sha1>.json.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! -f "$1" ]]; then
    echo "usage: $0 ARTIFACT [OUT.json]" >&2
    exit 2
fi
artifact="$(realpath "$1")"
cd "$(dirname "$0")/.."
sha1="$(sha1sum "$artifact" | cut -d' ' -f1)"
out="${2:-counterexamples/fuzz-$sha1.json}"

dir="$(mktemp -d "${TMPDIR:-/tmp}/mmharness-fuzz-to-scenario.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
set +e
MMHARNESS_CRASH_DIR="$dir" cargo fuzz run "${TARGET:-scenario}" --sanitizer none "$artifact" >"$dir/log" 2>&1
status=$?
set -e
if [[ ! -f "$dir/$sha1.json" ]]; then
    echo "fuzz-to-scenario: $artifact does not fail under these settings (exit $status):" >&2
    echo "  TARGET=${TARGET:-scenario} MMHARNESS_VARIANTS=${MMHARNESS_VARIANTS:-} MMHARNESS_HVO_MODE=${MMHARNESS_HVO_MODE:-keep-1} MMHARNESS_CPUS=${MMHARNESS_CPUS:-2} MMHARNESS_OPS=${MMHARNESS_OPS:-(default)}" >&2
    echo "  set them as in the fuzzing run that found it" >&2
    tail -n 20 "$dir/log" >&2
    exit 1
fi
grep -m1 '^==== mmharness:' "$dir/log" | sed 's/^==== //'
mkdir -p "$(dirname "$out")"
cp "$dir/$sha1.json" "$out"
echo "written:  $out"
echo "replay:   ./target/release/mmharness replay $out"
echo "minimize: ./target/release/mmharness minimize $out"
