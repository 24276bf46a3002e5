//! A run's verdict: what the simulation recorded, handed to every check that applies, and the
//! report that comes out (`odgm-sim run --json` prints it; sweeps read it back).

use serde::{Deserialize, Serialize};

use super::cluster::Death;
use super::trace::Trace;
use crate::bugs::Bug;
use crate::check::convergence::{check_convergence, ConvergenceInput, ConvergenceReport};
use crate::check::failure::Failure;
use crate::check::history::{History, Outcome};
use crate::check::linearizability::{self, CheckOptions, CheckResult, Verdict};
use crate::check::model::{KvInput, KvModel, KvOutput};
use crate::check::raft::RaftObservation;
use crate::check::scan::check_scans;
use crate::rt::Stopwatch;
use crate::scenario::{Fault, Scenario, ScheduledFault, Target, ARMED_CUT_WINDOW_MS};

/// Counts of operations by outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpCounts {
    /// Completed.
    pub ok: u64,
    /// Definitely did not happen.
    pub fail: u64,
    /// Indeterminate.
    pub info: u64,
}

impl OpCounts {
    /// Every operation.
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// The verdict of one run, as `odgm-sim run --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<Failure>,
    /// The trace hash (hex).
    pub trace_hash: String,
    /// Trace lines.
    pub trace_lines: u64,
    /// Simulated time, ms.
    pub simulated_ms: u64,
    /// Real time, ms.
    pub wall_ms: u64,
    /// Real time the linearizability check took, ms (part of `wall_ms`).
    #[serde(default)]
    pub check_ms: u64,
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Scans done.
    pub scans: usize,
    /// Faults injected.
    pub faults: usize,
    /// The linearizability verdict, if checked.
    pub linearizability: Option<Verdict>,
    /// Time from the heal until the replicas agreed, ms (convergence check).
    pub converged_after_ms: Option<u64>,
    /// Leader ids (term, node) seen (Raft).
    pub leader_terms: usize,
    /// Snapshots that nodes installed from a leader (Raft; counted on nodes up at the end,
    /// since their last restart).
    pub snapshots_installed: u64,
    /// What the nodes' Raft storage did, counted (Raft runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_events: Option<crate::probe::EventCounts>,
    /// Planted bugs that were on.
    pub bugs: Vec<Bug>,
    /// The faults applied before the final heal, targets resolved, at their times: the
    /// schedule that actually ran, the random nemesis's faults included (`shrink` starts
    /// from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults_ran: Vec<ScheduledFault>,
    /// The corners of the stack the run reached (coverage probes), in catalogue order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corners: Vec<crate::coverage::Corner>,
}

impl RunReport {
    /// The one-line summary `odgm-sim run` prints.
    pub fn summary(&self) -> String {
        format!(
            "{} {} seed {}: {} ops ({} ok, {} fail, {} info), {} scans, {} faults, {:.1} s simulated in {:.2} s, trace {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenario,
            self.seed,
            self.ops.total(),
            self.ops.ok,
            self.ops.fail,
            self.ops.info,
            self.scans,
            self.faults,
            self.simulated_ms as f64 / 1000.0,
            self.wall_ms as f64 / 1000.0,
            self.trace_hash
        )
    }
}

/// Everything a run produced.
pub struct RunOutput {
    /// The verdict.
    pub report: RunReport,
    /// The key-value history.
    pub history: History<KvInput, KvOutput>,
    /// The trace.
    pub trace: Trace,
    /// The linearizability result, if checked.
    pub linearizability: Option<CheckResult>,
    /// The convergence report, if checked.
    pub convergence: Option<ConvergenceReport>,
    /// What the nodes' Raft storage reported as it ran (Raft runs that record it).
    pub raft_events: Vec<crate::probe::Recorded>,
}

/// What the simulation hands to the checks.
pub(super) struct Simulated {
    pub faults_ran: Vec<ScheduledFault>,
    pub history: History<KvInput, KvOutput>,
    pub convergence: Option<ConvergenceInput>,
    /// Leader ids (term, node) seen.
    pub leaders: usize,
    /// The Raft cluster as observed, when Raft invariants are checked.
    pub raft: Option<RaftObservation>,
    /// What the nodes' Raft storage reported as it ran, when Raft invariants are checked.
    pub raft_events: Vec<crate::probe::Recorded>,
    /// Keys no replica answered a final read of.
    pub unreadable: Vec<u64>,
    /// Nodes that stopped by themselves (times in ms since the run started).
    pub deaths: Vec<Death>,
    /// Replicas not serving at the end.
    pub not_back: Vec<u64>,
    pub snapshots_installed: u64,
    pub simulated_ms: u64,
    pub trace: Trace,
}

/// Nodes that stopped with no fault to explain it, and replicas not serving at the end.
/// Injected disk errors on a node explain its deaths (fail-stop is what a node must do on
/// them); so does a crash or power cut armed on it that went off while the node was starting.
/// A power cut alone explains nothing: the node must come back from what its disks kept.
pub(super) fn stopped_nodes(
    deaths: &[Death],
    not_back: &[u64],
    faults_ran: &[ScheduledFault],
) -> Vec<Failure> {
    let explained = |d: &Death| {
        faults_ran.iter().any(|f| match &f.fault {
            Fault::DiskFaults {
                node: Target::Node(n),
                disk,
            } => *n == d.node && disk.has_errors() && f.at_ms <= d.at_ms,
            Fault::PowerLoss {
                node: Target::Node(n),
                after: Some(_),
                ..
            }
            | Fault::Kill {
                node: Target::Node(n),
                after: Some(_),
            } => *n == d.node && (f.at_ms..=f.at_ms + ARMED_CUT_WINDOW_MS).contains(&d.at_ms),
            _ => false,
        })
    };
    let mut out = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for d in deaths.iter().filter(|d| !explained(d)) {
        if named.insert(d.node) {
            out.push(Failure::NodeStopped {
                node: d.node,
                at_ms: d.at_ms,
                why: d.why.clone(),
            });
        }
    }
    let nodes: Vec<u64> = not_back
        .iter()
        .copied()
        .filter(|n| !named.contains(n))
        .collect();
    if !nodes.is_empty() {
        out.push(Failure::NotBack { nodes });
    }
    out
}

/// The model the runs' histories are checked against: a read of a key nobody wrote returns
/// nothing, and a failed cas is not evidence (our cas fails only when it did not apply).
pub fn kv_model() -> KvModel {
    KvModel {
        absent_reads_empty: false,
        failed_cas_is_evidence: false,
    }
}

/// The failure a linearizability result shows, if any: `illegal` as the given kind of
/// failure, `unknown` as the checker's budget.
fn linearizability_failure(
    result: &CheckResult,
    illegal: impl FnOnce(Option<String>) -> Failure,
) -> Option<Failure> {
    let part = result.decisive_part();
    let key = part.and_then(|p| p.key.clone());
    match result.verdict {
        Verdict::Ok => None,
        Verdict::Illegal => Some(illegal(key)),
        Verdict::Unknown => Some(Failure::CheckerBudget {
            key,
            steps: part.map_or(0, |p| p.steps),
        }),
    }
}

/// Linearizability in two steps: the single-key operations per key, and, when those are
/// linearizable and the history has scans or counts, everything, scans and counts as reads
/// of every key at one instant (the keys they connect are checked as one part). A failure of
/// the second step alone is a multi-key read failure. Returns the result that decided.
fn check_linearizable(
    history: &History<KvInput, KvOutput>,
    failures: &mut Vec<Failure>,
) -> Option<CheckResult> {
    let options = CheckOptions {
        threads: 1,
        max_steps: 50_000_000,
        ..CheckOptions::default()
    };
    let multi = |i: &KvInput| matches!(i, KvInput::Scan { .. } | KvInput::Count { .. });
    let mut single = History {
        ops: history.ops.clone(),
        faults: Vec::new(),
    };
    single.ops.retain(|o| !multi(&o.input));
    // The check numbers the operations it kept; the reports number the whole history's.
    let original: Vec<usize> = (0..history.ops.len())
        .filter(|&i| !multi(&history.ops[i].input))
        .collect();
    let per_key = match linearizability::check(&kv_model(), &single, &options) {
        Ok(mut r) => {
            for part in &mut r.parts {
                for i in part.linearization.iter_mut().chain(part.failed_op.as_mut()) {
                    *i = original[*i];
                }
            }
            r
        }
        Err(e) => {
            failures.push(Failure::MalformedHistory {
                message: e.to_string(),
            });
            return None;
        }
    };
    if per_key.verdict != Verdict::Ok || single.ops.len() == history.ops.len() {
        failures.extend(linearizability_failure(&per_key, |key| {
            Failure::Linearizability { key }
        }));
        return Some(per_key);
    }
    match linearizability::check(&kv_model(), history, &options) {
        Ok(r) => {
            failures.extend(linearizability_failure(&r, |keys| Failure::MultiKeyRead {
                keys,
            }));
            Some(r)
        }
        Err(e) => {
            failures.push(Failure::MalformedHistory {
                message: e.to_string(),
            });
            None
        }
    }
}

/// Runs every check that applies to what the simulation recorded.
pub(super) fn verdict(s: &Scenario, seed: u64, sim: Simulated, bugs: Vec<Bug>) -> RunOutput {
    let mut failures = Vec::new();
    let mut ops = OpCounts::default();
    for op in &sim.history.ops {
        match op.outcome {
            Outcome::Ok => ops.ok += 1,
            Outcome::Fail => ops.fail += 1,
            Outcome::Info => ops.info += 1,
        }
    }
    let checking = Stopwatch::start();
    let lin = if s.checks.linearizability {
        check_linearizable(&sim.history, &mut failures)
    } else {
        None
    };
    let check_ms = checking.elapsed_ms();
    let convergence = sim.convergence.as_ref().map(check_convergence);
    if let Some(c) = &convergence {
        failures.extend(c.violations.iter().map(|v| Failure::Convergence {
            violation: v.clone(),
        }));
    }
    if let Some(raft) = &sim.raft {
        for f in crate::check::raft_events::check(&sim.raft_events)
            .into_iter()
            .chain(crate::check::raft::check(raft))
        {
            if !failures.contains(&f) {
                failures.push(f);
            }
        }
    }
    failures.extend(stopped_nodes(&sim.deaths, &sim.not_back, &sim.faults_ran));
    if !sim.unreadable.is_empty() {
        failures.push(Failure::Availability {
            keys: sim.unreadable.clone(),
        });
    }
    failures.extend(check_scans(&sim.history));
    let report = RunReport {
        scenario: s.name.clone(),
        seed,
        passed: failures.is_empty(),
        failures,
        trace_hash: format!("{:016x}", sim.trace.hash),
        trace_lines: sim.trace.kept + sim.trace.dropped,
        simulated_ms: sim.simulated_ms,
        wall_ms: 0,
        ops,
        scans: sim
            .history
            .ops
            .iter()
            .filter(|o| matches!(o.input, KvInput::Scan { .. }))
            .count(),
        check_ms,
        faults: sim.history.faults.len(),
        linearizability: lin.as_ref().map(|r| r.verdict),
        converged_after_ms: convergence
            .as_ref()
            .and_then(|c| c.time_to_converge)
            .map(|ns| ns / 1_000_000),
        leader_terms: sim.leaders,
        snapshots_installed: sim.snapshots_installed,
        raft_events: sim
            .raft
            .is_some()
            .then(|| crate::probe::EventCounts::of(&sim.raft_events)),
        bugs,
        faults_ran: sim.faults_ran,
        corners: Vec::new(),
    };
    RunOutput {
        report,
        history: sim.history,
        trace: sim.trace,
        linearizability: lin,
        convergence,
        raft_events: sim.raft_events,
    }
}

/// The output of a run that panicked: the failure and the trace up to the panic.
pub(super) fn panicked(
    s: &Scenario,
    seed: u64,
    trace: Trace,
    bugs: Vec<Bug>,
    failures: Vec<Failure>,
) -> RunOutput {
    RunOutput {
        report: RunReport {
            scenario: s.name.clone(),
            seed,
            passed: false,
            failures,
            trace_hash: format!("{:016x}", trace.hash),
            trace_lines: trace.kept + trace.dropped,
            simulated_ms: 0,
            wall_ms: 0,
            check_ms: 0,
            ops: OpCounts::default(),
            scans: 0,
            faults: 0,
            linearizability: None,
            converged_after_ms: None,
            leader_terms: 0,
            snapshots_installed: 0,
            raft_events: None,
            bugs,
            faults_ran: Vec::new(),
            corners: Vec::new(),
        },
        history: History::default(),
        trace,
        linearizability: None,
        convergence: None,
        raft_events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DiskFaults, PowerLossMode};

    #[test]
    fn a_per_key_failure_names_operations_by_their_place_in_the_whole_history() {
        use crate::check::history::{Operation, Outcome};
        let op = |client, invoke, input, output| Operation {
            client,
            invoke,
            complete: Some(invoke + 1),
            input,
            output: Some(output),
            outcome: Outcome::Ok,
        };
        let key = || "a".to_string();
        // A scan first: the per-key check leaves it out, which must not shift the numbers.
        let history = History {
            ops: vec![
                op(
                    1,
                    0,
                    KvInput::Scan {
                        start: None,
                        end: None,
                    },
                    KvOutput::Scan { pairs: vec![] },
                ),
                op(
                    1,
                    10,
                    KvInput::Put {
                        key: key(),
                        value: "1".into(),
                    },
                    KvOutput::Ok,
                ),
                op(
                    1,
                    20,
                    KvInput::Get { key: key() },
                    KvOutput::Get {
                        value: Some("2".into()),
                    },
                ),
            ],
            faults: Vec::new(),
        };
        let mut failures = Vec::new();
        let r = check_linearizable(&history, &mut failures).expect("checked");
        assert_eq!(r.verdict, Verdict::Illegal);
        let part = r.decisive_part().expect("an illegal part");
        assert_eq!(part.failed_op, Some(2));
        assert_eq!(part.linearization, vec![1]);
    }

    fn death(node: u64, at_ms: u64) -> Death {
        Death {
            node,
            at_ms,
            why: "storage did not open".into(),
        }
    }

    fn at(at_ms: u64, fault: Fault) -> ScheduledFault {
        ScheduledFault { at_ms, fault }
    }

    #[test]
    fn a_death_no_fault_explains_is_a_failure_and_so_is_a_replica_not_back() {
        let deaths = [death(2, 500)];
        let f = stopped_nodes(&deaths, &[2, 3], &[]);
        assert_eq!(
            f,
            vec![
                Failure::NodeStopped {
                    node: 2,
                    at_ms: 500,
                    why: "storage did not open".into()
                },
                Failure::NotBack { nodes: vec![3] }
            ]
        );
        // A plain power cut explains nothing: the node must come back from its disks.
        let cut = at(
            100,
            Fault::PowerLoss {
                node: Target::Node(2),
                mode: PowerLossMode::DropAll,
                after: None,
            },
        );
        assert_eq!(stopped_nodes(&deaths, &[], &[cut]).len(), 1);
    }

    #[test]
    fn disk_errors_and_armed_cuts_on_the_node_explain_its_death() {
        let errors = DiskFaults {
            read_error_rate: 0.1,
            ..DiskFaults::none()
        };
        let disk = |node, at_ms| {
            at(
                at_ms,
                Fault::DiskFaults {
                    node: Target::Node(node),
                    disk: errors.clone(),
                },
            )
        };
        let deaths = [death(2, 500)];
        assert!(stopped_nodes(&deaths, &[], &[disk(2, 100)]).is_empty());
        // On another node, or after the death, they do not.
        assert_eq!(stopped_nodes(&deaths, &[], &[disk(1, 100)]).len(), 1);
        assert_eq!(stopped_nodes(&deaths, &[], &[disk(2, 600)]).len(), 1);
        let armed = |at_ms| {
            at(
                at_ms,
                Fault::Kill {
                    node: Target::Node(2),
                    after: Some(crate::scenario::CutAfter::Syncs(3)),
                },
            )
        };
        let late = [death(2, 5_000)];
        assert!(stopped_nodes(&late, &[], &[armed(4_900)]).is_empty());
        assert_eq!(
            stopped_nodes(&late, &[], &[armed(5_000 - ARMED_CUT_WINDOW_MS - 1)]).len(),
            1
        );
    }
}
