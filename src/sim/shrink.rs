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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::command::{child_report, child_run};
use super::run::{self, RunReport};
use crate::scenario::{Fault, Scenario, ScheduledFault, Target};
use crate::storage::DiskFaults;

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
            Ok(r) if !r.passed && r.failures.iter().any(|f| failure_kind(f) == self.kind) => {
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
                let mut c = best.clone();
                c.schedule = best
                    .schedule
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !dropped.contains(i))
                    .map(|(_, f)| f.clone())
                    .collect();
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

/// `s` with its random nemesis replaced by `ran`, the faults a run of it applied (targets
/// resolved, times clamped into the fault phase).
pub fn with_schedule_that_ran(s: &Scenario, ran: &[ScheduledFault]) -> Scenario {
    let mut c = s.clone();
    c.nemesis = None;
    c.schedule = ran
        .iter()
        .map(|f| ScheduledFault {
            at_ms: f.at_ms.min(s.duration_ms.saturating_sub(1)),
            fault: f.fault.clone(),
        })
        .collect();
    c
}

/// What a fault unit waits for to close: a restart of node n ("down", n), a resume, ...
type UnitKey = (&'static str, u64);

/// Groups a schedule's entries (by index) into units that stand or fall together: a fault
/// with the entry that undoes it (a kill and its node's restart, a pause and its resume, link
/// cuts and the heal after them, disk errors and the healthy rates after them, a clock skew
/// and its reset, a removal and the re-add). Dropping a whole unit keeps the schedule valid
/// where dropping one entry of it would not. Units are in the order of their first entry.
pub fn fault_units(schedule: &[ScheduledFault]) -> Vec<Vec<usize>> {
    let mut units: Vec<Vec<usize>> = Vec::new();
    // Open units by what closes them.
    let mut open: BTreeMap<UnitKey, usize> = BTreeMap::new();
    let mut net: Option<usize> = None;
    let node = |t: &Target| match t {
        Target::Node(n) => Some(*n),
        _ => None,
    };
    for (i, f) in schedule.iter().enumerate() {
        // (key this entry opens, key this entry closes)
        let (opens, closes): (Option<UnitKey>, Option<UnitKey>) = match &f.fault {
            Fault::Partition { .. }
            | Fault::Isolate { .. }
            | Fault::OneWay { .. }
            | Fault::Clog { .. } => {
                match net {
                    Some(u) => units[u].push(i),
                    None => {
                        net = Some(units.len());
                        units.push(vec![i]);
                    }
                }
                continue;
            }
            Fault::Heal => {
                match net.take() {
                    Some(u) => units[u].push(i),
                    None => units.push(vec![i]),
                }
                continue;
            }
            Fault::Kill { node: t } | Fault::PowerLoss { node: t, .. } => {
                (node(t).map(|n| ("down", n)), None)
            }
            Fault::Restart { node: t } => (None, node(t).map(|n| ("down", n))),
            Fault::Pause { node: t } => (node(t).map(|n| ("paused", n)), None),
            Fault::Resume { node: t } => (None, node(t).map(|n| ("paused", n))),
            Fault::ClockSkew {
                node: t,
                offset_ms: 0,
                drift_ppm: 0,
            } => (None, node(t).map(|n| ("skew", n))),
            Fault::ClockSkew { node: t, .. } => (node(t).map(|n| ("skew", n)), None),
            Fault::DiskFaults { node: t, disk } if *disk == DiskFaults::none() => {
                (None, node(t).map(|n| ("disk", n)))
            }
            Fault::DiskFaults { node: t, .. } => (node(t).map(|n| ("disk", n)), None),
            Fault::RemoveReplica { node: t } => (node(t).map(|n| ("removed", n)), None),
            Fault::AddReplica { node: t } => (None, node(t).map(|n| ("removed", n))),
            Fault::Snapshot { .. } => (None, None),
        };
        if let Some(u) = closes.and_then(|k| open.remove(&k)) {
            units[u].push(i);
            continue;
        }
        if let Some(k) = opens {
            open.insert(k, units.len());
        }
        units.push(vec![i]);
    }
    units
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
        ran: Vec::new(),
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

    fn at(at_ms: u64, fault: Fault) -> ScheduledFault {
        ScheduledFault { at_ms, fault }
    }

    fn node(n: u64) -> Target {
        Target::Node(n)
    }

    #[test]
    fn a_fault_and_what_undoes_it_form_one_unit() {
        let disk = DiskFaults {
            write_error_rate: 0.1,
            ..DiskFaults::none()
        };
        let schedule = vec![
            at(0, Fault::Kill { node: node(1) }),
            at(1, Fault::Clog { node: node(2) }),
            at(
                2,
                Fault::OneWay {
                    from: node(3),
                    to: node(2),
                },
            ),
            at(3, Fault::Snapshot { node: node(3) }),
            at(4, Fault::Restart { node: node(1) }),
            at(5, Fault::Heal),
            at(
                6,
                Fault::DiskFaults {
                    node: node(2),
                    disk,
                },
            ),
            at(
                7,
                Fault::ClockSkew {
                    node: node(2),
                    offset_ms: 5,
                    drift_ppm: 0,
                },
            ),
            at(
                8,
                Fault::DiskFaults {
                    node: node(2),
                    disk: DiskFaults::none(),
                },
            ),
            at(
                9,
                Fault::ClockSkew {
                    node: node(2),
                    offset_ms: 0,
                    drift_ppm: 0,
                },
            ),
            at(10, Fault::Restart { node: node(3) }),
            at(11, Fault::Heal),
            at(
                12,
                Fault::Pause {
                    node: Target::Random,
                },
            ),
            at(13, Fault::Resume { node: Target::All }),
        ];
        assert_eq!(
            fault_units(&schedule),
            vec![
                vec![0, 4],
                vec![1, 2, 5],
                vec![3],
                vec![6, 8],
                vec![7, 9],
                vec![10],
                vec![11],
                vec![12],
                vec![13],
            ]
        );
    }

    #[test]
    fn the_schedule_that_ran_replaces_the_nemesis_inside_the_fault_phase() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/raft-chaos.toml"
        ))
        .expect("raft-chaos scenario");
        let s = Scenario::parse(&text, "raft-chaos.toml", "raft-chaos").expect("valid");
        assert!(s.nemesis.is_some());
        let end = s.duration_ms;
        let ran = vec![
            at(10, Fault::Kill { node: node(2) }),
            at(end, Fault::Restart { node: node(2) }),
        ];
        let m = with_schedule_that_ran(&s, &ran);
        assert!(m.nemesis.is_none());
        assert_eq!(m.schedule.len(), 2);
        assert_eq!(m.schedule[1].at_ms, end - 1);
        let back = Scenario::parse(&m.to_toml(), "m.toml", "m").expect("the result validates");
        assert_eq!(back.schedule, m.schedule);
    }
}
