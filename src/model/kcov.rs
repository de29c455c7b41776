//! Struct-page access coverage, for guided search.
//!
//! Two kinds of feature, both keyed by kernel function:
//! - *mapping state*: through what kind of vmemmap mapping (own frame or
//!   HVO alias, current or stale TLB entry, writable or read-only) a
//!   function reached a struct page, and what it found there (refcount zero
//!   or not, tail or not). A function reading a fake head through a
//!   read-only alias is a new state even if no interleaving 2-gram is new,
//!   and a near miss (a frozen refcount) is kept and mutated toward the hit.
//! - *conflicts* (optional): like KCOV's comparison operands for a fuzzer,
//!   but for concurrency, which kernel function on *another* CPU touched
//!   that struct page last. A new pair is a new way for two kernel paths to
//!   meet on the same memory, which is what a race needs.

use super::machine::Pfn;
use super::mm_types::StructPage;
use std::panic::Location;

/// One struct-page access, and how it reached its struct page.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub pfn: Pfn,
    pub cpu: Option<u8>,
    pub func: &'static str,
    /// Where in the model the access is made.
    pub site: &'static Location<'static>,
    pub write: bool,
    /// Through an HVO alias, not the pfn's own vmemmap frame.
    pub aliased: bool,
    /// Through a TLB entry the page table no longer holds.
    pub stale: bool,
    pub writable: bool,
}

#[derive(Debug, Clone)]
pub struct AccessCoverage {
    /// Per pfn: the CPU and function of the last access; empty when
    /// conflicts are not recorded.
    last: Vec<Option<(Option<u8>, usize)>>,
    pub features: Vec<u64>,
}

impl AccessCoverage {
    pub fn new(nr_pfns: u32, conflicts: bool) -> Self {
        AccessCoverage {
            last: if conflicts {
                vec![None; nr_pfns as usize]
            } else {
                Vec::new()
            },
            features: Vec::new(),
        }
    }

    pub fn record(&mut self, a: &Access, seen: &StructPage) {
        let (pfn, cpu, func, site, write) = (a.pfn, a.cpu, a.func, a.site, a.write);
        // A kernel name is a string literal: its address identifies it.
        let f = func.as_ptr() as usize as u64;
        let state = write as u64
            | (a.aliased as u64) << 1
            | (a.stale as u64) << 2
            | (a.writable as u64) << 3
            | ((seen.refcount == 0) as u64) << 4
            | (seen.tail_bit() as u64) << 5;
        // The access's source line tells apart two reads in one step (a
        // fake-head check and the refcount read after it), as KCOV's PCs do.
        let at = site.file().as_ptr() as u64 ^ (site.line() as u64) << 32 ^ site.column() as u64;
        let feature = (f.wrapping_mul(0xA24B_AED4_963E_E407) ^ at.rotate_left(17) ^ state)
            .wrapping_mul(0x9FB2_1C65_1E98_DF25)
            | 1;
        // A loop over a folio's struct pages repeats one feature many times.
        if self.features.last() != Some(&feature) {
            self.features.push(feature);
        }
        let Some(slot) = self.last.get_mut(pfn as usize) else {
            return;
        };
        if let Some((prev_cpu, prev)) = *slot
            && prev_cpu != cpu
        {
            let h = (prev as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
                ^ f.rotate_left(23)
                ^ write as u64;
            self.features
                .push(h.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        }
        *slot = Some((cpu, f as usize));
    }
}
