//! Raft snapshots as streams: what openraft's generic `SnapshotData` is for a shard.
//!
//! On the node that built it, a snapshot is a held engine snapshot (zero-copy) that is turned
//! into the wire format only while it is being sent. On a receiving node it is the channel of
//! wire chunks as they arrive; the state machine decodes and installs them as they come. No
//! step holds the whole snapshot.

use crate::storage::{DynStorage, StorageError, ZeroCopySnapshot};

/// Capacity of the chunk channel between the network and an install: the network waits when
/// the install falls behind, so memory stays at a few chunks.
pub const INCOMING_CHUNKS: usize = 4;

/// A snapshot as openraft carries it.
pub enum SnapshotData {
    /// A snapshot held by the engine of `storage`, streamed on demand.
    Local {
        /// The storage holding it.
        storage: DynStorage,
        /// The engine snapshot.
        snapshot: ZeroCopySnapshot,
    },
    /// Wire-format chunks arriving from the leader.
    Incoming(tokio::sync::mpsc::Receiver<Result<Vec<u8>, StorageError>>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::Local { snapshot, .. } => {
                write!(f, "SnapshotData::Local({})", snapshot.snapshot_id)
            }
            SnapshotData::Incoming(_) => f.write_str("SnapshotData::Incoming"),
        }
    }
}

/// A process-wide gauge of the snapshot bytes in flight on this process: chunks encoded and
/// not yet acknowledged by the receiver, and chunks received and not yet taken by the
/// decoder. Its peak is what `bench raft-snapshot` reports; it never influences behaviour.
pub mod held {
    use std::sync::atomic::{AtomicU64, Ordering};

    static HELD: AtomicU64 = AtomicU64::new(0);
    static PEAK: AtomicU64 = AtomicU64::new(0);

    /// `n` more bytes are held.
    pub fn add(n: usize) {
        let now = HELD.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    /// `n` bytes were released.
    pub fn sub(n: usize) {
        let _ = HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
            Some(h.saturating_sub(n as u64))
        });
    }

    /// The largest number of bytes held at once since the last reset.
    pub fn peak() -> u64 {
        PEAK.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub fn now() -> u64 {
        HELD.load(Ordering::Relaxed)
    }

    /// Starts a new measurement.
    pub fn reset() {
        PEAK.store(HELD.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}
