//! The local half of the replicated modes (MST, eventual, none): objects with versions in one
//! storage engine, local writes stamped by the node's HLC, and last-writer-wins merging of
//! entries from peers. Every write goes through one lock so that a merge's read-compare-write
//! is atomic with respect to local writes.

use std::ops::Bound;
use std::sync::Arc;

use super::clock::HlcClock;
use super::{
    object_id, object_key, scan_prefix, ObjectEntry, ObjectId, Result, ShardError, TxnOp, Version,
};
use crate::coverage::{self, Corner};
use crate::storage::{DynStorage, KeyRange, WriteBatch};

/// Pairs read per page when a scan or count walks the store.
const PAGE: usize = 1024;

/// Whether `remote` replaces `local` under last-writer-wins: the higher version (HLC, then
/// node id) wins; equal versions are the same write.
pub fn lww_wins(remote: &ObjectEntry, local: Option<&ObjectEntry>) -> bool {
    if crate::bugs::active(crate::bugs::Bug::LwwRemoteWins) {
        return true;
    }
    match local {
        None => true,
        Some(l) => {
            coverage::hit_if(
                remote.version.hlc == l.version.hlc && remote.version.node != l.version.node,
                Corner::HlcTieBrokenByNode,
            );
            remote.version > l.version
        }
    }
}

/// Called with the entries a write or merge stored, inside the write lock.
pub type OnApplied<'a> = &'a (dyn Fn(&[(ObjectId, ObjectEntry)]) + Send + Sync);

/// One replica's objects.
pub struct LocalStore {
    /// The engine.
    pub storage: DynStorage,
    /// The node's clock.
    pub hlc: Arc<HlcClock>,
    lock: tokio::sync::Mutex<()>,
}

impl LocalStore {
    /// A store over `storage`.
    pub fn new(storage: DynStorage, hlc: Arc<HlcClock>) -> Self {
        LocalStore {
            storage,
            hlc,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes in the newest version stored (tombstones included), so the node's clock never
    /// stamps a write older than one it holds. The HLC lives in memory: after a restart on a
    /// clock that runs behind, a new write would otherwise get an older version than writes
    /// it acknowledged before, and lose to them under last-writer-wins on every replica but
    /// this one (which stores it over them).
    pub async fn recover_clock(&self) -> Result<()> {
        let mut newest: Option<super::Hlc> = None;
        self.walk(&[], |_, e| {
            newest = newest.max(Some(e.version.hlc));
            true
        })
        .await?;
        if let Some(h) = newest {
            coverage::hit_if(self.hlc.observe(h), Corner::HlcRecoveredAhead);
        }
        Ok(())
    }

    /// The stored entry, tombstones included.
    pub async fn entry(&self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        match self.storage.get(&object_key(id)).await? {
            Some(b) => Ok(Some(ObjectEntry::decode(id, &b)?)),
            None => Ok(None),
        }
    }

    /// The live object.
    pub async fn get(&self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        Ok(self.entry(id).await?.filter(|e| !e.tombstone))
    }

    /// Calls `f` on every stored entry under an id prefix, in id order, a page at a time;
    /// stops when `f` returns false.
    pub async fn walk(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(ObjectId, ObjectEntry) -> bool,
    ) -> Result<()> {
        let mut range = KeyRange::prefix(&scan_prefix(prefix)?);
        loop {
            let page = self.storage.scan(range.clone(), PAGE).await?;
            let full = page.len() == PAGE;
            let last = page.last().map(|(k, _)| k.clone());
            for (k, v) in page {
                let id = object_id(&k).ok_or_else(|| {
                    ShardError::Corrupt(format!("storage key {k:?} is not an object"))
                })?;
                if !f(id, ObjectEntry::decode(id, &v)?) {
                    return Ok(());
                }
            }
            match (full, last) {
                (true, Some(last)) => range.start = Bound::Excluded(last),
                _ => return Ok(()),
            }
        }
    }

    /// The number of live objects.
    pub async fn count(&self) -> Result<u64> {
        let mut n = 0;
        self.walk(&[], |_, e| {
            n += u64::from(!e.tombstone);
            true
        })
        .await?;
        Ok(n)
    }

    /// Live objects under a prefix, at most `limit`.
    pub async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.walk(prefix, |id, e| {
            if !e.tombstone {
                out.push((id, e));
            }
            out.len() < limit
        })
        .await?;
        Ok(out)
    }

    /// Stored entries (tombstones included) with `start <= id <= end`, at most `limit`.
    pub async fn range(
        &self,
        start: ObjectId,
        end: ObjectId,
        limit: usize,
    ) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        let mut out = Vec::new();
        if start > end {
            return Ok(out);
        }
        let mut range = KeyRange::between(&object_key(start), &object_key(end));
        range.end = Bound::Included(object_key(end));
        let pairs = self.storage.scan(range, limit).await?;
        for (k, v) in pairs {
            if let Some(id) = object_id(&k) {
                out.push((id, ObjectEntry::decode(id, &v)?));
            }
        }
        Ok(out)
    }

    /// Applies local writes (`None`: delete, stored as a tombstone) with one new version,
    /// atomically with whatever `extra` adds to the batch, if every `(id, expected)` in
    /// `reads` still holds (compared by version; absent and deleted are the same).
    pub async fn write_local(
        &self,
        reads: &[(ObjectId, Option<ObjectEntry>)],
        writes: Vec<TxnOp>,
        extra: impl FnOnce(&mut WriteBatch, &[(ObjectId, ObjectEntry)]),
        on_applied: OnApplied<'_>,
    ) -> Result<(Version, Vec<(ObjectId, ObjectEntry)>)> {
        let _guard = self.lock.lock().await;
        for (id, expected) in reads {
            let now = self.get(*id).await?.map(|e| e.version);
            if now != expected.as_ref().map(|e| e.version) {
                return Err(ShardError::Conflict(*id));
            }
        }
        let version = self.hlc.tick();
        let stored: Vec<(ObjectId, ObjectEntry)> = writes
            .into_iter()
            .map(|(id, e)| {
                let mut e = e.unwrap_or_else(|| ObjectEntry::tombstone(version));
                e.version = version;
                (id, e)
            })
            .collect();
        let mut batch = WriteBatch::new();
        for (id, e) in &stored {
            batch.put(object_key(*id), e.encode());
        }
        extra(&mut batch, &stored);
        self.storage.write_batch(batch).await?;
        on_applied(&stored);
        Ok((version, stored))
    }

    /// Merges entries from a peer: each one that wins under `wins` replaces the local entry.
    /// Returns the entries stored.
    pub async fn merge(
        &self,
        remote: Vec<(ObjectId, ObjectEntry)>,
        wins: fn(&ObjectEntry, Option<&ObjectEntry>) -> bool,
        on_applied: OnApplied<'_>,
    ) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        // One candidate per id: the one that would win among the received.
        let mut best: std::collections::BTreeMap<ObjectId, ObjectEntry> = Default::default();
        for (id, e) in remote {
            if wins(&e, best.get(&id)) {
                best.insert(id, e);
            }
        }
        let _guard = self.lock.lock().await;
        let mut batch = WriteBatch::new();
        let mut stored = Vec::new();
        for (id, e) in best {
            coverage::hit_if(self.hlc.observe(e.version.hlc), Corner::HlcRemoteAhead);
            let local = self.entry(id).await?;
            if wins(&e, local.as_ref()) {
                batch.put(object_key(id), e.encode());
                stored.push((id, e));
            } else {
                coverage::hit_if(
                    local.is_some_and(|l| l.tombstone && !e.tombstone),
                    Corner::HlcTombstoneBeatsWrite,
                );
            }
        }
        if !stored.is_empty() {
            self.storage.write_batch(batch).await?;
            on_applied(&stored);
        }
        Ok(stored)
    }

    /// Deletes raw keys (outside the object space) whose stored entry still has the given
    /// version, atomically with respect to local writes.
    pub async fn remove_if_version(&self, keys: Vec<(Vec<u8>, Version)>) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut batch = WriteBatch::new();
        for (k, v) in keys {
            if let Some(bytes) = self.storage.get(&k).await? {
                if ObjectEntry::decode(0, &bytes)?.version == v {
                    batch.delete(k);
                }
            }
        }
        if !batch.is_empty() {
            self.storage.write_batch(batch).await?;
        }
        Ok(())
    }
}
