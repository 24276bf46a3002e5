//! `MemoryStorage`: an in-memory engine over a persistent ordered map ([`PackedMap`]).
//!
//! Snapshots are O(1): cloning a persistent map shares its structure, and later writes copy
//! only the nodes on their path that a snapshot still shares. Nothing survives a process
//! restart. Pairs are packed many to a leaf: a pair costs its own bytes plus about 12.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures::StreamExt;

use super::packed_map::PackedMap;
use super::{
    paged_stream, ApplicationDataStorage, BatchOp, EngineKind, KeyRange, KvStream, Namespace,
    PageSource, Pair, Result, SnapshotCapableStorage, StorageError, WriteBatch, ZeroCopySnapshot,
};
use crate::storage::snapshot_registry::{last_log_index_of, SnapshotRegistry};

type Map = PackedMap;

/// The in-memory engine.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: RwLock<MemState>,
}

#[derive(Debug, Default, Clone)]
struct Tables {
    data: Map,
    meta: Map,
    /// Sum of key and value lengths in `data`, kept so snapshot sizes are O(1).
    data_bytes: u64,
}

#[derive(Debug, Default)]
struct MemState {
    tables: Tables,
    /// Number of committed batches: the engine's sequence number.
    seq: u64,
    snapshots: SnapshotRegistry<Tables>,
}

impl Tables {
    fn map(&mut self, ns: Namespace) -> &mut Map {
        match ns {
            Namespace::Data => &mut self.data,
            Namespace::Meta => &mut self.meta,
        }
    }

    fn apply(&mut self, op: BatchOp) {
        match op {
            BatchOp::Put { ns, key, value } => {
                let old = self.map(ns).insert(&key, &value);
                if ns == Namespace::Data {
                    self.data_bytes += (key.len() + value.len()) as u64;
                    if let Some(old) = old {
                        self.data_bytes -= (key.len() + old.len()) as u64;
                    }
                }
            }
            BatchOp::Delete { ns, key } => {
                if let Some(old) = self.map(ns).remove(&key) {
                    if ns == Namespace::Data {
                        self.data_bytes -= (key.len() + old.len()) as u64;
                    }
                }
            }
        }
    }
}

struct MapPages(Map);

impl PageSource for MapPages {
    fn page(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        Ok(page_of(&self.0, range, limit))
    }
}

fn page_of(map: &Map, range: &KeyRange, limit: usize) -> Vec<Pair> {
    if range.is_empty() {
        return Vec::new();
    }
    let mut page = Vec::new();
    if limit == 0 {
        return page;
    }
    map.for_each_in(range.as_ref_bounds(), |k, v| {
        page.push((k.to_vec(), v.to_vec()));
        page.len() < limit
    });
    page
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn read<T>(&self, f: impl FnOnce(&MemState) -> T) -> Result<T> {
        let guard = self
            .state
            .read()
            .map_err(|_| StorageError::Stopped("memory storage lock poisoned".into()))?;
        Ok(f(&guard))
    }

    fn write<T>(&self, f: impl FnOnce(&mut MemState) -> T) -> Result<T> {
        let mut guard = self
            .state
            .write()
            .map_err(|_| StorageError::Stopped("memory storage lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

#[async_trait]
impl ApplicationDataStorage for MemoryStorage {
    fn engine(&self) -> EngineKind {
        EngineKind::Memory
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(|s| s.tables.data.get(key).map(<[u8]>::to_vec))
    }

    async fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(|s| s.tables.meta.get(key).map(<[u8]>::to_vec))
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        self.write(|s| {
            // `validate` accepted every op and applying one cannot fail, so the batch lands
            // whole; in place, so only nodes a snapshot shares are copied.
            for op in batch.ops {
                s.tables.apply(op);
            }
            s.seq += 1;
        })
    }

    async fn scan(&self, range: KeyRange, limit: usize) -> Result<Vec<Pair>> {
        self.read(|s| page_of(&s.tables.data, &range, limit))
    }

    async fn count(&self) -> Result<u64> {
        self.read(|s| s.tables.data.len() as u64)
    }

    async fn export_stream(&self) -> Result<KvStream> {
        let data = self.read(|s| s.tables.data.clone())?;
        Ok(paged_stream(Arc::new(MapPages(data))))
    }
}

#[async_trait]
impl SnapshotCapableStorage for MemoryStorage {
    async fn create_zero_copy_snapshot(&self) -> Result<ZeroCopySnapshot> {
        let now = crate::rt::unix_time_ms();
        self.write(|s| {
            let tables = s.tables.clone();
            let info = ZeroCopySnapshot {
                snapshot_id: String::new(),
                sequence_number: s.seq,
                last_included_log_index: last_log_index_of(
                    tables
                        .meta
                        .get(crate::storage::snapshot_registry::LAST_LOG_INDEX_KEY)
                        .map(<[u8]>::to_vec)
                        .as_ref(),
                ),
                total_size_bytes: tables.data_bytes,
                created_at_ms: now,
            };
            s.snapshots.insert(info, tables)
        })
    }

    async fn restore_from_snapshot(&self, snapshot: &ZeroCopySnapshot) -> Result<()> {
        self.write(|s| {
            let tables = s.snapshots.handle(&snapshot.snapshot_id)?.clone();
            s.tables = tables;
            s.seq += 1;
            Ok(())
        })?
    }

    async fn list_snapshots(&self) -> Result<Vec<ZeroCopySnapshot>> {
        self.read(|s| s.snapshots.list())
    }

    async fn latest_snapshot(&self) -> Result<Option<ZeroCopySnapshot>> {
        self.read(|s| s.snapshots.latest())
    }

    async fn release_snapshot(&self, snapshot_id: &str) -> Result<()> {
        self.write(|s| s.snapshots.release(snapshot_id))
    }

    async fn create_kv_snapshot_stream(&self, snapshot: &ZeroCopySnapshot) -> Result<KvStream> {
        let data = self.read(|s| {
            s.snapshots
                .handle(&snapshot.snapshot_id)
                .map(|t| t.data.clone())
        })??;
        Ok(paged_stream(Arc::new(MapPages(data))))
    }

    async fn install_kv_snapshot_from_stream(
        &self,
        mut stream: KvStream,
        meta: Vec<Pair>,
    ) -> Result<u64> {
        // Build the new tables aside; they replace the old ones only once the stream ended
        // cleanly, so an error part-way leaves the old state.
        let mut tables = Tables::default();
        let mut count = 0u64;
        while let Some(pair) = stream.next().await {
            let (key, value) = pair?;
            super::check_key(&key)?;
            super::check_value(&value)?;
            tables.apply(BatchOp::Put {
                ns: Namespace::Data,
                key,
                value,
            });
            count += 1;
        }
        for (key, value) in meta {
            tables.apply(BatchOp::Put {
                ns: Namespace::Meta,
                key,
                value,
            });
        }
        self.write(|s| {
            s.tables = tables;
            s.seq += 1;
        })?;
        Ok(count)
    }
}
