//! hugetlb (mm/hugetlb.c): the pool, the fault path, and PMD sharing.
//!
//! Since v6.10 pool folios stay frozen at refcount 0 and are unfrozen to 1
//! only when handed out.
//!
//! Processes mapping the same hugetlbfs range with PUD-aligned
//! `VM_MAYSHARE` VMAs share one PMD table page (`huge_pmd_share`), counted
//! in its ptdesc (`pt_share_count`: sharers beyond the first). Unmapping a
//! shared range unshares instead (`huge_pmd_unshare`: clear our PUD entry,
//! drop the share); the last user frees the table with the rest of its page
//! tables. Walkers read PUD, then PMD table entry, one load at a time, and
//! are safe against unsharing only under the hugetlb VMA lock or
//! `i_mmap_rwsem` (seed 001); GUP-fast, which takes neither, relies on the
//! IPI of `tlb_remove_table_sync_one`.

use super::KResult;
use super::config::{PMD_PAGES, PUD_PAGES, VmaSlot};
use super::ctx::Cpu;
use super::hugetlb_vmemmap::{hugetlb_vmemmap_optimize_folio, hugetlb_vmemmap_restore_folio};
use super::hugetlbfs::{i_mmap_lock_read_then, i_mmap_unlock_read};
use super::machine::{Hold, Machine, Pfn};
use super::mm_types::Mapping;
use super::mm_types::pg;
use super::oracle::Violation;
use super::page_alloc::folio_alloc;
use super::page_ref::{folio_get, folio_put, folio_ref_add, folio_ref_freeze, folio_ref_unfreeze};
use super::pgtable::{PmdLeaf, PmdVal, PudVal, RwSem, Uaddr, VmArea, tlb_remove_table_sync_one};
use super::smp::under_spinlock;
use super::variant::Variant;
use crate::ktrace;

#[derive(Debug, Default)]
pub struct Hstate {
    /// `h->hugepage_freelists`: frozen folios, most recently freed last.
    pub free_folios: Vec<Pfn>,
    /// `h->hugepage_activelist`.
    pub active_folios: Vec<Pfn>,
    pub nr_huge_pages: u32,
    pub surplus_huge_pages: u32,
    /// The shared read-only tail vmemmap page (2026 series), once allocated.
    pub vmemmap_tail: Option<Pfn>,
    /// `hugetlb_fault_mutex_table`, one mutex per hugetlbfs index (the
    /// kernel hashes indexes onto fewer): the CPU holding it.
    pub fault_mutex: Vec<Option<u8>>,
    /// `hpage_freelist`: HVO'd folios `free_huge_folio` freed in atomic
    /// context, frozen at 0, for `free_hpage_workfn` (oldest first).
    pub hpage_freelist: Vec<Pfn>,
}

crate::clone_by_field!(Hstate {
    free_folios,
    active_folios,
    nr_huge_pages,
    surplus_huge_pages,
    vmemmap_tail,
    fault_mutex,
    hpage_freelist
});

impl Hstate {
    pub fn new(nr_indexes: u32) -> Hstate {
        Hstate {
            fault_mutex: vec![None; nr_indexes as usize],
            ..Hstate::default()
        }
    }
}

/// A `hugetlb_lock` critical section. They are all short and never span a
/// step, so each is one step.
fn with_hugetlb_lock<T>(
    cpu: &Cpu,
    func: &'static str,
    f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step(func, |m| {
        let r = under_spinlock(m, "hugetlb_lock", f)?;
        // spin_unlock(&hugetlb_lock): the counters must match the lists.
        m.ledger.hugetlb_changed = true;
        Ok(r)
    })
}

/// `enqueue_hugetlb_folio`: onto the free list, frozen at 0, free for the
/// next user.
fn enqueue_hugetlb_folio(m: &mut Machine, folio: Pfn) -> Result<(), Violation> {
    let nr = m.cfg.pages_per_huge_page();
    super::oracle::no_tlb_entry_outlives_free(m, folio..folio + nr, "the hugetlb pool")?;
    m.hstate.free_folios.push(folio);
    let cpu = m.cpu_index() as u8;
    m.ledger.freeze(folio, cpu);
    Ok(())
}

/// `alloc_buddy_hugetlb_folio` (v6.12): a compound page from the buddy
/// (`__folio_alloc`, its tails stored in steps of their own), frozen with
/// `folio_ref_freeze(folio, 1)`; a speculative reference that inflated the
/// count makes it put the folio and retry once.
fn alloc_buddy_hugetlb_folio(cpu: &Cpu, pfn_hint: Pfn) -> KResult<Option<Pfn>> {
    for _attempt in 0..2 {
        let order = cpu.cfg().hugetlb_order;
        let Some(folio) = folio_alloc(
            cpu,
            "alloc_buddy_hugetlb_folio",
            order,
            pfn_hint,
            "alloc_buddy_hugetlb_folio",
        )?
        else {
            return Ok(None);
        };
        if cpu.step("alloc_buddy_hugetlb_folio", |m| {
            folio_ref_freeze(m, folio, 1)
        })? {
            return Ok(Some(folio));
        }
        folio_put(cpu, folio)?;
    }
    cpu.step("alloc_buddy_hugetlb_folio", |m| {
        ktrace!(m, "HugeTLB unexpected inflated folio ref count");
        Ok(())
    })?;
    Ok(None)
}

/// `alloc_fresh_hugetlb_folio`: a frozen folio from the buddy with its
/// vmemmap optimized.
fn alloc_fresh_hugetlb_folio(cpu: &Cpu, pfn_hint: Pfn) -> KResult<Option<Pfn>> {
    let Some(folio) = alloc_buddy_hugetlb_folio(cpu, pfn_hint)? else {
        return Ok(None);
    };
    cpu.step("init_new_hugetlb_folio", |m| {
        m.page_mut(folio)?.flags |= pg::HUGETLB;
        Ok(())
    })?;
    hugetlb_vmemmap_optimize_folio(cpu, folio)?;
    Ok(Some(folio))
}

/// `alloc_pool_huge_folio` + `prep_and_add_allocated_folios`: grow the pool
/// by one folio.
pub fn alloc_pool_huge_folio(cpu: &Cpu, pfn_hint: Pfn) -> KResult<()> {
    let Some(folio) = alloc_fresh_hugetlb_folio(cpu, pfn_hint)? else {
        return Ok(());
    };
    with_hugetlb_lock(cpu, "prep_and_add_allocated_folios", |m| {
        enqueue_hugetlb_folio(m, folio)?;
        m.hstate.nr_huge_pages += 1;
        ktrace!(
            m,
            "pfn {folio} joins the pool ({} folios)",
            m.hstate.nr_huge_pages
        );
        Ok(())
    })
}

/// `hugetlb_hstate_alloc_pages` at boot: `hugepages=N` pool folios, from
/// blocks 1, 2, ..., each HVO'd as it joins the pool, run before any CPU
/// starts. Built as the fixed kernel builds it: a variant's bug is the
/// run's to find, and one that fails at boot (hvo-free-before-flush frees
/// before the flush here too) would leave no machine to run it on. The
/// pool booted either way is the same.
pub fn hugetlb_hstate_alloc_pages(m: &mut Machine) {
    let n = m.cfg.hugepages as u32;
    if n == 0 {
        return;
    }
    let variants = std::mem::take(&mut m.cfg.variants);
    boot_pool(m, n);
    m.cfg.variants = variants;
}

fn boot_pool(m: &mut Machine, n: u32) {
    let per_block = m.cfg.pages_per_huge_page();
    let seq = super::ctx::Sequential::new(m, super::ctx::Record::new(false));
    let cpu = seq.cpu(super::ctx::CpuId::SETUP);
    for block in 1..=n {
        let _ = alloc_pool_huge_folio(&cpu, block * per_block);
    }
    if let Some(d) = seq.detected() {
        panic!("booting the hugetlb pool failed: {:?}", d.violation);
    }
}

/// Hand a frozen folio out: unfreeze it to 1, the caller's reference.
fn hand_out(m: &mut Machine, folio: Pfn) -> Result<(), Violation> {
    m.hstate.active_folios.push(folio);
    folio_ref_unfreeze(m, folio, 1)
}

/// `alloc_hugetlb_folio`: take a folio from the pool
/// (`dequeue_hugetlb_folio_node_exact`) or, when the pool is empty,
/// allocate a surplus one (`alloc_surplus_hugetlb_folio`; overcommit is
/// unlimited in the model). Returns it with one reference, the caller's.
fn alloc_hugetlb_folio_ref(cpu: &Cpu, pfn_hint: Pfn) -> KResult<Option<Pfn>> {
    let dequeued = with_hugetlb_lock(cpu, "dequeue_hugetlb_folio_node_exact", |m| {
        let Some(folio) = m.hstate.free_folios.pop() else {
            ktrace!(m, "pool is empty");
            return Ok(None);
        };
        hand_out(m, folio)?;
        Ok(Some(folio))
    })?;
    if dequeued.is_some() {
        return Ok(dequeued);
    }
    let Some(folio) = alloc_fresh_hugetlb_folio(cpu, pfn_hint)? else {
        return Ok(None);
    };
    with_hugetlb_lock(cpu, "alloc_surplus_hugetlb_folio", |m| {
        m.hstate.nr_huge_pages += 1;
        m.hstate.surplus_huge_pages += 1;
        ktrace!(m, "surplus pfn {folio}");
        hand_out(m, folio)?;
        Ok(Some(folio))
    })
}

/// `alloc_hugetlb_folio` for the CPU's task, which keeps the reference.
pub fn alloc_hugetlb_folio(cpu: &Cpu, pfn_hint: Pfn) -> KResult<()> {
    if let Some(folio) = alloc_hugetlb_folio_ref(cpu, pfn_hint)? {
        cpu.step("alloc_hugetlb_folio", |m| {
            let c = m.cpu_index();
            m.cpus[c].holds.push(Hold::HugetlbFolio(folio));
            Ok(())
        })?;
    }
    Ok(())
}

/// The hugetlb VMA lock of process `mm`'s VMA `id`, if the VMA and its lock
/// still exist.
fn vma_lock(m: &Machine, mm: u8, id: u32) -> Option<RwSem> {
    m.mms[mm as usize].vma_by_id(id).and_then(|v| v.lock)
}

fn vma_lock_mut(m: &mut Machine, mm: u8, id: u32) -> Option<&mut RwSem> {
    m.mms[mm as usize]
        .vma_by_id_mut(id)
        .and_then(|v| v.lock.as_mut())
}

/// `hugetlb_vma_lock_read`: nothing to take once the lock is freed.
pub fn hugetlb_vma_lock_read(cpu: &Cpu, mm: u8, id: u32) -> KResult<()> {
    cpu.step_when(
        "hugetlb_vma_lock_read",
        |m| vma_lock(m, mm, id).is_none_or(|l| l.can_read()),
        |m| {
            super::oracle::might_sleep(m, "hugetlb_vma_lock_read")?;
            if let Some(l) = vma_lock_mut(m, mm, id) {
                l.readers += 1;
            }
            Ok(())
        },
    )
}

/// `hugetlb_vma_unlock_read`.
pub fn hugetlb_vma_unlock_read(cpu: &Cpu, mm: u8, id: u32) -> KResult<()> {
    cpu.step("hugetlb_vma_unlock_read", |m| {
        if let Some(l) = vma_lock_mut(m, mm, id) {
            l.readers -= 1;
        }
        Ok(())
    })
}

/// `hugetlb_vma_lock_write` (also `down_write(&vma_lock->rw_sema)` on a
/// lock whose VMA may have gone meanwhile: then there is nothing to take).
pub fn hugetlb_vma_lock_write(cpu: &Cpu, mm: u8, id: u32) -> KResult<()> {
    let me = cpu.index() as u8;
    cpu.step_when(
        "hugetlb_vma_lock_write",
        |m| vma_lock(m, mm, id).is_none_or(|l| l.can_write()),
        |m| {
            super::oracle::might_sleep(m, "hugetlb_vma_lock_write")?;
            if let Some(l) = vma_lock_mut(m, mm, id) {
                l.writer = Some(me);
            }
            Ok(())
        },
    )
}

/// `hugetlb_vma_trylock_write`, inside a step: 1 for a VMA without a lock.
pub fn hugetlb_vma_trylock_write(m: &mut Machine, mm: u8, id: u32) -> bool {
    let me = m.cpu_index() as u8;
    match vma_lock_mut(m, mm, id) {
        Some(l) if !l.can_write() => false,
        Some(l) => {
            l.writer = Some(me);
            true
        }
        None => true,
    }
}

/// `hugetlb_vma_unlock_write`, inside a step.
pub fn hugetlb_vma_unlock_write_locked(m: &mut Machine, mm: u8, id: u32) {
    if let Some(l) = vma_lock_mut(m, mm, id) {
        l.writer = None;
    }
}

/// `hugetlb_vma_unlock_write`.
pub fn hugetlb_vma_unlock_write(cpu: &Cpu, mm: u8, id: u32) -> KResult<()> {
    cpu.step("hugetlb_vma_unlock_write", |m| {
        hugetlb_vma_unlock_write_locked(m, mm, id);
        Ok(())
    })
}

/// `mutex_unlock(&hugetlb_fault_mutex_table[hash])`.
fn hugetlb_fault_mutex_unlock(cpu: &Cpu, idx: u32) -> KResult<()> {
    cpu.step("hugetlb_fault_mutex_unlock", |m| {
        m.hstate.fault_mutex[idx as usize] = None;
        Ok(())
    })
}

/// `mutex_lock(&hugetlb_fault_mutex_table[hash])`, then `then` in the same
/// step.
pub fn hugetlb_fault_mutex_lock_then<T>(
    cpu: &Cpu,
    func: &'static str,
    idx: u32,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    let me = cpu.index() as u8;
    cpu.step_when(
        func,
        |m| m.hstate.fault_mutex[idx as usize].is_none(),
        |m| {
            super::oracle::might_sleep(m, "hugetlb_fault_mutex_lock")?;
            m.hstate.fault_mutex[idx as usize] = Some(me);
            then(m)
        },
    )
}

/// `hugetlb_fault_mutex_unlock` for the callers in hugetlbfs.
pub fn hugetlb_fault_mutex_release(cpu: &Cpu, idx: u32) -> KResult<()> {
    hugetlb_fault_mutex_unlock(cpu, idx)
}

/// The PUD range holding `page`.
pub fn pud_range(page: u32) -> std::ops::Range<u32> {
    let floor = page - page % PUD_PAGES;
    floor..floor + PUD_PAGES
}

/// `hugetlb_walk` (`huge_pte_offset` before v6.2, 9c67a20704e7): load the
/// PUD and return the PMD table it points at. Since v6.2 its callers must
/// hold the hugetlb VMA lock or `i_mmap_rwsem` (it asserts so), because
/// the table may otherwise be unshared and freed under them.
pub fn hugetlb_walk(cpu: &Cpu, a: Uaddr, func: &'static str) -> KResult<Option<Pfn>> {
    cpu.step(func, |m| Ok(m.walk_started(a)))
}

/// `want_pmd_share`: a `VM_MAYSHARE` VMA with its lock, covering the whole
/// PUD range of `a`.
fn want_pmd_share(vma: &VmArea, a: Uaddr) -> bool {
    vma.lock.is_some() && vma.covers(pud_range(a.page))
}

/// `page_table_shareable(svma, vma, addr, idx)`: `svma` maps the file page
/// at the same offset in its PMD table, covers that whole PUD range and
/// still has its lock. The address in `svma`, if so.
fn page_table_shareable(svma: &VmArea, a: Uaddr, file_page: u32) -> Option<u32> {
    let saddr = svma.address_of(file_page)?;
    let same_slot = saddr % PUD_PAGES == a.page % PUD_PAGES;
    (same_slot && svma.covers(pud_range(saddr)) && svma.lock.is_some()).then_some(saddr)
}

/// `ptdesc_pmd_pts_inc` / `ptdesc_pmd_pts_dec` on the PMD table `table`.
fn ptdesc_pmd_pts_add(m: &mut Machine, table: Pfn, delta: i32) -> Result<(), Violation> {
    m.page_mut(table)?.pt_share_count += delta;
    m.ledger.touch_pmd_table(table);
    Ok(())
}

/// `huge_pmd_share` (v6.13+, 59d9094df3d7): under `i_mmap_rwsem` for read,
/// find another process's VMA mapping the same file range whose PUD already
/// points at a PMD table (`hugetlb_walk` of *its* page table, safe because
/// unsharing needs `i_mmap_rwsem` for write), take a share of it
/// (`ptdesc_pmd_pts_inc`) and point our PUD at it; else allocate our own
/// (`pmd_alloc`, in the same `i_mmap_rwsem` section).
fn huge_pmd_share(cpu: &Cpu, a: Uaddr, vma: VmArea) -> KResult<Option<Pfn>> {
    let file_page = vma.pgoff + a.page - vma.start;
    let siblings = i_mmap_lock_read_then(cpu, "huge_pmd_share", |m| {
        let mut out = Vec::new();
        for (smm, x) in m.mms.iter().enumerate() {
            if smm == a.mm as usize {
                continue;
            }
            for svma in &x.hugetlb_vmas {
                if let Some(saddr) = page_table_shareable(svma, a, file_page) {
                    out.push(Uaddr {
                        mm: smm as u8,
                        page: saddr,
                    });
                }
            }
        }
        Ok(out)
    })?;
    let me = cpu.index() as u8;
    for sa in siblings {
        let Some(spte) = hugetlb_walk(cpu, sa, "hugetlb_walk")? else {
            continue;
        };
        cpu.step("huge_pmd_share", |m| {
            m.ledger.walk_done(me);
            if !m.pmd_table_of(sa.mm, spte, sa) {
                return Err(super::oracle::walked_pmd_table_not_of_mm(m, sa, spte));
            }
            ptdesc_pmd_pts_add(m, spte, 1)?;
            // spin_lock(&mm->page_table_lock): populate unless a racing
            // fault of our process did.
            if m.pud(a) == PudVal::None {
                m.set_pud(a, PudVal::Table(spte));
                m.ledger.shared_table(spte);
                ktrace!(
                    m,
                    "{a}: shares {sa}'s PMD table in frame {spte} (pt_share_count {})",
                    m.peek(spte).pt_share_count
                );
            } else {
                ptdesc_pmd_pts_add(m, spte, -1)?;
            }
            Ok(())
        })?;
        break;
    }
    let table = cpu.step("huge_pmd_share", |m| {
        if !m.pmd_alloc(a)? {
            return Ok(None);
        }
        Ok(m.walk_started(a))
    })?;
    i_mmap_unlock_read(cpu)?;
    Ok(table)
}

/// `huge_pte_alloc` for a PMD-sized hugetlb page: the PMD table for `a`,
/// shared with a sibling when the VMA can share (`huge_pmd_share`). `None`
/// when the allocation fails.
fn huge_pte_alloc(cpu: &Cpu, a: Uaddr, vma: VmArea) -> KResult<Option<Pfn>> {
    if let Some(t) = hugetlb_walk(cpu, a, "huge_pte_alloc")? {
        return Ok(Some(t));
    }
    if want_pmd_share(&vma, a) {
        return huge_pmd_share(cpu, a, vma);
    }
    cpu.step("__pmd_alloc", |m| {
        if !m.pmd_alloc(a)? {
            return Ok(None);
        }
        Ok(m.walk_started(a))
    })
}

/// `hugetlb_fault` on a shared hugetlb VMA (v6.12): under the fault mutex
/// of the file index and the hugetlb VMA lock for read (which holds PMD
/// unsharing off), `huge_pte_alloc`, load the entry, and if nothing is
/// mapped, `hugetlb_no_page`. The caller holds `mmap_lock` for read.
///
/// With `pmd-walk-without-vma-lock`, first the v6.1 lockless lookup:
/// `huge_pte_offset` and `huge_ptep_get` before taking any lock ("Since we
/// hold no locks, ptep could be stale"), moved under the VMA lock by
/// fcd48540d188 (v6.2).
pub fn hugetlb_fault(cpu: &Cpu, a: Uaddr, vma: VmaSlot, _write: bool) -> KResult<()> {
    let haddr = a.with_page(a.pmd_base());
    if cpu.cfg().has(Variant::PmdWalkWithoutVmaLock)
        && let Some(t) = hugetlb_walk(cpu, haddr, "huge_pte_offset")?
    {
        cpu.step("huge_ptep_get", |m| m.walk_pmd(haddr, t).map(drop))?;
    }
    // Splits keep file offsets, so the configuration gives the index.
    let idx = (haddr.page - vma.start) / PMD_PAGES;
    let Some(vma) = hugetlb_fault_mutex_lock_then(cpu, "hugetlb_fault", idx, |m| {
        let v = m.mms[a.mm as usize].hugetlb_vma(a.page);
        if v.is_none() {
            m.hstate.fault_mutex[idx as usize] = None;
            ktrace!(m, "{a}: no VMA: SIGSEGV");
            super::oracle::segv_only_outside_vmas(m, a)?;
        }
        Ok(v)
    })?
    else {
        return Ok(());
    };
    hugetlb_vma_lock_read(cpu, a.mm, vma.id)?;
    if let Some(table) = huge_pte_alloc(cpu, haddr, vma)? {
        let orig = cpu.step("huge_ptep_get", |m| m.walk_pmd(haddr, table))?;
        if orig == PmdVal::None {
            hugetlb_no_page(cpu, haddr, idx, table)?;
        }
    }
    // hugetlb_vma_unlock_read, then the fault mutex.
    cpu.step("hugetlb_fault", |m| {
        if let Some(l) = vma_lock_mut(m, a.mm, vma.id) {
            l.readers -= 1;
        }
        m.hstate.fault_mutex[idx as usize] = None;
        Ok(())
    })
}

/// `hugetlb_no_page` (v6.12) on a shared mapping: find the folio in the
/// hugetlbfs page cache (`filemap_lock_hugetlb_folio`: one reference), or,
/// within `i_size`, allocate one (one reference) and add it
/// (`hugetlb_add_to_page_cache` → `__filemap_add_folio`: the cache takes
/// `folio_nr_pages` references); then, under the page-table lock, map it
/// with a writable PMD entry (`set_huge_pte_at`, `hugetlb_add_file_rmap`:
/// one entire mapcount), which keeps the lookup's or the allocation's
/// reference. The fault mutex keeps a racing fault or truncation of the
/// same index out, so the cache slot cannot change meanwhile (the folio
/// lock the kernel also takes adds nothing here).
fn hugetlb_no_page(cpu: &Cpu, a: Uaddr, idx: u32, table: Pfn) -> KResult<()> {
    let cached = cpu.step("filemap_lock_hugetlb_folio", |m| {
        let Some(f) = m.hugetlbfs.slot(idx) else {
            if idx >= m.hugetlbfs_inode.i_size {
                ktrace!(m, "{a}: index {idx} is past i_size: SIGBUS");
                return Ok(Err(()));
            }
            return Ok(Ok(None));
        };
        folio_get(m, f)?;
        Ok(Ok(Some(f)))
    })?;
    let folio = match cached {
        Err(()) => return Ok(()),
        Ok(Some(f)) => f,
        Ok(None) => {
            let Some(f) = alloc_hugetlb_folio_ref(cpu, 0)? else {
                return Ok(());
            };
            cpu.step("hugetlb_add_to_page_cache", |m| {
                let nr = m.cfg.pages_per_huge_page() as i32;
                folio_ref_add(m, f, nr)?;
                m.page_mut(f)?.mapping = Mapping::Hugetlbfs { index: idx };
                m.hugetlbfs.set_slot(idx, Some(f));
                ktrace!(m, "hugetlbfs index {idx} = pfn {f}");
                Ok(())
            })?;
            f
        }
    };
    let mapped = cpu.step_when(
        "hugetlb_no_page",
        |m| m.ptl_free(table),
        |m| {
            if m.walk_pmd(a, table)? != PmdVal::None {
                ktrace!(m, "{a}: PMD populated meanwhile");
                return Ok(false);
            }
            m.set_pmd_in(
                table,
                a,
                PmdVal::Leaf(PmdLeaf {
                    pfn: folio,
                    write: true,
                }),
            );
            m.page_mut(folio + 1)?.entire_mapcount += 1;
            ktrace!(
                m,
                "{a}: PMD in frame {table} maps hugetlb folio pfn {folio}"
            );
            Ok(true)
        },
    )?;
    if !mapped {
        folio_put(cpu, folio)?;
    }
    Ok(())
}

/// What the first page-table-lock section of an unmap found.
enum Unmap {
    /// The table was shared: our PUD entry is cleared, the share still to
    /// be dropped (`huge_pmd_unshare` returned 1).
    Unsharing,
    /// Not shared: the entry was zapped, and this folio's mapping
    /// reference is to be dropped after the TLB flush.
    Zapped(Option<Pfn>),
}

/// The first half of `huge_pmd_unshare` (v6.13+), under the page-table
/// lock of `table`, with `i_mmap_rwsem` held for write: if the table is
/// shared (`ptdesc_pmd_pts_count`), clear our PUD entry and keep the lock.
fn huge_pmd_unshare_begin(m: &mut Machine, a: Uaddr, table: Pfn) -> Result<bool, Violation> {
    let me = m.cpu_index() as u8;
    m.ledger.walk_done(me);
    if !m.pmd_table_of(a.mm, table, a) {
        return Err(super::oracle::walked_pmd_table_not_of_mm(m, a, table));
    }
    if m.page(table)?.pt_share_count == 0 {
        return Ok(false);
    }
    super::oracle::unshare_holds_off_walkers(m, a)?;
    m.ptl_lock(table);
    m.set_pud(a, PudVal::None);
    m.ledger.unshare_begins(me, a.mm, table);
    ktrace!(
        m,
        "{a}: huge_pmd_unshare: PUD cleared (PMD table in frame {table}, pt_share_count {})",
        m.peek(table).pt_share_count
    );
    Ok(true)
}

/// The rest of `huge_pmd_unshare`: wait out GUP-fast walkers that may
/// still be on the table (`tlb_remove_table_sync_one`, 1013af4f585f), since
/// once our caller drops `i_mmap_rwsem` the table may become another
/// process's ordinary page table; then drop the share and the lock.
fn huge_pmd_unshare_finish(cpu: &Cpu, a: Uaddr, table: Pfn) -> KResult<()> {
    if !cpu.cfg().has(Variant::PmdUnshareNoGupFastSync) {
        tlb_remove_table_sync_one(cpu)?;
    }
    cpu.step("huge_pmd_unshare", |m| {
        ptdesc_pmd_pts_add(m, table, -1)?;
        m.ledger.unshare_done(a.mm, table);
        m.ptl_unlock(table);
        ktrace!(
            m,
            "{a}: share of frame {table} dropped (pt_share_count {})",
            m.peek(table).pt_share_count
        );
        Ok(())
    })
}

/// `huge_pmd_unshare(mm, vma, addr, ptep)` under the page-table lock: 1 if
/// the table was shared and `a`'s process no longer uses it.
pub fn huge_pmd_unshare(cpu: &Cpu, a: Uaddr, table: Pfn) -> KResult<bool> {
    let unsharing = cpu.step_when(
        "huge_pmd_unshare",
        |m| m.ptl_free(table),
        |m| huge_pmd_unshare_begin(m, a, table),
    )?;
    if unsharing {
        huge_pmd_unshare_finish(cpu, a, table)?;
    }
    Ok(unsharing)
}

/// `__unmap_hugepage_range` of `vma`'s huge pages in `pages` (only those
/// mapping `folio`, if given), in process `mm`. The caller holds the VMA
/// lock and `i_mmap_rwsem` for write. A shared PMD table is unshared
/// instead of zapped, and since the PUD entry of the whole range is gone,
/// the TLB must be flushed for the whole PUD range before `i_mmap_rwsem`
/// is dropped, or the table can be freed and reused while stale entries
/// still translate through it (a4a118f2eead, CVE-2021-4002). Returns the
/// folios whose mapping references `tlb_finish_mmu` drops.
pub fn __unmap_hugepage_range(
    cpu: &Cpu,
    mm: u8,
    pages: std::ops::Range<u32>,
    folio: Option<Pfn>,
) -> KResult<Vec<Pfn>> {
    let mut unshared: Vec<std::ops::Range<u32>> = Vec::new();
    let mut to_put = Vec::new();
    let mut page = pages.start;
    while page < pages.end {
        let a = Uaddr { mm, page };
        let Some(table) = hugetlb_walk(cpu, a, "hugetlb_walk")? else {
            page = pud_range(page).end;
            continue;
        };
        let found = cpu.step_when(
            "__unmap_hugepage_range",
            |m| m.ptl_free(table),
            |m| {
                if huge_pmd_unshare_begin(m, a, table)? {
                    return Ok(Unmap::Unsharing);
                }
                let PmdVal::Leaf(l) = m.walk_pmd(a, table)? else {
                    return Ok(Unmap::Zapped(None));
                };
                if folio.is_some_and(|f| f != l.pfn) {
                    return Ok(Unmap::Zapped(None));
                }
                m.set_pmd_in(table, a, PmdVal::None);
                m.page_mut(l.pfn + 1)?.entire_mapcount -= 1;
                // tlb_remove_huge_tlb_entry; the flush, done here, comes
                // before the folio is freed.
                m.flush_tlb_range(mm, page..page + PMD_PAGES);
                ktrace!(m, "{a}: PMD mapping of hugetlb folio pfn {} cleared", l.pfn);
                Ok(Unmap::Zapped(Some(l.pfn)))
            },
        )?;
        match found {
            Unmap::Unsharing => {
                huge_pmd_unshare_finish(cpu, a, table)?;
                if !cpu.cfg().has(Variant::PmdUnshareNoFlush) {
                    // tlb_flush_pmd_range(tlb, address & PUD_MASK, PUD_SIZE)
                    unshared.push(pud_range(page));
                }
                page = pud_range(page).end;
                continue;
            }
            Unmap::Zapped(f) => to_put.extend(f),
        }
        page += PMD_PAGES;
    }
    if !unshared.is_empty() {
        // force_flush: tlb_flush_mmu_tlbonly before the caller drops
        // i_mmap_rwsem.
        cpu.step("tlb_flush_mmu_tlbonly", |m| {
            for r in unshared {
                m.flush_tlb_range(mm, r.clone());
                ktrace!(m, "flush TLB of mm{mm} pages {}..{}", r.start, r.end);
            }
            Ok(())
        })?;
    }
    Ok(to_put)
}

/// `tlb_finish_mmu`: the TLB is flushed; drop the unmapped folios' mapping
/// references.
pub fn tlb_finish_mmu(cpu: &Cpu, folios: Vec<Pfn>) -> KResult<()> {
    for f in folios {
        folio_put(cpu, f)?;
    }
    Ok(())
}

/// `hugetlb_unshare_pmds(vma, start, end, take_locks)` (081056dc00a2):
/// unshare every shared PMD table of the PUD ranges in `pages`, then flush
/// the TLB of the range before `i_mmap_rwsem` is dropped. With `take_locks`
/// it takes the VMA lock and `i_mmap_rwsem` for write itself; a split calls
/// it with both the mmap and the rmap locks already held for write.
pub fn hugetlb_unshare_pmds(
    cpu: &Cpu,
    mm: u8,
    vma: VmArea,
    pages: std::ops::Range<u32>,
    take_locks: bool,
) -> KResult<()> {
    if take_locks {
        hugetlb_vma_lock_write(cpu, mm, vma.id)?;
        super::hugetlbfs::i_mmap_lock_write(cpu)?;
    }
    let mut page = pages.start;
    while page < pages.end {
        let a = Uaddr { mm, page };
        if let Some(table) = hugetlb_walk(cpu, a, "hugetlb_walk")? {
            huge_pmd_unshare(cpu, a, table)?;
        }
        page += PUD_PAGES;
    }
    cpu.step("flush_hugetlb_tlb_range", |m| {
        m.flush_tlb_range(mm, pages.clone());
        Ok(())
    })?;
    if take_locks {
        super::hugetlbfs::i_mmap_unlock_write(cpu)?;
        hugetlb_vma_unlock_write(cpu, mm, vma.id)?;
    }
    Ok(())
}

/// `hugetlb_split(vma, addr)` (081056dc00a2): PMD sharing needs whole PUD
/// ranges, so a split at an address that is not PUD-aligned first unshares
/// the PUD range around it (b30c14cd6102), under the locks the split holds.
pub fn hugetlb_split(cpu: &Cpu, mm: u8, vma: VmArea, addr: u32) -> KResult<()> {
    if addr.is_multiple_of(PUD_PAGES) {
        return Ok(());
    }
    let range = pud_range(addr);
    if vma.covers(range.clone()) {
        hugetlb_unshare_pmds(cpu, mm, vma, range, false)?;
    }
    Ok(())
}

/// The task drops its last hugetlb folio (`folio_put`).
pub fn put_hugetlb_folio(cpu: &Cpu) -> KResult<()> {
    let held = cpu.step("folio_put", |m| {
        let c = m.cpu_index();
        let pos = m.cpus[c]
            .holds
            .iter()
            .rposition(|h| matches!(h, Hold::HugetlbFolio(_)));
        Ok(pos.map(|p| m.cpus[c].holds.remove(p)))
    })?;
    match held {
        Some(Hold::HugetlbFolio(folio)) => folio_put(cpu, folio),
        _ => Ok(()),
    }
}

/// `free_huge_folio`: the last reference is gone. Back to the pool, or, for
/// a surplus folio, out of hugetlb altogether.
pub fn free_huge_folio(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    let dissolve = with_hugetlb_lock(cpu, "free_huge_folio", |m| {
        m.hstate.active_folios.retain(|&f| f != folio);
        if m.hstate.surplus_huge_pages > 0 {
            m.hstate.surplus_huge_pages -= 1;
            m.hstate.nr_huge_pages -= 1;
            ktrace!(m, "surplus pfn {folio} leaves the pool");
            return Ok(true);
        }
        enqueue_hugetlb_folio(m, folio)?;
        ktrace!(m, "pfn {folio} back on the free list");
        Ok(false)
    })?;
    if dissolve {
        update_and_free_hugetlb_folio(cpu, folio, true)?;
    }
    Ok(())
}

/// `set_max_huge_pages(h, persistent - 1)`: while `count <
/// persistent_huge_pages(h)` (nr - surplus), `remove_pool_hugetlb_folio(h,
/// .., acct_surplus = false)` takes a free folio out of the pool, then it is
/// freed to the buddy. With no persistent folio (every pool folio a surplus
/// one) there is nothing to shrink (v6.12 mm/hugetlb.c).
pub fn shrink_huge_pool(cpu: &Cpu) -> KResult<()> {
    let folio = with_hugetlb_lock(cpu, "remove_pool_hugetlb_folio", |m| {
        let h = &mut m.hstate;
        if h.nr_huge_pages <= h.surplus_huge_pages {
            return Ok(None);
        }
        let f = h.free_folios.pop();
        if f.is_some() {
            h.nr_huge_pages -= 1;
        }
        Ok(f)
    })?;
    match folio {
        Some(f) => update_and_free_hugetlb_folio(cpu, f, false),
        None => Ok(()),
    }
}

/// `update_and_free_hugetlb_folio` (v6.12): an atomic caller cannot restore
/// an HVO'd folio's vmemmap (it sleeps and allocates), so the folio is
/// queued (`llist_add`, `schedule_work(&free_hpage_work)`); anything else is
/// freed in the caller's context.
pub fn update_and_free_hugetlb_folio(cpu: &Cpu, folio: Pfn, atomic: bool) -> KResult<()> {
    if !atomic {
        return __update_and_free_hugetlb_folio(cpu, folio);
    }
    let queued = cpu.step("update_and_free_hugetlb_folio", |m| {
        if !m.page(folio)?.test(pg::VMEMMAP_OPTIMIZED) {
            return Ok(false);
        }
        m.hstate.hpage_freelist.push(folio);
        ktrace!(m, "pfn {folio} queued for free_hpage_workfn");
        Ok(true)
    })?;
    if queued {
        return Ok(());
    }
    __update_and_free_hugetlb_folio(cpu, folio)
}

/// `free_hpage_workfn` (v6.12): the kworker takes the whole queue
/// (`llist_del_all`) and frees each folio in process context, rescheduling
/// between folios. `llist_del_all` hands the newest first.
pub fn free_hpage_workfn(cpu: &Cpu) -> KResult<()> {
    let list = cpu.step("llist_del_all", |m| {
        Ok(std::mem::take(&mut m.hstate.hpage_freelist))
    })?;
    for folio in list.into_iter().rev() {
        __update_and_free_hugetlb_folio(cpu, folio)?;
        cpu.step("cond_resched", |m| {
            m.ledger.hpage_work_freed |= m.this_cpu != super::ctx::CpuId::SETUP;
            Ok(())
        })?;
    }
    Ok(())
}

/// `flush_work(&free_hpage_work)`: run the queued work to completion (the
/// end of an execution, before the quiescence oracles).
pub fn flush_free_hpage_work(cpu: &Cpu) -> KResult<()> {
    while cpu.step("flush_work", |m| Ok(!m.hstate.hpage_freelist.is_empty()))? {
        free_hpage_workfn(cpu)?;
    }
    Ok(())
}

/// `dissolve_free_hugetlb_folio` (v6.12): a free pool folio leaves hugetlb
/// (memory offline, `alloc_contig_range`). The unlocked test only picks a
/// candidate; under `hugetlb_lock` the folio must still be free. A free
/// folio may be a surplus one (one whose vmemmap restore failed), so the
/// surplus count goes down with it while the node has surplus folios, as
/// in the later fix "mm/hugetlb: fix surplus pages in
/// dissolve_free_huge_page()" (2025, after v6.12; v6.12 leaves
/// `surplus_huge_pages` above `nr_huge_pages`, which the counters oracle
/// finds).
pub fn dissolve_free_hugetlb_folio(cpu: &Cpu, pfn: Pfn) -> KResult<()> {
    let candidate = cpu.step("folio_test_hugetlb", |m| {
        let p = m.page(pfn)?;
        Ok(p.test(pg::HUGETLB) && p.refcount == 0)
    })?;
    if candidate {
        dissolve_locked(cpu, pfn, true)?;
    }
    Ok(())
}

/// The `hugetlb_lock` part of `dissolve_free_hugetlb_folio`; `recheck` is
/// false only for tests showing why the free-list recheck is there.
fn dissolve_locked(cpu: &Cpu, folio: Pfn, recheck: bool) -> KResult<()> {
    let removed = with_hugetlb_lock(cpu, "remove_hugetlb_folio", |m| {
        // folio_ref_count == 0 && folio_test_hugetlb_freed: on the free list,
        // not queued for free_hpage_workfn nor handed out since.
        if recheck && !m.hstate.free_folios.contains(&folio) {
            return Ok(None);
        }
        m.hstate.free_folios.retain(|&f| f != folio);
        m.hstate.nr_huge_pages -= 1;
        let adjust_surplus = m.hstate.surplus_huge_pages > 0;
        if adjust_surplus {
            m.hstate.surplus_huge_pages -= 1;
        }
        ktrace!(m, "pfn {folio} dissolved from the pool");
        m.ledger.dissolved = true;
        Ok(Some(adjust_surplus))
    })?;
    let Some(adjust_surplus) = removed else {
        return Ok(());
    };
    if !hugetlb_vmemmap_restore_folio(cpu, folio)? {
        return with_hugetlb_lock(cpu, "add_hugetlb_folio", |m| {
            enqueue_hugetlb_folio(m, folio)?;
            m.hstate.nr_huge_pages += 1;
            if adjust_surplus {
                m.hstate.surplus_huge_pages += 1;
            }
            ktrace!(m, "vmemmap restore failed: pfn {folio} back in the pool");
            Ok(())
        });
    }
    update_and_free_hugetlb_folio(cpu, folio, false)
}

/// `__update_and_free_hugetlb_folio`: restore the vmemmap, then free the
/// folio to the buddy. If the vmemmap cannot be restored (-ENOMEM) the folio
/// must not be freed: it goes back to the pool as a surplus folio.
fn __update_and_free_hugetlb_folio(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    if !hugetlb_vmemmap_restore_folio(cpu, folio)? {
        if !cpu.cfg().has(Variant::HvoRestoreFailFrees) {
            return with_hugetlb_lock(cpu, "add_hugetlb_folio", |m| {
                enqueue_hugetlb_folio(m, folio)?;
                m.hstate.nr_huge_pages += 1;
                m.hstate.surplus_huge_pages += 1;
                ktrace!(
                    m,
                    "vmemmap restore failed: pfn {folio} stays as a surplus folio"
                );
                Ok(())
            });
        }
        cpu.step("__update_and_free_hugetlb_folio", |m| {
            ktrace!(m, "vmemmap restore failed, freeing pfn {folio} anyway");
            Ok(())
        })?;
    }
    with_hugetlb_lock(cpu, "__folio_clear_hugetlb", |m| {
        m.page_mut(folio)?.flags &= !pg::HUGETLB;
        Ok(())
    })?;
    cpu.step("__update_and_free_hugetlb_folio", |m| {
        folio_ref_unfreeze(m, folio, 1)
    })?;
    folio_put(cpu, folio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{VmaKind, VmaSpec, Vmas};
    use crate::model::hugetlbfs::{hugetlb_vmtruncate, hugetlbfs_punch_hole};
    use crate::model::machine::Owner;
    use crate::model::madvise::{madvise_dontfork, madvise_dontneed};
    use crate::model::memory::{handle_mm_fault, user_access};
    use crate::model::mmap::exit_mmap;
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;
    use crate::model::vma::munmap;

    // The PMD-sharing layout, the same in every process:
    //
    //   page     0     1     2     3
    //          |   hugetlb VMA (VM_MAYSHARE)   |
    //          '- huge page 0 -'- huge page 1 -'   one PMD table (PUD 0)

    fn fault(k: &mut Kernel, mm: u8, page: u8) {
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(mm, page), 0, 0))
            .unwrap();
    }

    /// mm0 faults in huge page 0 and mm1 huge page 1: mm1 shares mm0's
    /// PMD table. Returns it.
    fn shared(k: &mut Kernel) -> Pfn {
        fault(k, 0, 0);
        fault(k, 1, 2);
        let PudVal::Table(t) = k.m.pud(Uaddr::new(0, 0)) else {
            panic!("mm0 has a PMD table");
        };
        t
    }

    fn share_count(k: &Kernel, t: Pfn) -> i32 {
        k.m.peek(t).pt_share_count
    }

    #[test]
    fn a_second_process_faulting_the_range_shares_the_first_ones_pmd_table() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);

        assert_eq!(k.m.pud(Uaddr::new(1, 0)), PudVal::Table(t));
        assert_eq!(share_count(&k, t), 1, "one sharer beyond the first");
        assert_eq!(k.m.ledger.pmd_shares, 1);
        // Both huge pages are mapped once, by the one table, for both.
        for (i, pmd) in k.m.pmds(t).iter().enumerate() {
            let PmdVal::Leaf(l) = *pmd else {
                panic!("huge page {i} is mapped");
            };
            let nr = k.m.cfg.pages_per_huge_page() as i32;
            assert_eq!(k.m.peek(l.pfn).refcount, nr + 1, "page cache + one mapping");
            assert_eq!(k.m.peek(l.pfn + 1).entire_mapcount, 0, "one PMD mapping");
        }
        k.quiesce().unwrap();
    }

    #[test]
    fn a_vma_that_no_longer_covers_the_pud_range_gets_its_own_table() {
        let mut k = Kernel::builder().pmd_share().boot();
        fault(&mut k, 0, 0);
        k.on(0, |cpu| madvise_dontfork(cpu, Uaddr::new(1, 0)))
            .unwrap();

        fault(&mut k, 1, 2);

        assert_eq!(k.m.mms[1].hugetlb_vmas.len(), 2, "split at page 2");
        assert_ne!(k.m.pud(Uaddr::new(1, 0)), k.m.pud(Uaddr::new(0, 0)));
        assert_eq!(k.m.ledger.pmd_shares, 0);
        k.quiesce().unwrap();
    }

    #[test]
    fn madvise_dontneed_of_a_shared_range_unshares_it_and_flushes_the_tlb() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);
        let a = Uaddr::new(0, 0);
        k.on(1, |cpu| user_access(cpu, a, false)).unwrap();
        assert!(!k.m.cpus[1].user_tlb.is_empty());

        k.on(0, |cpu| madvise_dontneed(cpu, a)).unwrap();

        assert_eq!(k.m.pud(a), PudVal::None, "unshared, not zapped");
        assert_eq!(k.m.pud(Uaddr::new(1, 0)), PudVal::Table(t));
        assert_eq!(share_count(&k, t), 0);
        assert!(
            matches!(k.m.pmd_in(t, a), PmdVal::Leaf(_)),
            "mm1 still maps it"
        );
        assert!(k.m.cpus[1].user_tlb.is_empty(), "flushed for the PUD range");
        k.quiesce().unwrap();
    }

    #[test]
    fn without_the_flush_a_stale_tlb_entry_outlives_the_freed_table() {
        let mut k = Kernel::builder()
            .pmd_share()
            .variant(Variant::PmdUnshareNoFlush)
            .boot();
        let t = shared(&mut k);
        let a = Uaddr::new(0, 0);
        k.on(1, |cpu| user_access(cpu, a, false)).unwrap();
        k.on(0, |cpu| madvise_dontneed(cpu, a)).unwrap();
        assert!(!k.m.cpus[1].user_tlb.is_empty(), "not flushed");

        // mm1, the table's last user, exits: freeing the table with CPU 1's
        // entry still translating through it.
        let err = k.on(0, |cpu| exit_mmap(cpu, 1)).unwrap_err();

        assert_eq!(err.oracle, Oracle::TlbFlushBeforeFree);
        assert!(
            err.detail
                .contains(&format!("through the page table in frame {t}")),
            "{}",
            err.detail
        );
    }

    #[test]
    fn an_access_through_a_table_freed_and_reused_since_is_a_use_after_free() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);
        let a = Uaddr::new(0, 0);
        k.on(1, |cpu| user_access(cpu, a, false)).unwrap();
        // The table frame is reused, as a free that skipped both the flush
        // and its check would let it be.
        k.m.frames[t as usize].generation += 1;

        let err = k.on(1, |cpu| user_access(cpu, a, false)).unwrap_err();

        assert_eq!(err.oracle, Oracle::UserUseAfterFree);
        assert!(err.detail.contains("a page table again"), "{}", err.detail);
    }

    /// CPU `cpu` is GUP-fast on `a` after its PUD load: interrupts off.
    fn gup_fast_after_pud_load(k: &mut Kernel, cpu: u8, a: Uaddr) -> Pfn {
        k.step(cpu, |m| {
            m.local_irq_save();
            Ok(m.walk_started(a).expect("a PMD table"))
        })
        .unwrap()
    }

    #[test]
    fn an_unshare_waits_for_gup_fast_with_interrupts_off() {
        let mut k = Kernel::builder().pmd_share().boot();
        shared(&mut k);
        let a = Uaddr::new(1, 2);
        gup_fast_after_pud_load(&mut k, 1, a);

        // Nothing else runs, so the IPI is never taken.
        let err = k.on(0, |cpu| madvise_dontneed(cpu, a)).unwrap_err();

        assert_eq!(err.oracle, Oracle::Deadlock);
        assert!(
            err.detail.contains("smp_call_function_many_cond"),
            "{}",
            err.detail
        );
        assert_eq!(k.m.ledger.walks_across_unshare, 1);
    }

    #[test]
    fn without_the_ipi_gup_fast_walks_a_table_that_is_another_processs_only() {
        let mut k = Kernel::builder()
            .pmd_share()
            .variant(Variant::PmdUnshareNoGupFastSync)
            .boot();
        shared(&mut k);
        let a = Uaddr::new(1, 2);
        let t = gup_fast_after_pud_load(&mut k, 1, a);
        k.on(0, |cpu| madvise_dontneed(cpu, a)).unwrap();

        let err = k.step(1, |m| m.walk_pmd(a, t)).unwrap_err();

        assert_eq!(err.oracle, Oracle::PmdTableNotOfMm);
        assert!(err.detail.contains("of mm0 only"), "{}", err.detail);
    }

    #[test]
    fn the_last_user_frees_the_shared_table_after_a_grace_period() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);
        k.on(0, |cpu| exit_mmap(cpu, 0)).unwrap();
        assert_eq!(share_count(&k, t), 0);
        assert_eq!(k.m.mms[0].pud[0], PudVal::None);
        // A GUP-fast of mm1 is between its loads while another thread of
        // mm1 unmaps everything.
        let a = Uaddr::new(1, 0);
        gup_fast_after_pud_load(&mut k, 1, a);
        k.on(0, |cpu| munmap(cpu, a)).unwrap();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(1, 2))).unwrap();

        // tlb_remove_table: still a page table until GUP-fast is done.
        assert_eq!(k.m.frames[t as usize].owner, Owner::PageTable);
        assert_eq!(k.step(1, |m| m.walk_pmd(a, t)).unwrap(), PmdVal::None);
        k.step(1, |m| {
            m.local_irq_restore();
            Ok(())
        })
        .unwrap();

        assert_eq!(k.m.frames[t as usize].owner, Owner::Free);
        assert_eq!(k.m.ledger.shared_tables_freed, 1);
        // The folios stay in the page cache.
        assert!(k.m.hugetlbfs.slot(0).is_some() && k.m.hugetlbfs.slot(1).is_some());
        k.quiesce().unwrap();
    }

    #[test]
    fn munmap_of_the_whole_vma_frees_its_pmd_table() {
        let mut k = Kernel::builder().pmd_share().boot();
        fault(&mut k, 0, 0);
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 0))).unwrap();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 2))).unwrap();

        assert_eq!(k.m.mms[0].pud[0], PudVal::None);
        k.quiesce().unwrap();
    }

    #[test]
    fn a_pmd_table_left_behind_by_its_vmas_is_a_leak() {
        let mut k = Kernel::builder().pmd_share().boot();
        fault(&mut k, 0, 0);
        // free_pgtables forgot the PUD range: the VMA is gone, its table not.
        k.m.mms[0].hugetlb_vmas.clear();

        let err = k.quiesce().unwrap_err();

        assert_eq!(err.oracle, Oracle::PageTableLeak, "{}", err.detail);
    }

    #[test]
    fn a_fault_after_munmap_finds_no_vma_and_sigsegvs() {
        let mut k = Kernel::builder().pmd_share().boot();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 0))).unwrap();

        fault(&mut k, 0, 0);

        assert!(!k.m.vm_page(Uaddr::new(0, 0)).mapped);
        assert_eq!(k.m.pud(Uaddr::new(0, 0)), PudVal::None, "nothing mapped");
        k.quiesce().unwrap();
    }

    #[test]
    fn a_fault_that_finds_no_vma_inside_one_is_a_violation() {
        let mut k = Kernel::builder().pmd_share().boot();
        // The VMA lookup misses a VMA the process still has.
        k.m.mms[0].hugetlb_vmas.clear();

        let err = k
            .on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 0), 0, 0))
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::SegvInVma, "{}", err.detail);
    }

    #[test]
    fn truncation_unmaps_every_process_and_frees_the_folios() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);

        k.on(0, |cpu| hugetlb_vmtruncate(cpu, 0)).unwrap();

        assert_eq!(k.m.pud(Uaddr::new(0, 0)), PudVal::None, "mm0 unshared");
        assert_eq!(k.m.pmds(t), &[PmdVal::None; 2], "mm1's mappings zapped");
        assert_eq!(k.m.hugetlbfs.slots.iter().flatten().count(), 0);
        assert_eq!(k.m.hstate.free_folios.len(), 2, "back in the pool");
        // Past i_size a fault maps nothing.
        fault(&mut k, 1, 0);
        assert_eq!(k.m.pmds(t), &[PmdVal::None; 2]);
        k.quiesce().unwrap();
    }

    #[test]
    fn hole_punch_waits_for_the_vma_lock_of_a_fault_in_progress() {
        let mut k = Kernel::builder().pmd_share().boot();
        shared(&mut k);
        let id = k.m.mms[0].hugetlb_vmas[0].id;
        // CPU 1 faults in mm0: it holds mm0's VMA lock for read.
        k.on(1, |cpu| hugetlb_vma_lock_read(cpu, 0, id)).unwrap();

        // hugetlb_vmdelete_list skips mm0's VMA (trylock); the folio is
        // still mapped, so hugetlb_unmap_file_folio waits for the lock.
        let err = k.on(0, |cpu| hugetlbfs_punch_hole(cpu, 0)).unwrap_err();

        assert_eq!(err.oracle, Oracle::Deadlock);
        assert!(
            err.detail.contains("hugetlb_vma_lock_write"),
            "{}",
            err.detail
        );
        assert!(
            matches!(k.m.pud(Uaddr::new(0, 0)), PudVal::Table(_)),
            "mm0 was not unshared under its lock holder"
        );
    }

    #[test]
    fn a_split_that_is_not_pud_aligned_unshares_the_pud_range() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);

        k.on(0, |cpu| madvise_dontfork(cpu, Uaddr::new(0, 0)))
            .unwrap();

        let vmas: Vec<(u32, u32)> = k.m.mms[0]
            .hugetlb_vmas
            .iter()
            .map(|v| (v.start, v.end))
            .collect();
        assert_eq!(vmas, [(0, 2), (2, 4)]);
        assert_ne!(k.m.mms[0].hugetlb_vmas[0].id, k.m.mms[0].hugetlb_vmas[1].id);
        assert_eq!(k.m.pud(Uaddr::new(0, 0)), PudVal::None);
        assert_eq!(share_count(&k, t), 0);
        k.quiesce().unwrap();
    }

    /// Without `hugetlb_split` the halves keep sharing under separate VMA
    /// locks: MADV_DONTNEED of the second half unshares the table holding
    /// only that half's lock, under a walker of the first half (which
    /// would then walk a table that is no longer mm0's).
    #[test]
    fn without_hugetlb_split_the_halves_keep_sharing_under_separate_locks() {
        let mut k = Kernel::builder()
            .pmd_share()
            .variant(Variant::PmdShareSplitVma)
            .boot();
        let t = shared(&mut k);
        k.on(0, |cpu| madvise_dontfork(cpu, Uaddr::new(0, 0)))
            .unwrap();
        assert_eq!(k.m.pud(Uaddr::new(0, 0)), PudVal::Table(t));
        // A walker of the first half holds its VMA lock.
        let first = k.m.mms[0].hugetlb_vmas[0].id;
        k.on(1, |cpu| hugetlb_vma_lock_read(cpu, 0, first)).unwrap();
        let a = Uaddr::new(0, 0);
        assert_eq!(
            k.on(1, |cpu| hugetlb_walk(cpu, a, "hugetlb_walk")).unwrap(),
            Some(t)
        );

        let err = k
            .on(0, |cpu| madvise_dontneed(cpu, Uaddr::new(0, 2)))
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::PmdUnshareExcludesWalkers);
        assert!(err.detail.contains("VMA 0..2"), "{}", err.detail);
    }

    #[test]
    fn munmap_unshares_and_the_last_munmap_frees_the_table() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);

        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 0))).unwrap();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 2))).unwrap();
        assert!(k.m.mms[0].hugetlb_vmas.is_empty());
        assert_eq!(k.m.frames[t as usize].owner, Owner::PageTable, "mm1's");
        k.on(0, |cpu| munmap(cpu, Uaddr::new(1, 0))).unwrap();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(1, 2))).unwrap();

        assert_eq!(k.m.frames[t as usize].owner, Owner::Free);
        assert_eq!(k.m.mms[1].pud[0], PudVal::None);
        k.quiesce().unwrap();
    }

    /// The hugetlb VMA over two PUD ranges, pages 0-7, with a folio per
    /// huge page in the pool:
    ///
    /// ```text
    ///  mm0, mm1: | PUD 0: file pages 0-3 | PUD 1: file pages 4-7 |
    /// ```
    fn two_pud_ranges() -> Kernel {
        Kernel::builder()
            .config(|c| {
                c.vmas = Vmas::new(&[VmaSpec {
                    kind: VmaKind::HugetlbShared,
                    pages: 8,
                }])
                .unwrap();
                c.memory_blocks = 5;
                c.hugepages = 4;
            })
            .pmd_share()
            .boot()
    }

    #[test]
    fn a_pmd_table_shared_at_another_file_offset_fails_the_step() {
        let mut k = two_pud_ranges();
        fault(&mut k, 0, 0);
        let PudVal::Table(t) = k.m.pud(Uaddr::new(0, 0)) else {
            panic!("mm0 has a PMD table");
        };

        // mm1's PUD 1 (file pages 4-7) takes mm0's table of file pages 0-3,
        // its share counted.
        let err = k
            .step(1, |m| {
                m.set_pud(Uaddr::new(1, 4), PudVal::Table(t));
                ptdesc_pmd_pts_add(m, t, 1)
            })
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::PmdShareSameOffset);
        assert!(err.detail.contains("file page 4"), "{}", err.detail);
    }

    #[test]
    fn pmd_tables_shared_over_two_pud_ranges_map_one_offset_each() {
        let mut k = two_pud_ranges();
        fault(&mut k, 0, 4);
        fault(&mut k, 1, 6);
        fault(&mut k, 1, 0);
        fault(&mut k, 0, 2);

        let (a, b) = (Uaddr::new(0, 4), Uaddr::new(1, 4));
        assert_eq!(k.m.pud(a), k.m.pud(b), "PUD 1 shared");
        assert_eq!(k.m.pud(Uaddr::new(0, 0)), k.m.pud(Uaddr::new(1, 0)));
        assert_ne!(k.m.pud(a), k.m.pud(Uaddr::new(0, 0)));
        k.quiesce().unwrap();
    }

    #[test]
    fn a_share_count_that_does_not_match_the_puds_fails_the_step() {
        let mut k = Kernel::builder().pmd_share().boot();
        let t = shared(&mut k);

        let err = k.step(0, |m| ptdesc_pmd_pts_add(m, t, 1)).unwrap_err();

        assert_eq!(err.oracle, Oracle::PmdShareCount);
        assert!(err.detail.contains("pt_share_count 2"), "{}", err.detail);
    }

    #[test]
    fn a_walker_reading_a_table_freed_under_it_is_caught() {
        let mut k = Kernel::builder().pmd_share().boot();
        fault(&mut k, 0, 0);
        let a = Uaddr::new(0, 0);
        // A lockless walker of mm0 (no VMA lock, no RCU) read the PUD.
        let t = k.step(1, |m| Ok(m.walk_started(a).unwrap())).unwrap();
        k.on(0, |cpu| munmap(cpu, a)).unwrap();
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, 2))).unwrap();

        let err = k.step(1, |m| m.walk_pmd(a, t)).unwrap_err();

        assert_eq!(err.oracle, Oracle::PmdTableNotOfMm);
        assert!(err.detail.contains("free in the buddy"), "{}", err.detail);
    }

    #[test]
    fn a_sleeping_allocation_under_hugetlb_lock_is_caught() {
        let mut k = Kernel::builder().boot();
        let outside = k.on(0, |cpu| {
            cpu.step("alloc_buddy_hugetlb_folio", |m| {
                m.alloc_pages_may_sleep(0, 0, "alloc_buddy_hugetlb_folio")
            })
        });
        assert!(outside.unwrap().is_some());

        let err = k
            .on(0, |cpu| {
                with_hugetlb_lock(cpu, "alloc_surplus_hugetlb_folio", |m| {
                    m.alloc_pages_may_sleep(0, 0, "alloc_buddy_hugetlb_folio")
                })
            })
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::MightSleep);
        assert!(err.detail.ends_with("under hugetlb_lock"), "{}", err.detail);
    }
}

#[cfg(test)]
mod free_path_tests {
    use super::*;
    use crate::model::config::HvoMode;
    use crate::model::oracle::{self, Oracle};
    use crate::model::testing::Kernel;

    /// The folio at 512, HVO'd with two vmemmap pages kept.
    const FOLIO: Pfn = 512;

    fn boot() -> Kernel {
        Kernel::builder().hvo(HvoMode::Keep2).boot()
    }

    /// A surplus folio (empty pool), HVO'd, held by CPU 0.
    fn surplus_folio(k: &mut Kernel) {
        k.on(0, |cpu| alloc_hugetlb_folio(cpu, FOLIO)).unwrap();
        assert_eq!(k.m.hstate.surplus_huge_pages, 1);
        assert!(k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
    }

    /// The step each line matching `prefix` was traced in.
    fn steps_of(lines: &[(u32, String)], prefix: &str) -> Vec<u32> {
        let steps = lines.iter().filter(|(_, l)| l.starts_with(prefix));
        steps.map(|&(s, _)| s).collect()
    }

    #[test]
    fn a_pool_folio_gets_its_tails_in_steps_before_it_is_frozen_and_hvo_runs() {
        let mut k = boot();

        let ((), lines) = k
            .on_traced(0, |cpu| alloc_pool_huge_folio(cpu, FOLIO))
            .unwrap();

        // __folio_alloc (prep_compound_page: a step per vmemmap page of
        // tails, then prep_compound_head), then folio_ref_freeze, then HVO.
        let head = steps_of(&lines, "alloc_pages(order 9)");
        let tails = steps_of(&lines, "prep_compound_tail(pfn 512)");
        let order = steps_of(&lines, "prep_compound_head(pfn 512, order 9)");
        let frozen = steps_of(&lines, "folio_ref_freeze(pfn 512, 1)");
        let mut hvo = steps_of(&lines, "grace period starts");
        hvo.extend(steps_of(&lines, "set_pte_at"));
        assert_eq!(
            hvo.len(),
            7,
            "synchronize_rcu, 6 tail vmemmap PTEs: {lines:#?}"
        );
        assert_eq!(head.len(), 1, "{lines:#?}");
        assert_eq!(tails, (head[0] + 1..head[0] + 9).collect::<Vec<_>>());
        assert_eq!(order, [head[0] + 9]);
        assert!(frozen[0] > order[0], "{lines:#?}");
        assert!(hvo.iter().all(|&s| s > frozen[0]), "{lines:#?}");
        assert_eq!(k.m.hstate.free_folios, [FOLIO]);
    }

    #[test]
    fn the_last_put_of_a_surplus_hvo_folio_queues_it_for_the_worker() {
        let mut k = boot();
        let before = k.free_blocks();
        surplus_folio(&mut k);

        k.on(0, put_hugetlb_folio).unwrap();

        assert_eq!(k.m.hstate.hpage_freelist, [FOLIO]);
        assert!(
            k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED),
            "no vmemmap restore in the putter's context"
        );
        assert_ne!(k.free_blocks(), before, "not freed yet");
        // The quiescence oracles account the queued folio (no flush here).
        oracle::at_quiescence(&mut k.m).unwrap();

        k.on(1, free_hpage_workfn).unwrap();

        assert!(k.m.hstate.hpage_freelist.is_empty());
        assert!(!k.m.peek(FOLIO).test(pg::VMEMMAP_OPTIMIZED));
        assert_eq!(k.free_blocks(), before);
        k.quiesce().unwrap();
    }

    #[test]
    fn quiescence_flushes_the_queued_free() {
        let mut k = boot();
        let before = k.free_blocks();
        surplus_folio(&mut k);
        k.on(0, put_hugetlb_folio).unwrap();

        k.quiesce().unwrap();

        assert!(k.m.hstate.hpage_freelist.is_empty());
        assert_eq!(k.free_blocks(), before);
    }

    #[test]
    fn shrinking_the_pool_frees_in_its_own_context() {
        let mut k = boot();
        let before = k.free_blocks();
        k.pool_huge_folio(FOLIO);

        k.on(0, shrink_huge_pool).unwrap();

        assert!(k.m.hstate.hpage_freelist.is_empty());
        assert_eq!(k.free_blocks(), before);
    }

    #[test]
    fn dissolve_of_a_queued_folio_leaves_it_to_the_worker() {
        let mut k = boot();
        let before = k.free_blocks();
        surplus_folio(&mut k);
        k.on(0, put_hugetlb_folio).unwrap();

        k.on(1, |cpu| dissolve_free_hugetlb_folio(cpu, FOLIO))
            .unwrap();

        assert_eq!(k.m.hstate.hpage_freelist, [FOLIO], "still queued");
        k.on(1, free_hpage_workfn).unwrap();
        assert_eq!(k.free_blocks(), before);
        k.quiesce().unwrap();
    }

    #[test]
    fn dissolve_frees_a_free_pool_folio() {
        let mut k = boot();
        let before = k.free_blocks();
        k.pool_huge_folio(FOLIO);

        k.on(0, |cpu| dissolve_free_hugetlb_folio(cpu, FOLIO))
            .unwrap();

        assert!(k.m.hstate.free_folios.is_empty());
        assert_eq!(k.m.hstate.nr_huge_pages, 0);
        assert_eq!(k.free_blocks(), before);
        k.quiesce().unwrap();
    }

    #[test]
    fn dissolve_rechecks_under_the_lock_that_the_folio_is_still_free() {
        let mut k = boot();
        k.pool_huge_folio(FOLIO);
        // CPU 1's unlocked folio_test_hugetlb saw a free folio; CPU 0 then
        // takes it before CPU 1 gets hugetlb_lock.
        k.on(0, |cpu| alloc_hugetlb_folio(cpu, FOLIO)).unwrap();

        k.on(1, |cpu| dissolve_locked(cpu, FOLIO, true)).unwrap();

        assert_eq!(k.m.hstate.active_folios, [FOLIO]);
        k.on(0, put_hugetlb_folio).unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn a_dissolve_without_the_recheck_frees_a_folio_in_use() {
        let mut k = boot();
        k.pool_huge_folio(FOLIO);
        k.on(0, |cpu| alloc_hugetlb_folio(cpu, FOLIO)).unwrap();

        let v = k
            .on(1, |cpu| dissolve_locked(cpu, FOLIO, false))
            .and_then(|()| k.quiesce())
            .unwrap_err();

        // The pool lost a folio CPU 0 still holds as active.
        assert_eq!(v.oracle, Oracle::HugetlbCounters, "{v:?}");
        assert!(v.detail.contains("1 active"), "{}", v.detail);
    }

    /// A surplus folio whose vmemmap restore failed waits on the free list,
    /// still counted as surplus; dissolving it takes the count with it.
    #[test]
    fn dissolving_a_free_surplus_folio_takes_the_surplus_count_with_it() {
        let mut k = boot();
        surplus_folio(&mut k);
        k.on(0, put_hugetlb_folio).unwrap();
        k.m.fail_next_allocs = 1;
        k.on(1, free_hpage_workfn).unwrap();
        assert_eq!(
            k.m.hstate.free_folios,
            [FOLIO],
            "restore failed: back in the pool"
        );
        assert_eq!(k.m.hstate.surplus_huge_pages, 1);

        k.on(0, |cpu| dissolve_free_hugetlb_folio(cpu, FOLIO))
            .unwrap();

        assert_eq!(k.m.hstate.nr_huge_pages, 0);
        assert_eq!(k.m.hstate.surplus_huge_pages, 0);
        k.quiesce().unwrap();
    }
}
