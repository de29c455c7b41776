#!/usr/bin/env bash
# cargo fuzz, built for speed: the model's own coverage is the only signal.
#
#   scripts/fuzz-kcov.sh SUBCOMMAND TARGET [ARGS...]
#   scripts/fuzz-kcov.sh run scenario -- -max_total_time=60
#   scripts/fuzz-kcov.sh tmin scenario fuzz/artifacts/scenario/crash-<sha1>
#
# Runs `cargo fuzz SUBCOMMAND TARGET` with the README's flags (-O
# --sanitizer none --no-trace-compares), on stable, but with the compiler's
# edge instrumentation switched off (sanitizer-coverage level 0, appended
# to the RUSTFLAGS cargo-fuzz sets, so it wins) and branch folding left on.
# The scenario targets still feed libFuzzer the model's coverage
# (interleaving 2-grams, struct-page mapping states, decisions) through its
# extra counters (fuzz/src/lib.rs), so libFuzzer keeps, mutates and
# minimizes inputs as before, at about 3x the executions per second
# (BENCHMARKS.md). Its own target directory keeps the default build's.
# The non-scenario targets (`decoder`, `parser`, `trivial`) have no
# coverage at all in this build: fuzz them with plain `cargo fuzz`.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 SUBCOMMAND TARGET [ARGS...]   (as \`cargo fuzz SUBCOMMAND TARGET\`)" >&2
    exit 2
fi
sub="$1"
target="$2"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"

export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cllvm-args=-sanitizer-coverage-level=0"
exec cargo fuzz "$sub" "$target" -O --sanitizer none --no-trace-compares \
    --disable-branch-folding=false --target-dir "$root/fuzz/target/kcov-only" "$@"
