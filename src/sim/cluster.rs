//! A cluster of shard replicas, one per madsim node, plus a client host.
//!
//! Node `i` (1-based) listens at `10.0.0.i:7000` (Raft), `:7001` (replication) and `:7002`
//! (clients); the client host is `10.0.1.1`. Each node keeps, across its restarts, its disks
//! (redb on [`SimDisk`]; fjall in its own folder) and its clock. A memory-engine node loses
//! its data when it crashes, as a real process would.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::check::convergence::ReplicaState;
use crate::probe::RaftEvent;
use crate::scenario::CutAfter;
use crate::shard::factory::{AddressBook, Service};
use crate::shard::{DynShard, NodeClock, ShardClient, ShardKind, ShardMetadata, ShardOptions};
use crate::storage::{DiskFaults, EngineKind, PowerLossMode, SimDisk};

mod boot;
mod wires;
pub use boot::{Death, RaftRecord, StoreOpener};
use boot::{Deaths, ElectionSlots, NodeDisks, Shards};
use wires::{Trip, Tripwires, Wire};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Replication mode.
    pub kind: ShardKind,
    /// Storage engine of every node.
    pub engine: EngineKind,
    /// Number of replicas.
    pub nodes: u64,
    /// Nodes started but not replicas yet (for membership changes).
    pub spares: u64,
    /// Shard options.
    pub options: ShardOptions,
    /// How long a client request may take.
    pub client_timeout: Duration,
    /// Opens each node's stores instead of the engine on simulated disks (`None`, what runs
    /// use): benchmarks put the engines on real files this way.
    pub open: Option<StoreOpener>,
    /// Record what every node's Raft storage does ([`Cluster::raft_record`]) for the
    /// invariant checks.
    pub record: bool,
    /// Each node's clock drifts by up to this many ppm either way (drawn from the seed); its
    /// timers run on it.
    pub clock_drift_ppm: u64,
    /// Each start of a node waits up to this many ms (drawn from the seed) first.
    pub boot_jitter_ms: u64,
    /// Draw every node's disk seeds whatever the engine (see
    /// [`crate::scenario::ClusterConfig::engine_neutral`]).
    pub engine_neutral: bool,
}

/// A running cluster.
pub struct Cluster {
    /// What was started.
    pub spec: ClusterSpec,
    handle: madsim::runtime::Handle,
    hosts: BTreeMap<u64, madsim::runtime::NodeHandle>,
    disks: BTreeMap<u64, NodeDisks>,
    clocks: BTreeMap<u64, NodeClock>,
    /// The drift each node's clock was given at the start, ppm.
    drifts: BTreeMap<u64, i64>,
    shards: Shards,
    addresses: AddressBook,
    record: Option<RaftRecord>,
    tripwires: Tripwires,
    deaths: Deaths,
    /// The client endpoint.
    pub client: ShardClient,
    client_host: madsim::runtime::NodeHandle,
}

/// Node `id`'s base address.
pub fn node_addr(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), 7000)
}

impl Cluster {
    /// Starts every node and the client host; replicas initialize themselves.
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let handle = madsim::runtime::Handle::current();
        let total = spec.nodes + spec.spares;
        let addresses = AddressBook((1..=total).map(|i| (i, node_addr(i))).collect());
        let replicas: Vec<u64> = (1..=spec.nodes).collect();
        let shards: Shards = Arc::default();
        let mut hosts = BTreeMap::new();
        let mut disks = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        let mut drifts = BTreeMap::new();
        let faults = DiskFaults {
            sync_lies: crate::bugs::active(crate::bugs::Bug::DiskSyncLies),
            ..DiskFaults::none()
        };
        let election_slots = ElectionSlots::new(total, spec.options.raft.max_election_ranks());
        crate::rt::timers::clear();
        let record: Option<RaftRecord> = spec.record.then(Arc::default);
        let tripwires = Tripwires::default();
        let deaths = Deaths::default();
        // Simulated disks (redb) or a temporary folder (fjall), unless the spec opens stores.
        let own = |engine| spec.open.is_none() && spec.engine == engine;
        for id in 1..=total {
            let seeds = (own(EngineKind::Redb) || spec.engine_neutral)
                .then(|| (crate::rt::random_u64(), crate::rt::random_u64()));
            let d = NodeDisks {
                app: seeds
                    .filter(|_| own(EngineKind::Redb))
                    .map(|(s, _)| SimDisk::new(s, faults.clone())),
                log: seeds
                    .filter(|_| own(EngineKind::Redb))
                    .map(|(_, s)| SimDisk::new(s, faults.clone())),
                dir: own(EngineKind::Fjall).then(crate::storage::fjall_engine::temp_path),
            };
            let clock = NodeClock::new();
            let max = spec
                .clock_drift_ppm
                .min(crate::rt::timers::MAX_DRIFT_PPM as u64);
            if max > 0 {
                let ppm = (crate::rt::random_u64() % (2 * max + 1)) as i64 - max as i64;
                clock.set_drift_ppm(ppm);
                drifts.insert(id, ppm);
            }
            disks.insert(id, d.clone());
            clocks.insert(id, clock.clone());
            let meta = ShardMetadata {
                id: 1,
                collection: "objects".into(),
                partition_id: 0,
                replicas: if id <= spec.nodes {
                    replicas.clone()
                } else {
                    let mut r = replicas.clone();
                    r.push(id);
                    r
                },
                kind: spec.kind,
                options: spec.options.clone(),
            };
            let boot = boot::Boot {
                id,
                engine: spec.engine,
                disks: d,
                meta,
                clock,
                addresses: addresses.clone(),
                shards: shards.clone(),
                opener: spec.open.clone(),
                record: record.clone(),
                tripwires: tripwires.clone(),
                deaths: deaths.clone(),
                election_slots: election_slots.clone(),
                incarnations: Arc::default(),
                jitter_ms: spec.boot_jitter_ms,
            };
            let host = handle
                .create_node()
                .name(format!("node-{id}"))
                .ip(node_addr(id).ip())
                .init(move || boot.incarnation())
                .build();
            crate::rt::timers::register(host.id(), clocks[&id].timers().clone());
            hosts.insert(id, host);
        }
        let client_host = handle
            .create_node()
            .name("client")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
            .build();
        let timeout = spec.client_timeout;
        let client = client_host
            .spawn(async move {
                ShardClient::bind("10.0.1.1:7000".parse().expect("literal"), timeout)
                    .await
                    .expect("client endpoint binds")
            })
            .await
            .expect("client host runs");
        Cluster {
            spec,
            handle,
            hosts,
            disks,
            clocks,
            drifts,
            shards,
            addresses,
            record,
            tripwires,
            deaths,
            client,
            client_host,
        }
    }

    /// The record the nodes' Raft storage reports into (none unless the spec records): a
    /// handle that outlives the cluster, so a run that panics can still check it.
    pub fn raft_record_handle(&self) -> Option<RaftRecord> {
        self.record.clone()
    }

    /// Everything the nodes' Raft storage reported so far (empty unless the spec records).
    pub fn raft_record(&self) -> Vec<crate::probe::Recorded> {
        self.record.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }

    /// The client host (`10.0.1.1`), to run more clients on.
    pub fn client_host(&self) -> &madsim::runtime::NodeHandle {
        &self.client_host
    }

    /// Node ids (replicas and spares).
    pub fn node_ids(&self) -> Vec<u64> {
        self.hosts.keys().copied().collect()
    }

    /// The running shard on a node.
    pub fn shard(&self, id: u64) -> Option<DynShard> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Where a node serves clients.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.addresses
            .addr(id, Service::Client)
            .expect("every node has an address")
    }

    /// The drift a node's clock was given at the start (what undoing a skew returns to).
    pub fn start_drift_ppm(&self, id: u64) -> i64 {
        self.drifts.get(&id).copied().unwrap_or(0)
    }

    /// A node's clock.
    pub fn clock(&self, id: u64) -> &NodeClock {
        &self.clocks[&id]
    }

    /// A node's application disk (redb clusters).
    pub fn app_disk(&self, id: u64) -> Option<&SimDisk> {
        self.disks[&id].app.as_ref()
    }

    /// Stops a node (its tasks end; its disks keep what was synced and what was not, until a
    /// power loss).
    pub fn kill(&self, id: u64) {
        self.tripwires.disarm(id, Wire::Crash);
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.handle.kill(self.hosts[&id].id());
        // The dead process's storage may be dropped later; it must not write then. A disk
        // an armed crash darkened comes back with what it had (a power loss then decides
        // what survives).
        for disk in self.disks[&id].sim_disks() {
            disk.fence();
            disk.restore_power();
        }
    }

    /// Cuts a killed node's power: its disks lose unsynced writes.
    pub fn power_loss(&self, id: u64, mode: PowerLossMode) {
        for disk in self.disks[&id].sim_disks() {
            disk.power_loss(mode);
        }
    }

    /// Nodes that stopped by themselves so far, and Raft nodes up whose core has stopped.
    pub fn deaths(&self) -> Vec<Death> {
        let mut out = self
            .deaths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for id in self.node_ids() {
            let Some(why) = self.raft(id).and_then(|r| r.fatal()) else {
                continue;
            };
            let why = format!("Raft core stopped: {why}");
            if !out.iter().any(|d| d.node == id && d.why == why) {
                out.push(Death {
                    node: id,
                    at_ms: super::trace::now_us() / 1000,
                    why,
                });
            }
        }
        out
    }

    /// The nodes whose Raft storage saved a vote or an append at or after `since_us`.
    pub fn raft_writers_since(&self, since_us: u64) -> Vec<u64> {
        self.raft_nodes_since(since_us, |e| {
            matches!(e, RaftEvent::VoteSaved(_) | RaftEvent::Appended(_))
        })
    }

    /// The nodes whose Raft storage saved a vote at or after `since_us`.
    pub fn raft_voters_since(&self, since_us: u64) -> Vec<u64> {
        self.raft_nodes_since(since_us, |e| matches!(e, RaftEvent::VoteSaved(_)))
    }

    fn raft_nodes_since(&self, since_us: u64, which: impl Fn(&RaftEvent) -> bool) -> Vec<u64> {
        let Some(record) = &self.record else {
            return Vec::new();
        };
        let record = record.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<u64> = record
            .iter()
            .rev()
            .take_while(|r| r.at_us >= since_us)
            .filter(|r| which(&r.event))
            .map(|r| r.node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Arms a power cut on a node's disks (redb): they go dark right after `after` has
    /// happened (the injector then stops the node and cuts its power). Votes, appends and
    /// chunks are heard through the Raft probe, so they need a recording cluster.
    pub fn arm_power_cut(&self, id: u64, after: CutAfter) {
        match after {
            CutAfter::Syncs(n) => {
                for disk in self.disks[&id].sim_disks() {
                    disk.cut_power_after_syncs(n);
                }
            }
            CutAfter::InstallOps(n) => {
                let disks = self.disks[&id].sim_disks().cloned().collect();
                self.tripwires
                    .arm(id, after, Trip::PowerOffAfterOps(disks, n));
            }
            CutAfter::Votes(_)
            | CutAfter::Appends(_)
            | CutAfter::Chunks(_)
            | CutAfter::Purges(_) => {
                let disks = self.disks[&id].sim_disks().cloned().collect();
                self.tripwires.arm(id, after, Trip::PowerOff(disks));
            }
        }
    }

    /// Disarms a node's armed cut; whether one was armed and had not gone off.
    pub fn disarm_power_cut(&self, id: u64) -> bool {
        let out = self.power_is_out(id);
        let wire = self.tripwires.disarm(id, Wire::Crash);
        let mut syncs = false;
        for disk in self.disks[&id].sim_disks() {
            syncs |= disk.cut_armed();
            disk.disarm();
        }
        (wire || syncs) && !out
    }

    /// Whether a node's armed cut went off (its disks, if simulated, went dark).
    pub fn power_is_out(&self, id: u64) -> bool {
        self.tripwires.tripped(id, Wire::Crash)
            || self.disks[&id].sim_disks().any(SimDisk::is_powered_off)
    }

    /// Arms an isolation of a node (Raft, recording cluster): every link between it and the
    /// others is cut right after `after` (votes, appends, chunks or purges; not syncs) has happened.
    pub fn arm_isolation(&self, id: u64, after: CutAfter) {
        let others = self
            .hosts
            .iter()
            .filter(|(n, _)| **n != id)
            .map(|(_, h)| h.id())
            .collect();
        let trip = Trip::Isolate {
            node: self.hosts[&id].id(),
            others,
        };
        self.tripwires.arm(id, after, trip);
    }

    /// Disarms a node's armed isolation; whether one was armed and had not gone off.
    pub fn disarm_isolation(&self, id: u64) -> bool {
        let gone_off = self.tripwires.tripped(id, Wire::Isolate);
        self.tripwires.disarm(id, Wire::Isolate) && !gone_off
    }

    /// Whether a node's armed isolation went off (its links are cut).
    pub fn isolation_went_off(&self, id: u64) -> bool {
        self.tripwires.tripped(id, Wire::Isolate)
    }

    /// Restarts a node from its disks.
    pub fn restart(&self, id: u64) {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.handle.restart(self.hosts[&id].id());
    }

    /// Whether a fault left bytes on the node's disks that no recovery restores (a bit
    /// flipped or a write misdirected). Such a node may rightly never serve again: its storage
    /// refuses to open rather than serve what it cannot trust.
    pub fn disk_damaged(&self, id: u64) -> bool {
        self.disks[&id].sim_disks().any(SimDisk::is_damaged)
    }

    /// Whether the node's shard is up.
    pub fn is_up(&self, id: u64) -> bool {
        self.shard(id).is_some()
    }

    /// Cuts every link between the groups (both directions); clients reach every node.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let net = madsim::net::NetSim::current();
        for (i, g) in groups.iter().enumerate() {
            for h in groups.iter().skip(i + 1) {
                for a in g {
                    for b in h {
                        net.clog_link(self.hosts[a].id(), self.hosts[b].id());
                        net.clog_link(self.hosts[b].id(), self.hosts[a].id());
                    }
                }
            }
        }
    }

    /// Cuts the link from `a` to `b` only.
    pub fn cut_one_way(&self, a: u64, b: u64) {
        madsim::net::NetSim::current().clog_link(self.hosts[&a].id(), self.hosts[&b].id());
    }

    /// Clogs a node: nothing reaches it and nothing leaves it (clients included).
    pub fn clog(&self, id: u64) {
        madsim::net::NetSim::current().clog_node(self.hosts[&id].id());
    }

    /// Freezes a node's tasks.
    pub fn pause(&self, id: u64) {
        self.handle.pause(self.hosts[&id].id());
    }

    /// Unfreezes a paused node.
    pub fn resume(&self, id: u64) {
        self.handle.resume(self.hosts[&id].id());
    }

    /// Sets the fault rates of a node's disks (redb nodes; others have none).
    /// A lying sync (the `disk-sync-lies` planted bug) stays on whatever the rates.
    pub fn set_disk_faults(&self, id: u64, mut faults: crate::storage::DiskFaults) {
        faults.sync_lies |= crate::bugs::active(crate::bugs::Bug::DiskSyncLies);
        for disk in self.disks[&id].sim_disks() {
            disk.set_faults(faults.clone());
        }
    }

    /// The Raft node on a node, if it is up and the cluster runs Raft.
    pub fn raft(&self, id: u64) -> Option<Arc<crate::raft::RaftNode>> {
        let shard = self.shard(id)?;
        let r = shard
            .as_any()
            .downcast_ref::<crate::shard::RaftShard>()?
            .raft_node()
            .clone();
        Some(r)
    }

    /// The node that is up and believes it leads (Raft).
    pub fn raft_leader(&self) -> Option<u64> {
        self.node_ids()
            .into_iter()
            .find(|&id| self.raft(id).is_some_and(|r| r.leader() == Some(id)))
    }

    /// Sets the network's latency range and loss rate.
    pub fn set_network(&self, latency: std::ops::Range<Duration>, loss: f64) {
        madsim::net::NetSim::current().update_config(|c| {
            c.send_latency = latency;
            c.packet_loss_rate = loss;
        });
    }

    /// Restores every link between nodes and unclogs every node.
    pub fn heal(&self) {
        let net = madsim::net::NetSim::current();
        for h in self.hosts.values() {
            net.unclog_node(h.id());
        }
        for a in self.hosts.values() {
            for b in self.hosts.values() {
                if a.id() != b.id() {
                    net.unclog_link(a.id(), b.id());
                }
            }
        }
    }

    /// The state of every replica (down ones marked not live).
    pub async fn replica_states(&self) -> Vec<ReplicaState> {
        let mut out = Vec::new();
        for id in 1..=self.spec.nodes {
            let Some(shard) = self.shard(id) else {
                out.push(ReplicaState {
                    node: id,
                    live: false,
                    entries: Default::default(),
                    root_hash: None,
                });
                continue;
            };
            let root = shard.stats().root_hash;
            match super::state::replica_state(id, shard.storage(), root).await {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(node = id, "state unreadable: {e}");
                    out.push(ReplicaState {
                        node: id,
                        live: false,
                        entries: Default::default(),
                        root_hash: None,
                    })
                }
            }
        }
        out
    }

    /// Digests of every live replica, for convergence-time samples.
    pub async fn digests(&self) -> BTreeMap<u64, u64> {
        self.replica_states()
            .await
            .into_iter()
            .filter(|r| r.live)
            .map(|r| (r.node, super::state::digest(&r.entries)))
            .collect()
    }

    /// Total repair bytes sent by all live replicas.
    pub fn repair_bytes(&self) -> u64 {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| s.stats().repair_bytes)
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        crate::rt::timers::clear();
        for d in self.disks.values() {
            if let Some(dir) = &d.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Whether the given digests agree (and cover `n` replicas).
pub fn agreed(digests: &BTreeMap<u64, u64>, n: usize) -> bool {
    digests.len() == n
        && digests
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 1
}

/// Writes that clients saw acknowledged, for the convergence checker.
#[derive(Debug, Clone, Default)]
pub struct AckLog(pub Arc<Mutex<Vec<crate::check::convergence::AckedWrite>>>);

impl AckLog {
    /// Records an acknowledged write (`entry: None` for a delete).
    pub fn record(
        &self,
        key: u64,
        entry: Option<&crate::shard::ObjectEntry>,
        version: crate::shard::Version,
    ) {
        let acked_at = crate::rt::unix_time_ms() * 1_000_000;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(
            crate::check::convergence::AckedWrite {
                key,
                value: entry.and_then(super::state::value_of),
                version: super::state::stamp(version),
                acked_at,
            },
        );
    }

    /// Everything recorded.
    pub fn take(&self) -> Vec<crate::check::convergence::AckedWrite> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Cluster {
    /// After the last heal: samples the replicas' digests every `every` until they agree (or
    /// `bound` passes), then gathers everything the convergence checker needs.
    pub async fn await_convergence(
        &self,
        acked: &AckLog,
        bound: Duration,
        every: Duration,
    ) -> crate::check::convergence::ConvergenceInput {
        use crate::check::convergence::{ConvergenceInput, Sample};
        let now_ns = || crate::rt::unix_time_ms() * 1_000_000;
        let healed_at = now_ns();
        // Every replica: the heal restarted the stopped ones, which take a moment to open
        // their storage and serve again; until then they are not in agreement.
        let replicas = self.spec.nodes as usize;
        let mut samples = Vec::new();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let digests = self.digests().await;
            let done = agreed(&digests, replicas);
            samples.push(Sample {
                time: now_ns(),
                digests,
            });
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(every).await;
        }
        ConvergenceInput {
            replicas: self.replica_states().await,
            acked: acked.take(),
            healed_at: Some(healed_at),
            samples,
            bound: Some(bound.as_nanos() as u64),
        }
    }
}
