//! The decoder and the parser as fuzz targets of their own (`fuzz/`'s
//! `decoder` and `parser`, and the bounded property test in
//! `tests/robustness.rs`): any input is handled without a panic, and what
//! comes out is a valid scenario. Each returns what broke.

use crate::model::{Config, HvoMode, Subsystem, SubsystemSet, Variant, VariantSet};
use crate::scenario::generate::{GenOptions, OpFamily, decode_bytes, decode_with_ops_prefix};
use crate::scenario::{MAX_CPUS, MAX_OPS_PER_CPU, Scenario};
use arbitrary::Unstructured;

/// Bytes at the start of a `decoder` input that choose the options.
pub const OPTION_BYTES: usize = 16;

/// Generation options as the command line and the settings can give them,
/// from `head`: any variants and HVO mode, any CPU bound (the decoder
/// clamps it), op families that are unions of arms (what `OpFamily::parse`
/// yields), memory and order ranges within bounds, and op bounds under
/// which a slot's two-op idioms still fit `MAX_OPS_PER_CPU`.
pub fn options(head: &[u8]) -> GenOptions {
    let mut padded = head.to_vec();
    padded.resize(OPTION_BYTES, 0);
    let u = &mut Unstructured::new(&padded);
    let mut byte = || u.arbitrary::<u8>().unwrap_or(0);
    let mask = u32::from_le_bytes([byte(), byte(), byte(), byte()]);
    let chosen: Vec<Variant> = Variant::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask >> (i % 32) & 1 == 1)
        .map(|(_, v)| *v)
        .collect();
    let hvo_mode = HvoMode::ALL[byte() as usize % HvoMode::ALL.len()];
    let family = byte();
    let ops = match family % 3 {
        0 => OpFamily::Any,
        1 => OpFamily::Of(SubsystemSet::all()),
        _ => {
            let picked: Vec<Subsystem> = Subsystem::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| (family >> 2) >> (i % 6) & 1 == 1)
                .map(|(_, s)| *s)
                .collect();
            let set = SubsystemSet::of(&picked).arms();
            if set.is_empty() {
                OpFamily::Any
            } else {
                OpFamily::Of(set)
            }
        }
    };
    let mut range = |lo: u8, hi: u8| {
        let (a, b) = (lo + byte() % (hi - lo + 1), lo + byte() % (hi - lo + 1));
        (a.min(b), a.max(b))
    };
    let memory_blocks = range(2, 8);
    let hugetlb_order = range(7, 10);
    let max_cpus = byte() as usize % (MAX_CPUS + 4);
    let max_ops = byte() as usize % (MAX_OPS_PER_CPU / 2 + 1);
    let max_setup = byte() as usize % (MAX_OPS_PER_CPU + 1);
    let config_of = |variants: &[Variant]| Config {
        arch: VariantSet::new(variants).arch(),
        hvo_mode,
        variants: VariantSet::new(variants),
        memory_blocks: memory_blocks.0,
        hugetlb_order: hugetlb_order.0,
        ..Config::default()
    };
    // Only variants that go together (one write-fault design): the
    // settings refuse the others with exit status 2.
    let mut variants: Vec<Variant> = Vec::new();
    for v in chosen {
        variants.push(v);
        if config_of(&variants).validate().is_err() {
            variants.pop();
        }
    }
    let config = config_of(&variants);
    GenOptions {
        max_cpus,
        max_ops,
        max_setup,
        ops,
        memory_blocks,
        hugetlb_order,
        ..GenOptions::with_config(config)
    }
}

/// `data`: [`OPTION_BYTES`] of options, then the decoder's input. The two
/// decoding entry points agree, the ops prefix decodes to the same ops, and
/// the scenario validates and survives its JSON.
pub fn decoder(data: &[u8]) -> Result<(), String> {
    let (head, bytes) = data.split_at(data.len().min(OPTION_BYTES));
    let opts = options(head);
    let s = decode_bytes(bytes, &opts);
    let (again, prefix) = decode_with_ops_prefix(bytes, &opts);
    if again != s {
        return Err("decode_with_ops_prefix and decode_bytes disagree".into());
    }
    let from_prefix = decode_bytes(&prefix, &opts);
    if (&from_prefix.setup, &from_prefix.cpus) != (&s.setup, &s.cpus) {
        return Err("the ops prefix decodes to other ops".into());
    }
    s.validate()
        .map_err(|e| format!("decoded an invalid scenario ({opts:?}): {e}"))?;
    round_trip(&s)
}

/// `data` as text (invalid UTF-8 replaced): `Scenario::from_json` returns a
/// scenario or an error, and a scenario it returns round-trips.
pub fn parser(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    match Scenario::from_json(&text, "input") {
        Ok(s) => round_trip(&s),
        Err(e) => {
            // The message is what the CLI prints: it must format.
            let _ = e.to_string();
            Ok(())
        }
    }
}

fn round_trip(s: &Scenario) -> Result<(), String> {
    match Scenario::from_json(&s.to_json(), "round trip") {
        Ok(back) if back == *s => Ok(()),
        Ok(_) => Err("the scenario reads back different from its JSON".into()),
        Err(e) => Err(format!("the scenario's own JSON does not load: {e}")),
    }
}
