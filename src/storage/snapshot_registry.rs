//! Bookkeeping shared by the engines for the snapshots they hold: ids, metadata, the native
//! handle, and a bound on how many are kept.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{Result, StorageError, ZeroCopySnapshot};
use crate::coverage::{self, Corner};

/// The meta key under which Raft records the last applied log index (big-endian `u64`); a
/// snapshot reports it as `last_included_log_index`.
pub const LAST_LOG_INDEX_KEY: &[u8] = b"raft/last_applied_index";

/// How many snapshots an engine keeps at once; taking another releases the oldest. Held
/// snapshots pin engine resources (redb pages, fjall versions), so the number is bounded.
pub const MAX_HELD_SNAPSHOTS: usize = 4;

/// Decodes the value stored under [`LAST_LOG_INDEX_KEY`].
pub fn last_log_index_of(value: Option<&Vec<u8>>) -> Option<u64> {
    let bytes: [u8; 8] = value?.as_slice().try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Snapshots held by one engine, keyed by a per-instance counter.
#[derive(Debug)]
pub struct SnapshotRegistry<H> {
    next_id: u64,
    held: BTreeMap<u64, (ZeroCopySnapshot, H)>,
}

impl<H> Default for SnapshotRegistry<H> {
    fn default() -> Self {
        Self {
            next_id: 1,
            held: BTreeMap::new(),
        }
    }
}

impl<H> SnapshotRegistry<H> {
    /// Registers a snapshot, assigning its id; releases the oldest beyond the bound.
    pub fn insert(&mut self, mut info: ZeroCopySnapshot, handle: H) -> ZeroCopySnapshot {
        let id = self.next_id;
        self.next_id += 1;
        info.snapshot_id = format!("snap-{id}");
        self.held.insert(id, (info.clone(), handle));
        while self.held.len() > MAX_HELD_SNAPSHOTS {
            coverage::hit(Corner::StorageSnapshotEvicted);
            self.held.pop_first();
        }
        info
    }

    fn key(snapshot_id: &str) -> Option<u64> {
        snapshot_id.strip_prefix("snap-")?.parse().ok()
    }

    /// The native handle of a held snapshot.
    pub fn handle(&self, snapshot_id: &str) -> Result<&H> {
        Self::key(snapshot_id)
            .and_then(|k| self.held.get(&k))
            .map(|(_, h)| h)
            .ok_or_else(|| StorageError::UnknownSnapshot(snapshot_id.to_string()))
    }

    /// The newest held snapshot.
    pub fn latest(&self) -> Option<ZeroCopySnapshot> {
        self.held
            .last_key_value()
            .map(|(_, (info, _))| info.clone())
    }

    /// Every held snapshot, oldest first.
    pub fn list(&self) -> Vec<ZeroCopySnapshot> {
        self.held.values().map(|(info, _)| info.clone()).collect()
    }

    /// Drops one snapshot (unknown ids are fine).
    pub fn release(&mut self, snapshot_id: &str) {
        if let Some(k) = Self::key(snapshot_id) {
            coverage::hit_if(
                self.held.remove(&k).is_some(),
                Corner::StorageSnapshotReleased,
            );
        }
    }

    /// Drops every snapshot whose handle matches.
    pub fn release_where(&mut self, mut f: impl FnMut(&H) -> bool) {
        self.held.retain(|_, (_, h)| !f(h));
    }
}

/// A [`SnapshotRegistry`] behind a lock, for engines whose methods take `&self`.
#[derive(Debug)]
pub struct HeldSnapshots<H>(Mutex<SnapshotRegistry<H>>);

impl<H> Default for HeldSnapshots<H> {
    fn default() -> Self {
        Self(Mutex::new(SnapshotRegistry::default()))
    }
}

impl<H: Clone> HeldSnapshots<H> {
    fn lock(&self) -> MutexGuard<'_, SnapshotRegistry<H>> {
        // The registry stays consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a snapshot (see [`SnapshotRegistry::insert`]).
    pub fn insert(&self, info: ZeroCopySnapshot, handle: H) -> ZeroCopySnapshot {
        self.lock().insert(info, handle)
    }

    /// A copy of a held snapshot's native handle.
    pub fn handle(&self, snapshot_id: &str) -> Result<H> {
        self.lock().handle(snapshot_id).cloned()
    }

    /// The newest held snapshot.
    pub fn latest(&self) -> Option<ZeroCopySnapshot> {
        self.lock().latest()
    }

    /// Every held snapshot, oldest first.
    pub fn list(&self) -> Vec<ZeroCopySnapshot> {
        self.lock().list()
    }

    /// Drops one snapshot (unknown ids are fine).
    pub fn release(&self, snapshot_id: &str) {
        self.lock().release(snapshot_id)
    }

    /// Drops every snapshot whose handle matches.
    pub fn release_where(&self, f: impl FnMut(&H) -> bool) {
        self.lock().release_where(f)
    }
}
