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
