#!/usr/bin/env bash
# Issue 8's clean-model criterion: the model as built is clean on every
# architecture under every engine over at least MIN executions each. One
# default hunt (every op arm, HVO mode and CPU count) per architecture and
# engine, `--time SECS`; prints the executions each ran and fails if one
# found a violation or ran fewer than MIN.
#
#   scripts/clean-per-arch.sh [SECS] [MIN]   (default 10 100000)
set -uo pipefail
secs="${1:-10}"
min="${2:-100000}"
cd "$(dirname "$0")/.."
bin=target/release/mmharness
[[ -x $bin ]] || cargo build --release --quiet
log="$(mktemp "${TMPDIR:-/tmp}/clean-per-arch.XXXXXX")"
trap 'rm -f "$log"' EXIT
status=0
printf 'arch\tengine\texecutions\tverdict\n'
for arch in x86 arm64 arm64-llsc; do
    for engine in random pct dfs input; do
        $bin hunt --arch "$arch" --engine "$engine" --time "$secs" --out "/tmp/clean-$arch-$engine.json" >"$log" 2>&1
        rc=$?
        execs=$(grep -oE '[0-9]+ executions in' "$log" | head -1 | awk '{print $1}')
        verdict=clean
        if [[ $rc -ne 0 ]]; then
            verdict="exit $rc: $(grep -m1 VIOLATION "$log" | sed 's/^ *//')"
            status=1
        elif [[ ${execs:-0} -lt $min ]]; then
            verdict="only ${execs:-0} executions"
            status=1
        fi
        printf '%s\t%s\t%s\t%s\n' "$arch" "$engine" "${execs:-0}" "$verdict"
    done
done
exit $status
