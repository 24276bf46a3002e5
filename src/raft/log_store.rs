//! The Raft log: openraft's log storage over the append-only segmented log of
//! [`segments`], on a block device of its own (the simulated disk in simulation, a file in
//! real mode), apart from the application data. One sync per append batch (group commit);
//! the vote and the purge point live in the log's superblock, synced when they change.
//!
//! The newest entries are also kept decoded in memory ([`CACHED_ENTRIES`] of them), since
//! replication reads what was just appended; older ones are read from the device.

pub mod segments;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use segments::{LogError, SegmentLog, DEFAULT_SEGMENT_BYTES};

use super::state_machine::DurableApplied;
use super::types::{entry_id, pos};
use super::types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};
use crate::coverage::{self, Corner};
use crate::probe::{Probe, RaftEvent, VoteRec};
use crate::storage::DynDevice;

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RaftStorageError> {
    bincode::serialize(v).map_err(|e| StorageIOError::write(&e).into())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RaftStorageError> {
    bincode::deserialize(bytes).map_err(|e| StorageIOError::read(&e).into())
}

/// A vote as the probe reports it.
fn vote_rec(v: &Vote) -> VoteRec {
    VoteRec {
        term: v.leader_id.term,
        voted_for: v.leader_id.voted_for,
        committed: v.committed,
    }
}

/// How many of the newest entries the log keeps decoded in memory.
pub const CACHED_ENTRIES: usize = 1024;

/// The newest entries of the log, in memory: a contiguous run that ends at the log's last
/// entry, or nothing. A change reaches the tail once the log has written it, under the log's
/// lock, so a reader never sees the two disagree; if the log fails, the tail is dropped.
#[derive(Default)]
struct Tail {
    entries: VecDeque<Entry>,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// Entries within the bounds, if the tail can answer alone: the bounds start at or after
    /// its first entry (the tail ends at the log's end, so nothing after it exists).
    fn get(&self, start: Bound<u64>, end: Bound<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let from = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.checked_add(1)?,
            Bound::Unbounded => return None,
        };
        if from < first {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|e| match end {
                    Bound::Included(i) => e.log_id.index <= i,
                    Bound::Excluded(i) => e.log_id.index < i,
                    Bound::Unbounded => true,
                })
                .cloned()
                .collect(),
        )
    }

    /// Entries appended after the log's last one.
    fn append(&mut self, appended: Vec<Entry>) {
        let Some(first_new) = appended.first().map(|e| e.log_id.index) else {
            return;
        };
        let follows = self
            .entries
            .back()
            .is_some_and(|e| e.log_id.index + 1 == first_new);
        if !follows {
            // The tail no longer ends where the log does (a restart began with an empty
            // tail): start again from what was just written.
            self.entries.clear();
        }
        self.entries.extend(appended);
        while self.entries.len() > CACHED_ENTRIES {
            self.entries.pop_front();
        }
    }

    /// Entries at and after `index` were removed from the log.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            self.entries.pop_back();
        }
    }

    /// Entries up to `index` were removed from the log.
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.entries.pop_front();
        }
    }
}

/// How long a purge waits for the state machine to make the purged entries' effects durable.
pub const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the superblock holds for openraft: the vote and the last purged id.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct Meta {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

/// The log store. Clones share the log and the in-memory tail.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<SegmentLog>>,
    tail: Arc<Mutex<Tail>>,
    purge_gate: Option<DurableApplied>,
    probe: Probe,
}

impl LogStore {
    /// Opens (or creates) the log on `device`, with segments of `segment_bytes` if it is new.
    pub fn open(device: DynDevice, segment_bytes: u64) -> Result<Self, RaftStorageError> {
        let log =
            SegmentLog::open(device, segment_bytes).map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            tail: Arc::default(),
            purge_gate: None,
            probe: Probe::default(),
        })
    }

    /// This log store, reporting what it makes durable to `probe`.
    pub fn with_probe(self, probe: Probe) -> Self {
        Self { probe, ..self }
    }

    /// This log store, whose purges wait until `gate` (its state machine's) says the purged
    /// entries' effects are durable.
    ///
    /// openraft purges the log as soon as it hands a snapshot to the state machine, before
    /// the install is done, and the state machine syncs its applies only now and then. A
    /// crash in between would leave a log purged past what the state machine holds, with
    /// nothing left to apply the difference from.
    pub fn with_purge_gate(self, gate: DurableApplied) -> Self {
        Self {
            purge_gate: Some(gate),
            ..self
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, SegmentLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps off the latency the device charged (simulated disks only).
    async fn charge_latency(&self) {
        let latency = self.log().take_latency();
        if !latency.is_zero() {
            crate::rt::sleep(latency).await;
        }
    }

    fn meta(&self) -> Result<Meta, RaftStorageError> {
        let log = self.log();
        match log.state() {
            [] => Ok(Meta::default()),
            bytes => decode(bytes),
        }
    }

    /// Reports what the log holds as the node starts (its vote, last purged position and
    /// entries), if a probe collects it. Call before anything changes the log.
    pub async fn report_recovered(&self) -> Result<(), RaftStorageError> {
        if !self.probe.on() {
            return Ok(());
        }
        let meta = self.meta()?;
        let mut entries = Vec::new();
        for (bytes, e) in self.raw(Bound::Unbounded, Bound::Unbounded)? {
            entries.push(entry_id(&e.log_id, &bytes));
        }
        self.probe.emit(|| RaftEvent::LogRecovered {
            vote: meta.vote.as_ref().map(vote_rec),
            purged: meta.purged.as_ref().map(pos),
            entries,
        });
        Ok(())
    }

    /// The stored entries (encoded and decoded) with indices within the bounds.
    fn raw(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<(Vec<u8>, Entry)>, RaftStorageError> {
        let log = self.log();
        let (Some(first), Some(last)) = (log.first_index(), log.last_index()) else {
            return Ok(Vec::new());
        };
        let from = match start {
            Bound::Included(i) => i.max(first),
            Bound::Excluded(i) => i.saturating_add(1).max(first),
            Bound::Unbounded => first,
        };
        let to = match end {
            Bound::Included(i) => i.min(last),
            Bound::Excluded(i) => match i.checked_sub(1) {
                Some(i) => i.min(last),
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => last,
        };
        let mut out = Vec::new();
        for index in from..=to {
            let bytes = log.read(index).map_err(|e| StorageIOError::read_logs(&e))?;
            let e: Entry = decode(&bytes)?;
            out.push((bytes, e));
        }
        Ok(out)
    }

    /// Runs a change on the log and the same change on the tail. On an error the tail is
    /// dropped, since what reached the device is unknown (the log stops).
    async fn change(
        &self,
        op: impl FnOnce(&mut SegmentLog) -> Result<(), LogError>,
        tail_change: impl FnOnce(&mut Tail),
        err: fn(&LogError) -> StorageIOError<u64>,
    ) -> Result<(), RaftStorageError> {
        let r = {
            let mut log = self.log();
            let r = op(&mut log);
            match &r {
                Ok(()) => tail_change(&mut self.tail()),
                Err(_) => *self.tail() = Tail::default(),
            }
            r
        };
        self.charge_latency().await;
        r.map_err(|e| err(&e).into())
    }

    /// The index of the last entry the log holds, read from memory (no disk access).
    pub fn last_index(&self) -> Option<u64> {
        self.log().last_index()
    }

    /// Every entry the log holds (not purged), for checks: index -> (term, a hash of the
    /// entry's encoded payload). A term has at most one leader, so the term names the leader.
    pub async fn summary(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, (u64, u64)>, RaftStorageError> {
        use std::hash::Hasher;
        let mut out = std::collections::BTreeMap::new();
        for (_, e) in self.raw(Bound::Unbounded, Bound::Unbounded)? {
            let mut h = rustc_hash::FxHasher::default();
            h.write(&encode(&e.payload)?);
            out.insert(e.log_id.index, (e.log_id.leader_id.term, h.finish()));
        }
        Ok(out)
    }

    async fn save_meta(&self, meta: &Meta, sync: bool) -> Result<(), RaftStorageError> {
        let bytes = encode(meta)?;
        self.change(
            |log| log.set_state(bytes, sync),
            |_| {},
            |e| StorageIOError::write_vote(e),
        )
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        if let Some(hit) = self.tail().get(start, end) {
            return Ok(hit);
        }
        let r = self
            .raw(start, end)
            .map(|v| v.into_iter().map(|(_, e)| e).collect());
        self.charge_latency().await;
        r
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged = self.meta()?.purged;
        let last = self.log().last_index();
        let last = match last {
            Some(i) => self
                .raw(Bound::Included(i), Bound::Included(i))?
                .pop()
                .map(|(_, e)| e.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        let meta = Meta {
            vote: Some(*vote),
            ..self.meta()?
        };
        // Planted bug: the vote waits for the next sync instead of forcing one.
        let sync = !crate::bugs::active(crate::bugs::Bug::RaftVoteNotSynced);
        self.save_meta(&meta, sync).await?;
        self.probe.emit(|| RaftEvent::VoteSaved(vote_rec(vote)));
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        Ok(self.meta()?.vote)
    }

    // `read_committed` keeps openraft's default and `save_committed` saves nothing: the
    // state machine persists its applied log id in the same batch as the data it applies, so
    // a restarted node resumes from there, and one durable write per commit-index change per
    // node is saved. The probe hears of each commit.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        if let Some(c) = committed {
            self.probe.emit(|| RaftEvent::Committed(pos(&c)));
        }
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Entries the purge point covers are not kept (openraft appends none in practice).
        let floor = self.log().purged().map_or(0, |p| p + 1);
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.log_id.index >= floor)
            .collect();
        let mut encoded = Vec::with_capacity(entries.len());
        let mut ids = Vec::new();
        for e in &entries {
            let bytes = encode(e)?;
            if self.probe.on() {
                ids.push(entry_id(&e.log_id, &bytes));
            }
            encoded.push((e.log_id.index, bytes));
        }
        // Planted bug: acknowledge entries the disk may not hold yet.
        let sync = !crate::bugs::active(crate::bugs::Bug::RaftAckBeforeSync);
        // Durable before the callback: openraft may count this entry toward a quorum.
        let r = if entries.is_empty() {
            Ok(())
        } else {
            let refs: Vec<(u64, &[u8])> = encoded.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            self.change(
                |log| log.append(&refs, sync),
                |tail| tail.append(entries),
                |e| StorageIOError::write_logs(e),
            )
            .await
        };
        match &r {
            Ok(()) => {
                self.probe.emit(|| RaftEvent::Appended(ids));
                callback.log_io_completed(Ok(()))
            }
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        r
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        coverage::hit(Corner::RaftTruncateConflict);
        // Reported before it is written: from here on a crash may leave either log.
        self.probe
            .emit(|| RaftEvent::Truncated { from: log_id.index });
        self.change(
            |log| log.truncate(log_id.index),
            |tail| tail.truncate(log_id.index),
            |e| StorageIOError::write_logs(e),
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // Planted bug: purge without waiting for the state machine's applies to be durable.
        let gated = !crate::bugs::active(crate::bugs::Bug::RaftPurgeUngated);
        if let Some(gate) = self.purge_gate.as_ref().filter(|_| gated) {
            coverage::hit_if(!gate.covers(log_id.index), Corner::RaftPurgeWaited);
            gate.wait_covers(log_id.index, PURGE_WAIT)
                .await
                .map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
        }
        let meta = self.meta()?;
        // The purge point never goes back (openraft purges in order; this makes it so).
        let purged = meta
            .purged
            .filter(|p| p.index >= log_id.index)
            .unwrap_or(log_id);
        let meta = encode(&Meta {
            purged: Some(purged),
            ..meta
        })?;
        self.change(
            |log| log.purge(log_id.index, meta),
            |tail| tail.purge(log_id.index),
            |e| StorageIOError::write_logs(e),
        )
        .await?;
        coverage::hit(Corner::RaftPurge);
        self.probe.emit(|| RaftEvent::Purged(pos(&log_id)));
        Ok(())
    }
}
