//! The hugetlb pool (mm/hugetlb.c). Since v6.10 pool folios stay frozen at
//! refcount 0 and are unfrozen to 1 only when handed out.

use super::KResult;
use super::config::{PMD_PAGES, VmaSlot};
use super::ctx::Cpu;
use super::hugetlb_vmemmap::{hugetlb_vmemmap_optimize_folio, hugetlb_vmemmap_restore_folio};
use super::machine::{Hold, Machine, Pfn};
use super::mm_types::Mapping;
use super::mm_types::pg;
use super::oracle::Violation;
use super::page_ref::{folio_get, folio_put, folio_ref_add, folio_ref_freeze, folio_ref_unfreeze};
use super::pgtable::{PmdLeaf, PmdVal, Uaddr};
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
}

crate::clone_by_field!(Hstate {
    free_folios,
    active_folios,
    nr_huge_pages,
    surplus_huge_pages,
    vmemmap_tail
});

/// A `hugetlb_lock` critical section. They are all short and never span a
/// step, so each is one step.
fn with_hugetlb_lock<T>(
    cpu: &Cpu,
    func: &'static str,
    f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step(func, f)
}

/// `enqueue_hugetlb_folio`: onto the free list, frozen at 0.
fn enqueue_hugetlb_folio(m: &mut Machine, folio: Pfn) {
    m.hstate.free_folios.push(folio);
    let cpu = m.cpu_index() as u8;
    m.ledger.freeze(folio, cpu);
}

/// `alloc_buddy_hugetlb_folio`: a compound page from the buddy, frozen with
/// `folio_ref_freeze(folio, 1)`; a speculative reference that inflated the
/// count makes it put the folio and retry once.
fn alloc_buddy_hugetlb_folio(cpu: &Cpu, pfn_hint: Pfn) -> KResult<Option<Pfn>> {
    for _attempt in 0..2 {
        let order = cpu.cfg().hugetlb_order;
        let Some(folio) = cpu.step("alloc_buddy_hugetlb_folio", |m| {
            m.alloc_pages(order, pfn_hint)
        })?
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
        enqueue_hugetlb_folio(m, folio);
        m.hstate.nr_huge_pages += 1;
        ktrace!(
            m,
            "pfn {folio} joins the pool ({} folios)",
            m.hstate.nr_huge_pages
        );
        Ok(())
    })
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

/// `hugetlb_fault` on a shared hugetlb VMA: `huge_pte_alloc`, then, if
/// nothing is mapped, `hugetlb_no_page`: find the folio in the hugetlbfs
/// page cache (`filemap_lock_hugetlb_folio`), or allocate one and add it
/// (`hugetlb_add_to_page_cache`: the cache holds one reference per page),
/// then map it with a PMD leaf (`set_huge_pte_at`, writable as the VMA is
/// shared and writable), which keeps the lookup's reference and takes an
/// entire mapcount (`hugetlb_add_file_rmap`).
pub fn hugetlb_fault(cpu: &Cpu, a: Uaddr, vma: VmaSlot, _write: bool) -> KResult<()> {
    let mapped = cpu.step("hugetlb_fault", |m| {
        if !m.pmd_alloc(a)? {
            return Ok(true);
        }
        Ok(m.pmd(a) != PmdVal::None)
    })?;
    if mapped {
        return Ok(());
    }
    let index = (a.pmd_base() - vma.start) / PMD_PAGES;
    let cached = cpu.step("filemap_lock_hugetlb_folio", |m| {
        let f = m.hugetlbfs.slot(index);
        if let Some(f) = f {
            folio_get(m, f)?;
        }
        Ok(f)
    })?;
    let folio = match cached {
        Some(f) => f,
        None => {
            let Some(f) = alloc_hugetlb_folio_ref(cpu, 0)? else {
                return Ok(());
            };
            let added = cpu.step("hugetlb_add_to_page_cache", |m| {
                if m.hugetlbfs.slot(index).is_some() {
                    ktrace!(m, "hugetlbfs index {index} added meanwhile");
                    return Ok(false);
                }
                let nr = m.cfg.pages_per_huge_page() as i32;
                folio_ref_add(m, f, nr)?;
                m.page_mut(f)?.mapping = Mapping::Hugetlbfs { index };
                m.hugetlbfs.set_slot(index, Some(f));
                ktrace!(m, "hugetlbfs index {index} = pfn {f}");
                Ok(true)
            })?;
            if !added {
                return folio_put(cpu, f);
            }
            f
        }
    };
    let mapped = cpu.step("set_huge_pte_at", |m| {
        if m.pmd(a) != PmdVal::None {
            return Ok(false);
        }
        m.set_pmd(
            a,
            PmdVal::Leaf(PmdLeaf {
                pfn: folio,
                write: true,
            }),
        );
        m.page_mut(folio + 1)?.entire_mapcount += 1;
        ktrace!(m, "{a}: PMD maps hugetlb folio pfn {folio}");
        Ok(true)
    })?;
    if !mapped {
        folio_put(cpu, folio)?;
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
        enqueue_hugetlb_folio(m, folio);
        ktrace!(m, "pfn {folio} back on the free list");
        Ok(false)
    })?;
    if dissolve {
        update_and_free_hugetlb_folio(cpu, folio)?;
    }
    Ok(())
}

/// `set_max_huge_pages(h, nr - 1)`: `remove_pool_hugetlb_folio` takes a free
/// folio out of the pool, then it is freed to the buddy.
pub fn shrink_huge_pool(cpu: &Cpu) -> KResult<()> {
    let folio = with_hugetlb_lock(cpu, "remove_pool_hugetlb_folio", |m| {
        let f = m.hstate.free_folios.pop();
        if f.is_some() {
            m.hstate.nr_huge_pages -= 1;
        }
        Ok(f)
    })?;
    match folio {
        Some(f) => update_and_free_hugetlb_folio(cpu, f),
        None => Ok(()),
    }
}

/// `__update_and_free_hugetlb_folio`: restore the vmemmap, then free the
/// folio to the buddy. If the vmemmap cannot be restored (-ENOMEM) the folio
/// must not be freed: it goes back to the pool as a surplus folio.
pub fn update_and_free_hugetlb_folio(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    if !hugetlb_vmemmap_restore_folio(cpu, folio)? {
        if !cpu.cfg().has(Variant::HvoRestoreFailFrees) {
            return with_hugetlb_lock(cpu, "add_hugetlb_folio", |m| {
                enqueue_hugetlb_folio(m, folio);
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
