//! `WriteBack`: a storage wrapper that holds unsynced batches in memory and writes them to
//! the engine together, in one atomic batch, with the next synced one.
//!
//! An unsynced batch may be lost in a crash (that is its contract, see [`WriteBatch`]); an
//! engine commit costs about as much for one small batch as for thirty, so committing each
//! unsynced batch on its own buys nothing a crash would keep. Here they wait in an overlay
//! that every read consults first, and reach the engine when a synced batch arrives, when
//! [`MAX_PENDING_BYTES`] of them have piled up, or before any whole-store operation (a
//! snapshot, an export, an install or restore). A crash drops the overlay: what survives is
//! the engine's state as of its last commit, which is a prefix of the batches in order.
//!
//! Raft's state machine uses it: its applies are unsynced batches, its every
//! `SYNC_EVERY`th apply and its snapshots are synced, and the log replays what a crash drops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::coverage::{self, Corner};

use super::{
    ApplicationDataStorage, BatchOp, DynStorage, EngineKind, KeyRange, KvStream, Namespace, Pair,
    Result, SnapshotCapableStorage, WriteBatch, ZeroCopySnapshot,
};

/// Overlay size (keys plus values) past which unsynced batches are written to the engine
/// without waiting for a synced one, so the overlay's memory stays bounded.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// Writes not yet in the engine: the newest value of each key, `None` for a delete.
#[derive(Default)]
struct Overlay {
    data: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    meta: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl Overlay {
    fn is_empty(&self) -> bool {
        self.data.is_empty() && self.meta.is_empty()
    }

    fn absorb(&mut self, ops: Vec<BatchOp>) {
        for op in ops {
            let (ns, key, value) = match op {
                BatchOp::Put { ns, key, value } => (ns, key, Some(value)),
                BatchOp::Delete { ns, key } => (ns, key, None),
            };
            let map = match ns {
                Namespace::Data => &mut self.data,
                Namespace::Meta => &mut self.meta,
            };
            let size = |k: &Vec<u8>, v: &Option<Vec<u8>>| k.len() + v.as_ref().map_or(0, Vec::len);
            self.bytes += size(&key, &value);
            if let Some(old) = map.get(&key) {
                self.bytes -= size(&key, old);
            }
            map.insert(key, value);
        }
    }

    /// The overlay as one batch, data first, each namespace in key order.
    fn to_batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (ns, map) in [(Namespace::Data, &self.data), (Namespace::Meta, &self.meta)] {
            for (key, value) in map {
                let (key, value) = (key.clone(), value.clone());
                batch.ops.push(match value {
                    Some(value) => BatchOp::Put { ns, key, value },
                    None => BatchOp::Delete { ns, key },
                });
            }
        }
        batch
    }
}

/// A storage whose unsynced batches wait in memory for the next synced one.
pub struct WriteBack {
    inner: DynStorage,
    overlay: Mutex<Overlay>,
    /// Serializes writers, so the overlay a flush hands to the engine is the one it clears.
    writer: tokio::sync::Mutex<()>,
}

impl WriteBack {
    /// Wraps `inner`.
    pub fn new(inner: DynStorage) -> Arc<Self> {
        Arc::new(Self {
            inner,
            overlay: Mutex::new(Overlay::default()),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of unsynced writes held in memory.
    pub fn pending_bytes(&self) -> usize {
        self.overlay().bytes
    }

    /// Writes the overlay to the engine as one synced batch. The overlay stays readable until
    /// the engine holds its writes; on an error it is kept (the engine has failed and stops
    /// its node; nothing is dropped on the floor before that).
    async fn flush_locked(&self) -> Result<()> {
        let batch = {
            let o = self.overlay();
            if o.is_empty() {
                return Ok(());
            }
            o.to_batch()
        };
        self.inner.write_batch(batch).await?;
        *self.overlay() = Overlay::default();
        Ok(())
    }

    /// Writes every pending batch to the engine and keeps writers out until the returned
    /// guard drops: a whole-store operation then sees the engine hold everything.
    async fn flushed(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        let w = self.writer.lock().await;
        self.flush_locked().await?;
        Ok(w)
    }

    fn lookup(&self, ns: Namespace, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let o = self.overlay();
        match ns {
            Namespace::Data => o.data.get(key).cloned(),
            Namespace::Meta => o.meta.get(key).cloned(),
        }
    }
}

#[async_trait]
impl ApplicationDataStorage for WriteBack {
    fn engine(&self) -> EngineKind {
        self.inner.engine()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.lookup(Namespace::Data, key) {
            Some(v) => Ok(v),
            None => self.inner.get(key).await,
        }
    }

    async fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.lookup(Namespace::Meta, key) {
            Some(v) => Ok(v),
            None => self.inner.get_meta(key).await,
        }
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        let _w = self.writer.lock().await;
        let synced = !batch.unsynced;
        let full = {
            let mut o = self.overlay();
            o.absorb(batch.ops);
            o.bytes >= MAX_PENDING_BYTES
        };
        coverage::hit_if(full && !synced, Corner::StorageWriteBackFull);
        if synced || full {
            self.flush_locked().await?;
        }
        Ok(())
    }

    async fn scan(&self, range: KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() {
            // (`BTreeMap::range` panics on a reversed range.)
            return Ok(Vec::new());
        }
        // No flush may land between reading the overlay and the engine: the scan would see
        // part of a batch.
        let _w = self.writer.lock().await;
        // The overlay's writes in the range; its deletes may hide up to that many of the
        // engine's first pairs, so ask the engine for that many more.
        let mine: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .overlay()
            .data
            .range::<[u8], _>(range.as_ref_bounds())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hidden = mine.iter().filter(|(_, v)| v.is_none()).count();
        let theirs = self.inner.scan(range, limit.saturating_add(hidden)).await?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = theirs.into_iter().collect();
        for (k, v) in mine {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    async fn count(&self) -> Result<u64> {
        let _w = self.writer.lock().await;
        let mine: Vec<(Vec<u8>, bool)> = self
            .overlay()
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.is_some()))
            .collect();
        let mut n = self.inner.count().await?;
        for (k, present) in mine {
            match (self.inner.get(&k).await?.is_some(), present) {
                (false, true) => n += 1,
                (true, false) => n = n.saturating_sub(1),
                _ => {}
            }
        }
        Ok(n)
    }

    async fn export_stream(&self) -> Result<KvStream> {
        let _w = self.flushed().await?;
        self.inner.export_stream().await
    }
}

#[async_trait]
impl SnapshotCapableStorage for WriteBack {
    async fn create_zero_copy_snapshot(&self) -> Result<ZeroCopySnapshot> {
        let _w = self.flushed().await?;
        self.inner.create_zero_copy_snapshot().await
    }

    async fn restore_from_snapshot(&self, snapshot: &ZeroCopySnapshot) -> Result<()> {
        let _w = self.flushed().await?;
        self.inner.restore_from_snapshot(snapshot).await
    }

    async fn latest_snapshot(&self) -> Result<Option<ZeroCopySnapshot>> {
        self.inner.latest_snapshot().await
    }

    async fn list_snapshots(&self) -> Result<Vec<ZeroCopySnapshot>> {
        self.inner.list_snapshots().await
    }

    async fn release_snapshot(&self, snapshot_id: &str) -> Result<()> {
        self.inner.release_snapshot(snapshot_id).await
    }

    async fn create_kv_snapshot_stream(&self, snapshot: &ZeroCopySnapshot) -> Result<KvStream> {
        self.inner.create_kv_snapshot_stream(snapshot).await
    }

    async fn install_kv_snapshot_from_stream(
        &self,
        stream: KvStream,
        meta: Vec<Pair>,
    ) -> Result<u64> {
        let _w = self.flushed().await?;
        self.inner
            .install_kv_snapshot_from_stream(stream, meta)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::redb_engine::RedbStorage;
    use crate::storage::{DiskFaults, PowerLossMode, SimDisk};
    use futures::executor::block_on;

    fn batch(pairs: &[(&str, Option<&str>)], unsynced: bool) -> WriteBatch {
        let mut b = WriteBatch::new();
        for (k, v) in pairs {
            match v {
                Some(v) => b.put(k.as_bytes(), v.as_bytes()),
                None => b.delete(k.as_bytes()),
            };
        }
        b.unsynced = unsynced;
        b
    }

    fn value(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn unsynced_batches_reach_the_engine_with_the_next_synced_one() {
        block_on(async {
            let inner: DynStorage = Arc::new(MemoryStorage::new());
            let wb = WriteBack::new(inner.clone());
            wb.write_batch(batch(&[("a", Some("1")), ("b", Some("1"))], true))
                .await
                .unwrap();
            wb.write_batch(batch(&[("b", None)], true)).await.unwrap();
            assert_eq!(wb.get(b"a").await.unwrap(), value("1"));
            assert_eq!(wb.get(b"b").await.unwrap(), None);
            assert_eq!(wb.count().await.unwrap(), 1);
            assert_eq!(
                inner.get(b"a").await.unwrap(),
                None,
                "not in the engine yet"
            );
            wb.write_batch(batch(&[("c", Some("2"))], false))
                .await
                .unwrap();
            assert_eq!(wb.pending_bytes(), 0);
            assert_eq!(inner.get(b"a").await.unwrap(), value("1"));
            assert_eq!(inner.get(b"b").await.unwrap(), None);
            assert_eq!(inner.get(b"c").await.unwrap(), value("2"));
        });
    }

    #[test]
    fn a_scan_sees_past_the_overlays_deletes() {
        block_on(async {
            let inner: DynStorage = Arc::new(MemoryStorage::new());
            for k in ["a", "b", "c", "d", "e"] {
                inner.put(k.as_bytes(), b"old").await.unwrap();
            }
            let wb = WriteBack::new(inner);
            wb.write_batch(batch(&[("a", None), ("b", None), ("d", Some("new"))], true))
                .await
                .unwrap();
            let got = wb.scan(KeyRange::all(), 2).await.unwrap();
            assert_eq!(
                got,
                vec![
                    (b"c".to_vec(), b"old".to_vec()),
                    (b"d".to_vec(), b"new".to_vec())
                ]
            );
            assert_eq!(wb.count().await.unwrap(), 3);
        });
    }

    #[test]
    fn a_crash_keeps_the_batches_up_to_the_last_synced_one() {
        block_on(async {
            let disk = SimDisk::new(3, DiskFaults::none());
            let open = |disk: &SimDisk| -> DynStorage {
                Arc::new(RedbStorage::open_on_disk(disk.clone()).unwrap())
            };
            let wb = WriteBack::new(open(&disk));
            wb.write_batch(batch(&[("a", Some("1"))], true))
                .await
                .unwrap();
            wb.write_batch(batch(&[("b", Some("1"))], false))
                .await
                .unwrap();
            wb.write_batch(batch(&[("a", Some("2")), ("c", Some("2"))], true))
                .await
                .unwrap();
            // A process crash: the overlay is gone, the engine keeps its commits.
            disk.fence();
            drop(wb);
            let back = open(&disk);
            assert_eq!(back.get(b"a").await.unwrap(), value("1"));
            assert_eq!(back.get(b"b").await.unwrap(), value("1"));
            assert_eq!(back.get(b"c").await.unwrap(), None);
            drop(back);
            disk.fence();
            disk.power_loss(PowerLossMode::DropAll);
            let back = open(&disk);
            assert_eq!(back.get(b"b").await.unwrap(), value("1"), "synced");
        });
    }

    #[test]
    fn the_overlay_is_written_out_before_it_outgrows_its_bound() {
        block_on(async {
            let inner: DynStorage = Arc::new(MemoryStorage::new());
            let wb = WriteBack::new(inner.clone());
            let big = vec![7u8; 64 << 10];
            let n = MAX_PENDING_BYTES / big.len() + 2;
            for i in 0..n {
                let mut b = WriteBatch::new();
                b.put(format!("k{i:04}").into_bytes(), big.clone());
                b.unsynced = true;
                wb.write_batch(b).await.unwrap();
                assert!(wb.pending_bytes() < MAX_PENDING_BYTES);
            }
            assert!(inner.get(b"k0000").await.unwrap().is_some());
            assert_eq!(wb.count().await.unwrap(), n as u64);
        });
    }

    #[test]
    fn whole_store_operations_see_the_overlay() {
        block_on(async {
            let inner: DynStorage = Arc::new(MemoryStorage::new());
            let wb = WriteBack::new(inner);
            wb.write_batch(batch(&[("a", Some("1"))], true))
                .await
                .unwrap();
            let snap = wb.create_zero_copy_snapshot().await.unwrap();
            wb.write_batch(batch(&[("a", Some("2"))], true))
                .await
                .unwrap();
            use futures::StreamExt;
            let pairs: Vec<_> = wb
                .create_kv_snapshot_stream(&snap)
                .await
                .unwrap()
                .map(|p| p.unwrap())
                .collect()
                .await;
            assert_eq!(pairs, vec![(b"a".to_vec(), b"1".to_vec())]);
            wb.restore_from_snapshot(&snap).await.unwrap();
            assert_eq!(wb.get(b"a").await.unwrap(), value("1"));
        });
    }
}
