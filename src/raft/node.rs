//! A Raft node: openraft on our log store and state machine, serving the Raft RPCs and client
//! requests over the transport.
//!
//! Reads are linearizable: the leader confirms its leadership with a quorum
//! (a confirmation round shared by concurrent reads, [`super::read_batch`]) and waits until it has applied up to the read point before reading
//! its state machine. A follower never answers from its local state: it forwards the request
//! to the leader it knows, once, or answers `NotLeader`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::Snapshot;
use openraft::{BasicNode, Config, Raft};

use super::network::{
    ClientError, ClientReply, ClientRequest, NetworkFactory, RaftReply, RaftRpc, SnapshotChunk,
    CHUNK_TIMEOUT,
};
use super::read_batch::{ReadBatcher, RoundFn};
use super::snapshot::{SnapshotData, INCOMING_CHUNKS};
use super::state_machine::CurrentSnapshot;
use super::types::{CommandResult, NodeId, ShardCommand, TypeConfig};
use super::{LogStore, ObjectShardStateMachine};
use crate::coverage::{self, Corner};
use crate::net::{NetError, Transport};
use crate::probe::Probe;
use crate::storage::write_back::WriteBack;
use crate::storage::{DynDevice, DynStorage, StorageError};

/// Timing and snapshot settings of a Raft shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftOptions {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Smallest election timeout.
    pub election_timeout_min_ms: u64,
    /// Largest election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot (fewer: lagging nodes need a snapshot sooner).
    pub keep_after_snapshot: u64,
    /// How long a client request may wait.
    pub client_timeout_ms: u64,
    /// Bytes of snapshot stream per chunk sent to a follower (small values make scenario
    /// snapshots span many chunks).
    pub snapshot_chunk_bytes: usize,
    /// Size of the Raft log's segments, bytes (used when a node's log is created; an
    /// existing log keeps its own). Small segments roll over and reuse freed slots often.
    pub log_segment_bytes: u64,
    /// This node's place among `of` nodes in election order: `(rank, of)`. Set by whoever
    /// starts the cluster, not by scenario files; see [`RaftOptions::election_timeout_ms`].
    #[serde(skip)]
    pub election_rank: Option<(u64, u64)>,
}

impl Default for RaftOptions {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every: 5_000,
            keep_after_snapshot: 1_000,
            client_timeout_ms: 2_000,
            snapshot_chunk_bytes: crate::storage::stream::DEFAULT_CHUNK_BYTES,
            log_segment_bytes: super::log_store::DEFAULT_SEGMENT_BYTES,
            election_rank: None,
        }
    }
}

impl RaftOptions {
    /// These options for the node at `rank` of `of` in election order.
    pub fn ranked(&self, rank: u64, of: u64) -> RaftOptions {
        RaftOptions {
            election_rank: Some((rank, of)),
            ..self.clone()
        }
    }

    /// The election timeout range this node draws from, as (min, max) in ms.
    ///
    /// Each term has at most one leader (openraft's `single-term-leader`), so two candidates
    /// of one term split the vote and both try again in the next term. openraft draws a
    /// node's election timeout once per start and checks it on ticks every 1.5 heartbeats;
    /// two nodes whose timeouts fall on the same tick would split the vote in every term,
    /// forever. So a ranked node gets a fixed timeout of its own: the range is spread over
    /// `of` ranks at least one tick apart. Two candidates of different ranks then fire on
    /// different ticks, the gap grows by a tick or more each round, and once it is longer
    /// than the network's delay the lower rank's vote request wins. An unranked node draws
    /// from the whole range, as openraft does.
    ///
    /// Ranks are the configuration the stack ships with: a deployment gives each node its own
    /// election slot, as many as [`RaftOptions::max_election_ranks`] allows (nodes beyond it
    /// share one). Jittered boots and drifting clocks do not make them unnecessary: the
    /// range 150-300 ms holds only two or three ticks, and two survivors of a three-node
    /// cluster that drew timeouts on the same tick were seen splitting the vote term after
    /// term for more than ten seconds.
    pub fn election_timeout_ms(&self) -> (u64, u64) {
        let (min, max) = (self.election_timeout_min_ms, self.election_timeout_max_ms);
        match self.election_rank {
            Some((rank, of)) if of > 1 => {
                let tick = (3 * self.heartbeat_ms).div_ceil(2);
                // Spread over the range, but never so far that the slowest rank fires after
                // the quickest one's smaller-log retry (see `max_election_ranks`).
                let latest = (3 * min + 2).saturating_sub(tick + self.heartbeat_ms);
                let spacing = (max.saturating_sub(min) / (of - 1))
                    .min(latest.saturating_sub(min) / (of - 1))
                    .max(tick);
                let t = min + rank.min(of - 1) * spacing;
                (t, t + 1)
            }
            _ => (min, max),
        }
    }

    /// How many election ranks fit one tick apart. A node whose vote request is refused for
    /// its shorter log waits its own timeout plus openraft's smaller-log backoff (twice its
    /// largest timeout) before it asks again: at least `3 * min + 2` ms for the quickest rank.
    /// The slowest rank, whose node may hold the longer log, must fire before that, by a tick
    /// and a heartbeat of network delay; otherwise the node with the longer log never asks
    /// first, the shorter log's node takes each new term first, and the election livelocks
    /// (seen with six ranks, 150 to 525 ms: no leader for the rest of the run).
    pub fn max_election_ranks(&self) -> u64 {
        let tick = (3 * self.heartbeat_ms).div_ceil(2).max(1);
        let min = self.election_timeout_min_ms;
        let latest = (3 * min + 2).saturating_sub(tick + self.heartbeat_ms);
        latest.saturating_sub(min) / tick + 1
    }

    fn config(&self) -> Result<Config, String> {
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&self.snapshot_chunk_bytes) {
            return Err(format!(
                "snapshot_chunk_bytes = {} is outside {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}",
                self.snapshot_chunk_bytes
            ));
        }
        let segments = super::log_store::segments::MIN_SEGMENT_BYTES
            ..=super::log_store::segments::MAX_SEGMENT_BYTES;
        if !segments.contains(&self.log_segment_bytes) {
            return Err(format!(
                "log_segment_bytes = {} is outside {}..={}",
                self.log_segment_bytes,
                segments.start(),
                segments.end()
            ));
        }
        let (election_min, election_max) = self.election_timeout_ms();
        Config {
            cluster_name: "odgm-sim".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            purge_batch_size: 64,
            ..Config::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}

/// The smallest and largest `snapshot_chunk_bytes`.
pub const MIN_CHUNK_BYTES: usize = 64;
/// See [`MIN_CHUNK_BYTES`].
pub const MAX_CHUNK_BYTES: usize = 16 << 20;

/// Bytes of a snapshot a follower stages in memory before it starts installing. A transfer
/// that breaks off before its end costs a staged snapshot nothing but the bytes: openraft
/// never saw it, and the leader sends it again. A larger snapshot streams into the install
/// as it arrives, so memory stays bounded; a transfer of one of those that breaks off fails
/// the install, which openraft takes as fatal (the node stops, its state intact).
pub const STAGE_BYTES: usize = 32 << 20;

/// A snapshot being received from a leader.
struct Incoming {
    snapshot_id: String,
    vote: openraft::Vote<NodeId>,
    meta: super::types::SnapshotMeta,
    next_seq: u64,
    body: IncomingBody,
}

enum IncomingBody {
    /// Chunks held until the last one arrives (at most [`STAGE_BYTES`]).
    Staged { chunks: Vec<Vec<u8>>, bytes: usize },
    /// Chunks fed to an install that started early.
    Streaming {
        tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, StorageError>>,
        install: tokio::task::JoinHandle<Result<openraft::raft::SnapshotResponse<NodeId>, String>>,
    },
}

impl Incoming {
    /// Whether `c` belongs to this transfer: the same snapshot from the same leader's term. A
    /// transfer of the same snapshot under a newer vote is another transfer: its install
    /// must carry the newer vote, or openraft refuses it and the leader, seeing its own vote
    /// in the refusal, takes the snapshot as installed.
    fn is_of(&self, c: &SnapshotChunk) -> bool {
        self.snapshot_id == c.meta.snapshot_id && self.vote == c.vote
    }

    /// Takes the body out, leaving an empty staging (which releases nothing on drop).
    fn take_body(&mut self) -> IncomingBody {
        std::mem::replace(
            &mut self.body,
            IncomingBody::Staged {
                chunks: Vec::new(),
                bytes: 0,
            },
        )
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let IncomingBody::Staged { chunks, .. } = &self.body {
            super::snapshot::held::sub(chunks.iter().map(Vec::len).sum());
        }
    }
}

/// A running Raft node.
pub struct RaftNode {
    /// This node's id.
    pub id: NodeId,
    /// The openraft handle.
    pub raft: Raft<TypeConfig>,
    transport: Transport,
    app: DynStorage,
    log: LogStore,
    incoming: Mutex<BTreeMap<NodeId, Incoming>>,
    options: RaftOptions,
    probe: Probe,
    snapshots_installed: Arc<std::sync::atomic::AtomicU64>,
    current_snapshot: CurrentSnapshot,
    /// Planted bug `raft-lease-reads`: when a confirmation round that proved this node
    /// leader started, on this node's clock.
    lease_from: Lease,
    /// Confirmation rounds shared by the reads this node serves.
    reads: ReadBatcher,
}

/// Planted bug `raft-lease-reads`: when the last round that proved the node leader started.
type Lease = Arc<Mutex<Option<tokio::time::Instant>>>;

/// Runs `proof`, a round that shows a quorum took this node as leader when it started (a
/// leadership confirmation or a committed write). Planted bug `raft-lease-reads`: a round that
/// succeeds renews the lease from the time it started.
async fn renewing_lease<T, E>(
    lease: &Lease,
    proof: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = crate::rt::timers::now();
    let done = proof.await;
    if done.is_ok() && crate::bugs::active(crate::bugs::Bug::RaftLeaseReads) {
        *lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
    }
    done
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The transport could not bind.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Storage or openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

impl RaftNode {
    /// Starts a node on its storages (which survive restarts) at `addr`; its storage reports
    /// what it does to `probe`.
    pub async fn start(
        id: NodeId,
        addr: SocketAddr,
        options: RaftOptions,
        log: DynDevice,
        app: DynStorage,
        probe: Probe,
    ) -> Result<Arc<RaftNode>, StartError> {
        let config = Arc::new(options.config().map_err(StartError::Raft)?);
        let transport = Transport::bind(addr).await?;
        // Applies are unsynced batches: they wait in memory and reach the engine together.
        let app: DynStorage = WriteBack::new(app);
        let sm = ObjectShardStateMachine::open_with_probe(app.clone(), probe.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let snapshots_installed = sm.installed_counter();
        let current_snapshot = sm.current_snapshot_handle();
        let network = NetworkFactory {
            id,
            transport: transport.clone(),
            chunk_bytes: options.snapshot_chunk_bytes,
        };
        let mut log = LogStore::open(log, options.log_segment_bytes)
            .map_err(|e| StartError::Raft(e.to_string()))?
            .with_purge_gate(sm.durable_applied())
            .with_probe(probe.clone());
        log.report_recovered()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        rejoin_as_follower(&mut log, id)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let last = log.last_index();
        coverage::hit_if(last.is_some(), Corner::RaftRestartWithLog);
        coverage::hit_if(last > sm.applied_index(), Corner::RaftReapplyAfterRestart);
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let lease_from = Lease::default();
        let round: RoundFn = {
            let (raft, lease) = (raft.clone(), lease_from.clone());
            Arc::new(move || {
                let (raft, lease) = (raft.clone(), lease.clone());
                Box::pin(async move {
                    renewing_lease(&lease, raft.get_read_log_id())
                        .await
                        .map(|(read_point, _applied)| read_point)
                })
            })
        };
        let reads = ReadBatcher::new(raft.clone(), round, probe.clone());
        let node = Arc::new(RaftNode {
            id,
            raft,
            transport: transport.clone(),
            app,
            log,
            incoming: Mutex::new(BTreeMap::new()),
            options,
            probe,
            snapshots_installed,
            current_snapshot,
            lease_from,
            reads,
        });
        let weak = Arc::downgrade(&node);
        transport.serve(move |req: RaftRpc| {
            let node = weak.upgrade();
            async move {
                match node {
                    Some(n) => n.handle(req).await,
                    None => RaftReply::Client(Err(ClientError::Unavailable("node stopped".into()))),
                }
            }
        });
        Ok(node)
    }

    /// Makes this node the first member of a new cluster of `members` (id -> address).
    pub async fn initialize(&self, members: &BTreeMap<NodeId, SocketAddr>) -> Result<(), String> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
            .collect();
        self.raft.initialize(nodes).await.map_err(|e| e.to_string())
    }

    /// How many snapshots this incarnation installed from a leader.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The address this node serves on.
    pub fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Why this node's Raft core stopped, if it did (a storage error, a panic in the core).
    pub fn fatal(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.running_state.as_ref().err().map(|e| e.to_string())
    }

    /// Waits until this node's Raft core stops: why, if it stopped on an error (`None`: it
    /// was shut down).
    pub async fn stopped(&self) -> Option<String> {
        let why = |m: &openraft::RaftMetrics<NodeId, BasicNode>| match &m.running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(e) => Some(e.to_string()),
        };
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(w) = why(&metrics.borrow()) {
                return Some(w);
            }
            if metrics.changed().await.is_err() {
                return why(&metrics.borrow());
            }
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The log this node holds: index -> (term, payload hash), for the log-matching check.
    pub async fn log_summary(&self) -> Result<BTreeMap<u64, (u64, u64)>, String> {
        self.log.summary().await.map_err(|e| e.to_string())
    }

    /// The application storage (for checks; reads through it are not linearizable).
    pub fn app_storage(&self) -> &DynStorage {
        &self.app
    }

    /// Handles one request from the network.
    async fn handle(self: &Arc<Self>, req: RaftRpc) -> RaftReply {
        match req {
            RaftRpc::Append(r) if crate::bugs::active(crate::bugs::Bug::RaftAppendAckEarly) => {
                // Planted bug: answer at once and let the log catch up in the background.
                let raft = self.raft.clone();
                tokio::spawn(async move { raft.append_entries(r).await });
                RaftReply::Append(Ok(openraft::raft::AppendEntriesResponse::Success))
            }
            RaftRpc::Append(r) => RaftReply::Append(self.raft.append_entries(r).await),
            RaftRpc::Vote(r) => {
                let leading = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    m.state == openraft::ServerState::Leader
                        && r.vote.leader_id.term > m.current_term
                };
                coverage::hit_if(leading, Corner::RaftLeaderStepsDown);
                RaftReply::Vote(self.raft.vote(r).await)
            }
            // Boxed: the common request (an append) should not carry the size of the largest
            // one's future, which every spawn of a handler would copy.
            RaftRpc::Chunk(c) => RaftReply::Chunk(Box::pin(self.receive_chunk(c)).await),
            RaftRpc::Client(r) => RaftReply::Client(Box::pin(self.serve_client(r, false)).await),
        }
    }

    /// Takes one chunk of a snapshot from a leader. The first chunk starts a transfer and a
    /// watchdog that drops it if the sender goes silent for [`CHUNK_TIMEOUT`]. Chunks are
    /// staged until the last one arrives, and only then handed to openraft, so a transfer
    /// that breaks off (a partition, a crashed leader, a newer snapshot) costs nothing: the
    /// leader sends the snapshot again from its start. A snapshot larger than
    /// [`STAGE_BYTES`] starts its install early and streams into it instead (see there).
    async fn receive_chunk(
        self: &Arc<Self>,
        c: SnapshotChunk,
    ) -> Result<Option<openraft::raft::SnapshotResponse<NodeId>>, String> {
        if !c.done {
            self.probe.emit(|| crate::probe::RaftEvent::SnapshotChunk {
                from: c.from,
                seq: c.seq,
            });
        }
        if !c.done {
            let map = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&c.from)
                .is_some_and(|s| s.is_of(&c) && c.seq + 1 == s.next_seq)
            {
                // The chunk just taken, sent again (its acknowledgement was lost, or the
                // transfer started over): the same snapshot has the same bytes.
                return Ok(None);
            }
        }
        if c.seq == 0 {
            // A new snapshot from this leader replaces any unfinished one.
            let old = self
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    c.from,
                    Incoming {
                        snapshot_id: c.meta.snapshot_id.clone(),
                        vote: c.vote,
                        meta: c.meta.clone(),
                        next_seq: 0,
                        body: IncomingBody::Staged {
                            chunks: Vec::new(),
                            bytes: 0,
                        },
                    },
                );
            coverage::hit_if(old.is_some(), Corner::RaftTransferReplaced);
            drop(old);
            self.watch_transfer(c.from, c.meta.snapshot_id.clone(), c.vote);
        }
        if c.done {
            let session = self
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&c.from);
            let Some(mut s) = session.filter(|s| s.is_of(&c) && s.next_seq == c.seq) else {
                return Err(format!(
                    "no complete snapshot {} from node {}",
                    c.meta.snapshot_id, c.from
                ));
            };
            coverage::hit_if(c.seq > 1, Corner::RaftInstallMultiChunk);
            let install = match s.take_body() {
                IncomingBody::Staged { chunks, .. } => {
                    let (tx, install) = self.start_install(s.vote, s.meta.clone(), chunks.len());
                    for chunk in chunks {
                        // The channel holds them all: it was made that large.
                        let _ = tx.try_send(Ok(chunk));
                    }
                    install
                }
                IncomingBody::Streaming { install, .. } => install,
            };
            return match install.await {
                Ok(Ok(resp)) => Ok(Some(resp)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            };
        }
        let (tx, mut send) = {
            let mut map = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            let s = match map.get_mut(&c.from) {
                Some(s) if s.is_of(&c) && s.next_seq == c.seq => s,
                Some(s) => {
                    return Err(format!(
                        "chunk {} of {} out of order (expected {} of {})",
                        c.seq, c.meta.snapshot_id, s.next_seq, s.snapshot_id
                    ))
                }
                None => return Err(format!("no snapshot in progress from node {}", c.from)),
            };
            s.next_seq += 1;
            super::snapshot::held::add(c.data.len());
            let stage = if crate::bugs::active(crate::bugs::Bug::RaftInstallUnstaged) {
                0
            } else {
                STAGE_BYTES
            };
            match &mut s.body {
                IncomingBody::Staged { chunks, bytes } if *bytes + c.data.len() <= stage => {
                    *bytes += c.data.len();
                    chunks.push(c.data);
                    return Ok(None);
                }
                IncomingBody::Staged { .. } => {
                    // Too large to stage: install as it arrives, starting with what came.
                    let IncomingBody::Staged { mut chunks, .. } = s.take_body() else {
                        unreachable!("matched above")
                    };
                    let (tx, install) = self.start_install(s.vote, s.meta.clone(), INCOMING_CHUNKS);
                    s.body = IncomingBody::Streaming {
                        tx: tx.clone(),
                        install,
                    };
                    chunks.push(c.data);
                    (tx, chunks)
                }
                IncomingBody::Streaming { tx, .. } => (tx.clone(), vec![c.data]),
            }
        };
        send.reverse();
        while let Some(chunk) = send.pop() {
            let len = chunk.len();
            if let Ok(Ok(())) = crate::rt::timers::timeout(CHUNK_TIMEOUT, tx.send(Ok(chunk))).await
            {
                continue;
            }
            super::snapshot::held::sub(len + send.iter().map(Vec::len).sum::<usize>());
            self.incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&c.from);
            return Err("the install stopped taking chunks".into());
        }
        Ok(None)
    }

    /// Starts openraft's install of a snapshot fed through a channel of `capacity` chunks.
    #[allow(clippy::type_complexity)]
    fn start_install(
        &self,
        vote: openraft::Vote<NodeId>,
        meta: super::types::SnapshotMeta,
        capacity: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Vec<u8>, StorageError>>,
        tokio::task::JoinHandle<Result<openraft::raft::SnapshotResponse<NodeId>, String>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let raft = self.raft.clone();
        let install = tokio::spawn(async move {
            let snapshot = Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::Incoming(rx)),
            };
            raft.install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string())
        });
        (tx, install)
    }

    /// Drops a transfer that makes no progress for [`CHUNK_TIMEOUT`] (see `receive_chunk`).
    fn watch_transfer(
        self: &Arc<Self>,
        from: NodeId,
        snapshot_id: String,
        vote: openraft::Vote<NodeId>,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = u64::MAX;
            loop {
                crate::rt::timers::sleep(CHUNK_TIMEOUT).await;
                let Some(node) = weak.upgrade() else { return };
                let mut map = node.incoming.lock().unwrap_or_else(|e| e.into_inner());
                match map.get(&from) {
                    Some(s) if s.snapshot_id == snapshot_id && s.vote == vote => {
                        if s.next_seq == seen {
                            tracing::warn!(from, %snapshot_id, "snapshot sender went silent; dropping the transfer");
                            coverage::hit(Corner::RaftTransferDropped);
                            map.remove(&from);
                            return;
                        }
                        seen = s.next_seq;
                    }
                    _ => return,
                }
            }
        });
    }

    /// Answers a read from this node's state machine; only called once
    /// `ensure_linearizable` has confirmed leadership and waited for the read point.
    async fn read_local(&self, read: ClientRequest) -> Result<ClientReply, StorageError> {
        Ok(match read {
            ClientRequest::Read(key) => ClientReply::Value(self.app.get(&key).await?),
            ClientRequest::Scan { prefix, limit } => {
                ClientReply::Pairs(self.app.scan_prefix(&prefix, limit).await?)
            }
            ClientRequest::Count => ClientReply::Count(self.app.count().await?),
            ClientRequest::Write(_) => unreachable!("writes go through client_write"),
        })
    }

    /// Planted bug `raft-lease-reads`: whether this node leads and a quorum confirmed it
    /// less than the longest election timeout ago, on this node's clock. Voters refuse other
    /// candidates for that long after they last heard from a leader, on their clocks; the
    /// two agree only while the clocks keep the same time.
    fn in_lease(&self) -> bool {
        let lease = Duration::from_millis(self.options.election_timeout_max_ms);
        let from = *self.lease_from.lock().unwrap_or_else(|e| e.into_inner());
        self.leader() == Some(self.id) && from.is_some_and(|f| crate::rt::timers::now() < f + lease)
    }

    /// Serves a client request here, or forwards it once to the leader.
    async fn serve_client(
        &self,
        req: ClientRequest,
        forwarded: bool,
    ) -> Result<ClientReply, ClientError> {
        let leader_hint = match &req {
            // Only a node that believes it leads submits a write; any other forwards it
            // untouched. openraft answers `ForwardToLeader` both to a write it refused and to
            // one it had logged and then dropped from its log (a deposed leader's pending
            // entries, which the next leader may already have committed), so once a write is
            // submitted here, that answer no longer says it did not take effect: forwarding
            // it then could run it twice.
            ClientRequest::Write(_) if self.leader() != Some(self.id) => self.leader(),
            ClientRequest::Write(cmd) => {
                match renewing_lease(&self.lease_from, self.raft.client_write(cmd.clone())).await {
                    Ok(resp) => return Ok(ClientReply::Written(resp.data)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        return Err(ClientError::Unavailable(format!(
                            "this node stopped leading with the write pending; it may or may not \
                         take effect (leader now {:?})",
                            f.leader_id
                        )))
                    }
                    Err(e) => return Err(ClientError::Unavailable(e.to_string())),
                }
            }
            multi @ (ClientRequest::Scan { .. } | ClientRequest::Count)
                if crate::bugs::active(crate::bugs::Bug::RaftLeaderLocalScans)
                    && self.leader() == Some(self.id) =>
            {
                return self
                    .read_local(multi.clone())
                    .await
                    .map_err(|e| ClientError::Unavailable(e.to_string()))
            }
            read if crate::bugs::active(crate::bugs::Bug::RaftFollowerLocalReads) => {
                return self
                    .read_local(read.clone())
                    .await
                    .map_err(|e| ClientError::Unavailable(e.to_string()))
            }
            read if crate::bugs::active(crate::bugs::Bug::RaftLeaseReads) && self.in_lease() => {
                return self
                    .read_local(read.clone())
                    .await
                    .map_err(|e| ClientError::Unavailable(e.to_string()))
            }
            read => match self.reads.ensure_linearizable().await {
                Ok(_) => {
                    return self
                        .read_local(read.clone())
                        .await
                        .map_err(|e| ClientError::Unavailable(e.to_string()))
                }
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => f.leader_id,
                Err(e) => return Err(ClientError::Unavailable(e.to_string())),
            },
        };
        coverage::hit(Corner::RaftNotLeader);
        if forwarded {
            return Err(ClientError::NotLeader {
                leader: leader_hint,
            });
        }
        let Some(leader) = leader_hint.filter(|l| *l != self.id) else {
            return Err(ClientError::NotLeader {
                leader: leader_hint,
            });
        };
        let addr = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let found = m
                .membership_config
                .nodes()
                .find(|(id, _)| **id == leader)
                .and_then(|(_, n)| n.addr.parse::<SocketAddr>().ok());
            found
        };
        let Some(addr) = addr else {
            return Err(ClientError::NotLeader {
                leader: Some(leader),
            });
        };
        let timeout = Duration::from_millis(self.options.client_timeout_ms);
        match self
            .transport
            .call(addr, &RaftRpc::Client(req), timeout)
            .await
        {
            Ok(RaftReply::Client(r)) => r,
            Ok(other) => Err(ClientError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(ClientError::Unavailable(e.to_string())),
        }
    }

    /// Runs a command through consensus (forwarded to the leader if need be).
    pub async fn write(&self, cmd: ShardCommand) -> Result<CommandResult, ClientError> {
        match self.serve_client(ClientRequest::Write(cmd), false).await? {
            ClientReply::Written(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a key linearizably (on the leader, after confirming leadership).
    pub async fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.query(ClientRequest::Read(key.to_vec())).await? {
            ClientReply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a read query (`Read`, `Scan`, `Count`) linearizably, forwarded to the leader if
    /// need be.
    pub async fn query(&self, query: ClientRequest) -> Result<ClientReply, ClientError> {
        self.serve_client(query, false).await
    }

    /// The index this node has applied up to.
    pub fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// Asks openraft to build a snapshot now and waits (up to `timeout`) until one covering
    /// everything applied at the time of the call exists. Returns its id.
    pub async fn snapshot_now(&self, timeout: Duration) -> Result<String, ClientError> {
        let target = self.applied_index();
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.snapshot.is_some() && m.snapshot.map(|s| s.index) >= target,
                "snapshot covering the applied index",
            )
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        self.current_snapshot
            .get()
            .map(|(id, _)| id)
            .ok_or_else(|| ClientError::Unavailable("no snapshot".into()))
    }
}

/// A node that was the leader when it stopped comes back as a follower of its old term.
///
/// openraft would restore it as the leader of that term at once, reading linearizably from the
/// first entry of the term on. But the state machine syncs its applies only now and then, so
/// after a crash it may lack writes this leader applied and acknowledged before it died; until
/// it has applied them again, such a read would miss them. Leaving the term makes the node win
/// an election first, and a new term's first entry covers everything acknowledged before it.
async fn rejoin_as_follower(
    log: &mut LogStore,
    id: NodeId,
) -> Result<(), openraft::StorageError<NodeId>> {
    use openraft::storage::RaftLogStorage;
    let Some(vote) = log.read_vote().await? else {
        return Ok(());
    };
    if vote.committed && vote.leader_id.voted_for == Some(id) {
        coverage::hit(Corner::RaftRejoinAsFollower);
        // Still a vote for itself in that term, so the node cannot vote for another there.
        log.save_vote(&openraft::Vote::new(vote.leader_id.term, id))
            .await?;
    }
    Ok(())
}

fn unexpected(reply: ClientReply) -> ClientError {
    ClientError::Unavailable(format!("unexpected reply {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::RaftOptions;

    /// The slowest election rank fires before the quickest rank's retry after a refusal for
    /// its shorter log, by a tick and a heartbeat, whatever the timings; and the defaults fit
    /// three ranks (150, 225 and 300 ms).
    #[test]
    fn the_slowest_rank_campaigns_before_a_shorter_log_asks_again() {
        let defaults = RaftOptions::default();
        assert_eq!(defaults.max_election_ranks(), 3);
        let at = |o: &RaftOptions, rank, of| o.ranked(rank, of).election_timeout_ms().0;
        assert_eq!(
            (0..3).map(|r| at(&defaults, r, 3)).collect::<Vec<_>>(),
            [150, 225, 300]
        );
        for heartbeat_ms in [10, 50, 100] {
            for min in [150, 300, 1000] {
                for max in [min, 2 * min, 10 * min] {
                    let o = RaftOptions {
                        heartbeat_ms,
                        election_timeout_min_ms: min,
                        election_timeout_max_ms: max,
                        ..RaftOptions::default()
                    };
                    let of = o.max_election_ranks();
                    let tick = (3 * heartbeat_ms).div_ceil(2);
                    if of < 2 {
                        continue;
                    }
                    let slowest = at(&o, of - 1, of);
                    assert!(
                        slowest + tick + heartbeat_ms <= 3 * min + 2,
                        "{o:?}: rank {} of {of} at {slowest} ms",
                        of - 1
                    );
                    assert!(at(&o, 1, of) >= at(&o, 0, of) + tick);
                }
            }
        }
    }
}
