//! Turning a replica's storage, and the versions the stack stamps on writes, into what the
//! convergence checker compares.

use std::collections::BTreeMap;

use crate::check::convergence::{Entry, ReplicaState, Stamp};
use crate::shard::{object_id, ObjectEntry, Result, Version, OBJECT_PREFIX};
use crate::storage::{DynStorage, KeyRange};

/// The value the checkers see for an object: its fields, serialized (tombstones: `None`).
pub fn value_of(e: &ObjectEntry) -> Option<Vec<u8>> {
    if e.tombstone {
        None
    } else {
        Some(bincode::serialize(&e.fields).expect("fields serialize"))
    }
}

/// A version as the convergence checker sees it.
pub fn stamp(v: Version) -> Stamp {
    Stamp {
        wall_ms: v.hlc.wall_ms,
        logical: v.hlc.logical,
        node: v.node,
    }
}

/// Every object a replica stores (tombstones included), as the convergence checker's entries.
pub async fn replica_entries(storage: &DynStorage) -> Result<BTreeMap<u64, Entry>> {
    let pairs = storage
        .scan(KeyRange::prefix(&[OBJECT_PREFIX]), usize::MAX)
        .await?;
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(id) = object_id(&k) {
            let e = ObjectEntry::decode(id, &v)?;
            out.insert(
                id,
                Entry {
                    value: value_of(&e),
                    version: stamp(e.version),
                },
            );
        }
    }
    Ok(out)
}

/// One replica's state for the checker.
pub async fn replica_state(
    node: u64,
    storage: &DynStorage,
    root_hash: Option<Vec<u8>>,
) -> Result<ReplicaState> {
    Ok(ReplicaState {
        node,
        live: true,
        entries: replica_entries(storage).await?,
        root_hash,
    })
}

/// A digest of a replica's entries (for convergence-time samples).
pub fn digest(entries: &BTreeMap<u64, Entry>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    entries.hash(&mut h);
    h.finish()
}
