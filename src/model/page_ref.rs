//! Reference counting (include/linux/page_ref.h, include/linux/mm.h).

use super::config::Config;
use super::ctx::Cpu;
use super::machine::{Machine, Pfn};
use super::mm_types::pg;
use super::oracle::{self, RefKind, RefUpdate, Violation};
use super::page_flags::{folio_order, page_fixed_fake_head};
use super::variant::Variant;
use super::{KResult, hugetlb, page_alloc};
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

/// The second half: `try_cmpxchg(v, &c, c + nr)`. Whether it needs write
/// permission when the compare fails is the architecture's
/// ([`super::arch::Arch::cmpxchg_faults_on_failed_compare`]): x86 `lock cmpxchg` writes
/// the old value back and arm64 LSE `CAS` is checked as a write, so a stale
/// `c` faults on a read-only vmemmap page (bd225530a4c7); an LL/SC loop
/// stores only when the compare succeeds. On failure `c` is the current
/// value and the loop rechecks it against `u`.
fn add_unless_cmpxchg(
    m: &mut Machine,
    page: Pfn,
    c: i32,
    nr: i32,
    u: i32,
) -> Result<Result<bool, i32>, Violation> {
    let pte = m.resolve(page);
    let aliased = m.resolves_aliased(page);
    if !pte.writable {
        let seen = m.page(page)?;
        if m.cfg.arch.cmpxchg_faults_on_failed_compare() || seen.refcount == c {
            return Err(oracle::cmpxchg_through_ro_vmemmap(
                page, pte, aliased, &seen, c,
            ));
        }
    }
    let seen = m.page(page)?;
    if seen.refcount != c {
        let now = seen.refcount;
        ktrace!(m, "cmpxchg(pfn {page}) fails: refcount is {now}, not {c}");
        return Ok(if now == u { Ok(false) } else { Err(now) });
    }
    oracle::at_ref_update(&RefUpdate {
        pfn: page,
        old: c,
        kind: RefKind::Speculative {
            page: seen,
            aliased,
        },
    })?;
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
fn atomic_add_unless(
    cpu: &Cpu,
    page: Pfn,
    nr: i32,
    u: i32,
    rcu_unlock: bool,
    added: Added,
) -> KResult<bool> {
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
            if r == Ok(true) {
                added(m);
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

/// What a caller observes in the step its conditional add lands in.
pub type Added<'a> = &'a dyn Fn(&Machine);

/// `page_ref_add_unless(page, nr, u)`: add `nr` unless the count is `u`.
/// Since v6.10 it runs under `rcu_read_lock()` and refuses to write a struct
/// page that HVO may be remapping (`page_count_writable`).
pub fn page_ref_add_unless(cpu: &Cpu, page: Pfn, nr: i32, u: i32) -> KResult<bool> {
    page_ref_add_unless_then(cpu, page, nr, u, &|_| {})
}

/// `page_ref_add_unless`, calling `added` in the step the add lands in:
/// the instant the caller's reference starts.
pub fn page_ref_add_unless_then(
    cpu: &Cpu,
    page: Pfn,
    nr: i32,
    u: i32,
    added: Added,
) -> KResult<bool> {
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
        WritableCheck::None => return atomic_add_unless(cpu, page, nr, u, false, added),
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
    atomic_add_unless(cpu, page, nr, u, true, added)
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
    let update = RefUpdate {
        pfn: folio,
        old,
        kind: RefKind::Add { nr: 1 },
    };
    oracle::at_ref_update(&update)?;
    p.refcount += 1;
    ktrace!(m, "folio_get(pfn {folio}): refcount {old} -> {}", old + 1);
    Ok(())
}

/// `folio_ref_add(folio, nr)`: an unconditional add; the caller guarantees
/// a reference already exists.
pub fn folio_ref_add(m: &mut Machine, folio: Pfn, nr: i32) -> Result<(), Violation> {
    let p = m.page_mut(folio)?;
    let old = p.refcount;
    let update = RefUpdate {
        pfn: folio,
        old,
        kind: RefKind::Add { nr },
    };
    oracle::at_ref_update(&update)?;
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
    let update = RefUpdate {
        pfn: folio,
        old,
        kind: RefKind::Put { nr },
    };
    oracle::at_ref_update(&update)?;
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
    // page_cache_release (__page_cache_release, v6.12 mm/swap.c): off
    // the LRU, PG_lru cleared, before the page allocator sees the folio.
    free_frozen_folio(cpu, folio, |m| {
        m.page_mut(folio)?.flags &= !pg::LRU;
        Ok(())
    })
}

/// Free a folio whose refcount is already 0 (`free_unref_folios`, v6.12
/// mm/page_alloc.c): `first` (the caller's last stores) with the folio's
/// order read and the start of `free_pages_prepare` in one step, the rest
/// of the free in steps of its own ([`page_alloc::free_pages_then`]).
pub fn free_frozen_folio(
    cpu: &Cpu,
    folio: Pfn,
    first: impl FnOnce(&mut Machine) -> Result<(), Violation>,
) -> KResult<()> {
    page_alloc::free_pages_then(cpu, "free_unref_folios", |m| {
        first(m)?;
        let order = folio_order(m, folio)?;
        m.ledger.forget(folio);
        Ok((folio, order))
    })
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
    m.ledger.freeze(folio, cpu);
    ktrace!(m, "folio_ref_freeze(pfn {folio}, {count}): frozen at 0");
    Ok(true)
}

/// `page_ref_unfreeze(folio, count)`: store `count` with release.
pub fn folio_ref_unfreeze(m: &mut Machine, folio: Pfn, count: i32) -> Result<(), Violation> {
    m.ledger.unfreeze(folio);
    let p = m.page_mut(folio)?;
    oracle::unfreeze_from_zero(folio, p.refcount)?;
    p.refcount = count;
    ktrace!(m, "folio_ref_unfreeze(pfn {folio}, {count})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::HvoMode;
    use crate::model::machine::Owner;
    use crate::model::oracle::Oracle;
    use crate::model::testing::{Builder, Kernel};

    /// The head of the hugetlb folio at 512 after HVO, and one of its fake
    /// heads. The folio's 512 struct pages fill vmemmap pages 8..16; with
    /// keep-1 every one of them maps the copy of page 8, so the first
    /// struct page of each tail vmemmap page reads the head's:
    ///
    /// ```text
    /// vmemmap page   8       9       10     ...   15
    /// struct pages   512..   576..   640..        960..
    ///                  |RW     |RO     |RO          |RO
    ///                  v       v       v            v
    ///                  +-------+-------+------------+-- frame 16: head, page[1], tails
    /// ```
    const HEAD: Pfn = 512;
    const FAKE_HEAD: Pfn = HEAD + 64;

    /// A keep-1 machine whose CPU 0 holds the HVO-optimized hugetlb folio
    /// at 512 (refcount 1).
    fn held_hugetlb_folio(b: Builder) -> Kernel {
        let mut k = b.boot();
        let folio = k.pool_huge_folio(HEAD);
        assert_eq!(folio, HEAD);
        k.on(0, |cpu| hugetlb::alloc_hugetlb_folio(cpu, 0)).unwrap();
        assert_eq!(k.m.peek(HEAD).refcount, 1);
        k
    }

    #[test]
    fn keep1_hvo_leaves_fake_heads_at_each_tail_vmemmap_page() {
        let mut k = held_hugetlb_folio(Kernel::builder());
        for i in 1..8 {
            let fake = HEAD + 64 * i;
            let p = k.m.peek(fake);
            assert!(p.test(pg::HEAD), "pfn {fake} reads the head's flags");
            assert_eq!(p.refcount, 1, "pfn {fake} reads the head's refcount");
            assert!(k.m.peek_aliased(fake));
            let head = k.step(1, |m| page_fixed_fake_head(m, fake)).unwrap();
            assert_eq!(head, HEAD, "page_fixed_fake_head(pfn {fake})");
        }
        assert_eq!(k.step(1, |m| page_fixed_fake_head(m, HEAD)).unwrap(), HEAD);
    }

    #[test]
    fn page_ref_add_unless_refuses_a_fake_head() {
        let mut k = held_hugetlb_folio(Kernel::builder());

        let got = k.on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD)).unwrap();

        assert!(!got, "page_count_writable() is false for a fake head");
        assert_eq!(k.m.peek(HEAD).refcount, 1);
        assert!(
            !k.m.rcu.in_read_section(1),
            "the refusal left the read section"
        );
    }

    #[test]
    fn page_ref_add_unless_refuses_a_zero_count() {
        let mut k = Kernel::boot();
        // The pool folio is frozen at 0.
        let folio = k.pool_huge_folio(HEAD);

        assert!(!k.on(1, |cpu| get_page_unless_zero(cpu, folio)).unwrap());
        assert!(!k.on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD)).unwrap());

        assert_eq!(k.m.peek(folio).refcount, 0);
        assert!(!k.m.rcu.in_read_section(1));
    }

    #[test]
    fn page_ref_add_unless_takes_a_reference_on_a_genuine_head() {
        let mut k = held_hugetlb_folio(Kernel::builder());

        assert!(k.on(1, |cpu| folio_try_get(cpu, HEAD)).unwrap());

        assert_eq!(k.m.peek(HEAD).refcount, 2);
        assert!(!k.m.rcu.in_read_section(1));
    }

    #[test]
    fn page_ref_add_unless_reads_the_count_before_the_fake_head_check() {
        let mut k = held_hugetlb_folio(Kernel::builder());
        k.trace_on();

        assert!(!k.on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD)).unwrap());

        let trace = k.take_trace();
        let count = trace
            .iter()
            .position(|l| l.starts_with("atomic_read_acquire(pfn 576)"));
        let fake = trace
            .iter()
            .position(|l| l.starts_with("page_fixed_fake_head(pfn 576): fake head"));
        assert!(count.unwrap() < fake.unwrap(), "{trace:#?}");
    }

    #[test]
    fn ref_fake_head_before_count_checks_the_fake_head_first() {
        let b = Kernel::builder().variant(Variant::RefFakeHeadBeforeCount);
        let mut k = held_hugetlb_folio(b);
        k.trace_on();

        // Sequentially it refuses the fake head all the same; only a remap
        // between the two checks tells the orders apart.
        assert!(!k.on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD)).unwrap());

        let trace = k.take_trace();
        let fake = trace
            .iter()
            .position(|l| l.starts_with("page_fixed_fake_head(pfn 576): fake head"));
        assert!(fake.is_some(), "{trace:#?}");
        assert!(
            !trace.iter().any(|l| l.starts_with("atomic_read_acquire")),
            "the fake head is refused before the count is read: {trace:#?}"
        );
        assert_eq!(k.m.peek(HEAD).refcount, 1);
    }

    #[test]
    fn ref_fake_head_before_count_refuses_a_zero_count_after_a_genuine_head() {
        let mut k = Kernel::builder()
            .variant(Variant::RefFakeHeadBeforeCount)
            .boot();
        let folio = k.pool_huge_folio(HEAD);
        k.trace_on();

        assert!(!k.on(1, |cpu| folio_try_get(cpu, folio)).unwrap());

        let trace = k.take_trace();
        let genuine = trace
            .iter()
            .position(|l| l.starts_with("page_fixed_fake_head(pfn 512): genuine"));
        let count = trace
            .iter()
            .position(|l| l == "atomic_read_acquire(pfn 512) = 0");
        assert!(genuine.unwrap() < count.unwrap(), "{trace:#?}");
        assert!(!k.m.rcu.in_read_section(1));
    }

    #[test]
    fn ref_no_fake_head_check_writes_the_fake_heads_read_only_alias() {
        let b = Kernel::builder().variant(Variant::RefNoFakeHeadCheck);
        let mut k = held_hugetlb_folio(b);

        let err = k
            .on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD))
            .unwrap_err();

        // atomic_add_unless reads the head's count (1) through the alias
        // and its cmpxchg needs write permission on the RO vmemmap page.
        assert_eq!(err.oracle, Oracle::RoVmemmapWrite, "{}", err.detail);
        assert!(err.detail.contains("a fake head"), "{}", err.detail);
        assert_eq!(k.m.peek(HEAD).refcount, 1);
    }

    #[test]
    fn shared_tail_page_ref_add_unless_has_no_writable_check() {
        let mut k = Kernel::builder().hvo(HvoMode::SharedTail).boot();
        k.pool_huge_folio(HEAD);
        k.on(0, |cpu| hugetlb::alloc_hugetlb_folio(cpu, 0)).unwrap();
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
        k.trace_on();

        // Struct page 576 is a tail in the shared RO page: count 0, no
        // fake head to check for.
        assert!(!k.on(1, |cpu| get_page_unless_zero(cpu, FAKE_HEAD)).unwrap());
        assert!(k.on(1, |cpu| folio_try_get(cpu, HEAD)).unwrap());

        let trace = k.take_trace();
        assert_eq!(
            trace,
            [
                "atomic_add_unless(pfn 576): refcount is 0, refused",
                "atomic_add_unless(pfn 512): refcount 1 -> 2",
            ]
        );
        assert_eq!(k.m.peek(HEAD).refcount, 2);
    }

    #[test]
    fn folio_ref_freeze_fails_on_the_wrong_count() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();
        k.step(0, |m| folio_get(m, folio)).unwrap();

        assert!(!k.step(0, |m| folio_ref_freeze(m, folio, 1)).unwrap());
        assert_eq!(k.m.peek(folio).refcount, 2);
        assert!(!k.m.ledger.is_frozen(folio));

        assert!(k.step(0, |m| folio_ref_freeze(m, folio, 2)).unwrap());
        assert_eq!(k.m.peek(folio).refcount, 0);
        assert!(k.m.ledger.is_frozen(folio));

        k.step(0, |m| folio_ref_unfreeze(m, folio, 2)).unwrap();
        assert_eq!(k.m.peek(folio).refcount, 2);
        assert!(!k.m.ledger.is_frozen(folio));
    }

    #[test]
    fn folio_ref_unfreeze_of_a_non_zero_count_is_frozen_changed() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();

        let err = k.step(0, |m| folio_ref_unfreeze(m, folio, 1)).unwrap_err();

        assert_eq!(err.oracle, Oracle::FrozenChanged);
    }

    #[test]
    fn a_frozen_count_that_changes_under_its_freezer_is_frozen_changed() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();
        assert!(k.step(0, |m| folio_ref_freeze(m, folio, 1)).unwrap());

        // A plain store behind the freezer's back (what a non-atomic
        // freeze would race with), checked after the step.
        let err = k
            .step(1, |m| {
                m.page_mut(folio)?.refcount = 1;
                Ok(())
            })
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::FrozenChanged);
    }

    #[test]
    fn folio_get_on_a_zero_count_is_inc_from_zero() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();
        assert!(k.step(0, |m| folio_ref_freeze(m, folio, 1)).unwrap());

        let err = k.step(0, |m| folio_get(m, folio)).unwrap_err();

        assert_eq!(err.oracle, Oracle::IncFromZero);
        assert_eq!(k.m.peek(folio).refcount, 0, "the get did not happen");
    }

    #[test]
    fn folio_put_of_the_last_reference_frees_and_one_more_underflows() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();

        k.on(0, |cpu| folio_put(cpu, folio)).unwrap();
        assert_eq!(k.m.frames[folio as usize].owner, Owner::Free);
        assert!(
            k.m.buddy.free_blocks().contains(&(512, 9)),
            "600 merged back"
        );

        let err = k.on(0, |cpu| folio_put(cpu, folio)).unwrap_err();
        assert_eq!(err.oracle, Oracle::RefcountUnderflow);
    }
}
