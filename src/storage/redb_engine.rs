//! `RedbStorage`: application data in redb, on a real file or on a [`SimDisk`].
//!
//! - Every committed batch is one redb write transaction with immediate durability.
//! - Values are stored with a CRC32 over key and value, so a flipped bit in a stored pair is
//!   detected on read ([`StorageError::Corruption`]) instead of being served. Any I/O error,
//!   detected corruption or panic inside redb (possible on corrupted pages) poisons the
//!   storage: every later call fails with [`StorageError::Stopped`] (fail-stop).
//! - Write transactions are serialized by an async mutex so that redb's own (blocking) writer
//!   lock is never contended: in simulation all nodes share one OS thread, and a blocked
//!   thread would stall the whole simulation.
//! - A zero-copy snapshot is a redb read transaction: O(1), it pins the pages of its version
//!   while later writes go elsewhere (copy-on-write B-tree). Restoring one rewrites the tables
//!   from it inside one write transaction, so the restore is atomic.
//! - Installing a snapshot stream is one write transaction that replaces both tables; it
//!   commits only after the stream ended cleanly, so a crash or a bad stream leaves the old
//!   state.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;

use crate::coverage::{self, Corner};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::snapshot_registry::{last_log_index_of, HeldSnapshots, LAST_LOG_INDEX_KEY};
use super::{
    paged_stream, ApplicationDataStorage, BatchOp, EngineKind, KeyRange, KvStream, Namespace,
    PageSource, Pair, Result, SimDisk, SnapshotCapableStorage, StorageError, WriteBatch,
    ZeroCopySnapshot,
};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

fn table(ns: Namespace) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match ns {
        Namespace::Data => DATA,
        Namespace::Meta => META,
    }
}

/// Default size of redb's page cache for storages this module opens.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The redb engine.
pub struct RedbStorage {
    /// Always `Some` until drop, where it is dropped under `catch_unwind`: redb's close
    /// commits allocator state and can panic on corrupted pages.
    db: Option<Database>,
    disk: Option<SimDisk>,
    write_lock: tokio::sync::Mutex<()>,
    snapshots: HeldSnapshots<Arc<ReadTransaction>>,
    stopped: Mutex<Option<String>>,
    seq: AtomicU64,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("sim_disk", &self.disk.is_some())
            .finish_non_exhaustive()
    }
}

fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(value);
    let mut out = Vec::with_capacity(value.len() + 4);
    out.extend_from_slice(value);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out
}

fn unseal(key: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
    let Some(split) = stored.len().checked_sub(4) else {
        return Err(StorageError::Corruption(format!(
            "stored value of {} bytes for key {:?} is shorter than its checksum",
            stored.len(),
            String::from_utf8_lossy(key)
        )));
    };
    let (value, crc) = stored.split_at(split);
    let mut h = crc32fast::Hasher::new();
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(value);
    if h.finalize().to_le_bytes() != crc {
        return Err(StorageError::Corruption(format!(
            "checksum mismatch for key {:?}",
            String::from_utf8_lossy(key)
        )));
    }
    Ok(value.to_vec())
}

fn engine_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

/// Runs a redb call, turning a panic (redb can panic on corrupted pages) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(StorageError::Corruption(format!("redb panicked: {msg}")))
        }
    }
}

/// Reads pages of one read transaction.
struct TxnPages(Arc<ReadTransaction>);

impl PageSource for TxnPages {
    fn page(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        guarded(|| read_page(&self.0, range, limit))
    }
}

fn read_page(txn: &ReadTransaction, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
    if range.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let t = match txn.open_table(DATA) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(engine_err(e)),
    };
    let mut out = Vec::new();
    for item in t
        .range::<&[u8]>(range.as_ref_bounds())
        .map_err(engine_err)?
    {
        let (k, v) = item.map_err(engine_err)?;
        let key = k.value().to_vec();
        let value = unseal(&key, v.value())?;
        out.push((key, value));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

impl RedbStorage {
    /// Opens (or creates) a database on a simulated disk. After a power loss this recovers to
    /// the last durable commit.
    ///
    /// Opening verifies every page checksum (`check_integrity`): redb does not verify them on
    /// ordinary reads, and a flipped bit in a B-tree page can otherwise make a key silently
    /// disappear. A database that fails the check, even one redb could repair by rolling back,
    /// is reported as corrupt: a repair may drop acknowledged commits.
    pub fn open_on_disk(disk: SimDisk) -> Result<Self> {
        let backend = disk.backend();
        let db = guarded(|| {
            let mut db = Database::builder()
                .set_cache_size(DEFAULT_CACHE_BYTES)
                .create_with_backend(backend)
                .map_err(engine_err)?;
            match db.check_integrity() {
                Ok(true) => Ok(db),
                Ok(false) => Err(StorageError::Corruption(
                    "integrity check failed on open (redb repaired the file)".into(),
                )),
                Err(e) => Err(StorageError::Corruption(format!(
                    "integrity check failed on open: {e}"
                ))),
            }
        })
        .inspect_err(|_| coverage::hit(Corner::StorageOpenFailed))?;
        Self::init(db, Some(disk))
    }

    /// Opens (or creates) a database in a real file, with a page cache of `cache_bytes`.
    pub fn open_file(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(engine_err)?;
        Self::init(db, None)
    }

    fn init(db: Database, disk: Option<SimDisk>) -> Result<Self> {
        let storage = Self {
            db: Some(db),
            disk,
            write_lock: tokio::sync::Mutex::new(()),
            snapshots: HeldSnapshots::default(),
            stopped: Mutex::new(None),
            seq: AtomicU64::new(0),
        };
        // Create both tables up front, so readers never see them missing.
        storage.commit_sync(|txn| {
            txn.open_table(DATA).map_err(engine_err)?;
            txn.open_table(META).map_err(engine_err)?;
            Ok(())
        })?;
        Ok(storage)
    }

    /// The simulated disk under this database, if any.
    pub fn disk(&self) -> Option<&SimDisk> {
        self.disk.as_ref()
    }

    fn db(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| StorageError::Stopped("database closed".into()))
    }

    fn check_alive(&self) -> Result<()> {
        match &*self.stopped.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(StorageError::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    /// Records a fatal error: I/O failures and corruption stop the storage for good.
    fn fail_stop<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if matches!(e, StorageError::Io(_) | StorageError::Corruption(_)) {
                let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
                stopped.get_or_insert_with(|| e.to_string());
            }
        }
        r
    }

    async fn charge_latency(&self) {
        if let Some(disk) = &self.disk {
            crate::rt::sleep(disk.take_latency()).await;
        }
    }

    fn read_txn(&self) -> Result<ReadTransaction> {
        guarded(|| self.db()?.begin_read().map_err(engine_err))
    }

    /// One write transaction, committed durably. Callers hold `write_lock`.
    fn commit_sync(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        self.commit_with(redb::Durability::Immediate, f)
    }

    /// One write transaction with the given durability. Callers hold `write_lock`.
    fn commit_with(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let r = guarded(|| {
            let mut txn = self.db()?.begin_write().map_err(engine_err)?;
            txn.set_durability(durability).map_err(engine_err)?;
            f(&txn)?;
            txn.commit().map_err(engine_err)
        });
        if r.is_ok() {
            self.seq.fetch_add(1, Ordering::Relaxed);
        }
        self.fail_stop(r)
    }

    async fn read_op<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let r = self.fail_stop(guarded(|| f(&self.read_txn()?)));
        self.charge_latency().await;
        r
    }

    fn get_from(txn: &ReadTransaction, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = txn.open_table(table(ns)).map_err(engine_err)?;
        match t.get(key).map_err(engine_err)? {
            Some(v) => Ok(Some(unseal(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn copy_tables(
        from: &ReadTransaction,
        to: &redb::WriteTransaction,
        ns: Namespace,
    ) -> Result<()> {
        to.delete_table(table(ns)).map_err(engine_err)?;
        let mut dst = to.open_table(table(ns)).map_err(engine_err)?;
        let src = from.open_table(table(ns)).map_err(engine_err)?;
        for item in src.iter().map_err(engine_err)? {
            let (k, v) = item.map_err(engine_err)?;
            // Verify while copying: a restore must not launder corrupted bytes.
            unseal(k.value(), v.value())?;
            dst.insert(k.value(), v.value()).map_err(engine_err)?;
        }
        Ok(())
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        // Read handles must go before the database they read.
        self.snapshots.release_where(|_| true);
        if let Some(db) = self.db.take() {
            let _ = guarded(move || {
                drop(db);
                Ok(())
            });
        }
    }
}

#[async_trait]
impl ApplicationDataStorage for RedbStorage {
    fn engine(&self) -> EngineKind {
        EngineKind::Redb
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_op(|txn| Self::get_from(txn, Namespace::Data, key))
            .await
    }

    async fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_op(|txn| Self::get_from(txn, Namespace::Meta, key))
            .await
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        self.check_alive()?;
        let guard = self.write_lock.lock().await;
        let durability = if batch.unsynced {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        };
        let r = self.commit_with(durability, |txn| {
            // A table is opened only if the batch touches it: opening one costs a lookup, and
            // closing it a root update in the commit.
            let (mut data, mut meta) = (None, None);
            for op in &batch.ops {
                let (ns, key) = match op {
                    BatchOp::Put { ns, key, .. } | BatchOp::Delete { ns, key } => (*ns, key),
                };
                let (slot, def) = if ns == Namespace::Data {
                    (&mut data, DATA)
                } else {
                    (&mut meta, META)
                };
                let t = match slot {
                    Some(t) => t,
                    None => slot.insert(txn.open_table(def).map_err(engine_err)?),
                };
                match op {
                    BatchOp::Put { value, .. } => {
                        t.insert(key.as_slice(), seal(key, value).as_slice())
                            .map_err(engine_err)?;
                    }
                    BatchOp::Delete { .. } => {
                        t.remove(key.as_slice()).map_err(engine_err)?;
                    }
                }
            }
            Ok(())
        });
        drop(guard);
        self.charge_latency().await;
        r
    }

    async fn scan(&self, range: KeyRange, limit: usize) -> Result<Vec<Pair>> {
        self.read_op(|txn| read_page(txn, &range, limit)).await
    }

    async fn count(&self) -> Result<u64> {
        self.read_op(|txn| {
            let t = txn.open_table(DATA).map_err(engine_err)?;
            t.len().map_err(engine_err)
        })
        .await
    }

    async fn export_stream(&self) -> Result<KvStream> {
        self.check_alive()?;
        let txn = self.fail_stop(self.read_txn())?;
        Ok(paged_stream(Arc::new(TxnPages(Arc::new(txn)))))
    }
}

#[async_trait]
impl SnapshotCapableStorage for RedbStorage {
    async fn create_zero_copy_snapshot(&self) -> Result<ZeroCopySnapshot> {
        self.check_alive()?;
        let txn = self.fail_stop(self.read_txn())?;
        let last = self.fail_stop(guarded(|| {
            Self::get_from(&txn, Namespace::Meta, LAST_LOG_INDEX_KEY)
        }))?;
        let info = ZeroCopySnapshot {
            snapshot_id: String::new(),
            sequence_number: self.seq.load(Ordering::Relaxed),
            last_included_log_index: last_log_index_of(last.as_ref()),
            total_size_bytes: self.disk.as_ref().map_or(0, |d| d.durable_len()),
            created_at_ms: crate::rt::unix_time_ms(),
        };
        Ok(self.snapshots.insert(info, Arc::new(txn)))
    }

    async fn restore_from_snapshot(&self, snapshot: &ZeroCopySnapshot) -> Result<()> {
        self.check_alive()?;
        let from = self.snapshots.handle(&snapshot.snapshot_id)?;
        let guard = self.write_lock.lock().await;
        let r = self.commit_sync(|txn| {
            Self::copy_tables(&from, txn, Namespace::Data)?;
            Self::copy_tables(&from, txn, Namespace::Meta)
        });
        drop(guard);
        self.charge_latency().await;
        r
    }

    async fn list_snapshots(&self) -> Result<Vec<ZeroCopySnapshot>> {
        Ok(self.snapshots.list())
    }

    async fn latest_snapshot(&self) -> Result<Option<ZeroCopySnapshot>> {
        Ok(self.snapshots.latest())
    }

    async fn release_snapshot(&self, snapshot_id: &str) -> Result<()> {
        self.snapshots.release(snapshot_id);
        Ok(())
    }

    async fn create_kv_snapshot_stream(&self, snapshot: &ZeroCopySnapshot) -> Result<KvStream> {
        self.check_alive()?;
        let txn = self.snapshots.handle(&snapshot.snapshot_id)?;
        Ok(paged_stream(Arc::new(TxnPages(txn))))
    }

    async fn install_kv_snapshot_from_stream(
        &self,
        mut stream: KvStream,
        meta: Vec<Pair>,
    ) -> Result<u64> {
        self.check_alive()?;
        let guard = self.write_lock.lock().await;
        // One write transaction across the whole stream: redb commits it atomically, and
        // dropping it uncommitted (stream error, crash) rolls everything back.
        let txn = self.fail_stop(guarded(|| self.db()?.begin_write().map_err(engine_err)))?;
        let prepared = guarded(|| {
            txn.delete_table(DATA).map_err(engine_err)?;
            txn.delete_table(META).map_err(engine_err)?;
            let mut m = txn.open_table(META).map_err(engine_err)?;
            for (k, v) in &meta {
                super::check_key(k)?;
                super::check_value(v)?;
                m.insert(k.as_slice(), seal(k, v).as_slice())
                    .map_err(engine_err)?;
            }
            Ok(())
        });
        self.fail_stop(prepared)?;
        let mut count = 0u64;
        while let Some(pair) = stream.next().await {
            let (k, v) = pair?;
            super::check_key(&k)?;
            super::check_value(&v)?;
            self.fail_stop(guarded(|| {
                let mut t = txn.open_table(DATA).map_err(engine_err)?;
                t.insert(k.as_slice(), seal(&k, &v).as_slice())
                    .map_err(engine_err)?;
                Ok(())
            }))?;
            count += 1;
            self.charge_latency().await;
        }
        let committed = self.fail_stop(guarded(|| {
            txn.open_table(DATA).map_err(engine_err)?;
            txn.commit().map_err(engine_err)
        }));
        drop(guard);
        committed?;
        self.seq.fetch_add(1, Ordering::Relaxed);
        self.charge_latency().await;
        Ok(count)
    }
}
