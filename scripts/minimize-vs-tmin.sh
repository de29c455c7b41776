#!/usr/bin/env bash
# For every variant (`mmharness variants`): a crash of its subsystem's
# cargo-fuzz target (fixed libFuzzer seed), then its size three ways: as
# imported, after `cargo fuzz tmin` + `mmharness import`, and after
# `mmharness minimize` of the imported file. Prints the README's table
# (ops = setup + CPU ops; steps = the step at which the oracle fails on
# replay).
#
#   scripts/minimize-vs-tmin.sh [FIND_SECS] [MORE_SECS] [MIN_SECS]   (default 30, 90, 10)
#
# A variant the target does not find in FIND_SECS gets MORE_SECS more; one
# still not found is seeded with the crash of the harness's own input
# engine (`mmharness hunt --engine input --seed 1 --raw-out`): its input
# bytes and the `scenario` target's settings they decode under, from which
# `cargo fuzz tmin` and `mmharness minimize` both start. If `minimize` of
# the imported crash is worse than tmin's on ops or steps, `minimize` of
# the tmin'd import is also run and the row says so.
#
# VARIANTS="a b" limits it to those variants; TMIN_SECS (default 120)
# bounds each `cargo fuzz tmin`; KEEP=DIR keeps the crashes and logs there.
set -euo pipefail
find_secs="${1:-30}"
more_secs="${2:-90}"
min_secs="${3:-10}"
cd "$(dirname "$0")/.."
root="$PWD"
tmin_secs="${TMIN_SECS:-120}"
if [[ -n "${KEEP:-}" ]]; then
    work="$KEEP"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
unset MMHARNESS_VARIANTS MMHARNESS_HVO_MODE MMHARNESS_ARCH MMHARNESS_CPUS MMHARNESS_OPS \
    MMHARNESS_MEMORY_BLOCKS MMHARNESS_HUGETLB_ORDER MMHARNESS_CRASH_DIR
cargo build --release --quiet
(cd fuzz && cargo fuzz build -O --sanitizer none --no-trace-compares >/dev/null 2>&1)
mm="$root/target/release/mmharness"

# size FILE: "OPS STEPS"
size() {
    local ops steps
    ops=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(len(s.get("setup",[]))+sum(len(c) for c in s["cpus"]))' "$1")
    steps=$("$mm" replay --quiet "$1" | grep -oE 'at step [0-9]+' | head -n1 | grep -oE '[0-9]+' || echo '-')
    echo "$ops $steps"
}

# fuzz DIR TARGET SECS: one seeded cargo-fuzz run; prints the crash, if any.
fuzz() {
    (cd fuzz && cargo fuzz run "$2" -O --sanitizer none --no-trace-compares "$1/corpus" -- \
        -max_total_time="$3" -seed=1 -artifact_prefix="$1/" >>"$1/fuzz.log" 2>&1) || true
    find "$1" -maxdepth 1 -name 'crash-*' ! -name '*.settings' | head -n1
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
        thp) t=thp ;;
        *) t=scenario ;;
    esac
    d="$work/$v"
    mkdir -p "$d/corpus"
    export MMHARNESS_VARIANTS="$v"
    label="$t"
    crash=$(fuzz "$d" "$t" "$find_secs")
    if [[ -z "$crash" ]]; then
        crash=$(fuzz "$d" "$t" "$more_secs")
        label="$t (${find_secs}+${more_secs} s run)"
    fi
    if [[ -z "$crash" ]]; then
        # The input engine's crash, as the `scenario` target's input.
        "$mm" hunt --variant "$v" --engine input --seed 1 --time 120 --minimize-time 1 \
            --out "$d/hunt.json" --raw-out "$d/hunt.bin" >"$d/hunt.log" 2>&1 || true
        if [[ ! -s "$d/hunt.bin" ]]; then
            echo "| $v | $t | not found in ${find_secs}+${more_secs} s, nor by the input engine in 120 s | | |"
            continue
        fi
        crash="$d/crash-$(sha1sum <"$d/hunt.bin" | cut -d' ' -f1)"
        mv "$d/hunt.bin" "$crash"
        mv "$d/hunt.bin.settings" "$crash.settings"
        t=scenario
        label="scenario (not found in ${find_secs}+${more_secs} s: seeded with \`hunt --engine input --seed 1 --raw-out\`)"
    fi
    # The crash's own settings (the target's defaults, or the hunt's).
    while IFS='=' read -r name value; do
        [[ "$name" == MMHARNESS_TARGET || -z "$name" ]] || export "$name=$value"
    done <"$crash.settings"
    "$mm" import "$crash" --out "$d/raw.json" >/dev/null 2>&1 || true
    (cd fuzz && timeout "$tmin_secs" cargo fuzz tmin "$t" -O --sanitizer none --no-trace-compares "$crash" -r 2000 -- \
        -artifact_prefix="$d/" >"$d/tmin.log" 2>&1) || true
    unset MMHARNESS_VARIANTS MMHARNESS_HVO_MODE MMHARNESS_ARCH MMHARNESS_CPUS MMHARNESS_OPS \
        MMHARNESS_MEMORY_BLOCKS MMHARNESS_HUGETLB_ORDER
    tmin=$(ls -t "$d"/minimized-from-* 2>/dev/null | head -n1 || true)
    # tmin found no smaller input that still crashes: its result is the crash.
    if [[ -z "$tmin" ]] && grep -q 'failed to minimize beyond' "$d/tmin.log"; then
        tmin="$crash"
    fi
    to="-" ts="-"
    if [[ -n "$tmin" ]]; then
        "$mm" import "$tmin" --out "$d/tmin.json" >/dev/null 2>&1 || true
        read -r to ts <<<"$(size "$d/tmin.json")"
    fi
    "$mm" minimize "$d/raw.json" --time "$min_secs" --out "$d/min.json" >/dev/null 2>&1 || true
    read -r ro rs <<<"$(size "$d/raw.json")"
    read -r mo ms <<<"$(size "$d/min.json")"
    from=""
    if [[ "$mo$ms$to$ts" =~ ^[0-9]+$ ]] && ((mo > to || ms > ts)); then
        "$mm" minimize "$d/tmin.json" --time "$min_secs" --out "$d/min2.json" >/dev/null 2>&1 || true
        read -r mo ms <<<"$(size "$d/min2.json")"
        from=" (of the tmin'd crash)"
    fi
    echo "| $v | $label | $ro / $rs | $to / $ts | $mo / $ms$from |"
done
