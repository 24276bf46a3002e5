//! The Raft log over any storage engine: entries under their big-endian index in the data
//! namespace; vote, last purged id and last log id in the meta namespace. Every
//! change is one atomic, durable write batch, done before the call reports success (for
//! `append`, before the flush callback fires), so it survives crash and restart.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};
use crate::storage::{DynStorage, KeyRange, Pair, WriteBatch};

const VOTE: &[u8] = b"raft/vote";
const LAST_PURGED: &[u8] = b"raft/last_purged";
const LAST_LOG: &[u8] = b"raft/last_log";

fn entry_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RaftStorageError> {
    bincode::serialize(v).map_err(|e| StorageIOError::write(&e).into())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RaftStorageError> {
    bincode::deserialize(bytes).map_err(|e| StorageIOError::read(&e).into())
}

/// The log store. Clones share the storage.
#[derive(Clone)]
pub struct LogStore {
    storage: DynStorage,
}

impl LogStore {
    /// A log store over `storage` (a storage of its own, not the shard's application data).
    pub fn new(storage: DynStorage) -> Self {
        Self { storage }
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
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged: Option<LogId> = self.meta(LAST_PURGED).await?;
        let last: Option<LogId> = self.meta(LAST_LOG).await?;
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
        self.storage
            .write_batch(b)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        self.meta(VOTE).await
    }

    // `save_committed` / `read_committed` keep openraft's defaults (not saved): the state
    // machine persists its applied log id in the same batch as the data it applies, so a
    // restarted node resumes from there, and one durable write per commit-index change per
    // node is saved.

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
        let mut last = None;
        for e in entries {
            b.put(entry_key(e.log_id.index), encode(&e)?);
            last = Some(e.log_id);
        }
        if let Some(last) = last {
            b.put_meta(LAST_LOG, encode(&last)?);
        }
        // Planted bug: acknowledge entries the disk may not hold yet.
        b.unsynced = crate::bugs::active("raft-ack-before-sync");
        // Durable before the callback: openraft may count this entry toward a quorum.
        let r = if last.is_none() {
            Ok(())
        } else {
            self.commit(b).await
        };
        match &r {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        r
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // Remove entries at and after `log_id.index`; the new last is the one before it.
        let doomed = self
            .entry_keys(Bound::Included(log_id.index), Bound::Unbounded)
            .await?;
        let prev = match log_id.index.checked_sub(1) {
            Some(i) => self
                .entries(Bound::Included(i), Bound::Included(i))
                .await?
                .first()
                .map(|e| e.log_id),
            None => None,
        };
        let prev = match prev {
            Some(p) => Some(p),
            None => self.meta::<LogId>(LAST_PURGED).await?,
        };
        let mut b = WriteBatch::new();
        for key in doomed {
            b.delete(key);
        }
        match prev {
            Some(p) => b.put_meta(LAST_LOG, encode(&p)?),
            None => b.delete_meta(LAST_LOG),
        };
        self.commit(b).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let doomed = self
            .entry_keys(Bound::Unbounded, Bound::Included(log_id.index))
            .await?;
        let mut b = WriteBatch::new();
        for key in doomed {
            b.delete(key);
        }
        b.put_meta(LAST_PURGED, encode(&log_id)?);
        let last: Option<LogId> = self.meta(LAST_LOG).await?;
        if last.is_none_or(|l| l.index < log_id.index) {
            b.put_meta(LAST_LOG, encode(&log_id)?);
        }
        self.commit(b).await
    }
}
