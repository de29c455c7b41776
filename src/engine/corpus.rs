//! The guided hunt's corpus: inputs that reached new coverage, picked for
//! mutation by the rarity of what they reach.
//!
//! As libFuzzer's entropic power schedule does, an input whose rarest
//! feature few executions reached is picked more often: a near miss of a deep
//! race (a reader that got through to an HVO alias, but found the folio
//! still frozen) is rare, and is what a mutation turns into the race.

use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Features are hashes already: hash them no further.
#[derive(Default)]
struct FeatureHasher(u64);

impl Hasher for FeatureHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type FeatureMap = HashMap<u64, u64, BuildHasherDefault<FeatureHasher>>;

/// One kept input.
pub struct Entry {
    pub bytes: Vec<u8>,
    /// The bytes that decode its ops (see `decode_with_ops_prefix`).
    pub ops_prefix: Vec<u8>,
    /// The decisions its execution took (input engine).
    pub schedule: Vec<u8>,
    pub nr_cpus: u8,
    pub features: Vec<u64>,
}

/// Recompute every entry's weight after this many picks (hit counts drift).
const REWEIGH_EVERY: u64 = 1024;

#[derive(Default)]
pub struct Corpus {
    entries: Vec<Entry>,
    /// Per feature: how many executions reached it (counted per explored
    /// input: a shuttle engine's union over its executions).
    hits: FeatureMap,
    /// Cumulative weights, for sampling in proportion to weight.
    cumulative: Vec<f64>,
    picks: u64,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct features reached so far.
    pub fn features(&self) -> usize {
        self.hits.len()
    }

    /// Count the executions that reached an explored input's features;
    /// returns how many of them no execution reached before.
    pub fn observe(&mut self, features: &[u64], executions: u64) -> usize {
        let mut new = 0;
        for f in features {
            let h = self.hits.entry(*f).or_insert(0);
            new += (*h == 0) as usize;
            *h += executions;
        }
        new
    }

    /// How many executions reached `feature`.
    pub fn hits(&self, feature: u64) -> u64 {
        self.hits.get(&feature).copied().unwrap_or(0)
    }

    /// Keep an input (call after [`Corpus::observe`] counted its features).
    pub fn add(&mut self, entry: Entry) {
        let w = self.weight(&entry.features);
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative.push(total + w);
        self.entries.push(entry);
    }

    /// 1 / (executions that reached the entry's rarest feature).
    fn weight(&self, features: &[u64]) -> f64 {
        let rarest = features
            .iter()
            .map(|f| self.hits.get(f).copied().unwrap_or(1))
            .min()
            .unwrap_or(1);
        1.0 / rarest.max(1) as f64
    }

    /// An entry's index, picked in proportion to its weight.
    pub fn pick(&mut self, rng: &mut StdRng) -> usize {
        self.picks += 1;
        if self.picks.is_multiple_of(REWEIGH_EVERY) {
            let mut total = 0.0;
            for i in 0..self.entries.len() {
                total += self.weight(&self.entries[i].features);
                self.cumulative[i] = total;
            }
        }
        let total = *self
            .cumulative
            .last()
            .expect("pick from a non-empty corpus");
        let x = rng.gen_range(0.0..total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.entries.len() - 1)
    }

    /// An entry's index, picked uniformly (a splice partner).
    pub fn any(&self, rng: &mut StdRng) -> usize {
        rng.gen_range(0..self.entries.len())
    }
}

impl std::ops::Index<usize> for Corpus {
    type Output = Entry;

    fn index(&self, i: usize) -> &Entry {
        &self.entries[i]
    }
}
