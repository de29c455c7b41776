//! Coverage of one execution, for guided search.
//!
//! Three kinds of feature, all keyed by kernel function:
//! - *interleaving 2-grams*: for each step, the previous step's kernel
//!   function, this step's, and whether the CPU switched in between.
//!   Same-CPU pairs follow control flow (which branch a path took);
//!   switched pairs are the interleavings. Each pair's count is bucketed,
//!   as AFL does.
//! - *mapping state*: through what kind of vmemmap mapping (own frame or
//!   HVO alias, current or stale TLB entry, writable or read-only) a
//!   function reached a struct page, and what it found there (refcount zero
//!   or not, tail or not). A function reading a fake head through a
//!   read-only alias is a new state even if no interleaving 2-gram is new,
//!   and a near miss (a frozen refcount) is kept and mutated toward the hit.
//! - *decisions*: a kernel path's data-dependent choice and the state it
//!   chose on (`Machine::cover`), like KCOV's comparison operands: a write
//!   fault reusing a page GUP holds, fork sharing a page, GUP pinning a
//!   page another process maps. A state no execution met before is kept
//!   even when no 2-gram is new.
//! - *conflicts* (optional): like KCOV's comparison operands for a fuzzer,
//!   but for concurrency, which kernel function on *another* CPU touched
//!   that struct page last. A new pair is a new way for two kernel paths to
//!   meet on the same memory, which is what a race needs.

use super::mm_types::StructPage;
use super::vmemmap::Access;

/// The identity of a name (a kernel function, a source file): a hash of
/// its text, so that features do not depend on where the build put the
/// string (identical literals are not always merged). Names are cached by
/// address in a small direct-mapped table: a step's accesses alternate
/// between a few source files, and hashing a path per access showed in
/// profiles.
#[derive(Debug, Clone, Default)]
struct NameIds {
    cache: [(usize, u64); NAME_CACHE],
}

const NAME_CACHE: usize = 16;

impl NameIds {
    fn id(&mut self, name: &'static str) -> u64 {
        let addr = name.as_ptr() as usize;
        let slot = &mut self.cache[(addr >> 3 ^ addr >> 11) % NAME_CACHE];
        if slot.0 == addr && addr != 0 {
            return slot.1;
        }
        // FNV-1a.
        let id = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
        });
        *slot = (addr, id);
        id
    }
}

#[derive(Debug, Clone)]
pub struct Coverage {
    funcs: NameIds,
    files: NameIds,
    decisions: NameIds,
    /// The CPU and function of the running step.
    cur: (Option<u8>, u64),
    /// The CPU and function of the previous step.
    last_step: Option<(Option<u8>, u64)>,
    /// One hashed 2-gram per step.
    pairs: Vec<u64>,
    /// Per pfn: the CPU and function of the last access; empty when
    /// conflicts are not recorded.
    last: Vec<Option<(Option<u8>, u64)>>,
    /// Mapping-state and conflict features.
    features: Vec<u64>,
}

impl Coverage {
    pub fn new(nr_pfns: u32, conflicts: bool) -> Self {
        Coverage {
            funcs: NameIds::default(),
            files: NameIds::default(),
            decisions: NameIds::default(),
            cur: (None, 0),
            last_step: None,
            pairs: Vec::with_capacity(128),
            last: if conflicts {
                vec![None; nr_pfns as usize]
            } else {
                Vec::new()
            },
            features: Vec::with_capacity(256),
        }
    }

    /// A step of kernel function `func` starts on `cpu`.
    pub fn begin_step(&mut self, cpu: Option<u8>, func: &'static str) {
        let f = self.funcs.id(func);
        self.cur = (cpu, f);
        if let Some((prev_cpu, prev)) = self.last_step {
            let switched = (prev_cpu != cpu) as u64;
            let h = prev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ f.rotate_left(29) ^ switched;
            self.pairs.push(h.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        }
        self.last_step = Some((cpu, f));
    }

    /// The execution's features, sorted and deduplicated.
    pub fn into_features(mut self) -> Vec<u64> {
        self.pairs.sort_unstable();
        let mut out = self.features;
        for run in self.pairs.chunk_by(|a, b| a == b) {
            let bucket = match run.len() {
                1 => 0,
                2 => 1,
                3 => 2,
                4..=7 => 3,
                _ => 4,
            };
            out.push(run[0] ^ bucket);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A decision `what` taken on `state` (a few bits).
    pub fn record_decision(&mut self, what: &'static str, state: u64) {
        let d = self.decisions.id(what);
        let feature = (d.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ state.rotate_left(41))
            .wrapping_mul(0x1656_67B1_9E37_79F9)
            | 1;
        self.features.push(feature);
    }

    /// A struct-page access.
    pub fn record_access(&mut self, a: &Access, seen: &StructPage) {
        let (pfn, site, write) = (a.pfn, a.site, a.write);
        let (cpu, f) = self.cur;
        let state = write as u64
            | (a.aliased as u64) << 1
            | (a.stale as u64) << 2
            | (a.pte.writable as u64) << 3
            | ((seen.refcount == 0) as u64) << 4
            | (seen.tail_bit() as u64) << 5;
        // The access's source line tells apart two reads in one step (a
        // fake-head check and the refcount read after it), as KCOV's PCs do.
        let at = self.files.id(site.file()) ^ (site.line() as u64) << 32 ^ site.column() as u64;
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
            let h = prev.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ f.rotate_left(23) ^ write as u64;
            self.features
                .push(h.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        }
        *slot = Some((cpu, f));
    }
}
