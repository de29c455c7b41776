//! The hugetlbfs file the hugetlb VMAs map (fs/hugetlbfs/inode.c): its
//! rmap lock, and truncation and hole punching, which unmap (and so
//! unshare) the range in every process that maps it.
//!
//! Both first unmap every VMA whose hugetlb VMA lock they can take without
//! waiting (`hugetlb_vmdelete_list`: the lock order is VMA lock, then
//! `i_mmap_rwsem`), then remove the folios from the page cache under the
//! fault mutex of each index (`remove_inode_hugepages`), unmapping any still
//! mapped after dropping `i_mmap_rwsem` and waiting for the VMA lock
//! (`hugetlb_unmap_file_folio`).

use super::KResult;
use super::config::PMD_PAGES;
use super::ctx::Cpu;
use super::hugetlb::{
    __unmap_hugepage_range, hugetlb_fault_mutex_lock_then, hugetlb_fault_mutex_release,
    hugetlb_vma_lock_write, hugetlb_vma_trylock_write, hugetlb_vma_unlock_write,
    hugetlb_vma_unlock_write_locked, tlb_finish_mmu,
};
use super::machine::{Machine, Pfn};
use super::mm_types::Mapping;
use super::oracle::Violation;
use super::page_ref::{folio_get, folio_put, folio_put_refs};
use super::pgtable::{PmdVal, Uaddr, VmArea};
use crate::ktrace;

/// The hugetlbfs file's inode.
#[derive(Debug)]
pub struct Inode {
    /// `i_size`, in huge pages: a fault past it gets SIGBUS.
    pub i_size: u32,
    /// `inode->i_rwsem`, held for write by truncation and hole punching.
    pub i_rwsem: Option<u8>,
}

crate::clone_by_field!(Inode { i_size, i_rwsem });

impl Inode {
    pub fn new(i_size: u32) -> Inode {
        Inode {
            i_size,
            i_rwsem: None,
        }
    }
}

/// `i_mmap_lock_read(mapping)` of the hugetlbfs file, then `then` in the
/// same step.
pub fn i_mmap_lock_read_then<T>(
    cpu: &Cpu,
    func: &'static str,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step_when(
        func,
        |m| m.hugetlbfs.i_mmap_rwsem.can_read(),
        |m| {
            super::oracle::might_sleep(m, "i_mmap_lock_read")?;
            m.hugetlbfs.i_mmap_rwsem.readers += 1;
            then(m)
        },
    )
}

/// `i_mmap_unlock_read`.
pub fn i_mmap_unlock_read(cpu: &Cpu) -> KResult<()> {
    cpu.step("i_mmap_unlock_read", |m| {
        m.hugetlbfs.i_mmap_rwsem.readers -= 1;
        Ok(())
    })
}

/// `i_mmap_lock_write`, then `then` in the same step.
pub fn i_mmap_lock_write_then<T>(
    cpu: &Cpu,
    func: &'static str,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    let me = cpu.index() as u8;
    cpu.step_when(
        func,
        |m| m.hugetlbfs.i_mmap_rwsem.can_write(),
        |m| {
            super::oracle::might_sleep(m, "i_mmap_lock_write")?;
            m.hugetlbfs.i_mmap_rwsem.writer = Some(me);
            then(m)
        },
    )
}

/// `i_mmap_lock_write`.
pub fn i_mmap_lock_write(cpu: &Cpu) -> KResult<()> {
    i_mmap_lock_write_then(cpu, "i_mmap_lock_write", |_| Ok(()))
}

/// `i_mmap_unlock_write`.
pub fn i_mmap_unlock_write(cpu: &Cpu) -> KResult<()> {
    cpu.step("i_mmap_unlock_write", |m| {
        m.hugetlbfs.i_mmap_rwsem.writer = None;
        Ok(())
    })
}

/// The VMAs of every process that map file huge pages `start..end`
/// (`vma_interval_tree_foreach`), with the pages of theirs that do.
fn vmas_mapping(m: &Machine, start: u32, end: u32) -> Vec<(u8, VmArea, std::ops::Range<u32>)> {
    let mut out = Vec::new();
    for (mm, x) in m.mms.iter().enumerate() {
        for v in &x.hugetlb_vmas {
            let first = (v.pgoff / PMD_PAGES).max(start);
            let last = ((v.pgoff + v.end - v.start) / PMD_PAGES).min(end);
            if first >= last {
                continue;
            }
            let from = v.start + first * PMD_PAGES - v.pgoff;
            let to = v.start + last * PMD_PAGES - v.pgoff;
            out.push((mm as u8, *v, from..to));
        }
    }
    out
}

/// `inode_lock` / `inode_unlock` of the hugetlbfs inode.
fn inode_lock(cpu: &Cpu) -> KResult<()> {
    let me = cpu.index() as u8;
    cpu.step_when(
        "inode_lock",
        |m| m.hugetlbfs_inode.i_rwsem.is_none(),
        |m| {
            m.hugetlbfs_inode.i_rwsem = Some(me);
            Ok(())
        },
    )
}

fn inode_unlock(cpu: &Cpu) -> KResult<()> {
    cpu.step("inode_unlock", |m| {
        m.hugetlbfs_inode.i_rwsem = None;
        Ok(())
    })
}

/// `hugetlbfs_punch_hole` of huge page `index` (`fallocate(PUNCH_HOLE)`):
/// `i_size` stays, so the range can be faulted in again.
pub fn hugetlbfs_punch_hole(cpu: &Cpu, index: u32) -> KResult<()> {
    inode_lock(cpu)?;
    hugetlb_vmdelete_list(cpu, index, index + 1)?;
    remove_inode_hugepages(cpu, index, index + 1)?;
    inode_unlock(cpu)
}

/// `hugetlb_vmtruncate(inode, index << huge_page_shift)`: shrink the file
/// to `index` huge pages, unmap and remove everything past it.
pub fn hugetlb_vmtruncate(cpu: &Cpu, index: u32) -> KResult<()> {
    inode_lock(cpu)?;
    cpu.step("i_size_write", |m| {
        m.hugetlbfs_inode.i_size = index;
        Ok(())
    })?;
    hugetlb_vmdelete_list(cpu, index, u32::MAX)?;
    remove_inode_hugepages(cpu, index, u32::MAX)?;
    inode_unlock(cpu)
}

/// `hugetlb_vmdelete_list` under `i_mmap_rwsem` for write: unmap file
/// huge pages `start..end` from every VMA whose lock it can take
/// (`hugetlb_vma_trylock_write`); the others are left to
/// `remove_inode_hugepages`.
fn hugetlb_vmdelete_list(cpu: &Cpu, start: u32, end: u32) -> KResult<()> {
    let vmas = i_mmap_lock_write_then(cpu, "hugetlb_vmdelete_list", |m| {
        Ok(vmas_mapping(m, start, end))
    })?;
    for (mm, v, pages) in vmas {
        let locked = cpu.step("hugetlb_vma_trylock_write", |m| {
            Ok(hugetlb_vma_trylock_write(m, mm, v.id))
        })?;
        if !locked {
            continue;
        }
        unmap_hugepage_range(cpu, mm, pages, None)?;
        hugetlb_vma_unlock_write(cpu, mm, v.id)?;
    }
    i_mmap_unlock_write(cpu)
}

/// `unmap_hugepage_range`: `__unmap_hugepage_range` with its own mmu_gather,
/// finished (the pages freed) before it returns.
fn unmap_hugepage_range(
    cpu: &Cpu,
    mm: u8,
    pages: std::ops::Range<u32>,
    folio: Option<Pfn>,
) -> KResult<()> {
    let put = __unmap_hugepage_range(cpu, mm, pages, folio)?;
    tlb_finish_mmu(cpu, put)
}

/// `remove_inode_hugepages(inode, start, end)`: take the folios of huge
/// pages `start..end` (`filemap_get_folios`, a reference each), and for each
/// under its fault mutex, unmap it if it is still mapped, then delete it
/// from the page cache (dropping the cache's references); release the
/// batch.
fn remove_inode_hugepages(cpu: &Cpu, start: u32, end: u32) -> KResult<()> {
    let batch = cpu.step("filemap_get_folios", |m| {
        let mut batch = Vec::new();
        let end = end.min(m.hugetlbfs.slots.len() as u32);
        for index in start..end {
            if let Some(f) = m.hugetlbfs.slot(index) {
                folio_get(m, f)?;
                batch.push((index, f));
            }
        }
        Ok(batch)
    })?;
    for &(index, folio) in &batch {
        let (ours, mapped) =
            hugetlb_fault_mutex_lock_then(cpu, "remove_inode_hugepages", index, |m| {
                let ours = m.hugetlbfs.slot(index) == Some(folio);
                Ok((ours, m.page(folio + 1)?.entire_mapcount >= 0))
            })?;
        if ours {
            if mapped {
                hugetlb_unmap_file_folio(cpu, index, folio)?;
            }
            let nr = cpu.step("hugetlb_delete_from_page_cache", |m| {
                m.hugetlbfs.set_slot(index, None);
                m.page_mut(folio)?.mapping = Mapping::None;
                ktrace!(m, "hugetlbfs index {index}: pfn {folio} removed");
                Ok(m.cfg.pages_per_huge_page() as i32)
            })?;
            folio_put_refs(cpu, folio, nr)?;
        }
        hugetlb_fault_mutex_release(cpu, index)?;
    }
    for (_, folio) in batch {
        folio_put(cpu, folio)?;
    }
    Ok(())
}

/// `hugetlb_vma_maps_page`: does the VMA's page table map `folio` at `a`?
/// A walk under `i_mmap_rwsem` alone, which holds unsharing off.
fn hugetlb_vma_maps_page(m: &mut Machine, a: Uaddr, folio: Pfn) -> Result<bool, Violation> {
    let Some(t) = m.walk_started(a) else {
        return Ok(false);
    };
    Ok(matches!(m.walk_pmd(a, t)?, PmdVal::Leaf(l) if l.pfn == folio))
}

/// `hugetlb_unmap_file_folio`: with the fault mutex of `index` held (no new
/// mapping of the folio can appear), unmap it from every VMA that still
/// maps it. A VMA whose lock is busy is unmapped after dropping
/// `i_mmap_rwsem` and waiting for its lock (the lock order), then the walk
/// starts over.
fn hugetlb_unmap_file_folio(cpu: &Cpu, index: u32, folio: Pfn) -> KResult<()> {
    let mut vmas = i_mmap_lock_write_then(cpu, "hugetlb_unmap_file_folio", |m| {
        Ok(vmas_mapping(m, index, index + 1))
    })?;
    loop {
        let mut skipped = None;
        for &(mm, v, ref pages) in &vmas {
            let a = Uaddr {
                mm,
                page: pages.start,
            };
            let locked = cpu.step("hugetlb_unmap_file_folio", |m| {
                if !hugetlb_vma_maps_page(m, a, folio)? {
                    return Ok(None);
                }
                Ok(Some(hugetlb_vma_trylock_write(m, mm, v.id)))
            })?;
            match locked {
                None => continue,
                Some(false) => {
                    skipped = Some((mm, v.id));
                    break;
                }
                Some(true) => {
                    unmap_hugepage_range(cpu, mm, pages.clone(), Some(folio))?;
                    hugetlb_vma_unlock_write(cpu, mm, v.id)?;
                }
            }
        }
        let Some((mm, id)) = skipped else {
            break;
        };
        i_mmap_unlock_write(cpu)?;
        hugetlb_vma_lock_write(cpu, mm, id)?;
        vmas = i_mmap_lock_write_then(cpu, "hugetlb_unmap_file_folio", |m| {
            Ok(vmas_mapping(m, index, index + 1))
        })?;
        // The VMA as it is now (`vma_offset_start(vma, start)`): a split
        // while the locks were dropped may have shrunk it.
        let now = cpu.step("hugetlb_unmap_file_folio", |m| {
            let Some((_, _, pages)) = vmas_mapping(m, index, index + 1)
                .into_iter()
                .find(|(x, v, _)| *x == mm && v.id == id)
            else {
                return Ok(None);
            };
            let a = Uaddr {
                mm,
                page: pages.start,
            };
            Ok(hugetlb_vma_maps_page(m, a, folio)?.then_some(pages))
        })?;
        if let Some(pages) = now {
            unmap_hugepage_range(cpu, mm, pages, Some(folio))?;
        }
        cpu.step("hugetlb_vma_unlock_write", |m| {
            hugetlb_vma_unlock_write_locked(m, mm, id);
            Ok(())
        })?;
    }
    i_mmap_unlock_write(cpu)
}
