//! `ObjectShard` serves a shard's operations over the transport (madsim's network in
//! simulation); `ShardClient` calls it. A request that times out or is lost is reported as
//! `Unavailable`: the caller cannot know whether it took effect.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DynShard, ObjectEntry, ObjectId, Result, ShardError, TxnOp, Version};
use crate::net::Transport;

/// A request to a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Read one object.
    Get(ObjectId),
    /// Write one object.
    Set(ObjectId, ObjectEntry),
    /// Delete one object.
    Delete(ObjectId),
    /// Count live objects.
    Count,
    /// Live objects under an id prefix.
    Scan {
        /// Big-endian id prefix.
        prefix: Vec<u8>,
        /// Most objects returned.
        limit: usize,
    },
    /// Write several objects atomically.
    BatchSet(Vec<(ObjectId, ObjectEntry)>),
    /// Delete several objects atomically.
    BatchDelete(Vec<ObjectId>),
    /// Commit a transaction prepared by the client: the reads it made and its writes.
    Commit {
        /// What the transaction read.
        reads: Vec<(ObjectId, Option<ObjectEntry>)>,
        /// What it writes.
        writes: Vec<TxnOp>,
    },
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// An object (or none).
    Entry(Option<ObjectEntry>),
    /// The version a write was given.
    Written(Version),
    /// A count.
    Count(u64),
    /// Objects.
    Entries(Vec<(ObjectId, ObjectEntry)>),
}

/// Serves a shard on an address.
pub struct ObjectShard {
    shard: DynShard,
    transport: Transport,
}

impl ObjectShard {
    /// Binds `addr` and serves `shard` there.
    pub async fn serve(shard: DynShard, addr: SocketAddr) -> Result<ObjectShard> {
        let transport = Transport::bind(addr)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        let s = shard.clone();
        transport.serve(move |req: ShardRequest| {
            let s = s.clone();
            async move { handle(&s, req).await }
        });
        Ok(ObjectShard { shard, transport })
    }

    /// The shard served.
    pub fn shard(&self) -> &DynShard {
        &self.shard
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }
}

/// Runs one request against a shard.
pub async fn handle(s: &DynShard, req: ShardRequest) -> Result<ShardResponse> {
    Ok(match req {
        ShardRequest::Get(id) => ShardResponse::Entry(s.get(id).await?),
        ShardRequest::Set(id, e) => ShardResponse::Written(s.set(id, e).await?),
        ShardRequest::Delete(id) => ShardResponse::Written(s.delete(id).await?),
        ShardRequest::Count => ShardResponse::Count(s.count().await?),
        ShardRequest::Scan { prefix, limit } => {
            let mut entries = s.scan(&prefix, limit).await?;
            if crate::bugs::active(crate::bugs::Bug::ScanValuesShifted) {
                // Keys and values zipped one off: each key gets the value of the key after
                // it (the last keeps its own).
                for i in 1..entries.len() {
                    entries[i - 1].1 = entries[i].1.clone();
                }
            }
            ShardResponse::Entries(entries)
        }
        ShardRequest::BatchSet(es) => ShardResponse::Written(s.batch_set(es).await?),
        ShardRequest::BatchDelete(ids) => ShardResponse::Written(s.batch_delete(ids).await?),
        ShardRequest::Commit { reads, writes } => {
            ShardResponse::Written(s.commit_transaction(reads, writes).await?)
        }
    })
}

/// Calls a remote [`ObjectShard`].
#[derive(Clone)]
pub struct ShardClient {
    transport: Transport,
    timeout: Duration,
}

impl ShardClient {
    /// A client on its own endpoint at `bind`.
    pub async fn bind(bind: SocketAddr, timeout: Duration) -> Result<ShardClient> {
        let transport = Transport::bind(bind)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        Ok(ShardClient { transport, timeout })
    }

    /// Sends a request to the shard at `addr`.
    pub async fn call(&self, addr: SocketAddr, req: &ShardRequest) -> Result<ShardResponse> {
        let reply: Result<ShardResponse> = self
            .transport
            .call(addr, req, self.timeout)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        reply
    }

    /// Reads an object.
    pub async fn get(&self, addr: SocketAddr, id: ObjectId) -> Result<Option<ObjectEntry>> {
        match self.call(addr, &ShardRequest::Get(id)).await? {
            ShardResponse::Entry(e) => Ok(e),
            other => Err(ShardError::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    /// Writes an object.
    pub async fn set(&self, addr: SocketAddr, id: ObjectId, e: ObjectEntry) -> Result<Version> {
        written(self.call(addr, &ShardRequest::Set(id, e)).await?)
    }

    /// Deletes an object.
    pub async fn delete(&self, addr: SocketAddr, id: ObjectId) -> Result<Version> {
        written(self.call(addr, &ShardRequest::Delete(id)).await?)
    }
}

fn written(r: ShardResponse) -> Result<Version> {
    match r {
        ShardResponse::Written(v) => Ok(v),
        other => Err(ShardError::Corrupt(format!("unexpected reply {other:?}"))),
    }
}
