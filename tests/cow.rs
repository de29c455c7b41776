//! The kernel's own copy-on-write matrix, tools/testing/selftests/mm/cow.c
//! (David Hildenbrand, 2022), ported: each anonymous-memory test on each
//! memory kind the model can express, as a scenario built from ops and run
//! through the harness. A cow.c test passes when its comparisons hold; here
//! those comparisons are the model's oracles (process isolation at every
//! load and every read through a GUP reference or pin, pin coherence,
//! mapcounts), so a test passes when the run is clean, and it must have
//! made every load and read it meant to (no vacuous pass).
//!
//! On v5.19+ every case passes, as on the kernel (cow.c's only expected
//! failures are hugetlb vmsplice cases, not expressible here). On the older
//! write-fault designs the failures are what the model shows; the table
//! below asserts them, and `the_matrix_per_design` prints it.
//!
//! One process layout serves every case: the THP at pages 0-1 (one PMD
//! range), and a second anonymous VMA at pages 2-3 for mremap to move half
//! of it to.
//!
//! ```text
//! page   0     1     2     3
//!        | anon: THP | anon      |
//!        parent = mm0, child = mm1
//! ```
//!
//! Not expressible: the swapped-out kinds (no swap in the model), hugetlb
//! (private hugetlb mappings are not modelled), the anonymous THP collapse
//! tests (the model's khugepaged collapses small pages only, not a
//! PTE-mapped THP in place), and the non-anonymous tests (no shared
//! zeropage, memfd or private file mappings).

use mmharness::exec::{Verdict, run_input};
use mmharness::model::config::{VmaKind, VmaSpec, Vmas};
use mmharness::model::op::{Bit, Len, MmArg, PageArg, PfnArg};
use mmharness::model::{Config, CowDesign, Oracle};
use mmharness::scenario::{Op, Scenario};
use mmharness::ui::render;

const P: u8 = 0;
const C: u8 = 1;

fn config(cow: CowDesign) -> Config {
    let anon = |pages| VmaSpec {
        kind: VmaKind::AnonPrivate,
        pages,
    };
    Config {
        vmas: Vmas::new(&[anon(2), anon(2)]).expect("the layout fits"),
        cow,
        ..Config::default()
    }
}

fn store(mm: u8, page: u8) -> Op {
    Op::UserStore {
        mm: MmArg(mm),
        addr: PageArg(page),
    }
}

fn load(mm: u8, page: u8) -> Op {
    Op::UserLoad {
        mm: MmArg(mm),
        addr: PageArg(page),
    }
}

fn mprotect(page: u8, len: u8, write: bool) -> Op {
    Op::Mprotect {
        mm: MmArg(P),
        addr: PageArg(page),
        len: Len(len),
        write: Bit(write as u8),
    }
}

fn fork() -> Op {
    Op::DupMmap {
        mm: MmArg(P),
        child: MmArg(C),
    }
}

fn munmap(mm: u8, page: u8, len: u8) -> Op {
    Op::VmMunmap {
        mm: MmArg(mm),
        addr: PageArg(page),
        len: Len(len),
    }
}

/// `vmsplice()` of a page: a read-only `get_user_pages_fast` reference.
fn vmsplice(mm: u8, page: u8) -> Op {
    Op::GetUserPagesFast {
        mm: MmArg(mm),
        addr: PageArg(page),
    }
}

/// A long-term pin: `FOLL_WRITE` (io_uring fixed buffers) or read-only
/// (`PIN_LONGTERM_TEST_START`), fast or slow.
fn pin(page: u8, write: bool, fast: bool) -> Op {
    let (mm, addr, foll_write) = (MmArg(P), PageArg(page), Bit(write as u8));
    if fast {
        Op::PinUserPagesFast {
            mm,
            addr,
            foll_write,
        }
    } else {
        Op::PinUserPages {
            mm,
            addr,
            foll_write,
        }
    }
}

/// The memory kinds of `do_run_with_base_page` / `do_run_with_thp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BasePage,
    Thp,
    PteMappedThp,
    SinglePte,
    PartialMremap,
    PartialShared,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::BasePage,
        Kind::Thp,
        Kind::PteMappedThp,
        Kind::SinglePte,
        Kind::PartialMremap,
        Kind::PartialShared,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::BasePage => "base page",
            Kind::Thp => "THP",
            Kind::PteMappedThp => "PTE-mapped THP",
            Kind::SinglePte => "single PTE of THP",
            Kind::PartialMremap => "partially mremap()'ed THP",
            Kind::PartialShared => "partially shared THP",
        }
    }

    /// The ops that populate the memory as cow.c does, and the pages the
    /// test then runs on.
    fn populate(self) -> (Vec<Op>, Vec<u8>) {
        if self == Kind::BasePage {
            // MADV_NOHUGEPAGE; memset(mem, 1, pagesize).
            return (vec![store(P, 0)], vec![0]);
        }
        // MADV_HUGEPAGE; memset(mem, 1, thpsize).
        let mut ops = vec![
            Op::DoHugePmdAnonymousPage {
                mm: MmArg(P),
                addr: PageArg(0),
                pfn_hint: PfnArg(512),
            },
            store(P, 0),
            store(P, 1),
        ];
        let pages = match self {
            Kind::BasePage => unreachable!(),
            Kind::Thp => vec![0, 1],
            Kind::PteMappedThp => {
                // "temporarily mapping a single subpage R/O".
                ops.extend([mprotect(1, 1, false), mprotect(1, 1, true)]);
                vec![0, 1]
            }
            Kind::SinglePte => {
                ops.push(Op::MadviseDontneedFree {
                    mm: MmArg(P),
                    addr: PageArg(1),
                    len: Len(1),
                });
                vec![0]
            }
            Kind::PartialMremap => {
                ops.push(Op::Mremap {
                    mm: MmArg(P),
                    addr: PageArg(1),
                    len: Len(1),
                    new_addr: PageArg(2),
                });
                vec![0]
            }
            Kind::PartialShared => {
                let dontfork = |dofork| Op::MadviseUpdateVma {
                    mm: MmArg(P),
                    addr: PageArg(1),
                    len: Len(1),
                    dofork: Bit(dofork),
                };
                ops.extend([
                    dontfork(0),
                    fork(),
                    Op::ExitMmap { mm: MmArg(C) },
                    dontfork(1),
                ]);
                vec![0, 1]
            }
        };
        (ops, pages)
    }
}

/// Read back through every GUP hold, latest first, dropping each.
fn read_holds(n: usize) -> Vec<Op> {
    (0..n)
        .flat_map(|_| [Op::MemcpyFromPage {}, Op::UnpinUserPage {}])
        .collect()
}

/// The anonymous test cases of cow.c, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    CowInParent { mprotect: bool },
    VmspliceInChild { mprotect: bool },
    VmspliceBeforeFork,
    VmspliceAfterFork,
    IouringRo,
    IouringFork,
    RoPinOnShared { fast: bool },
    RoPinOnPreviouslyShared { fast: bool },
    RoPinOnRoExclusive { fast: bool },
}

impl Test {
    const ALL: [Test; 14] = [
        Test::CowInParent { mprotect: false },
        Test::CowInParent { mprotect: true },
        Test::VmspliceInChild { mprotect: false },
        Test::VmspliceInChild { mprotect: true },
        Test::VmspliceBeforeFork,
        Test::VmspliceAfterFork,
        Test::IouringRo,
        Test::IouringFork,
        Test::RoPinOnShared { fast: false },
        Test::RoPinOnShared { fast: true },
        Test::RoPinOnPreviouslyShared { fast: false },
        Test::RoPinOnPreviouslyShared { fast: true },
        Test::RoPinOnRoExclusive { fast: false },
        Test::RoPinOnRoExclusive { fast: true },
    ];

    fn name(self) -> &'static str {
        match self {
            Test::CowInParent { mprotect: false } => "Basic COW after fork()",
            Test::CowInParent { mprotect: true } => {
                "Basic COW after fork() with mprotect() optimization"
            }
            Test::VmspliceInChild { mprotect: false } => "vmsplice() + unmap in child",
            Test::VmspliceInChild { mprotect: true } => {
                "vmsplice() + unmap in child with mprotect() optimization"
            }
            Test::VmspliceBeforeFork => "vmsplice() before fork(), unmap in parent after fork()",
            Test::VmspliceAfterFork => "vmsplice() + unmap in parent after fork()",
            Test::IouringRo => "R/O-mapping a page registered as iouring fixed buffer",
            Test::IouringFork => "fork() with an iouring fixed buffer",
            Test::RoPinOnShared { fast: false } => "R/O GUP pin on R/O-mapped shared page",
            Test::RoPinOnShared { fast: true } => "R/O GUP-fast pin on R/O-mapped shared page",
            Test::RoPinOnPreviouslyShared { fast: false } => {
                "R/O GUP pin on R/O-mapped previously-shared page"
            }
            Test::RoPinOnPreviouslyShared { fast: true } => {
                "R/O GUP-fast pin on R/O-mapped previously-shared page"
            }
            Test::RoPinOnRoExclusive { fast: false } => "R/O GUP pin on R/O-mapped exclusive page",
            Test::RoPinOnRoExclusive { fast: true } => {
                "R/O GUP-fast pin on R/O-mapped exclusive page"
            }
        }
    }

    /// The test's ops on `pages` of the parent's memory.
    fn body(self, pages: &[u8]) -> Vec<Op> {
        let (first, len) = (pages[0], pages.len() as u8);
        let each = |f: &dyn Fn(u8) -> Op| pages.iter().map(|&p| f(p)).collect::<Vec<Op>>();
        let modify_in_parent = |mprotect_first: bool| {
            let mut ops = Vec::new();
            if mprotect_first {
                ops.extend([mprotect(first, len, false), mprotect(first, len, true)]);
            }
            ops.extend(each(&|p| store(P, p)));
            ops
        };
        let mut ops = Vec::new();
        match self {
            Test::CowInParent { mprotect } => {
                // The child backs the content up, the parent modifies it,
                // the child reads it again.
                ops.push(fork());
                ops.extend(each(&|p| load(C, p)));
                ops.extend(modify_in_parent(mprotect));
                ops.extend(each(&|p| load(C, p)));
            }
            Test::VmspliceInChild { mprotect } => {
                ops.push(fork());
                ops.extend(each(&|p| vmsplice(C, p)));
                ops.push(munmap(C, first, len));
                ops.extend(modify_in_parent(mprotect));
                ops.extend(read_holds(pages.len()));
            }
            Test::VmspliceBeforeFork | Test::VmspliceAfterFork => {
                if self == Test::VmspliceBeforeFork {
                    ops.extend(each(&|p| vmsplice(P, p)));
                    ops.push(fork());
                } else {
                    ops.push(fork());
                    ops.extend(each(&|p| vmsplice(P, p)));
                }
                ops.push(munmap(P, first, len));
                ops.extend(each(&|p| store(C, p)));
                ops.extend(read_holds(pages.len()));
            }
            Test::IouringRo | Test::IouringFork => {
                // io_uring_register_buffers: FOLL_WRITE | FOLL_PIN |
                // FOLL_LONGTERM, through pin_user_pages_fast.
                ops.extend(each(&|p| pin(p, true, true)));
                if self == Test::IouringRo {
                    ops.extend([mprotect(first, len, false), mprotect(first, len, true)]);
                } else {
                    ops.push(fork());
                }
                ops.extend(each(&|p| store(P, p)));
                ops.extend(read_holds(pages.len()));
            }
            Test::RoPinOnShared { fast }
            | Test::RoPinOnPreviouslyShared { fast }
            | Test::RoPinOnRoExclusive { fast } => {
                match self {
                    Test::RoPinOnShared { .. } => ops.push(fork()),
                    Test::RoPinOnPreviouslyShared { .. } => {
                        ops.extend([fork(), Op::ExitMmap { mm: MmArg(C) }])
                    }
                    _ => ops.extend([mprotect(first, len, false), mprotect(first, len, true)]),
                }
                ops.extend(each(&|p| pin(p, false, fast)));
                ops.extend(each(&|p| store(P, p)));
                ops.extend(read_holds(pages.len()));
            }
        }
        ops
    }
}

/// A case's scenario: the kind populated in setup, the test on CPU 0.
fn scenario(test: Test, kind: Kind, cow: CowDesign) -> Scenario {
    let (setup, pages) = kind.populate();
    let s = Scenario::new(config(cow), setup, vec![test.body(&pages)]);
    s.validate().expect("a valid cow.c scenario");
    s
}

/// How a case ran: `None` passed, else the oracle that failed.
fn run(test: Test, kind: Kind, cow: CowDesign) -> Option<Oracle> {
    let s = scenario(test, kind, cow);
    let o = run_input(&s, true);
    match &o.verdict {
        Verdict::Clean => {
            assert_not_vacuous(&s, &o.trace, test, kind);
            None
        }
        Verdict::Violation(d) => Some(d.violation.oracle),
        Verdict::ModelPanic(p) => panic!("{} on {}: model panic: {p}", test.name(), kind.name()),
    }
}

/// A clean run made every check it meant to: each load read data, each
/// GUP op got its page, each read through a hold read data.
fn assert_not_vacuous(
    s: &Scenario,
    trace: &[mmharness::model::ctx::TraceEvent],
    test: Test,
    kind: Kind,
) {
    let ops = &s.cpus[0];
    let want = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    let got = |f: &dyn Fn(&mmharness::model::ctx::TraceEvent) -> bool| {
        trace.iter().filter(|e| e.cpu == Some(0) && f(e)).count()
    };
    let case = format!("{} on {}", test.name(), kind.name());
    assert_eq!(
        got(&|e| e.func == "user_load" && e.text.contains(": load Data(")),
        want(|o| matches!(o, Op::UserLoad { .. })),
        "{case}: every load reads"
    );
    assert_eq!(
        got(&|e| e.func == "memcpy_from_page" && e.text.starts_with("read Data(")),
        want(|o| matches!(o, Op::MemcpyFromPage { .. })),
        "{case}: every read through a hold reads"
    );
    assert_eq!(
        got(&|e| e.text.contains("grabbed pfn") || e.text.contains("recheck passed: keep")),
        want(|o| {
            matches!(
                o,
                Op::GetUserPagesFast { .. } | Op::PinUserPagesFast { .. } | Op::PinUserPages { .. }
            )
        }),
        "{case}: every GUP op holds its page"
    );
}

/// What each older design fails, as the model shows it (v5.19+ fails
/// nothing). Why:
///
/// - v4.5 copies every PTE-mapped THP subpage on a write fault, and a
///   PMD-mapped THP whose refcount a pin raised (`page_count != 1`): a
///   long-term pin no longer maps the process's page once a write fault
///   follows the pin (io_uring's R/O-mapped buffer, the R/O pins of an
///   exclusive page). On a previously shared PMD-mapped THP the unshare
///   fault reuses it (refcount 1 then) and the pin breaks at the write; on
///   the other kinds the unshare copies the subpage first and the pin lands
///   on a small page. The pins of shared pages are unshared into copies,
///   and fork copies a pinned page: those pass.
/// - The 2016 fix reuses at `page_trans_huge_mapcount() == 1`, which
///   ignores GUP references: a THP the other process vmsplice()d is reused
///   by the writer, and the reader sees its data. A partially mremap()'ed
///   THP passes: its moved half is still mapped twice.
fn expected(test: Test, kind: Kind, cow: CowDesign) -> Option<Oracle> {
    use Kind::*;
    use Test::*;
    let thp = kind != BasePage;
    match cow {
        CowDesign::V5_19 => None,
        CowDesign::V4_5 => match test {
            IouringRo | RoPinOnRoExclusive { .. } if thp => Some(Oracle::PinCoherence),
            RoPinOnPreviouslyShared { .. } if kind == Thp => Some(Oracle::PinCoherence),
            _ => None,
        },
        CowDesign::Fix2016 => match test {
            VmspliceInChild { .. } | VmspliceBeforeFork | VmspliceAfterFork
                if thp && kind != PartialMremap =>
            {
                Some(Oracle::Isolation)
            }
            _ => None,
        },
    }
}

#[test]
fn the_matrix_passes_on_v5_19() {
    for test in Test::ALL {
        for kind in Kind::ALL {
            let got = run(test, kind, CowDesign::V5_19);
            assert_eq!(got, None, "{} on {}", test.name(), kind.name());
        }
    }
}

#[test]
fn the_matrix_per_design() {
    let mut table = String::new();
    let mut wrong = Vec::new();
    for test in Test::ALL {
        for kind in Kind::ALL {
            table.push_str(&format!("{:58} {:27}", test.name(), kind.name()));
            for cow in CowDesign::ALL {
                let got = run(test, kind, cow);
                table.push_str(&format!(
                    " {:>26}",
                    got.map_or("pass".into(), |o| o.name().to_string())
                ));
                if got != expected(test, kind, cow) {
                    wrong.push(format!(
                        "{} on {} under {}: got {got:?}, expected {:?}",
                        test.name(),
                        kind.name(),
                        cow.name(),
                        expected(test, kind, cow)
                    ));
                }
            }
            table.push('\n');
        }
    }
    eprintln!(
        "{:58} {:27} {:>26} {:>26} {:>26}\n{table}",
        "cow.c test", "memory", "v4.5", "2016-fix", "v5.19"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The matrix's failures are the designs' own: each replays, and the
/// same case passes on v5.19.
#[test]
fn an_older_design_failure_replays_and_is_clean_on_v5_19() {
    let s = scenario(Test::IouringRo, Kind::PteMappedThp, CowDesign::V4_5);
    let o = run_input(&s, false);
    assert_eq!(
        o.oracle(),
        Some(Oracle::PinCoherence),
        "{}",
        render::verdict(&o)
    );
    assert_eq!(run_input(&s, false).verdict, o.verdict);
    let fixed = scenario(Test::IouringRo, Kind::PteMappedThp, CowDesign::V5_19);
    assert_eq!(run_input(&fixed, false).verdict, Verdict::Clean);
}
