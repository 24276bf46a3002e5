//! `odgm-sim run` and `odgm-sim sweep`.
//!
//! `run` runs one seed in this process. `sweep` runs every seed in its own child process
//! (`odgm-sim run --json`), `--jobs` at a time, so no seed can see state another left behind
//! (tokio's `select!` counter, statics): a seed's result is the same alone, in a sweep, or in
//! parallel, and the trace hashes show it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Args;

use super::run::{self, RunOptions, RunReport};
use crate::scenario::Scenario;

/// Where failing runs are written unless `--out` says otherwise.
pub const DEFAULT_OUT: &str = "target/odgm-sim/runs";

/// Arguments of `odgm-sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Switch on a planted bug (repeatable): lww-remote-wins, eventual-no-repair,
    /// disk-sync-lies, raft-follower-local-reads.
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Where to write the run's folder (written when the run fails, or always with
    /// `--keep`).
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// Write the run's folder even when it passes.
    #[arg(long)]
    pub keep: bool,
    /// Print the report as one JSON line (for sweeps and scripts).
    #[arg(long)]
    pub json: bool,
    /// Write the whole trace to this file.
    #[arg(long, value_name = "FILE")]
    pub trace_file: Option<PathBuf>,
    /// The stack's tracing events at this level and above go into the trace.
    #[arg(long, default_value = "warn")]
    pub trace_level: tracing::Level,
    /// Run the seed twice, each in its own process, and report the first trace line where
    /// they differ.
    #[arg(long)]
    pub check_determinism: bool,
}

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
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
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

fn check_bugs(bugs: &[String]) -> Result<(), String> {
    for b in bugs {
        if !crate::bugs::is_known(b) {
            return Err(format!(
                "unknown bug {b:?} (known: {})",
                crate::bugs::names().join(", ")
            ));
        }
    }
    Ok(())
}

/// `odgm-sim run`.
pub fn run_command(args: &RunArgs) -> Result<ExitCode, String> {
    check_bugs(&args.bugs)?;
    let scenario = Scenario::load(&args.scenario).map_err(|e| e.to_string())?;
    if args.check_determinism {
        return check_determinism(args);
    }
    if !args.json {
        println!(
            "scenario {} ({}) seed {}",
            scenario.name,
            args.scenario.display(),
            args.seed
        );
    }
    let mut opts = RunOptions::seed(args.seed);
    opts.bugs = args.bugs.clone();
    opts.trace_level = args.trace_level;
    if args.trace_file.is_some() {
        opts.trace_limit = usize::MAX;
    }
    let out = run::run_catching(&scenario, &opts);
    if let Some(f) = &args.trace_file {
        let mut text = out.trace.lines.join("\n");
        text.push('\n');
        std::fs::write(f, text).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    let folder = if !out.report.passed || args.keep {
        Some(
            run::write_run_dir(&args.out, &scenario, &args.scenario, &out)
                .map_err(|e| format!("{}: {e}", args.out.display()))?,
        )
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out.report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", out.report.summary());
        if let Some(v) = out.report.linearizability {
            println!("  linearizability: {v:?}");
        }
        if out.report.snapshots_installed > 0 {
            println!(
                "  snapshots installed from a leader: {}",
                out.report.snapshots_installed
            );
        }
        if let Some(ms) = out.report.converged_after_ms {
            println!("  converged {ms} ms after the heal");
        }
        for f in &out.report.failures {
            println!("  failed: {f}");
        }
        if let Some(dir) = &folder {
            println!("  run folder: {}", dir.display());
        }
        if !out.report.passed {
            println!(
                "  replay: {}",
                run::replay_command(&args.scenario, args.seed, &out.report.bugs)
            );
        }
    }
    Ok(if out.report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))
}

/// Runs the seed twice in separate processes and compares their traces line by line.
fn check_determinism(args: &RunArgs) -> Result<ExitCode, String> {
    let exe = exe()?;
    let dir = std::env::temp_dir().join(format!(
        "odgm-sim-determinism-{}-{}",
        std::process::id(),
        args.seed
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut traces = Vec::new();
    let mut reports = Vec::new();
    for i in 0..2 {
        let file = dir.join(format!("trace-{i}.log"));
        let out = dir.join(format!("runs-{i}"));
        let mut cmd = child_run(&exe, &args.scenario, args.seed, &args.bugs, &out);
        cmd.arg("--trace-file")
            .arg(&file)
            .arg("--trace-level")
            .arg(args.trace_level.as_str());
        let report = child_report(cmd)?;
        traces.push(std::fs::read_to_string(&file).map_err(|e| e.to_string())?);
        reports.push(report);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (&traces[0], &traces[1]);
    let diff = first_difference(a, b);
    match diff {
        None if reports[0].trace_hash == reports[1].trace_hash => {
            println!(
                "deterministic: {} seed {} ran twice in separate processes, {} trace lines, hash {} both times",
                reports[0].scenario,
                args.seed,
                a.lines().count(),
                reports[0].trace_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!(
                "NOT deterministic: identical trace lines but hashes {} and {}",
                reports[0].trace_hash, reports[1].trace_hash
            );
            Ok(ExitCode::from(1))
        }
        Some((line, x, y)) => {
            println!(
                "NOT deterministic: {} seed {}: the traces first differ at line {line}:\n  first run:  {x}\n  second run: {y}",
                reports[0].scenario, args.seed
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The first line (1-based) where two traces differ, with both lines (`<end of trace>` for
/// the shorter one); `None` if they are identical.
pub fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let (mut la, mut lb) = (a.lines(), b.lines());
    let mut n = 0;
    loop {
        n += 1;
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                let show = |l: Option<&str>| l.unwrap_or("<end of trace>").to_string();
                return Some((n, show(x), show(y)));
            }
        }
    }
}

/// The command line of a child `odgm-sim run --json` for one seed.
pub(crate) fn child_run(
    exe: &Path,
    scenario: &Path,
    seed: u64,
    bugs: &[String],
    out: &Path,
) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(scenario)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--json")
        .arg("--out")
        .arg(out);
    for b in bugs {
        cmd.arg("--bug").arg(b);
    }
    cmd
}

/// Runs a child `odgm-sim run --json` and reads its report (its last stdout line).
pub(crate) fn child_report(mut cmd: Command) -> Result<RunReport, String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<RunReport>(l).ok())
    {
        Some(r) => Ok(r),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "the run process ended with {} and no report:\n{}",
                out.status,
                tail.join("\n")
            ))
        }
    }
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct SweepRun {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The seed.
    pub seed: u64,
    /// Its report, or why there is none (the process crashed).
    pub report: Result<RunReport, String>,
}

impl SweepRun {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.report.as_ref().is_ok_and(|r| r.passed)
    }

    /// The command that replays it.
    pub fn replay(&self, bugs: &[String]) -> String {
        run::replay_command(&self.scenario, self.seed, bugs)
    }
}

/// How a sweep runs its seeds.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Processes at once.
    pub jobs: usize,
    /// Planted bugs switched on in every run.
    pub bugs: Vec<String>,
    /// Where failing runs write their folders.
    pub out: PathBuf,
    /// Run each seed twice (two processes) and fail it if the trace hashes differ.
    pub twice: bool,
}

/// Runs `(scenario, seed)` pairs, each in its own process of `exe`, `jobs` at a time; calls
/// `progress` after each. Results come back in the order of `runs`.
pub fn sweep_processes(
    exe: &Path,
    runs: &[(PathBuf, u64)],
    opts: &SweepOptions,
    progress: &(dyn Fn(&SweepRun) + Sync),
) -> Vec<SweepRun> {
    let (jobs, bugs, out) = (opts.jobs, &opts.bugs, &opts.out);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SweepRun>>> = Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((scenario, seed)) = runs.get(i) else {
                    return;
                };
                let cmd = || child_run(exe, scenario, *seed, bugs, out);
                let mut report = child_report(cmd());
                if let (true, Ok(first)) = (opts.twice, &report) {
                    match child_report(cmd()) {
                        Ok(second) if second.trace_hash == first.trace_hash => {}
                        Ok(second) => {
                            report = Err(format!(
                                "not deterministic: trace hashes {} and {} in two processes \
                                 (find the first difference with `odgm-sim run {} --seed {seed} \
                                 --check-determinism`)",
                                first.trace_hash,
                                second.trace_hash,
                                scenario.display()
                            ))
                        }
                        Err(e) => report = Err(e),
                    }
                }
                let r = SweepRun {
                    scenario: scenario.clone(),
                    seed: *seed,
                    report,
                };
                progress(&r);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
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
    check_bugs(&args.bugs)?;
    let files = scenario_files(&args.scenarios)?;
    // Validate every file before anything runs.
    for f in &files {
        Scenario::load(f).map_err(|e| e.to_string())?;
    }
    let runs: Vec<(PathBuf, u64)> = files
        .iter()
        .flat_map(|f| (args.seeds.start..args.seeds.end).map(move |s| (f.clone(), s)))
        .collect();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
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
    let started = run::real_secs();
    let opts = SweepOptions {
        jobs,
        bugs: args.bugs.clone(),
        out: args.out.clone(),
        twice: args.check_determinism,
    };
    let results = sweep_processes(&exe()?, &runs, &opts, &|r| {
        if !r.passed() {
            let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
            bar.println(format!(
                "FAIL {} seed {}: {}",
                r.scenario.display(),
                r.seed,
                match &r.report {
                    Ok(rep) => rep.failures.join("; "),
                    Err(e) => e.lines().next().unwrap_or("").to_string(),
                }
            ));
            bar.set_message(format!("{n} failed"));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let wall = (run::real_secs() - started).max(0.01);
    if let Some(path) = &args.reports {
        let lines: Vec<String> = results
            .iter()
            .map(|r| match &r.report {
                Ok(rep) => serde_json::to_string(rep).unwrap_or_default(),
                Err(e) => serde_json::json!({
                    "scenario": r.scenario.display().to_string(),
                    "seed": r.seed,
                    "error": e,
                })
                .to_string(),
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    print_summary(&files, &results, wall, jobs);
    let failures: Vec<&SweepRun> = results.iter().filter(|r| !r.passed()).collect();
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{} failing run(s); replay each with:", failures.len());
    for r in failures {
        let bugs = r
            .report
            .as_ref()
            .map(|rep| rep.bugs.clone())
            .unwrap_or_else(|_| args.bugs.clone());
        println!("  {}", r.replay(&bugs));
        if let Err(e) = &r.report {
            for l in e.lines().take(6) {
                println!("      {l}");
            }
        }
    }
    Ok(ExitCode::from(1))
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
            let ops: u64 = mine
                .iter()
                .map(|r| r.ops.ok + r.ops.fail + r.ops.info)
                .sum();
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
    fn first_difference_finds_the_first_differing_line() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(
            first_difference("a\nb\nc", "a\nx\nc"),
            Some((2, "b".into(), "x".into()))
        );
        assert_eq!(
            first_difference("a\nb", "a"),
            Some((2, "b".into(), "<end of trace>".into()))
        );
    }

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
