//! HugeTLB Vmemmap Optimization (mm/hugetlb_vmemmap.c).
//!
//! Optimize remaps a folio's tail vmemmap pages read-only onto one kept
//! page and frees the frames they used; restore allocates fresh frames and
//! remaps them read-write. The order of grace period, remap, TLB flush and
//! free is what the variants get wrong.

use super::KResult;
use super::config::{HvoMode, STRUCT_PAGES_PER_VMEMMAP_PAGE, Variant};
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{CompoundInfo, StructPage, pg};
use super::oracle::Violation;
use super::page_ref::folio_ref_sub_and_test;
use super::rcu::synchronize_rcu;
use super::vmemmap::{Pte, vmemmap_page_of};
use crate::exec::Cpu;
use crate::ktrace;
use std::ops::Range;

/// The vmemmap pages backing a folio's struct pages.
fn folio_vmemmap(m: &Machine, folio: Pfn) -> Range<u32> {
    let start = vmemmap_page_of(folio);
    start..start + m.cfg.vmemmap_pages_per_folio()
}

/// Turn an allocated frame into a vmemmap frame holding `pages`.
fn install_memmap_frame(
    m: &mut Machine,
    frame: Pfn,
    home: Option<u32>,
    pages: Box<[StructPage; 64]>,
) {
    let f = &mut m.frames[frame as usize];
    f.owner = Owner::Memmap { home };
    f.content = Content::Memmap(pages);
}

/// `free_vmemmap_page_list`: give the unmapped vmemmap frames back. A
/// memblock frame goes through `free_reserved_page` (which resets its count
/// to 1 first), a buddy one through `__free_page`: either way a put.
fn free_vmemmap_page_list(m: &mut Machine, frames: &[Pfn]) -> Result<(), Violation> {
    for &frame in frames {
        let p = m.page_mut(frame)?;
        if p.test(pg::RESERVED) {
            p.flags &= !pg::RESERVED;
            p.refcount = 1;
        }
        m.frames[frame as usize].owner = Owner::Allocated;
        if folio_ref_sub_and_test(m, frame, 1)? {
            m.free_pages(frame, 0)?;
        }
    }
    ktrace!(m, "free_vmemmap_page_list: frames {frames:?} freed");
    Ok(())
}

fn flush_step(cpu: &Cpu, range: Range<u32>) -> KResult<()> {
    cpu.step("flush_tlb_kernel_range", |m| {
        m.flush_tlb_kernel_range(range.clone());
        ktrace!(m, "flush_tlb_kernel_range(vmemmap pages {range:?})");
        Ok(())
    })
}

/// `vmemmap_get_tail` (2026 series): the shared page of identical tails
/// for this order, allocated once.
fn vmemmap_get_tail(m: &mut Machine) -> Result<Option<Pfn>, Violation> {
    if let Some(t) = m.hstate.vmemmap_tail {
        return Ok(Some(t));
    }
    let Some(frame) = m.alloc_pages(0, 0)? else {
        return Ok(None);
    };
    let tail = StructPage {
        compound_info: CompoundInfo::TailMask(m.cfg.hugetlb_order),
        ..StructPage::INIT
    };
    install_memmap_frame(
        m,
        frame,
        None,
        Box::new([tail; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]),
    );
    m.hstate.vmemmap_tail = Some(frame);
    ktrace!(m, "vmemmap_get_tail: shared tail page is frame {frame}");
    Ok(Some(frame))
}

/// `hugetlb_vmemmap_optimize_folio`. The folio must be frozen at 0.
pub fn hugetlb_vmemmap_optimize_folio(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    let cfg = *cpu.cfg();
    if !cfg.hvo_optimizable() {
        return Ok(());
    }
    let shared_tail = if cfg.hvo_mode == HvoMode::SharedTail {
        match cpu.step("vmemmap_get_tail", vmemmap_get_tail)? {
            Some(t) => Some(t),
            None => return Ok(()),
        }
    } else {
        None
    };
    // The shared-tail series drops the static key and the grace period
    // ("hugetlb: Remove VMEMMAP_SYNCHRONIZE_RCU").
    if cfg.hvo_mode.guards_readers() {
        cpu.step("static_branch_inc", |m| {
            m.hugetlb_optimize_vmemmap_key += 1;
            Ok(())
        })?;
        if !cfg.has(Variant::HvoNoRcuSync) {
            synchronize_rcu(cpu)?;
        }
    }
    // Set before remapping, so the flag is copied to the new head page.
    cpu.step("folio_set_hugetlb_vmemmap_optimized", |m| {
        m.page_mut(folio)?.flags |= pg::VMEMMAP_OPTIMIZED;
        Ok(())
    })?;
    let range = cpu.step("vmemmap_remap_free", |m| Ok(folio_vmemmap(m, folio)))?;
    let head_vpage = range.start;
    // vmemmap_remap_free: a fresh copy of the head vmemmap page keeps the
    // old frames contiguous; keep-1 falls back to reusing page 0.
    let new_head = if cfg.hvo_mode == HvoMode::Keep2 {
        None
    } else {
        let new_head = cpu.step("vmemmap_remap_free", |m| {
            let Some(frame) = m.alloc_pages(0, 0)? else {
                return Ok(None);
            };
            let copy = m.read_vmemmap_page(head_vpage)?;
            install_memmap_frame(m, frame, Some(head_vpage), copy);
            ktrace!(
                m,
                "copy_page: vmemmap page {head_vpage} copied to frame {frame}"
            );
            Ok(Some(frame))
        })?;
        if new_head.is_none() && cfg.hvo_mode == HvoMode::SharedTail {
            return cpu.step("__hugetlb_vmemmap_optimize_folio", |m| {
                m.page_mut(folio)?.flags &= !pg::VMEMMAP_OPTIMIZED;
                ktrace!(m, "-ENOMEM: no head vmemmap page");
                Ok(())
            });
        }
        new_head
    };
    let old_frames = cpu.step("vmemmap_remap_pte", |m| {
        let reserve = cfg.hvo_mode.reserve_pages();
        // The page every remapped tail vmemmap page aliases read-only.
        let reuse = match (cfg.hvo_mode, shared_tail, new_head) {
            (HvoMode::SharedTail, Some(t), _) => t,
            (HvoMode::Keep2, ..) => m.vmemmap.ptes[head_vpage as usize + 1].frame,
            (_, _, Some(h)) => h,
            _ => m.vmemmap.ptes[head_vpage as usize].frame,
        };
        let mut old = Vec::new();
        if let Some(h) = new_head {
            old.push(m.vmemmap.ptes[head_vpage as usize].frame);
            m.set_vmemmap_pte(
                head_vpage,
                Pte {
                    frame: h,
                    writable: true,
                },
            );
        }
        for vpage in range.start + reserve..range.end {
            old.push(m.vmemmap.ptes[vpage as usize].frame);
            m.set_vmemmap_pte(
                vpage,
                Pte {
                    frame: reuse,
                    writable: false,
                },
            );
        }
        ktrace!(
            m,
            "vmemmap pages {}..{} now alias frame {reuse} read-only",
            range.start + reserve,
            range.end
        );
        Ok(old)
    })?;
    if cfg.has(Variant::HvoFreeBeforeFlush) {
        cpu.step("free_vmemmap_page_list", |m| {
            free_vmemmap_page_list(m, &old_frames)
        })?;
        flush_step(cpu, range)
    } else {
        flush_step(cpu, range)?;
        cpu.step("free_vmemmap_page_list", |m| {
            free_vmemmap_page_list(m, &old_frames)
        })
    }
}

/// `reset_struct_pages`: scrub the head metadata cloned into a tail
/// vmemmap page by copying struct pages 4..8 over 0..4.
fn reset_struct_pages(pages: &mut [StructPage; 64]) {
    const NR_RESET_STRUCT_PAGE: usize = 4;
    for i in 0..NR_RESET_STRUCT_PAGE {
        pages[i] = pages[i + NR_RESET_STRUCT_PAGE];
    }
}

/// `hugetlb_vmemmap_restore_folio`: give the folio its own vmemmap back.
/// Returns false on -ENOMEM, with every frame allocated so far freed.
pub fn hugetlb_vmemmap_restore_folio(cpu: &Cpu, folio: Pfn) -> KResult<bool> {
    let cfg = *cpu.cfg();
    let optimized = cpu.step("hugetlb_vmemmap_restore_folio", |m| {
        Ok(m.page(folio)?.test(pg::VMEMMAP_OPTIMIZED))
    })?;
    if !optimized {
        return Ok(true);
    }
    if cfg.hvo_mode.guards_readers() {
        synchronize_rcu(cpu)?;
    }
    let reserve = cfg.hvo_mode.reserve_pages();
    let range = cpu.step("alloc_vmemmap_page_list", |m| Ok(folio_vmemmap(m, folio)))?;
    let tails = range.start + reserve..range.end;
    let new_frames = cpu.step("alloc_vmemmap_page_list", |m| {
        let mut got = Vec::new();
        for _ in tails.clone() {
            match m.alloc_pages(0, 0)? {
                Some(f) => got.push(f),
                None => {
                    for &f in &got {
                        if folio_ref_sub_and_test(m, f, 1)? {
                            m.free_pages(f, 0)?;
                        }
                    }
                    ktrace!(m, "-ENOMEM after {} of {} frames", got.len(), tails.len());
                    return Ok(None);
                }
            }
        }
        Ok(Some(got))
    })?;
    let Some(new_frames) = new_frames else {
        return Ok(false);
    };
    cpu.step("vmemmap_restore_pte", |m| {
        let reuse_vpage = match cfg.hvo_mode {
            HvoMode::Keep2 => Some(range.start + 1),
            HvoMode::Keep1 => Some(range.start),
            HvoMode::SharedTail => None,
        };
        for (vpage, &frame) in tails.clone().zip(&new_frames) {
            let mut copy = m.read_vmemmap_page(reuse_vpage.unwrap_or(vpage))?;
            if cfg.hvo_mode == HvoMode::Keep1 {
                reset_struct_pages(&mut copy);
            }
            install_memmap_frame(m, frame, Some(vpage), copy);
            m.set_vmemmap_pte(
                vpage,
                Pte {
                    frame,
                    writable: true,
                },
            );
        }
        ktrace!(
            m,
            "vmemmap pages {tails:?} remapped read-write to frames {new_frames:?}"
        );
        Ok(())
    })?;
    flush_step(cpu, range)?;
    cpu.step("folio_clear_hugetlb_vmemmap_optimized", |m| {
        m.page_mut(folio)?.flags &= !pg::VMEMMAP_OPTIMIZED;
        if cfg.hvo_mode.guards_readers() {
            m.hugetlb_optimize_vmemmap_key -= 1;
        }
        Ok(())
    })?;
    Ok(true)
}
