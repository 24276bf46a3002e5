//! `odgm-sim sweep`: every (scenario, seed) in its own `odgm-sim run` process, `--jobs` at
//! a time, with a progress bar, the failures as they happen, a summary and the replay
//! command of every failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;

use super::coverage::Coverage;
use super::folder::DEFAULT_OUT;
use super::process::{exe, sweep_processes, ChildError, SweepOptions, SweepRun};
use crate::bugs::Bug;
use crate::rt::Stopwatch;
use crate::scenario::Scenario;
use crate::sim::report::RunReport;

/// Arguments of `odgm-sim sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Scenario files (or folders of them).
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Seeds `A..B` (B excluded) or one seed.
    #[arg(long, default_value = "0..20")]
    pub seeds: SeedRange,
    /// Processes at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Switch on a planted bug in every run (repeatable).
    #[arg(long = "bug", value_name = "NAME", value_enum)]
    pub bugs: Vec<Bug>,
    /// Where failing runs write their folders.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Write every run's report to this file as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub reports: Option<PathBuf>,
    /// Run every seed twice, in two processes, and fail it if the trace hashes differ.
    #[arg(long)]
    pub check_determinism: bool,
    /// Write the coverage table (each corner, the runs that reached it, the first of them)
    /// to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub coverage: Option<PathBuf>,
}

/// A range of seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    /// First seed.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

impl std::str::FromStr for SeedRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|e| format!("{t:?} is not a seed: {e}"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (start, end) = (num(a)?, num(b)?);
                if end <= start {
                    return Err(format!("empty seed range {s}"));
                }
                Ok(SeedRange { start, end })
            }
            None => {
                let n = num(s)?;
                Ok(SeedRange {
                    start: n,
                    end: n + 1,
                })
            }
        }
    }
}

/// Expands folders into the `.toml` files they hold (sorted).
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `odgm-sim sweep`.
pub fn sweep_command(args: &SweepArgs) -> Result<ExitCode, String> {
    let files = scenario_files(&args.scenarios)?;
    // Validate every file before anything runs.
    for f in &files {
        Scenario::load(f).map_err(|e| e.to_string())?;
    }
    let runs: Vec<(PathBuf, u64)> = files
        .iter()
        .flat_map(|f| (args.seeds.start..args.seeds.end).map(move |s| (f.clone(), s)))
        .collect();
    let jobs = super::default_jobs(args.jobs);
    println!(
        "sweep: {} scenario(s) x seeds {}..{} = {} runs, {} at a time{}",
        files.len(),
        args.seeds.start,
        args.seeds.end,
        runs.len(),
        jobs,
        if args.check_determinism {
            ", each run twice in separate processes to compare trace hashes"
        } else {
            ""
        }
    );
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(runs.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs, {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let failed = AtomicUsize::new(0);
    let started = Stopwatch::start();
    let opts = SweepOptions {
        jobs,
        bugs: args.bugs.clone(),
        out: args.out.clone(),
        twice: args.check_determinism,
        keep: false,
    };
    let results = sweep_processes(&exe()?, &runs, &opts, &|r| {
        if !r.passed() {
            let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
            bar.println(format!(
                "FAIL {} seed {}: {}",
                r.scenario.display(),
                r.seed,
                r.what_failed()
            ));
            bar.set_message(format!("{n} failed"));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let wall = started.elapsed_secs().max(0.01);
    if let Some(path) = &args.reports {
        let lines: Vec<String> = results
            .iter()
            .map(|r| match &r.report {
                Ok(rep) => serde_json::to_string(rep).unwrap_or_default(),
                Err(e) => serde_json::json!({
                    "scenario": r.scenario.display().to_string(),
                    "seed": r.seed,
                    "error": e.to_string(),
                })
                .to_string(),
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let coverage = coverage_of(&results);
    print!("{}", coverage.render());
    if let Some(path) = &args.coverage {
        coverage.write(path)?;
    }
    print_summary(&files, &results, wall, jobs);
    let failures: Vec<&SweepRun> = results.iter().filter(|r| !r.passed()).collect();
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{} failing run(s); replay each with:", failures.len());
    for r in failures {
        println!("  {}", r.replay(&args.bugs));
        match &r.report {
            Err(ChildError::NotDeterministic { .. }) => println!(
                "      find the first difference with: odgm-sim run {} --seed {} --check-determinism",
                r.scenario.display(),
                r.seed
            ),
            Err(e) => {
                for l in e.to_string().lines().take(6) {
                    println!("      {l}");
                }
            }
            Ok(_) => {}
        }
    }
    Ok(ExitCode::from(1))
}

/// The coverage table of a sweep's runs, in the order they were listed.
pub fn coverage_of(results: &[SweepRun]) -> Coverage {
    let mut cov = Coverage::default();
    for r in results {
        if let Ok(rep) = &r.report {
            cov.add(&rep.scenario, rep.seed, &rep.corners);
        }
    }
    cov
}

fn print_summary(files: &[PathBuf], results: &[SweepRun], wall: f64, jobs: usize) {
    let passed = results.iter().filter(|r| r.passed()).count();
    let sim_s: f64 = results
        .iter()
        .filter_map(|r| r.report.as_ref().ok())
        .map(|r| r.simulated_ms as f64 / 1000.0)
        .sum();
    println!(
        "{} runs: {} passed, {} failed in {:.1} s: {:.1} seeds/s, {:.0} simulated s per wall s ({} jobs)",
        results.len(),
        passed,
        results.len() - passed,
        wall,
        results.len() as f64 / wall,
        sim_s / wall,
        jobs
    );
    if files.len() > 1 {
        for f in files {
            let mine: Vec<&RunReport> = results
                .iter()
                .filter(|r| &r.scenario == f)
                .filter_map(|r| r.report.as_ref().ok())
                .collect();
            let ok = mine.iter().filter(|r| r.passed).count();
            let total = results.iter().filter(|r| &r.scenario == f).count();
            let ops: u64 = mine.iter().map(|r| r.ops.total()).sum();
            let wall_ms: u64 = mine.iter().map(|r| r.wall_ms).sum();
            println!(
                "  {:<40} {ok}/{total} passed, {:.0} ops/run, {:.0} ms/run in its process",
                f.display().to_string(),
                ops as f64 / mine.len().max(1) as f64,
                wall_ms as f64 / mine.len().max(1) as f64
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse() {
        assert_eq!(
            "3..7".parse::<SeedRange>(),
            Ok(SeedRange { start: 3, end: 7 })
        );
        assert_eq!("5".parse::<SeedRange>(), Ok(SeedRange { start: 5, end: 6 }));
        assert!("7..3".parse::<SeedRange>().is_err());
        assert!("x..3".parse::<SeedRange>().is_err());
    }
}
