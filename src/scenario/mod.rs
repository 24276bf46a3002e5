//! Scenario files: the TOML schema, and its validation before anything runs.
//!
//! A scenario names a cluster (replication mode, engine, node count, mode options), network
//! defaults, a client workload, a schedule of faults at simulated times, an optional random
//! nemesis, and the checks that apply. A run is the fault phase (`duration_ms`), then every
//! fault is healed and a quiet phase (`quiet_ms`) follows; then the checks run.
//!
//! Every mistake in a file is reported as `FILE:LINE:COLUMN: FIELD: what is wrong`, before
//! anything runs. See `scenarios/README.md` for the schema with examples.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::raft::RaftOptions;
use crate::shard::basic::BasicOptions;
use crate::shard::mst::MstOptions;
use crate::shard::{ShardKind, ShardOptions};
use crate::storage::{DiskFaults, EngineKind, PowerLossMode};

/// Largest node count a scenario may ask for (addresses are `10.0.0.N`).
pub const MAX_NODES: u64 = 9;
/// Longest run (fault phase plus quiet phase) a scenario may ask for, in simulated ms.
pub const MAX_RUN_MS: u64 = 3_600_000;

/// A mistake in a scenario file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file (or `<scenario>` for text not read from a file).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a path (`schedule[2].node`), or empty for a syntax error.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// Which node a fault hits; symbolic targets are resolved when the fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A node id.
    Node(u64),
    /// The current Raft leader (any live replica in other modes).
    Leader,
    /// A live replica that is not the leader.
    Follower,
    /// A live replica picked by the seed.
    Random,
    /// Every node the fault applies to (`restart`, `resume`: every node that is down or
    /// paused).
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(n) => write!(f, "{n}"),
            Target::Leader => f.write_str("leader"),
            Target::Follower => f.write_str("follower"),
            Target::Random => f.write_str("random"),
            Target::All => f.write_str("all"),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Cut every link between the groups (both ways).
    Partition {
        /// Node groups; nodes in no group form one more group.
        groups: Vec<Vec<u64>>,
    },
    /// Cut one node from every other node (both ways).
    Isolate {
        /// The node.
        node: Target,
    },
    /// Cut the link from one node to another only.
    OneWay {
        /// Sender whose messages are lost.
        from: Target,
        /// Receiver.
        to: Target,
    },
    /// Clog a node: nothing in or out (its process keeps running).
    Clog {
        /// The node.
        node: Target,
    },
    /// Restore every link and unclog every node.
    Heal,
    /// Stop a node's process; its disks keep everything written.
    Kill {
        /// The node.
        node: Target,
    },
    /// Stop a node and cut its power: its disks lose unsynced writes (redb engine).
    PowerLoss {
        /// The node.
        node: Target,
        /// What happens to unsynced sectors.
        mode: PowerLossMode,
    },
    /// Start a stopped node again from its disks.
    Restart {
        /// The node (`all`: every stopped node).
        node: Target,
    },
    /// Freeze a node's tasks (its timers and messages wait).
    Pause {
        /// The node.
        node: Target,
    },
    /// Unfreeze a paused node.
    Resume {
        /// The node (`all`: every paused node).
        node: Target,
    },
    /// Set a node's clock offset and drift.
    ClockSkew {
        /// The node.
        node: Target,
        /// Offset from simulated time, ms.
        offset_ms: i64,
        /// Drift, parts per million.
        drift_ppm: i64,
    },
    /// Set a node's disk fault rates (redb engine).
    DiskFaults {
        /// The node.
        node: Target,
        /// The rates.
        disk: DiskFaults,
    },
    /// Build a snapshot now (Raft: openraft purges the log it covers, so lagging nodes need
    /// a snapshot install).
    Snapshot {
        /// The node.
        node: Target,
    },
    /// Add a node as a replica (Raft: learner, then voter).
    AddReplica {
        /// The node.
        node: Target,
    },
    /// Remove a replica from the membership (Raft).
    RemoveReplica {
        /// The node.
        node: Target,
    },
}

impl Fault {
    /// The fault's kind name, as written in scenario files.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Isolate { .. } => "isolate",
            Fault::OneWay { .. } => "one_way",
            Fault::Clog { .. } => "clog",
            Fault::Heal => "heal",
            Fault::Kill { .. } => "kill",
            Fault::PowerLoss { .. } => "power_loss",
            Fault::Restart { .. } => "restart",
            Fault::Pause { .. } => "pause",
            Fault::Resume { .. } => "resume",
            Fault::ClockSkew { .. } => "clock_skew",
            Fault::DiskFaults { .. } => "disk_faults",
            Fault::Snapshot { .. } => "snapshot",
            Fault::AddReplica { .. } => "add_replica",
            Fault::RemoveReplica { .. } => "remove_replica",
        }
    }
}

/// A fault at a simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledFault {
    /// Simulated ms since the run started.
    pub at_ms: u64,
    /// What happens.
    pub fault: Fault,
}

/// The kinds the random nemesis can inject.
pub const NEMESIS_KINDS: [&str; 10] = [
    "partition",
    "one_way",
    "clog",
    "kill",
    "power_loss",
    "pause",
    "clock_skew",
    "disk_faults",
    "snapshot",
    "membership",
];

/// The random nemesis: during the fault phase it injects a fault, holds it, undoes it, and
/// waits, again and again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nemesis {
    /// Gap between one fault's end and the next one's start, ms (min, max).
    pub interval_ms: (u64, u64),
    /// How long a fault lasts, ms (min, max).
    pub fault_ms: (u64, u64),
    /// Weight of each kind (0: off).
    pub kinds: BTreeMap<String, f64>,
    /// Swarm testing: the seed turns each kind on or off (at least one stays on) and
    /// scales its weight.
    pub swarm: bool,
}

/// The network's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// One-way latency range, ms (min, max).
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a node-to-node protocol message (Raft, anti-entropy, pushes) is
    /// delivered twice. Client requests travel in sessions and are not duplicated.
    pub duplicate: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: (1, 10),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Operation weights of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    /// Reads.
    pub get: u32,
    /// Writes.
    pub set: u32,
    /// Deletes.
    pub delete: u32,
    /// Compare-and-set (a read, then a transaction that expects what it read).
    pub cas: u32,
    /// Scans of every key.
    pub scan: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            get: 40,
            set: 40,
            delete: 5,
            cas: 10,
            scan: 5,
        }
    }
}

/// The client workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: u64,
    /// Keys `0..keys`.
    pub keys: u64,
    /// Operations per second per client.
    pub rate: f64,
    /// Operation weights.
    pub mix: Mix,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 5,
            keys: 5,
            rate: 10.0,
            mix: Mix::default(),
        }
    }
}

/// The checks a run ends with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// The history is linearizable (key-value model).
    pub linearizability: bool,
    /// Live replicas converge within the bound after the heal, with no acknowledged write
    /// lost and no delete resurrected.
    pub convergence: bool,
    /// The convergence bound, ms after the heal.
    pub convergence_bound_ms: u64,
    /// At most one leader per term, matching logs, one state per applied index.
    pub raft_invariants: bool,
}

/// The cluster a scenario starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Replication mode.
    pub mode: ShardKind,
    /// Storage engine of every node.
    pub engine: EngineKind,
    /// Replicas at the start (`1..=nodes`).
    pub nodes: u64,
    /// Nodes started outside the membership (`nodes+1..=nodes+spares`), for `add_replica`.
    pub spares: u64,
    /// How long a client waits for a reply before it records the operation as
    /// indeterminate.
    pub client_timeout_ms: u64,
    /// Mode options.
    pub options: ShardOptions,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Name (the file stem unless the file says otherwise).
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// The fault phase, simulated ms.
    pub duration_ms: u64,
    /// The quiet phase after the heal, simulated ms.
    pub quiet_ms: u64,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// Network defaults.
    pub network: Network,
    /// Client workload.
    pub workload: Workload,
    /// Faults at fixed times, in time order.
    pub schedule: Vec<ScheduledFault>,
    /// The random nemesis, if any.
    pub nemesis: Option<Nemesis>,
    /// Checks.
    pub checks: Checks,
    /// Planted bugs switched on (see `crate::bugs::ALL`).
    pub bugs: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The file as written
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    duration_ms: Spanned<u64>,
    quiet_ms: Option<Spanned<u64>>,
    #[serde(default)]
    bugs: Vec<Spanned<String>>,
    cluster: Spanned<RawCluster>,
    #[serde(default)]
    network: Option<Spanned<Network>>,
    #[serde(default)]
    workload: Option<Spanned<Workload>>,
    #[serde(default)]
    schedule: Vec<Spanned<RawFault>>,
    nemesis: Option<Spanned<RawNemesis>>,
    #[serde(default)]
    checks: Option<Spanned<RawChecks>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    mode: ShardKind,
    engine: EngineKind,
    nodes: Spanned<u64>,
    #[serde(default)]
    spares: Option<Spanned<u64>>,
    client_timeout_ms: Option<u64>,
    raft: Option<RaftOptions>,
    mst: Option<MstOptions>,
    eventual: Option<BasicOptions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_ms: Spanned<u64>,
    fault: Spanned<String>,
    node: Option<Spanned<toml::Value>>,
    groups: Option<Spanned<Vec<Vec<u64>>>>,
    from: Option<Spanned<toml::Value>>,
    to: Option<Spanned<toml::Value>>,
    offset_ms: Option<Spanned<i64>>,
    drift_ppm: Option<Spanned<i64>>,
    mode: Option<Spanned<PowerLossMode>>,
    disk: Option<Spanned<DiskFaults>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNemesis {
    interval_ms: Option<Spanned<(u64, u64)>>,
    fault_ms: Option<Spanned<(u64, u64)>>,
    #[serde(default)]
    kinds: BTreeMap<String, Spanned<f64>>,
    #[serde(default = "yes")]
    swarm: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    linearizability: Option<Spanned<bool>>,
    convergence: Option<Spanned<bool>>,
    convergence_bound_ms: Option<u64>,
    raft_invariants: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn at(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn err(&self, span: std::ops::Range<usize>, field: &str, message: String) -> ScenarioError {
        let (line, column) = self.at(span.start);
        ScenarioError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        Scenario::parse(&text, &file, &stem)
    }

    /// Parses and validates scenario text; `file` names it in errors, `default_name` is the
    /// name when the text gives none.
    pub fn parse(text: &str, file: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        let ctx = Ctx { file, text };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ctx.err(span, "", e.message().trim().to_string())
        })?;
        validate(&ctx, raw, default_name)
    }

    /// Total simulated length of a run (fault phase plus quiet phase), ms.
    pub fn run_ms(&self) -> u64 {
        self.duration_ms + self.quiet_ms
    }

    /// Every node id (replicas, then spares).
    pub fn node_ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.cluster.nodes + self.cluster.spares
    }

    /// Serializes the scenario back to TOML (as a shrunk or generated scenario is written).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("name = {:?}\n", self.name));
        out.push_str(&format!("description = {:?}\n", self.description));
        out.push_str(&format!("duration_ms = {}\n", self.duration_ms));
        out.push_str(&format!("quiet_ms = {}\n", self.quiet_ms));
        if !self.bugs.is_empty() {
            out.push_str(&format!("bugs = {:?}\n", self.bugs));
        }
        let c = &self.cluster;
        out.push_str("\n[cluster]\n");
        out.push_str(&format!("mode = {:?}\n", c.mode.name()));
        out.push_str(&format!("engine = {:?}\n", c.engine.name()));
        out.push_str(&format!(
            "nodes = {}\nspares = {}\nclient_timeout_ms = {}\n",
            c.nodes, c.spares, c.client_timeout_ms
        ));
        let options = match c.mode {
            ShardKind::Raft => Some(("raft", toml::to_string(&c.options.raft))),
            ShardKind::Mst => Some(("mst", toml::to_string(&c.options.mst))),
            ShardKind::Eventual => Some(("eventual", toml::to_string(&c.options.eventual))),
            ShardKind::None => None,
        };
        if let Some((name, Ok(body))) = options {
            out.push_str(&format!("\n[cluster.{name}]\n{body}"));
        }
        out.push_str("\n[network]\n");
        out.push_str(&toml::to_string(&self.network).unwrap_or_default());
        out.push_str("\n[workload]\n");
        let w = &self.workload;
        out.push_str(&format!(
            "clients = {}\nkeys = {}\nrate = {:?}\n",
            w.clients, w.keys, w.rate
        ));
        out.push_str("\n[workload.mix]\n");
        out.push_str(&toml::to_string(&w.mix).unwrap_or_default());
        out.push_str("\n[checks]\n");
        let k = &self.checks;
        out.push_str(&format!(
            "linearizability = {}\nconvergence = {}\nconvergence_bound_ms = {}\nraft_invariants = {}\n",
            k.linearizability, k.convergence, k.convergence_bound_ms, k.raft_invariants
        ));
        if let Some(n) = &self.nemesis {
            out.push_str("\n[nemesis]\n");
            out.push_str(&format!(
                "interval_ms = [{}, {}]\nfault_ms = [{}, {}]\nswarm = {}\n",
                n.interval_ms.0, n.interval_ms.1, n.fault_ms.0, n.fault_ms.1, n.swarm
            ));
            out.push_str("\n[nemesis.kinds]\n");
            for (k, w) in &n.kinds {
                out.push_str(&format!("{k} = {w:?}\n"));
            }
        }
        for s in &self.schedule {
            out.push_str("\n[[schedule]]\n");
            out.push_str(&format!("at_ms = {}\n", s.at_ms));
            out.push_str(&fault_toml(&s.fault));
        }
        out
    }
}

fn target_toml(t: &Target) -> String {
    match t {
        Target::Node(n) => n.to_string(),
        other => format!("{:?}", other.to_string()),
    }
}

fn fault_toml(f: &Fault) -> String {
    let mut out = format!("fault = {:?}\n", f.kind());
    match f {
        Fault::Partition { groups } => out.push_str(&format!("groups = {groups:?}\n")),
        Fault::OneWay { from, to } => out.push_str(&format!(
            "from = {}\nto = {}\n",
            target_toml(from),
            target_toml(to)
        )),
        Fault::Heal => {}
        Fault::Isolate { node }
        | Fault::Clog { node }
        | Fault::Kill { node }
        | Fault::Restart { node }
        | Fault::Pause { node }
        | Fault::Resume { node }
        | Fault::Snapshot { node }
        | Fault::AddReplica { node }
        | Fault::RemoveReplica { node } => out.push_str(&format!("node = {}\n", target_toml(node))),
        Fault::PowerLoss { node, mode } => out.push_str(&format!(
            "node = {}\nmode = {:?}\n",
            target_toml(node),
            serde_name(mode)
        )),
        Fault::ClockSkew {
            node,
            offset_ms,
            drift_ppm,
        } => out.push_str(&format!(
            "node = {}\noffset_ms = {offset_ms}\ndrift_ppm = {drift_ppm}\n",
            target_toml(node)
        )),
        Fault::DiskFaults { node, disk } => {
            out.push_str(&format!("node = {}\n", target_toml(node)));
            let body = toml::to_string(disk).unwrap_or_default();
            let inline: Vec<String> = body.lines().map(|l| l.to_string()).collect();
            out.push_str(&format!("disk = {{ {} }}\n", inline.join(", ")));
        }
    }
    out
}

fn serde_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Which faults each kind accepts, beyond `at_ms` and `fault`.
fn fault_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "partition" => &["groups"],
        "isolate" | "clog" | "kill" | "restart" | "pause" | "resume" | "snapshot"
        | "add_replica" | "remove_replica" => &["node"],
        "one_way" => &["from", "to"],
        "heal" => &[],
        "power_loss" => &["node", "mode"],
        "clock_skew" => &["node", "offset_ms", "drift_ppm"],
        "disk_faults" => &["node", "disk"],
        _ => return None,
    })
}

const FAULT_KINDS: &str = "partition, isolate, one_way, clog, heal, kill, power_loss, restart, \
                           pause, resume, clock_skew, disk_faults, snapshot, add_replica, \
                           remove_replica";

fn validate(
    ctx: &Ctx<'_>,
    raw: RawScenario,
    default_name: &str,
) -> Result<Scenario, ScenarioError> {
    let duration_ms = *raw.duration_ms.get_ref();
    let quiet_ms = raw.quiet_ms.as_ref().map_or(5_000, |q| *q.get_ref());
    if duration_ms == 0 {
        return Err(ctx.err(
            raw.duration_ms.span(),
            "duration_ms",
            "must be above 0".into(),
        ));
    }
    if duration_ms + quiet_ms > MAX_RUN_MS {
        return Err(ctx.err(
            raw.duration_ms.span(),
            "duration_ms",
            format!("the run (duration_ms + quiet_ms) may last at most {MAX_RUN_MS} ms"),
        ));
    }

    // Cluster.
    let cluster_span = raw.cluster.span();
    let rc = raw.cluster.into_inner();
    let nodes = *rc.nodes.get_ref();
    let spares = rc.spares.as_ref().map_or(0, |s| *s.get_ref());
    if nodes == 0 {
        return Err(ctx.err(
            rc.nodes.span(),
            "cluster.nodes",
            "must be at least 1".into(),
        ));
    }
    if rc.mode == ShardKind::None && nodes != 1 {
        return Err(ctx.err(
            rc.nodes.span(),
            "cluster.nodes",
            format!("mode \"none\" has exactly one replica, not {nodes}"),
        ));
    }
    if nodes + spares > MAX_NODES {
        let span = rc.spares.as_ref().map_or(rc.nodes.span(), |s| s.span());
        return Err(ctx.err(
            span,
            "cluster.spares",
            format!("nodes + spares = {} exceeds {MAX_NODES}", nodes + spares),
        ));
    }
    if spares > 0 && rc.mode != ShardKind::Raft {
        let span = rc
            .spares
            .as_ref()
            .map_or(cluster_span.clone(), |s| s.span());
        return Err(ctx.err(
            span,
            "cluster.spares",
            "spares join through membership changes, which only Raft has".into(),
        ));
    }
    for (name, given, mode) in [
        ("raft", rc.raft.is_some(), ShardKind::Raft),
        ("mst", rc.mst.is_some(), ShardKind::Mst),
        ("eventual", rc.eventual.is_some(), ShardKind::Eventual),
    ] {
        if given && rc.mode != mode {
            return Err(ctx.err(
                cluster_span.clone(),
                &format!("cluster.{name}"),
                format!(
                    "options for mode \"{name}\" in a \"{}\" cluster",
                    rc.mode.name()
                ),
            ));
        }
    }
    let options = ShardOptions {
        raft: rc.raft.unwrap_or_default(),
        mst: rc.mst.unwrap_or_default(),
        eventual: rc.eventual.unwrap_or_default(),
    };
    let cluster = ClusterConfig {
        mode: rc.mode,
        engine: rc.engine,
        nodes,
        spares,
        client_timeout_ms: rc.client_timeout_ms.unwrap_or(1_000).max(1),
        options,
    };

    // Network.
    let network = match raw.network {
        None => Network::default(),
        Some(n) => {
            let span = n.span();
            let n = n.into_inner();
            if n.latency_ms.0 > n.latency_ms.1 {
                return Err(ctx.err(
                    span,
                    "network.latency_ms",
                    format!("min {} exceeds max {}", n.latency_ms.0, n.latency_ms.1),
                ));
            }
            for (name, p) in [("loss", n.loss), ("duplicate", n.duplicate)] {
                if !(0.0..1.0).contains(&p) {
                    return Err(ctx.err(
                        span,
                        &format!("network.{name}"),
                        format!("{p} is not a probability in [0, 1)"),
                    ));
                }
            }
            n
        }
    };

    // Workload.
    let workload = match raw.workload {
        None => Workload::default(),
        Some(w) => {
            let span = w.span();
            let w = w.into_inner();
            if w.keys == 0 || w.keys > 1_000_000 {
                return Err(ctx.err(span, "workload.keys", "must be in 1..=1000000".into()));
            }
            if w.clients > 1_000 {
                return Err(ctx.err(span, "workload.clients", "at most 1000".into()));
            }
            if !(w.rate > 0.0 && w.rate <= 10_000.0) {
                return Err(ctx.err(span, "workload.rate", "must be in (0, 10000]".into()));
            }
            let m = &w.mix;
            if m.get + m.set + m.delete + m.cas + m.scan == 0 {
                return Err(ctx.err(span, "workload.mix", "every weight is 0".into()));
            }
            w
        }
    };

    // Schedule.
    let mut schedule = Vec::new();
    let mut down: BTreeSet<u64> = BTreeSet::new();
    let mut paused: BTreeSet<u64> = BTreeSet::new();
    let mut members: BTreeSet<u64> = (1..=nodes).collect();
    let (mut net_faulted, mut any_down, mut any_paused) = (false, false, false);
    let mut last_at = 0;
    for (i, entry) in raw.schedule.into_iter().enumerate() {
        let span = entry.span();
        let f = entry.into_inner();
        let field = |name: &str| format!("schedule[{i}].{name}");
        let at = *f.at_ms.get_ref();
        if at >= duration_ms {
            return Err(ctx.err(
                f.at_ms.span(),
                &field("at_ms"),
                format!(
                    "{at} is outside the fault phase 0..{duration_ms} (faults heal at duration_ms)"
                ),
            ));
        }
        if at < last_at {
            return Err(ctx.err(
                f.at_ms.span(),
                &field("at_ms"),
                format!("{at} is before the previous entry's {last_at}; list faults in time order"),
            ));
        }
        last_at = at;
        let kind = f.fault.get_ref().as_str();
        let Some(allowed) = fault_fields(kind) else {
            return Err(ctx.err(
                f.fault.span(),
                &field("fault"),
                format!("unknown fault {kind:?} (expected one of {FAULT_KINDS})"),
            ));
        };
        let given: [(&str, Option<std::ops::Range<usize>>); 8] = [
            ("node", f.node.as_ref().map(|s| s.span())),
            ("groups", f.groups.as_ref().map(|s| s.span())),
            ("from", f.from.as_ref().map(|s| s.span())),
            ("to", f.to.as_ref().map(|s| s.span())),
            ("offset_ms", f.offset_ms.as_ref().map(|s| s.span())),
            ("drift_ppm", f.drift_ppm.as_ref().map(|s| s.span())),
            ("mode", f.mode.as_ref().map(|s| s.span())),
            ("disk", f.disk.as_ref().map(|s| s.span())),
        ];
        for (name, s) in &given {
            if let Some(s) = s {
                if !allowed.contains(name) {
                    return Err(ctx.err(
                        s.clone(),
                        &field(name),
                        format!(
                            "fault {kind:?} takes no {name:?} (it takes: {})",
                            list(allowed)
                        ),
                    ));
                }
            } else if allowed.contains(name) && !matches!(*name, "offset_ms" | "drift_ppm") {
                return Err(ctx.err(
                    span.clone(),
                    &field(name),
                    format!("fault {kind:?} needs {name:?}"),
                ));
            }
        }
        let total = nodes + spares;
        let target = |v: &Option<Spanned<toml::Value>>, name: &str| {
            let v = v.as_ref().expect("checked above");
            parse_target(v.get_ref(), total).map_err(|m| ctx.err(v.span(), &field(name), m))
        };
        let redb_only = |what: &str| -> Result<(), ScenarioError> {
            if cluster.engine != EngineKind::Redb {
                return Err(ctx.err(
                    f.fault.span(),
                    &field("fault"),
                    format!(
                        "{what} needs the redb engine (on the simulated disk); this cluster uses {}",
                        cluster.engine.name()
                    ),
                ));
            }
            Ok(())
        };
        let raft_only = |what: &str| -> Result<(), ScenarioError> {
            if cluster.mode != ShardKind::Raft {
                return Err(ctx.err(
                    f.fault.span(),
                    &field("fault"),
                    format!(
                        "{what} is a Raft fault; this cluster's mode is {}",
                        cluster.mode.name()
                    ),
                ));
            }
            Ok(())
        };
        let fault = match kind {
            "partition" => {
                let g = f.groups.as_ref().expect("checked above");
                let mut seen = BTreeSet::new();
                for group in g.get_ref() {
                    for &n in group {
                        if n == 0 || n > total {
                            return Err(ctx.err(
                                g.span(),
                                &field("groups"),
                                format!("node {n} is out of range 1..={total}"),
                            ));
                        }
                        if !seen.insert(n) {
                            return Err(ctx.err(
                                g.span(),
                                &field("groups"),
                                format!("node {n} is in two groups"),
                            ));
                        }
                    }
                }
                if g.get_ref().iter().filter(|g| !g.is_empty()).count()
                    + usize::from(seen.len() < total as usize)
                    < 2
                {
                    return Err(ctx.err(
                        g.span(),
                        &field("groups"),
                        "a partition needs at least two non-empty groups".into(),
                    ));
                }
                net_faulted = true;
                Fault::Partition {
                    groups: g.get_ref().clone(),
                }
            }
            "isolate" => {
                net_faulted = true;
                Fault::Isolate {
                    node: target(&f.node, "node")?,
                }
            }
            "clog" => {
                net_faulted = true;
                Fault::Clog {
                    node: target(&f.node, "node")?,
                }
            }
            "one_way" => {
                let (from, to) = (target(&f.from, "from")?, target(&f.to, "to")?);
                if from == to && matches!(from, Target::Node(_)) {
                    return Err(ctx.err(
                        span.clone(),
                        &field("to"),
                        format!("from and to are both node {from}"),
                    ));
                }
                net_faulted = true;
                Fault::OneWay { from, to }
            }
            "heal" => {
                if !net_faulted {
                    return Err(ctx.err(
                        f.fault.span(),
                        &field("fault"),
                        "heal with no partition, isolation, one-way cut or clog before it".into(),
                    ));
                }
                net_faulted = false;
                Fault::Heal
            }
            "kill" | "power_loss" => {
                let node = target(&f.node, "node")?;
                if node == Target::All {
                    return Err(ctx.err(
                        f.node.as_ref().expect("given").span(),
                        &field("node"),
                        format!("{kind} takes one node, not \"all\""),
                    ));
                }
                if let Target::Node(n) = node {
                    if !down.insert(n) {
                        return Err(ctx.err(
                            f.node.as_ref().expect("given").span(),
                            &field("node"),
                            format!("node {n} is already down"),
                        ));
                    }
                }
                any_down = true;
                if kind == "kill" {
                    Fault::Kill { node }
                } else {
                    redb_only("power_loss")?;
                    Fault::PowerLoss {
                        node,
                        mode: *f.mode.as_ref().expect("checked above").get_ref(),
                    }
                }
            }
            "restart" => {
                let node = target(&f.node, "node")?;
                let sp = f.node.as_ref().expect("given").span();
                match node {
                    Target::Node(n) if !down.remove(&n) && !any_down => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            format!("restart of node {n}, which no kill or power_loss stopped"),
                        ))
                    }
                    Target::Node(_) => {}
                    _ if !any_down => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            "restart with no kill or power_loss before it".into(),
                        ))
                    }
                    Target::All => down.clear(),
                    _ => {}
                }
                Fault::Restart { node }
            }
            "pause" => {
                let node = target(&f.node, "node")?;
                if let Target::Node(n) = node {
                    paused.insert(n);
                }
                any_paused = true;
                Fault::Pause { node }
            }
            "resume" => {
                let node = target(&f.node, "node")?;
                let sp = f.node.as_ref().expect("given").span();
                match node {
                    Target::Node(n) if !paused.remove(&n) && !any_paused => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            format!("resume of node {n}, which no pause froze"),
                        ))
                    }
                    _ if !any_paused => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            "resume with no pause before it".into(),
                        ))
                    }
                    _ => {}
                }
                Fault::Resume { node }
            }
            "clock_skew" => Fault::ClockSkew {
                node: target(&f.node, "node")?,
                offset_ms: f.offset_ms.as_ref().map_or(0, |s| *s.get_ref()),
                drift_ppm: f.drift_ppm.as_ref().map_or(0, |s| *s.get_ref()),
            },
            "disk_faults" => {
                redb_only("disk_faults")?;
                let d = f.disk.as_ref().expect("checked above");
                d.get_ref()
                    .validate()
                    .map_err(|m| ctx.err(d.span(), &field("disk"), m))?;
                Fault::DiskFaults {
                    node: target(&f.node, "node")?,
                    disk: d.get_ref().clone(),
                }
            }
            "snapshot" => {
                raft_only("snapshot")?;
                Fault::Snapshot {
                    node: target(&f.node, "node")?,
                }
            }
            "add_replica" | "remove_replica" => {
                raft_only(kind)?;
                let node = target(&f.node, "node")?;
                let sp = f.node.as_ref().expect("given").span();
                match (kind, node) {
                    ("add_replica", Target::Node(n)) => {
                        if !members.insert(n) {
                            return Err(ctx.err(
                                sp,
                                &field("node"),
                                format!("node {n} is already a replica"),
                            ));
                        }
                        Fault::AddReplica { node }
                    }
                    ("add_replica", _) => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            "add_replica takes a node id".into(),
                        ))
                    }
                    (_, Target::All) => {
                        return Err(ctx.err(
                            sp,
                            &field("node"),
                            "remove_replica takes one node".into(),
                        ))
                    }
                    (_, node) => {
                        if let Target::Node(n) = node {
                            if !members.remove(&n) {
                                return Err(ctx.err(
                                    sp,
                                    &field("node"),
                                    format!("node {n} is not a replica"),
                                ));
                            }
                        }
                        if members.len() <= 1 {
                            return Err(ctx.err(
                                sp,
                                &field("node"),
                                "would leave no replica to remove to".into(),
                            ));
                        }
                        Fault::RemoveReplica { node }
                    }
                }
            }
            _ => unreachable!("fault_fields knows every kind"),
        };
        schedule.push(ScheduledFault { at_ms: at, fault });
    }

    // Nemesis.
    let nemesis = match raw.nemesis {
        None => None,
        Some(n) => {
            let span = n.span();
            let n = n.into_inner();
            let pair = |p: &Option<Spanned<(u64, u64)>>, name: &str, default: (u64, u64)| {
                let Some(p) = p else { return Ok(default) };
                let (a, b) = *p.get_ref();
                if a > b || b == 0 {
                    return Err(ctx.err(
                        p.span(),
                        &format!("nemesis.{name}"),
                        format!("[{a}, {b}] is not a range [min, max] with max above 0"),
                    ));
                }
                Ok((a, b))
            };
            let interval_ms = pair(&n.interval_ms, "interval_ms", (500, 3_000))?;
            let fault_ms = pair(&n.fault_ms, "fault_ms", (500, 4_000))?;
            let mut kinds = BTreeMap::new();
            for (k, w) in n.kinds {
                let field = format!("nemesis.kinds.{k}");
                if !NEMESIS_KINDS.contains(&k.as_str()) {
                    return Err(ctx.err(
                        w.span(),
                        &field,
                        format!(
                            "unknown nemesis kind (expected one of {})",
                            list(&NEMESIS_KINDS)
                        ),
                    ));
                }
                let weight = *w.get_ref();
                if !(weight >= 0.0 && weight.is_finite()) {
                    return Err(ctx.err(
                        w.span(),
                        &field,
                        format!("weight {weight} must be 0 or more"),
                    ));
                }
                let needs = match k.as_str() {
                    "power_loss" | "disk_faults" if cluster.engine != EngineKind::Redb => {
                        Some("the redb engine")
                    }
                    "snapshot" | "membership" if cluster.mode != ShardKind::Raft => Some("Raft"),
                    _ => None,
                };
                if let (Some(needs), true) = (needs, weight > 0.0) {
                    return Err(ctx.err(w.span(), &field, format!("needs {needs}")));
                }
                kinds.insert(k, weight);
            }
            if kinds.values().all(|w| *w == 0.0) {
                return Err(ctx.err(span, "nemesis.kinds", "no kind has a weight above 0".into()));
            }
            if nodes < 2
                && kinds.iter().any(|(k, w)| {
                    *w > 0.0
                        && k != "kill"
                        && k != "power_loss"
                        && k != "pause"
                        && k != "disk_faults"
                        && k != "clock_skew"
                })
            {
                return Err(ctx.err(
                    span,
                    "nemesis.kinds",
                    "network kinds need at least 2 nodes".into(),
                ));
            }
            Some(Nemesis {
                interval_ms,
                fault_ms,
                kinds,
                swarm: n.swarm,
            })
        }
    };

    // Checks.
    let replicated = matches!(cluster.mode, ShardKind::Mst | ShardKind::Eventual);
    let linearizable = matches!(cluster.mode, ShardKind::Raft | ShardKind::None);
    let mut checks = Checks {
        linearizability: linearizable,
        convergence: replicated,
        convergence_bound_ms: 10_000,
        raft_invariants: cluster.mode == ShardKind::Raft,
    };
    if let Some(c) = raw.checks {
        let c = c.into_inner();
        if let Some(v) = c.linearizability {
            checks.linearizability = *v.get_ref();
        }
        if let Some(v) = c.convergence {
            if *v.get_ref() && !replicated {
                return Err(ctx.err(
                    v.span(),
                    "checks.convergence",
                    format!("mode {} has no replicas to converge", cluster.mode.name()),
                ));
            }
            checks.convergence = *v.get_ref();
        }
        if let Some(b) = c.convergence_bound_ms {
            checks.convergence_bound_ms = b;
        }
        if let Some(v) = c.raft_invariants {
            if *v.get_ref() && cluster.mode != ShardKind::Raft {
                return Err(ctx.err(
                    v.span(),
                    "checks.raft_invariants",
                    format!("mode {} is not Raft", cluster.mode.name()),
                ));
            }
            checks.raft_invariants = *v.get_ref();
        }
    }

    let mut bugs = Vec::new();
    for (i, b) in raw.bugs.into_iter().enumerate() {
        if !crate::bugs::is_known(b.get_ref()) {
            return Err(ctx.err(
                b.span(),
                &format!("bugs[{i}]"),
                format!(
                    "unknown bug {:?} (expected one of {})",
                    b.get_ref(),
                    list(&crate::bugs::names())
                ),
            ));
        }
        bugs.push(b.into_inner());
    }

    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| default_name.to_string()),
        description: raw.description.unwrap_or_default(),
        duration_ms,
        quiet_ms,
        cluster,
        network,
        workload,
        schedule,
        nemesis,
        checks,
        bugs,
    })
}

fn list(items: &[&str]) -> String {
    items.join(", ")
}

fn parse_target(v: &toml::Value, total: u64) -> Result<Target, String> {
    match v {
        toml::Value::Integer(n) if *n >= 1 && (*n as u64) <= total => Ok(Target::Node(*n as u64)),
        toml::Value::Integer(n) => Err(format!("node {n} is out of range 1..={total}")),
        toml::Value::String(s) => match s.as_str() {
            "leader" => Ok(Target::Leader),
            "follower" => Ok(Target::Follower),
            "random" => Ok(Target::Random),
            "all" => Ok(Target::All),
            other => Err(format!(
                "{other:?} is not a node (expected an id, \"leader\", \"follower\", \"random\" or \"all\")"
            )),
        },
        other => Err(format!("{other} is not a node id or a name")),
    }
}

#[cfg(test)]
mod tests;
