//! `odgm-sim shrink RUN_DIR`: turns a failing run into the smallest scenario that still fails
//! the same check with the same seed. It re-runs candidates (each in its own process) and
//! keeps a change only if the candidate still fails with the same kind of failure:
//!
//! 1. the random nemesis: drop it, else drop its fault kinds one at a time;
//! 2. the schedule: delta debugging (ddmin) over its entries, skipping candidates that do
//!    not validate (a `heal` without its partition, a `restart` without its crash);
//! 3. the run: halve the fault phase (dropping entries past its end), the quiet phase, the
//!    clients, the rate and the key space, while the failure holds;
//! 4. the cluster: fewer nodes and spares.
//!
//! It writes the result as a scenario file (with the planted bugs the run had) and prints
//! the command that replays it. Unlike a bare seed, a small scenario keeps reproducing the
//! failure after code changes that shift the random draws.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::command::{child_report, child_run};
use super::run::{self, RunReport};
use crate::scenario::Scenario;

/// Arguments of `odgm-sim shrink`.
#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// A failing run's folder (it holds `scenario.toml`, `seed` and `report.json`).
    pub run_dir: PathBuf,
    /// Where the minimal scenario goes (default: RUN_DIR/minimal.toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most candidate runs.
    #[arg(long, default_value_t = 400)]
    pub max_runs: usize,
}

/// The kind of a failure line: what comes before its first colon ("linearizability",
/// "convergence", "state machine safety", "panic", ...).
pub fn failure_kind(line: &str) -> &str {
    line.split(':').next().unwrap_or(line).trim()
}

/// How big a scenario is, as the shrinker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Schedule entries.
    pub schedule: usize,
    /// Nemesis fault kinds switched on (0: no nemesis).
    pub nemesis_kinds: usize,
    /// Fault phase, ms.
    pub duration_ms: u64,
    /// Clients.
    pub clients: u64,
    /// Nodes.
    pub nodes: u64,
}

impl Size {
    /// The size of `s`.
    pub fn of(s: &Scenario) -> Size {
        Size {
            schedule: s.schedule.len(),
            nemesis_kinds: s
                .nemesis
                .as_ref()
                .map_or(0, |n| n.kinds.values().filter(|w| **w > 0.0).count()),
            duration_ms: s.duration_ms,
            clients: s.workload.clients,
            nodes: s.cluster.nodes,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scheduled fault(s), {} nemesis kind(s), {} ms of faults, {} client(s), {} node(s)",
            self.schedule, self.nemesis_kinds, self.duration_ms, self.clients, self.nodes
        )
    }
}

struct Shrinker {
    exe: PathBuf,
    work: PathBuf,
    seed: u64,
    kind: String,
    runs: usize,
    max_runs: usize,
}

impl Shrinker {
    /// Whether `s` validates and still fails with the same kind of failure.
    fn fails(&mut self, s: &Scenario) -> bool {
        if self.runs >= self.max_runs {
            return false;
        }
        let text = s.to_toml();
        let file = self.work.join(format!("candidate-{}.toml", self.runs));
        if std::fs::write(&file, &text).is_err() || Scenario::load(&file).is_err() {
            return false;
        }
        self.runs += 1;
        let report = child_report(child_run(&self.exe, &file, self.seed, &[], &self.work));
        let _ = std::fs::remove_file(&file);
        matches!(report, Ok(RunReport { passed: false, ref failures, .. })
            if failures.iter().any(|f| failure_kind(f) == self.kind))
    }

    /// Keeps `candidate` as the new best if it still fails.
    fn try_keep(&mut self, best: &mut Scenario, candidate: Scenario) -> bool {
        if self.fails(&candidate) {
            *best = candidate;
            true
        } else {
            false
        }
    }

    fn nemesis(&mut self, best: &mut Scenario) {
        let Some(n) = best.nemesis.clone() else {
            return;
        };
        let mut c = best.clone();
        c.nemesis = None;
        if self.try_keep(best, c) {
            return;
        }
        for kind in n.kinds.keys() {
            let mut c = best.clone();
            if let Some(n) = c.nemesis.as_mut() {
                n.kinds.remove(kind);
                if n.kinds.values().all(|w| *w <= 0.0) {
                    continue;
                }
            }
            self.try_keep(best, c);
        }
    }

    /// Zeller's ddmin over the schedule's entries: drop one of `n` chunks at a time; on
    /// success coarsen, otherwise refine, until single entries cannot be dropped.
    fn schedule(&mut self, best: &mut Scenario) {
        let mut parts = 2usize;
        while !best.schedule.is_empty() && self.runs < self.max_runs {
            let len = best.schedule.len();
            let n = parts.min(len);
            let chunk = len.div_ceil(n);
            let mut reduced = false;
            for i in 0..n {
                let (a, b) = (i * chunk, ((i + 1) * chunk).min(len));
                if a >= b {
                    continue;
                }
                let mut c = best.clone();
                c.schedule.drain(a..b);
                if self.try_keep(best, c) {
                    reduced = true;
                    break;
                }
            }
            if reduced {
                parts = (n - 1).max(2);
            } else if n >= len {
                return;
            } else {
                parts = (n * 2).min(len);
            }
        }
    }

    fn run_length(&mut self, best: &mut Scenario) {
        loop {
            let mut changed = false;
            let half = (best.duration_ms / 2).max(1000);
            if half < best.duration_ms {
                let mut c = best.clone();
                c.duration_ms = half;
                c.schedule.retain(|f| f.at_ms < half);
                changed |= self.try_keep(best, c);
            }
            let quiet = (best.quiet_ms / 2).max(1000);
            if quiet < best.quiet_ms {
                let mut c = best.clone();
                c.quiet_ms = quiet;
                changed |= self.try_keep(best, c);
            }
            if best.workload.clients > 1 {
                let mut c = best.clone();
                c.workload.clients = (c.workload.clients / 2).max(1);
                changed |= self.try_keep(best, c);
            }
            if best.workload.rate > 1.0 {
                let mut c = best.clone();
                c.workload.rate = (c.workload.rate / 2.0).max(1.0);
                changed |= self.try_keep(best, c);
            }
            if best.workload.keys > 1 {
                let mut c = best.clone();
                c.workload.keys = (c.workload.keys / 2).max(1);
                changed |= self.try_keep(best, c);
            }
            if !changed || self.runs >= self.max_runs {
                return;
            }
        }
    }

    fn cluster(&mut self, best: &mut Scenario) {
        if best.cluster.spares > 0 {
            let mut c = best.clone();
            c.cluster.spares = 0;
            self.try_keep(best, c);
        }
        while best.cluster.nodes > 1 {
            let mut c = best.clone();
            c.cluster.nodes -= 1;
            if !self.try_keep(best, c) {
                return;
            }
        }
    }
}

/// `odgm-sim shrink`.
pub fn shrink_command(args: &ShrinkArgs) -> Result<ExitCode, String> {
    let dir = &args.run_dir;
    let path = dir.join("scenario.toml");
    let original = Scenario::load(&path).map_err(|e| e.to_string())?;
    let seed: u64 = std::fs::read_to_string(dir.join("seed"))
        .map_err(|e| format!("{}: {e}", dir.join("seed").display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a seed", dir.join("seed").display()))?;
    let report_path = dir.join("report.json");
    let bad = |e: String| format!("{}: {e}", report_path.display());
    let folder_report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report_path).map_err(|e| bad(e.to_string()))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    let report: RunReport = serde_json::from_value(folder_report["report"].clone())
        .map_err(|e| bad(format!("no run report: {e}")))?;
    let Some(first) = report.failures.first() else {
        return Err(format!(
            "{}: the run passed; nothing to shrink",
            dir.display()
        ));
    };
    let work = dir.join("shrink");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut s = Shrinker {
        exe: std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?,
        work: work.clone(),
        seed,
        kind: failure_kind(first).to_string(),
        runs: 0,
        max_runs: args.max_runs,
    };
    let started = run::real_secs();
    println!(
        "shrink: {} seed {}, keeping a {:?} failure",
        original.name, seed, s.kind
    );
    if !s.fails(&original) {
        return Err(format!(
            "{}: seed {seed} no longer fails with a {:?} failure; nothing to shrink",
            path.display(),
            s.kind
        ));
    }
    let before = Size::of(&original);
    let mut best = original.clone();
    s.nemesis(&mut best);
    s.schedule(&mut best);
    s.run_length(&mut best);
    s.cluster(&mut best);
    // A last pass: shorter runs and fewer nodes can free schedule entries.
    s.schedule(&mut best);
    let after = Size::of(&best);
    best.description = format!(
        "Shrunk by `odgm-sim shrink` from {} (seed {seed}, a {:?} failure): {before} -> {after}.",
        original.name, s.kind
    );
    let out = args.out.clone().unwrap_or_else(|| dir.join("minimal.toml"));
    let text = format!(
        "# Fails with seed {seed}: odgm-sim run {} --seed {seed}\n{}",
        out.display(),
        best.to_toml()
    );
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    println!("before: {before}");
    println!("after:  {after}");
    println!(
        "{} candidate run(s) in {:.1} s; minimal scenario: {}",
        s.runs,
        run::real_secs() - started,
        out.display()
    );
    println!("replay: {}", run::replay_command(&out, seed, &[]));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds() {
        assert_eq!(
            failure_kind("linearizability: illegal (key 2)"),
            "linearizability"
        );
        assert_eq!(
            failure_kind("state machine safety: nodes [1] differ"),
            "state machine safety"
        );
        assert_eq!(failure_kind("panic: x at a.rs:1"), "panic");
    }
}
