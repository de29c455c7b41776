#!/usr/bin/env bash
# For every variant: a cargo-fuzz crash of its subsystem's target (fixed
# libFuzzer seed), then its size three ways: as imported, after `cargo fuzz
# tmin` + `mmharness import`, and after `mmharness minimize` of the
# imported file. Prints the README's table (ops = setup + CPU ops; steps =
# the step at which the oracle fails on replay).
#
#   scripts/minimize-vs-tmin.sh [FIND_SECS] [MIN_SECS]   (default 45, 15)
#
# VARIANTS="a b" limits it to those variants.
set -euo pipefail
find_secs="${1:-45}"
min_secs="${2:-15}"
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset MMHARNESS_VARIANTS MMHARNESS_HVO_MODE MMHARNESS_CPUS MMHARNESS_OPS \
    MMHARNESS_MEMORY_BLOCKS MMHARNESS_HUGETLB_ORDER MMHARNESS_CRASH_DIR
cargo build --release --quiet
(cd fuzz && cargo fuzz build -O --sanitizer none >/dev/null 2>&1)
mm="$root/target/release/mmharness"

# size FILE: "OPS STEPS"
size() {
    local ops steps
    ops=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(len(s.get("setup",[]))+sum(len(c) for c in s["cpus"]))' "$1")
    steps=$("$mm" replay --quiet "$1" | grep -oE 'at step [0-9]+' | head -n1 | grep -oE '[0-9]+' || echo '-')
    echo "$ops $steps"
}

echo "| variant | target | raw crash: ops / steps | cargo fuzz tmin + import | mmharness minimize |"
echo "| --- | --- | --- | --- | --- |"
mapfile -t lines <<<"$("$mm" variants)"
for line in "${lines[@]}"; do
    read -r v sub _ <<<"$line"
    if [[ -n "${VARIANTS:-}" && " $VARIANTS " != *" $v "* ]]; then continue; fi
    sub="${sub#[}"
    sub="${sub%,}"
    case "$sub" in
        hvo) t=hvo ;;
        migration | gup) t=migration ;;
        pmd-share) t=pmd_share ;;
        *) t=scenario ;;
    esac
    d="$work/$v"
    mkdir -p "$d/corpus"
    (cd fuzz && MMHARNESS_VARIANTS="$v" cargo fuzz run "$t" -O --sanitizer none "$d/corpus" -- \
        -max_total_time="$find_secs" -seed=1 -artifact_prefix="$d/" >"$d/fuzz.log" 2>&1) || true
    crash=$(find "$d" -maxdepth 1 -name 'crash-*' ! -name '*.settings' | head -n1)
    if [[ -z "$crash" ]]; then
        echo "| $v | $t | not found in ${find_secs}s | | |"
        continue
    fi
    "$mm" import "$crash" --out "$d/raw.json" >/dev/null 2>&1 || true
    (cd fuzz && MMHARNESS_VARIANTS="$v" timeout 120 cargo fuzz tmin "$t" -O --sanitizer none "$crash" -r 2000 -- \
        -artifact_prefix="$d/" >"$d/tmin.log" 2>&1) || true
    tmin=$(ls -t "$d"/minimized-from-* 2>/dev/null | head -n1 || true)
    tmin_size="-"
    if [[ -n "$tmin" ]]; then
        "$mm" import "$tmin" --out "$d/tmin.json" >/dev/null 2>&1 || true
        tmin_size=$(size "$d/tmin.json")
    fi
    "$mm" minimize "$d/raw.json" --time "$min_secs" --out "$d/min.json" >/dev/null 2>&1 || true
    read -r ro rs <<<"$(size "$d/raw.json")"
    read -r to ts <<<"$tmin_size"
    read -r mo ms <<<"$(size "$d/min.json")"
    echo "| $v | $t | $ro / $rs | ${to:--} / ${ts:--} | $mo / $ms |"
done
