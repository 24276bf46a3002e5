//! Shards: one [`ShardState`] trait over every replication mode.
//!
//! - [`RaftShard`]: linearizable; writes go through openraft, reads are confirmed by a quorum.
//! - [`MstShard`]: conflict-free; writes apply locally and are acknowledged at once, replicas
//!   reconcile by Merkle Search Tree anti-entropy, last writer (by HLC, then node id) wins.
//! - [`BasicShard`]: eventual consistency (apply locally, replicate asynchronously, repair
//!   from a durable outbox), or no replication when it has no peers.
//!
//! Every shard stores objects ([`ObjectEntry`], keyed by a `u64` id) in one application
//! storage engine under the key `b'o' ++ id (big-endian)`, so that ids scan in numeric order.
//! [`ShardFactory`] builds any kind from a [`ShardMetadata`]; [`ObjectShard`] serves one over
//! the network and [`ShardClient`] calls it.

pub mod basic;
pub mod clock;
pub mod factory;
pub mod local;
pub mod mst;
pub mod raft_shard;
pub mod server;
pub mod txn;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::storage::{DynStorage, EngineKind, StorageError};
pub use basic::{BasicOptions, BasicShard};
pub use clock::{Hlc, HlcClock, NodeClock, Version};
pub use factory::{NodeContext, ShardFactory};
pub use mst::{MstOptions, MstShard};
pub use raft_shard::RaftShard;
pub use server::{ObjectShard, ShardClient, ShardRequest, ShardResponse};
pub use txn::{ShardTransaction, TxnOp};

/// An object id.
pub type ObjectId = u64;

/// An ODGM object: named fields, the version of its last write, and a tombstone flag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Field name -> bytes.
    pub fields: BTreeMap<String, Vec<u8>>,
    /// When and where it was last written (set by the shard that accepts the write).
    pub version: Version,
    /// A delete: kept (and replicated) so that older writes cannot bring the object back.
    pub tombstone: bool,
}

impl ObjectEntry {
    /// An object with one field.
    pub fn with_field(name: &str, value: impl Into<Vec<u8>>) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(name.to_string(), value.into());
        ObjectEntry {
            fields,
            ..Default::default()
        }
    }

    /// A tombstone at `version`.
    pub fn tombstone(version: Version) -> Self {
        ObjectEntry {
            fields: BTreeMap::new(),
            version,
            tombstone: true,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("an ObjectEntry always serializes")
    }

    /// Reads the stored form; names the object on failure.
    pub fn decode(id: ObjectId, bytes: &[u8]) -> Result<Self> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(crate::storage::MAX_VALUE_BYTES as u64)
            .deserialize(bytes)
            .map_err(|e| ShardError::Corrupt(format!("object {id}: {e}")))
    }
}

/// How a shard replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ShardKind {
    /// openraft: linearizable.
    Raft,
    /// Merkle Search Tree anti-entropy: conflict-free, last writer wins.
    Mst,
    /// Asynchronous push with an outbox for repair: eventually consistent.
    Eventual,
    /// One replica, no replication.
    None,
}

impl ShardKind {
    /// The name used in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ShardKind::Raft => "raft",
            ShardKind::Mst => "mst",
            ShardKind::Eventual => "eventual",
            ShardKind::None => "none",
        }
    }
}

impl std::fmt::Display for ShardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The replication guarantee a shard gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationType {
    /// Linearizable (Raft).
    Consensus,
    /// Conflict-free merge (MST).
    ConflictFree,
    /// Eventually consistent.
    EventualConsistency,
    /// A single copy.
    None,
}

/// Per-kind options of a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardOptions {
    /// Raft timing and snapshot policy.
    pub raft: crate::raft::RaftOptions,
    /// MST anti-entropy.
    pub mst: MstOptions,
    /// Eventual-consistency replication.
    pub eventual: BasicOptions,
}

/// What a shard is and where its replicas live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMetadata {
    /// Shard id.
    pub id: u64,
    /// The collection it belongs to.
    pub collection: String,
    /// Partition of the collection.
    pub partition_id: u32,
    /// Node ids of all replicas (including this node).
    pub replicas: Vec<u64>,
    /// Replication mode.
    pub kind: ShardKind,
    /// Options.
    pub options: ShardOptions,
}

/// Why a shard operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ShardError {
    /// The storage engine refused the operation before doing anything (it had stopped, or
    /// the input was over its limits).
    #[error("storage: {0}")]
    Storage(String),
    /// The storage engine failed in the middle of the operation (an I/O error, say, while
    /// committing): a write may or may not have taken effect, and may show up after a
    /// restart.
    #[error("storage failed mid-operation: {0}")]
    StorageFailed(String),
    /// Stored or received bytes do not decode.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A Raft shard's replica that is not the leader and could not forward.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// The request could not complete; it may or may not have taken effect.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A transaction's reads were no longer current at commit; nothing was applied.
    #[error("transaction conflict on object {0}")]
    Conflict(ObjectId),
    /// The shard kind does not support this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The shard is closed or not yet initialized.
    #[error("shard not ready")]
    NotReady,
    /// A request was malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<StorageError> for ShardError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(_) | StorageError::Engine(_) | StorageError::Corruption(_) => {
                ShardError::StorageFailed(e.to_string())
            }
            _ => ShardError::Storage(e.to_string()),
        }
    }
}

impl ShardError {
    /// Whether the operation may have taken effect although it failed (a client must record
    /// it as indeterminate).
    pub fn is_indeterminate(&self) -> bool {
        matches!(
            self,
            ShardError::Unavailable(_) | ShardError::StorageFailed(_)
        )
    }
}

/// Result of a shard operation.
pub type Result<T> = std::result::Result<T, ShardError>;

/// One replication mode behind one interface. Ids are `u64`; values are [`ObjectEntry`]s.
///
/// `set` and `delete` return the version they gave the write, which is what the convergence
/// checker compares replicas by.
#[async_trait]
pub trait ShardState: Send + Sync {
    /// What the shard is.
    fn meta(&self) -> &ShardMetadata;
    /// The storage engine.
    fn storage_type(&self) -> EngineKind {
        self.storage().engine()
    }
    /// The replication guarantee.
    fn replication_type(&self) -> ReplicationType;
    /// The application storage.
    fn storage(&self) -> &DynStorage;

    /// Starts background work (replication, anti-entropy) and marks the shard ready.
    async fn initialize(&self) -> Result<()>;
    /// Stops background work; later calls fail with `NotReady`.
    async fn close(&self) -> Result<()>;
    /// Whether the shard is ready to serve.
    fn watch_readiness(&self) -> tokio::sync::watch::Receiver<bool>;

    /// An object, or `None` if absent or deleted.
    async fn get(&self, id: ObjectId) -> Result<Option<ObjectEntry>>;
    /// Writes an object; returns the version it was given.
    async fn set(&self, id: ObjectId, entry: ObjectEntry) -> Result<Version> {
        self.commit_transaction(Vec::new(), vec![(id, Some(entry))])
            .await
    }
    /// Deletes an object; returns the version of the delete.
    async fn delete(&self, id: ObjectId) -> Result<Version> {
        self.commit_transaction(Vec::new(), vec![(id, None)]).await
    }
    /// The number of live objects.
    async fn count(&self) -> Result<u64>;
    /// Live objects whose big-endian id starts with `prefix` (all of them for an empty
    /// prefix), in id order, at most `limit`.
    async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(ObjectId, ObjectEntry)>>;
    /// Writes several objects atomically.
    async fn batch_set(&self, entries: Vec<(ObjectId, ObjectEntry)>) -> Result<Version> {
        let writes = entries.into_iter().map(|(k, e)| (k, Some(e))).collect();
        self.commit_transaction(Vec::new(), writes).await
    }
    /// Deletes several objects atomically.
    async fn batch_delete(&self, ids: Vec<ObjectId>) -> Result<Version> {
        let writes = ids.into_iter().map(|k| (k, None)).collect();
        self.commit_transaction(Vec::new(), writes).await
    }

    /// Starts a transaction: reads see its own writes; commit applies all writes atomically,
    /// and only if every object it read is unchanged (else `Conflict`, nothing applied).
    async fn begin_transaction(&self) -> Result<Box<dyn ShardTransaction>>;
    /// Applies a transaction's writes atomically if its reads are still current. Called by
    /// [`ShardTransaction::commit`].
    async fn commit_transaction(
        &self,
        reads: Vec<(ObjectId, Option<ObjectEntry>)>,
        writes: Vec<(ObjectId, Option<ObjectEntry>)>,
    ) -> Result<Version>;

    /// Takes an engine-native (zero-copy) snapshot of this replica; returns its id.
    async fn create_snapshot(&self) -> Result<String>;
    /// Restores this replica to a snapshot taken by `create_snapshot`.
    async fn restore_from_snapshot(&self, snapshot_id: &str) -> Result<()>;
    /// Reclaims space: releases old snapshots (and, on Raft, compacts the log).
    async fn compact_storage(&self) -> Result<()>;

    /// Counters and digests for the harness.
    fn stats(&self) -> ShardStats;

    /// For callers that need the concrete kind (e.g. a Raft shard's membership changes).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What a shard reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Bytes sent by the repair path (outbox retries, MST anti-entropy).
    pub repair_bytes: u64,
    /// The MST root hash (MST shards).
    pub root_hash: Option<Vec<u8>>,
}

/// Takes a zero-copy snapshot of a replica's storage and returns its id.
pub(crate) async fn snapshot_local(storage: &DynStorage) -> Result<String> {
    Ok(storage.create_zero_copy_snapshot().await?.snapshot_id)
}

/// A replica's background tasks, aborted when it closes.
#[derive(Default)]
pub(crate) struct Tasks(std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl Tasks {
    pub(crate) fn push(&self, task: tokio::task::JoinHandle<()>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    pub(crate) fn abort_all(&self) {
        for t in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// Restores a replica's storage to one of its held snapshots.
pub(crate) async fn restore_local(storage: &DynStorage, snapshot_id: &str) -> Result<()> {
    let snap = storage
        .list_snapshots()
        .await?
        .into_iter()
        .find(|s| s.snapshot_id == snapshot_id)
        .ok_or_else(|| ShardError::Invalid(format!("no held snapshot {snapshot_id:?}")))?;
    storage.restore_from_snapshot(&snap).await?;
    Ok(())
}

/// Releases every held snapshot but the newest.
pub(crate) async fn release_older_snapshots(storage: &DynStorage) -> Result<()> {
    let held = storage.list_snapshots().await?;
    for s in held.iter().rev().skip(1) {
        storage.release_snapshot(&s.snapshot_id).await?;
    }
    Ok(())
}

/// A shard shared between its server and its owner.
pub type DynShard = Arc<dyn ShardState>;

/// The storage key of an object.
pub fn object_key(id: ObjectId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(OBJECT_PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The object id of a storage key, if it is one.
pub fn object_id(key: &[u8]) -> Option<ObjectId> {
    match key {
        [OBJECT_PREFIX, rest @ ..] if rest.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(rest);
            Some(u64::from_be_bytes(b))
        }
        _ => None,
    }
}

/// The key prefix of objects.
pub const OBJECT_PREFIX: u8 = b'o';

/// The storage prefix for an id prefix (`prefix` is at most 8 bytes).
pub(crate) fn scan_prefix(prefix: &[u8]) -> Result<Vec<u8>> {
    if prefix.len() > 8 {
        return Err(ShardError::Invalid(format!(
            "scan prefix of {} bytes; ids are 8 bytes",
            prefix.len()
        )));
    }
    let mut p = vec![OBJECT_PREFIX];
    p.extend_from_slice(prefix);
    Ok(p)
}

/// Decodes stored pairs into live objects (tombstones dropped).
pub(crate) fn decode_live(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(ObjectId, ObjectEntry)>> {
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let id = object_id(&k)
            .ok_or_else(|| ShardError::Corrupt(format!("storage key {k:?} is not an object")))?;
        let e = ObjectEntry::decode(id, &v)?;
        if !e.tombstone {
            out.push((id, e));
        }
    }
    Ok(out)
}

/// The readiness flag every shard keeps.
pub(crate) struct Readiness {
    tx: tokio::sync::watch::Sender<bool>,
}

impl Readiness {
    pub(crate) fn new() -> Self {
        Readiness {
            tx: tokio::sync::watch::channel(false).0,
        }
    }

    pub(crate) fn set(&self, ready: bool) {
        self.tx.send_replace(ready);
    }

    pub(crate) fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ShardError::NotReady)
        }
    }

    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_mid_write_is_indeterminate_a_refusal_is_not() {
        let failed: ShardError = StorageError::Io("sync failed".into()).into();
        assert!(failed.is_indeterminate(), "{failed}");
        let refused: ShardError = StorageError::Stopped("earlier I/O error".into()).into();
        assert!(!refused.is_indeterminate(), "{refused}");
        assert!(ShardError::Unavailable("timed out".into()).is_indeterminate());
        assert!(!ShardError::Conflict(1).is_indeterminate());
    }
}
