//! Coverage probes: the corners of the stack a run reached.
//!
//! A corner is a [`Corner`] variant, marked in the stack's code with one line,
//! `coverage::hit(Corner::RaftTruncateConflict)`, at the place where the corner happens. A
//! run records which corners it hit (a bit per corner in a per-thread set: a simulation runs
//! on one thread, and the harness clears the set when a run starts), its report lists them,
//! and `sweep` and `chaos` print which runs reached each corner and which corners no run
//! reached. Recording changes nothing the run does: no random draw, no trace line, no timer.
//!
//! Every corner is known ahead of time ([`Corner::ALL`], `odgm-sim coverage` prints the
//! catalogue), so one that is never hit is visible. A corner marked [`Expect::Sweep`] must be
//! reached by the shipped `cargo test` sweep (`sims/scenario_sim.rs` fails otherwise); one
//! marked [`Expect::Chaos`] is not required of it.
//!
//! Outside a run the marks go nowhere anyone reads: the stack pays one thread-local `or` per
//! mark in both builds.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which part of the stack a corner is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// openraft's glue: log store, state machine, network, reads, snapshots.
    Raft,
    /// The dedicated append-only Raft log on its device.
    Log,
    /// Storage engines, the write-back layer, snapshot streams.
    Storage,
    /// The simulated disk.
    Disk,
    /// MST anti-entropy.
    Mst,
    /// Eventual replication.
    Eventual,
    /// Hybrid logical clocks and last-writer-wins merges.
    Hlc,
    /// The transport.
    Net,
}

/// Who is expected to reach a corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The shipped `cargo test` sweep (every shipped scenario, 3 seeds, and 48 chaos seeds)
    /// must reach it: `cargo test` fails otherwise.
    Sweep,
    /// Not required of the shipped sweep: rare there, or reached only by long chaos runs,
    /// or (the README lists them) not reached by anything yet.
    Chaos,
}

macro_rules! corners {
    ($( $(#[doc = $why:literal])+ $v:ident = $name:literal, $layer:ident, $expect:ident; )+) => {
        /// A corner of the stack worth reaching. Each variant's doc comment says why it
        /// matters (`odgm-sim coverage` prints it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Corner {
            $( $(#[doc = $why])+ $v, )+
        }

        impl Corner {
            /// Every corner, in declaration order.
            pub const ALL: &'static [Corner] = &[$(Corner::$v),+];

            /// Its name (`layer.what`), as reports and tables print it.
            pub fn name(self) -> &'static str {
                match self { $(Corner::$v => $name,)+ }
            }

            /// Why it matters.
            pub fn why(self) -> &'static str {
                match self { $(Corner::$v => concat!($($why),+),)+ }
            }

            /// The part of the stack it is in.
            pub fn layer(self) -> Layer {
                match self { $(Corner::$v => Layer::$layer,)+ }
            }

            /// Who must reach it.
            pub fn expect(self) -> Expect {
                match self { $(Corner::$v => Expect::$expect,)+ }
            }
        }
    };
}

corners! {
    // Raft glue.
    /// A follower's log held a suffix a new leader did not have, and the log store removed
    /// it: the path where an unsynced or wrongly acknowledged entry would resurface.
    RaftTruncateConflict = "raft.truncate-conflict", Raft, Sweep;
    /// A purge waited for the state machine to make the purged entries' effects durable:
    /// without the wait a crash loses applied writes no log can replay.
    RaftPurgeWaited = "raft.purge-waited", Raft, Sweep;
    /// A purge ran: entries a snapshot covers left the log, so a lagging follower needs a
    /// snapshot.
    RaftPurge = "raft.purge", Raft, Sweep;
    /// The state machine built a snapshot while the node kept applying entries.
    RaftSnapshotBuilt = "raft.snapshot-built", Raft, Sweep;
    /// A follower installed a leader's snapshot over state it already held (it lagged, it
    /// did not start empty): the install must replace every old key, atomically.
    RaftInstallOverData = "raft.install-over-data", Raft, Sweep;
    /// A follower installed a leader's snapshot into an empty state machine.
    RaftInstallEmpty = "raft.install-empty", Raft, Sweep;
    /// A snapshot transfer took more than one chunk: the staging and reassembly path.
    RaftInstallMultiChunk = "raft.install-multi-chunk", Raft, Sweep;
    /// A snapshot transfer went silent and the receiver dropped it: a cut stream must cost
    /// nothing but a resend.
    RaftTransferDropped = "raft.transfer-dropped", Raft, Chaos;
    /// A newer snapshot (or a new leader's) replaced a transfer in progress.
    RaftTransferReplaced = "raft.transfer-replaced", Raft, Sweep;
    /// The leader built a newer snapshot (releasing the old one) after openraft picked the
    /// old one to send and before its transfer began: the send must give way to the newer
    /// snapshot, not stop the leader.
    RaftSendSuperseded = "raft.send-superseded", Raft, Chaos;
    /// A vote request was refused: a split vote, a stale candidate or a shorter log.
    RaftVoteRefused = "raft.vote-refused", Raft, Sweep;
    /// A leader received a request carrying a newer term and stepped down.
    RaftLeaderStepsDown = "raft.leader-steps-down", Raft, Sweep;
    /// An append was refused for a log conflict: the leader must walk back its follower's
    /// match index.
    RaftAppendConflict = "raft.append-conflict", Raft, Sweep;
    /// An append or vote reached a node whose term is newer than the sender's.
    RaftHigherVoteSeen = "raft.higher-vote-seen", Raft, Sweep;
    /// One leadership confirmation round answered more than one linearizable read.
    RaftReadsBatched = "raft.reads-batched", Raft, Sweep;
    /// A leadership confirmation round failed: the read must not be answered.
    RaftReadRoundFailed = "raft.read-round-failed", Raft, Sweep;
    /// A client asked a follower, which forwarded it toward the leader or refused.
    RaftNotLeader = "raft.not-leader", Raft, Sweep;
    /// A node that led its term when it stopped came back as a follower of that term.
    RaftRejoinAsFollower = "raft.rejoin-as-follower", Raft, Sweep;
    /// A restarted node recovered a log with entries in it.
    RaftRestartWithLog = "raft.restart-with-log", Raft, Sweep;
    /// A restarted node's state machine had applied less than its log holds: it must
    /// apply the rest again, idempotently.
    RaftReapplyAfterRestart = "raft.reapply-after-restart", Raft, Sweep;
    /// The cluster's membership changed (a node added or removed) while the run ran.
    RaftMembershipChanged = "raft.membership-changed", Raft, Sweep;

    // The Raft log on its device.
    /// The log filled a segment and started another.
    LogSegmentRolled = "log.segment-rolled", Log, Sweep;
    /// A purge freed a whole segment's slot for reuse.
    LogSegmentFreed = "log.segment-freed", Log, Sweep;
    /// Recovery found a segment written after the break (a crash lost what came before it)
    /// and dropped it.
    LogRecoveryDroppedSegment = "log.recovery-dropped-segment", Log, Chaos;
    /// Recovery ended the log before bytes that were on the device (a torn or lost tail).
    LogRecoveryTornTail = "log.recovery-torn-tail", Log, Sweep;
    /// The log found damaged bytes it had called durable (a record claiming durability past
    /// the end, a bad checksum on read) and stopped rather than serve them.
    LogDamageFound = "log.damage-found", Log, Chaos;
    /// Only one of the two superblock copies was valid at open.
    LogSuperblockOneCopy = "log.superblock-one-copy", Log, Chaos;

    // Storage.
    /// The write-back layer held its bound of unsynced bytes and flushed before taking more.
    StorageWriteBackFull = "storage.write-back-full", Storage, Chaos;
    /// A snapshot install failed (a stream cut off or damaged, an engine error) and the
    /// state machine kept its old state.
    StorageStreamRejected = "storage.stream-rejected", Storage, Sweep;
    /// A held zero-copy snapshot was released (a newer one replaced it) while a transfer
    /// of it may still be streaming: the engine must keep what the stream reads alive.
    StorageSnapshotReleased = "storage.snapshot-released", Storage, Sweep;
    /// An engine held its bound of snapshots and dropped the oldest to take another.
    StorageSnapshotEvicted = "storage.snapshot-evicted", Storage, Chaos;
    /// An engine's open failed on damaged bytes (redb's checksums, a misdirected page).
    StorageOpenFailed = "storage.open-failed", Storage, Sweep;

    // The simulated disk.
    /// A power loss kept a torn prefix of an unsynced sector.
    DiskTornSector = "disk.torn-sector", Disk, Sweep;
    /// A power loss dropped unsynced sectors.
    DiskLostSectors = "disk.lost-sectors", Disk, Chaos;
    /// An armed power cut fired between two operations of the stack.
    DiskArmedCutFired = "disk.armed-cut-fired", Disk, Sweep;
    /// The disk returned an injected I/O error.
    DiskIoError = "disk.io-error", Disk, Chaos;
    /// A read came back with a flipped bit.
    DiskBitFlip = "disk.bit-flip", Disk, Chaos;
    /// A read or write went to the wrong sectors.
    DiskMisdirected = "disk.misdirected", Disk, Sweep;
    /// The sector integrity check caught a misdirected or stale sector.
    DiskIntegrityCaught = "disk.integrity-caught", Disk, Sweep;

    // MST.
    /// An anti-entropy round found the trees equal and exchanged nothing.
    MstInSync = "mst.in-sync", Mst, Sweep;
    /// An anti-entropy round had more differing ranges or entries than one exchange may
    /// carry and paged through the rest: each page must resume where the last one stopped,
    /// or a large range is never repaired past its first entries.
    MstExchangeCapped = "mst.exchange-capped", Mst, Sweep;
    /// A merge kept a local tombstone over an older incoming write: without tombstones the
    /// deleted value would come back.
    HlcTombstoneBeatsWrite = "hlc.tombstone-beats-write", Hlc, Sweep;
    /// A merge met two versions with the same HLC from different nodes: the node id breaks
    /// the tie.
    HlcTieBrokenByNode = "hlc.tie-broken-by-node", Hlc, Sweep;

    // Eventual.
    /// A push of the outbox failed (a partition, a dead peer); its records wait for the next
    /// pass, which must deliver them once the peer is back.
    EventualOutboxPushFailed = "eventual.outbox-push-failed", Eventual, Sweep;
    /// A push carried versions no newer than the replica held (a stale or repeated push),
    /// and they were ignored.
    EventualStalePushIgnored = "eventual.stale-push-ignored", Eventual, Sweep;

    // HLC.
    /// Two local writes in one physical millisecond (or on a clock behind the HLC): the
    /// logical counter ordered them.
    HlcLogicalCounter = "hlc.logical-counter", Hlc, Sweep;
    /// A timestamp from another node was ahead of this node's HLC and pulled it forward.
    HlcRemoteAhead = "hlc.remote-ahead", Hlc, Sweep;
    /// A node restarted on a clock behind the newest version it stored, and took its HLC
    /// forward to it: otherwise new writes would lose to older ones.
    HlcRecoveredAhead = "hlc.recovered-ahead", Hlc, Sweep;

    // Network.
    /// The network delivered a message twice.
    NetDuplicated = "net.duplicated", Net, Sweep;
    /// A call timed out (loss, a partition, a clogged node).
    NetCallTimedOut = "net.call-timed-out", Net, Sweep;
}

const _: () = assert!(Corner::ALL.len() <= 128, "the hit set is a u128");

impl Corner {
    fn bit(self) -> u128 {
        1 << self as u32
    }

    /// The corner named `name`.
    pub fn named(name: &str) -> Option<Corner> {
        Corner::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl fmt::Display for Corner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Corner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Corner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Corner, D::Error> {
        let name = String::deserialize(d)?;
        Corner::named(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown coverage corner {name:?}")))
    }
}

thread_local! {
    static HITS: Cell<u128> = const { Cell::new(0) };
}

/// Marks `corner` as reached by this thread's run.
#[inline]
pub fn hit(corner: Corner) {
    HITS.with(|h| h.set(h.get() | corner.bit()));
}

/// Marks `corner` when `cond` holds; returns `cond`.
#[inline]
pub fn hit_if(cond: bool, corner: Corner) -> bool {
    if cond {
        hit(corner);
    }
    cond
}

/// Forgets every corner this thread reached (a run starts).
pub fn clear() {
    HITS.with(|h| h.set(0));
}

/// The corners this thread reached since [`clear`], in declaration order.
pub fn reached() -> Vec<Corner> {
    let bits = HITS.with(Cell::get);
    Corner::ALL
        .iter()
        .copied()
        .filter(|c| bits & c.bit() != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = Corner::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Corner::ALL.len());
        for &c in Corner::ALL {
            assert_eq!(Corner::named(c.name()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Corner>(&json).unwrap(), c);
            assert!(!c.why().trim().is_empty());
            let prefix = c.name().split('.').next().unwrap();
            assert!(!prefix.is_empty() && c.name().len() > prefix.len() + 1);
        }
        assert!(serde_json::from_str::<Corner>("\"raft.no-such-corner\"").is_err());
        assert!(Corner::ALL.len() >= 40);
    }

    #[test]
    fn hits_are_recorded_per_thread_and_cleared() {
        clear();
        hit(Corner::MstInSync);
        hit(Corner::RaftPurge);
        hit(Corner::MstInSync);
        assert!(!hit_if(false, Corner::NetDuplicated));
        assert_eq!(reached(), vec![Corner::RaftPurge, Corner::MstInSync]);
        std::thread::spawn(|| assert!(reached().is_empty()))
            .join()
            .unwrap();
        clear();
        assert!(reached().is_empty());
    }
}
