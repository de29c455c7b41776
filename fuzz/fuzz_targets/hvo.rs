//! The HVO fuzz target: the op family defaults to HVO's arm (the hugetlb
//! pool and HVO, the page cache, fault injection), and inputs in which no
//! CPU runs an HVO op (`pfn_walk`, `alloc_hugetlb_folio`,
//! `shrink_huge_pool`, ...) are rejected.
#![no_main]

mmharness_fuzz::scenario_target!(Target::Of(Subsystem::Hvo));
