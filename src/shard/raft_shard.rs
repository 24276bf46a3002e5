//! `RaftShard`: a shard replicated by openraft.
//!
//! Every write is one Raft entry (a transaction too: its reads become `Expect` preconditions
//! checked when the entry applies, so it commits atomically or not at all). Reads are
//! linearizable: served by the leader after `ensure_linearizable`, never from a follower's
//! local state. A request on a follower is forwarded to the leader once, or answered
//! `NotLeader` with the leader it knows. Deletes remove the object (Raft orders every write,
//! so no tombstone is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::factory::{upgrade, AddressBook, NodeContext, Service};
use super::txn::BufferedTxn;
use super::{
    decode_live, object_key, scan_prefix, HlcClock, ObjectEntry, ObjectId, Readiness,
    ReplicationType, Result, ShardError, ShardMetadata, ShardState, ShardStats, ShardTransaction,
    TxnOp, Version,
};
use crate::raft::network::{ClientError, ClientReply, ClientRequest};
use crate::raft::{CommandResult, RaftNode, ShardCommand, ShardOp};
use crate::storage::DynStorage;

/// A Raft-replicated shard on one node.
pub struct RaftShard {
    meta: ShardMetadata,
    node: Arc<RaftNode>,
    addresses: AddressBook,
    hlc: HlcClock,
    readiness: Readiness,
    me: Weak<RaftShard>,
}

impl From<ClientError> for ShardError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotLeader { leader } => ShardError::NotLeader { leader },
            ClientError::Unavailable(m) => ShardError::Unavailable(m),
        }
    }
}

fn unexpected(r: ClientReply) -> ShardError {
    ShardError::Unavailable(format!("unexpected reply {r:?}"))
}

impl RaftShard {
    /// Starts the Raft node of this replica on the context's log and application storage.
    pub async fn start(meta: ShardMetadata, ctx: NodeContext) -> Result<Arc<RaftShard>> {
        let log = ctx
            .log
            .clone()
            .ok_or_else(|| ShardError::Invalid("a Raft shard needs a log device".into()))?;
        let addr = ctx.addresses.addr(ctx.node, Service::Raft)?;
        let node = RaftNode::start(
            ctx.node,
            addr,
            meta.options.raft.clone(),
            log,
            ctx.app.clone(),
            ctx.probe.clone(),
        )
        .await
        .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        Ok(Arc::new_cyclic(|me| RaftShard {
            meta,
            node,
            addresses: ctx.addresses.clone(),
            hlc: HlcClock::new(ctx.node, ctx.clock.clone()),
            readiness: Readiness::new(),
            me: me.clone(),
        }))
    }

    /// The Raft node underneath.
    pub fn raft_node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    async fn command(&self, ops: Vec<ShardOp>) -> Result<CommandResult> {
        self.readiness.check()?;
        Ok(self.node.write(ShardCommand { ops }).await?)
    }

    async fn query(&self, q: ClientRequest) -> Result<ClientReply> {
        self.readiness.check()?;
        Ok(self.node.query(q).await?)
    }

    fn write_ops(&self, writes: Vec<TxnOp>, version: Version) -> Result<Vec<ShardOp>> {
        writes
            .into_iter()
            .map(|(id, e)| match e {
                Some(mut e) if !e.tombstone => {
                    e.version = version;
                    Ok(ShardOp::Put {
                        key: object_key(id),
                        value: e.encode(),
                    })
                }
                Some(_) => Err(ShardError::Invalid("set with a tombstone entry".into())),
                None => Ok(ShardOp::Delete {
                    key: object_key(id),
                }),
            })
            .collect()
    }

    /// Adds a replica (as a learner, then a voter) through a membership change; run on the
    /// leader.
    pub async fn add_replica(&self, id: u64) -> Result<()> {
        let addr = self.addresses.addr(id, Service::Raft)?;
        self.ensure_leader()?;
        self.node
            .raft
            .add_learner(id, openraft::BasicNode::new(addr.to_string()), true)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        let mut voters = self.voters();
        voters.insert(id);
        self.change_voters(voters).await
    }

    /// Removes a replica through a membership change; run on the leader.
    pub async fn remove_replica(&self, id: u64) -> Result<()> {
        self.ensure_leader()?;
        let mut voters = self.voters();
        voters.remove(&id);
        self.change_voters(voters).await
    }

    fn ensure_leader(&self) -> Result<()> {
        match self.node.leader() {
            Some(l) if l == self.node.id => Ok(()),
            leader => Err(ShardError::NotLeader { leader }),
        }
    }

    fn voters(&self) -> BTreeSet<u64> {
        let m = self.node.raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().collect()
    }

    async fn change_voters(&self, voters: BTreeSet<u64>) -> Result<()> {
        self.node
            .raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| ShardError::Unavailable(e.to_string()))
    }
}

#[async_trait]
impl ShardState for RaftShard {
    fn meta(&self) -> &ShardMetadata {
        &self.meta
    }

    fn replication_type(&self) -> ReplicationType {
        ReplicationType::Consensus
    }

    fn storage(&self) -> &DynStorage {
        self.node.app_storage()
    }

    /// Marks the replica ready. The lowest-numbered replica of a fresh cluster also
    /// initializes the Raft membership with every replica (a no-op if one exists).
    async fn initialize(&self) -> Result<()> {
        let first = self.meta.replicas.iter().min() == Some(&self.node.id);
        let fresh = {
            let m = self.node.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_none()
        };
        // Planted bug: a restarted first node takes its cluster for a new one, initializes
        // it again, and gives up on the refusal.
        let not_idempotent = crate::bugs::active(crate::bugs::Bug::RaftInitNotIdempotent);
        if first && (fresh || not_idempotent) {
            let mut members = BTreeMap::new();
            for r in &self.meta.replicas {
                members.insert(*r, self.addresses.addr(*r, Service::Raft)?);
            }
            if let Err(e) = self.node.initialize(&members).await {
                tracing::debug!(node = self.node.id, "raft initialize: {e}");
                if not_idempotent {
                    return Err(ShardError::Unavailable(format!("raft initialize: {e}")));
                }
            }
        }
        self.readiness.set(true);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.readiness.set(false);
        self.node
            .raft
            .shutdown()
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))
    }

    fn watch_readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.readiness.watch()
    }

    async fn get(&self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        match self.query(ClientRequest::Read(object_key(id))).await? {
            ClientReply::Value(Some(b)) => Ok(Some(ObjectEntry::decode(id, &b)?)),
            ClientReply::Value(None) => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    async fn count(&self) -> Result<u64> {
        match self.query(ClientRequest::Count).await? {
            ClientReply::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        let prefix = scan_prefix(prefix)?;
        match self.query(ClientRequest::Scan { prefix, limit }).await? {
            ClientReply::Pairs(p) => decode_live(p),
            other => Err(unexpected(other)),
        }
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
        let version = self.hlc.tick();
        let read_ids: Vec<ObjectId> = reads.iter().map(|(id, _)| *id).collect();
        let mut ops: Vec<ShardOp> = reads
            .into_iter()
            .map(|(id, e)| ShardOp::Expect {
                key: object_key(id),
                expected: e.map(|e| e.encode()),
            })
            .collect();
        ops.extend(self.write_ops(writes, version)?);
        let r = self.command(ops).await?;
        match r.aborted {
            Some(i) => Err(ShardError::Conflict(read_ids[i])),
            None => Ok(version),
        }
    }

    /// Builds a Raft snapshot now (openraft then purges the log it covers).
    async fn create_snapshot(&self) -> Result<String> {
        self.readiness.check()?;
        Ok(self.node.snapshot_now(Duration::from_secs(30)).await?)
    }

    async fn restore_from_snapshot(&self, _snapshot_id: &str) -> Result<()> {
        Err(ShardError::Unsupported(
            "a Raft replica takes its state from the log or the leader's snapshot; \
             restoring one replica alone would fork it from the others"
                .into(),
        ))
    }

    /// Builds a snapshot so openraft purges the log before it.
    async fn compact_storage(&self) -> Result<()> {
        self.create_snapshot().await.map(|_| ())
    }

    fn stats(&self) -> ShardStats {
        ShardStats::default()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
