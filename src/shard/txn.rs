//! Shard transactions: reads go to the shard (and see the transaction's own writes); writes
//! are buffered; commit hands the reads and writes to the shard, which applies the writes
//! atomically only if every object read is unchanged (optimistic concurrency control). On a
//! Raft shard that is one log entry; on the others, one local write batch.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{DynShard, ObjectEntry, ObjectId, Result, ShardError, Version};

/// One write of a transaction (`None`: delete).
pub type TxnOp = (ObjectId, Option<ObjectEntry>);

/// A transaction on one shard.
#[async_trait]
pub trait ShardTransaction: Send {
    /// Reads an object (this transaction's own writes first).
    async fn get(&mut self, id: ObjectId) -> Result<Option<ObjectEntry>>;
    /// Buffers a write.
    async fn set(&mut self, id: ObjectId, entry: ObjectEntry) -> Result<()>;
    /// Buffers a delete.
    async fn delete(&mut self, id: ObjectId) -> Result<()>;
    /// Applies every buffered write atomically, if what was read is unchanged.
    async fn commit(self: Box<Self>) -> Result<Version>;
    /// Drops the buffered writes.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// The transaction every shard kind uses.
pub struct BufferedTxn {
    shard: DynShard,
    reads: BTreeMap<ObjectId, Option<ObjectEntry>>,
    writes: BTreeMap<ObjectId, Option<ObjectEntry>>,
}

impl BufferedTxn {
    /// A transaction on `shard`.
    pub fn new(shard: DynShard) -> Self {
        BufferedTxn {
            shard,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl ShardTransaction for BufferedTxn {
    async fn get(&mut self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        if let Some(w) = self.writes.get(&id) {
            return Ok(w.clone());
        }
        if let Some(r) = self.reads.get(&id) {
            return Ok(r.clone());
        }
        let v = self.shard.get(id).await?;
        self.reads.insert(id, v.clone());
        Ok(v)
    }

    async fn set(&mut self, id: ObjectId, entry: ObjectEntry) -> Result<()> {
        if entry.tombstone {
            return Err(ShardError::Invalid(
                "set with a tombstone entry; use delete".into(),
            ));
        }
        self.writes.insert(id, Some(entry));
        Ok(())
    }

    async fn delete(&mut self, id: ObjectId) -> Result<()> {
        self.writes.insert(id, None);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<Version> {
        let reads = std::mem::take(&mut self.reads).into_iter().collect();
        let writes = std::mem::take(&mut self.writes).into_iter().collect();
        self.shard.commit_transaction(reads, writes).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
