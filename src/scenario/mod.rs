//! Scenarios: what a run starts, what its clients do, which faults happen when, and what is
//! checked at the end.
//!
//! A scenario names a cluster (replication mode, engine, node count, mode options), network
//! defaults, a client workload, a schedule of faults at simulated times, an optional random
//! nemesis, and the checks that apply. A run is the fault phase (`duration_ms`), then every
//! fault is healed and a quiet phase (`quiet_ms`) follows; then the checks run.
//!
//! This module holds the types. The fault vocabulary is two enums, [`FaultKind`] (what a
//! schedule entry can do) and [`NemesisKind`] (what the random nemesis can draw); each kind
//! knows its name, the fields it takes and what it needs of the cluster ([`Need`]), and the
//! parser, the emitter, the chaos generator and the harness all ask the kind. The rest:
//! - [`parse`]: the file as written, validated section by section; every mistake is reported
//!   as `FILE:LINE:COLUMN: FIELD: what is wrong` before anything runs;
//! - [`emit`]: a scenario written back as a file, through serde;
//! - [`generate`]: the chaos generator, a whole scenario drawn from a seed;
//! - [`transform`]: the schedule transforms `shrink` uses.
//!
//! The schema with examples is in the README (Scenario schema).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bugs::Bug;
use crate::shard::{ShardKind, ShardOptions};
use crate::storage::{DiskFaults, EngineKind, PowerLossMode};

pub mod emit;
pub mod generate;
mod kinds;
mod parse;
pub mod transform;

pub use kinds::{FaultKind, Need, NemesisKind};

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

/// Which node a fault hits; symbolic targets are resolved when the fault fires. In files
/// and reports a node id is a number and the others are names (`"leader"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Target {
    const NAMED: [(Target, &'static str); 4] = [
        (Target::Leader, "leader"),
        (Target::Follower, "follower"),
        (Target::Random, "random"),
        (Target::All, "all"),
    ];

    /// The target a name stands for.
    pub fn named(name: &str) -> Option<Target> {
        Target::NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(t, _)| *t)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(n) => write!(f, "{n}"),
            named => {
                let name = Target::NAMED
                    .iter()
                    .find(|(t, _)| t == named)
                    .map_or("?", |(_, n)| n);
                f.write_str(name)
            }
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Node(n) => s.serialize_u64(*n),
            named => s.serialize_str(&named.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Id(u64),
            Name(String),
        }
        match Form::deserialize(d)? {
            Form::Id(n) => Ok(Target::Node(n)),
            Form::Name(s) => Target::named(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a node"))),
        }
    }
}

/// Longest an armed crash or power cut waits for what it is timed against, in simulated ms.
pub const ARMED_CUT_WINDOW_MS: u64 = 2_000;

/// What an armed crash, power cut or isolation waits for: the node's next N completed syncs
/// (the redb engine, whose disks are simulated), votes saved, log appends acknowledged,
/// snapshot chunks received or log purges (Raft), or N disk operations into its next snapshot
/// install (Raft on redb). In a scenario file: `after = { votes = 1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CutAfter {
    /// Completed syncs: the first of the node's disks to complete N more goes dark.
    Syncs(u64),
    /// Votes the Raft log store reported saved.
    Votes(u64),
    /// Appends the Raft log store reported durable.
    Appends(u64),
    /// Snapshot data chunks received from a leader (Raft): the fault lands between two
    /// chunks of a transfer.
    Chunks(u64),
    /// Log purges the Raft log store made durable (after a snapshot is built or installed):
    /// the fault lands between the purge and whatever the node does next.
    Purges(u64),
    /// Disk operations (writes and syncs) once the node's state machine begins installing a
    /// leader's snapshot (Raft on redb): its disks go dark after N more, part-way through the
    /// install, or after it if the install takes fewer.
    InstallOps(u64),
}

impl CutAfter {
    /// Most of anything a cut may wait for.
    pub const MAX_COUNT: u64 = 1_000;

    /// How many it waits for.
    pub fn count(self) -> u64 {
        match self {
            CutAfter::Syncs(n)
            | CutAfter::Votes(n)
            | CutAfter::Appends(n)
            | CutAfter::Chunks(n)
            | CutAfter::Purges(n)
            | CutAfter::InstallOps(n) => n,
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
        /// Armed rather than now: the links go right after the node's next N votes saved,
        /// appends acknowledged or snapshot chunks received (`after = { chunks = 3 }` cuts a
        /// snapshot transfer between two chunks); if that does not happen within
        /// [`ARMED_CUT_WINDOW_MS`], the isolation comes then. Not `syncs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<CutAfter>,
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
        /// Armed rather than now: the process dies right after the node's next N syncs, votes
        /// saved or appends acknowledged (see [`Fault::PowerLoss`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<CutAfter>,
    },
    /// Stop a node and cut its power: its disks lose unsynced writes (redb engine).
    PowerLoss {
        /// The node.
        node: Target,
        /// What happens to unsynced sectors.
        mode: PowerLossMode,
        /// Armed rather than now: the cut comes right after the node's next N syncs, votes
        /// saved or log appends acknowledged, so it lands on the write path; if that does not
        /// happen within [`ARMED_CUT_WINDOW_MS`], the cut comes then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<CutAfter>,
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
        #[serde(default)]
        offset_ms: i64,
        /// Drift, parts per million.
        #[serde(default)]
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
    /// The fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Isolate { .. } => FaultKind::Isolate,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Clog { .. } => FaultKind::Clog,
            Fault::Heal => FaultKind::Heal,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::PowerLoss { .. } => FaultKind::PowerLoss,
            Fault::Restart { .. } => FaultKind::Restart,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Resume { .. } => FaultKind::Resume,
            Fault::ClockSkew { .. } => FaultKind::ClockSkew,
            Fault::DiskFaults { .. } => FaultKind::DiskFaults,
            Fault::Snapshot { .. } => FaultKind::Snapshot,
            Fault::AddReplica { .. } => FaultKind::AddReplica,
            Fault::RemoveReplica { .. } => FaultKind::RemoveReplica,
        }
    }
}

/// A fault at a simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledFault {
    /// Simulated ms since the run started.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// The random nemesis: during the fault phase it injects a fault, holds it, undoes it, and
/// waits, again and again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nemesis {
    /// Gap between one fault's end and the next one's start, ms (min, max).
    pub interval_ms: (u64, u64),
    /// How long a fault lasts, ms (min, max).
    pub fault_ms: (u64, u64),
    /// Swarm testing: the seed turns each kind on or off (at least one stays on) and
    /// scales its weight.
    pub swarm: bool,
    /// Weight of each kind (0: off).
    pub kinds: BTreeMap<NemesisKind, f64>,
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
    /// Counts of every key.
    pub count: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            get: 40,
            set: 40,
            delete: 5,
            cas: 10,
            scan: 5,
            count: 3,
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

impl Checks {
    /// The checks a mode gets unless `[checks]` says otherwise.
    pub fn defaults(mode: ShardKind) -> Checks {
        Checks {
            linearizability: matches!(mode, ShardKind::Raft | ShardKind::None),
            convergence: matches!(mode, ShardKind::Mst | ShardKind::Eventual),
            convergence_bound_ms: 10_000,
            raft_invariants: mode == ShardKind::Raft,
        }
    }
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
    /// Each node's clock drifts by up to this many ppm either way, drawn from the seed
    /// (real oscillators are off by tens to hundreds of ppm); it drives the node's timers.
    pub clock_drift_ppm: u64,
    /// Each node starts (and restarts) after a delay of up to this many ms, drawn from the
    /// seed, so nodes' timers do not tick in lock-step.
    pub boot_jitter_ms: u64,
    /// The run's random draws do not depend on the engine: every node draws its simulated
    /// disks' seeds whether its engine uses them or not, so the same seed runs the same
    /// schedule on every engine (`odgm-sim differential` sets it). Off by default, which
    /// keeps the draws, and so the trace hashes, of runs made before it existed.
    pub engine_neutral: bool,
    /// Mode options.
    pub options: ShardOptions,
}

impl ClusterConfig {
    /// Default largest drift of a node's clock, ppm.
    pub const DEFAULT_DRIFT_PPM: u64 = 200;
    /// Largest drift a scenario may ask for, ppm (10 %).
    pub const MAX_DRIFT_PPM: u64 = 100_000;
    /// Default largest boot delay, ms.
    pub const DEFAULT_BOOT_JITTER_MS: u64 = 100;
    /// Largest boot delay a scenario may ask for, ms.
    pub const MAX_BOOT_JITTER_MS: u64 = 10_000;
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
    /// Planted bugs switched on.
    pub bugs: Vec<Bug>,
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
        parse::parse(text, file, default_name)
    }

    /// The scenario as a file (the shape [`Scenario::parse`] reads).
    pub fn to_toml(&self) -> String {
        emit::to_toml(self)
    }

    /// Total simulated length of a run (fault phase plus quiet phase), ms.
    pub fn run_ms(&self) -> u64 {
        self.duration_ms + self.quiet_ms
    }

    /// Every node id (replicas, then spares).
    pub fn node_ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.cluster.nodes + self.cluster.spares
    }
}

#[cfg(test)]
mod tests;
