//! The decoder and the scenario parser never panic and always hand back
//! valid scenarios: the `decoder` and `parser` fuzz targets' checks
//! (`mmharness::ui::fuzz::harness`), as bounded property tests.

use mmharness::ui::fuzz::harness::{OPTION_BYTES, decoder, options, parser};
use proptest::collection::vec;
use proptest::prelude::*;
use std::path::Path;

/// Every scenario file in `corpus/`, as bytes to mutate.
fn corpus_files() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// One edit of a JSON text: a byte replaced by one JSON cares about, a
/// range deleted, or a range duplicated.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let special = prop::sample::select(b"{}[]\":,-0123456789e.ntfu \\x".to_vec());
    prop_oneof![
        (any::<usize>(), special).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), 0..40usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 0..40usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(text: &mut Vec<u8>, e: &Edit) {
    if text.is_empty() {
        return;
    }
    match *e {
        Edit::Set(at, b) => {
            let at = at % text.len();
            text[at] = b;
        }
        Edit::Delete(at, n) => {
            let at = at % text.len();
            let end = (at + n).min(text.len());
            text.drain(at..end);
        }
        Edit::Duplicate(at, n) => {
            let at = at % text.len();
            let end = (at + n).min(text.len());
            let part = text[at..end].to_vec();
            text.splice(at..at, part);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes under any options the settings can give decode to a
    /// scenario that validates and survives its JSON.
    #[test]
    fn decoder_never_panics_and_validates(data in vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(decoder(&data), Ok(()));
    }

    /// Arbitrary bytes as text: parsed or refused, never a panic.
    #[test]
    fn parser_takes_arbitrary_text(data in vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(parser(&data), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Corpus files with a few edits: near-valid JSON reaches the
    /// validator's every check; refused with an error or accepted and
    /// round-tripped, never a panic.
    #[test]
    fn parser_takes_edited_scenarios(pick in any::<usize>(), edits in vec(edit(), 1..6)) {
        let files = corpus_files();
        let mut text = files[pick % files.len()].clone();
        for e in &edits {
            apply(&mut text, e);
        }
        prop_assert_eq!(parser(&text), Ok(()));
    }
}

/// The options drawn cover what the decoder is given: several CPU counts,
/// op families, memory and order ranges and variants.
#[test]
fn decoder_options_cover_the_settings() {
    let mut cpus = std::collections::BTreeSet::new();
    let mut families = std::collections::BTreeSet::new();
    let mut ranges = 0;
    let mut with_variants = 0;
    for seed in 0..2000u32 {
        let head: Vec<u8> = (0..OPTION_BYTES as u32)
            .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
            .collect();
        let o = options(&head);
        cpus.insert(o.max_cpus);
        families.insert(o.ops.label());
        ranges += usize::from(o.memory_blocks.0 < o.memory_blocks.1);
        with_variants += usize::from(!o.config.variants.is_empty());
    }
    assert!(cpus.len() >= 4, "{cpus:?}");
    assert!(families.len() >= 3, "{families:?}");
    assert!(
        ranges > 100 && with_variants > 100,
        "{ranges} {with_variants}"
    );
}
