//! `odgm-sim shrink RUN_DIR`: turns a failing run into the smallest scenario that still fails
//! the same check with the same seed. It re-runs candidates (each in its own process) and
//! keeps a change only if the candidate still fails with the same kind of failure:
//!
//! 1. the random nemesis: replace it with the faults that actually ran (the run's report
//!    lists them, targets resolved, at their times) as an explicit schedule; if the failure
//!    does not survive that, drop the nemesis, else drop its fault kinds one at a time;
//! 2. the schedule: none at all if that still fails; else delta debugging (ddmin) over its
//!    fault units, a fault with the entry that undoes it (a kill and its restart, link cuts
//!    and their heal), then over single entries, skipping candidates that do not validate;
//! 3. the run: halve the fault phase (dropping entries past its end), the quiet phase, the
//!    clients, the rate and the key space, while the failure holds;
//! 4. the cluster: fewer nodes and spares.
//!
//! It writes the result as a scenario file (with the planted bugs the run had) and prints
//! the command that replays it. Unlike a bare seed, a small scenario keeps reproducing the
//! failure after code changes that shift the random draws.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::folder::{read_report, replay_command};
use super::process::{child_report, child_run, exe};
use crate::check::failure::CheckKind;
use crate::rt::Stopwatch;
use crate::scenario::transform::{fault_units, with_schedule_that_ran, without_entries, Size};
use crate::scenario::{Scenario, ScheduledFault};

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

struct Shrinker {
    exe: PathBuf,
    work: PathBuf,
    seed: u64,
    kind: CheckKind,
    runs: usize,
    max_runs: usize,
    /// The faults that ran in the last candidate that failed.
    ran: Vec<ScheduledFault>,
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
        match report {
            Ok(r) if r.failures.iter().any(|f| f.kind() == self.kind) => {
                self.ran = r.faults_ran;
                true
            }
            _ => false,
        }
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

    /// Replaces the random nemesis with the faults that actually ran, as an explicit schedule,
    /// if the failure survives that (the seed's other draws shift without the nemesis).
    fn materialize(&mut self, best: &mut Scenario) -> bool {
        if best.nemesis.is_none() || self.ran.is_empty() {
            return false;
        }
        let c = with_schedule_that_ran(best, &self.ran);
        self.try_keep(best, c)
    }

    /// Shrinks the schedule: no schedule at all if the failure needs none; else Zeller's
    /// ddmin over its fault units (a fault with the entry that undoes it, see
    /// [`fault_units`]), then over single entries (a cut can outlive its heal, a crashed node
    /// can stay down: the final heal undoes both).
    fn schedule(&mut self, best: &mut Scenario) {
        if !best.schedule.is_empty() {
            let mut c = best.clone();
            c.schedule.clear();
            if self.try_keep(best, c) {
                return;
            }
        }
        self.ddmin(best, fault_units);
        self.ddmin(best, |s| (0..s.len()).map(|i| vec![i]).collect());
    }

    /// ddmin over the groups of schedule entries `groups` makes: drop one of `n` chunks of
    /// groups at a time; on success coarsen, otherwise refine, until single groups cannot
    /// be dropped.
    fn ddmin(
        &mut self,
        best: &mut Scenario,
        groups: impl Fn(&[ScheduledFault]) -> Vec<Vec<usize>>,
    ) {
        let mut parts = 2usize;
        while !best.schedule.is_empty() && self.runs < self.max_runs {
            let units = groups(&best.schedule);
            let len = units.len();
            let n = parts.min(len);
            let chunk = len.div_ceil(n);
            let mut reduced = false;
            for i in 0..n {
                let (a, b) = (i * chunk, ((i + 1) * chunk).min(len));
                if a >= b {
                    continue;
                }
                let dropped: BTreeSet<usize> = units[a..b].iter().flatten().copied().collect();
                if self.try_keep(best, without_entries(best, &dropped)) {
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
    let report = read_report(dir)?;
    // The failure to keep: the first that shows a bug (a checker that gave up shows none),
    // else the first.
    let first = report
        .failures
        .iter()
        .find(|f| f.kind().is_violation())
        .or(report.failures.first());
    let Some(first) = first else {
        return Err(format!(
            "{}: the run passed; nothing to shrink",
            dir.display()
        ));
    };
    let work = dir.join("shrink");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut s = Shrinker {
        exe: exe()?,
        work: work.clone(),
        seed,
        kind: first.kind(),
        runs: 0,
        max_runs: args.max_runs,
        ran: Vec::new(),
    };
    let started = Stopwatch::start();
    println!(
        "shrink: {} seed {}, keeping a {} failure",
        original.name, seed, s.kind
    );
    if !s.fails(&original) {
        return Err(format!(
            "{}: seed {seed} no longer fails with a {} failure; nothing to shrink",
            path.display(),
            s.kind
        ));
    }
    let before = Size::of(&original);
    let ran = s.ran.len();
    let mut best = original.clone();
    // The nemesis as the schedule that ran; failing that, a smaller nemesis and a shorter
    // run, then its (fewer) faults as a schedule once more.
    let mut materialized = s.materialize(&mut best);
    if !materialized && best.nemesis.is_some() {
        s.nemesis(&mut best);
        s.run_length(&mut best);
        materialized = s.materialize(&mut best);
    }
    s.schedule(&mut best);
    s.run_length(&mut best);
    s.cluster(&mut best);
    // A last pass: shorter runs and fewer nodes can free schedule entries.
    s.schedule(&mut best);
    let after = Size::of(&best);
    best.description = format!(
        "Shrunk by `odgm-sim shrink` from {} (seed {seed}, a {} failure): {before} -> {after}.",
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
    println!("before: {before}; {ran} fault(s) ran");
    if original.nemesis.is_some() {
        println!(
            "        the nemesis's faults as an explicit schedule: {}",
            if materialized {
                "still fails, kept"
            } else {
                "did not fail the same way; kept a smaller nemesis"
            }
        );
    }
    println!("after:  {after}");
    println!(
        "{} candidate run(s) in {:.1} s; minimal scenario: {}",
        s.runs,
        started.elapsed_secs(),
        out.display()
    );
    println!("replay: {}", replay_command(&out, seed, &[]));
    Ok(ExitCode::SUCCESS)
}
