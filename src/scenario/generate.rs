//! The one decoder from bytes to scenarios.
//!
//! cargo-fuzz and bolero feed it through `arbitrary`, the input engine feeds
//! it random bytes, and the proptest strategy maps byte vectors through it,
//! so every engine shrinks the same representation. Bytes that run out
//! decode as zeros, and zero always decodes to the simplest choice (ops are
//! numbered simplest first), so shrinking bytes toward zero simplifies the
//! scenario.

use super::{MAX_CPUS, Op, Scenario};
use crate::model::config::{
    MAX_USER_PAGES, PMD_PAGES, STRUCT_PAGES_PER_VMEMMAP_PAGE, VmaKind, Vmas,
};
use crate::model::op::{Arg, Bit, Draw, Index, Role};
use crate::model::subsystem::distinct_arms;
use crate::model::{Config, OpKind, Subsystem, SubsystemSet, Variant};
use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

/// What the decoder may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    pub config: Config,
    /// CPUs per scenario: 2..=max_cpus.
    pub max_cpus: usize,
    /// Ops per CPU: 1..=max_ops.
    pub max_ops: usize,
    /// Ops run before the CPUs start: 0..=max_setup.
    pub max_setup: usize,
    /// Which subsystems scenarios draw their ops from.
    pub ops: OpFamily,
    /// Physical memory in blocks, drawn per scenario from this inclusive
    /// range (the configuration's when both ends are equal).
    pub memory_blocks: (u8, u8),
    /// Hugetlb folio orders, likewise.
    pub hugetlb_order: (u8, u8),
    /// Pages each VMA of the configuration may grow by, drawn per scenario
    /// (a hugetlb VMA by whole PMDs): VMA sizes, where the VMAs after the
    /// first start, and where the user pages end vary. 0: the
    /// configuration's layout.
    pub vma_growth: u8,
}

/// Which subsystems a generated scenario's ops come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpFamily {
    /// Each scenario picks, from its bytes, every op kind or one
    /// subsystem's arm (the subsystems its races involve).
    #[default]
    Any,
    /// The op kinds of exactly these subsystems.
    Of(SubsystemSet),
}

impl OpFamily {
    /// The family a hunt for `variants` draws from: where the variants
    /// live, or any family for the fixed model.
    pub fn for_variants(variants: &[Variant]) -> OpFamily {
        if variants.is_empty() {
            return OpFamily::Any;
        }
        let subsystems: Vec<Subsystem> = variants.iter().map(|v| v.subsystem()).collect();
        OpFamily::Of(SubsystemSet::of(&subsystems).arms())
    }

    /// `any`, `all`, or subsystem names joined by commas: the union of
    /// those subsystems' arms.
    pub fn parse(text: &str) -> Result<OpFamily, String> {
        match text.trim() {
            "any" => return Ok(OpFamily::Any),
            "all" => return Ok(OpFamily::Of(SubsystemSet::all())),
            _ => {}
        }
        let mut set = Vec::new();
        for name in text.split(',').map(str::trim) {
            let s = Subsystem::ALL
                .iter()
                .copied()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Subsystem::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "unknown op family `{name}`: use `any`, `all` or subsystem names ({}) joined by commas",
                        known.join(", ")
                    )
                })?;
            set.push(s);
        }
        Ok(OpFamily::Of(SubsystemSet::of(&set).arms()))
    }

    /// A text [`OpFamily::parse`] reads back as this family, if there is
    /// one: `any`, `all`, a subsystem whose arm it is, or its members.
    pub fn setting(self) -> Option<String> {
        let mut texts = vec!["any".to_string(), "all".to_string()];
        texts.extend(Subsystem::ALL.iter().map(|s| s.name().to_string()));
        if let OpFamily::Of(set) = self {
            texts.push(set.label());
        }
        texts.into_iter().find(|t| OpFamily::parse(t) == Ok(self))
    }

    pub fn label(self) -> String {
        match self {
            OpFamily::Any => "any".into(),
            OpFamily::Of(s) if s == SubsystemSet::all() => "all".into(),
            OpFamily::Of(s) => s.label(),
        }
    }
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions::with_config(Config::default())
    }
}

impl GenOptions {
    pub fn with_config(config: Config) -> Self {
        GenOptions {
            config,
            max_cpus: 2,
            max_ops: 5,
            max_setup: 4,
            ops: OpFamily::Any,
            memory_blocks: (config.memory_blocks, config.memory_blocks),
            hugetlb_order: (config.hugetlb_order, config.hugetlb_order),
            vma_growth: 0,
        }
    }
}

/// A value from an inclusive range: one byte when the range has more than
/// one value, none otherwise (so fixed settings decode inputs as before).
fn draw_in(u: &mut Unstructured, (lo, hi): (u8, u8)) -> arbitrary::Result<u8> {
    if lo < hi {
        u.int_in_range(lo..=hi)
    } else {
        Ok(lo)
    }
}

/// The configuration's VMAs, each grown by 0..=`growth` pages (a hugetlb
/// VMA by whole PMDs), one byte a VMA, then rotated by a byte's count (so
/// that any of them may map page 0); the layout as it is when the new one
/// would not fit the address space. No bytes when `growth` is 0.
fn draw_vmas(u: &mut Unstructured, vmas: Vmas, growth: u8) -> arbitrary::Result<Vmas> {
    if growth == 0 {
        return Ok(vmas);
    }
    let mut specs = vmas.specs().to_vec();
    for s in &mut specs {
        let extra = u.int_in_range(0..=growth)?;
        s.pages += match s.kind {
            VmaKind::HugetlbShared => extra - extra % PMD_PAGES as u8,
            _ => extra,
        };
    }
    if specs.len() > 1 {
        let by = u.int_in_range(0..=specs.len() - 1)?;
        specs.rotate_left(by);
    }
    let grown = Vmas::new(&specs).expect("as many VMAs as before");
    Ok(if grown.end() <= MAX_USER_PAGES {
        grown
    } else {
        vmas
    })
}

/// A pfn biased toward the struct pages HVO treats specially: the first
/// struct page of each vmemmap page of a hugetlb-capable block (a fake head
/// after keep-1 HVO), its neighbours, and folio heads.
fn decode_pfn(u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<u32> {
    let per_block = cfg.pages_per_huge_page();
    let class = u.int_in_range(0..=7u8)?;
    let block = u.int_in_range(1..=cfg.memory_blocks as u32 - 1)?;
    let vpage = u.int_in_range(0..=cfg.vmemmap_pages_per_folio() - 1)?;
    let base = block * per_block + vpage * STRUCT_PAGES_PER_VMEMMAP_PAGE;
    Ok(match class {
        0..=3 => base,
        4 => base + u.int_in_range(1..=STRUCT_PAGES_PER_VMEMMAP_PAGE - 1)?,
        5 => block * per_block,
        _ => u.int_in_range(0..=cfg.nr_pfns() - 1)?,
    })
}

/// Two pfns per scenario that ops refer to most of the time, so that a
/// walker visits the page another CPU allocated.
struct Palette([u32; 2]);

impl Palette {
    fn decode(u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<Palette> {
        Ok(Palette([decode_pfn(u, cfg)?, decode_pfn(u, cfg)?]))
    }

    fn pfn(&self, u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<u32> {
        match u.int_in_range(0..=7u8)? {
            0..=4 => Ok(self.0[0]),
            5 | 6 => Ok(self.0[1]),
            _ => decode_pfn(u, cfg),
        }
    }
}

/// Page-cache indexes the generator uses: few, so ops collide.
const GEN_INDEXES: u8 = 2;

/// Two user addresses (process, page) per scenario that ops refer to most
/// of the time, so that GUP, faults and migration meet on one page.
#[derive(Clone, Copy)]
struct Uaddrs {
    pal: [(u8, u8); 2],
    /// An arm about anonymous memory shared by fork draws from one PMD
    /// range in two processes instead (see [`Uaddrs::meet_in_anon`]).
    meet: Option<[(u8, u8); 4]>,
}

impl Uaddrs {
    fn decode_one(u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<(u8, u8)> {
        Ok((
            u.int_in_range(0..=cfg.mms - 1)?,
            u.int_in_range(0..=cfg.user_pages().max(1) as u8 - 1)?,
        ))
    }

    fn decode(u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<Uaddrs> {
        Ok(Uaddrs {
            pal: [Self::decode_one(u, cfg)?, Self::decode_one(u, cfg)?],
            meet: None,
        })
    }

    /// The palette of an arm about anonymous memory shared by fork: one
    /// PMD range (a THP) of an anonymous VMA, in two processes, where fork
    /// and copy-on-write races meet: mostly the first page in the first
    /// process, then the same page in the other process and the other half
    /// of the range in each. Mapped from the bytes [`Uaddrs::decode`] read.
    fn meet_in_anon(self, cfg: &Config) -> Uaddrs {
        let anon: Vec<u8> = (0..cfg.user_pages())
            .filter(|&p| {
                cfg.vmas
                    .find(p)
                    .is_some_and(|v| v.kind == VmaKind::AnonPrivate)
            })
            .map(|p| p as u8)
            .collect();
        if anon.is_empty() {
            return self;
        }
        let [(m0, p0), (m1, _)] = self.pal;
        let x = anon[p0 as usize % anon.len()];
        let m1 = if m1 == m0 { (m0 + 1) % cfg.mms } else { m1 };
        let other = x ^ 1;
        let y = if PMD_PAGES > 1 && anon.contains(&other) {
            other
        } else {
            x
        };
        Uaddrs {
            pal: self.pal,
            meet: Some([(m0, x), (m1, x), (m0, y), (m1, y)]),
        }
    }

    fn get(&self, u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<(u8, u8)> {
        if let Some(meet) = self.meet {
            return Ok(meet[Self::meet_member(u)?]);
        }
        match u.int_in_range(0..=3u8)? {
            0 | 1 => Ok(self.pal[0]),
            2 => Ok(self.pal[1]),
            _ => Self::decode_one(u, cfg),
        }
    }

    /// An op's second address (mremap's destination): as [`Uaddrs::get`],
    /// but where the palette meets in one PMD range, its least drawn member
    /// gives way to the palette's own second address, which may lie
    /// anywhere, so that the op also reaches past the range. The same bytes
    /// as `get`, so that every other op decodes as before.
    fn get_second(&self, u: &mut Unstructured, cfg: &Config) -> arbitrary::Result<(u8, u8)> {
        match self.meet {
            Some(meet) => Ok(match Self::meet_member(u)? {
                3 => self.pal[1],
                i => meet[i],
            }),
            None => self.get(u, cfg),
        }
    }

    /// Which member of the meeting palette a draw takes: mostly the first.
    fn meet_member(u: &mut Unstructured) -> arbitrary::Result<usize> {
        Ok(match u.int_in_range(0..=7u8)? {
            0..=2 => 0,
            3 | 4 => 1,
            5 | 6 => 2,
            _ => 3,
        })
    }
}

/// Draws op fields by role from the input.
struct Drawer<'s, 'u, 'a> {
    u: &'s mut Unstructured<'a>,
    cfg: &'u Config,
    palette: &'u Palette,
    uaddrs: &'u Uaddrs,
    /// The page of the address whose process was just drawn: an op's
    /// process and page come from one palette address.
    page: Option<u8>,
}

impl Draw for Drawer<'_, '_, '_> {
    fn draw(&mut self, role: Role) -> arbitrary::Result<u32> {
        Ok(match role {
            Role::Index => self.u.int_in_range(0..=GEN_INDEXES - 1)? as u32,
            Role::Pfn => self.palette.pfn(self.u, self.cfg)?,
            Role::Mm => {
                let (mm, page) = self.uaddrs.get(self.u, self.cfg)?;
                self.page = Some(page);
                mm as u32
            }
            Role::Page => match self.page.take() {
                Some(p) => p as u32,
                None => self.uaddrs.get_second(self.u, self.cfg)?.1 as u32,
            },
            Role::Count => self.u.int_in_range(1..=3u8)? as u32,
            Role::Order => self.u.int_in_range(0..=1u8)? as u32,
            Role::Len => self.u.int_in_range(1..=PMD_PAGES as u8)? as u32,
            Role::Bit => self.u.int_in_range(0..=1u8)? as u32,
        })
    }
}

/// What one slot of a scenario can decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Op(OpKind),
    /// An idiom rather than one op, as a fuzzing dictionary holds tokens:
    /// a page-cache folio freed and its memory reused by hugetlb, the
    /// lifecycle every HVO race in the seeds turns on (seed 000: "removed
    /// from the page cache ... reallocated as a hugetlb tail").
    ReuseForHugetlb,
    /// `mprotect(PROT_READ)` and back to `PROT_READ | PROT_WRITE` of one
    /// range: how cow.c PTE-maps a THP ("temporarily mapping a single
    /// subpage R/O") and maps pages read-only for the next write to fault.
    MprotectReadOnlyAndBack,
}

/// The choices of an arm, simplest first: its op kinds in table order, then
/// its idioms.
struct Choices {
    items: [Choice; 48],
    len: usize,
}

impl Choices {
    fn of(arm: SubsystemSet, setup: bool) -> Choices {
        let mut c = Choices {
            items: [Choice::ReuseForHugetlb; 48],
            len: 0,
        };
        for k in OpKind::of(arm).filter(|k| !setup || k.builds_state()) {
            c.items[c.len] = Choice::Op(k);
            c.len += 1;
        }
        if !setup && arm.has(Subsystem::Hvo) {
            c.items[c.len] = Choice::ReuseForHugetlb;
            c.len += 1;
        }
        if arm.has(Subsystem::Thp) {
            c.items[c.len] = Choice::MprotectReadOnlyAndBack;
            c.len += 1;
        }
        c
    }

    fn get(&self) -> &[Choice] {
        &self.items[..self.len]
    }
}

/// The ops of one slot: one op, or two for an idiom.
fn decode_slot(d: &mut Drawer, choices: &Choices, ops: &mut Vec<Op>) -> arbitrary::Result<()> {
    let choices = choices.get();
    // A family with no op for this slot (no setup op among its kinds).
    if choices.is_empty() {
        return Ok(());
    }
    let choice = choices[d.u.int_in_range(0..=choices.len() - 1)?];
    d.page = None;
    match choice {
        Choice::Op(kind) => ops.push(kind.draw(d)?),
        Choice::ReuseForHugetlb => {
            let index = Index::from_raw(d.draw(Role::Index)?);
            ops.push(if d.u.arbitrary()? {
                Op::ShrinkFolio { index }
            } else {
                Op::TruncateInodeFolio { index }
            });
            ops.push(OpKind::AllocHugetlbFolio.draw(d)?);
        }
        Choice::MprotectReadOnlyAndBack => {
            if let Op::Mprotect { mm, addr, len, .. } = OpKind::Mprotect.draw(d)? {
                for write in [Bit(0), Bit(1)] {
                    ops.push(Op::Mprotect {
                        mm,
                        addr,
                        len,
                        write,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Decode a whole scenario. Never fails: missing bytes read as zero.
pub fn decode(u: &mut Unstructured, opts: &GenOptions) -> arbitrary::Result<Scenario> {
    decode_ops_then_schedule(u, opts, &mut 0)
}

/// More bytes than the ops of any scenario consume.
const OPS_BYTES_BOUND: usize = 1024;

/// Decode from a byte slice, also returning the bytes that decode its ops
/// (zero-padded if the input ran out in them): any schedule bytes appended
/// to those give the same ops in another interleaving.
pub fn decode_with_ops_prefix(bytes: &[u8], opts: &GenOptions) -> (Scenario, Vec<u8>) {
    // Padding makes the ops' length exact, and makes a missing byte a zero
    // everywhere (`arbitrary` reads a partly missing integer differently).
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len() + OPS_BYTES_BOUND, 0);
    let mut at = 0;
    let s = decode_ops_then_schedule(&mut Unstructured::new(&padded), opts, &mut at)
        .expect("the decoder reads missing bytes as zero");
    padded.truncate(at);
    (s, padded)
}

fn decode_ops_then_schedule(
    u: &mut Unstructured,
    opts: &GenOptions,
    schedule_offset: &mut usize,
) -> arbitrary::Result<Scenario> {
    let total = u.len();
    let nr_cpus = u.int_in_range(2..=opts.max_cpus.clamp(2, MAX_CPUS))?;
    let config = Config {
        memory_blocks: draw_in(u, opts.memory_blocks)?,
        hugetlb_order: draw_in(u, opts.hugetlb_order)?,
        vmas: draw_vmas(u, opts.config.vmas, opts.vma_growth)?,
        ..opts.config
    };
    let cfg = &config;
    let palette = Palette::decode(u, cfg)?;
    let uaddrs = Uaddrs::decode(u, cfg)?;
    // Always read the family byte, so inputs decode alike whatever the
    // option: 0 is every op kind, then each distinct arm.
    let arms = distinct_arms();
    let decoded = u.int_in_range(0..=arms.len() as u8)?;
    let arm = match opts.ops {
        OpFamily::Any if decoded == 0 => SubsystemSet::all(),
        OpFamily::Any => arms[decoded as usize - 1],
        OpFamily::Of(set) => set,
    };
    // The machine the arm's races need (PMD sharing: a hugetlb VMA). A
    // layout keeps the processes, pages and frames the palette was drawn
    // on, so the palette stays valid.
    let cfg = &arm.layout(*cfg);
    let uaddrs = if arm.has(Subsystem::Thp) {
        uaddrs.meet_in_anon(cfg)
    } else {
        uaddrs
    };
    let (setup_choices, choices) = (Choices::of(arm, true), Choices::of(arm, false));
    let mut d = Drawer {
        u,
        cfg,
        palette: &palette,
        uaddrs: &uaddrs,
        page: None,
    };
    let nr_setup = d.u.int_in_range(0..=opts.max_setup)?;
    let mut setup = Vec::new();
    for _ in 0..nr_setup {
        decode_slot(&mut d, &setup_choices, &mut setup)?;
    }
    let mut cpus = Vec::with_capacity(nr_cpus);
    for _ in 0..nr_cpus {
        let n = d.u.int_in_range(1..=opts.max_ops.max(1))?;
        let mut ops = Vec::new();
        for _ in 0..n {
            decode_slot(&mut d, &choices, &mut ops)?;
        }
        cpus.push(ops);
    }
    let u = d.u;
    // The schedule as runs: (CPU, how many decisions in a row). Short runs
    // are likelier, but one byte reaches a run of up to 59 decisions, so a
    // mutation can move a preemption deep into a long kernel path.
    *schedule_offset = total - u.len();
    let mut schedule = Vec::new();
    for _ in 0..u.int_in_range(0..=MAX_RUNS)? {
        let cpu = u.int_in_range(0..=nr_cpus as u8 - 1)?;
        let b = u.int_in_range(0..=255u8)?;
        schedule.extend(std::iter::repeat_n(cpu, run_length(b)));
    }
    let mut s = Scenario::new(*cfg, setup, cpus);
    s.schedule = schedule;
    Ok(s)
}

/// Schedule runs one input can carry.
const MAX_RUNS: u8 = 16;

/// The decisions a run byte stands for.
fn run_length(b: u8) -> usize {
    let b = b as usize;
    match b {
        0..=127 => 1 + b % 4,
        128..=191 => 5 + b % 8,
        192..=239 => 13 + b % 16,
        _ => 29 + (b - 240) * 2,
    }
}

/// The longest run one byte encodes exactly (every length up to it is
/// encodable; longer runs are split).
const MAX_EXACT_RUN: usize = 28;

/// A run byte for `len` decisions, `1..=MAX_EXACT_RUN`.
fn run_byte(len: usize) -> u8 {
    (match len {
        1..=4 => len - 1,
        5..=12 => 128 + len - 5,
        _ => 192 + len - 13,
    }) as u8
}

/// The schedule bytes that decode to `schedule` (the inverse of the
/// decoder's schedule part), so that a search can edit decisions and not
/// bytes. Runs beyond the decoder's limit are dropped: past its list the
/// input scheduler lets the running CPU continue.
pub fn encode_schedule(schedule: &[u8]) -> Vec<u8> {
    let mut runs = Vec::new();
    for run in schedule.chunk_by(|a, b| a == b) {
        for part in run.chunks(MAX_EXACT_RUN) {
            runs.push((part[0], run_byte(part.len())));
        }
    }
    runs.truncate(MAX_RUNS as usize);
    let mut bytes = vec![runs.len() as u8];
    for (cpu, len) in runs {
        bytes.extend([cpu, len]);
    }
    bytes
}

/// Decode from a byte slice (fuzz targets, the input engine). Missing
/// bytes read as zeros, exactly: a prefix of the input followed by zeros
/// decodes the same, even inside a multi-byte integer.
pub fn decode_bytes(bytes: &[u8], opts: &GenOptions) -> Scenario {
    decode_with_ops_prefix(bytes, opts).0
}

impl<'a> Arbitrary<'a> for Scenario {
    /// A scenario for the default (fixed) configuration.
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        decode(u, &GenOptions::default())
    }
}

/// The proptest strategy: byte vectors through the same decoder, so proptest
/// shrinks toward fewer and simpler ops and fewer preemptions.
pub fn scenario_strategy(opts: GenOptions) -> impl Strategy<Value = Scenario> {
    proptest::collection::vec(any::<u8>(), 0..384)
        .prop_map(move |bytes| decode_bytes(&bytes, &opts))
}

/// A scenario as structure, each part with bytes of its own for the one
/// decoder: a head (configuration, palettes, op family), each op's slot,
/// and the schedule. Dropping or simplifying one part leaves the others'
/// meaning alone, which a flat byte string cannot do.
#[derive(Debug, Clone)]
pub struct Structured {
    pub head: Vec<u8>,
    pub setup: Vec<Vec<u8>>,
    pub cpus: Vec<Vec<Vec<u8>>>,
    /// The CPU at each decision (taken modulo the CPUs).
    pub schedule: Vec<u8>,
}

/// Bytes one op slot may read: its kind, its fields, an idiom's two ops.
pub const SLOT_BYTES: usize = 24;
/// Bytes the head reads.
pub const HEAD_BYTES: usize = 40;

/// The ops each slot of a structured scenario decodes to (none, one, or
/// an idiom's two), under the configuration its head chose.
#[derive(Debug, Clone)]
pub struct SlotOps {
    pub config: Config,
    pub setup: Vec<Vec<Op>>,
    /// Per CPU, per slot (a CPU may have none).
    pub cpus: Vec<Vec<Vec<Op>>>,
}

/// Decode every slot of a structured scenario from its own bytes
/// (zero-padded), with the head's configuration and palettes.
pub fn decode_slots(st: &Structured, opts: &GenOptions) -> SlotOps {
    let nr_cpus = st.cpus.len().clamp(1, MAX_CPUS);
    let mut head = st.head.clone();
    head.resize(HEAD_BYTES, 0);
    let u = &mut Unstructured::new(&head);
    let config = Config {
        memory_blocks: draw_in(u, opts.memory_blocks).unwrap_or(opts.memory_blocks.0),
        hugetlb_order: draw_in(u, opts.hugetlb_order).unwrap_or(opts.hugetlb_order.0),
        vmas: draw_vmas(u, opts.config.vmas, opts.vma_growth).unwrap_or(opts.config.vmas),
        ..opts.config
    };
    let read = |u: &mut Unstructured| -> arbitrary::Result<(Palette, Uaddrs, SubsystemSet)> {
        let palette = Palette::decode(u, &config)?;
        let uaddrs = Uaddrs::decode(u, &config)?;
        let arms = distinct_arms();
        let decoded = u.int_in_range(0..=arms.len() as u8)?;
        let arm = match opts.ops {
            OpFamily::Any if decoded == 0 => SubsystemSet::all(),
            OpFamily::Any => arms[decoded as usize - 1],
            OpFamily::Of(set) => set,
        };
        Ok((palette, uaddrs, arm))
    };
    let (palette, uaddrs, arm) = read(u).expect("missing head bytes read as zero");
    // As `decode`: the machine the arm's races need.
    let config = arm.layout(config);
    let (setup_choices, choices) = (Choices::of(arm, true), Choices::of(arm, false));
    let slot = |bytes: &[u8], choices: &Choices| {
        let mut b = bytes.to_vec();
        b.resize(SLOT_BYTES, 0);
        let mut d = Drawer {
            u: &mut Unstructured::new(&b),
            cfg: &config,
            palette: &palette,
            uaddrs: &uaddrs,
            page: None,
        };
        let mut ops = Vec::new();
        decode_slot(&mut d, choices, &mut ops).expect("missing slot bytes read as zero");
        ops
    };
    SlotOps {
        config,
        setup: st
            .setup
            .iter()
            .take(opts.max_setup)
            .map(|b| slot(b, &setup_choices))
            .collect(),
        cpus: st
            .cpus
            .iter()
            .take(nr_cpus)
            .map(|slots| {
                slots
                    .iter()
                    .take(opts.max_ops.max(1))
                    .map(|b| slot(b, &choices))
                    .collect()
            })
            .collect(),
    }
}

/// Decode a structured scenario: the head as a scenario's start, then
/// every slot from its own bytes (zero-padded), with the head's palettes.
pub fn decode_structured(st: &Structured, opts: &GenOptions) -> Scenario {
    let slots = decode_slots(st, opts);
    let setup = slots.setup.concat();
    let mut cpus: Vec<Vec<Op>> = slots.cpus.iter().map(|c| c.concat()).collect();
    // A CPU shrunk to no ops is no CPU (one stays).
    if cpus.iter().any(|c| !c.is_empty()) {
        cpus.retain(|c| !c.is_empty());
    } else {
        cpus.truncate(1);
    }
    let nr_cpus = cpus.len().max(1);
    let mut s = Scenario::new(slots.config, setup, cpus);
    s.schedule = st.schedule.iter().map(|c| c % nr_cpus as u8).collect();
    s
}

/// proptest at the op level, in the style of proptest-state-machine's
/// transitions: a scenario is CPUs of op slots plus a schedule, and proptest
/// shrinks it by deleting whole CPUs, ops and pairs of ops, then
/// simplifying each op (an earlier kind, smaller fields: its slot's bytes
/// toward zero) and the schedule (fewer, lower choices). A failing case
/// comes out small without another minimizer pass. See
/// [`super::ops_strategy`].
pub fn scenario_ops_strategy(opts: GenOptions) -> impl Strategy<Value = Scenario> {
    super::ops_strategy::OpsStrategy { opts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

    /// VMA growth draws valid layouts of several sizes and orders (the
    /// anonymous VMA at page 0, PMD sharing over two PUD ranges among
    /// them); without it, the configuration's layout.
    #[test]
    fn vma_growth_varies_the_layout_and_keeps_it_valid() {
        use crate::model::config::PUD_PAGES;
        let grown = GenOptions {
            vma_growth: PMD_PAGES as u8,
            ..GenOptions::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        let (mut ends, mut two_puds) = (std::collections::BTreeSet::new(), false);
        let mut anon_first = false;
        for _ in 0..2000 {
            let mut bytes = vec![0; rng.gen_range(8..200usize)];
            rng.fill_bytes(&mut bytes);
            let fixed = decode_bytes(&bytes, &GenOptions::default()).config.vmas;
            assert!(fixed == Vmas::default() || fixed.specs()[0].kind == VmaKind::HugetlbShared);
            let s = decode_bytes(&bytes, &grown);
            s.config.validate().expect("a grown layout is valid");
            ends.insert(s.config.vmas.end());
            anon_first |= s.config.vmas.specs()[0].kind == VmaKind::AnonPrivate;
            two_puds |= s
                .config
                .vmas
                .slots()
                .any(|v| v.kind == VmaKind::HugetlbShared && v.pages > PUD_PAGES);
        }
        assert!(ends.len() >= 4, "user pages end at only {ends:?}");
        assert!(two_puds, "no hugetlb VMA over two PUD ranges");
        assert!(anon_first, "no layout with the anonymous VMA at page 0");
    }

    /// Ops bytes followed by an encoded schedule decode to that schedule.
    #[test]
    fn encode_schedule_inverts_the_decoder() {
        let opts = GenOptions {
            max_cpus: 3,
            ..GenOptions::default()
        };
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..500 {
            let mut bytes = vec![0; rng.gen_range(8..200usize)];
            rng.fill_bytes(&mut bytes);
            let (s, prefix) = decode_with_ops_prefix(&bytes, &opts);
            assert_eq!(s, decode_bytes(&bytes, &opts));
            let nr = s.cpus.len() as u8;
            let want: Vec<u8> = (0..rng.gen_range(0..70))
                .map(|_| {
                    if rng.gen_ratio(1, 4) {
                        rng.gen_range(0..nr)
                    } else {
                        0
                    }
                })
                .collect();
            let mut edited = prefix;
            edited.extend(encode_schedule(&want));
            let t = decode_bytes(&edited, &opts);
            assert_eq!((&t.setup, &t.cpus), (&s.setup, &s.cpus));
            let runs = want
                .chunk_by(|a, b| a == b)
                .map(|r| r.len().div_ceil(MAX_EXACT_RUN))
                .sum::<usize>();
            if runs <= MAX_RUNS as usize {
                assert_eq!(t.schedule, want);
            } else {
                assert!(want.starts_with(&t.schedule));
            }
        }
    }
}
