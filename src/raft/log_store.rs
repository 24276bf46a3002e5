//! The Raft log over any storage engine: entries under their big-endian index in the data
//! namespace; vote and last purged id in the meta namespace. The last log id is the last
//! entry's (or the last purged id when no entry is left), so an append writes entries only. Every
//! change is one atomic, durable write batch, done before the call reports success (for
//! `append`, before the flush callback fires), so it survives crash and restart.
//!
//! The newest entries are also kept decoded in memory ([`CACHED_ENTRIES`] of them), since
//! replication reads what was just appended; older ones are read from the storage.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state_machine::DurableApplied;
use super::types::{entry_id, pos};
use super::types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};
use crate::probe::{Probe, RaftEvent, VoteRec};
use crate::storage::{DynStorage, KeyRange, Pair, WriteBatch};

const VOTE: &[u8] = b"raft/vote";
const LAST_PURGED: &[u8] = b"raft/last_purged";

fn entry_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

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
/// entry, or nothing. A change reaches the tail when it is handed to the storage, so readers
/// see an entry as soon as openraft has submitted it; if the storage fails, the tail is
/// dropped.
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

/// The log store. Clones share the storage and the in-memory tail.
#[derive(Clone)]
pub struct LogStore {
    storage: DynStorage,
    tail: Arc<Mutex<Tail>>,
    purge_gate: Option<DurableApplied>,
    probe: Probe,
}

impl LogStore {
    /// A log store over `storage` (a storage of its own, not the shard's application data).
    pub fn new(storage: DynStorage) -> Self {
        Self {
            storage,
            tail: Arc::default(),
            purge_gate: None,
            probe: Probe::default(),
        }
    }

    /// This log store, reporting what it makes durable to `probe`.
    pub fn with_probe(self, probe: Probe) -> Self {
        Self { probe, ..self }
    }

    /// Reports what the log holds as the node starts (its vote, last purged position and
    /// entries), if a probe collects it. Call before anything changes the log.
    pub async fn report_recovered(&self) -> Result<(), RaftStorageError> {
        if !self.probe.on() {
            return Ok(());
        }
        let vote: Option<Vote> = self.meta(VOTE).await?;
        let purged: Option<LogId> = self.meta(LAST_PURGED).await?;
        let mut entries = Vec::new();
        for (_, v) in self.raw(Bound::Unbounded, Bound::Unbounded).await? {
            let e: Entry = decode(&v)?;
            entries.push(entry_id(&e.log_id, &v));
        }
        self.probe.emit(|| RaftEvent::LogRecovered {
            vote: vote.as_ref().map(vote_rec),
            purged: purged.as_ref().map(pos),
            entries,
        });
        Ok(())
    }

    /// A log store whose purges wait until `gate` (its state machine's) says the purged
    /// entries' effects are durable.
    ///
    /// openraft purges the log as soon as it hands a snapshot to the state machine, before
    /// the install is done, and the state machine syncs its applies only now and then. A
    /// crash in between would leave a log purged past what the state machine holds, with
    /// nothing left to apply the difference from.
    pub fn with_purge_gate(storage: DynStorage, gate: DurableApplied) -> Self {
        Self {
            purge_gate: Some(gate),
            ..Self::new(storage)
        }
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RaftStorageError> {
        match self.storage.get_meta(key).await {
            Ok(Some(bytes)) => decode(&bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(StorageIOError::read_logs(&e).into()),
        }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), RaftStorageError> {
        self.storage
            .write_batch(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Applies a change to the tail and commits the same change to the storage. On an error
    /// the tail is dropped, since what reached the storage is unknown.
    async fn commit_and_update(
        &self,
        batch: WriteBatch,
        change: impl FnOnce(&mut Tail),
    ) -> Result<(), RaftStorageError> {
        change(&mut self.tail());
        let r = self.commit(batch).await;
        if r.is_err() {
            *self.tail() = Tail::default();
        }
        r
    }

    /// The keys of the entries in `[start, end]` bounds (no decoding).
    async fn entry_keys(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Vec<u8>>, RaftStorageError> {
        Ok(self
            .raw(start, end)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The stored (key, encoded entry) pairs with indices within the bounds.
    async fn raw(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Pair>, RaftStorageError> {
        let key = |b: Bound<u64>| b.map(entry_key);
        self.storage
            .scan(
                KeyRange {
                    start: key(start),
                    end: key(end),
                },
                usize::MAX,
            )
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    /// Every entry the log holds (not purged), for checks: index -> (term, a hash of the
    /// entry's encoded payload). A term has at most one leader, so the term names the leader.
    pub async fn summary(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, (u64, u64)>, RaftStorageError> {
        use std::hash::Hasher;
        let mut out = std::collections::BTreeMap::new();
        for e in self.entries(Bound::Unbounded, Bound::Unbounded).await? {
            let mut h = rustc_hash::FxHasher::default();
            h.write(&encode(&e.payload)?);
            out.insert(e.log_id.index, (e.log_id.leader_id.term, h.finish()));
        }
        Ok(out)
    }

    async fn entries(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.raw(start, end)
            .await?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
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
        self.entries(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged: Option<LogId> = self.meta(LAST_PURGED).await?;
        // Read once per start; the log holds what was not purged yet.
        let last = match self.raw(Bound::Unbounded, Bound::Unbounded).await?.last() {
            Some((_, v)) => Some(decode::<Entry>(v)?.log_id),
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
        let mut b = WriteBatch::new();
        b.put_meta(VOTE, encode(vote)?);
        // Planted bug: the vote waits for the next sync instead of forcing one.
        b.unsynced = crate::bugs::active(crate::bugs::Bug::RaftVoteNotSynced);
        self.storage
            .write_batch(b)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.probe.emit(|| RaftEvent::VoteSaved(vote_rec(vote)));
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        self.meta(VOTE).await
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
        let mut b = WriteBatch::new();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut ids = Vec::new();
        for e in &entries {
            let bytes = encode(e)?;
            if self.probe.on() {
                ids.push(entry_id(&e.log_id, &bytes));
            }
            b.put(entry_key(e.log_id.index), bytes);
        }
        // Planted bug: acknowledge entries the disk may not hold yet.
        b.unsynced = crate::bugs::active(crate::bugs::Bug::RaftAckBeforeSync);
        // Durable before the callback: openraft may count this entry toward a quorum.
        let r = if entries.is_empty() {
            Ok(())
        } else {
            self.commit_and_update(b, |tail| tail.append(entries)).await
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
        // Remove entries at and after `log_id.index`.
        let doomed = self
            .entry_keys(Bound::Included(log_id.index), Bound::Unbounded)
            .await?;
        let mut b = WriteBatch::new();
        for key in doomed {
            b.delete(key);
        }
        // Reported before it is written: from here on a crash may leave either log.
        self.probe
            .emit(|| RaftEvent::Truncated { from: log_id.index });
        self.commit_and_update(b, |tail| tail.truncate(log_id.index))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // Planted bug: purge without waiting for the state machine's applies to be durable.
        let gated = !crate::bugs::active(crate::bugs::Bug::RaftPurgeUngated);
        if let Some(gate) = self.purge_gate.as_ref().filter(|_| gated) {
            gate.wait_covers(log_id.index, PURGE_WAIT)
                .await
                .map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
        }
        let doomed = self
            .entry_keys(Bound::Unbounded, Bound::Included(log_id.index))
            .await?;
        let mut b = WriteBatch::new();
        for key in doomed {
            b.delete(key);
        }
        b.put_meta(LAST_PURGED, encode(&log_id)?);
        self.commit_and_update(b, |tail| tail.purge(log_id.index))
            .await?;
        self.probe.emit(|| RaftEvent::Purged(pos(&log_id)));
        Ok(())
    }
}
