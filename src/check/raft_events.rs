//! Raft invariants on every event: pure functions over what each node's Raft storage
//! reported as it ran ([`crate::probe`]), in the order it happened, across every node and
//! every incarnation (a restart is a new incarnation of the same node).
//!
//! - [`election_safety`]: at most one leader per term (a leader is a node that saved a
//!   committed vote for itself), and no node grants its vote to two candidates in one term,
//!   across its restarts (taking the winner's committed vote afterwards is not a vote);
//! - [`state_machine_safety`]: no index is applied with two different entries, on any node
//!   in any incarnation;
//! - [`leader_completeness`]: an entry applied anywhere is in the log of every leader
//!   elected after (or covered by its snapshot): a leader elected after an apply has a term
//!   above the one that committed the entry;
//! - [`durability`]: a restarted node's vote and log are at least what its log store had
//!   reported durable before;
//! - [`monotonicity`]: within an incarnation the commit and applied indexes never go back,
//!   no apply lands at or below the snapshot the node installed, and a node never starts
//!   with its log purged past what its state machine holds.
//!
//! Each returns the first violation it finds (a run's report stays readable); [`check`]
//! runs them all.

use std::collections::BTreeMap;

use super::failure::{Applied, Failure, Lost, Regress};
use crate::probe::{EntryId, LogPos, RaftEvent, Recorded, VoteRec};

fn ms(r: &Recorded) -> u64 {
    r.at_us / 1000
}

/// Every invariant over `record`.
pub fn check(record: &[Recorded]) -> Vec<Failure> {
    [
        election_safety(record),
        state_machine_safety(record),
        leader_completeness(record),
        durability(record),
        monotonicity(record),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// At most one leader per term; no node votes for two candidates in one term.
pub fn election_safety(record: &[Recorded]) -> Option<Failure> {
    let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
    let mut voted: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for r in record {
        let RaftEvent::VoteSaved(v) = &r.event else {
            continue;
        };
        let Some(candidate) = v.voted_for else {
            continue;
        };
        if v.committed {
            let leader = *leaders.entry(v.term).or_insert(candidate);
            if leader != candidate {
                return Some(Failure::ElectionSafety {
                    term: v.term,
                    leaders: vec![leader, candidate],
                });
            }
        }
        if v.committed {
            // Taking a leader's committed vote is not voting: it supersedes any vote the node
            // gave in that term.
            continue;
        }
        let first = *voted.entry((r.node, v.term)).or_insert(candidate);
        if first != candidate {
            return Some(Failure::DoubleVote {
                node: r.node,
                term: v.term,
                candidates: vec![first, candidate],
                at_ms: ms(r),
            });
        }
    }
    None
}

/// No index is applied with two different entries.
pub fn state_machine_safety(record: &[Recorded]) -> Option<Failure> {
    let mut applied: BTreeMap<u64, (EntryId, Applied)> = BTreeMap::new();
    for r in record {
        let RaftEvent::Applied(ids) = &r.event else {
            continue;
        };
        for id in ids {
            let here = Applied {
                node: r.node,
                incarnation: r.incarnation,
                term: id.term,
            };
            let (first, at) = *applied.entry(id.index).or_insert((*id, here));
            if first != *id {
                return Some(Failure::AppliedConflict {
                    index: id.index,
                    first: at,
                    second: here,
                    at_ms: ms(r),
                });
            }
        }
    }
    None
}

/// A node's log as its storage reported it: index -> entry, and how far a purge or an
/// installed snapshot covers it.
#[derive(Debug, Default, Clone)]
struct LogModel {
    entries: BTreeMap<u64, EntryId>,
    purged: Option<LogPos>,
    covered: u64,
}

impl LogModel {
    /// Follows one event of the node's storage.
    fn follow(&mut self, event: &RaftEvent) {
        match event {
            RaftEvent::LogRecovered {
                purged, entries, ..
            } => {
                *self = LogModel {
                    entries: entries.iter().map(|e| (e.index, *e)).collect(),
                    purged: *purged,
                    covered: purged.map_or(0, |p| p.index),
                };
            }
            RaftEvent::Appended(ids) => {
                for id in ids {
                    self.entries.insert(id.index, *id);
                }
            }
            RaftEvent::Truncated { from } => {
                self.entries.split_off(from);
            }
            RaftEvent::Purged(p) => {
                self.entries = self.entries.split_off(&(p.index + 1));
                self.purged = Some(*p);
                self.covered = self.covered.max(p.index);
            }
            RaftEvent::SnapshotInstalled(Some(p)) => self.covered = self.covered.max(p.index),
            _ => {}
        }
    }
}

/// Every entry applied anywhere before a leader's election is in its log, or covered by
/// its purge point or installed snapshot.
pub fn leader_completeness(record: &[Recorded]) -> Option<Failure> {
    let mut logs: BTreeMap<u64, LogModel> = BTreeMap::new();
    let mut applied: BTreeMap<u64, EntryId> = BTreeMap::new();
    for r in record {
        let log = logs.entry(r.node).or_default();
        log.follow(&r.event);
        match &r.event {
            RaftEvent::Applied(ids) => {
                for id in ids {
                    applied.entry(id.index).or_insert(*id);
                }
            }
            RaftEvent::VoteSaved(VoteRec {
                term,
                voted_for: Some(leader),
                committed: true,
            }) if *leader == r.node => {
                let missing = applied
                    .range(log.covered + 1..)
                    .find(|(i, e)| log.entries.get(i) != Some(e));
                if let Some((index, e)) = missing {
                    return Some(Failure::LeaderCompleteness {
                        leader: r.node,
                        term: *term,
                        index: *index,
                        applied_term: e.term,
                        held_term: log.entries.get(index).map(|h| h.term),
                        at_ms: ms(r),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// A node that starts again holds at least the vote and the entries its log store had
/// reported durable (entries purged since are covered by the state machine).
pub fn durability(record: &[Recorded]) -> Option<Failure> {
    let mut logs: BTreeMap<u64, LogModel> = BTreeMap::new();
    let mut votes: BTreeMap<u64, VoteRec> = BTreeMap::new();
    for r in record {
        match &r.event {
            RaftEvent::LogRecovered {
                vote,
                purged,
                entries,
            } => {
                let lost = |lost| Failure::Durability {
                    node: r.node,
                    incarnation: r.incarnation,
                    lost,
                    at_ms: ms(r),
                };
                if let Some(durable) = votes.get(&r.node) {
                    if !vote.is_some_and(|v| v.at_least(durable)) {
                        return Some(lost(Lost::Vote {
                            durable: (durable.term, durable.voted_for, durable.committed),
                            recovered: vote.map(|v| (v.term, v.voted_for, v.committed)),
                        }));
                    }
                }
                if let Some(log) = logs.get(&r.node) {
                    let held: BTreeMap<u64, &EntryId> =
                        entries.iter().map(|e| (e.index, e)).collect();
                    let from = purged.map_or(0, |p| p.index + 1);
                    for (index, e) in log.entries.range(from..) {
                        if held.get(index) != Some(&e) {
                            return Some(lost(Lost::Entry {
                                index: *index,
                                durable_term: e.term,
                                recovered_term: held.get(index).map(|h| h.term),
                            }));
                        }
                    }
                }
                if let Some(v) = vote {
                    votes.insert(r.node, *v);
                }
            }
            RaftEvent::VoteSaved(v) => {
                votes.insert(r.node, *v);
            }
            _ => {}
        }
        logs.entry(r.node).or_default().follow(&r.event);
    }
    None
}

/// Within an incarnation: commits and applies only move forward, nothing is applied at or
/// below an installed snapshot, and the node starts with its state machine at or past its
/// log's purge point.
pub fn monotonicity(record: &[Recorded]) -> Option<Failure> {
    #[derive(Default)]
    struct Node {
        committed: Option<u64>,
        applied: Option<u64>,
        snapshot: Option<u64>,
        opened: bool,
    }
    let mut nodes: BTreeMap<(u64, u64), Node> = BTreeMap::new();
    for r in record {
        let n = nodes.entry((r.node, r.incarnation)).or_default();
        let regress = |regress| Failure::Monotonicity {
            node: r.node,
            incarnation: r.incarnation,
            regress,
            at_ms: ms(r),
        };
        match &r.event {
            RaftEvent::StateMachineOpened { applied } => {
                n.applied = applied.map(|p| p.index);
                n.opened = true;
            }
            RaftEvent::LogRecovered {
                purged: Some(p), ..
            } if n.opened && n.applied.is_none_or(|a| a < p.index) => {
                return Some(regress(Regress::BelowPurged {
                    applied: n.applied,
                    purged: p.index,
                }));
            }
            RaftEvent::Committed(p) => {
                if let Some(c) = n.committed.filter(|c| *c > p.index) {
                    return Some(regress(Regress::Commit {
                        from: c,
                        to: p.index,
                    }));
                }
                n.committed = Some(p.index);
            }
            RaftEvent::Applied(ids) => {
                for id in ids {
                    if let Some(s) = n.snapshot.filter(|s| id.index <= *s) {
                        return Some(regress(Regress::BelowSnapshot {
                            index: id.index,
                            snapshot: s,
                        }));
                    }
                    if let Some(a) = n.applied.filter(|a| id.index <= *a) {
                        return Some(regress(Regress::Applied {
                            after: a,
                            index: id.index,
                        }));
                    }
                    n.applied = Some(id.index);
                }
            }
            RaftEvent::SnapshotInstalled(Some(p)) => {
                if let Some(a) = n.applied.filter(|a| p.index < *a) {
                    return Some(regress(Regress::Applied {
                        after: a,
                        index: p.index,
                    }));
                }
                n.snapshot = Some(p.index);
                n.applied = Some(p.index);
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
