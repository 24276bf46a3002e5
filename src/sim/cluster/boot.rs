//! How a node boots, in each of its incarnations: it waits a jittered moment, opens its
//! stores (redb on its simulated disks, fjall in its folder, or memory), starts its shard
//! with a probe that records what its Raft storage does, serves clients, and reports a death
//! (storage that does not open, a shard that does not start, a Raft core that stops) when it
//! happens.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wires::Tripwires;
use crate::probe::Probe;
use crate::shard::factory::{AddressBook, Service};
use crate::shard::{
    DynShard, NodeClock, NodeContext, ObjectShard, ShardFactory, ShardKind, ShardMetadata,
};
use crate::sim::trace;
use crate::storage::{
    DynDevice, DynStorage, EngineKind, FileDevice, FjallOptions, FjallStorage, MemoryDevice,
    MemoryStorage, RedbStorage, SimDisk,
};

/// Election timeout slots of a Raft cluster's nodes (see
/// [`crate::raft::RaftOptions::election_timeout_ms`]): each incarnation of a node draws a
/// slot no other node holds while there are enough, so no two nodes share an election
/// timeout, and which node asks for votes first changes with the seed (and with a restart,
/// while a slot is free). There are at most [`crate::raft::RaftOptions::max_election_ranks`] slots.
#[derive(Clone)]
pub(super) struct ElectionSlots {
    held: Arc<Mutex<BTreeMap<u64, u64>>>,
    slots: u64,
}

impl ElectionSlots {
    /// Slots for `nodes` nodes: two more than nodes, so a restarting node always has a
    /// choice, but no more than `most` (see [`crate::raft::RaftOptions::max_election_ranks`]).
    pub(super) fn new(nodes: u64, most: u64) -> ElectionSlots {
        ElectionSlots {
            held: Arc::default(),
            slots: (nodes + 2).min(most).max(1),
        }
    }

    /// A free slot for `node` (its previous slot counts as free), as (slot, slots).
    fn draw(&self, node: u64) -> (u64, u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut free: Vec<u64> = (0..self.slots)
            .filter(|s| !held.iter().any(|(n, h)| *n != node && h == s))
            .collect();
        if free.is_empty() {
            // More nodes than slots: share one.
            free = (0..self.slots).collect();
        }
        let slot = free[(crate::rt::random_u64() % free.len() as u64) as usize];
        held.insert(node, slot);
        (slot, self.slots)
    }
}

/// Opens node `id`'s application store; called by every incarnation of the node.
type OpenFn =
    dyn Fn(u64) -> futures::future::BoxFuture<'static, Result<DynStorage, String>> + Send + Sync;

/// A [`ClusterSpec::open`] function.
#[derive(Clone)]
pub struct StoreOpener(pub Arc<OpenFn>);

impl std::fmt::Debug for StoreOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreOpener")
    }
}

/// A node's durable resources, which outlive its incarnations.
#[derive(Clone)]
pub(super) struct NodeDisks {
    pub app: Option<SimDisk>,
    pub log: Option<SimDisk>,
    pub dir: Option<PathBuf>,
}

impl NodeDisks {
    /// The simulated disks (redb nodes have two, for the application data and the Raft log;
    /// others none).
    pub(super) fn sim_disks(&self) -> impl Iterator<Item = &SimDisk> {
        [&self.app, &self.log].into_iter().flatten()
    }
}

pub(super) type Shards = Arc<Mutex<BTreeMap<u64, DynShard>>>;

/// What the nodes' Raft storage reported, in the order it happened.
pub type RaftRecord = Arc<Mutex<Vec<crate::probe::Recorded>>>;

/// A node that stopped by itself: its storage did not open, its shard did not start or
/// initialize, its endpoint did not bind, or its Raft core stopped on a fatal error.
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    /// The node.
    pub node: u64,
    /// When, in simulated ms since the simulation started.
    pub at_ms: u64,
    /// Why, as the node said.
    pub why: String,
}

pub(super) type Deaths = Arc<Mutex<Vec<Death>>>;

fn died(deaths: &Deaths, node: u64, why: String) {
    tracing::error!(node, "{why}");
    deaths
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Death {
            node,
            at_ms: trace::now_us() / 1000,
            why,
        });
}

/// A probe for one incarnation of node `id`, recording into `record` (or none). What it
/// hears may trip a wire armed on the node.
fn node_probe(
    record: Option<&RaftRecord>,
    tripwires: &Tripwires,
    id: u64,
    incarnation: u64,
) -> Probe {
    let Some(record) = record.cloned() else {
        return Probe::default();
    };
    let tripwires = tripwires.clone();
    Probe::new(move |event| {
        tripwires.hear(id, &event);
        record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(crate::probe::Recorded {
                at_us: trace::now_us(),
                node: id,
                incarnation,
                event,
            });
    })
}

/// Opens a node's application store on the cluster's engine: redb on the node's simulated
/// disk, fjall in its folder, or in memory.
fn open_storage(
    engine: EngineKind,
    disk: Option<&SimDisk>,
    dir: Option<&PathBuf>,
) -> Result<DynStorage, String> {
    let opened: crate::storage::Result<DynStorage> = match engine {
        EngineKind::Memory => Ok(Arc::new(MemoryStorage::new())),
        EngineKind::Redb => {
            RedbStorage::open_on_disk(disk.expect("redb nodes have a disk").clone())
                .map(|s| Arc::new(s) as DynStorage)
        }
        EngineKind::Fjall => FjallStorage::open(
            &dir.expect("fjall nodes have a folder").join("app"),
            FjallOptions::default(),
        )
        .map(|s| Arc::new(s) as DynStorage),
    };
    opened.map_err(|e| e.to_string())
}

/// Opens a node's Raft log device: its own simulated disk (redb nodes), a file in its folder
/// (fjall nodes), or memory (memory-engine nodes, which never restart, and clusters whose
/// stores a [`StoreOpener`] opens).
fn open_log(d: &NodeDisks) -> Result<DynDevice, String> {
    if let Some(disk) = &d.log {
        return Ok(Arc::new(disk.backend()));
    }
    if let Some(dir) = &d.dir {
        return FileDevice::open(&dir.join("raft.log"))
            .map(|f| Arc::new(f) as DynDevice)
            .map_err(|e| format!("raft log in {}: {e}", dir.display()));
    }
    Ok(Arc::new(MemoryDevice::new()))
}

/// Everything a node needs to boot, in every incarnation.
pub(super) struct Boot {
    pub id: u64,
    pub engine: EngineKind,
    pub disks: NodeDisks,
    pub meta: ShardMetadata,
    pub clock: NodeClock,
    pub addresses: AddressBook,
    pub shards: Shards,
    pub opener: Option<StoreOpener>,
    pub record: Option<RaftRecord>,
    pub tripwires: Tripwires,
    pub deaths: Deaths,
    pub election_slots: ElectionSlots,
    /// Starts so far (the next start's incarnation).
    pub incarnations: Arc<AtomicU64>,
    /// Each start waits up to this many ms first.
    pub jitter_ms: u64,
}

impl Boot {
    /// One start of the node: its election slot and boot delay are drawn now (from the seed),
    /// and the future runs the node until it is killed.
    pub fn incarnation(&self) -> impl std::future::Future<Output = ()> {
        let (id, engine, d, clock) = (self.id, self.engine, self.disks.clone(), self.clock.clone());
        let mut meta = self.meta.clone();
        if meta.kind == ShardKind::Raft {
            let (rank, of) = self.election_slots.draw(id);
            meta.options.raft = meta.options.raft.ranked(rank, of);
        }
        let (addresses, shards, opener) = (
            self.addresses.clone(),
            self.shards.clone(),
            self.opener.clone(),
        );
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let probe = node_probe(self.record.as_ref(), &self.tripwires, id, incarnation);
        let deaths = self.deaths.clone();
        let boot = match self.jitter_ms {
            0 => Duration::ZERO,
            j => Duration::from_millis(crate::rt::random_u64() % (j + 1)),
        };
        async move {
            // A machine takes its own time to boot: nodes' timers do not tick in lock-step.
            if !boot.is_zero() {
                tokio::time::sleep(boot).await;
            }
            let app = match opener {
                Some(o) => o.0(id).await,
                None => open_storage(engine, d.app.as_ref(), d.dir.as_ref()),
            };
            let log = if meta.kind == ShardKind::Raft {
                open_log(&d).map(Some)
            } else {
                Ok(None)
            };
            let (app, log) = match (app, log) {
                (Ok(a), Ok(l)) => (a, l),
                (Err(e), _) | (_, Err(e)) => {
                    // Fail-stop: a node whose storage does not open stays down.
                    died(&deaths, id, format!("storage did not open: {e}"));
                    return;
                }
            };
            let ctx = NodeContext {
                node: id,
                addresses: addresses.clone(),
                app,
                log,
                clock,
                probe,
            };
            let shard = match ShardFactory::create(meta, ctx).await {
                Ok(s) => s,
                Err(e) => {
                    died(&deaths, id, format!("shard did not start: {e}"));
                    return;
                }
            };
            if let Err(e) = shard.initialize().await {
                died(&deaths, id, format!("shard did not initialize: {e}"));
                return;
            }
            let addr = addresses
                .addr(id, Service::Client)
                .expect("every node has an address");
            let _server = match ObjectShard::serve(shard.clone(), addr).await {
                Ok(s) => s,
                Err(e) => {
                    died(&deaths, id, format!("client endpoint: {e}"));
                    return;
                }
            };
            let raft = shard
                .as_any()
                .downcast_ref::<crate::shard::RaftShard>()
                .map(|s| s.raft_node().clone());
            shards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, shard);
            // A Raft core that stops on an error is a death when it happens, even if a later
            // fault restarts the node.
            if let Some(raft) = raft {
                if let Some(why) = raft.stopped().await {
                    died(&deaths, id, format!("Raft core stopped: {why}"));
                }
            }
            std::future::pending::<()>().await;
        }
    }
}
