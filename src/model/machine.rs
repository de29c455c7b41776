//! The whole simulated machine: frames, vmemmap, per-CPU state, subsystems.

use super::config::{Config, STRUCT_PAGES_PER_VMEMMAP_PAGE};
use super::filemap::AddressSpace;
use super::hugetlb::Hstate;
use super::mm_types::StructPage;
use super::oracle::{Oracle, Violation};
use super::page_alloc::Buddy;
use super::pgtable::PageTables;
use super::rcu::RcuState;
use super::vmemmap::{Pte, Vmemmap};

/// A page frame number. A struct page pointer is `pfn_to_page(pfn)`: the
/// vmemmap address of slot `pfn % 64` in vmemmap page `pfn / 64`.
pub type Pfn = u32;

/// Who owns a physical frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// In the buddy allocator.
    Free,
    /// Holds struct pages for the vmemmap. `home` is the vmemmap page it
    /// privately backs; `None` for the shared tail page of the 2026 series.
    Memmap { home: Option<u32> },
    /// Allocated: a folio's data, or a page someone holds.
    Allocated,
}

/// What a frame holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Freed frames are poisoned.
    Poison,
    /// User data (one word per frame stands for the page).
    Data(u64),
    /// 64 struct pages.
    Memmap(Box<[StructPage; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]>),
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub owner: Owner,
    pub content: Content,
}

/// What a CPU holds across operations (a user's mapping, a pinned page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A hugetlb folio allocated to this CPU's task: one reference.
    HugetlbFolio(Pfn),
    /// A `FOLL_GET` reference from GUP on `folio`, for the user page `page`.
    GupRef { folio: Pfn, page: Pfn },
    /// A `FOLL_PIN` pin: `GUP_PIN_COUNTING_BIAS` references on a small
    /// folio, one reference and one `_pincount` on a large one.
    GupPin { folio: Pfn, page: Pfn },
}

impl Hold {
    /// The folio of a GUP reference or pin.
    pub fn gup_folio(self) -> Option<Pfn> {
        match self {
            Hold::GupRef { folio, .. } | Hold::GupPin { folio, .. } => Some(folio),
            Hold::HugetlbFolio(_) => None,
        }
    }
}

/// A folio whose contents migration (or khugepaged) moved to another folio:
/// from then on, a write to `src` is lost. Dropped when `src` is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub src: Pfn,
    pub dst: Pfn,
    pub cpu: u8,
}

#[derive(Debug, Clone)]
pub struct CpuState {
    /// Cached vmemmap translations; stale until a flush.
    pub tlb: Vec<Option<Pte>>,
    pub holds: Vec<Hold>,
}

/// A folio frozen by `page_ref_freeze`, and the CPU that froze it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    pub folio: Pfn,
    pub cpu: u8,
}

/// One line of the step-by-step trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub step: u32,
    /// `None` for setup, which runs before the CPUs start.
    pub cpu: Option<u8>,
    pub func: &'static str,
    pub text: String,
}

/// Where a violation was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub violation: Violation,
    pub step: u32,
    pub cpu: Option<u8>,
    pub func: &'static str,
}

pub struct Machine {
    pub cfg: Config,
    pub frames: Vec<Frame>,
    pub buddy: Buddy,
    pub vmemmap: Vmemmap,
    pub cpus: Vec<CpuState>,
    pub rcu: RcuState,
    pub mapping: AddressSpace,
    /// User page tables of every process.
    pub pt: PageTables,
    /// Folios whose contents moved elsewhere, until they are freed.
    pub migrated: Vec<Migrated>,
    /// Values written through pins are `write_seq`, counting up.
    pub write_seq: u64,
    pub hstate: Hstate,
    /// `hugetlb_optimize_vmemmap_key`.
    pub hugetlb_optimize_vmemmap_key: u32,
    /// Fault injection: this many next page allocations fail.
    pub fail_next_allocs: u32,
    /// Folios frozen at refcount 0, for the freeze oracle.
    pub frozen: Vec<Frozen>,
    /// The CPU running the current step (`None` during setup).
    pub cur_cpu: Option<u8>,
    pub cur_func: &'static str,
    pub step: u32,
    pub trace: Option<Vec<TraceEvent>>,
    pub detected: Option<Detected>,
    /// Step and struct-page access coverage, when a guided search asks.
    pub coverage: Option<super::kcov::Coverage>,
    /// CPUs blocked until the machine changes (see `exec::Cpu::step_when`).
    pub waiters: u32,
}

/// Number of slots in the model's single file mapping.
pub const PAGE_CACHE_SLOTS: u32 = 8;

impl Machine {
    /// Boot: lay out the memmap in block 0, free everything else.
    pub fn new(cfg: Config, nr_cpus: usize, tracing: bool) -> Machine {
        let nr_pfns = cfg.nr_pfns();
        let nr_vmemmap = nr_pfns / STRUCT_PAGES_PER_VMEMMAP_PAGE;
        let mut frames = Vec::with_capacity(nr_pfns as usize);
        for pfn in 0..nr_pfns {
            if pfn < nr_vmemmap {
                let mut pages =
                    Box::new([StructPage::INIT; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]);
                // The memmap frames themselves are memblock-reserved.
                for (slot, p) in pages.iter_mut().enumerate() {
                    if (pfn * STRUCT_PAGES_PER_VMEMMAP_PAGE + slot as u32) < nr_vmemmap {
                        p.flags |= super::mm_types::pg::RESERVED;
                        p.refcount = 1;
                    }
                }
                frames.push(Frame {
                    owner: Owner::Memmap { home: Some(pfn) },
                    content: Content::Memmap(pages),
                });
            } else {
                frames.push(Frame {
                    owner: Owner::Free,
                    content: Content::Poison,
                });
            }
        }
        let mut m = Machine {
            cfg,
            frames,
            buddy: Buddy::new(cfg.hugetlb_order),
            vmemmap: Vmemmap::new(nr_vmemmap),
            cpus: vec![
                CpuState {
                    tlb: vec![None; nr_vmemmap as usize],
                    holds: Vec::new(),
                };
                nr_cpus.max(1)
            ],
            rcu: RcuState::new(nr_cpus.max(1)),
            mapping: AddressSpace::new(PAGE_CACHE_SLOTS),
            pt: PageTables::new(),
            migrated: Vec::new(),
            write_seq: 0,
            hstate: Hstate::default(),
            hugetlb_optimize_vmemmap_key: 0,
            fail_next_allocs: 0,
            frozen: Vec::new(),
            cur_cpu: None,
            cur_func: "boot",
            step: 0,
            trace: tracing.then(Vec::new),
            detected: None,
            coverage: None,
            waiters: 0,
        };
        m.buddy.boot_free_range(nr_vmemmap, nr_pfns);
        for (pfn, order) in m.buddy.free_blocks() {
            m.peek_mut(pfn).flags = super::mm_types::pg::BUDDY;
            m.peek_mut(pfn).private = order as u32;
        }
        m
    }

    pub fn nr_pfns(&self) -> u32 {
        self.frames.len() as u32
    }

    /// The CPU index used for per-CPU state; setup runs as CPU 0.
    pub fn cpu_index(&self) -> usize {
        self.cur_cpu.unwrap_or(0) as usize
    }

    pub fn halted(&self) -> bool {
        self.detected.is_some()
    }

    /// Record the first violation; later ones are consequences.
    pub fn detect(&mut self, violation: Violation) {
        if self.detected.is_none() {
            if let Some(t) = self.trace.as_mut() {
                t.push(TraceEvent {
                    step: self.step,
                    cpu: self.cur_cpu,
                    func: self.cur_func,
                    text: format!(
                        "VIOLATION {}: {}",
                        violation.oracle.name(),
                        violation.detail
                    ),
                });
            }
            self.detected = Some(Detected {
                violation,
                step: self.step,
                cpu: self.cur_cpu,
                func: self.cur_func,
            });
        }
    }

    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub fn log(&mut self, text: String) {
        let (step, cpu, func) = (self.step, self.cur_cpu, self.cur_func);
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceEvent {
                step,
                cpu,
                func,
                text,
            });
        }
    }

    pub fn violation(&self, oracle: Oracle, detail: String) -> Violation {
        Violation { oracle, detail }
    }
}

/// Append a line to the trace; formats only when tracing is on.
#[macro_export]
macro_rules! ktrace {
    ($m:expr, $($arg:tt)*) => {
        if $m.tracing() {
            $m.log(format!($($arg)*));
        }
    };
}
