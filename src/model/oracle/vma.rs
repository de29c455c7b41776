//! What a process's VMAs promise: a fault inside one does not SIGSEGV.

use super::{Oracle, Violation, fail};
use crate::model::machine::Machine;
use crate::model::pgtable::Uaddr;

/// A fault whose VMA lookup found nothing at `a` SIGSEGVs: right only if no
/// VMA of the process covers `a` (`Mm::vm`, which munmap, mremap and exit
/// keep page by page).
pub fn segv_only_outside_vmas(m: &Machine, a: Uaddr) -> Result<(), Violation> {
    if !m.vm_page(a).mapped {
        return Ok(());
    }
    fail(
        Oracle::SegvInVma,
        format!(
            "{a}: the fault found no VMA and raised SIGSEGV, but a VMA of mm{} covers the page",
            a.mm
        ),
    )
}
