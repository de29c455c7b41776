//! What the oracles remember about an execution, apart from kernel state:
//! who froze which folio, which folios migration replaced, the values
//! written to user memory and what each process and GUP holder should read
//! back, and which page each user mapping maps.

use super::config::{MAX_MMS, MAX_USER_PAGES};
use super::ctx::CpuId;
use super::machine::Pfn;
use super::pgtable::Uaddr;

/// A folio frozen by `page_ref_freeze`, and the CPU that froze it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    pub folio: Pfn,
    pub cpu: u8,
}

/// A folio whose contents migration (or khugepaged) moved to another folio:
/// from then on, a write to `src` is lost. Dropped when `src` is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub src: Pfn,
    pub dst: Pfn,
    pub cpu: u8,
}

/// A process as the oracles know it (slots are reused: fork into a slot
/// and exit make a new one): its parent, and the write sequence number at
/// which fork completed. Values the parent wrote before then are the
/// child's too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub parent: Option<u8>,
    pub forked_at: u64,
}

/// A GUP reference or pin a CPU holds, as the oracles follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRec {
    pub id: u32,
    /// The process that took it.
    pub pid: u8,
    /// Where it was taken, while that process still maps the range there
    /// (mremap moves it along; unmapping or exit detaches it).
    pub at: Option<Uaddr>,
    pub page: Pfn,
    /// `FOLL_PIN` (else `FOLL_GET`).
    pub pin: bool,
    /// `FOLL_WRITE`.
    pub write: bool,
    /// Taken on anonymous memory, whose data the oracles follow (a shared
    /// file page is every process's).
    pub anon: bool,
    /// What a read through it should see once detached.
    pub frozen: u64,
}

/// A present user mapping, as the page-table stores made it: a PTE mapping
/// page `pfn` at `a`, or a PMD leaf mapping the folio headed by `pfn` from
/// `a` (the PMD range's first page) on. PTEs in a table that khugepaged
/// detached still count: their mapcounts do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    pub a: Uaddr,
    pub pfn: Pfn,
    pub leaf: bool,
    /// Mapped writable.
    pub write: bool,
}

/// A fork in progress: which of the child's pages share the parent's page
/// (their view is the parent's at the end of fork: a parent's store through
/// a stale TLB entry before `flush_tlb_mm` lands on the shared page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forking {
    pub parent: u8,
    pub child: u8,
    pub shared: u32,
}

const VIEWS: usize = MAX_MMS as usize * MAX_USER_PAGES as usize;

#[derive(Debug)]
pub struct Ledger {
    /// Folios frozen at refcount 0, for the freeze oracle.
    pub frozen: Vec<Frozen>,
    /// Folios whose contents moved elsewhere, until they are freed.
    pub migrated: Vec<Migrated>,
    /// Values written to user memory are `write_seq`, counting up, so that
    /// each write is told apart from every other; 0 is a zero-filled page.
    pub write_seq: u64,
    /// Writes made through a GUP reference or pin.
    pub pin_writes: u32,
    /// Page-table pages freed back to the buddy allocator.
    pub tables_freed: u32,
    /// What a load by each process from each of its anonymous pages should
    /// return, by slot and page.
    pub views: [u64; VIEWS],
    /// The process in each slot.
    pub pid: [u8; MAX_MMS as usize],
    pub procs: Vec<Proc>,
    /// The process that wrote value `v`, at `v - 1`.
    pub writers: Vec<u8>,
    /// Every GUP reference and pin held.
    pub holds: Vec<HoldRec>,
    pub next_hold: u32,
    /// Every present user mapping.
    pub maps: Vec<MapEntry>,
    /// Mappings whose PTE `try_to_migrate_one` cleared under the PTE lock
    /// it still holds: it restores the PTE or stores a migration entry
    /// before unlocking, and until then the mapping keeps its mapcount and
    /// reference, so the oracles count it.
    pub cleared: Vec<MapEntry>,
    /// Folios whose mappings, pins or exclusivity the running step changed,
    /// for the per-step checks.
    pub touched: Vec<Pfn>,
    pub forking: Vec<Forking>,
    /// Forks completed.
    pub forks: u32,
    /// A THP was split into PTE mappings.
    pub thp_pte_mapped: bool,
    /// fork shared an anonymous page with the child.
    pub fork_shared_anon: bool,
    /// A pin's page was written through it after a fork.
    pub pin_write_after_fork: bool,
    /// A read-only pin made GUP unshare a page (FAULT_FLAG_UNSHARE).
    pub unshared: bool,
    /// A scenario CPU's `free_hpage_workfn` freed a queued folio (not the
    /// flush at the end of an execution).
    pub hpage_work_freed: bool,
    /// `dissolve_free_hugetlb_folio` took a folio out of the pool.
    pub dissolved: bool,
    /// Folios compaction isolated (`compact_pfn`).
    pub compaction_isolated: Vec<Pfn>,
    /// Unshares under way: (process, PMD table) whose PUD entry is cleared
    /// but whose share is not dropped yet. The table is still that
    /// process's for its walkers, and its share count counts it.
    pub unsharing: Vec<(u8, Pfn)>,
    /// PMD tables whose PUD references or share count the running step
    /// changed, for the per-step share-count check.
    pub pmd_tables_touched: Vec<Pfn>,
    /// The running step released `hugetlb_lock`: the pool's counters and
    /// lists are consistent again, for the per-step counter check.
    pub hugetlb_changed: bool,
    /// Lockless walks between their PUD load and their next load: (CPU,
    /// process, the PMD table read).
    pub walks: Vec<(u8, u8, Pfn)>,
    /// PMD tables that have been shared, until they are freed.
    pub shared: Vec<Pfn>,
    /// Shares taken (`huge_pmd_share` populated a PUD with a sibling's
    /// table).
    pub pmd_shares: u32,
    /// Unshares of a table a walker of that process was between its PUD
    /// and its PMD load on.
    pub walks_across_unshare: u32,
    /// Freed PMD tables that had been shared.
    pub shared_tables_freed: u32,
    /// Locked folios and the CPU that holds each lock.
    pub folio_locks: Vec<(Pfn, CpuId)>,
}

crate::clone_by_field!(Ledger {
    frozen,
    migrated,
    write_seq,
    pin_writes,
    tables_freed,
    views,
    pid,
    procs,
    writers,
    holds,
    next_hold,
    maps,
    cleared,
    touched,
    forking,
    forks,
    thp_pte_mapped,
    fork_shared_anon,
    pin_write_after_fork,
    unshared,
    hpage_work_freed,
    dissolved,
    compaction_isolated,
    unsharing,
    pmd_tables_touched,
    hugetlb_changed,
    walks,
    shared,
    pmd_shares,
    walks_across_unshare,
    shared_tables_freed,
    folio_locks
});

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            frozen: Vec::new(),
            migrated: Vec::new(),
            write_seq: 0,
            pin_writes: 0,
            tables_freed: 0,
            views: [0; VIEWS],
            pid: std::array::from_fn(|i| i as u8),
            procs: vec![
                Proc {
                    parent: None,
                    forked_at: 0,
                };
                MAX_MMS as usize
            ],
            writers: Vec::new(),
            holds: Vec::new(),
            next_hold: 0,
            maps: Vec::new(),
            cleared: Vec::new(),
            touched: Vec::new(),
            forking: Vec::new(),
            forks: 0,
            thp_pte_mapped: false,
            fork_shared_anon: false,
            pin_write_after_fork: false,
            unshared: false,
            hpage_work_freed: false,
            dissolved: false,
            compaction_isolated: Vec::new(),
            unsharing: Vec::new(),
            pmd_tables_touched: Vec::new(),
            hugetlb_changed: false,
            walks: Vec::new(),
            shared: Vec::new(),
            pmd_shares: 0,
            walks_across_unshare: 0,
            shared_tables_freed: 0,
            folio_locks: Vec::new(),
        }
    }
}

fn view_index(a: Uaddr) -> usize {
    a.mm as usize * MAX_USER_PAGES as usize + a.page as usize
}

impl Ledger {
    pub fn freeze(&mut self, folio: Pfn, cpu: u8) {
        if !self.is_frozen(folio) {
            self.frozen.push(Frozen { folio, cpu });
        }
    }

    pub fn unfreeze(&mut self, folio: Pfn) {
        self.frozen.retain(|f| f.folio != folio);
    }

    pub fn is_frozen(&self, folio: Pfn) -> bool {
        self.frozen.iter().any(|f| f.folio == folio)
    }

    /// A folio went back to the buddy allocator: forget it.
    pub fn forget(&mut self, folio: Pfn) {
        self.unfreeze(folio);
        self.migrated.retain(|x| x.src != folio);
    }

    pub fn touch_pmd_table(&mut self, table: Pfn) {
        if !self.pmd_tables_touched.contains(&table) {
            self.pmd_tables_touched.push(table);
        }
    }

    /// A share of `table` was taken.
    pub fn shared_table(&mut self, table: Pfn) {
        self.pmd_shares += 1;
        if !self.shared.contains(&table) {
            self.shared.push(table);
        }
    }

    /// `table` is freed: was it ever shared?
    pub fn forget_shared(&mut self, table: Pfn) -> bool {
        let was = self.shared.contains(&table);
        self.shared.retain(|&t| t != table);
        was
    }

    pub fn walk_started(&mut self, cpu: u8, mm: u8, table: Pfn) {
        self.walk_done(cpu);
        self.walks.push((cpu, mm, table));
    }

    pub fn walk_done(&mut self, cpu: u8) {
        self.walks.retain(|w| w.0 != cpu);
    }

    /// CPU `cpu` starts unsharing `table` from process `mm` (its PUD entry
    /// is cleared).
    pub fn unshare_begins(&mut self, cpu: u8, mm: u8, table: Pfn) {
        self.unsharing.push((mm, table));
        if self
            .walks
            .iter()
            .any(|&(c, wm, t)| c != cpu && wm == mm && t == table)
        {
            self.walks_across_unshare += 1;
        }
        self.touch_pmd_table(table);
    }

    /// The share is dropped.
    pub fn unshare_done(&mut self, mm: u8, table: Pfn) {
        self.unsharing.retain(|&x| x != (mm, table));
        self.touch_pmd_table(table);
    }

    /// A fresh value for process `pid` to write.
    pub fn write_value(&mut self, pid: u8) -> u64 {
        self.write_seq += 1;
        self.writers.push(pid);
        self.write_seq
    }

    /// The process that wrote `v`; `None` for a zero-filled page.
    pub fn writer(&self, v: u64) -> Option<u8> {
        v.checked_sub(1).map(|i| self.writers[i as usize])
    }

    /// May process `reader` legitimately see value `v`: zero, written by
    /// itself, or by an ancestor before the fork that made its line?
    pub fn in_lineage(&self, v: u64, reader: u8) -> bool {
        let Some(w) = self.writer(v) else {
            return true;
        };
        let (mut cur, mut cutoff) = (reader, u64::MAX);
        loop {
            if cur == w && v <= cutoff {
                return true;
            }
            let p = self.procs[cur as usize];
            match p.parent {
                Some(parent) => {
                    cutoff = cutoff.min(p.forked_at);
                    cur = parent;
                }
                None => return false,
            }
        }
    }

    pub fn view(&self, a: Uaddr) -> u64 {
        self.views[view_index(a)]
    }

    pub fn set_view(&mut self, a: Uaddr, v: u64) {
        self.views[view_index(a)] = v;
    }

    /// The process in slot `mm`.
    pub fn pid_of(&self, mm: u8) -> u8 {
        self.pid[mm as usize]
    }

    /// A new process in slot `mm`: forked from `parent`'s process (fork
    /// completes later), or exec'd afresh.
    pub fn new_process(&mut self, mm: u8, parent: Option<u8>) {
        let pid = self.procs.len() as u8;
        self.procs.push(Proc {
            parent: parent.map(|p| self.pid[p as usize]),
            forked_at: u64::MAX,
        });
        self.pid[mm as usize] = pid;
    }

    /// Record a GUP hold taken by process `a.mm` at `a`; `mapped`: `a`
    /// still maps the page (else GUP returned a page the process no longer
    /// maps, and the hold starts detached). Returns its id.
    pub fn hold_taken(
        &mut self,
        a: Uaddr,
        page: Pfn,
        pin: bool,
        write: bool,
        anon: bool,
        mapped: bool,
    ) -> u32 {
        let id = self.next_hold;
        self.next_hold += 1;
        self.holds.push(HoldRec {
            id,
            pid: self.pid_of(a.mm),
            at: mapped.then_some(a),
            page,
            pin,
            write,
            anon,
            frozen: self.view(a),
        });
        id
    }

    pub fn hold(&self, id: u32) -> Option<&HoldRec> {
        self.holds.iter().find(|h| h.id == id)
    }

    pub fn hold_dropped(&mut self, id: u32) {
        self.holds.retain(|h| h.id != id);
    }

    /// What a read through hold `h` should see.
    pub fn hold_view(&self, h: &HoldRec) -> u64 {
        match h.at {
            Some(a) => self.view(a),
            None => h.frozen,
        }
    }

    /// The process dropped page `a` (MADV_DONTNEED, munmap, exit): holds
    /// taken there keep what they saw, and a later fault reads zeroes.
    pub fn dropped(&mut self, a: Uaddr) {
        let v = self.view(a);
        for h in self.holds.iter_mut().filter(|h| h.at == Some(a)) {
            h.frozen = v;
            h.at = None;
        }
        self.set_view(a, 0);
    }

    /// mremap moved page `from` of a process to `to`, and its holds along.
    pub fn moved(&mut self, from: Uaddr, to: Uaddr) {
        let v = self.view(from);
        self.dropped(to);
        self.set_view(to, v);
        for h in self.holds.iter_mut().filter(|h| h.at == Some(from)) {
            h.at = Some(to);
        }
        self.set_view(from, 0);
    }

    /// fork copied (or shared) the parent's page `page` into the child.
    pub fn fork_copied(&mut self, parent: u8, child: u8, page: u32, shared: bool) {
        let v = self.view(Uaddr { mm: parent, page });
        self.set_view(Uaddr { mm: child, page }, v);
        if let Some(f) = self
            .forking
            .iter_mut()
            .find(|f| f.parent == parent && f.child == child)
        {
            if shared {
                f.shared |= 1 << page;
            } else {
                f.shared &= !(1 << page);
            }
        }
    }

    /// fork of `parent` into `child` completed.
    pub fn fork_done(&mut self, parent: u8, child: u8) {
        let Some(i) = self
            .forking
            .iter()
            .position(|f| f.parent == parent && f.child == child)
        else {
            return;
        };
        let f = self.forking.remove(i);
        for page in (0..MAX_USER_PAGES).filter(|p| f.shared & (1 << p) != 0) {
            let v = self.view(Uaddr { mm: parent, page });
            self.set_view(Uaddr { mm: child, page }, v);
        }
        let pid = self.pid_of(child) as usize;
        self.procs[pid].forked_at = self.write_seq;
        self.forks += 1;
    }

    /// A PTE (or, with `leaf`, a PMD leaf) at `a` went from mapping `old`
    /// to mapping `new` (a page and whether writable); `heads` are the
    /// folios touched.
    pub fn mapping_changed(
        &mut self,
        a: Uaddr,
        leaf: bool,
        old: Option<Pfn>,
        new: Option<(Pfn, bool)>,
        heads: [Option<Pfn>; 2],
    ) {
        if old.is_some() {
            self.maps.retain(|e| !(e.a == a && e.leaf == leaf));
        }
        if let Some((pfn, write)) = new {
            self.maps.push(MapEntry {
                a,
                pfn,
                leaf,
                write,
            });
        }
        for h in heads.into_iter().flatten() {
            self.touch(h);
        }
    }

    /// The running step changed folio `head`'s mappings, pins or flags.
    pub fn touch(&mut self, head: Pfn) {
        if !self.touched.contains(&head) {
            self.touched.push(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_sees_what_its_parent_wrote_before_fork_and_nothing_after() {
        let mut l = Ledger::default();
        let before = l.write_value(l.pid_of(0));
        l.new_process(1, Some(0));
        l.forking.push(Forking {
            parent: 0,
            child: 1,
            shared: 0,
        });
        l.fork_done(0, 1);
        let after = l.write_value(l.pid_of(0));
        let child = l.pid_of(1);

        assert!(l.in_lineage(0, child), "zeroes are anyone's");
        assert!(l.in_lineage(before, child));
        assert!(!l.in_lineage(after, child));
        let own = l.write_value(child);
        assert!(!l.in_lineage(own, l.pid_of(0)), "nor the other way");
    }
}
