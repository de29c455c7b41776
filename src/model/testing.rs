//! Sequential tests of the model's primitives that read as kernel calls,
//! as the kernel's `tools/testing/vma` tests do: boot a machine with a
//! builder, then run kernel paths on one CPU at a time and look at what
//! they left.
//!
//! ```ignore
//! let mut k = Kernel::builder().blocks(3).boot();
//! let pfn = k.on(0, |cpu| cpu.step("test", |m| m.alloc_pages(0, 600))).unwrap();
//! ```

use super::ctx::{Cpu, CpuId, Record, Sequential};
use super::{
    Config, HvoMode, KResult, Machine, Pfn, Variant, VariantSet, Violation, hugetlb, oracle,
};

/// A booted machine that kernel calls run on, one after another.
pub struct Kernel {
    pub m: Machine,
}

/// How to boot a [`Kernel`].
pub struct Builder {
    cfg: Config,
    cpus: usize,
}

impl Builder {
    /// Physical memory in hugetlb-sized blocks (block 0 holds the memmap).
    pub fn blocks(mut self, n: u8) -> Builder {
        self.cfg.memory_blocks = n;
        self
    }

    pub fn cpus(mut self, n: usize) -> Builder {
        self.cpus = n;
        self
    }

    pub fn hvo(mut self, mode: HvoMode) -> Builder {
        self.cfg.hvo_mode = mode;
        self
    }

    pub fn variant(mut self, v: Variant) -> Builder {
        let mut all: Vec<Variant> = self.cfg.variants.iter().collect();
        all.push(v);
        self.cfg.variants = VariantSet::new(&all);
        self
    }

    /// The layout PMD-sharing scenarios run on
    /// (`Subsystem::PmdShare.layout`): every process maps the hugetlbfs
    /// file with one VMA over PUD range 0, and memory holds its folios.
    pub fn pmd_share(mut self) -> Builder {
        self.cfg = super::Subsystem::PmdShare.layout(self.cfg);
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Builder {
        f(&mut self.cfg);
        self
    }

    pub fn boot(self) -> Kernel {
        self.cfg.validate().expect("a valid test configuration");
        Kernel {
            m: Machine::new(self.cfg, self.cpus),
        }
    }
}

impl Kernel {
    pub fn builder() -> Builder {
        Builder {
            cfg: Config::default(),
            cpus: 2,
        }
    }

    /// The default machine: keep-1 HVO, two blocks, two CPUs.
    pub fn boot() -> Kernel {
        Kernel::builder().boot()
    }

    /// Run kernel code on CPU `cpu` (every step at once, nothing else
    /// running): its value, or the first violation it hit. A step that
    /// would wait for another CPU fails as a deadlock.
    pub fn on<T>(&mut self, cpu: u8, f: impl FnOnce(&Cpu) -> KResult<T>) -> Result<T, Violation> {
        let seq = Sequential::new(&mut self.m, Record::new(false));
        let c = seq.cpu(CpuId::cpu(cpu));
        let value = f(&c);
        match seq.detected() {
            Some(d) => Err(d.violation),
            None => Ok(value.expect("a kernel path halts only on a violation")),
        }
    }

    /// Run kernel code on CPU `cpu` as [`Kernel::on`] does, and return the
    /// lines it traced, each with the number of the step that traced it
    /// (from 1): which stores shared a step.
    pub fn on_traced<T>(
        &mut self,
        cpu: u8,
        f: impl FnOnce(&Cpu) -> KResult<T>,
    ) -> Result<(T, Vec<(u32, String)>), Violation> {
        self.trace_on();
        let seq = Sequential::new(&mut self.m, Record::new(true));
        let value = f(&seq.cpu(CpuId::cpu(cpu)));
        if let Some(d) = seq.detected() {
            return Err(d.violation);
        }
        let lines = seq.into_record().trace.unwrap_or_default();
        let lines = lines.into_iter().map(|e| (e.step, e.text)).collect();
        Ok((
            value.expect("a kernel path halts only on a violation"),
            lines,
        ))
    }

    /// One step of CPU `cpu`: `f` on the machine as that CPU sees it.
    pub fn step<T>(
        &mut self,
        cpu: u8,
        f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
    ) -> Result<T, Violation> {
        self.on(cpu, |c| c.step("test", f))
    }

    /// The buddy allocator's free blocks as (first pfn, order), by pfn.
    pub fn free_blocks(&self) -> Vec<(Pfn, u8)> {
        let mut v = self.m.buddy.free_blocks();
        v.sort_unstable();
        v
    }

    /// Grow the hugetlb pool by the folio of the free block holding
    /// `pfn_hint` (`alloc_pool_huge_folio` on CPU 0, which runs HVO), and
    /// return its head. It sits in the pool frozen at refcount 0.
    pub fn pool_huge_folio(&mut self, pfn_hint: Pfn) -> Pfn {
        self.on(0, |cpu| hugetlb::alloc_pool_huge_folio(cpu, pfn_hint))
            .expect("alloc_pool_huge_folio runs clean");
        *self
            .m
            .hstate
            .free_folios
            .last()
            .expect("alloc_pool_huge_folio added a folio to the pool")
    }

    /// Start recording the lines kernel paths trace (`trace_printk`).
    pub fn trace_on(&mut self) {
        self.m.trace.set_enabled(true);
    }

    /// The lines traced since the last call.
    pub fn take_trace(&mut self) -> Vec<String> {
        self.m.trace.drain().collect()
    }

    /// Every CPU is done: flush the queued hugetlb frees and the outstanding
    /// RCU callbacks, and check the
    /// quiescence invariants (every frame owned once, every reference put).
    pub fn quiesce(&mut self) -> Result<(), Violation> {
        if !self.m.hstate.hpage_freelist.is_empty() {
            let seq = Sequential::new(&mut self.m, Record::new(false));
            let _ = super::hugetlb::flush_free_hpage_work(&seq.cpu(CpuId::SETUP));
            if let Some(d) = seq.detected() {
                return Err(d.violation);
            }
        }
        oracle::at_quiescence(&mut self.m)
    }
}
