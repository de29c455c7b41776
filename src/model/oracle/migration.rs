//! What migration may rely on, checked on its own path: it proceeds only at
//! the expected refcount, carries the data over, and gives up only when
//! somebody else really held a reference.

use super::{Oracle, Violation, fail};
use crate::model::machine::{Machine, Pfn};
use crate::model::mm_types::pg;
use crate::model::page_flags::{peek_head, peek_nr_pages};

/// The references a folio under migration should have, from the model's
/// facts rather than the kernel's formula: the isolation, the page cache
/// (one per page), PG_private, and each current mapping.
pub fn migration_expected_refs(m: &Machine, folio: Pfn) -> i32 {
    let nr = peek_nr_pages(m, folio);
    let cached = m
        .mapping
        .slots
        .iter()
        .filter(|s| **s == Some(folio))
        .count() as i32;
    let mut mapped = 0;
    m.for_each_mapping(|page, _| mapped += (peek_head(m, page) == folio) as i32);
    1 + cached * nr as i32 + m.peek(folio).test(pg::PRIVATE) as i32 + mapped
}

/// No one but migration references the folio right now.
pub fn folio_is_quiet(m: &Machine, folio: Pfn) -> bool {
    m.peek(folio).refcount == migration_expected_refs(m, folio)
}

/// Migration only proceeds (a passed refcount check, a freeze, the store
/// of a non-atomic freeze) when the count it saw is exactly the expected
/// references: anything more is someone's reference it would wipe or
/// ignore.
pub fn migration_refcount_exact(
    m: &Machine,
    folio: Pfn,
    seen: i32,
    what: &str,
) -> Result<(), Violation> {
    let expected = migration_expected_refs(m, folio);
    if seen == expected {
        return Ok(());
    }
    fail(
        Oracle::MigrationRefcount,
        format!(
            "migration of pfn {folio} went ahead at {what} with refcount {seen}, but only {expected} reference(s) are migration's: {} reference(s) would be lost",
            seen - expected
        ),
    )
}

/// At the commit the new folio holds the old folio's data, page for page,
/// and its mapping.
pub fn migration_carries_data(m: &Machine, src: Pfn, dst: Pfn) -> Result<(), Violation> {
    for i in 0..peek_nr_pages(m, src) {
        let (a, b) = (
            &m.frames[(src + i) as usize].content,
            &m.frames[(dst + i) as usize].content,
        );
        if a != b {
            return fail(
                Oracle::MigrationCopy,
                format!(
                    "migration of pfn {} to pfn {}: the old page holds {a:?}, the new one {b:?} (written after the copy)",
                    src + i,
                    dst + i
                ),
            );
        }
    }
    let (a, b) = (m.peek(src).mapping, m.peek(dst).mapping);
    if a != b {
        return fail(
            Oracle::MigrationCopy,
            format!("migration of pfn {src} to pfn {dst}: mapping {a:?} became {b:?}"),
        );
    }
    Ok(())
}

/// Migration may skip a folio as "freed from under us" only when the
/// isolation reference is all that is left: no mapping, no page-cache
/// entry, no buffers (counted from the model's facts, not the refcount it
/// read).
pub fn migration_skips_only_freed(m: &Machine, folio: Pfn) -> Result<(), Violation> {
    let others = migration_expected_refs(m, folio) - 1;
    if others == 0 {
        return Ok(());
    }
    fail(
        Oracle::MigrationProgress,
        format!(
            "migration skipped pfn {folio} as freed from under it, but {others} reference(s) besides the isolation's are live (mappings, page cache, buffers)"
        ),
    )
}

/// Migration may give up after its retries only if someone else held a
/// reference at the last -EAGAIN.
pub fn migration_makes_progress(folio: Pfn, passes: u32, quiet: bool) -> Result<(), Violation> {
    if !quiet {
        return Ok(());
    }
    fail(
        Oracle::MigrationProgress,
        format!(
            "migration of pfn {folio} gave up after {passes} passes of -EAGAIN, though at the last one nobody else referenced it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::migration_skips_only_freed;
    use crate::model::oracle::Oracle;
    use crate::model::oracle::page_cache::tests::mapped_file_page;
    use crate::model::truncate::truncate_inode_folio;

    #[test]
    fn a_mapped_cached_folio_skipped_as_freed_is_caught() {
        let (k, folio) = mapped_file_page();

        let err = migration_skips_only_freed(&k.m, folio).unwrap_err();

        assert_eq!(err.oracle, Oracle::MigrationProgress, "{}", err.detail);
    }

    #[test]
    fn a_truncated_folio_may_be_skipped_as_freed() {
        let (mut k, folio) = mapped_file_page();
        k.on(1, |cpu| truncate_inode_folio(cpu, 0)).unwrap();

        migration_skips_only_freed(&k.m, folio).unwrap();
    }
}
