//! What the Raft stack reports as it runs, for the invariant checks: each node's log store
//! and state machine emit a [`RaftEvent`] at their seams (a vote saved, entries durable, a
//! truncation, a purge, a commit, applies, snapshots; and snapshot chunks arriving, which
//! armed faults time themselves against), and whoever started the node collects
//! them with the node and its incarnation, in the order they happened.
//!
//! The stack emits through a [`Probe`]; a node started without one (real deployments,
//! benchmarks) pays one branch per seam. The checks over the record are pure functions in
//! `crate::check::raft_events`.

use std::sync::Arc;

/// One log entry's identity: its index, its term, and a hash of its encoded bytes (two
/// entries with the same index and term but different hashes are different entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Log index.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// Hash of the entry as stored.
    pub hash: u64,
}

/// A log position: (term, index), ordered as Raft compares logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPos {
    /// Term.
    pub term: u64,
    /// Index.
    pub index: u64,
}

/// A saved vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoteRec {
    /// Term.
    pub term: u64,
    /// The candidate (or leader) voted for.
    pub voted_for: Option<u64>,
    /// Whether a quorum granted it (the node it names leads the term).
    pub committed: bool,
}

impl VoteRec {
    /// Whether `self` is at least `other` in openraft's order: a higher term; or the same
    /// term and candidate (or none before) with at least the same commitment; or, for two
    /// candidates of one term, `self` committed (a leader's vote, granted by a quorum,
    /// supersedes a vote for another candidate) and `other` not.
    pub fn at_least(&self, other: &VoteRec) -> bool {
        if self.term != other.term {
            return self.term > other.term;
        }
        match (self.voted_for, other.voted_for) {
            (_, None) => self.voted_for.is_some() || self.committed >= other.committed,
            (None, Some(_)) => false,
            (Some(a), Some(b)) if a == b => self.committed >= other.committed,
            (Some(_), Some(_)) => self.committed && !other.committed,
        }
    }
}

/// What a node's Raft storage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftEvent {
    /// The log store read what it holds as the node started: its vote, its last purged
    /// position, and every entry it holds.
    LogRecovered {
        /// The stored vote.
        vote: Option<VoteRec>,
        /// The last purged position.
        purged: Option<LogPos>,
        /// Every entry held.
        entries: Vec<EntryId>,
    },
    /// The state machine opened: what it had applied.
    StateMachineOpened {
        /// Its applied position.
        applied: Option<LogPos>,
    },
    /// A vote reached the disk.
    VoteSaved(VoteRec),
    /// Entries reached the disk (the log store told openraft they are durable).
    Appended(Vec<EntryId>),
    /// Entries at and after this index were removed.
    Truncated {
        /// The first index removed.
        from: u64,
    },
    /// Entries up to this position were removed (a snapshot covers them).
    Purged(LogPos),
    /// The commit index moved here.
    Committed(LogPos),
    /// Entries were applied to the state machine, in order.
    Applied(Vec<EntryId>),
    /// The state machine built a snapshot covering up to here.
    SnapshotBuilt(Option<LogPos>),
    /// The state machine began installing a leader's snapshot covering up to here.
    SnapshotInstalling(Option<LogPos>),
    /// The state machine installed a leader's snapshot covering up to here.
    SnapshotInstalled(Option<LogPos>),
    /// A data chunk of a snapshot arrived from a leader (it has not been taken yet).
    SnapshotChunk {
        /// The sender.
        from: u64,
        /// The chunk's position in its transfer, from 0.
        seq: u64,
    },
    /// A leadership confirmation round confirmed this node leads; it answered this many
    /// reads at once.
    ReadsConfirmed {
        /// Reads the round answered.
        reads: u64,
    },
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Simulated time, microseconds since the run started.
    pub at_us: u64,
    /// The node.
    pub node: u64,
    /// Which start of the node (0 for the first).
    pub incarnation: u64,
    /// What happened.
    pub event: RaftEvent,
}

/// How many of each event a run recorded, over every node and incarnation: what the run
/// exercised of Raft's storage paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventCounts {
    /// Restarts of a node (starts after its first).
    pub restarts: u64,
    /// Votes saved.
    pub votes: u64,
    /// Append batches made durable.
    pub appends: u64,
    /// Conflicting suffixes truncated.
    pub truncations: u64,
    /// Log purges.
    pub purges: u64,
    /// Apply batches.
    pub applies: u64,
    /// Snapshots built.
    pub snapshots_built: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshot data chunks received.
    #[serde(default)]
    pub snapshot_chunks: u64,
    /// Leadership confirmation rounds run for linearizable reads.
    #[serde(default)]
    pub read_rounds: u64,
    /// Linearizable reads those rounds answered (more than one per round: shared rounds).
    #[serde(default)]
    pub reads_confirmed: u64,
}

impl EventCounts {
    /// Counts the events of `record`.
    pub fn of(record: &[Recorded]) -> EventCounts {
        let mut c = EventCounts::default();
        for r in record {
            let n = match r.event {
                RaftEvent::LogRecovered { .. } if r.incarnation > 0 => &mut c.restarts,
                RaftEvent::VoteSaved(_) => &mut c.votes,
                RaftEvent::Appended(_) => &mut c.appends,
                RaftEvent::Truncated { .. } => &mut c.truncations,
                RaftEvent::Purged(_) => &mut c.purges,
                RaftEvent::Applied(_) => &mut c.applies,
                RaftEvent::SnapshotBuilt(_) => &mut c.snapshots_built,
                RaftEvent::SnapshotInstalled(_) => &mut c.snapshots_installed,
                RaftEvent::SnapshotChunk { .. } => &mut c.snapshot_chunks,
                RaftEvent::ReadsConfirmed { reads } => {
                    c.reads_confirmed += reads;
                    &mut c.read_rounds
                }
                RaftEvent::LogRecovered { .. }
                | RaftEvent::StateMachineOpened { .. }
                | RaftEvent::SnapshotInstalling(_)
                | RaftEvent::Committed(_) => continue,
            };
            *n += 1;
        }
        c
    }
}

type Sink = dyn Fn(RaftEvent) + Send + Sync;

/// Where a node's storage reports its events (cheap to clone; a default probe drops them).
#[derive(Clone, Default)]
pub struct Probe(Option<Arc<Sink>>);

impl Probe {
    /// A probe that hands each event to `sink`.
    pub fn new(sink: impl Fn(RaftEvent) + Send + Sync + 'static) -> Probe {
        Probe(Some(Arc::new(sink)))
    }

    /// Whether events are collected (build them only then).
    pub fn on(&self) -> bool {
        self.0.is_some()
    }

    /// Reports an event, built only if someone collects it.
    pub fn emit(&self, event: impl FnOnce() -> RaftEvent) {
        if let Some(sink) = &self.0 {
            sink(event());
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.on() { "Probe(on)" } else { "Probe(off)" })
    }
}

/// The hash [`EntryId::hash`] takes of an entry's encoded bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_order_as_raft_compares_them() {
        let v = |term, voted_for, committed| VoteRec {
            term,
            voted_for,
            committed,
        };
        assert!(v(3, Some(1), false).at_least(&v(2, Some(2), true)));
        assert!(v(3, Some(1), true).at_least(&v(3, Some(1), false)));
        assert!(!v(3, Some(1), false).at_least(&v(3, Some(1), true)));
        assert!(!v(3, Some(2), false).at_least(&v(3, Some(1), false)));
        assert!(v(3, Some(2), true).at_least(&v(3, Some(1), false)));
        assert!(!v(3, Some(2), false).at_least(&v(3, Some(1), true)));
        assert!(v(3, Some(2), false).at_least(&v(3, None, false)));
        assert!(!v(2, Some(1), true).at_least(&v(3, None, false)));
        let p = Probe::default();
        p.emit(|| unreachable!("an off probe builds no event"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = Probe::new(move |e| s.lock().unwrap().push(e));
        p.emit(|| RaftEvent::Truncated { from: 4 });
        assert_eq!(
            *seen.lock().unwrap(),
            vec![RaftEvent::Truncated { from: 4 }]
        );
    }
}
