//! The executable model of Linux memory management.
//!
//! Each submodule mirrors one kernel file and names its functions after the
//! kernel functions they model. Kernel paths are plain Rust functions that
//! take a [`ctx::Cpu`]; every access to shared state is one step of it,
//! which the executor running the model (shuttle, or [`ctx::Sequential`])
//! makes a scheduling point. The model imports nothing above it.

pub mod arch;
pub mod buffer;
pub mod config;
pub mod ctx;
pub mod filemap;
pub mod fork;
pub mod gup;
pub mod huge_memory;
pub mod hugetlb;
pub mod hugetlb_vmemmap;
pub mod hugetlbfs;
pub mod kcov;
pub mod khugepaged;
pub mod ledger;
pub mod machine;
pub mod madvise;
pub mod memory;
pub mod migrate;
pub mod mm_types;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod op;
pub mod oracle;
pub mod page_alloc;
pub mod page_flags;
pub mod page_ref;
pub mod pfn_walker;
pub mod pgtable;
pub mod rcu;
pub mod rmap;
pub mod smp;
pub mod subsystem;
pub mod testing;
pub mod truncate;
pub mod variant;
pub mod vma;
pub mod vmemmap;
pub mod vmscan;

pub use arch::Arch;
pub use config::{Config, CowDesign, HvoMode};
pub use ctx::{Cpu, CpuId};
pub use machine::{Machine, Pfn};
pub use op::{Op, OpKind};
pub use oracle::{Oracle, Violation};
pub use subsystem::{Subsystem, SubsystemSet};
pub use variant::{Variant, VariantSet};

/// `Clone` whose `clone_from` clones field by field (derived `Clone` does
/// not), so that resetting a machine to a snapshot reuses every buffer.
#[macro_export]
macro_rules! clone_by_field {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl Clone for $ty {
            fn clone(&self) -> Self {
                $ty { $( $field: self.$field.clone() ),* }
            }

            fn clone_from(&mut self, source: &Self) {
                $( self.$field.clone_from(&source.$field); )*
            }
        }
    };
}

/// A kernel path stopped because the execution already violated an oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt;

/// What a kernel path returns: its value, or [`Halt`] once the run is over.
pub type KResult<T> = Result<T, Halt>;
