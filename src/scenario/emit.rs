//! A scenario written back as a file, through serde: shrunk scenarios, generated chaos
//! scenarios and the schedule that ran are all written this way, and read back by the same
//! parser as a hand-written file (`tests` check the round trip on every shipped scenario and
//! many generated ones).
//!
//! The file's shape differs from the type's in one place: a cluster's mode options are a
//! table named after the mode (`[cluster.raft]`), given only for that mode.

use serde::Serialize;

use super::{Checks, Nemesis, Network, Scenario, ScheduledFault, Workload};
use crate::bugs::Bug;
use crate::raft::RaftOptions;
use crate::shard::basic::BasicOptions;
use crate::shard::mst::MstOptions;
use crate::shard::ShardKind;
use crate::storage::EngineKind;

#[derive(Serialize)]
struct File<'a> {
    name: &'a str,
    description: &'a str,
    duration_ms: u64,
    quiet_ms: u64,
    #[serde(skip_serializing_if = "<[Bug]>::is_empty")]
    bugs: &'a [Bug],
    cluster: Cluster<'a>,
    network: &'a Network,
    workload: &'a Workload,
    checks: &'a Checks,
    #[serde(skip_serializing_if = "Option::is_none")]
    nemesis: Option<&'a Nemesis>,
    #[serde(skip_serializing_if = "<[ScheduledFault]>::is_empty")]
    schedule: &'a [ScheduledFault],
}

#[derive(Serialize)]
struct Cluster<'a> {
    mode: ShardKind,
    engine: EngineKind,
    nodes: u64,
    spares: u64,
    client_timeout_ms: u64,
    clock_drift_ppm: u64,
    boot_jitter_ms: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    engine_neutral: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    raft: Option<&'a RaftOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mst: Option<&'a MstOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eventual: Option<&'a BasicOptions>,
}

/// The scenario as TOML.
pub fn to_toml(s: &Scenario) -> String {
    let c = &s.cluster;
    let o = &c.options;
    let file = File {
        name: &s.name,
        description: &s.description,
        duration_ms: s.duration_ms,
        quiet_ms: s.quiet_ms,
        bugs: &s.bugs,
        cluster: Cluster {
            mode: c.mode,
            engine: c.engine,
            nodes: c.nodes,
            spares: c.spares,
            client_timeout_ms: c.client_timeout_ms,
            clock_drift_ppm: c.clock_drift_ppm,
            boot_jitter_ms: c.boot_jitter_ms,
            engine_neutral: c.engine_neutral,
            raft: (c.mode == ShardKind::Raft).then_some(&o.raft),
            mst: (c.mode == ShardKind::Mst).then_some(&o.mst),
            eventual: (c.mode == ShardKind::Eventual).then_some(&o.eventual),
        },
        network: &s.network,
        workload: &s.workload,
        checks: &s.checks,
        nemesis: s.nemesis.as_ref(),
        schedule: &s.schedule,
    };
    // Every field is a plain value, map or sequence that TOML can hold.
    toml::to_string(&file).expect("a scenario serializes to TOML")
}
