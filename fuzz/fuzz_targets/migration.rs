//! The migration fuzz target: the same decoder and run as `scenario`, with
//! the op family defaulting to migration's arm (page cache, faults, GUP,
//! migration, collapse) and inputs in which no CPU runs a migration op
//! (`migrate_pages`, `collapse_huge_page`, ...) rejected, so that the
//! corpus concentrates on migration racing GUP-fast, faults, zaps and the
//! page cache.
#![no_main]

mmharness_fuzz::scenario_target!(Target::Of(Subsystem::Migration));
