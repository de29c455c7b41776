//! HugeTLB Vmemmap Optimization (mm/hugetlb_vmemmap.c).
//!
//! Optimize remaps a folio's tail vmemmap pages read-only onto one kept
//! page and frees the frames they used; restore allocates fresh frames and
//! remaps them read-write. The order of grace period, remap, TLB flush and
//! free is what the variants get wrong.

use super::KResult;
use super::config::{HvoMode, STRUCT_PAGES_PER_VMEMMAP_PAGE};
use super::ctx::Cpu;
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{CompoundInfo, StructPage, pg};
use super::oracle::Violation;
use super::page_ref::folio_ref_sub_and_test;
use super::rcu::synchronize_rcu;
use super::smp::{pause_remote_cpus, resume_remote_cpus};
use super::variant::Variant;
use super::vmemmap::{Pte, vmemmap_page_of};
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
    super::vmemmap::flush_tlb_kernel_range(cpu, range)
}

/// `set_pte_at(&init_mm, ...)` of one vmemmap PTE, traced.
fn set_pte_at(m: &mut Machine, vpage: u32, pte: Pte) {
    m.set_vmemmap_pte(vpage, pte);
    let how = if pte.writable {
        "read-write"
    } else {
        "read-only"
    };
    ktrace!(
        m,
        "set_pte_at(vmemmap page {vpage}): frame {} {how}",
        pte.frame
    );
}

/// The PTE stores of one vmemmap walk (`vmemmap_remap_range` calling
/// `vmemmap_remap_pte` or `vmemmap_restore_pte` per PTE, in address order,
/// so the head vmemmap page first), one step per `set_pte_at` with
/// `prepare(m, i)` (the walk's work before update `i`, such as
/// `copy_page`) in the same step.
///
/// On arm64 each update is a break-before-make, `vmemmap_update_pte` of
/// Nanyong Sun's "mm: HVO: introduce helper function to update and flush
/// pgtable" (the series seed 000 replies to): `pte_clear`,
/// `flush_tlb_kernel_range` of the page, `set_pte_at`, each its own step.
/// The fixed model makes the window safe as Yu Zhao's "arm64: pause remote
/// CPUs to update vmemmap" (approach D of "mm/hugetlb_vmemmap: HVO on
/// arm64", linux-mm, Aug 2024) does: every other CPU is paused by IPI
/// around the walk. `hvo-bbm-no-pause` leaves them running.
fn vmemmap_update_range(
    cpu: &Cpu,
    func: &'static str,
    updates: &[(u32, Pte)],
    mut prepare: impl FnMut(&mut Machine, usize) -> Result<(), Violation>,
) -> KResult<()> {
    let cfg = *cpu.cfg();
    let bbm = cfg.arch.kernel_pte_break_before_make();
    let pause = bbm && !cfg.has(Variant::HvoBbmNoPause);
    if pause {
        pause_remote_cpus(cpu)?;
    }
    for (i, &(vpage, pte)) in updates.iter().enumerate() {
        cpu.step(func, |m| {
            prepare(m, i)?;
            if bbm {
                m.clear_vmemmap_pte(vpage);
                ktrace!(m, "pte_clear(vmemmap page {vpage})");
            } else {
                set_pte_at(m, vpage, pte);
            }
            Ok(())
        })?;
        if bbm {
            cpu.step("flush_tlb_kernel_range", |m| {
                m.flush_tlb_kernel_range(vpage..vpage + 1);
                ktrace!(m, "tlbi vaale1is: vmemmap page {vpage}");
                Ok(())
            })?;
            cpu.step("set_pte_at", |m| {
                set_pte_at(m, vpage, pte);
                Ok(())
            })?;
        }
    }
    if pause {
        resume_remote_cpus(cpu)?;
    }
    Ok(())
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
        super::oracle::hvo_folio_frozen(m, folio, "__hugetlb_vmemmap_optimize_folio")?;
        m.page_mut(folio)?.flags |= pg::VMEMMAP_OPTIMIZED;
        Ok(())
    })?;
    let reserve = cfg.hvo_mode.reserve_pages();
    // The walk reads the PTEs it replaces: the frames it will free.
    let (range, old_frames) = cpu.step("vmemmap_remap_free", |m| {
        let range = folio_vmemmap(m, folio);
        let old: Vec<Pfn> = range
            .clone()
            .map(|vpage| m.vmemmap.ptes[vpage as usize].frame)
            .collect();
        Ok((range, old))
    })?;
    let head_vpage = range.start;
    // vmemmap_remap_free: a fresh copy of the head vmemmap page keeps the
    // old frames contiguous; keep-1 falls back to reusing page 0.
    let new_head = if cfg.hvo_mode == HvoMode::Keep2 {
        None
    } else {
        let new_head = cpu.step("vmemmap_remap_free", |m| {
            let Some(frame) = m.alloc_pages_may_sleep(0, 0, "vmemmap_remap_free(GFP_KERNEL)")?
            else {
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
    // The page every remapped tail vmemmap page aliases read-only.
    let reuse = match (cfg.hvo_mode, shared_tail, new_head) {
        (HvoMode::SharedTail, Some(t), _) => t,
        (HvoMode::Keep2, ..) => old_frames[1],
        (_, _, Some(h)) => h,
        _ => old_frames[0],
    };
    let mut updates = Vec::new();
    if let Some(h) = new_head {
        updates.push((
            head_vpage,
            Pte {
                frame: h,
                writable: true,
            },
        ));
    }
    for vpage in range.start + reserve..range.end {
        updates.push((
            vpage,
            Pte {
                frame: reuse,
                writable: false,
            },
        ));
    }
    vmemmap_update_range(cpu, "vmemmap_remap_pte", &updates, |_, _| Ok(()))?;
    let old_frames: Vec<Pfn> = updates
        .iter()
        .map(|&(vpage, _)| old_frames[(vpage - range.start) as usize])
        .collect();
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
        let optimized = m.page(folio)?.test(pg::VMEMMAP_OPTIMIZED);
        if optimized {
            super::oracle::hvo_folio_frozen(m, folio, "__hugetlb_vmemmap_restore_folio")?;
        }
        Ok(optimized)
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
            match m.alloc_pages_may_sleep(0, 0, "alloc_vmemmap_page_list(GFP_KERNEL)")? {
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
    let reuse_vpage = match cfg.hvo_mode {
        HvoMode::Keep2 => Some(range.start + 1),
        HvoMode::Keep1 => Some(range.start),
        HvoMode::SharedTail => None,
    };
    let updates: Vec<(u32, Pte)> = tails
        .clone()
        .zip(&new_frames)
        .map(|(vpage, &frame)| {
            (
                vpage,
                Pte {
                    frame,
                    writable: true,
                },
            )
        })
        .collect();
    vmemmap_update_range(cpu, "vmemmap_restore_pte", &updates, |m, i| {
        let (vpage, pte) = updates[i];
        let mut copy = m.read_vmemmap_page(reuse_vpage.unwrap_or(vpage))?;
        if cfg.hvo_mode == HvoMode::Keep1 {
            reset_struct_pages(&mut copy);
        }
        install_memmap_frame(m, pte.frame, Some(vpage), copy);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hugetlb::shrink_huge_pool;
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;

    /// The folio at 512: its struct pages fill vmemmap pages 8..16, which
    /// at boot map memmap frames 8..16 read-write.
    const FOLIO: Pfn = 512;
    const VMEMMAP: Range<u32> = 8..16;

    fn boot(mode: HvoMode) -> Kernel {
        Kernel::builder().hvo(mode).boot()
    }

    fn pte(k: &Kernel, vpage: u32) -> Pte {
        k.m.vmemmap.ptes[vpage as usize]
    }

    /// Every vmemmap page of the folio maps a frame of its own,
    /// read-write, holding its own struct pages.
    fn assert_vmemmap_private(k: &Kernel) {
        let mut frames = Vec::new();
        for vpage in VMEMMAP {
            let p = pte(k, vpage);
            assert!(p.writable, "vmemmap page {vpage} is read-write");
            assert_eq!(
                k.m.frames[p.frame as usize].owner,
                Owner::Memmap { home: Some(vpage) },
                "vmemmap page {vpage} maps its own frame {}",
                p.frame
            );
            assert!(!frames.contains(&p.frame), "frame {} mapped twice", p.frame);
            frames.push(p.frame);
        }
    }

    /// The struct pages of a compound folio at `FOLIO` of order 9.
    fn assert_compound_struct_pages(k: &Kernel, tail: CompoundInfo) {
        let head = k.m.peek(FOLIO);
        assert!(head.test(pg::HEAD));
        assert_eq!(k.m.peek(FOLIO + 1).order, 9);
        for pfn in FOLIO + 1..FOLIO + 512 {
            let p = k.m.peek(pfn);
            assert_eq!(p.compound_info, tail, "compound_head of pfn {pfn}");
            assert!(!p.test(pg::HEAD), "pfn {pfn} is no head");
            assert_eq!(p.refcount, 0, "pfn {pfn}");
            if pfn != FOLIO + 1 {
                assert_eq!(p.order, 0, "pfn {pfn} carries no folio order");
            }
        }
    }

    #[test]
    fn keep2_hvo_aliases_tail_vmemmap_pages_to_the_second_one() {
        let mut k = boot(HvoMode::Keep2);

        assert_eq!(k.pool_huge_folio(FOLIO), FOLIO);

        // vmemmap page   8    9    10   11  ...  15
        //                |RW  |RW  |RO  |RO      |RO
        //                8    9 <--+----+--------+
        assert_eq!(
            pte(&k, 8),
            Pte {
                frame: 8,
                writable: true
            }
        );
        assert_eq!(
            pte(&k, 9),
            Pte {
                frame: 9,
                writable: true
            }
        );
        for vpage in 10..16 {
            assert_eq!(
                pte(&k, vpage),
                Pte {
                    frame: 9,
                    writable: false
                },
                "vmemmap page {vpage}"
            );
        }
        // Frames 10..16 went back to the buddy allocator.
        for frame in 10..16 {
            assert_eq!(k.m.frames[frame].owner, Owner::Free, "frame {frame}");
        }
        assert!(k.free_blocks().contains(&(10, 1)));
        assert!(k.free_blocks().contains(&(12, 2)));
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 1);
        assert!(k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        // No head is aliased: struct page 640 reads a tail.
        assert_eq!(k.m.peek(640).compound_info, CompoundInfo::Tail(FOLIO));
    }

    /// The old vmemmap frames go back to the buddy allocator only after
    /// the TLB flush; freed first, the remapping CPU's own TLB still maps
    /// them, and the free is caught there.
    #[test]
    fn hvo_frees_the_old_vmemmap_frames_only_after_the_tlb_flush() {
        let mut k = boot(HvoMode::Keep1);
        k.pool_huge_folio(FOLIO);
        assert!(k.m.cpus.iter().all(|c| {
            c.tlb
                .iter()
                .all(|e| e.is_none_or(|pte| k.m.frames[pte.frame as usize].owner != Owner::Free))
        }));

        let mut k = Kernel::builder()
            .hvo(HvoMode::Keep1)
            .variant(Variant::HvoFreeBeforeFlush)
            .boot();
        let err = k
            .on(0, |cpu| {
                crate::model::hugetlb::alloc_pool_huge_folio(cpu, FOLIO)
            })
            .unwrap_err();
        assert_eq!(err.oracle, Oracle::TlbFlushBeforeFree);
        assert!(
            err.detail.contains("TLB still maps vmemmap page"),
            "{}",
            err.detail
        );
    }

    #[test]
    fn keep1_hvo_aliases_every_vmemmap_page_to_a_copy_of_the_head_one() {
        let mut k = boot(HvoMode::Keep1);

        k.pool_huge_folio(FOLIO);

        // The copy of vmemmap page 8 is frame 16, the first free frame.
        //
        // vmemmap page   8    9    10  ...  15
        //                |RW  |RO  |RO      |RO
        //                16 <-+----+--------+
        assert_eq!(
            pte(&k, 8),
            Pte {
                frame: 16,
                writable: true
            }
        );
        assert_eq!(k.m.frames[16].owner, Owner::Memmap { home: Some(8) });
        for vpage in 9..16 {
            assert_eq!(
                pte(&k, vpage),
                Pte {
                    frame: 16,
                    writable: false
                },
                "vmemmap page {vpage}"
            );
        }
        // All eight old frames, 8 to 15, merged into one order-3 block.
        for frame in 8..16 {
            assert_eq!(k.m.frames[frame].owner, Owner::Free, "frame {frame}");
        }
        assert!(k.free_blocks().contains(&(8, 3)));
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 1);
        // The head's struct pages were copied, flag included.
        assert!(k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert!(k.m.peek(FOLIO + 64).test(pg::HEAD), "a fake head");
    }

    #[test]
    fn shared_tail_hvo_aliases_tail_vmemmap_pages_to_the_shared_tail_page() {
        let mut k = boot(HvoMode::SharedTail);

        k.pool_huge_folio(FOLIO);

        // Frame 16 is the shared tail page, frame 17 the head's copy.
        //
        // vmemmap page   8    9    10  ...  15
        //                |RW  |RO  |RO      |RO
        //                17   16 <-+--------+
        let tail =
            k.m.hstate
                .vmemmap_tail
                .expect("vmemmap_get_tail allocated it");
        assert_eq!(tail, 16);
        assert_eq!(k.m.frames[16].owner, Owner::Memmap { home: None });
        assert_eq!(
            pte(&k, 8),
            Pte {
                frame: 17,
                writable: true
            }
        );
        for vpage in 9..16 {
            assert_eq!(
                pte(&k, vpage),
                Pte {
                    frame: tail,
                    writable: false
                },
                "vmemmap page {vpage}"
            );
        }
        for frame in 8..16 {
            assert_eq!(k.m.frames[frame].owner, Owner::Free, "frame {frame}");
        }
        assert!(k.free_blocks().contains(&(8, 3)));
        // The series drops the static key and the grace period.
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
        // Every struct page the shared page holds is the same tail.
        assert_eq!(
            k.m.peek(FOLIO + 64).compound_info,
            CompoundInfo::TailMask(9)
        );
        assert_eq!(
            k.m.peek(FOLIO + 100).compound_info,
            CompoundInfo::TailMask(9)
        );
    }

    #[test]
    fn shared_tail_hvo_reuses_the_shared_tail_page_for_the_next_folio() {
        let mut k = Kernel::builder().blocks(3).hvo(HvoMode::SharedTail).boot();
        k.pool_huge_folio(512);
        let tail = k.m.hstate.vmemmap_tail.unwrap();

        k.pool_huge_folio(1024);

        assert_eq!(k.m.hstate.vmemmap_tail, Some(tail));
        for vpage in 17..24 {
            assert_eq!(
                pte(&k, vpage),
                Pte {
                    frame: tail,
                    writable: false
                },
                "vmemmap page {vpage}"
            );
        }
    }

    /// Take every free block but the order-9 one at `FOLIO`, and all but
    /// `spare` order-0 frames of the one at 16.
    fn leave_only_the_folio_block(k: &mut Kernel, spare: u32) {
        for (pfn, order) in [(256, 8), (128, 7), (64, 6), (32, 5)] {
            assert_eq!(k.step(0, |m| m.alloc_pages(order, pfn)).unwrap(), Some(pfn));
        }
        for pfn in 16 + spare..32 {
            assert_eq!(k.step(0, |m| m.alloc_pages(0, pfn)).unwrap(), Some(pfn));
        }
        let mut left: Vec<(Pfn, u8)> = (16..16 + spare).map(|p| (p, 0)).collect();
        left.push((FOLIO, 9));
        assert_eq!(k.free_blocks(), left);
    }

    #[test]
    fn keep1_hvo_without_a_frame_for_the_head_copy_reuses_the_original_head_frame() {
        let mut k = boot(HvoMode::Keep1);
        leave_only_the_folio_block(&mut k, 0);

        k.pool_huge_folio(FOLIO);

        // vmemmap_remap_free falls back to the frame already mapped at
        // page 8, and frees the seven others.
        assert_eq!(
            pte(&k, 8),
            Pte {
                frame: 8,
                writable: true
            }
        );
        for vpage in 9..16 {
            assert_eq!(
                pte(&k, vpage),
                Pte {
                    frame: 8,
                    writable: false
                },
                "vmemmap page {vpage}"
            );
        }
        assert_eq!(k.free_blocks(), [(9, 0), (10, 1), (12, 2)]);
        assert!(
            k.m.peek(FOLIO + 64).test(pg::HEAD),
            "a fake head all the same"
        );
        assert!(k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
    }

    #[test]
    fn shared_tail_hvo_without_a_frame_for_the_head_copy_leaves_the_folio_unoptimized() {
        let mut k = boot(HvoMode::SharedTail);
        // One frame: the shared tail page takes it.
        leave_only_the_folio_block(&mut k, 1);

        k.pool_huge_folio(FOLIO);

        assert_eq!(k.m.hstate.vmemmap_tail, Some(16));
        assert!(!k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert_vmemmap_private(&k);
        assert_eq!(
            pte(&k, 9),
            Pte {
                frame: 9,
                writable: true
            }
        );
        assert_eq!(k.free_blocks(), []);
        // Shrinking the pool has nothing to restore.
        k.on(0, shrink_huge_pool).unwrap();
        assert_eq!(k.free_blocks(), [(FOLIO, 9)]);
    }

    #[test]
    fn hugetlb_vmemmap_restore_folio_rebuilds_keep2_tails() {
        let mut k = boot(HvoMode::Keep2);
        k.pool_huge_folio(FOLIO);

        assert!(
            k.on(0, |cpu| hugetlb_vmemmap_restore_folio(cpu, FOLIO))
                .unwrap()
        );

        assert_vmemmap_private(&k);
        assert_compound_struct_pages(&k, CompoundInfo::Tail(FOLIO));
        assert!(!k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
    }

    #[test]
    fn hugetlb_vmemmap_restore_folio_rebuilds_keep1_tails_and_resets_the_head_metadata() {
        let mut k = boot(HvoMode::Keep1);
        k.pool_huge_folio(FOLIO);

        assert!(
            k.on(0, |cpu| hugetlb_vmemmap_restore_folio(cpu, FOLIO))
                .unwrap()
        );

        // Each tail vmemmap page is a copy of page 8 with struct pages 4..8
        // copied over 0..4: no fake head, no order in struct page 577.
        assert_vmemmap_private(&k);
        assert_compound_struct_pages(&k, CompoundInfo::Tail(FOLIO));
        assert_eq!(k.m.peek(FOLIO + 64).flags, 0);
        assert!(!k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
    }

    #[test]
    fn hugetlb_vmemmap_restore_folio_rebuilds_shared_tails() {
        let mut k = boot(HvoMode::SharedTail);
        k.pool_huge_folio(FOLIO);

        assert!(
            k.on(0, |cpu| hugetlb_vmemmap_restore_folio(cpu, FOLIO))
                .unwrap()
        );

        assert_vmemmap_private(&k);
        assert_compound_struct_pages(&k, CompoundInfo::TailMask(9));
        assert!(!k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        // The shared tail page stays for the next folio.
        assert_eq!(k.m.frames[16].owner, Owner::Memmap { home: None });
    }

    #[test]
    fn shrink_huge_pool_restores_the_vmemmap_and_frees_the_folio() {
        for mode in HvoMode::ALL {
            let mut k = boot(mode);
            k.pool_huge_folio(FOLIO);

            k.on(0, shrink_huge_pool).unwrap();

            assert_vmemmap_private(&k);
            assert!(
                k.free_blocks().contains(&(FOLIO, 9)),
                "{mode:?}: {:?}",
                k.free_blocks()
            );
            assert!(k.m.peek(FOLIO).test(pg::BUDDY));
            assert!(
                !k.m.peek(FOLIO)
                    .test(pg::HUGETLB | pg::HEAD | pg::VMEMMAP_OPTIMIZED)
            );
            assert_eq!(k.m.peek(FOLIO + 64).compound_info, CompoundInfo::None);
            assert_eq!(
                (k.m.hstate.nr_huge_pages, k.m.hstate.surplus_huge_pages),
                (0, 0)
            );
            assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
            k.quiesce().unwrap_or_else(|v| panic!("{mode:?}: {v:?}"));
        }
    }

    #[test]
    fn restore_without_memory_keeps_the_folio_as_a_surplus_hugetlb_folio() {
        let mut k = boot(HvoMode::Keep1);
        k.pool_huge_folio(FOLIO);
        let free = k.free_blocks();
        k.m.fail_next_allocs = 1;

        k.on(0, shrink_huge_pool).unwrap();

        assert_eq!(k.m.hstate.free_folios, [FOLIO]);
        assert_eq!(
            (k.m.hstate.nr_huge_pages, k.m.hstate.surplus_huge_pages),
            (1, 1)
        );
        assert!(k.m.peek(FOLIO).test(pg::HUGETLB | pg::VMEMMAP_OPTIMIZED));
        assert_eq!(k.m.peek(FOLIO).refcount, 0, "still frozen in the pool");
        assert_eq!(
            pte(&k, 9),
            Pte {
                frame: 16,
                writable: false
            }
        );
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 1);
        assert_eq!(k.free_blocks(), free);
        k.quiesce().unwrap();
    }

    #[test]
    fn restore_that_runs_out_of_memory_midway_gives_back_the_frames_it_got() {
        let mut k = boot(HvoMode::Keep1);
        k.pool_huge_folio(FOLIO);
        // Leave three free frames where restore needs seven.
        for (pfn, order) in [
            (256, 8),
            (128, 7),
            (64, 6),
            (32, 5),
            (24, 3),
            (20, 2),
            (8, 3),
        ] {
            assert_eq!(k.step(0, |m| m.alloc_pages(order, pfn)).unwrap(), Some(pfn));
        }
        assert_eq!(k.free_blocks(), [(17, 0), (18, 1)]);
        k.trace_on();

        assert!(
            !k.on(0, |cpu| hugetlb_vmemmap_restore_folio(cpu, FOLIO))
                .unwrap()
        );

        assert!(
            k.take_trace()
                .iter()
                .any(|l| l == "-ENOMEM after 3 of 7 frames")
        );
        assert_eq!(k.free_blocks(), [(17, 0), (18, 1)]);
        for frame in 17..20 {
            assert_eq!(k.m.frames[frame].owner, Owner::Free, "frame {frame}");
        }
        assert!(k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert_eq!(
            pte(&k, 9),
            Pte {
                frame: 16,
                writable: false
            }
        );
    }

    #[test]
    fn hvo_restore_fail_frees_frees_the_folio_through_its_read_only_vmemmap() {
        let mut k = Kernel::builder()
            .variant(Variant::HvoRestoreFailFrees)
            .boot();
        k.pool_huge_folio(FOLIO);
        k.m.fail_next_allocs = 1;

        let err = k.on(0, shrink_huge_pool).unwrap_err();

        // free_pages_prepare checks each tail before scrubbing it: struct
        // page 576, the first of vmemmap page 9, reads the head copy's
        // contents through the RO alias (a fake head, no tail bit), so
        // bad_page() reports it before the scrub writes through the alias.
        assert_eq!(err.oracle, Oracle::BadPage);
        assert!(err.detail.contains("pfn 576"), "{}", err.detail);
    }

    #[test]
    fn shrink_huge_pool_keeps_surplus_accounting_after_a_failed_restore() {
        let mut k = boot(HvoMode::Keep1);
        k.pool_huge_folio(FOLIO);
        k.m.fail_next_allocs = 1;
        k.on(0, shrink_huge_pool).unwrap();
        assert_eq!(
            (k.m.hstate.nr_huge_pages, k.m.hstate.surplus_huge_pages),
            (1, 1)
        );

        // set_max_huge_pages(h, 0) shrinks only persistent_huge_pages
        // (nr - surplus = 0 here): the kernel leaves the surplus folio.
        k.on(0, shrink_huge_pool).unwrap();

        let h = &k.m.hstate;
        assert!(
            h.surplus_huge_pages <= h.nr_huge_pages,
            "surplus_huge_pages {} > nr_huge_pages {}",
            h.surplus_huge_pages,
            h.nr_huge_pages
        );
    }

    #[test]
    fn hvo_of_a_folio_that_is_not_frozen_is_refused_by_the_oracle() {
        let mut k = boot(HvoMode::Keep1);
        assert_eq!(k.step(0, |m| m.alloc_pages(9, FOLIO)).unwrap(), Some(FOLIO));
        // A compound folio with its allocation reference: refcount 1.
        k.m.peek_mut(FOLIO).flags |= pg::HEAD;

        let err = k
            .on(0, |cpu| hugetlb_vmemmap_optimize_folio(cpu, FOLIO))
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::HvoNotFrozen);
        assert!(err.detail.contains("refcount 1"), "{}", err.detail);
    }
}
