//! The architecture the machine runs: where x86 and arm64 differ for the
//! races the model explores (MODEL-NOTES §8, seed 000). Every rule below
//! is a method, so that a kernel path asks the architecture instead of
//! testing its name.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum Arch {
    /// x86-64.
    #[default]
    #[serde(rename = "x86")]
    #[value(name = "x86")]
    X86,
    /// arm64 with LSE atomics (ARMv8.1 `CAS`), as arm64 kernels use them
    /// when the CPU has them (`system_uses_lse_atomics()`).
    #[serde(rename = "arm64")]
    #[value(name = "arm64")]
    Arm64,
    /// arm64 without LSE: atomics are LL/SC loops
    /// (arch/arm64/include/asm/atomic_ll_sc.h).
    #[serde(rename = "arm64-llsc")]
    #[value(name = "arm64-llsc")]
    Arm64Llsc,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86, Arch::Arm64, Arch::Arm64Llsc];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Arm64 => "arm64",
            Arch::Arm64Llsc => "arm64-llsc",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Arch::X86
    }

    /// Does a `cmpxchg` whose compare fails still need write permission
    /// (and so fault on a read-only mapping)?
    /// - x86: `lock cmpxchg` always writes the destination (the old value
    ///   back when the compare fails: Intel SDM vol. 2A, CMPXCHG, "the
    ///   destination operand is written back if the comparison fails");
    ///   arch/x86/include/asm/cmpxchg.h `__raw_cmpxchg`.
    /// - arm64 LSE: `CAS` is checked as a write whether or not it stores
    ///   (Arm ARM DDI 0487, CAS: its pseudocode makes one atomic
    ///   read-modify-write access, `MemAtomic(.., MemAtomicOp_CAS, ..)`,
    ///   translated and permission-checked as a write before the compare;
    ///   on a failed compare "the architecture permits writing the value
    ///   read" back);
    ///   arch/arm64/include/asm/atomic_lse.h `__lse__cmpxchg_case_*`.
    /// - arm64 LL/SC: `ldxr`, compare, `cbnz 2f` past the `stxr`: a failed
    ///   compare stores nothing and needs no write permission
    ///   (atomic_ll_sc.h `__ll_sc__cmpxchg_case_*`).
    pub fn cmpxchg_faults_on_failed_compare(self) -> bool {
        self != Arch::Arm64Llsc
    }

    /// Must a valid kernel PTE be replaced by break-before-make (clear,
    /// TLBI, write)? arm64: yes, changing the output address of a live
    /// entry is UNPREDICTABLE otherwise (Arm ARM DDI 0487 D8.16.1, "Using
    /// break-before-make when updating translation table entries"), which
    /// is why 060a2c92d1b6 ("arm64: mm: hugetlb: Disable
    /// HUGETLB_PAGE_OPTIMIZE_VMEMMAP") switched HVO off. x86 replaces it in
    /// place (`set_pte_at` is a plain store: arch/x86/include/asm/pgtable.h
    /// `native_set_pte`).
    pub fn kernel_pte_break_before_make(self) -> bool {
        self != Arch::X86
    }

    /// Is a kernel TLB flush an IPI the flushing CPU waits on? x86:
    /// `flush_tlb_kernel_range` is `on_each_cpu(do_kernel_range_flush, ..,
    /// 1)` (arch/x86/mm/tlb.c), so it waits for every CPU to take the IPI,
    /// waiting out a CPU with interrupts off. arm64: `tlbi vaale1is` + `dsb
    /// ish` broadcast in hardware and wait for no CPU's interrupts
    /// (arch/arm64/include/asm/tlbflush.h `flush_tlb_kernel_range`).
    pub fn kernel_tlb_flush_is_ipi(self) -> bool {
        self == Arch::X86
    }

    /// Is a user TLB flush (`flush_tlb_page` in `ptep_clear_flush`) an IPI
    /// the flushing CPU waits on? x86: `flush_tlb_mm_range` →
    /// `native_flush_tlb_multi` → `on_each_cpu_cond_mask(.., true)` to the
    /// CPUs in `mm_cpumask` (arch/x86/mm/tlb.c), so it waits out a
    /// GUP-fast of that mm with interrupts off; that wait is what made
    /// GUP-fast safe before RCU GUP-fast (088b8aa537c2: "On architectures
    /// that send an IPI broadcast on TLB flush, it works as expected").
    /// arm64: `__flush_tlb_page` is `tlbi vale1is` + `dsb ish`
    /// (arch/arm64/include/asm/tlbflush.h) and waits for no CPU.
    pub fn user_tlb_flush_is_ipi(self) -> bool {
        self == Arch::X86
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
