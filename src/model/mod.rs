//! The executable model of Linux memory management.
//!
//! Each submodule mirrors one kernel file and names its functions after the
//! kernel functions they model. Kernel paths are plain Rust functions over
//! [`Machine`]; every access to shared state goes through [`crate::exec::Cpu`],
//! which makes it a scheduling point.

pub mod buffer;
pub mod config;
pub mod filemap;
pub mod gup;
pub mod hugetlb;
pub mod hugetlb_vmemmap;
pub mod kcov;
pub mod khugepaged;
pub mod machine;
pub mod memory;
pub mod migrate;
pub mod mm_types;
pub mod oracle;
pub mod page_alloc;
pub mod page_flags;
pub mod page_ref;
pub mod pfn_walker;
pub mod pgtable;
pub mod rcu;
pub mod rmap;
pub mod truncate;
pub mod vmemmap;
pub mod vmscan;

pub use config::{Config, HvoMode, Variant, VariantSet};
pub use machine::{Machine, Pfn};
pub use oracle::{Oracle, Violation};

/// A kernel path stopped because the execution already violated an oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt;

/// What a kernel path returns: its value, or [`Halt`] once the run is over.
pub type KResult<T> = Result<T, Halt>;
