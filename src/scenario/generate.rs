//! The chaos generator: a whole scenario drawn from a seed (swarm testing). Mode, engine,
//! node count, run length, mode options, network, workload size and mix, and the nemesis's
//! timing and kinds with their weights are all drawn, and every value drawn is logged, so a
//! reader sees at once what a failing seed exercised (the drawn file opens with them).
//!
//! Every draw is a valid scenario: the nemesis gets exactly the kinds the drawn cluster can
//! have ([`NemesisKind::needs`]), and `tests` parse thousands of draws back.

use std::collections::BTreeMap;
use std::fmt::Display;

use rand::distributions::uniform::SampleUniform;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Checks, ClusterConfig, Mix, Need, Nemesis, NemesisKind, Network, Scenario, Workload};
use crate::shard::{ShardKind, ShardOptions};
use crate::storage::EngineKind;

/// A drawn scenario and every value drawn for it, in the order drawn.
#[derive(Debug, Clone)]
pub struct Drawn {
    /// The scenario.
    pub scenario: Scenario,
    /// `(what, value)` for each draw.
    pub draws: Vec<(&'static str, String)>,
}

impl Drawn {
    /// The scenario as a file that opens with the draws as comments.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut line = String::from("# drawn:");
        for (what, value) in &self.draws {
            let item = format!(" {what}={value}");
            if line.len() + item.len() > 96 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#       ");
            }
            line.push_str(&item);
        }
        out.push_str(&line);
        out.push('\n');
        out.push_str(&self.scenario.to_toml());
        out
    }
}

/// Draws from a seeded RNG and logs each value.
struct Drawer {
    rng: StdRng,
    draws: Vec<(&'static str, String)>,
}

impl Drawer {
    fn log<T: Display>(&mut self, what: &'static str, value: T) -> T {
        self.draws.push((what, value.to_string()));
        value
    }

    /// An integer in `r`. The integer type is part of what a seed means (an `i32` and a
    /// `u64` draw take different bits from the RNG), so it stays as it is.
    fn range<T>(&mut self, what: &'static str, r: std::ops::RangeInclusive<T>) -> T
    where
        T: SampleUniform + PartialOrd + Display + Copy,
    {
        let v = self.rng.gen_range(r);
        self.log(what, v)
    }

    /// A count drawn as an `i32`, as chaos draws have always been.
    fn int(&mut self, what: &'static str, r: std::ops::RangeInclusive<i32>) -> u64 {
        self.range(what, r) as u64
    }

    /// A fraction in `r`, at `decimals` places: what a scenario file shows is exactly what
    /// runs.
    fn fraction(&mut self, what: &'static str, r: std::ops::Range<f64>, decimals: usize) -> f64 {
        let v = self.rng.gen_range(r);
        let v: f64 = format!("{v:.decimals$}")
            .parse()
            .expect("a formatted float parses");
        self.log(what, v)
    }

    fn weighted<T: Copy + Display>(&mut self, what: &'static str, items: &[(T, u32)]) -> T {
        let total: u32 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.gen_range(0..total);
        let mut pick = items[items.len() - 1].0;
        for (item, w) in items {
            if x < *w {
                pick = *item;
                break;
            }
            x -= w;
        }
        self.log(what, pick)
    }

    fn coin(&mut self, what: &'static str, p: f64) -> bool {
        let v = self.rng.gen_bool(p);
        self.log(what, v)
    }
}

/// The scenario `seed` draws, named `chaos-<seed>`.
pub fn chaos(seed: u64) -> Drawn {
    let mut d = Drawer {
        rng: StdRng::seed_from_u64(seed ^ 0x6f64_676d_6368_616f),
        draws: Vec::new(),
    };
    let mode = d.weighted(
        "mode",
        &[
            (ShardKind::Raft, 4),
            (ShardKind::Mst, 2),
            (ShardKind::Eventual, 2),
            (ShardKind::None, 1),
        ],
    );
    let engine = d.weighted(
        "engine",
        &[
            (EngineKind::Redb, 6),
            (EngineKind::Memory, 3),
            (EngineKind::Fjall, 1),
        ],
    );
    let nodes = match mode {
        ShardKind::None => 1,
        ShardKind::Raft => d.weighted("nodes", &[(3, 3), (5, 1)]),
        _ => d.range("nodes", 2u64..=4),
    };
    let membership = mode == ShardKind::Raft && d.coin("membership", 0.3);
    let duration_ms = d.int("duration_s", 8..=20) * 1000;
    let quiet_ms = d.int("quiet_s", 3..=6) * 1000;
    let mut options = ShardOptions::default();
    if mode == ShardKind::Raft {
        // Small snapshot intervals and short kept logs make lagging nodes install snapshots:
        // half the runs keep so little log that a node down for a second or two comes back
        // to a snapshot (installs are where crashes do the most damage).
        let short = d.coin("short_logs", 0.5);
        let every = if short {
            d.range("snapshot_every", 10i32..=40)
        } else {
            d.range("snapshot_every", 20i32..=300)
        };
        options.raft.snapshot_every = every as u64;
        let most_kept = if short { 5 } else { (every / 2).min(50) };
        options.raft.keep_after_snapshot = d.int("keep_after_snapshot", 1..=most_kept);
        // Small chunks make those snapshots travel in many chunks, which faults can cut.
        options.raft.snapshot_chunk_bytes = d.weighted(
            "snapshot_chunk_bytes",
            &[(128, 2), (1024, 1), (64 * 1024, 1)],
        );
        // Small log segments roll over every few entries and reuse the slots purges free.
        options.raft.log_segment_bytes = d.weighted(
            "log_segment_bytes",
            &[(1024, 1), (16 * 1024, 1), (1 << 20, 2)],
        );
    }
    let network = if nodes > 1 {
        let lo = d.int("latency_min_ms", 1..=5);
        Network {
            latency_ms: (lo, lo + d.int("latency_spread_ms", 0..=30)),
            loss: d.fraction("loss", 0.0..0.03, 3),
            duplicate: d.fraction("duplicate", 0.0..0.05, 3),
        }
    } else {
        Network::default()
    };
    let (clients, keys) = (d.int("clients", 2..=8), d.int("keys", 3..=20));
    let workload = Workload {
        clients,
        keys,
        rate: d.fraction("rate", 5.0..120.0, 1),
        mix: Mix {
            get: d.int("get", 0..=50) as u32,
            set: d.int("set", 10..=60) as u32,
            delete: d.int("delete", 0..=15) as u32,
            cas: d.int("cas", 0..=20) as u32,
            scan: d.int("scan", 0..=10) as u32,
            count: d.int("count", 0..=6) as u32,
        },
    };
    let (gap_min, hold_min) = (
        d.int("interval_min_ms", 100..=1000),
        d.int("fault_min_ms", 200..=1500),
    );
    let interval_ms = (gap_min, gap_min + d.int("interval_spread_ms", 0..=2000));
    let fault_ms = (hold_min, hold_min + d.int("fault_spread_ms", 0..=2500));
    let cluster = ClusterConfig {
        mode,
        engine,
        nodes,
        spares: u64::from(membership),
        client_timeout_ms: d.weighted("client_timeout_ms", &[(150, 1), (500, 1), (1_000, 2)]),
        clock_drift_ppm: ClusterConfig::DEFAULT_DRIFT_PPM,
        boot_jitter_ms: ClusterConfig::DEFAULT_BOOT_JITTER_MS,
        engine_neutral: false,
        options,
    };
    let mut kinds = BTreeMap::new();
    for kind in nemesis_kinds(&cluster, membership) {
        kinds.insert(kind, d.fraction(kind.name(), 0.2..1.0, 2));
    }
    let scenario = Scenario {
        name: format!("chaos-{seed}"),
        description: format!(
            "chaos seed {seed}: {} on {engine}, {nodes} node(s)",
            mode.name()
        ),
        duration_ms,
        quiet_ms,
        checks: Checks::defaults(mode),
        cluster,
        network,
        workload,
        schedule: Vec::new(),
        nemesis: Some(Nemesis {
            interval_ms,
            fault_ms,
            swarm: true,
            kinds,
        }),
        bugs: Vec::new(),
    };
    Drawn {
        scenario,
        draws: d.draws,
    }
}

/// How [`mutate`] changed a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// The same scenario, run with another seed.
    Reseed,
    /// Faults come twice as often.
    Intensify,
    /// The nemesis kinds' weights drawn again.
    Reweigh,
    /// The workload's rate and mix drawn again.
    Rework,
}

impl Mutation {
    /// Its name in draws and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::Reseed => "reseed",
            Mutation::Intensify => "intensify",
            Mutation::Reweigh => "reweigh",
            Mutation::Rework => "rework",
        }
    }
}

impl Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A child of a drawn scenario for guided chaos, drawn from `seed`: the parent's cluster
/// (mode, engine, nodes, options), which decides most of what a run can reach, with one
/// [`Mutation`] drawn; named `chaos-<seed>-of-<parent>` and run with `seed`.
pub fn mutate(parent: &Drawn, parent_seed: u64, seed: u64) -> Drawn {
    let mut d = Drawer {
        rng: StdRng::seed_from_u64(seed ^ 0x6d75_7461_7465_6f64),
        draws: vec![("parent", parent_seed.to_string())],
    };
    let mut s = parent.scenario.clone();
    let how = d.weighted(
        "mutation",
        &[
            (Mutation::Reseed, 2),
            (Mutation::Intensify, 1),
            (Mutation::Reweigh, 1),
            (Mutation::Rework, 1),
        ],
    );
    match (how, s.nemesis.as_mut()) {
        (Mutation::Intensify, Some(n)) => {
            n.interval_ms = (n.interval_ms.0 / 2, n.interval_ms.1 / 2);
        }
        (Mutation::Reweigh, Some(n)) => {
            let kinds: Vec<NemesisKind> = n.kinds.keys().copied().collect();
            for kind in kinds {
                n.kinds.insert(kind, d.fraction(kind.name(), 0.2..1.0, 2));
            }
        }
        (Mutation::Rework, _) => {
            let w = &mut s.workload;
            w.rate = d.fraction("rate", 5.0..120.0, 1);
            w.mix = Mix {
                get: d.int("get", 0..=50) as u32,
                set: d.int("set", 10..=60) as u32,
                delete: d.int("delete", 0..=15) as u32,
                cas: d.int("cas", 0..=20) as u32,
                scan: d.int("scan", 0..=10) as u32,
                count: d.int("count", 0..=6) as u32,
            };
        }
        _ => {}
    }
    s.name = format!("chaos-{seed}-of-{parent_seed}");
    s.description = format!(
        "{} ({how} of chaos seed {parent_seed})",
        parent.scenario.description
    );
    let mut draws = parent.draws.clone();
    draws.extend(d.draws);
    Drawn { scenario: s, draws }
}

/// The nemesis kinds a drawn cluster gets, in the order their weights are drawn: every kind
/// the cluster can have, except kills and power losses on the memory engine (it keeps
/// nothing across a crash: a killed node would come back empty, which this stack does not
/// claim to survive) and membership changes unless the cluster has a spare.
fn nemesis_kinds(cluster: &ClusterConfig, membership: bool) -> Vec<NemesisKind> {
    use NemesisKind::*;
    [
        Pause, ClockSkew, Kill, Partition, OneWay, Clog, PowerLoss, DiskFaults, Snapshot,
        Membership,
    ]
    .into_iter()
    .filter(|k| Need::first_unmet(k.needs(), cluster).is_none())
    .filter(|k| !(*k == Kill && cluster.engine == EngineKind::Memory))
    .filter(|k| *k != Membership || membership)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_is_a_valid_scenario_and_round_trips() {
        let mut modes = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let d = chaos(seed);
            let text = d.to_toml();
            let s = Scenario::parse(&text, "chaos.toml", "chaos")
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(s, d.scenario, "seed {seed} does not round-trip:\n{text}");
            modes.insert((s.cluster.mode.name(), s.cluster.engine));
            assert!(s.nemesis.is_some());
        }
        assert!(
            modes.len() >= 10,
            "draws cover too few mode/engine pairs: {modes:?}"
        );
    }

    #[test]
    fn a_child_keeps_its_parents_cluster_and_is_a_valid_scenario() {
        let mut hows = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let parent = chaos(seed);
            let child = mutate(&parent, seed, 1000 + seed);
            let text = child.to_toml();
            let s = Scenario::parse(&text, "child.toml", "child")
                .unwrap_or_else(|e| panic!("child of {seed}: {e}\n{text}"));
            assert_eq!(s, child.scenario, "child of {seed} does not round-trip");
            assert_eq!(s.cluster, parent.scenario.cluster);
            assert_eq!(s.name, format!("chaos-{}-of-{seed}", 1000 + seed));
            hows.insert(
                child
                    .draws
                    .iter()
                    .find(|d| d.0 == "mutation")
                    .unwrap()
                    .1
                    .clone(),
            );
            assert_eq!(mutate(&parent, seed, 1000 + seed).scenario, child.scenario);
        }
        assert_eq!(hows.len(), 4, "{hows:?}");
    }

    #[test]
    fn a_seed_draws_the_same_scenario_and_logs_every_draw() {
        let (a, b) = (chaos(7), chaos(7));
        assert_eq!(a.scenario, b.scenario);
        assert_eq!(a.draws, b.draws);
        assert_ne!(chaos(7).scenario, chaos(8).scenario);
        let text = a.to_toml();
        for (what, value) in &a.draws {
            assert!(
                text.contains(&format!("{what}={value}")),
                "{what} not logged"
            );
        }
    }
}
