//! The PMD-sharing fuzz target: the op family defaults to `pmd-share`'s
//! arm (so scenarios run on the PMD-sharing layout), and inputs are
//! rejected (kept out of the corpus) unless a CPU unshares or frees PMD
//! tables (munmap, MADV_DONTNEED, a VMA split, truncation, hole punch,
//! exit) while they may be shared and walked.
#![no_main]

mmharness_fuzz::scenario_target!(Target::Of(Subsystem::PmdShare));
