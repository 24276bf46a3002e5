//! `odgm-sim run`: one scenario with one seed, in this process. A failing run (or any run
//! with `--keep`) writes its folder ([`super::folder`]); `--check-determinism` runs the seed
//! twice in two child processes and names the first trace line where they differ.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::folder::{self, DEFAULT_OUT};
use super::process::{child_report, child_run, exe};
use crate::bugs::Bug;
use crate::check::failure::{CheckKind, Failure};
use crate::scenario::Scenario;
use crate::sim::run::{self, RunOptions};

/// Arguments of `odgm-sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Switch on a planted bug (repeatable).
    #[arg(long = "bug", value_name = "NAME", value_enum)]
    pub bugs: Vec<Bug>,
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

/// `odgm-sim run`.
pub fn run_command(args: &RunArgs) -> Result<ExitCode, String> {
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
        std::fs::write(f, &out.trace.text).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    let folder = if !out.report.passed || args.keep {
        Some(
            folder::write_run_dir(&args.out, &scenario, &args.scenario, &out)
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
        if let Some(c) = out.report.raft_events.filter(|c| c.read_rounds > 0) {
            println!(
                "  linearizable reads: {} confirmed in {} leadership rounds",
                c.reads_confirmed, c.read_rounds
            );
        }
        if let Some(ms) = out.report.converged_after_ms {
            println!("  converged {ms} ms after the heal");
        }
        for line in failure_lines(&out.report.failures) {
            println!("  failed: {line}");
        }
        if let Some(dir) = &folder {
            println!("  run folder: {}", dir.display());
        }
        if !out.report.passed {
            println!(
                "  replay: {}",
                folder::replay_command(&args.scenario, args.seed, &out.report.bugs)
            );
        }
    }
    Ok(if out.report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How many failures of one kind a run prints (the report lists them all).
const SHOWN_PER_KIND: usize = 5;

/// The failures as lines to print: up to [`SHOWN_PER_KIND`] of each kind, then how many
/// more.
pub fn failure_lines(failures: &[Failure]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut shown: std::collections::BTreeMap<CheckKind, usize> = Default::default();
    for f in failures {
        let n = shown.entry(f.kind()).or_default();
        *n += 1;
        if *n <= SHOWN_PER_KIND {
            lines.push(f.to_string());
        }
    }
    for (kind, n) in shown {
        if n > SHOWN_PER_KIND {
            lines.push(format!(
                "{kind}: {} more (report.json lists them all)",
                n - SHOWN_PER_KIND
            ));
        }
    }
    lines
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
        let report = child_report(cmd).map_err(|e| e.to_string())?;
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
}
