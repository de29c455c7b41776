#!/usr/bin/env bash
# Mutation score of the default hunt: cargo-mutants mutates the model's
# kernel paths (src/model without the oracles, the coverage, tracing and
# test support, and the execution plumbing), and for each mutant runs
# tests/mutant_hunt.rs, which hunts the mutated model with the old default
# (every engine in turn) and the adaptive default, SECS seconds each. A
# violation kills the mutant. Runs on demand, not in CI: about 1 min per
# mutant on 2 cores (the `mutants` profile rebuilds a mutant incrementally).
#
#   scripts/mutants.sh [SHARD] [SHARDS] [SECS] [CARGO-MUTANTS ARGS...]
#                                                  (default 0 16 20)
#
# MMHARNESS_MUTANT_BEFORE=0 in the environment hunts with the adaptive
# default only (the verdict cargo-mutants counts), not the old one too.
#
# Further arguments go to cargo-mutants, as `--re REGEX` to hunt only the
# mutants a regex names (the survivors of an earlier run, say).
#
# SHARD/SHARDS take every SHARDS-th mutant (cargo-mutants' round-robin
# sharding), a deterministic sample of about 1/SHARDS of them. Results:
# mutants.out/ (cargo-mutants) and mutants.out/hunts.tsv (one line per
# mutant: where it differs from this tree, and what each hunt found).
set -euo pipefail
shard="${1:-0}"
shards="${2:-16}"
secs="${3:-20}"
shift $(($# < 3 ? $# : 3))
cd "$(dirname "$0")/.."
if ! cargo mutants --version >/dev/null 2>&1; then
    cargo install --locked cargo-mutants
fi
export MMHARNESS_MUTANT_SECS="$secs"
export MMHARNESS_MUTANT_LOG="$PWD/mutants.hunts.tsv"
# The unmutated model, to tell each mutant by its difference from it.
orig="$(mktemp -d "${TMPDIR:-/tmp}/mmharness-mutants-orig.XXXXXX")"
trap 'rm -rf "$orig"' EXIT
mkdir -p "$orig/src" && cp -r src/model "$orig/src/"
export MMHARNESS_MUTANT_ORIG="$orig"
: >"$MMHARNESS_MUTANT_LOG"
model_files=(buffer filemap fork gup huge_memory hugetlb hugetlb_vmemmap hugetlbfs khugepaged madvise
    memory migrate mm_types mmap mprotect mremap page_alloc page_flags page_ref pfn_walker pgtable rcu
    rmap smp truncate vma
    vmemmap vmscan)
files=()
for f in "${model_files[@]}"; do
    [[ -f "src/model/$f.rs" ]] && files+=(-f "src/model/$f.rs")
done
cargo mutants "${files[@]}" \
    --shard "$shard/$shards" --sharding round-robin \
    --profile mutants --timeout 300 --jobs 1 "$@" \
    -- --test mutant_hunt -- --ignored || true
mv "$MMHARNESS_MUTANT_LOG" mutants.out/hunts.tsv
echo "mutants.out/hunts.tsv: $(wc -l <mutants.out/hunts.tsv) mutants hunted"
for which in before after; do
    killed=$(grep -Ev "$which=(clean|skipped)([[:space:]]|$)" mutants.out/hunts.tsv | grep -c "$which=" || true)
    echo "$which: $killed killed"
done
