//! Reference counting (include/linux/page_ref.h, include/linux/mm.h).

use super::config::{Config, Variant};
use super::machine::{Frozen, Machine, Pfn};
use super::mm_types::pg;
use super::oracle::{self, Violation};
use super::page_flags::{folio_order, page_fixed_fake_head};
use super::{KResult, hugetlb};
use crate::exec::Cpu;
use crate::ktrace;

/// The first half of `atomic_add_unless` (`atomic_fetch_add_unless`):
/// `c = atomic_read(v)`. Returns `None` if `c == u`.
fn add_unless_read(m: &mut Machine, page: Pfn, u: i32) -> Result<Option<i32>, Violation> {
    let c = m.page(page)?.refcount;
    if c == u {
        ktrace!(m, "atomic_add_unless(pfn {page}): refcount is {u}, refused");
        return Ok(None);
    }
    Ok(Some(c))
}

/// The second half: `try_cmpxchg(v, &c, c + nr)`. A locked cmpxchg needs
/// write permission whether or not it succeeds (x86 writes the old value
/// back; arm64 CAS checks permission first), which is how a stale `c`
/// faults on a read-only vmemmap page (bd225530a4c7). On failure `c` is
/// the current value and the loop rechecks it against `u`.
fn add_unless_cmpxchg(
    m: &mut Machine,
    page: Pfn,
    c: i32,
    nr: i32,
    u: i32,
) -> Result<Result<bool, i32>, Violation> {
    let r = m.resolve(page);
    if !r.pte.writable {
        let seen = m.page(page)?;
        let what = if seen.tail_bit() {
            "a tail page"
        } else if r.aliased {
            "a fake head"
        } else {
            "a read-only struct page"
        };
        return Err(Violation {
            oracle: super::Oracle::RoVmemmapWrite,
            detail: format!(
                "cmpxchg on the refcount of pfn {page} ({what}, read as {c} before) through the read-only vmemmap mapping of frame {}",
                r.pte.frame
            ),
        });
    }
    let seen = m.page(page)?;
    if seen.refcount != c {
        let now = seen.refcount;
        ktrace!(m, "cmpxchg(pfn {page}) fails: refcount is {now}, not {c}");
        return Ok(if now == u { Ok(false) } else { Err(now) });
    }
    oracle::ref_target_is_genuine(page, &seen, r.aliased)?;
    m.page_mut(page)?.refcount = c + nr;
    ktrace!(
        m,
        "atomic_add_unless(pfn {page}): refcount {c} -> {}",
        c + nr
    );
    Ok(Ok(true))
}

/// `atomic_add_unless(&page->_refcount, nr, u)` as the generic
/// `atomic_fetch_add_unless` loop: a read step, then cmpxchg steps.
/// `rcu_unlock` ends the caller's read section with the final step.
fn atomic_add_unless(cpu: &Cpu, page: Pfn, nr: i32, u: i32, rcu_unlock: bool) -> KResult<bool> {
    const F: &str = "atomic_add_unless";
    let unlock = |m: &mut Machine| {
        if rcu_unlock {
            m.rcu_read_unlock();
        }
    };
    let Some(mut c) = cpu.step(F, |m| {
        let c = add_unless_read(m, page, u)?;
        if c.is_none() {
            unlock(m);
        }
        Ok(c)
    })?
    else {
        return Ok(false);
    };
    loop {
        match cpu.step(F, |m| {
            let r = add_unless_cmpxchg(m, page, c, nr, u)?;
            if r.is_ok() {
                unlock(m);
            }
            Ok(r)
        })? {
            Ok(done) => return Ok(done),
            Err(now) => c = now,
        }
    }
}

/// Which checks `page_ref_add_unless` makes before its atomic add.
#[derive(Clone, Copy)]
enum WritableCheck {
    /// No `page_count_writable`: pre-v6.10, and the 2026 shared-tail series
    /// ("Fake heads no longer exist").
    None,
    /// v6.15+: refcount (acquire) first, then the fake-head check.
    CountThenFakeHead,
    /// The pre-2025 order: fake-head check, then refcount.
    FakeHeadThenCount,
}

fn writable_check(cfg: &Config) -> WritableCheck {
    if !cfg.hvo_mode.guards_readers() || cfg.has(Variant::RefNoFakeHeadCheck) {
        WritableCheck::None
    } else if cfg.has(Variant::RefFakeHeadBeforeCount) {
        WritableCheck::FakeHeadThenCount
    } else {
        WritableCheck::CountThenFakeHead
    }
}

/// `page_ref_add_unless(page, nr, u)`: add `nr` unless the count is `u`.
/// Since v6.10 it runs under `rcu_read_lock()` and refuses to write a struct
/// page that HVO may be remapping (`page_count_writable`).
pub fn page_ref_add_unless(cpu: &Cpu, page: Pfn, nr: i32, u: i32) -> KResult<bool> {
    const F: &str = "page_ref_add_unless";
    type Check<'a> = &'a dyn Fn(&mut Machine) -> Result<bool, Violation>;
    let count_is_u = |m: &mut Machine| -> Result<bool, Violation> {
        let c = m.page(page)?.refcount;
        ktrace!(m, "atomic_read_acquire(pfn {page}) = {c}");
        Ok(c == u)
    };
    let fake_head = |m: &mut Machine| -> Result<bool, Violation> {
        let fake = page_fixed_fake_head(m, page)? != page;
        ktrace!(
            m,
            "page_fixed_fake_head(pfn {page}): {}",
            if fake { "fake head" } else { "genuine" }
        );
        Ok(fake)
    };
    // Each check returns true when the page must not be written.
    let (first, second): (Check, Check) = match writable_check(cpu.cfg()) {
        WritableCheck::None => return atomic_add_unless(cpu, page, nr, u, false),
        WritableCheck::CountThenFakeHead => (&count_is_u, &fake_head),
        WritableCheck::FakeHeadThenCount => (&fake_head, &count_is_u),
    };
    let refused = |m: &mut Machine| {
        m.rcu_read_unlock();
        ktrace!(m, "page_count_writable(pfn {page}) = false");
        Ok(true)
    };
    let checks = cpu.step(F, |m| {
        m.rcu_read_lock();
        if m.hugetlb_optimize_vmemmap_key == 0 {
            return Ok(None);
        }
        if first(m)? {
            return refused(m).map(Some);
        }
        Ok(Some(false))
    })?;
    if checks == Some(true) {
        return Ok(false);
    }
    if checks == Some(false) && cpu.step(F, |m| if second(m)? { refused(m) } else { Ok(false) })? {
        return Ok(false);
    }
    atomic_add_unless(cpu, page, nr, u, true)
}

/// `get_page_unless_zero(page)`.
pub fn get_page_unless_zero(cpu: &Cpu, page: Pfn) -> KResult<bool> {
    page_ref_add_unless(cpu, page, 1, 0)
}

/// `folio_try_get(folio)`.
pub fn folio_try_get(cpu: &Cpu, folio: Pfn) -> KResult<bool> {
    page_ref_add_unless(cpu, folio, 1, 0)
}

/// `folio_get(folio)`: an unconditional get; the caller guarantees a
/// reference already exists.
pub fn folio_get(m: &mut Machine, folio: Pfn) -> Result<(), Violation> {
    let p = m.page_mut(folio)?;
    let old = p.refcount;
    oracle::no_increment_from_zero(folio, old)?;
    p.refcount += 1;
    ktrace!(m, "folio_get(pfn {folio}): refcount {old} -> {}", old + 1);
    Ok(())
}

/// `folio_ref_add(folio, nr)`: an unconditional add; the caller guarantees
/// a reference already exists.
pub fn folio_ref_add(m: &mut Machine, folio: Pfn, nr: i32) -> Result<(), Violation> {
    let p = m.page_mut(folio)?;
    let old = p.refcount;
    oracle::no_increment_from_zero(folio, old)?;
    p.refcount += nr;
    ktrace!(
        m,
        "folio_ref_add(pfn {folio}, {nr}): refcount {old} -> {}",
        old + nr
    );
    Ok(())
}

/// `folio_ref_sub_and_test`: drop `nr` references; true if that was the last.
pub fn folio_ref_sub_and_test(m: &mut Machine, folio: Pfn, nr: i32) -> Result<bool, Violation> {
    let p = m.page_mut(folio)?;
    let old = p.refcount;
    oracle::no_underflow(folio, old, nr)?;
    p.refcount -= nr;
    ktrace!(
        m,
        "folio_put_refs(pfn {folio}, {nr}): refcount {old} -> {}",
        old - nr
    );
    Ok(old == nr)
}

/// `folio_put_refs(folio, nr)`: drop references; the last one frees.
pub fn folio_put_refs(cpu: &Cpu, folio: Pfn, nr: i32) -> KResult<()> {
    if cpu.step("folio_put", |m| folio_ref_sub_and_test(m, folio, nr))? {
        __folio_put(cpu, folio)?;
    }
    Ok(())
}

/// `folio_put(folio)`.
pub fn folio_put(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    folio_put_refs(cpu, folio, 1)
}

/// `__folio_put`: the last reference is gone.
pub fn __folio_put(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    let hugetlb = cpu.step("__folio_put", |m| Ok(m.page(folio)?.test(pg::HUGETLB)))?;
    if hugetlb {
        return hugetlb::free_huge_folio(cpu, folio);
    }
    cpu.step("free_unref_folios", |m| free_frozen_folio(m, folio))
}

/// Free a folio whose refcount is already 0 (`free_unref_folios`).
pub fn free_frozen_folio(m: &mut Machine, folio: Pfn) -> Result<(), Violation> {
    let order = folio_order(m, folio)?;
    m.frozen.retain(|f| f.folio != folio);
    m.migrated.retain(|x| x.src != folio);
    m.free_pages(folio, order)
}

/// `page_ref_freeze(folio, count)`: `cmpxchg(refcount, count, 0)`.
pub fn folio_ref_freeze(m: &mut Machine, folio: Pfn, count: i32) -> Result<bool, Violation> {
    let p = m.page(folio)?;
    if p.refcount != count {
        ktrace!(
            m,
            "folio_ref_freeze(pfn {folio}, {count}) fails: refcount is {}",
            p.refcount
        );
        return Ok(false);
    }
    m.page_mut(folio)?.refcount = 0;
    let cpu = m.cpu_index() as u8;
    m.frozen.push(Frozen { folio, cpu });
    ktrace!(m, "folio_ref_freeze(pfn {folio}, {count}): frozen at 0");
    Ok(true)
}

/// `page_ref_unfreeze(folio, count)`: store `count` with release.
pub fn folio_ref_unfreeze(m: &mut Machine, folio: Pfn, count: i32) -> Result<(), Violation> {
    m.frozen.retain(|f| f.folio != folio);
    let p = m.page_mut(folio)?;
    if p.refcount != 0 {
        return Err(Violation {
            oracle: super::Oracle::FrozenChanged,
            detail: format!(
                "folio_ref_unfreeze(pfn {folio}) found refcount {}",
                p.refcount
            ),
        });
    }
    p.refcount = count;
    ktrace!(m, "folio_ref_unfreeze(pfn {folio}, {count})");
    Ok(())
}
