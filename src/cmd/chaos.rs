//! `odgm-sim chaos`: swarm testing across every mode and engine. Each seed draws a whole
//! scenario (mode, engine, node count, network, workload, nemesis kinds and weights) from
//! the seed, writes it as a scenario file, and runs it with that seed in its own process,
//! until the time budget is spent. Failing runs leave their run folders; `summary.json`
//! lists every run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::coverage::Coverage;
use super::guided::Guide;
use super::process::{exe, sweep_processes, Findings, SweepOptions};
use crate::bugs::Bug;
use crate::check::failure::{CheckKind, Failure};
use crate::coverage::Corner;
use crate::probe::EventCounts;
use crate::rt::Stopwatch;
use crate::scenario::generate::{self, Drawn};

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
    /// Hunt this planted bug instead: run drawn scenarios that reach its code with the bug on
    /// until one fails and the same seed passes with the bug off (a control), or the budget
    /// (or `--max-runs`, default 500) is spent; exits 1 if it escaped.
    #[arg(long, value_name = "NAME", value_enum)]
    pub bug: Option<Bug>,
    /// Write the coverage table (each corner, the runs that reached it, the first of them)
    /// to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub coverage: Option<PathBuf>,
    /// Probe-guided: keep the scenarios whose runs reached rare corners and spend half the
    /// runs on children of them (see `cmd::guided`); the other half draw fresh scenarios.
    #[arg(long)]
    pub guided: bool,
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

/// One chaos run in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosRun {
    /// The seed (it drew the scenario and drives the run).
    pub seed: u64,
    /// Mode, engine and node count drawn.
    pub cluster: String,
    /// Whether every check passed.
    pub passed: bool,
    /// What it found.
    #[serde(flatten)]
    pub found: Findings,
    /// Trace hash.
    pub trace_hash: String,
    /// Real time of the run, ms.
    pub wall_ms: u64,
    /// Real time of its linearizability check, ms.
    pub check_ms: u64,
    /// What the Raft nodes' storage did, counted (Raft runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_events: Option<EventCounts>,
    /// The corners of the stack it reached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corners: Vec<Corner>,
    /// Guided chaos: the seed of the run whose scenario this run's was mutated from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
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
    /// Failing runs by the checks they failed (a run counts once per kind).
    pub failed_by_check: BTreeMap<CheckKind, usize>,
    /// The linearizability check's real time over the runs: 99th percentile and slowest, ms.
    pub check_ms_p99: u64,
    /// The slowest linearizability check, ms.
    pub check_ms_max: u64,
    /// The seed of the slowest check.
    pub slowest_check_seed: Option<u64>,
    /// Each run.
    pub results: Vec<ChaosRun>,
}

/// `odgm-sim chaos`.
pub fn chaos_command(args: &ChaosArgs) -> Result<ExitCode, String> {
    if let Some(bug) = args.bug {
        return hunt_one(args, bug);
    }
    let (shard, shards) = args.shard;
    let dir = args.out.join("scenarios");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let jobs = super::default_jobs(args.jobs);
    let exe = exe()?;
    let opts = SweepOptions {
        jobs,
        bugs: Vec::new(),
        out: args.out.clone(),
        twice: false,
        keep: false,
    };
    println!(
        "chaos{}: shard {shard}/{shards}, budget {:.0} s, {jobs} run(s) at a time, out {}",
        if args.guided { " --guided" } else { "" },
        args.budget,
        args.out.display()
    );
    let mut guide = Guide::new(args.start_seed + shard);
    let started = Stopwatch::start();
    let mut results: Vec<ChaosRun> = Vec::new();
    let mut k = 0u64;
    let limit = args.max_runs.unwrap_or(u64::MAX);
    while started.elapsed_secs() < args.budget && k < limit {
        let mut batch = Vec::new();
        let mut drawn: Vec<(Drawn, Option<u64>)> = Vec::new();
        while batch.len() < jobs && k < limit {
            let seed = args.start_seed + shard + k * shards;
            k += 1;
            let (d, parent) = if args.guided {
                guide.draw(seed)
            } else {
                (generate::chaos(seed), None)
            };
            let file = dir.join(format!("{}.toml", d.scenario.name));
            std::fs::write(&file, d.to_toml()).map_err(|e| format!("{}: {e}", file.display()))?;
            batch.push((file, seed));
            drawn.push((d, parent));
        }
        let finished = sweep_processes(&exe, &batch, &opts, &|_| {});
        for (r, (d, parent)) in finished.into_iter().zip(drawn.drain(..)) {
            let corners: Vec<Corner> = r
                .report
                .as_ref()
                .map(|rep| rep.corners.clone())
                .unwrap_or_default();
            let scenario = d.scenario.clone();
            if args.guided {
                guide.learn(d, r.seed, &corners);
            }
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
                found: r.findings(),
                trace_hash: r
                    .report
                    .as_ref()
                    .map(|rep| rep.trace_hash.clone())
                    .unwrap_or_default(),
                wall_ms: r.report.as_ref().map_or(0, |rep| rep.wall_ms),
                check_ms: r.report.as_ref().map_or(0, |rep| rep.check_ms),
                raft_events: r.report.as_ref().ok().and_then(|rep| rep.raft_events),
                corners,
                parent,
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
                    r.what_failed(),
                    run.replay
                );
            }
            results.push(run);
        }
    }
    let wall = started.elapsed_secs();
    let failed = results.iter().filter(|r| !r.passed).count();
    let mut failed_by_check: BTreeMap<CheckKind, usize> = BTreeMap::new();
    for r in &results {
        let kinds: std::collections::BTreeSet<CheckKind> =
            r.found.failures.iter().map(Failure::kind).collect();
        for k in kinds {
            *failed_by_check.entry(k).or_default() += 1;
        }
    }
    let mut check_times: Vec<u64> = results.iter().map(|r| r.check_ms).collect();
    check_times.sort_unstable();
    let p99 = check_times
        .get((check_times.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0);
    let slowest = results
        .iter()
        .max_by_key(|r| (r.check_ms, std::cmp::Reverse(r.seed)));
    let summary = ChaosSummary {
        check_ms_p99: p99,
        check_ms_max: slowest.map_or(0, |r| r.check_ms),
        slowest_check_seed: slowest.map(|r| r.seed),
        shard: format!("{shard}/{shards}"),
        budget_s: args.budget,
        wall_s: wall,
        runs: results.len(),
        passed: results.len() - failed,
        failed,
        failed_by_check,
        results,
    };
    let path = args.out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    print_mix(&summary);
    print_reached(&summary.results);
    let mut coverage = Coverage::default();
    for r in &summary.results {
        coverage.add(&format!("chaos-{}", r.seed), r.seed, &r.corners);
    }
    if args.guided {
        let children = summary
            .results
            .iter()
            .filter(|r| r.parent.is_some())
            .count();
        println!(
            "  guided: {} parent(s) kept, {children} of {} run(s) were their children",
            guide.parents(),
            summary.runs
        );
    }
    print!("{}", coverage.render());
    if let Some(path) = &args.coverage {
        coverage.write(path)?;
    }
    for (kind, n) in &summary.failed_by_check {
        println!("  failed {kind}: {n} run(s)");
    }
    println!(
        "  linearizability check time: p99 {} ms, slowest {} ms (seed {})",
        summary.check_ms_p99,
        summary.check_ms_max,
        summary
            .slowest_check_seed
            .map_or_else(|| "-".to_string(), |s| s.to_string())
    );
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

/// `chaos --bug NAME`: the generic hunt of one planted bug (see [`super::bugs::hunt_generic`]).
fn hunt_one(args: &ChaosArgs, bug: Bug) -> Result<ExitCode, String> {
    if args.shard != (0, 1) {
        return Err("--bug hunts from --start-seed on; it takes no --shard".into());
    }
    let jobs = super::default_jobs(args.jobs);
    let runs = args.max_runs.unwrap_or(500);
    println!(
        "chaos --bug {bug}: up to {runs} run(s) that reach it from seed {}, budget {:.0} s, {jobs} at a time",
        args.start_seed, args.budget
    );
    let h = super::bugs::hunt_generic(
        &exe()?,
        bug,
        args.start_seed,
        (runs, args.budget),
        (jobs, args.guided),
        &args.out,
    )?;
    super::bugs::print_hunt(&h, &[]);
    Ok(if h.caught {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How many Raft runs went through each storage path, so a reader sees what the budget
/// reached.
fn print_reached(results: &[ChaosRun]) {
    let counts: Vec<EventCounts> = results.iter().filter_map(|r| r.raft_events).collect();
    let runs = |f: fn(&EventCounts) -> u64| counts.iter().filter(|c| f(c) > 0).count();
    println!(
        "  Raft runs {}: restarted a node {}, truncated a log {}, purged a log {}, built a snapshot {}, installed one {}",
        counts.len(),
        runs(|c| c.restarts),
        runs(|c| c.truncations),
        runs(|c| c.purges),
        runs(|c| c.snapshots_built),
        runs(|c| c.snapshots_installed),
    );
    let (reads, rounds) = counts.iter().fold((0, 0), |(r, n), c| {
        (r + c.reads_confirmed, n + c.read_rounds)
    });
    if rounds > 0 {
        println!(
            "  linearizable reads {reads} confirmed in {rounds} leadership rounds ({:.2} per round)",
            reads as f64 / rounds as f64
        );
    }
}

/// Runs per mode and engine, so a reader sees what the budget covered.
fn print_mix(summary: &ChaosSummary) {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
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
