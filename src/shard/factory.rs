//! Builds any kind of shard from its metadata and a node's resources.

use crate::probe::Probe;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{
    BasicShard, DynShard, MstShard, NodeClock, RaftShard, Result, ShardError, ShardKind,
    ShardMetadata,
};
use crate::storage::{DynDevice, DynStorage};

/// Port offsets from a node's base address: each service has its own endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Raft RPCs.
    Raft = 0,
    /// MST anti-entropy and eventual-consistency pushes.
    Replication = 1,
    /// Client requests ([`super::ObjectShard`]).
    Client = 2,
}

/// Where each node of a cluster listens: its base address; service `s` is at port
/// `base + s`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressBook(pub BTreeMap<u64, SocketAddr>);

impl AddressBook {
    /// The address of `service` on `node`.
    pub fn addr(&self, node: u64, service: Service) -> Result<SocketAddr> {
        let base = self
            .0
            .get(&node)
            .ok_or_else(|| ShardError::Invalid(format!("no address for node {node}")))?;
        let mut a = *base;
        a.set_port(base.port() + service as u16);
        Ok(a)
    }
}

/// What a node gives the shards it hosts.
#[derive(Clone)]
pub struct NodeContext {
    /// This node's id.
    pub node: u64,
    /// Every node's base address.
    pub addresses: AddressBook,
    /// Application storage (survives restarts of the node).
    pub app: DynStorage,
    /// The Raft log's device (Raft shards only).
    pub log: Option<DynDevice>,
    /// The node's clock (the simulation may skew it).
    pub clock: NodeClock,
    /// Where the node's Raft storage reports what it does (a default probe: nowhere).
    pub probe: Probe,
}

/// Builds shards.
pub struct ShardFactory;

impl ShardFactory {
    /// Builds the shard `meta` describes on this node and binds its endpoints. Call
    /// `initialize` on the result to start it.
    pub async fn create(meta: ShardMetadata, ctx: NodeContext) -> Result<DynShard> {
        if !meta.replicas.contains(&ctx.node) {
            return Err(ShardError::Invalid(format!(
                "node {} is not a replica of shard {} ({:?})",
                ctx.node, meta.id, meta.replicas
            )));
        }
        Ok(match meta.kind {
            ShardKind::Raft => RaftShard::start(meta, ctx).await? as DynShard,
            ShardKind::Mst => MstShard::start(meta, ctx).await? as DynShard,
            ShardKind::Eventual | ShardKind::None => {
                BasicShard::start(meta, ctx).await? as DynShard
            }
        })
    }
}

/// The peers of this node in a shard.
pub(crate) fn peers(meta: &ShardMetadata, me: u64) -> Vec<u64> {
    meta.replicas.iter().copied().filter(|r| *r != me).collect()
}

/// Shorthand for shards that keep an `Arc` to themselves for transactions.
pub(crate) fn upgrade<T: super::ShardState + 'static>(me: &std::sync::Weak<T>) -> Result<Arc<T>> {
    me.upgrade().ok_or(ShardError::NotReady)
}
