#!/bin/bash -eu
# Build the cargo-fuzz targets the way OSS-Fuzz and ClusterFuzzLite build
# Rust projects (`cargo fuzz build -O`, binaries copied to $OUT), plus a seed
# corpus per target and the libFuzzer options.
#
# Inside the builder image (Dockerfile) $SRC, $OUT and $SANITIZER are set and
# the toolchain is nightly: the image's cargo-fuzz adds the sanitizer. Run
# here without Docker as a script:
#
#   .clusterfuzzlite/build.sh            # OUT=target/cflite-out, stable
#   OUT=/tmp/out .clusterfuzzlite/build.sh
#
# where it builds with `--sanitizer none` (stable; ASan needs nightly) unless
# SANITIZER is set. `trivial` (libFuzzer's own speed, for `mmharness bench`)
# is not fuzzed there and is not copied.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -f "$root/fuzz/Cargo.toml" ]]; then
    # Copied to $SRC/build.sh by the Dockerfile: the project is beside it.
    root="${SRC:-$root}/mmharness"
fi
export SRC="${SRC:-$(dirname "$root")}"
export OUT="${OUT:-$root/target/cflite-out}"
cd "$root"
mkdir -p "$OUT"

build_args=(-O)
if [[ -z "${SANITIZER:-}" ]]; then
    build_args+=(--sanitizer none)
fi
cargo fuzz build "${build_args[@]}"

bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
targets=()
while read -r t; do
    [[ -n "$t" && "$t" != trivial ]] && targets+=("$t")
done <<<"$(cargo fuzz list)"

# zip DIR FILES...: a seed corpus, without requiring the zip tool.
seed_zip() {
    local zip="$1"
    shift
    python3 - "$zip" "$@" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for f in sys.argv[2:]:
        z.write(f, os.path.basename(f))
PY
}

for t in "${targets[@]}"; do
    cp "$bin_dir/$t" "$OUT/$t"
    # Scenarios run short; keep inputs to what the decoder reads.
    printf '[libfuzzer]\nmax_len = 1024\ntimeout = 25\n' >"$OUT/$t.options"
done
# The parser starts from real scenario files.
if [[ " ${targets[*]} " == *" parser "* ]]; then
    seed_zip "$OUT/parser_seed_corpus.zip" corpus/*.json
    printf '[libfuzzer]\nmax_len = 16384\ntimeout = 25\n' >"$OUT/parser.options"
fi
# The others start from the crash fixtures: each one's bytes reach a race
# under its variant, and run clean on the fixed model.
seeds=()
for f in tests/fixtures/*; do
    [[ "$(basename "$f")" != *.* ]] && seeds+=("$f")
done
for t in "${targets[@]}"; do
    case "$t" in
        parser) ;;
        *) seed_zip "$OUT/${t}_seed_corpus.zip" "${seeds[@]}" ;;
    esac
done
echo "build.sh: ${#targets[@]} fuzz targets in $OUT: ${targets[*]}"
