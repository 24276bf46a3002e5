//! Child processes: every run of a sweep, a bug hunt, a chaos session or a shrink runs as
//! `odgm-sim run --json` in a process of its own, so no run can see state an earlier one left
//! behind (tokio's `select!` counter, statics): a seed's result is the same alone, in a
//! sweep, or in parallel, and the trace hashes show it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::folder;
use crate::bugs::Bug;
use crate::check::failure::{CheckKind, Failure};
use crate::sim::report::RunReport;

/// This program, to start children of.
pub fn exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))
}

/// The command line of a child `odgm-sim run --json` for one seed.
pub fn child_run(exe: &Path, scenario: &Path, seed: u64, bugs: &[Bug], out: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(scenario)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--json")
        .arg("--out")
        .arg(out);
    for b in bugs {
        cmd.arg("--bug").arg(b.name());
    }
    cmd
}

/// Why a child run gave no report to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildError {
    /// The process could not be started.
    Start {
        /// The command.
        command: String,
        /// Why.
        error: String,
    },
    /// The process ended without printing a report (it crashed, or refused its input).
    NoReport {
        /// How it ended.
        status: String,
        /// The last lines it wrote to standard error.
        stderr_tail: Vec<String>,
    },
    /// Two processes running the same seed gave different trace hashes.
    NotDeterministic {
        /// The first run's trace hash.
        first: String,
        /// The second run's trace hash.
        second: String,
    },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Start { command, error } => write!(f, "cannot start {command}: {error}"),
            ChildError::NoReport {
                status,
                stderr_tail,
            } => {
                write!(f, "the run process ended with {status} and no report")?;
                for l in stderr_tail {
                    write!(f, "\n{l}")?;
                }
                Ok(())
            }
            ChildError::NotDeterministic { first, second } => write!(
                f,
                "not deterministic: trace hashes {first} and {second} in two processes"
            ),
        }
    }
}

/// Runs a child `odgm-sim run --json` and reads its report (its last stdout line).
pub fn child_report(mut cmd: Command) -> Result<RunReport, ChildError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| ChildError::Start {
            command: format!("{cmd:?}"),
            error: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<RunReport>(l).ok())
    {
        Some(r) => Ok(r),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut tail: Vec<String> = stderr.lines().rev().take(12).map(String::from).collect();
            tail.reverse();
            Err(ChildError::NoReport {
                status: out.status.to_string(),
                stderr_tail: tail,
            })
        }
    }
}

/// What a run found, as the summaries of `bugs` and `chaos` record it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Findings {
    /// The checks that failed.
    pub failures: Vec<Failure>,
    /// Why the run gave no report (it crashed), if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct SweepRun {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The seed.
    pub seed: u64,
    /// Its report, or why there is none.
    pub report: Result<RunReport, ChildError>,
}

impl SweepRun {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.report.as_ref().is_ok_and(|r| r.passed)
    }

    /// Whether it failed only for want of a verdict: every failure is the checker's budget
    /// running out, which says nothing about a bug.
    pub fn undecided(&self) -> bool {
        self.report.as_ref().is_ok_and(|r| {
            !r.passed
                && !r.failures.is_empty()
                && r.failures.iter().all(|f| !f.kind().is_violation())
        })
    }

    /// What it found.
    pub fn findings(&self) -> Findings {
        Findings {
            failures: self
                .report
                .as_ref()
                .map(|r| r.failures.clone())
                .unwrap_or_default(),
            error: self.report.as_ref().err().map(|e| e.to_string()),
        }
    }

    /// The kinds of check it failed, in order, each once (empty if it passed or gave no
    /// report).
    pub fn failed_checks(&self) -> Vec<CheckKind> {
        let mut kinds = Vec::new();
        for f in self.report.iter().flat_map(|r| &r.failures) {
            if !kinds.contains(&f.kind()) {
                kinds.push(f.kind());
            }
        }
        kinds
    }

    /// One line saying what went wrong: the first failure of each kind, or why there is no
    /// report.
    pub fn what_failed(&self) -> String {
        match &self.report {
            Ok(rep) => {
                let mut seen = Vec::new();
                let mut parts = Vec::new();
                for f in &rep.failures {
                    if !seen.contains(&f.kind()) {
                        seen.push(f.kind());
                        parts.push(f.to_string());
                    }
                }
                parts.join("; ")
            }
            Err(e) => e.to_string().lines().next().unwrap_or("").to_string(),
        }
    }

    /// The command that replays it, with the planted bugs it ran with (`bugs` when it gave
    /// no report).
    pub fn replay(&self, bugs: &[Bug]) -> String {
        let bugs = self.report.as_ref().map_or(bugs, |r| &r.bugs);
        folder::replay_command(&self.scenario, self.seed, bugs)
    }
}

/// Reruns a failing run with no planted bug on, as a control: a planted bug's catch counts
/// only where this passes (otherwise the unbugged stack fails that seed too).
pub fn control(exe: &Path, failing: &SweepRun, out: &Path) -> SweepRun {
    let opts = SweepOptions {
        jobs: 1,
        bugs: Vec::new(),
        out: out.to_path_buf(),
        twice: false,
        keep: false,
    };
    let runs = [(failing.scenario.clone(), failing.seed)];
    sweep_processes(exe, &runs, &opts, &|_| {})
        .pop()
        .expect("one run in, one out")
}

/// How a sweep runs its seeds.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Processes at once.
    pub jobs: usize,
    /// Planted bugs switched on in every run.
    pub bugs: Vec<Bug>,
    /// Where failing runs write their folders.
    pub out: PathBuf,
    /// Run each seed twice (two processes) and fail it if the trace hashes differ.
    pub twice: bool,
    /// Every run writes its folder, passing or not (`run --keep`).
    pub keep: bool,
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
                let cmd = || {
                    let mut c = child_run(exe, scenario, *seed, bugs, out);
                    if opts.keep {
                        c.arg("--keep");
                    }
                    c
                };
                let mut report = child_report(cmd());
                if let (true, Ok(first)) = (opts.twice, &report) {
                    match child_report(cmd()) {
                        Ok(second) if second.trace_hash == first.trace_hash => {}
                        Ok(second) => {
                            report = Err(ChildError::NotDeterministic {
                                first: first.trace_hash.clone(),
                                second: second.trace_hash,
                            })
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
