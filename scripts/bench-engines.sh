#!/usr/bin/env bash
# Throughput of the hunt engines on the fixed model.
#
#   scripts/bench-engines.sh [RUNS] [SECS]     (default 5 runs x 5 s)
#
# Runs `mmharness hunt --engine E --ops any --cpus 2 --memory-blocks 2
# --jobs 1 --time SECS` (one engine on one core, each scenario drawing one
# op family, as `hunt --engine E` hunted before the adaptive default)
# RUNS times per engine (random, pct, dfs, input), takes the exec/s of each
# run's summary line, and prints per engine the median exec/s and its ratio
# to the input engine. Every run must come back clean: the model is the
# fixed one. `mmharness bench` is the fuller measurement.
set -euo pipefail

runs="${1:-5}"
secs="${2:-5}"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ && "$secs" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: $0 [RUNS] [SECS]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=./target/release/mmharness
engines=(random pct dfs input)

declare -A median
for e in "${engines[@]}"; do
    rates=()
    for ((i = 0; i < runs; i++)); do
        # --iterations far beyond what fits in the time box: time-bound.
        # A different seed per run, so the median is over different scenarios.
        out="$("$bin" hunt --engine "$e" --ops any --cpus 2 --memory-blocks 2 --jobs 1 --time "$secs" --seed "$i")" || {
            echo "bench-engines: $e run $i failed (a violation on the fixed model?):" >&2
            echo "$out" >&2
            exit 1
        }
        line="$(grep -E "^[0-9]+ scenarios.*exec/s" <<<"$out")"
        rate="$(sed -E 's/.*\( *([0-9.]+) exec\/s\).*/\1/' <<<"$line")"
        echo "bench-engines: $line"
        rates+=("$rate")
    done
    median[$e]="$(printf '%s\n' "${rates[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
done

echo
echo "fixed model, $runs runs x ${secs}s per engine, $(nproc) CPUs"
printf '%-8s %14s %10s\n' engine "median exec/s" "vs input"
for e in "${engines[@]}"; do
    printf '%-8s %14.0f %9.2fx\n' "$e" "${median[$e]}" "$(awk -v a="${median[$e]}" -v b="${median[input]}" 'BEGIN { print (b > 0 ? a / b : 0) }')"
done
