//! `BasicShard`: eventual consistency, or no replication when the shard has one replica.
//!
//! A write applies locally with a new HLC version and is acknowledged; it is then pushed to
//! every peer asynchronously, and peers merge it last-writer-wins, so the order of arrival
//! does not matter.
//!
//! Repair (the default): the write also puts one outbox record per peer
//! (`b'q' ++ peer ++ id`, the latest version of that object) in the same atomic batch. A
//! retry loop pushes outbox records every `retry_ms` and deletes each one once its peer
//! acknowledged that version. The outbox is durable, so neither a partition nor a crash of
//! the writer loses an acknowledged write; after heal every peer receives the latest version
//! of every object written during the partition.
//!
//! With `repair = false` the shard behaves as the seed design does: one push, fire and
//! forget. A push lost to a partition is never resent, and replicas diverge for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::factory::{peers, upgrade, AddressBook, NodeContext, Service};
use super::local::{lww_wins, LocalStore};
use super::txn::BufferedTxn;
use super::{
    HlcClock, ObjectEntry, ObjectId, Readiness, ReplicationType, Result, ShardError, ShardMetadata,
    ShardState, ShardStats, ShardTransaction, TxnOp, Version,
};
use crate::coverage::{self, Corner};
use crate::net::Transport;
use crate::storage::{DynStorage, KeyRange, WriteBatch};

/// Eventual-consistency settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicOptions {
    /// Keep a durable outbox and retry until every peer acknowledged (false: the seed's
    /// fire-and-forget push, which can diverge for good).
    pub repair: bool,
    /// How often the outbox is retried.
    pub retry_ms: u64,
    /// How long a push waits for its acknowledgement.
    pub push_timeout_ms: u64,
    /// Most records per push.
    pub batch: usize,
}

impl Default for BasicOptions {
    fn default() -> Self {
        BasicOptions {
            repair: true,
            retry_ms: 200,
            push_timeout_ms: 300,
            batch: 256,
        }
    }
}

/// Replication messages between eventual-consistency replicas.
#[derive(Debug, Serialize, Deserialize)]
pub enum PushRpc {
    /// Entries to merge.
    Push(Vec<(ObjectId, ObjectEntry)>),
}

const OUTBOX_PREFIX: u8 = b'q';

fn outbox_key(peer: u64, id: ObjectId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(OUTBOX_PREFIX);
    k.extend_from_slice(&peer.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn outbox_prefix(peer: u64) -> Vec<u8> {
    let mut k = vec![OUTBOX_PREFIX];
    k.extend_from_slice(&peer.to_be_bytes());
    k
}

/// An eventually-consistent (or unreplicated) shard.
pub struct BasicShard {
    meta: ShardMetadata,
    node: u64,
    local: LocalStore,
    peers: Vec<u64>,
    addresses: AddressBook,
    transport: Option<Transport>,
    readiness: Readiness,
    repair_bytes: AtomicU64,
    me: Weak<BasicShard>,
    tasks: super::Tasks,
}

impl BasicShard {
    /// Builds the shard and binds its replication endpoint (when it has peers).
    pub async fn start(meta: ShardMetadata, ctx: NodeContext) -> Result<Arc<BasicShard>> {
        let peers = match meta.kind {
            super::ShardKind::None => Vec::new(),
            _ => peers(&meta, ctx.node),
        };
        let transport = if peers.is_empty() {
            None
        } else {
            let addr = ctx.addresses.addr(ctx.node, Service::Replication)?;
            Some(
                Transport::bind(addr)
                    .await
                    .map_err(|e| ShardError::Unavailable(e.to_string()))?,
            )
        };
        let hlc = Arc::new(HlcClock::new(ctx.node, ctx.clock.clone()));
        let local = LocalStore::new(ctx.app.clone(), hlc);
        local.recover_clock().await?;
        let shard = Arc::new_cyclic(|me| BasicShard {
            meta,
            node: ctx.node,
            local,
            peers,
            addresses: ctx.addresses.clone(),
            transport,
            readiness: Readiness::new(),
            repair_bytes: AtomicU64::new(0),
            me: me.clone(),
            tasks: Default::default(),
        });
        if let Some(t) = &shard.transport {
            let weak = Arc::downgrade(&shard);
            t.serve(move |req: PushRpc| {
                let shard = weak.upgrade();
                async move {
                    match (shard, req) {
                        (Some(s), PushRpc::Push(entries)) if s.readiness.is_ready() => {
                            let n = entries.len();
                            let stored = s.local.merge(entries, lww_wins, &|_| {}).await?;
                            coverage::hit_if(stored.len() < n, Corner::EventualStalePushIgnored);
                            Ok(())
                        }
                        _ => Err(ShardError::NotReady),
                    }
                }
            });
        }
        Ok(shard)
    }

    fn options(&self) -> &BasicOptions {
        &self.meta.options.eventual
    }

    /// Sends entries to one peer; `Ok` once the peer stored them.
    async fn push_to(&self, peer: u64, entries: Vec<(ObjectId, ObjectEntry)>) -> Result<()> {
        let transport = self.transport.as_ref().ok_or(ShardError::NotReady)?;
        let addr = self.addresses.addr(peer, Service::Replication)?;
        let timeout = Duration::from_millis(self.options().push_timeout_ms);
        let reply: Result<()> = transport
            .call_idempotent(addr, &PushRpc::Push(entries), timeout)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        reply
    }

    /// After a local write: push it to every peer, once, in the background.
    fn replicate(&self, stored: Vec<(ObjectId, ObjectEntry)>) {
        let Some(shard) = self.me.upgrade() else {
            return;
        };
        for &peer in &self.peers {
            let (shard, entries) = (shard.clone(), stored.clone());
            tokio::spawn(async move {
                if let Err(e) = shard.push_to(peer, entries).await {
                    tracing::debug!(node = shard.node, peer, "push failed: {e}");
                }
            });
        }
    }

    /// One pass of the retry loop: for each peer, push a batch of its outbox and clear what
    /// it acknowledged.
    async fn retry_outbox(&self) -> Result<()> {
        for &peer in &self.peers {
            let pairs = self
                .local
                .storage
                .scan(KeyRange::prefix(&outbox_prefix(peer)), self.options().batch)
                .await?;
            if pairs.is_empty() {
                continue;
            }
            let mut entries = Vec::with_capacity(pairs.len());
            let mut acked = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let id = ObjectId::from_be_bytes(k[9..17].try_into().map_err(|_| {
                    ShardError::Corrupt(format!("outbox key {k:?} is not 17 bytes"))
                })?);
                let e = ObjectEntry::decode(id, &v)?;
                acked.push((k, e.version));
                entries.push((id, e));
            }
            let msg = PushRpc::Push(entries);
            let size = bincode::serialized_size(&msg).unwrap_or(0);
            self.repair_bytes.fetch_add(size, Ordering::Relaxed);
            let PushRpc::Push(entries) = msg;
            if self.push_to(peer, entries).await.is_ok() {
                self.local.remove_if_version(acked).await?;
            } else {
                coverage::hit(Corner::EventualOutboxPushFailed);
            }
        }
        Ok(())
    }

    /// Objects still waiting in the outbox for some peer.
    pub async fn outbox_len(&self) -> Result<u64> {
        Ok(self
            .local
            .storage
            .scan(KeyRange::prefix(&[OUTBOX_PREFIX]), usize::MAX)
            .await?
            .len() as u64)
    }

    async fn write(
        &self,
        reads: &[(ObjectId, Option<ObjectEntry>)],
        writes: Vec<TxnOp>,
    ) -> Result<Version> {
        self.readiness.check()?;
        let repair =
            self.options().repair && !crate::bugs::active(crate::bugs::Bug::EventualNoRepair);
        let outbox_peers: &[u64] = if repair { &self.peers } else { &[] };
        let (version, stored) = self
            .local
            .write_local(
                reads,
                writes,
                |batch: &mut WriteBatch, stored: &[(ObjectId, ObjectEntry)]| {
                    for &peer in outbox_peers {
                        for (id, e) in stored {
                            batch.put(outbox_key(peer, *id), e.encode());
                        }
                    }
                },
                &|_| {},
            )
            .await?;
        self.replicate(stored);
        Ok(version)
    }
}

#[async_trait]
impl ShardState for BasicShard {
    fn meta(&self) -> &ShardMetadata {
        &self.meta
    }

    fn replication_type(&self) -> ReplicationType {
        if self.peers.is_empty() {
            ReplicationType::None
        } else {
            ReplicationType::EventualConsistency
        }
    }

    fn storage(&self) -> &DynStorage {
        &self.local.storage
    }

    async fn initialize(&self) -> Result<()> {
        self.readiness.set(true);
        if self.options().repair && !self.peers.is_empty() {
            let weak = self.me.clone();
            let every = Duration::from_millis(self.options().retry_ms.max(1));
            let task = tokio::spawn(async move {
                loop {
                    crate::rt::timers::sleep(every).await;
                    let Some(shard) = weak.upgrade() else { return };
                    if !shard.readiness.is_ready() {
                        return;
                    }
                    if let Err(e) = shard.retry_outbox().await {
                        tracing::warn!(node = shard.node, "outbox retry failed: {e}");
                    }
                }
            });
            self.tasks.push(task);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.readiness.set(false);
        self.tasks.abort_all();
        Ok(())
    }

    fn watch_readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.readiness.watch()
    }

    async fn get(&self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        self.readiness.check()?;
        self.local.get(id).await
    }

    async fn count(&self) -> Result<u64> {
        self.readiness.check()?;
        self.local.count().await
    }

    async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        self.readiness.check()?;
        self.local.scan(prefix, limit).await
    }

    async fn begin_transaction(&self) -> Result<Box<dyn ShardTransaction>> {
        self.readiness.check()?;
        Ok(Box::new(BufferedTxn::new(upgrade(&self.me)?)))
    }

    async fn commit_transaction(
        &self,
        reads: Vec<(ObjectId, Option<ObjectEntry>)>,
        writes: Vec<TxnOp>,
    ) -> Result<Version> {
        self.write(&reads, writes).await
    }

    async fn create_snapshot(&self) -> Result<String> {
        super::snapshot_local(&self.local.storage).await
    }

    async fn restore_from_snapshot(&self, snapshot_id: &str) -> Result<()> {
        super::restore_local(&self.local.storage, snapshot_id).await
    }

    async fn compact_storage(&self) -> Result<()> {
        super::release_older_snapshots(&self.local.storage).await
    }

    fn stats(&self) -> ShardStats {
        ShardStats {
            repair_bytes: self.repair_bytes.load(Ordering::Relaxed),
            root_hash: None,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
