//! A scenario file as written, and its validation, section by section. Every mistake is
//! reported as `FILE:LINE:COLUMN: FIELD: what is wrong` before anything runs: unknown keys,
//! node ids out of range, `heal` with no cut before it, a `restart` with no crash, a time
//! outside the fault phase or out of order, an unknown engine, mode, fault, nemesis kind or
//! planted bug, a field the fault does not take, a fault the mode or engine cannot have.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use schedule::{RawFault, Schedule};

use super::{
    Checks, ClusterConfig, Need, Nemesis, NemesisKind, Network, Scenario, ScenarioError, Workload,
    MAX_NODES, MAX_RUN_MS,
};
use crate::bugs::Bug;
use crate::raft::RaftOptions;
use crate::shard::basic::BasicOptions;
use crate::shard::mst::MstOptions;
use crate::shard::{ShardKind, ShardOptions};
use crate::storage::EngineKind;

mod schedule;

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
    clock_drift_ppm: Option<Spanned<u64>>,
    boot_jitter_ms: Option<Spanned<u64>>,
    #[serde(default)]
    engine_neutral: bool,
    raft: Option<RaftOptions>,
    mst: Option<MstOptions>,
    eventual: Option<BasicOptions>,
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

/// The text being parsed, for turning byte offsets into lines and columns.
pub(super) struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

pub(super) type Result<T> = std::result::Result<T, ScenarioError>;

impl Ctx<'_> {
    fn at(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub(super) fn err(&self, span: Range<usize>, field: &str, message: String) -> ScenarioError {
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

/// Parses and validates scenario text.
pub(super) fn parse(text: &str, file: &str, default_name: &str) -> Result<Scenario> {
    let ctx = Ctx { file, text };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ctx.err(span, "", e.message().trim().to_string())
    })?;
    let (duration_ms, quiet_ms) = phases(&ctx, &raw)?;
    let cluster = cluster(&ctx, raw.cluster)?;
    let network = network(&ctx, raw.network)?;
    let workload = workload(&ctx, raw.workload)?;
    let mut schedule = Schedule::new(&ctx, &cluster, duration_ms);
    for (i, entry) in raw.schedule.into_iter().enumerate() {
        schedule.entry(i, entry)?;
    }
    let schedule = schedule.finish()?;
    let nemesis = raw
        .nemesis
        .map(|n| nemesis(&ctx, &cluster, n))
        .transpose()?;
    let checks = checks(&ctx, cluster.mode, raw.checks)?;
    let bugs = bugs(&ctx, raw.bugs)?;
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

fn phases(ctx: &Ctx<'_>, raw: &RawScenario) -> Result<(u64, u64)> {
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
    Ok((duration_ms, quiet_ms))
}

fn cluster(ctx: &Ctx<'_>, raw: Spanned<RawCluster>) -> Result<ClusterConfig> {
    let cluster_span = raw.span();
    let rc = raw.into_inner();
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
    let bounded = |v: &Option<Spanned<u64>>, field: &str, default: u64, max: u64| match v {
        Some(v) if *v.get_ref() > max => Err(ctx.err(
            v.span(),
            field,
            format!("{} is above the most allowed, {max}", v.get_ref()),
        )),
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    };
    let clock_drift_ppm = bounded(
        &rc.clock_drift_ppm,
        "cluster.clock_drift_ppm",
        ClusterConfig::DEFAULT_DRIFT_PPM,
        ClusterConfig::MAX_DRIFT_PPM,
    )?;
    let boot_jitter_ms = bounded(
        &rc.boot_jitter_ms,
        "cluster.boot_jitter_ms",
        ClusterConfig::DEFAULT_BOOT_JITTER_MS,
        ClusterConfig::MAX_BOOT_JITTER_MS,
    )?;
    Ok(ClusterConfig {
        mode: rc.mode,
        engine: rc.engine,
        nodes,
        spares,
        client_timeout_ms: rc.client_timeout_ms.unwrap_or(1_000).max(1),
        clock_drift_ppm,
        boot_jitter_ms,
        engine_neutral: rc.engine_neutral,
        options: ShardOptions {
            raft: rc.raft.unwrap_or_default(),
            mst: rc.mst.unwrap_or_default(),
            eventual: rc.eventual.unwrap_or_default(),
        },
    })
}

fn network(ctx: &Ctx<'_>, raw: Option<Spanned<Network>>) -> Result<Network> {
    let Some(n) = raw else {
        return Ok(Network::default());
    };
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
    Ok(n)
}

fn workload(ctx: &Ctx<'_>, raw: Option<Spanned<Workload>>) -> Result<Workload> {
    let Some(w) = raw else {
        return Ok(Workload::default());
    };
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
    if m.get + m.set + m.delete + m.cas + m.scan + m.count == 0 {
        return Err(ctx.err(span, "workload.mix", "every weight is 0".into()));
    }
    Ok(w)
}

fn nemesis(ctx: &Ctx<'_>, cluster: &ClusterConfig, raw: Spanned<RawNemesis>) -> Result<Nemesis> {
    let span = raw.span();
    let n = raw.into_inner();
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
    for (name, w) in n.kinds {
        let field = format!("nemesis.kinds.{name}");
        let kind: NemesisKind = name
            .parse()
            .map_err(|e| ctx.err(w.span(), &field, format!("unknown nemesis kind {e}")))?;
        let weight = *w.get_ref();
        if !(weight >= 0.0 && weight.is_finite()) {
            return Err(ctx.err(
                w.span(),
                &field,
                format!("weight {weight} must be 0 or more"),
            ));
        }
        if weight > 0.0 {
            if let Some(need) = Need::first_unmet(kind.needs(), cluster) {
                return Err(ctx.err(w.span(), &field, need.unmet(kind.name(), cluster)));
            }
        }
        kinds.insert(kind, weight);
    }
    if kinds.values().all(|w| *w == 0.0) {
        return Err(ctx.err(span, "nemesis.kinds", "no kind has a weight above 0".into()));
    }
    Ok(Nemesis {
        interval_ms,
        fault_ms,
        swarm: n.swarm,
        kinds,
    })
}

fn checks(ctx: &Ctx<'_>, mode: ShardKind, raw: Option<Spanned<RawChecks>>) -> Result<Checks> {
    let mut checks = Checks::defaults(mode);
    let Some(c) = raw else {
        return Ok(checks);
    };
    let c = c.into_inner();
    if let Some(v) = c.linearizability {
        checks.linearizability = *v.get_ref();
    }
    if let Some(v) = c.convergence {
        if *v.get_ref() && !matches!(mode, ShardKind::Mst | ShardKind::Eventual) {
            return Err(ctx.err(
                v.span(),
                "checks.convergence",
                format!("mode {} has no replicas to converge", mode.name()),
            ));
        }
        checks.convergence = *v.get_ref();
    }
    if let Some(b) = c.convergence_bound_ms {
        checks.convergence_bound_ms = b;
    }
    if let Some(v) = c.raft_invariants {
        if *v.get_ref() && mode != ShardKind::Raft {
            return Err(ctx.err(
                v.span(),
                "checks.raft_invariants",
                format!("mode {} is not Raft", mode.name()),
            ));
        }
        checks.raft_invariants = *v.get_ref();
    }
    Ok(checks)
}

fn bugs(ctx: &Ctx<'_>, raw: Vec<Spanned<String>>) -> Result<Vec<Bug>> {
    raw.into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.get_ref()
                .parse()
                .map_err(|e| ctx.err(b.span(), &format!("bugs[{i}]"), e))
        })
        .collect()
}
