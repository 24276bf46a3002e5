//! `ObjectShardStateMachine`: applies shard commands to the application storage.
//!
//! The last applied log id and the membership are written in the same atomic batch as the
//! data they describe, so a restart never applies an entry twice or skips one.
//!
//! Applies are atomic but not synced one by one: the Raft log holds every entry durably, so a
//! crash that drops the newest unsynced batches only moves the applied id back, and the node
//! applies those entries again from its log. Every [`SYNC_EVERY`]th batch is synced, which
//! bounds that replay, and so is the state a snapshot is built from, before openraft may purge
//! the log entries it covers. A node gives its state machine the application storage through
//! [`WriteBack`](crate::storage::write_back::WriteBack): the unsynced applies wait in memory
//! (reads see them) and reach the engine in one commit with the next synced one. Snapshots are
//! engine snapshots (zero-copy) streamed in the wire format; installs are atomic and synced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};

use super::snapshot::SnapshotData;
use super::types::{
    entry_id, pos, CommandResult, Entry, LogId, OpResult, RaftStorageError, ShardOp, SnapshotMeta,
    StoredMembership, TypeConfig,
};
use crate::coverage::{self, Corner};
use crate::probe::{Probe, RaftEvent};
use crate::storage::stream::{self, SnapshotHeader, DEFAULT_CHUNK_BYTES};
use crate::storage::{
    DynStorage, Pair, StorageError, WriteBatch, ZeroCopySnapshot, LAST_LOG_INDEX_KEY,
};

const APPLIED: &[u8] = b"raft/applied";
/// One apply batch in this many is synced (the others are atomic but may be lost in a crash,
/// to be applied again from the log).
pub const SYNC_EVERY: u64 = 32;
const MEMBERSHIP: &[u8] = b"raft/membership";

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, RaftStorageError> {
    bincode::serialize(v).map_err(|e| StorageIOError::write_state_machine(&e).into())
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, RaftStorageError> {
    bincode::deserialize(b).map_err(|e| StorageIOError::read_state_machine(&e).into())
}

fn sm_read(e: StorageError) -> RaftStorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: StorageError) -> RaftStorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// The meta pairs recording `applied` and, when it changed, `membership`, written with the
/// data they describe.
fn applied_meta(
    applied: Option<LogId>,
    membership: Option<&StoredMembership>,
) -> Result<Vec<Pair>, RaftStorageError> {
    let mut meta = Vec::with_capacity(3);
    if let Some(m) = membership {
        meta.push((MEMBERSHIP.to_vec(), enc(m)?));
    }
    if let Some(a) = applied {
        meta.push((APPLIED.to_vec(), enc(&a)?));
        meta.push((LAST_LOG_INDEX_KEY.to_vec(), a.index.to_be_bytes().to_vec()));
    }
    Ok(meta)
}

/// How far the state machine's effects are durable: the last applied index a crash cannot take
/// back, and how many snapshot installs have failed. The log store waits on it before it
/// purges (see [`crate::raft::LogStore::with_purge_gate`]). Clones share it.
#[derive(Clone)]
pub struct DurableApplied {
    tx: Arc<tokio::sync::watch::Sender<Durable>>,
}

/// What [`DurableApplied`] publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Durable {
    /// The durable applied index plus one (0: nothing applied).
    upto: u64,
    /// Snapshot installs that failed.
    failed_installs: u64,
}

impl DurableApplied {
    fn new(applied: Option<LogId>) -> Self {
        let (tx, _rx) = tokio::sync::watch::channel(Durable {
            upto: applied.map_or(0, |a| a.index + 1),
            failed_installs: 0,
        });
        Self { tx: Arc::new(tx) }
    }

    fn set(&self, applied: Option<LogId>) {
        let upto = applied.map_or(0, |a| a.index + 1);
        self.tx.send_modify(|d| d.upto = d.upto.max(upto));
    }

    fn install_failed(&self) {
        self.tx.send_modify(|d| d.failed_installs += 1);
    }

    /// Whether the effects of every entry up to `index` are durable.
    pub fn covers(&self, index: u64) -> bool {
        self.tx.borrow().upto > index
    }

    /// Waits until the effects of every entry up to `index` are durable. Fails if a snapshot
    /// install fails meanwhile (the state machine will not get there) or after `bound`.
    pub async fn wait_covers(&self, index: u64, bound: std::time::Duration) -> Result<(), String> {
        let mut rx = self.tx.subscribe();
        let failed = rx.borrow().failed_installs;
        let waited = crate::rt::timers::timeout(
            bound,
            rx.wait_for(|d| d.upto > index || d.failed_installs != failed),
        )
        .await;
        match waited {
            Ok(Ok(d)) if d.upto > index => Ok(()),
            Ok(_) => Err(format!(
                "a snapshot install failed before index {index} became durable"
            )),
            Err(_) => Err(format!("index {index} not durable after {bound:?}")),
        }
    }
}

/// The state machine of a Raft shard.
pub struct ObjectShardStateMachine {
    storage: DynStorage,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Apply batches committed since the last synced one.
    unsynced_batches: u64,
    durable: DurableApplied,
    /// The last snapshot built or installed, with its engine snapshot; shared with the
    /// snapshot builders.
    current: Arc<Mutex<Option<(SnapshotMeta, ZeroCopySnapshot)>>>,
    /// Snapshots built by this incarnation (part of a snapshot's id).
    built: u64,
    installed: Arc<AtomicU64>,
    probe: Probe,
}

impl ObjectShardStateMachine {
    /// Opens the state machine over `storage`, recovering what was applied before.
    pub async fn open(storage: DynStorage) -> Result<Self, RaftStorageError> {
        Self::open_with_probe(storage, Probe::default()).await
    }

    /// Opens like [`Self::open`], reporting what it recovers, applies and installs to `probe`.
    pub async fn open_with_probe(
        storage: DynStorage,
        probe: Probe,
    ) -> Result<Self, RaftStorageError> {
        let applied = match storage.get_meta(APPLIED).await.map_err(sm_read)? {
            Some(b) => Some(dec(&b)?),
            None => None,
        };
        let membership = match storage.get_meta(MEMBERSHIP).await.map_err(sm_read)? {
            Some(b) => dec(&b)?,
            None => StoredMembership::default(),
        };
        probe.emit(|| RaftEvent::StateMachineOpened {
            applied: applied.as_ref().map(pos),
        });
        Ok(Self {
            storage,
            applied,
            membership,
            unsynced_batches: 0,
            durable: DurableApplied::new(applied),
            current: Arc::new(Mutex::new(None)),
            built: 0,
            installed: Arc::new(AtomicU64::new(0)),
            probe,
        })
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied.map(|l| l.index)
    }

    /// The application storage.
    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    /// How far what this state machine applied is durable (for the log store's purges).
    pub fn durable_applied(&self) -> DurableApplied {
        self.durable.clone()
    }

    /// Counts snapshots installed from a leader (the handle shares the count).
    pub fn installed_counter(&self) -> Arc<AtomicU64> {
        self.installed.clone()
    }

    /// Applies one command against the batch being built; `overlay` holds the batch's
    /// writes so later operations of the same batch read them. A failed `Expect` aborts the
    /// command: none of its writes reach the batch.
    async fn apply_ops(
        &self,
        ops: &[ShardOp],
        batch: &mut WriteBatch,
        overlay: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<CommandResult, RaftStorageError> {
        let mut results = Vec::with_capacity(ops.len());
        // This command's own writes, in order; merged into the batch only if it commits.
        let mut mine: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                ShardOp::Put { key, value } => {
                    mine.insert(key.clone(), Some(value.clone()));
                    results.push(OpResult::Done);
                }
                ShardOp::Delete { key } => {
                    mine.insert(key.clone(), None);
                    results.push(OpResult::Done);
                }
                ShardOp::Cas { key, expected, new } => {
                    let current = self.value_seen(key, &mine, overlay).await?;
                    let ok = current == *expected;
                    if ok {
                        mine.insert(key.clone(), new.clone());
                    }
                    results.push(OpResult::Cas { ok, current });
                }
                ShardOp::Expect { key, expected } => {
                    if self.value_seen(key, &mine, overlay).await? != *expected {
                        return Ok(CommandResult {
                            results: Vec::new(),
                            aborted: Some(i),
                            index: 0,
                        });
                    }
                    results.push(OpResult::Done);
                }
            }
        }
        for (key, value) in mine {
            match &value {
                Some(v) => batch.put(key.clone(), v.clone()),
                None => batch.delete(key.clone()),
            };
            overlay.insert(key, value);
        }
        Ok(CommandResult {
            results,
            aborted: None,
            index: 0,
        })
    }

    /// A key's value as the command being applied sees it.
    async fn value_seen(
        &self,
        key: &[u8],
        mine: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        overlay: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>, RaftStorageError> {
        if let Some(v) = mine.get(key).or_else(|| overlay.get(key)) {
            return Ok(v.clone());
        }
        self.storage.get(key).await.map_err(sm_read)
    }

    /// Installs a snapshot stream of wire chunks, atomically with its meta.
    async fn install_stream(
        &mut self,
        meta: &SnapshotMeta,
        chunks: futures::stream::BoxStream<'static, Result<Vec<u8>, StorageError>>,
    ) -> Result<(), RaftStorageError> {
        self.probe
            .emit(|| RaftEvent::SnapshotInstalling(meta.last_log_id.as_ref().map(pos)));
        let (_header, pairs) = stream::decode(chunks).await.map_err(sm_write)?;
        coverage::hit(if self.applied.is_some() {
            Corner::RaftInstallOverData
        } else {
            Corner::RaftInstallEmpty
        });
        let meta_pairs = applied_meta(meta.last_log_id, Some(&meta.last_membership))?;
        if crate::bugs::active(crate::bugs::Bug::RaftSnapshotNonAtomic) {
            self.install_in_place(pairs, meta_pairs).await?;
        } else {
            self.storage
                .install_kv_snapshot_from_stream(pairs, meta_pairs)
                .await
                .map_err(sm_write)?;
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // The install is synced, and with it every batch before it.
        self.unsynced_batches = 0;
        self.durable.set(self.applied);
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.probe
            .emit(|| RaftEvent::SnapshotInstalled(self.applied.as_ref().map(pos)));
        let snapshot = self
            .storage
            .create_zero_copy_snapshot()
            .await
            .map_err(sm_read)?;
        set_current(&self.storage, &self.current, meta.clone(), snapshot).await;
        Ok(())
    }

    /// Planted bug `raft-snapshot-non-atomic`: installs a snapshot into the live store step by
    /// step - clear the data and record the snapshot's applied id, then write the pairs one
    /// at a time as they are decoded. A crash part-way leaves a store that claims the
    /// snapshot's index but holds only some of its pairs.
    async fn install_in_place(
        &self,
        mut pairs: crate::storage::KvStream,
        meta_pairs: Vec<Pair>,
    ) -> Result<(), RaftStorageError> {
        let old = self
            .storage
            .scan(crate::storage::KeyRange::all(), usize::MAX)
            .await
            .map_err(sm_read)?;
        let mut first = WriteBatch::new();
        for (k, _) in old {
            first.delete(k);
        }
        for (k, v) in meta_pairs {
            first.put_meta(k, v);
        }
        self.storage.write_batch(first).await.map_err(sm_write)?;
        while let Some(pair) = pairs.next().await {
            let (k, v) = pair.map_err(sm_write)?;
            let mut b = WriteBatch::new();
            b.put(k, v);
            self.storage.write_batch(b).await.map_err(sm_write)?;
        }
        Ok(())
    }

    /// The id of the last snapshot built or installed, readable from outside (cloned handle).
    pub fn current_snapshot_handle(&self) -> CurrentSnapshot {
        CurrentSnapshot(self.current.clone())
    }
}

/// Records the snapshot that `get_current_snapshot` serves and releases the one before.
async fn set_current(
    storage: &DynStorage,
    current: &Mutex<Option<(SnapshotMeta, ZeroCopySnapshot)>>,
    meta: SnapshotMeta,
    snapshot: ZeroCopySnapshot,
) {
    let old = current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace((meta, snapshot));
    if let Some((_, old)) = old {
        let _ = storage.release_snapshot(&old.snapshot_id).await;
    }
}

/// A read-only view of a state machine's current snapshot.
#[derive(Clone)]
pub struct CurrentSnapshot(Arc<Mutex<Option<(SnapshotMeta, ZeroCopySnapshot)>>>);

impl CurrentSnapshot {
    /// The snapshot's openraft id and its engine snapshot, if one exists.
    pub fn get(&self) -> Option<(String, ZeroCopySnapshot)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(m, s)| (m.snapshot_id.clone(), s.clone()))
    }
}

/// The wire chunks of a local snapshot.
pub fn local_chunks(
    storage: &DynStorage,
    snapshot: &ZeroCopySnapshot,
    header: SnapshotHeader,
    chunk_bytes: usize,
) -> impl std::future::Future<
    Output = Result<
        futures::stream::BoxStream<'static, Result<Vec<u8>, StorageError>>,
        StorageError,
    >,
> + Send {
    let storage = storage.clone();
    let snapshot = snapshot.clone();
    async move {
        let pairs = storage.create_kv_snapshot_stream(&snapshot).await?;
        stream::encode(&header, pairs, chunk_bytes)
    }
}

/// Builds a snapshot of the state the state machine had when openraft asked for the builder.
///
/// openraft runs `build_snapshot` in a task of its own while the state machine goes on
/// applying, so the engine snapshot is taken in `get_snapshot_builder`, between applies, where
/// it holds exactly the applied id recorded with it.
pub struct SnapshotBuilder {
    storage: DynStorage,
    taken: Result<(SnapshotMeta, ZeroCopySnapshot), RaftStorageError>,
    current: Arc<Mutex<Option<(SnapshotMeta, ZeroCopySnapshot)>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let (meta, snapshot) = self.taken.clone()?;
        // Only the newest snapshot is served; the engine may free what the old one pins.
        set_current(&self.storage, &self.current, meta.clone(), snapshot.clone()).await;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Local {
                storage: self.storage.clone(),
                snapshot,
            }),
        })
    }
}

impl ObjectShardStateMachine {
    /// Syncs what was applied and takes an engine snapshot of it, with its meta.
    async fn take_snapshot(
        &mut self,
    ) -> Result<(SnapshotMeta, ZeroCopySnapshot), RaftStorageError> {
        // openraft purges the log up to a built snapshot; the applied state must not be lost
        // after that, since no log is left to apply it again from.
        self.sync().await?;
        let snapshot = self
            .storage
            .create_zero_copy_snapshot()
            .await
            .map_err(sm_read)?;
        self.built += 1;
        let built = self.built;
        let snapshot_id = match self.applied {
            Some(a) => format!("{}-{}-{built}", a.leader_id.term, a.index),
            None => format!("0-0-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        coverage::hit(Corner::RaftSnapshotBuilt);
        self.probe
            .emit(|| RaftEvent::SnapshotBuilt(self.applied.as_ref().map(pos)));
        Ok((meta, snapshot))
    }

    /// Makes every applied batch durable.
    async fn sync(&mut self) -> Result<(), RaftStorageError> {
        if self.unsynced_batches > 0 {
            self.storage
                .write_batch(WriteBatch::new())
                .await
                .map_err(sm_write)?;
            self.unsynced_batches = 0;
        }
        self.durable.set(self.applied);
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for ObjectShardStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut overlay = BTreeMap::new();
        let mut results = Vec::new();
        let mut applied = self.applied;
        let mut new_membership = None;
        let mut ids = Vec::new();
        for entry in entries {
            applied = Some(entry.log_id);
            if self.probe.on() {
                ids.push(entry_id(&entry.log_id, &enc(&entry)?));
            }
            match &entry.payload {
                EntryPayload::Blank => results.push(CommandResult::default()),
                EntryPayload::Normal(cmd) => {
                    let mut r = self.apply_ops(&cmd.ops, &mut batch, &mut overlay).await?;
                    r.index = entry.log_id.index;
                    results.push(r)
                }
                EntryPayload::Membership(m) => {
                    // The first membership is the cluster's founding; later ones change it.
                    coverage::hit_if(
                        self.membership.log_id().is_some(),
                        Corner::RaftMembershipChanged,
                    );
                    new_membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    results.push(CommandResult::default());
                }
            }
        }
        if crate::bugs::active(crate::bugs::Bug::RaftAppliedNotPersisted) {
            // Planted bug: the applied id is saved on its own, durably, and the data after it
            // without waiting for the disk ("the log can replay it" - but replay starts after
            // the saved applied id).
            let mut meta = WriteBatch::new();
            for (k, v) in applied_meta(applied, new_membership.as_ref())? {
                meta.put_meta(k, v);
            }
            self.storage.write_batch(meta).await.map_err(sm_write)?;
            batch.unsynced = true;
        } else {
            // Data, applied id and membership in one atomic batch, synced every so often.
            for (k, v) in applied_meta(applied, new_membership.as_ref())? {
                batch.put_meta(k, v);
            }
            batch.unsynced = self.unsynced_batches + 1 < SYNC_EVERY;
        }
        let synced = !batch.unsynced;
        self.storage.write_batch(batch).await.map_err(sm_write)?;
        self.unsynced_batches = (self.unsynced_batches + 1) % SYNC_EVERY;
        self.applied = applied;
        self.probe.emit(|| RaftEvent::Applied(ids));
        if synced {
            self.durable.set(applied);
        }
        if let Some(m) = new_membership {
            self.membership = m;
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            storage: self.storage.clone(),
            taken: self.take_snapshot().await,
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftStorageError> {
        // Chunks are received by the network layer, which hands a channel to openraft through
        // `install_full_snapshot`; this path gets an already-closed channel.
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        Ok(Box::new(SnapshotData::Incoming(rx)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftStorageError> {
        let r = async {
            let chunks = match *snapshot {
                SnapshotData::Incoming(mut rx) => futures::stream::poll_fn(move |cx| {
                    let next = rx.poll_recv(cx);
                    if let std::task::Poll::Ready(Some(Ok(chunk))) = &next {
                        super::snapshot::held::sub(chunk.len());
                    }
                    next
                })
                .boxed(),
                SnapshotData::Local { storage, snapshot } => {
                    let header = SnapshotHeader {
                        snapshot_id: meta.snapshot_id.clone(),
                        ..SnapshotHeader::default()
                    };
                    local_chunks(&storage, &snapshot, header, DEFAULT_CHUNK_BYTES)
                        .await
                        .map_err(sm_read)?
                }
            };
            self.install_stream(meta, chunks).await
        }
        .await;
        if r.is_err() {
            coverage::hit(Corner::StorageStreamRejected);
            // A purge waiting for this install must not wait any longer.
            self.durable.install_failed();
        }
        r
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(current.map(|(meta, snapshot)| Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Local {
                storage: self.storage.clone(),
                snapshot,
            }),
        }))
    }
}

#[cfg(test)]
mod tests;
