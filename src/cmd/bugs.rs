//! `odgm-sim bugs`: runs each planted bug against the scenarios that should catch it, seed
//! after seed, until a run fails or the seed budget is spent, and reports per bug whether it
//! was caught, after how many runs, and how long that took.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::folder::DEFAULT_OUT;
use super::process::{exe, sweep_processes, Findings, SweepOptions, SweepRun};
use crate::bugs::Bug;
use crate::rt::Stopwatch;
use crate::scenario::Scenario;

/// Arguments of `odgm-sim bugs`.
#[derive(Debug, Args)]
pub struct BugsArgs {
    /// Most seeds per bug (each seed runs every scenario that should catch the bug).
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// Only these bugs (repeatable); every planted bug if none.
    #[arg(long = "bug", value_enum)]
    pub bugs: Vec<Bug>,
    /// Run these scenario files instead of each bug's own (for checking that a bug escapes
    /// a scenario that cannot see it).
    #[arg(long = "scenario")]
    pub scenarios: Vec<PathBuf>,
    /// The folder holding the shipped scenarios.
    #[arg(long, default_value = "scenarios")]
    pub scenario_dir: PathBuf,
    /// Processes at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where the catching runs write their folders.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What happened to one bug.
#[derive(Debug, Clone, Serialize)]
pub struct Hunt {
    /// The bug.
    pub bug: Bug,
    /// Whether a run failed with the bug on.
    pub caught: bool,
    /// Runs done (up to and including the first failing one).
    pub runs: usize,
    /// Seeds started.
    pub seeds: u64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// The failing run: scenario, seed, what failed, and its replay command.
    pub by: Option<Caught>,
}

/// The run that caught a bug.
#[derive(Debug, Clone, Serialize)]
pub struct Caught {
    /// Scenario file.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// What it found.
    #[serde(flatten)]
    pub found: Findings,
    /// The command that replays it.
    pub replay: String,
    /// One line saying what failed.
    #[serde(skip)]
    pub what: String,
}

/// Hunts one bug over `scenarios`: seeds `0..budget`, every scenario per seed, `jobs` runs
/// at a time; stops after the first batch with a failing run and reports the first failing
/// run in seed order.
pub fn hunt(
    exe: &Path,
    bug: Bug,
    scenarios: &[PathBuf],
    budget: u64,
    jobs: usize,
    out: &Path,
) -> Hunt {
    let started = Stopwatch::start();
    let opts = SweepOptions {
        jobs,
        bugs: vec![bug],
        out: out.to_path_buf(),
        twice: false,
    };
    let all: Vec<(PathBuf, u64)> = (0..budget)
        .flat_map(|seed| scenarios.iter().map(move |s| (s.clone(), seed)))
        .collect();
    let mut done = 0;
    let mut caught: Option<SweepRun> = None;
    for batch in all.chunks(jobs.max(1)) {
        let results = sweep_processes(exe, batch, &opts, &|_| {});
        for r in results {
            if caught.is_none() {
                done += 1;
                if !r.passed() {
                    caught = Some(r);
                }
            }
        }
        if caught.is_some() {
            break;
        }
    }
    let seeds = match &caught {
        Some(r) => r.seed + 1,
        None => budget,
    };
    Hunt {
        bug,
        caught: caught.is_some(),
        runs: done,
        seeds,
        wall_s: started.elapsed_secs(),
        by: caught.map(|r| Caught {
            scenario: r.scenario.display().to_string(),
            seed: r.seed,
            found: r.findings(),
            replay: r.replay(&[bug]),
            what: r.what_failed(),
        }),
    }
}

/// A scenario file's stem (its name in the output).
fn stem(f: &Path) -> String {
    f.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// `odgm-sim bugs`.
pub fn bugs_command(args: &BugsArgs) -> Result<ExitCode, String> {
    let bugs: Vec<Bug> = if args.bugs.is_empty() {
        Bug::all().to_vec()
    } else {
        args.bugs.clone()
    };
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    // Every scenario is checked before anything runs.
    let mut plan = Vec::new();
    for bug in &bugs {
        let files: Vec<PathBuf> = if args.scenarios.is_empty() {
            bug.caught_by()
                .iter()
                .map(|s| args.scenario_dir.join(format!("{s}.toml")))
                .collect()
        } else {
            args.scenarios.clone()
        };
        for f in &files {
            Scenario::load(f).map_err(|e| e.to_string())?;
        }
        plan.push((*bug, files));
    }
    let jobs = super::default_jobs(args.jobs);
    let exe = exe()?;
    println!(
        "bugs: {} planted bug(s), up to {} seed(s) each, {} run(s) at a time",
        bugs.len(),
        args.seeds,
        jobs
    );
    let mut hunts = Vec::new();
    for (bug, files) in &plan {
        let h = hunt(&exe, *bug, files, args.seeds, jobs, &args.out);
        match &h.by {
            Some(by) => println!(
                "  {:<28} caught after {:>3} run(s) ({} seed(s)) in {:>6.1} s by {} seed {}: {}\n  {:<28} replay: {}",
                h.bug,
                h.runs,
                h.seeds,
                h.wall_s,
                stem(Path::new(&by.scenario)),
                by.seed,
                by.what,
                "",
                by.replay
            ),
            None => println!(
                "  {:<28} ESCAPED {} run(s) over {} seed(s) in {:.1} s ({})",
                h.bug,
                h.runs,
                h.seeds,
                h.wall_s,
                files.iter().map(|f| stem(f)).collect::<Vec<_>>().join(", ")
            ),
        }
        hunts.push(h);
    }
    let escaped: Vec<&str> = hunts
        .iter()
        .filter(|h| !h.caught)
        .map(|h| h.bug.name())
        .collect();
    println!(
        "{} of {} bug(s) caught in {:.1} s",
        hunts.len() - escaped.len(),
        hunts.len(),
        hunts.iter().map(|h| h.wall_s).sum::<f64>()
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&hunts).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if escaped.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("escaped: {}", escaped.join(", "));
        Ok(ExitCode::from(1))
    }
}
