//! Raft's messages on the wire and openraft's `RaftNetwork` over our [`Transport`].
//!
//! Snapshots travel as a sequence of chunk RPCs in the snapshot stream format; each chunk is
//! acknowledged before the next is sent. The receiver feeds chunks into a bounded channel that
//! the state machine drains while installing, so neither side holds the whole snapshot.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Snapshot};
use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotData;
use super::state_machine::local_chunks;
use super::types::{CommandResult, NodeId, ShardCommand, SnapshotMeta, TypeConfig, Vote};
use crate::coverage::{self, Corner};
use crate::net::{NetError, Transport};
use crate::storage::stream::{RaftSnapshotMeta, SnapshotHeader};
use crate::storage::StorageError;

/// A request between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// openraft append-entries (also heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// openraft vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Chunk(SnapshotChunk),
    /// A client request forwarded from a follower to the leader.
    Client(ClientRequest),
}

/// One chunk of a snapshot being sent.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sender.
    pub from: NodeId,
    /// The leader's vote.
    pub vote: Vote,
    /// The snapshot's metadata.
    pub meta: SnapshotMeta,
    /// Position of this chunk, from 0.
    pub seq: u64,
    /// Bytes of the snapshot stream.
    pub data: Vec<u8>,
    /// The last message: no data, asks for the install result.
    pub done: bool,
}

/// What a client asks of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A command through consensus.
    Write(ShardCommand),
    /// A linearizable read of one key.
    Read(Vec<u8>),
    /// A linearizable scan of the keys under a prefix, at most `limit` pairs.
    Scan {
        /// Key prefix.
        prefix: Vec<u8>,
        /// Most pairs returned.
        limit: usize,
    },
    /// A linearizable count of the keys.
    Count,
}

/// A successful client reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The command's results.
    Written(CommandResult),
    /// The value read.
    Value(Option<Vec<u8>>),
    /// The pairs scanned, in key order.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// The number of keys.
    Count(u64),
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    /// This node is not the leader; the hint names the one it knows of.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<NodeId>,
    },
    /// The request could not be completed; it may or may not have taken effect.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A reply between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `Chunk`: `None` acknowledges a data chunk, `Some` answers the last one.
    Chunk(Result<Option<SnapshotResponse<NodeId>>, String>),
    /// To `Client`.
    Client(Result<ClientReply, ClientError>),
}

/// How long an RPC may take when openraft gives no deadline.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the last message of a snapshot transfer, which waits for the install, may take;
/// and how long a receiver waits for the next chunk before it drops a transfer.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a data chunk waits for its acknowledgement before it is sent again. A staged
/// chunk is acknowledged on arrival and a streamed one once the install takes it.
pub const DATA_CHUNK_TIMEOUT: Duration = Duration::from_millis(500);
/// How many times a data chunk is sent before the transfer gives up (the network may lose a
/// chunk or its acknowledgement; the receiver acknowledges a repeat of the chunk it just
/// took without taking it twice). After that the connection counts as broken, and openraft
/// sends the snapshot again from its start.
pub const DATA_CHUNK_ATTEMPTS: u32 = 3;

/// Creates a client per peer.
#[derive(Clone)]
pub struct NetworkFactory {
    /// This node's id.
    pub id: NodeId,
    /// This node's transport.
    pub transport: Transport,
    /// Bytes of snapshot stream per chunk.
    pub chunk_bytes: usize,
}

/// A client to one peer.
pub struct NetworkClient {
    id: NodeId,
    target: NodeId,
    addr: Result<SocketAddr, String>,
    transport: Transport,
    chunk_bytes: usize,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkClient {
        NetworkClient {
            id: self.id,
            target,
            addr: node
                .addr
                .parse()
                .map_err(|e| format!("bad address {:?} of node {target}: {e}", node.addr)),
            transport: self.transport.clone(),
            chunk_bytes: self.chunk_bytes,
        }
    }
}

fn rpc_err<E: std::error::Error>(e: NetError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        NetError::Timeout(_) | NetError::Io(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl NetworkClient {
    /// A snapshot chunk: at most once (chunks are a sequence), within `timeout`.
    async fn call(&self, req: RaftRpc, timeout: Duration) -> Result<RaftReply, NetError> {
        let addr = self.addr.clone().map_err(NetError::Io)?;
        self.transport.call(addr, &req, timeout).await
    }

    /// An append or a vote: idempotent in Raft (the network may repeat them), and bounded
    /// by openraft, which runs each under a timeout of the RPC's own length (`hard_ttl`)
    /// started before this call; a second timer here would never fire first.
    async fn call_bounded(&self, req: RaftRpc) -> Result<RaftReply, NetError> {
        let addr = self.addr.clone().map_err(NetError::Io)?;
        self.transport
            .call_idempotent_bounded_by_caller(addr, &req)
            .await
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: &RaftReply,
    ) -> RPCError<NodeId, BasicNode, E> {
        let e = NetError::Codec(format!("unexpected reply {reply:?}"));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call_bounded(RaftRpc::Append(rpc)).await {
            Ok(RaftReply::Append(Ok(r))) => {
                match r {
                    AppendEntriesResponse::Conflict => coverage::hit(Corner::RaftAppendConflict),
                    AppendEntriesResponse::HigherVote(_) => {
                        coverage::hit(Corner::RaftHigherVoteSeen)
                    }
                    _ => {}
                }
                Ok(r)
            }
            Ok(RaftReply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let term = rpc.vote.leader_id.term;
        match self.call_bounded(RaftRpc::Vote(rpc)).await {
            Ok(RaftReply::Vote(Ok(r))) => {
                coverage::hit_if(!r.vote_granted, Corner::RaftVoteRefused);
                coverage::hit_if(r.vote.leader_id.term > term, Corner::RaftHigherVoteSeen);
                Ok(r)
            }
            Ok(RaftReply::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let meta = snapshot.meta.clone();
        let SnapshotData::Local { storage, snapshot } = *snapshot.snapshot else {
            let e = NetError::Codec("only a locally built snapshot can be sent".into());
            return Err(StreamingError::Network(NetworkError::new(&e)));
        };
        let header = SnapshotHeader {
            snapshot_id: meta.snapshot_id.clone(),
            raft: Some(RaftSnapshotMeta {
                last_log_id: meta.last_log_id.map(|l| (l.leader_id.term, l.index)),
                membership: bincode::serialize(&meta.last_membership).unwrap_or_default(),
            }),
            meta: Vec::new(),
        };
        let mut chunks = match local_chunks(&storage, &snapshot, header, self.chunk_bytes).await {
            Ok(chunks) => chunks,
            // A newer snapshot replaced this one, and released it, after openraft picked it
            // to send: the storage is fine and the transfer is obsolete. A network error makes
            // openraft send again, with the snapshot that is current now.
            Err(StorageError::UnknownSnapshot(id)) => {
                coverage::hit(Corner::RaftSendSuperseded);
                let e = NetError::Io(format!("snapshot {id} was replaced before it was sent"));
                return Err(StreamingError::Network(NetworkError::new(&e)));
            }
            Err(e) => {
                return Err(StreamingError::StorageError(
                    openraft::StorageIOError::read_snapshot(None, &e).into(),
                ))
            }
        };
        let mut cancel = std::pin::pin!(cancel);
        let mut seq = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                c = chunks.next() => c,
            };
            let (data, done) = match next {
                Some(Ok(data)) => (data, false),
                Some(Err(e)) => {
                    return Err(StreamingError::StorageError(
                        openraft::StorageIOError::read_snapshot(None, &e).into(),
                    ))
                }
                None => (Vec::new(), true),
            };
            let len = data.len();
            super::snapshot::held::add(len);
            let (timeout, attempts) = if done {
                (CHUNK_TIMEOUT, 1)
            } else {
                (DATA_CHUNK_TIMEOUT, DATA_CHUNK_ATTEMPTS)
            };
            let mut reply = Err(NetError::Timeout(timeout));
            for _ in 0..attempts {
                let chunk = SnapshotChunk {
                    from: self.id,
                    vote,
                    meta: meta.clone(),
                    seq,
                    data: data.clone(),
                    done,
                };
                reply = self.call(RaftRpc::Chunk(chunk), timeout).await;
                if !matches!(reply, Err(NetError::Timeout(_))) {
                    break;
                }
            }
            super::snapshot::held::sub(len);
            match reply {
                Ok(RaftReply::Chunk(Ok(None))) if !done => seq += 1,
                Ok(RaftReply::Chunk(Ok(Some(resp)))) if done => return Ok(resp),
                Ok(RaftReply::Chunk(Err(e))) => {
                    let e = NetError::Io(format!("receiver refused chunk {seq}: {e}"));
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
                Ok(other) => {
                    let e = NetError::Codec(format!("unexpected reply {other:?}"));
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
                Err(e) => return Err(StreamingError::Unreachable(Unreachable::new(&e))),
            }
        }
    }
}
