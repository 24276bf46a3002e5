//! Fault injection: the scheduled faults of a scenario and the final heal (the random
//! nemesis draws its faults in [`super::nemesis`] and applies them here). Every fault is
//! recorded as a [`FaultEvent`] (shown on the history's time axis) and as a trace line.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;

use super::cluster::Cluster;
use super::trace;
use super::workload::Members;
use crate::check::history::FaultEvent;
use crate::scenario::{CutAfter, Fault, FaultKind, ScheduledFault, Target, ARMED_CUT_WINDOW_MS};
use crate::shard::ShardKind;
use crate::storage::{DiskFaults, EngineKind, PowerLossMode};

/// How long a membership change or forced snapshot may take before it is abandoned.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

struct Open {
    event: usize,
    node: Option<u64>,
}

/// Applies faults to a cluster and remembers what is broken, so the heal can undo it.
pub struct Injector {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// Current replicas (clients talk to these).
    pub members: Members,
    down: Mutex<BTreeSet<u64>>,
    paused: Mutex<BTreeSet<u64>>,
    /// Nodes whose disk was given error rates: they may have stopped (fail-stop).
    disk_faulted: Mutex<BTreeSet<u64>>,
    events: Mutex<Vec<FaultEvent>>,
    open: Mutex<Vec<Open>>,
    /// Every fault applied in the fault phase, its target resolved, at its time: the
    /// schedule that actually ran (scheduled and nemesis faults alike).
    ran: Mutex<Vec<ScheduledFault>>,
    /// A link fault is in force (a heal with nothing to heal is not recorded).
    net_faulted: AtomicBool,
    /// The fault phase is over (the final heal is not part of the schedule that ran).
    healed: AtomicBool,
    start: tokio::time::Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ns() -> u64 {
    trace::now_us() * 1_000
}

/// The name a fault event of this kind has on the history's time axis and in the trace: the
/// kind's own name, except that a kill shows as a crash and replica changes as membership.
fn event_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Kill => "crash",
        FaultKind::AddReplica | FaultKind::RemoveReplica => "membership",
        other => other.name(),
    }
}

/// The fault kinds that cut links (a heal ends their events).
const CUTS: [FaultKind; 4] = [
    FaultKind::Partition,
    FaultKind::Isolate,
    FaultKind::OneWay,
    FaultKind::Clog,
];

impl Injector {
    /// An injector for `cluster`, whose replicas are `members`.
    /// `start` is the run's start: the schedule that ran counts its times from it.
    pub fn new(cluster: Arc<Cluster>, members: Members, start: tokio::time::Instant) -> Injector {
        Injector {
            cluster,
            members,
            down: Mutex::default(),
            disk_faulted: Mutex::default(),
            paused: Mutex::default(),
            events: Mutex::default(),
            open: Mutex::default(),
            ran: Mutex::default(),
            net_faulted: AtomicBool::new(false),
            healed: AtomicBool::new(false),
            start,
        }
    }

    /// The faults applied before the final heal, in order, with resolved targets: the
    /// random nemesis materialized as an explicit schedule.
    pub fn ran(&self) -> Vec<ScheduledFault> {
        lock(&self.ran).clone()
    }

    fn record(&self, fault: Fault) {
        if self.healed.load(Ordering::Relaxed) {
            return;
        }
        let at_ms = self.start.elapsed().as_millis() as u64;
        lock(&self.ran).push(ScheduledFault { at_ms, fault });
    }

    fn cut(&self, fault: Fault) {
        self.net_faulted.store(true, Ordering::Relaxed);
        self.record(fault);
    }

    /// Every fault event so far (open ones have no end).
    pub fn events(&self) -> Vec<FaultEvent> {
        lock(&self.events).clone()
    }

    fn begin(&self, kind: FaultKind, detail: String, node: Option<u64>, lasting: bool) {
        let kind = event_name(kind);
        trace::record(format_args!("fault {kind}: {detail}"));
        let mut events = lock(&self.events);
        let t = now_ns();
        events.push(FaultEvent {
            time: t,
            end: (!lasting).then_some(t),
            kind: kind.to_string(),
            detail,
            node,
        });
        if lasting {
            lock(&self.open).push(Open {
                event: events.len() - 1,
                node,
            });
        }
    }

    /// Ends open events of the given kinds (and node, if given).
    fn end(&self, kinds: &[FaultKind], node: Option<u64>) {
        let mut events = lock(&self.events);
        let t = now_ns();
        lock(&self.open).retain(|o| {
            let e = &mut events[o.event];
            let hit = kinds.iter().any(|k| event_name(*k) == e.kind)
                && (node.is_none() || o.node == node);
            if hit {
                e.end = Some(t);
            }
            !hit
        });
    }

    pub(super) fn live_members(&self) -> Vec<u64> {
        let down = lock(&self.down);
        let paused = lock(&self.paused);
        lock(&self.members)
            .iter()
            .copied()
            .filter(|n| !down.contains(n) && !paused.contains(n))
            .collect()
    }

    pub(super) fn pick(&self, from: &[u64]) -> Option<u64> {
        from.choose(&mut crate::rt::thread_rng()).copied()
    }

    fn leader(&self) -> Option<u64> {
        if self.cluster.spec.kind == ShardKind::Raft {
            let live = self.live_members();
            if let Some(l) = self.cluster.raft_leader().filter(|l| live.contains(l)) {
                return Some(l);
            }
        }
        self.pick(&self.live_members())
    }

    /// Resolves a target to a node id (`None`: no node fits, the fault is skipped).
    pub(super) fn resolve(&self, t: Target) -> Option<u64> {
        match t {
            Target::Node(n) => Some(n),
            Target::Leader => self.leader(),
            Target::Follower => {
                let leader = self.leader();
                let rest: Vec<u64> = self
                    .live_members()
                    .into_iter()
                    .filter(|n| Some(*n) != leader)
                    .collect();
                self.pick(&rest)
            }
            Target::Random | Target::All => self.pick(&self.live_members()),
        }
    }

    /// Applies one fault.
    pub async fn apply(self: &Arc<Self>, fault: &Fault) {
        let c = &self.cluster;
        let skipped = || {
            let what = fault.kind();
            trace::record(format_args!("fault {what} skipped: no node fits"))
        };
        match fault {
            Fault::Partition { groups } => {
                let mut groups = groups.clone();
                let grouped: BTreeSet<u64> = groups.iter().flatten().copied().collect();
                let rest: Vec<u64> = c
                    .node_ids()
                    .into_iter()
                    .filter(|n| !grouped.contains(n))
                    .collect();
                if !rest.is_empty() {
                    groups.push(rest);
                }
                c.partition(&groups);
                self.cut(Fault::Partition {
                    groups: groups.clone(),
                });
                self.begin(FaultKind::Partition, format!("{groups:?}"), None, true);
            }
            Fault::Isolate { node, after } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                match after {
                    None => {
                        self.cut(Fault::Isolate {
                            node: Target::Node(n),
                            after: None,
                        });
                        self.isolate(n, &node.to_string());
                    }
                    Some(after) => self.arm_isolation(n, *after),
                }
            }
            Fault::OneWay { from, to } => {
                let (Some(a), Some(b)) = (self.resolve(*from), self.resolve(*to)) else {
                    return skipped();
                };
                if a == b {
                    return skipped();
                }
                c.cut_one_way(a, b);
                self.cut(Fault::OneWay {
                    from: Target::Node(a),
                    to: Target::Node(b),
                });
                self.begin(FaultKind::OneWay, format!("{a} -> {b} lost"), None, true);
            }
            Fault::Clog { node } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                c.clog(n);
                self.cut(Fault::Clog {
                    node: Target::Node(n),
                });
                self.begin(FaultKind::Clog, format!("node {n}"), Some(n), true);
            }
            Fault::Heal => {
                if self.net_faulted.swap(false, Ordering::Relaxed) {
                    self.record(Fault::Heal);
                }
                for n in c.node_ids() {
                    c.disarm_isolation(n);
                }
                c.heal();
                self.end(&CUTS, None);
                trace::record("fault heal: every link restored");
            }
            Fault::Kill { node, after } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                match after {
                    None => self.kill(n, None),
                    Some(after) => self.arm_cut(n, None, *after),
                }
            }
            Fault::PowerLoss { node, mode, after } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                match after {
                    None => self.kill(n, Some(*mode)),
                    Some(after) => self.arm_cut(n, Some(*mode), *after),
                }
            }
            Fault::Restart { node } => {
                let nodes: Vec<u64> = match node {
                    Target::Node(n) => vec![*n],
                    _ => lock(&self.down).iter().copied().collect(),
                };
                for n in nodes {
                    self.restart(n);
                }
            }
            Fault::Pause { node } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                self.pause(n);
            }
            Fault::Resume { node } => {
                let nodes: Vec<u64> = match node {
                    Target::Node(n) => vec![*n],
                    _ => lock(&self.paused).iter().copied().collect(),
                };
                for n in nodes {
                    self.resume(n);
                }
            }
            Fault::ClockSkew {
                node,
                offset_ms,
                drift_ppm,
            } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                self.skew(n, *offset_ms, *drift_ppm);
            }
            Fault::DiskFaults { node, disk } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                c.set_disk_faults(n, disk.clone());
                self.record(Fault::DiskFaults {
                    node: Target::Node(n),
                    disk: disk.clone(),
                });
                if disk.has_errors() {
                    lock(&self.disk_faulted).insert(n);
                }
                self.begin(
                    FaultKind::DiskFaults,
                    format!("node {n}: {disk:?}"),
                    Some(n),
                    false,
                );
            }
            Fault::Snapshot { node } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                self.snapshot(n);
            }
            Fault::AddReplica { node } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                self.add_replica(n).await;
            }
            Fault::RemoveReplica { node } => {
                let Some(n) = self.resolve(*node) else {
                    return skipped();
                };
                self.remove_replica(n).await;
            }
        }
    }

    /// Arms a crash (`power`: and a power cut) of node `n` that lands right after `after`
    /// (see [`Cluster::arm_power_cut`]): a watcher stops the node (and cuts its power) when
    /// the cut goes off, or anyway once [`ARMED_CUT_WINDOW_MS`] pass. A restart or the heal
    /// before that disarms it.
    pub(super) fn arm_cut(self: &Arc<Self>, n: u64, power: Option<PowerLossMode>, after: CutAfter) {
        if lock(&self.down).contains(&n) {
            return;
        }
        let node = Target::Node(n);
        self.record(match power {
            Some(mode) => Fault::PowerLoss {
                node,
                mode,
                after: Some(after),
            },
            None => Fault::Kill {
                node,
                after: Some(after),
            },
        });
        self.cluster.arm_power_cut(n, after);
        trace::record(format_args!("fault armed cut: node {n} after {after:?}"));
        let inj = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(ARMED_CUT_WINDOW_MS);
            loop {
                if inj.healed.load(Ordering::Relaxed) || lock(&inj.down).contains(&n) {
                    return;
                }
                if inj.cluster.power_is_out(n) {
                    trace::record(format_args!("fault armed cut went off: node {n}"));
                    inj.stop(n, power);
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    if inj.cluster.disarm_power_cut(n) {
                        inj.stop(n, power);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// Cuts every link between node `n` and the others now.
    fn isolate(&self, n: u64, why: &str) {
        let c = &self.cluster;
        let others: Vec<u64> = c.node_ids().into_iter().filter(|x| *x != n).collect();
        c.partition(&[vec![n], others]);
        self.begin(
            FaultKind::Isolate,
            format!("node {n} ({why})"),
            Some(n),
            true,
        );
    }

    /// Arms an isolation of node `n` that lands right after `after` (see
    /// [`Cluster::arm_isolation`]): the links go inside the probe call that trips it, and a
    /// watcher records it; if it has not gone off within [`ARMED_CUT_WINDOW_MS`], the watcher
    /// isolates the node then. The heal before that disarms it.
    pub(super) fn arm_isolation(self: &Arc<Self>, n: u64, after: CutAfter) {
        self.cut(Fault::Isolate {
            node: Target::Node(n),
            after: Some(after),
        });
        self.cluster.arm_isolation(n, after);
        trace::record(format_args!(
            "fault armed isolation: node {n} after {after:?}"
        ));
        let inj = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(ARMED_CUT_WINDOW_MS);
            loop {
                if inj.healed.load(Ordering::Relaxed) {
                    return;
                }
                if inj.cluster.isolation_went_off(n) {
                    let why = format!("armed, went off after {after:?}");
                    inj.begin(
                        FaultKind::Isolate,
                        format!("node {n} ({why})"),
                        Some(n),
                        true,
                    );
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    if inj.cluster.disarm_isolation(n) {
                        inj.isolate(n, &format!("armed, {after:?} did not come in time"));
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    pub(super) fn kill(&self, n: u64, power: Option<PowerLossMode>) {
        if lock(&self.down).contains(&n) {
            return;
        }
        self.record(match power {
            Some(mode) => Fault::PowerLoss {
                node: Target::Node(n),
                mode,
                after: None,
            },
            None => Fault::Kill {
                node: Target::Node(n),
                after: None,
            },
        });
        self.stop(n, power);
    }

    /// Stops node `n` (and cuts its power), without recording it as a fault of its own.
    fn stop(&self, n: u64, power: Option<PowerLossMode>) {
        if !lock(&self.down).insert(n) {
            return;
        }
        lock(&self.paused).remove(&n);
        self.cluster.kill(n);
        match power {
            Some(mode) => {
                self.cluster.power_loss(n, mode);
                self.begin(
                    FaultKind::PowerLoss,
                    format!("node {n} ({mode:?})"),
                    Some(n),
                    true,
                );
            }
            None => self.begin(FaultKind::Kill, format!("node {n}"), Some(n), true),
        }
    }

    pub(super) fn restart(&self, n: u64) {
        self.cluster.disarm_power_cut(n);
        if !lock(&self.down).remove(&n) {
            return;
        }
        self.cluster.restart(n);
        self.record(Fault::Restart {
            node: Target::Node(n),
        });
        self.end(&[FaultKind::Kill, FaultKind::PowerLoss], Some(n));
        trace::record(format_args!("fault restart: node {n}"));
    }

    pub(super) fn pause(&self, n: u64) {
        if lock(&self.down).contains(&n) || !lock(&self.paused).insert(n) {
            return;
        }
        self.cluster.pause(n);
        self.record(Fault::Pause {
            node: Target::Node(n),
        });
        self.begin(FaultKind::Pause, format!("node {n}"), Some(n), true);
    }

    pub(super) fn resume(&self, n: u64) {
        if !lock(&self.paused).remove(&n) {
            return;
        }
        self.cluster.resume(n);
        self.record(Fault::Resume {
            node: Target::Node(n),
        });
        self.end(&[FaultKind::Pause], Some(n));
        trace::record(format_args!("fault resume: node {n}"));
    }

    pub(super) fn skew(&self, n: u64, offset_ms: i64, drift_ppm: i64) {
        let clock = self.cluster.clock(n);
        clock.set_offset_ms(offset_ms);
        clock.set_drift_ppm(drift_ppm);
        self.record(Fault::ClockSkew {
            node: Target::Node(n),
            offset_ms,
            drift_ppm,
        });
        self.begin(
            FaultKind::ClockSkew,
            format!("node {n}: offset {offset_ms} ms, drift {drift_ppm} ppm"),
            Some(n),
            false,
        );
    }

    pub(super) fn snapshot(&self, n: u64) {
        self.record(Fault::Snapshot {
            node: Target::Node(n),
        });
        self.begin(
            FaultKind::Snapshot,
            format!("node {n} builds a snapshot"),
            Some(n),
            false,
        );
        let Some(shard) = self.cluster.shard(n) else {
            return;
        };
        tokio::spawn(async move {
            let r = tokio::time::timeout(ADMIN_TIMEOUT, shard.create_snapshot()).await;
            trace::record(format_args!("snapshot on node {n}: {r:?}"));
        });
    }

    /// The current leader and its shard, when there is one.
    fn leader_shard(&self) -> Option<(u64, crate::shard::DynShard)> {
        let leader = self.leader()?;
        Some((leader, self.cluster.shard(leader)?))
    }

    pub(super) async fn add_replica(&self, n: u64) {
        self.begin(
            FaultKind::AddReplica,
            format!("add node {n}"),
            Some(n),
            false,
        );
        let Some((leader, shard)) = self.leader_shard() else {
            return;
        };
        let Some(raft) = shard.as_any().downcast_ref::<crate::shard::RaftShard>() else {
            return;
        };
        let r = tokio::time::timeout(ADMIN_TIMEOUT, raft.add_replica(n)).await;
        trace::record(format_args!("add node {n} via node {leader}: {r:?}"));
        if matches!(r, Ok(Ok(_))) {
            // Only changes that took effect: a failed one may be retried by the nemesis,
            // and a schedule cannot remove a replica twice.
            self.record(Fault::AddReplica {
                node: Target::Node(n),
            });
            lock(&self.members).insert(n);
        }
    }

    pub(super) async fn remove_replica(&self, n: u64) {
        self.begin(
            FaultKind::RemoveReplica,
            format!("remove node {n}"),
            Some(n),
            false,
        );
        let Some((leader, shard)) = self.leader_shard() else {
            return;
        };
        let Some(raft) = shard.as_any().downcast_ref::<crate::shard::RaftShard>() else {
            return;
        };
        let r = tokio::time::timeout(ADMIN_TIMEOUT, raft.remove_replica(n)).await;
        trace::record(format_args!("remove node {n} via node {leader}: {r:?}"));
        if matches!(r, Ok(Ok(_))) {
            self.record(Fault::RemoveReplica {
                node: Target::Node(n),
            });
            lock(&self.members).remove(&n);
        }
    }

    /// Clears a node's disk fault rates (the nemesis's undo of `disk_faults`).
    pub(super) fn disk_ok(&self, n: u64) {
        self.cluster.set_disk_faults(n, DiskFaults::none());
        self.record(Fault::DiskFaults {
            node: Target::Node(n),
            disk: DiskFaults::none(),
        });
        trace::record(format_args!("disk faults off: node {n}"));
    }

    /// Heals everything at the end of the fault phase: links, paused and stopped nodes, disk
    /// fault rates. (Clock skew stays: a clock that is off is not a fault to heal.)
    pub fn heal_all(&self) {
        self.healed.store(true, Ordering::Relaxed);
        // An armed cut that has not happened is called off; one that has is undone below.
        for n in self.cluster.node_ids() {
            if self.cluster.power_is_out(n) && !lock(&self.down).contains(&n) {
                self.stop(n, Some(PowerLossMode::DropAll));
            }
            self.cluster.disarm_power_cut(n);
            self.cluster.disarm_isolation(n);
        }
        self.cluster.heal();
        self.end(&CUTS, None);
        let paused: Vec<u64> = lock(&self.paused).iter().copied().collect();
        for n in paused {
            self.resume(n);
        }
        // Clocks run at their own rate again (an offset they gained stays: a clock is not
        // set back).
        for n in self.cluster.node_ids() {
            let (clock, rate) = (self.cluster.clock(n), self.cluster.start_drift_ppm(n));
            if clock.drift_ppm() != rate {
                clock.set_drift_ppm(rate);
                trace::record(format_args!(
                    "heal: node {n}'s clock drifts {rate} ppm again"
                ));
            }
        }
        // A Raft node on the memory engine that a kill emptied stays down: it may come back
        // only as a new member, never under its old identity (validation requires the
        // schedule to replace it; if the replacement failed, the run reports it not back).
        let emptied = self.cluster.spec.kind == crate::shard::ShardKind::Raft
            && self.cluster.spec.engine == EngineKind::Memory;
        if !emptied {
            let down: Vec<u64> = lock(&self.down).iter().copied().collect();
            for n in down {
                self.restart(n);
            }
        }
        if self.cluster.spec.engine == EngineKind::Redb {
            for n in self.cluster.node_ids() {
                self.cluster.set_disk_faults(n, DiskFaults::none());
            }
        }
        // A node that stopped on a disk error stays stopped (fail-stop) until something
        // restarts it, as a supervisor would: restart every node whose disk had errors.
        let faulted: Vec<u64> = std::mem::take(&mut *lock(&self.disk_faulted))
            .into_iter()
            .collect();
        for n in faulted {
            if !lock(&self.down).contains(&n) {
                self.kill(n, None);
                self.restart(n);
            }
        }
        trace::record("heal: everything restored");
    }
}

/// Runs the scheduled faults at their times (ms after `start`).
pub async fn run_schedule(
    inj: Arc<Injector>,
    schedule: Vec<crate::scenario::ScheduledFault>,
    start: tokio::time::Instant,
) {
    for s in schedule {
        tokio::time::sleep_until(start + Duration::from_millis(s.at_ms)).await;
        inj.apply(&s.fault).await;
    }
}
