//! Planted bugs: realistic mistakes that a scenario or `--bug NAME` switches on for one run,
//! so the testbed can show that its checks catch them.
//!
//! A bug is a [`Bug`] variant, so a misspelled bug does not compile, and a scenario file or
//! command line that names an unknown one is refused with the list of known names.
//!
//! The switches live in a per-thread set: a simulation runs on one thread, the harness sets
//! the set when a run starts and clears it when the run ends, so nothing leaks between runs.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A planted bug. Each variant's doc comment says what goes wrong (`--help` lists them).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum Bug {
    /// MST and eventual merges take the incoming version whatever its timestamp.
    LwwRemoteWins,
    /// Eventual consistency pushes once and forgets (no outbox, no retry).
    EventualNoRepair,
    /// The simulated disk reports a sync as done but persists nothing.
    DiskSyncLies,
    /// Raft followers answer reads from their own state instead of the leader's.
    RaftFollowerLocalReads,
    /// The Raft log acknowledges appended entries before they are synced to disk.
    RaftAckBeforeSync,
    /// The Raft state machine saves its applied index apart from the data it applied.
    RaftAppliedNotPersisted,
    /// A Raft follower installs a snapshot in place, pair by pair, after clearing its data.
    RaftSnapshotNonAtomic,
    /// MST deletes remove the object instead of writing a tombstone.
    MstNoTombstones,
    /// A shard's scan pairs each key with the value of the key after it.
    ScanValuesShifted,
    /// The Raft leader answers scans and counts from its own state without confirming it
    /// still leads.
    RaftLeaderLocalScans,
    /// The Raft log store writes a vote without syncing it: a power cut can make a node
    /// forget whom it voted for in a term, and vote again.
    RaftVoteNotSynced,
    /// A Raft follower answers an append request with success as soon as it arrives,
    /// before its log has taken the entries (pipelining gone wrong).
    RaftAppendAckEarly,
    /// The Raft log purges entries without waiting for the state machine to make their
    /// effects durable.
    RaftPurgeUngated,
    /// A restarted Raft node that founded the cluster initializes it again, as if it were
    /// new, and stops when Raft refuses.
    RaftInitNotIdempotent,
    /// The Raft leader answers reads from its own state for the longest election timeout
    /// after a quorum confirmed it, timed on its own clock: a leader lease, which is safe only
    /// while every node's clock keeps time.
    RaftLeaseReads,
    /// A Raft follower hands a snapshot to openraft as its first chunk arrives instead of
    /// staging it, so a transfer cut mid-stream fails the install, which stops the node.
    RaftInstallUnstaged,
    /// The fjall engine's paged read of a half-open range (a limit, an open or exclusive
    /// end: the path a client's scan and a walk of the store take) drops the range's last
    /// pair when the range ends before the limit; unlimited reads and inclusive ranges take
    /// another path and are right. Eventual and conflict-free modes allow a client's scan to
    /// miss a key, and in the shipped fjall scenarios no check of a run sees it (an eventual
    /// outbox retry or an MST node rebuilding its tree after a restart reads such a range
    /// too, and could); `odgm-sim differential` sees the first answer it changes. (A Raft
    /// cluster on fjall would show it to the linearizability check.)
    FjallScanDropsLast,
}

/// What shows a planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// A run's own checks (histories, convergence, invariants, durability) fail.
    Checks,
    /// The run passes its checks; comparing it across engines (`odgm-sim differential`)
    /// shows the difference.
    Differential,
}

impl Bug {
    /// Every planted bug, in declaration order.
    pub fn all() -> &'static [Bug] {
        <Bug as clap::ValueEnum>::value_variants()
    }

    /// The name used with `--bug` and in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LwwRemoteWins => "lww-remote-wins",
            Bug::EventualNoRepair => "eventual-no-repair",
            Bug::DiskSyncLies => "disk-sync-lies",
            Bug::RaftFollowerLocalReads => "raft-follower-local-reads",
            Bug::RaftAckBeforeSync => "raft-ack-before-sync",
            Bug::RaftAppliedNotPersisted => "raft-applied-not-persisted",
            Bug::RaftSnapshotNonAtomic => "raft-snapshot-non-atomic",
            Bug::MstNoTombstones => "mst-no-tombstones",
            Bug::ScanValuesShifted => "scan-values-shifted",
            Bug::RaftLeaderLocalScans => "raft-leader-local-scans",
            Bug::RaftVoteNotSynced => "raft-vote-not-synced",
            Bug::RaftAppendAckEarly => "raft-append-ack-early",
            Bug::RaftPurgeUngated => "raft-purge-ungated",
            Bug::RaftInitNotIdempotent => "raft-init-not-idempotent",
            Bug::RaftLeaseReads => "raft-lease-reads",
            Bug::RaftInstallUnstaged => "raft-install-unstaged",
            Bug::FjallScanDropsLast => "fjall-scan-drops-last",
        }
    }

    /// The shipped scenarios (file stems under `scenarios/`) that should catch it, cheapest
    /// first; `odgm-sim bugs` runs them.
    pub fn caught_by(self) -> &'static [&'static str] {
        match self {
            Bug::LwwRemoteWins => &["mst-partition-skew", "mst-concurrent-writes"],
            Bug::EventualNoRepair => &["eventual-partition"],
            Bug::DiskSyncLies => &["none-baseline", "raft-power-loss"],
            Bug::RaftFollowerLocalReads => &["raft-leader-partition"],
            Bug::RaftAckBeforeSync => &["raft-power-outage"],
            Bug::RaftAppliedNotPersisted => &["raft-power-loss", "raft-power-outage"],
            Bug::RaftSnapshotNonAtomic => &["raft-snapshot-crash"],
            Bug::MstNoTombstones => &["mst-partition-skew", "mst-concurrent-writes"],
            Bug::ScanValuesShifted => &["none-baseline", "raft-crash-restart"],
            Bug::RaftLeaderLocalScans => &["raft-leader-partition"],
            Bug::RaftVoteNotSynced => &["raft-cut-on-vote"],
            Bug::RaftAppendAckEarly => &["raft-leader-partition", "raft-crash-restart"],
            Bug::RaftPurgeUngated => &["raft-snapshot-install", "raft-power-outage"],
            Bug::RaftInitNotIdempotent => &["raft-crash-restart"],
            Bug::RaftLeaseReads => &["raft-clock-drift"],
            Bug::RaftInstallUnstaged => &["raft-snapshot-cut"],
            Bug::FjallScanDropsLast => &["mst-concurrent-writes"],
        }
    }

    /// What shows it: a run's own checks, or only comparing engines.
    pub fn detector(self) -> Detector {
        match self {
            Bug::FjallScanDropsLast => Detector::Differential,
            _ => Detector::Checks,
        }
    }

    /// Every name, comma-separated (for error messages).
    pub fn known_names() -> String {
        Bug::all()
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Bug, String> {
        Bug::all()
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown bug {s:?} (known: {})", Bug::known_names()))
    }
}

thread_local! {
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
}

/// Switches on exactly `bugs` for this thread's runs.
pub fn set_active(bugs: &[Bug]) {
    ACTIVE.with(|a| a.set(bugs.iter().fold(0, |m, b| m | b.bit())));
}

/// Whether the bug is switched on in this thread.
pub fn active(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() & bug.bit() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_every_spelling() {
        for &b in Bug::all() {
            assert_eq!(b.name().parse::<Bug>(), Ok(b));
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("\"{}\"", b.name())
            );
            let v = <Bug as clap::ValueEnum>::to_possible_value(&b).unwrap();
            assert_eq!(v.get_name(), b.name());
        }
        assert!("raft-ack-before-synk".parse::<Bug>().is_err());
    }

    #[test]
    fn switches_are_per_bug() {
        set_active(&[Bug::DiskSyncLies, Bug::MstNoTombstones]);
        assert!(active(Bug::DiskSyncLies) && active(Bug::MstNoTombstones));
        assert!(!active(Bug::LwwRemoteWins));
        set_active(&[]);
        assert!(Bug::all().iter().all(|b| !active(*b)));
    }
}
