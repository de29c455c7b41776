//! The THP fuzz target: the op family defaults to THP's arm (faults, user
//! accesses, GUP, fault injection, THP, fork and VMA ops), and inputs in
//! which no CPU runs a THP op (fork, a THP fault, a split, mprotect,
//! mremap, ...) are rejected, so the corpus concentrates on copy-on-write
//! of anonymous memory and THPs racing GUP pins.
#![no_main]

mmharness_fuzz::scenario_target!(Target::Of(Subsystem::Thp));
