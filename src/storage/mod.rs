//! The storage layer: what every shard stores its application data in.
//!
//! - [`ApplicationDataStorage`]: get / put / delete, atomic write batches, ordered scans,
//!   count, and an export stream of all pairs.
//! - [`SnapshotCapableStorage`]: engine-native zero-copy snapshots, atomic restore, and the
//!   key/value snapshot streams that Raft ships between nodes.
//! - Engines: [`MemoryStorage`] (persistent ordered map), [`RedbStorage`] (redb, on a real file
//!   or on the simulated disk) and [`FjallStorage`] (fjall LSM tree).
//! - [`SimDisk`]: a simulated disk with power loss, torn writes, bit flips, I/O errors and
//!   latency, all drawn from a seeded RNG.
//! - [`stream`]: the snapshot wire format (framed, bounded, checksummed).
//! - [`write_back::WriteBack`]: a wrapper that holds unsynced batches in memory and commits
//!   them with the next synced one (Raft's state machine applies through it).
//!
//! Every engine keeps two namespaces: `Data` (the application's pairs, what snapshot streams
//! carry) and `Meta` (a handful of bookkeeping pairs such as Raft's last applied log id, written
//! in the same atomic batch as the data they describe).
//!
//! The methods are `async` although the engines are synchronous: the simulated disk charges
//! latency as simulated time, and a snapshot install holds one engine transaction open while
//! the stream's chunks arrive from the network.

use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub mod device;
mod error;
pub mod fjall_engine;
pub mod memory;
pub mod packed_map;
pub mod redb_engine;
pub mod simdisk;
mod snapshot_registry;
pub mod stream;
pub mod write_back;

pub use device::{BlockDevice, DynDevice, FileDevice, MemoryDevice};
pub use error::{Result, StorageError};
pub use fjall_engine::{FjallOptions, FjallStorage};
pub use memory::MemoryStorage;
pub use redb_engine::RedbStorage;
pub use simdisk::{DiskFaults, DiskStats, PowerLossMode, SimDisk};
pub use snapshot_registry::{LAST_LOG_INDEX_KEY, MAX_HELD_SNAPSHOTS};

/// Largest key the storage layer accepts (and the snapshot stream carries). Below fjall's
/// own limit of 65,535 bytes, so every engine accepts the same keys.
pub const MAX_KEY_BYTES: usize = 32 * 1024;
/// Largest value the storage layer accepts (and the snapshot stream carries).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// How many pairs an export or snapshot stream reads from the engine at a time. Streams hold
/// at most one page, so their memory does not grow with the data.
pub const STREAM_PAGE_PAIRS: usize = 256;

/// A key/value pair.
pub type Pair = (Vec<u8>, Vec<u8>);
/// A stream of pairs in key order, each possibly an error.
pub type KvStream = BoxStream<'static, Result<Pair>>;

/// Which engine a storage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// [`MemoryStorage`].
    Memory,
    /// [`RedbStorage`].
    Redb,
    /// [`FjallStorage`].
    Fjall,
}

impl EngineKind {
    /// All engines, in a fixed order.
    pub const ALL: [EngineKind; 3] = [EngineKind::Memory, EngineKind::Redb, EngineKind::Fjall];

    /// The lowercase name used in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Memory => "memory",
            EngineKind::Redb => "redb",
            EngineKind::Fjall => "fjall",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown engine `{s}` (expected memory, redb or fjall)"))
    }
}

/// The two key spaces of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Namespace {
    /// Application data: what scans, counts, exports and snapshot streams see.
    Data,
    /// Bookkeeping written atomically with the data (e.g. the last applied Raft log id).
    Meta,
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Insert or overwrite.
    Put {
        /// Target namespace.
        ns: Namespace,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove (absent keys are fine).
    Delete {
        /// Target namespace.
        ns: Namespace,
        /// Key.
        key: Vec<u8>,
    },
}

/// A set of writes applied atomically, in order: after a crash either all of them are visible
/// or none is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The operations, applied in order (a later op on the same key wins).
    pub ops: Vec<BatchOp>,
    /// Commit without waiting for the disk: still atomic, but a crash may drop it (and every
    /// unsynced batch after it). An engine drops such batches only in a power loss;
    /// [`write_back::WriteBack`] holds them in memory until the next synced batch, so any
    /// crash drops them there. Raft's state machine sets it (its log can replay what is lost).
    pub unsynced: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a data put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            ns: Namespace::Data,
            key: key.into(),
            value: value.into(),
        });
        self
    }
    /// Adds a data delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            ns: Namespace::Data,
            key: key.into(),
        });
        self
    }
    /// Adds a meta put.
    pub fn put_meta(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            ns: Namespace::Meta,
            key: key.into(),
            value: value.into(),
        });
        self
    }
    /// Adds a meta delete.
    pub fn delete_meta(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            ns: Namespace::Meta,
            key: key.into(),
        });
        self
    }
    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Rejects keys and values over the storage limits before anything is written.
    pub(crate) fn validate(&self) -> Result<()> {
        for op in &self.ops {
            match op {
                BatchOp::Put { key, value, .. } => {
                    check_key(key)?;
                    check_value(value)?;
                }
                BatchOp::Delete { key, .. } => check_key(key)?,
            }
        }
        Ok(())
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::TooLarge {
            what: "key",
            len: key.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StorageError::TooLarge {
            what: "value",
            len: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// An ordered key range for scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(next) => Bound::Excluded(next),
                None => Bound::Unbounded,
            },
        }
    }

    /// Keys in `[start, end)`.
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        Self {
            start: Bound::Included(start.to_vec()),
            end: Bound::Excluded(end.to_vec()),
        }
    }

    /// Keys strictly after `key` that are still in this range.
    pub(crate) fn after(&self, key: &[u8]) -> Self {
        Self {
            start: Bound::Excluded(key.to_vec()),
            end: self.end.clone(),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Whether no key can lie in the range (start above end).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        }
    }

    pub(crate) fn as_ref_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (bound_ref(&self.start), bound_ref(&self.end))
    }
}

fn bound_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key with this prefix, if there is one.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Metadata of an engine-native snapshot. The engine keeps the native handle (a redb read
/// transaction and savepoint, a fjall snapshot, a shared map root); this is what callers hold
/// and what can be logged or sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZeroCopySnapshot {
    /// Unique within the storage instance.
    pub snapshot_id: String,
    /// The engine's own sequence number at the snapshot (write counter, redb transaction,
    /// fjall seqno).
    pub sequence_number: u64,
    /// The last Raft log index the data includes, when Raft set one.
    pub last_included_log_index: Option<u64>,
    /// Approximate size of the data the snapshot pins, in bytes (read in O(1)).
    pub total_size_bytes: u64,
    /// When it was taken, in (simulated, in simulation) milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// Key/value storage for application data.
#[async_trait]
pub trait ApplicationDataStorage: Send + Sync + 'static {
    /// Which engine this is.
    fn engine(&self) -> EngineKind;

    /// Reads a data key.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads a meta key.
    async fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies a batch atomically (and durably, for engines with a disk).
    async fn write_batch(&self, batch: WriteBatch) -> Result<()>;

    /// Up to `limit` data pairs in `range`, in key order.
    async fn scan(&self, range: KeyRange, limit: usize) -> Result<Vec<Pair>>;

    /// Number of data keys.
    async fn count(&self) -> Result<u64>;

    /// All data pairs as of one point in time, in key order, read a page at a time.
    async fn export_stream(&self) -> Result<KvStream>;

    /// Inserts or overwrites one data pair.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write_batch(batch).await
    }

    /// Removes one data key (absent keys are fine).
    async fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write_batch(batch).await
    }

    /// Up to `limit` data pairs whose key starts with `prefix`.
    async fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Pair>> {
        self.scan(KeyRange::prefix(prefix), limit).await
    }
}

/// Engine-native snapshots and the key/value snapshot streams built on them.
#[async_trait]
pub trait SnapshotCapableStorage: ApplicationDataStorage {
    /// Takes a snapshot of data and meta without copying data: its cost does not grow with
    /// the amount stored.
    async fn create_zero_copy_snapshot(&self) -> Result<ZeroCopySnapshot>;

    /// Makes the storage (data and meta) equal to the snapshot, atomically.
    async fn restore_from_snapshot(&self, snapshot: &ZeroCopySnapshot) -> Result<()>;

    /// The newest snapshot still held, if any.
    async fn latest_snapshot(&self) -> Result<Option<ZeroCopySnapshot>>;

    /// Every snapshot the engine holds, oldest first.
    async fn list_snapshots(&self) -> Result<Vec<ZeroCopySnapshot>>;

    /// Drops a snapshot so the engine can free what it pins.
    async fn release_snapshot(&self, snapshot_id: &str) -> Result<()>;

    /// All data pairs of `snapshot`, in key order, a page at a time; writes may continue.
    async fn create_kv_snapshot_stream(&self, snapshot: &ZeroCopySnapshot) -> Result<KvStream>;

    /// Replaces all data with the pairs of `stream` and all meta with `meta`, atomically: a
    /// crash or a stream error part-way leaves the old state. Returns the number of pairs.
    async fn install_kv_snapshot_from_stream(
        &self,
        stream: KvStream,
        meta: Vec<Pair>,
    ) -> Result<u64>;
}

/// A storage of any engine behind one type, for code that picks the engine at run time.
pub type DynStorage = Arc<dyn SnapshotCapableStorage>;

/// Reads pages of a point-in-time view: the one primitive each engine provides for export and
/// snapshot streams, so that a stream never holds more than one page.
pub(crate) trait PageSource: Send + Sync + 'static {
    /// Up to `limit` data pairs in `range`, in key order.
    fn page(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>>;
}

/// A stream over a [`PageSource`], reading `STREAM_PAGE_PAIRS` at a time.
pub(crate) fn paged_stream(source: Arc<dyn PageSource>) -> KvStream {
    use futures::StreamExt;
    struct State {
        source: Arc<dyn PageSource>,
        range: Option<KeyRange>,
        page: std::vec::IntoIter<Pair>,
    }
    let state = State {
        source,
        range: Some(KeyRange::all()),
        page: Vec::new().into_iter(),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(pair) = st.page.next() {
                return Some((Ok(pair), st));
            }
            let range = st.range.take()?;
            match st.source.page(&range, STREAM_PAGE_PAIRS) {
                Ok(page) => {
                    if page.len() == STREAM_PAGE_PAIRS {
                        if let Some((last, _)) = page.last() {
                            st.range = Some(range.after(last));
                        }
                    }
                    st.page = page.into_iter();
                }
                Err(e) => return Some((Err(e), st)),
            }
        }
    })
    .boxed()
}

/// Opens a storage of the given engine for tests and benchmarks: memory, redb on a fresh
/// [`SimDisk`] with no faults, or fjall in a fresh temporary folder.
pub fn open_ephemeral(engine: EngineKind, seed: u64) -> Result<DynStorage> {
    Ok(match engine {
        EngineKind::Memory => Arc::new(MemoryStorage::new()),
        EngineKind::Redb => Arc::new(RedbStorage::open_on_disk(SimDisk::new(
            seed,
            DiskFaults::none(),
        ))?),
        EngineKind::Fjall => Arc::new(FjallStorage::open_temporary(FjallOptions::default())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        let r = KeyRange::prefix(b"ab");
        assert!(r.contains(b"ab"));
        assert!(r.contains(b"ab\xff\xff"));
        assert!(!r.contains(b"ac"));
        assert!(!r.contains(b"aa\xff"));
        let r = KeyRange::prefix(b"a\xff");
        assert!(r.contains(b"a\xff\x00"));
        assert!(!r.contains(b"b"));
        assert_eq!(KeyRange::prefix(b"\xff\xff").end, Bound::Unbounded);
        assert_eq!(
            KeyRange::prefix(b""),
            KeyRange {
                start: Bound::Included(Vec::new()),
                end: Bound::Unbounded,
            }
        );
    }
}
