//! `odgm-sim chaos`: swarm testing across every mode and engine. Each seed draws a whole
//! scenario (mode, engine, node count, network, workload, nemesis kinds and weights) from
//! the seed, writes it as a scenario file, and runs it with that seed in its own process,
//! until the time budget is spent. Failing runs leave their run folders; `summary.json`
//! lists every run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::command::{sweep_processes, SweepOptions};
use super::run;
use crate::scenario::Scenario;

/// Arguments of `odgm-sim chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Wall-time budget: `90s`, `30m`, `2h` (no new run starts after it is spent).
    #[arg(long, value_parser = parse_budget)]
    pub budget: f64,
    /// Where the generated scenarios, the failing runs' folders and `summary.json` go.
    #[arg(long)]
    pub out: PathBuf,
    /// Run shard I of N (0-based): seeds start+I, start+I+N, start+I+2N, ...
    #[arg(long, value_parser = parse_shard, default_value = "0/1")]
    pub shard: (u64, u64),
    /// The first seed (a nightly job passes something new each night, such as the date).
    #[arg(long, default_value_t = 0)]
    pub start_seed: u64,
    /// Stop after this many runs even if time is left.
    #[arg(long)]
    pub max_runs: Option<u64>,
    /// Processes at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// Parses `90s`, `30m`, `2h` or plain seconds into seconds.
pub fn parse_budget(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("budget {s:?}: expected a number and s, m or h, like 30m"))?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("budget {s:?}: unknown unit {u:?} (s, m or h)")),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("budget {s:?} must be above 0"));
    }
    Ok(n * mult)
}

/// Parses `I/N` with `I < N`.
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("shard {s:?}: expected I/N, like 0/4"))?;
    let (i, n): (u64, u64) = (
        i.trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: {i:?} is not a number"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: {n:?} is not a number"))?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

/// The scenario file (TOML) that `seed` draws. Every draw is a valid scenario.
pub fn random_scenario(seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6f64_676d_6368_616f);
    let mode = *pick(
        &mut rng,
        &[("raft", 4), ("mst", 2), ("eventual", 2), ("none", 1)],
    );
    let engine = *pick(&mut rng, &[("redb", 6), ("memory", 3), ("fjall", 1)]);
    let nodes: u64 = match mode {
        "none" => 1,
        "raft" => *pick(&mut rng, &[(3, 3), (5, 1)]),
        _ => rng.gen_range(2..=4),
    };
    let membership = mode == "raft" && rng.gen_bool(0.3);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "description = \"chaos seed {seed}: {mode} on {engine}, {nodes} node(s)\""
    );
    let _ = writeln!(t, "duration_ms = {}", rng.gen_range(8..=20) * 1000);
    let _ = writeln!(t, "quiet_ms = {}", rng.gen_range(3..=6) * 1000);
    let _ = writeln!(
        t,
        "\n[cluster]\nmode = \"{mode}\"\nengine = \"{engine}\"\nnodes = {nodes}"
    );
    if membership {
        let _ = writeln!(t, "spares = 1");
    }
    if mode == "raft" {
        let every = rng.gen_range(50..=500);
        let _ = writeln!(
            t,
            "\n[cluster.raft]\nsnapshot_every = {every}\nkeep_after_snapshot = {}",
            rng.gen_range(5..=every / 2)
        );
    }
    if nodes > 1 {
        let lo = rng.gen_range(1..=5);
        let _ = writeln!(
            t,
            "\n[network]\nlatency_ms = [{lo}, {}]\nloss = {:.3}\nduplicate = {:.3}",
            lo + rng.gen_range(0..=30),
            rng.gen_range(0.0..0.03),
            rng.gen_range(0.0..0.05)
        );
    }
    let _ = writeln!(
        t,
        "\n[workload]\nclients = {}\nkeys = {}\nrate = {:.1}",
        rng.gen_range(2..=8),
        rng.gen_range(3..=20),
        rng.gen_range(5.0..40.0)
    );
    let _ = writeln!(
        t,
        "\n[workload.mix]\nget = {}\nset = {}\ndelete = {}\ncas = {}\nscan = {}",
        rng.gen_range(0..=50),
        rng.gen_range(10..=60),
        rng.gen_range(0..=15),
        rng.gen_range(0..=20),
        rng.gen_range(0..=10)
    );
    let lo = rng.gen_range(100..=1000);
    let flo = rng.gen_range(200..=1500);
    let _ = writeln!(
        t,
        "\n[nemesis]\ninterval_ms = [{lo}, {}]\nfault_ms = [{flo}, {}]\nswarm = true\n\n[nemesis.kinds]",
        lo + rng.gen_range(0..=2000),
        flo + rng.gen_range(0..=2500)
    );
    // The memory engine keeps nothing across a crash, so a killed node would come back
    // empty: not a fault this stack claims to survive.
    let mut kinds: Vec<&str> = vec!["pause", "clock_skew"];
    if engine != "memory" {
        kinds.push("kill");
    }
    if nodes > 1 {
        kinds.extend(["partition", "one_way", "clog"]);
    }
    if engine == "redb" {
        kinds.extend(["power_loss", "disk_faults"]);
    }
    if mode == "raft" {
        kinds.push("snapshot");
        if membership {
            kinds.push("membership");
        }
    }
    for k in kinds {
        let _ = writeln!(t, "{k} = {:.2}", rng.gen_range(0.2..1.0));
    }
    t
}

/// One chaos run in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosRun {
    /// The seed (it drew the scenario and drives the run).
    pub seed: u64,
    /// Mode, engine and node count drawn.
    pub cluster: String,
    /// Whether every check passed.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
    /// Trace hash.
    pub trace_hash: String,
    /// Real time of the run, ms.
    pub wall_ms: u64,
    /// The run folder (failing runs).
    pub folder: Option<String>,
    /// The command that replays it.
    pub replay: String,
}

/// Everything a chaos session ran.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosSummary {
    /// Shard `I/N`.
    pub shard: String,
    /// The budget, seconds.
    pub budget_s: f64,
    /// Real time spent, seconds.
    pub wall_s: f64,
    /// Runs done.
    pub runs: usize,
    /// Runs that passed.
    pub passed: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Each run.
    pub results: Vec<ChaosRun>,
}

/// `odgm-sim chaos`.
pub fn chaos_command(args: &ChaosArgs) -> Result<ExitCode, String> {
    let (shard, shards) = args.shard;
    let dir = args.out.join("scenarios");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let opts = SweepOptions {
        jobs,
        bugs: Vec::new(),
        out: args.out.clone(),
        twice: false,
    };
    println!(
        "chaos: shard {shard}/{shards}, budget {:.0} s, {jobs} run(s) at a time, out {}",
        args.budget,
        args.out.display()
    );
    let started = run::real_secs();
    let mut results: Vec<ChaosRun> = Vec::new();
    let mut k = 0u64;
    let limit = args.max_runs.unwrap_or(u64::MAX);
    while run::real_secs() - started < args.budget && k < limit {
        let mut batch = Vec::new();
        let mut drawn = Vec::new();
        while batch.len() < jobs.max(1) && k < limit {
            let seed = args.start_seed + shard + k * shards;
            k += 1;
            let text = random_scenario(seed);
            let file = dir.join(format!("chaos-{seed}.toml"));
            std::fs::write(&file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
            // A draw that does not validate is a generator bug: say so and stop.
            let scenario = Scenario::load(&file).map_err(|e| format!("chaos generator: {e}"))?;
            batch.push((file, seed));
            drawn.push(scenario);
        }
        let finished = sweep_processes(&exe, &batch, &opts, &|_| {});
        for (r, scenario) in finished.into_iter().zip(drawn.drain(..)) {
            let cluster = format!(
                "{} {} x{}",
                scenario.cluster.mode.name(),
                scenario.cluster.engine,
                scenario.cluster.nodes
            );
            let passed = r.passed();
            let folder = args.out.join(format!("{}-seed-{}", scenario.name, r.seed));
            let run = ChaosRun {
                seed: r.seed,
                cluster,
                passed,
                failures: match &r.report {
                    Ok(rep) => rep.failures.clone(),
                    Err(e) => vec![format!("run crashed: {}", e.lines().next().unwrap_or(""))],
                },
                trace_hash: r
                    .report
                    .as_ref()
                    .map(|rep| rep.trace_hash.clone())
                    .unwrap_or_default(),
                wall_ms: r.report.as_ref().map_or(0, |rep| rep.wall_ms),
                folder: (!passed && folder.exists()).then(|| folder.display().to_string()),
                replay: r.replay(&[]),
            };
            if passed {
                let _ = std::fs::remove_file(&r.scenario);
            } else {
                println!(
                    "FAIL seed {} ({}): {}\n  replay: {}",
                    run.seed,
                    run.cluster,
                    run.failures.join("; "),
                    run.replay
                );
            }
            results.push(run);
        }
    }
    let wall = run::real_secs() - started;
    let failed = results.iter().filter(|r| !r.passed).count();
    let summary = ChaosSummary {
        shard: format!("{shard}/{shards}"),
        budget_s: args.budget,
        wall_s: wall,
        runs: results.len(),
        passed: results.len() - failed,
        failed,
        results,
    };
    let path = args.out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    print_mix(&summary);
    println!(
        "{} runs: {} passed, {} failed in {:.0} s ({:.1} runs/s); summary: {}",
        summary.runs,
        summary.passed,
        summary.failed,
        wall,
        summary.runs as f64 / wall.max(0.01),
        path.display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs per mode and engine, so a reader sees what the budget covered.
fn print_mix(summary: &ChaosSummary) {
    let mut by: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for r in &summary.results {
        let key = r
            .cluster
            .rsplit_once(' ')
            .map_or(r.cluster.clone(), |(a, _)| a.to_string());
        let e = by.entry(key).or_default();
        e.0 += 1;
        e.1 += usize::from(!r.passed);
    }
    for (k, (n, f)) in by {
        println!("  {k:<16} {n} run(s), {f} failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_is_a_valid_scenario() {
        let mut modes = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let text = random_scenario(seed);
            let s = Scenario::parse(&text, "chaos.toml", "chaos")
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            modes.insert((s.cluster.mode.name(), s.cluster.engine.to_string()));
            assert!(s.nemesis.is_some());
        }
        assert!(
            modes.len() >= 10,
            "draws cover too few mode/engine pairs: {modes:?}"
        );
    }

    #[test]
    fn a_seed_draws_the_same_scenario() {
        assert_eq!(random_scenario(7), random_scenario(7));
        assert_ne!(random_scenario(7), random_scenario(8));
    }

    #[test]
    fn budgets_and_shards_parse() {
        assert_eq!(parse_budget("30m"), Ok(1800.0));
        assert_eq!(parse_budget("90s"), Ok(90.0));
        assert_eq!(parse_budget("2h"), Ok(7200.0));
        assert_eq!(parse_budget("45"), Ok(45.0));
        assert!(parse_budget("0m").is_err());
        assert!(parse_budget("10d").is_err());
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("x").is_err());
    }
}
