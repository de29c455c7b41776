//! Coverage of conflicting struct-page accesses, for guided search.
//!
//! Like KCOV's comparison operands for a fuzzer, but for concurrency: at
//! each struct page access, which kernel function on *another* CPU touched
//! that struct page last. A new pair is a new way for two kernel paths to
//! meet on the same memory, which is what a race needs.

use super::machine::Pfn;

#[derive(Debug, Clone)]
pub struct AccessCoverage {
    /// Per pfn: the CPU and function of the last access.
    last: Vec<Option<(Option<u8>, usize)>>,
    pub features: Vec<u64>,
}

impl AccessCoverage {
    pub fn new(nr_pfns: u32) -> Self {
        AccessCoverage {
            last: vec![None; nr_pfns as usize],
            features: Vec::new(),
        }
    }

    pub fn record(&mut self, pfn: Pfn, cpu: Option<u8>, func: &'static str, write: bool) {
        // A kernel name is a string literal: its address identifies it.
        let f = func.as_ptr() as usize;
        let slot = &mut self.last[pfn as usize];
        if let Some((prev_cpu, prev)) = *slot
            && prev_cpu != cpu
        {
            let h = (prev as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
                ^ (f as u64).rotate_left(23)
                ^ write as u64;
            self.features
                .push(h.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        }
        *slot = Some((cpu, f));
    }
}
