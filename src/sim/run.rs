//! One run: a scenario with a seed, start to verdict.
//!
//! The run builds its own madsim runtime from the seed, starts the cluster, runs the workload
//! with the schedule and the nemesis for `duration_ms`, heals everything, lets the cluster
//! settle for `quiet_ms` (waiting for convergence where that is checked), takes final reads
//! (Raft and single-replica shards), and then checks: linearizability, convergence, Raft
//! invariants, and that scans return only values somebody wrote.
//!
//! A run is a pure function of (scenario, seed, build), provided it runs in a fresh process
//! (`odgm-sim run`): tokio's `select!` draws branch order from a process-wide counter that
//! the previous runs in a process would have moved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster::{Cluster, ClusterSpec};
use super::faults::{self, Injector, LeaderLog};
use super::trace::{self, Trace};
use super::workload::{self, Recorded, Targets};
use crate::check::convergence::{check_convergence, ConvergenceReport};
use crate::check::history::{History, Outcome};
use crate::check::linearizability::{self, CheckOptions, CheckResult, Verdict};
use crate::check::model::{KvInput, KvModel, KvOutput};
use crate::scenario::{Scenario, ScheduledFault};
use crate::shard::ShardKind;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Trace lines kept in memory (all of them count in the hash).
    pub trace_limit: usize,
    /// The stack's `tracing` events at this level and above go into the trace.
    pub trace_level: tracing::Level,
    /// Planted bugs switched on beyond the scenario's own.
    pub bugs: Vec<String>,
}

impl RunOptions {
    /// Defaults for a seed.
    pub fn seed(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            trace_limit: 200_000,
            trace_level: tracing::Level::WARN,
            bugs: Vec::new(),
        }
    }
}

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

/// The verdict of one run, as `odgm-sim run --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// What failed, one line each.
    pub failures: Vec<String>,
    /// The trace hash (hex).
    pub trace_hash: String,
    /// Trace lines.
    pub trace_lines: u64,
    /// Simulated time, ms.
    pub simulated_ms: u64,
    /// Real time, ms.
    pub wall_ms: u64,
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
    /// Planted bugs that were on.
    pub bugs: Vec<String>,
    /// The faults applied before the final heal, targets resolved, at their times: the
    /// schedule that actually ran, the random nemesis's faults included (`shrink` starts
    /// from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults_ran: Vec<ScheduledFault>,
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
}

/// Real seconds since boot. Inside a simulation `Instant::now` reads simulated time, so
/// wall-clock figures come from the kernel's uptime (10 ms resolution).
pub(crate) fn real_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// What the simulation hands to the checks.
struct Simulated {
    faults_ran: Vec<ScheduledFault>,
    history: History<KvInput, KvOutput>,
    scans: Vec<workload::ScanResult>,
    convergence: Option<crate::check::convergence::ConvergenceInput>,
    leaders: BTreeSet<(u64, u64)>,
    raft_failures: Vec<String>,
    unavailable: Vec<String>,
    snapshots_installed: u64,
    simulated_ms: u64,
    trace: Trace,
}

/// The planted bugs of a run: the scenario's and the command line's.
fn run_bugs(scenario: &Scenario, opts: &RunOptions) -> Vec<String> {
    let mut bugs = scenario.bugs.clone();
    bugs.extend(opts.bugs.iter().cloned());
    bugs.sort();
    bugs.dedup();
    bugs
}

/// Runs a scenario with one seed.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunOutput {
    let started = real_secs();
    let bugs = run_bugs(scenario, opts);
    crate::bugs::set_active(&bugs);
    crate::rt::set_duplicate_rate(scenario.network.duplicate);
    let rt = madsim::runtime::Runtime::with_seed_and_config(opts.seed, madsim::Config::default());
    let sim = {
        let _guard = tracing::subscriber::set_default(trace::subscriber(opts.trace_level));
        let (s, o) = (scenario.clone(), opts.clone());
        rt.block_on(async move { simulate(s, o).await })
    };
    drop(rt);
    crate::rt::set_duplicate_rate(0.0);
    crate::bugs::set_active(&[]);
    let mut out = check(scenario, opts.seed, sim, bugs);
    out.report.wall_ms = ((real_secs() - started) * 1000.0).max(0.0) as u64;
    out
}

/// Runs like [`run`], but a panic inside the simulation (an assertion in the stack, such as
/// openraft's own invariant checks) becomes a failed run: its report names the panic and
/// where it happened, and it keeps the trace up to the panic (the history is lost).
pub fn run_catching(scenario: &Scenario, opts: &RunOptions) -> RunOutput {
    let started = real_secs();
    let location: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let previous = std::panic::take_hook();
    {
        let location = location.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(l) = info.location() {
                let mut slot = location.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert_with(|| format!("{}:{}", l.file(), l.line()));
            }
            eprintln!("{info}");
        }));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(scenario, opts)));
    std::panic::set_hook(previous);
    let payload = match result {
        Ok(out) => return out,
        Err(p) => p,
    };
    crate::rt::set_duplicate_rate(0.0);
    crate::bugs::set_active(&[]);
    let trace = trace::finish();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let at = location
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    RunOutput {
        report: RunReport {
            scenario: scenario.name.clone(),
            seed: opts.seed,
            passed: false,
            failures: vec![format!("panic: {message}{at}")],
            trace_hash: format!("{:016x}", trace.hash),
            trace_lines: trace.lines.len() as u64 + trace.dropped,
            simulated_ms: 0,
            wall_ms: ((real_secs() - started) * 1000.0).max(0.0) as u64,
            ops: OpCounts::default(),
            scans: 0,
            faults: 0,
            linearizability: None,
            converged_after_ms: None,
            leader_terms: 0,
            snapshots_installed: 0,
            bugs: run_bugs(scenario, opts),
            faults_ran: Vec::new(),
        },
        history: History::default(),
        trace,
        linearizability: None,
        convergence: None,
    }
}

async fn simulate(s: Scenario, opts: RunOptions) -> Simulated {
    trace::begin(opts.trace_limit);
    let start = tokio::time::Instant::now();
    trace::record(format_args!("scenario {} seed {}", s.name, opts.seed));
    let c = &s.cluster;
    let cluster = Arc::new(
        Cluster::start(ClusterSpec {
            kind: c.mode,
            engine: c.engine,
            nodes: c.nodes,
            spares: c.spares,
            options: c.options.clone(),
            client_timeout: Duration::from_millis(c.client_timeout_ms),
        })
        .await,
    );
    let (lo, hi) = s.network.latency_ms;
    cluster.set_network(
        Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1)),
        s.network.loss,
    );
    let members: workload::Members = Arc::new(Mutex::new((1..=c.nodes).collect()));
    let inj = Arc::new(Injector::new(cluster.clone(), members.clone(), start));
    let rec = Arc::new(Recorded::default());
    let fault_end = start + Duration::from_millis(s.duration_ms);
    let run_end = fault_end + Duration::from_millis(s.quiet_ms);
    let leaders: LeaderLog = Arc::default();

    let mut tasks = Vec::new();
    if c.mode == ShardKind::Raft {
        tokio::spawn(faults::watch_leaders(
            cluster.clone(),
            leaders.clone(),
            run_end,
        ));
    }
    let targets = Targets {
        addrs: cluster
            .node_ids()
            .into_iter()
            .map(|id| (id, cluster.client_addr(id)))
            .collect(),
        members: members.clone(),
    };
    for worker in 1..=s.workload.clients {
        tasks.push(tokio::spawn(workload::client(
            worker,
            s.workload.clone(),
            cluster.client.clone(),
            targets.clone(),
            rec.clone(),
            fault_end,
        )));
    }
    let schedule = tokio::spawn(faults::run_schedule(inj.clone(), s.schedule.clone(), start));
    let nemesis = s
        .nemesis
        .clone()
        .map(|n| tokio::spawn(inj.clone().nemesis(n, fault_end)));
    for t in tasks {
        let _ = t.await;
    }
    let _ = schedule.await;
    if let Some(n) = nemesis {
        let _ = n.await;
    }
    tokio::time::sleep_until(fault_end).await;
    trace::record("phase: heal and quiet");
    inj.heal_all();

    let convergence = if s.checks.convergence {
        let bound = Duration::from_millis(s.checks.convergence_bound_ms);
        Some(
            cluster
                .await_convergence(&rec.acked, bound, Duration::from_millis(100))
                .await,
        )
    } else {
        None
    };
    tokio::time::sleep_until(run_end).await;

    let mut raft_failures = Vec::new();
    let mut unavailable = Vec::new();
    if s.checks.linearizability {
        let keys = final_reads(&s, &cluster, &targets, &rec).await;
        if !keys.is_empty() {
            unavailable.push(format!(
                "unavailable after the heal: no replica answered a read of keys {keys:?}"
            ));
        }
    }
    if s.checks.raft_invariants {
        raft_failures = raft_state_checks(&cluster).await;
    }
    let snapshots_installed = cluster
        .node_ids()
        .into_iter()
        .filter_map(|id| cluster.raft(id))
        .map(|r| r.snapshots_installed())
        .sum();
    let simulated_ms = start.elapsed().as_millis() as u64;
    trace::record(format_args!("phase: end at {simulated_ms} ms"));
    let mut history = rec.take_history();
    history.faults = inj.events();
    let faults_ran = inj.ran();
    let scans = std::mem::take(&mut *rec.scans.lock().unwrap_or_else(|e| e.into_inner()));
    let leaders = leaders.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if s.checks.raft_invariants {
        raft_failures.extend(election_safety(&leaders));
    }
    drop(inj);
    drop(cluster);
    Simulated {
        history,
        scans,
        convergence,
        leaders,
        raft_failures,
        unavailable,
        snapshots_installed,
        simulated_ms,
        faults_ran,
        trace: trace::finish(),
    }
}

/// After the quiet phase, one read of every key (linearizable on Raft), each through the
/// replicas in turn until one answers: a lost acknowledged write shows up here.
///
/// Returns the keys no replica answered for: after the heal and the quiet phase the shard
/// must serve again.
async fn final_reads(
    s: &Scenario,
    cluster: &Cluster,
    targets: &Targets,
    rec: &Recorded,
) -> Vec<u64> {
    let mut unreadable = Vec::new();
    let members = workload::current(&targets.members);
    let reader = 999_000_000;
    for key in 0..s.workload.keys {
        for (attempt, node) in members.iter().cycle().take(members.len() * 3).enumerate() {
            let id = reader + key * 100 + attempt as u64;
            let addr = targets.addrs[node];
            rec.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .invoke(
                    id,
                    KvInput::Get {
                        key: key.to_string(),
                    },
                    trace::now_us() * 1_000,
                )
                .ok();
            let got = cluster.client.get(addr, key).await;
            let at = trace::now_us() * 1_000;
            let (outcome, output) = match &got {
                Ok(e) => {
                    let value = e.as_ref().and_then(workload::value_of);
                    trace::record(format_args!(
                        "final read key {key} on node {node}: {value:?}"
                    ));
                    (Outcome::Ok, Some(KvOutput::Get { value }))
                }
                Err(e) => {
                    trace::record(format_args!("final read key {key} on node {node}: {e}"));
                    (Outcome::Fail, None)
                }
            };
            rec.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .complete(id, outcome, output, at)
                .ok();
            if got.is_ok() {
                break;
            }
            if attempt + 1 == members.len() * 3 {
                unreadable.push(key);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    unreadable
}

/// Election safety: at most one node leads a term. `leaders` holds every (term, node) a
/// node's metrics showed as leader.
fn election_safety(leaders: &BTreeSet<(u64, u64)>) -> Option<String> {
    let mut by_term: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (term, node) in leaders {
        by_term.entry(*term).or_default().push(*node);
    }
    let (term, nodes) = by_term.into_iter().find(|(_, n)| n.len() > 1)?;
    Some(format!(
        "election safety: term {term} had more than one leader: nodes {nodes:?}"
    ))
}

/// Raft state checks at the end: logs match (an index written by the same leader holds the
/// same entry on every node) and nodes that applied up to the same index hold the same state.
async fn raft_state_checks(cluster: &Cluster) -> Vec<String> {
    let mut failures = Vec::new();
    // Give followers a moment to apply what the leader committed.
    let mut nodes = BTreeMap::new();
    for _ in 0..50 {
        nodes = cluster
            .node_ids()
            .into_iter()
            .filter_map(|id| cluster.raft(id).map(|r| (id, r)))
            .collect::<BTreeMap<_, _>>();
        let applied: BTreeSet<Option<u64>> = nodes.values().map(|r| r.applied_index()).collect();
        if applied.len() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut logs = BTreeMap::new();
    for (id, r) in &nodes {
        match r.log_summary().await {
            Ok(l) => {
                logs.insert(*id, l);
            }
            // A node whose disk failed stops (fail-stop); it is not compared.
            Err(e) => trace::record(format_args!("node {id}: log unreadable, not compared: {e}")),
        }
    }
    // (index, term) -> entry hash -> nodes holding it
    let mut held: BTreeMap<(u64, u64), BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for (id, log) in &logs {
        for (index, (term, hash)) in log {
            held.entry((*index, *term))
                .or_default()
                .entry(*hash)
                .or_default()
                .push(*id);
        }
    }
    if let Some(((index, term), variants)) = held.iter().find(|(_, v)| v.len() > 1) {
        failures.push(format!(
            "log matching: index {index} of term {term} holds different entries: {:?}",
            variants.values().collect::<Vec<_>>()
        ));
    }
    let mut by_applied: BTreeMap<Option<u64>, Vec<(u64, u64)>> = BTreeMap::new();
    for (id, r) in &nodes {
        let applied = r.applied_index();
        match super::state::replica_entries(r.app_storage()).await {
            Ok(entries) => by_applied
                .entry(applied)
                .or_default()
                .push((*id, super::state::digest(&entries))),
            Err(e) => trace::record(format_args!(
                "node {id}: state unreadable, not compared: {e}"
            )),
        }
    }
    for (applied, states) in by_applied {
        let digests: BTreeSet<u64> = states.iter().map(|(_, d)| *d).collect();
        if digests.len() > 1 {
            failures.push(format!(
                "state machine safety: nodes {:?} applied up to {applied:?} but hold different states",
                states.iter().map(|(id, _)| id).collect::<Vec<_>>()
            ));
        }
    }
    failures
}

fn check(s: &Scenario, seed: u64, sim: Simulated, bugs: Vec<String>) -> RunOutput {
    let mut failures = Vec::new();
    let mut ops = OpCounts::default();
    for op in &sim.history.ops {
        match op.outcome {
            Outcome::Ok => ops.ok += 1,
            Outcome::Fail => ops.fail += 1,
            Outcome::Info => ops.info += 1,
        }
    }
    let lin = s.checks.linearizability.then(|| {
        let options = CheckOptions {
            threads: 1,
            max_steps: 50_000_000,
            ..CheckOptions::default()
        };
        let model = KvModel {
            absent_reads_empty: false,
            failed_cas_is_evidence: false,
        };
        linearizability::check(&model, &sim.history, &options)
    });
    let lin = match lin {
        Some(Ok(r)) => {
            match r.verdict {
                Verdict::Ok => {}
                Verdict::Illegal => {
                    let part = r.decisive_part();
                    failures.push(format!(
                        "linearizability: illegal{}",
                        part.and_then(|p| p.key.as_ref())
                            .map(|k| format!(" (key {k})"))
                            .unwrap_or_default()
                    ));
                }
                Verdict::Unknown => failures
                    .push("linearizability: unknown (the checker's budget ran out)".to_string()),
            }
            Some(r)
        }
        Some(Err(e)) => {
            failures.push(format!("history malformed: {e}"));
            None
        }
        None => None,
    };
    let convergence = sim.convergence.as_ref().map(check_convergence);
    if let Some(c) = &convergence {
        const SHOWN: usize = 5;
        for v in c.violations.iter().take(SHOWN) {
            failures.push(format!("convergence: {v}"));
        }
        if c.violations.len() > SHOWN {
            failures.push(format!(
                "convergence: {} more violations (report.json lists them all)",
                c.violations.len() - SHOWN
            ));
        }
    }
    failures.extend(sim.raft_failures.iter().cloned());
    failures.extend(sim.unavailable.iter().cloned());
    // Scans return only values that some client wrote to that key.
    let mut written: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &sim.history.ops {
        match &op.input {
            KvInput::Put { key, value } | KvInput::Append { key, value } => {
                written.entry(key).or_default().insert(value);
            }
            KvInput::Cas { key, to, .. } => {
                written.entry(key).or_default().insert(to);
            }
            _ => {}
        }
    }
    'scans: for scan in &sim.scans {
        for (k, v) in &scan.pairs {
            if !written
                .get(k.to_string().as_str())
                .is_some_and(|vs| vs.contains(v.as_str()))
            {
                failures.push(format!(
                    "scan at {} ms returned key {k} = {v:?}, which no client wrote",
                    scan.at / 1_000_000
                ));
                break 'scans;
            }
        }
    }
    let report = RunReport {
        scenario: s.name.clone(),
        seed,
        passed: failures.is_empty(),
        failures,
        trace_hash: format!("{:016x}", sim.trace.hash),
        trace_lines: sim.trace.lines.len() as u64 + sim.trace.dropped,
        simulated_ms: sim.simulated_ms,
        wall_ms: 0,
        ops,
        scans: sim.scans.len(),
        faults: sim.history.faults.len(),
        linearizability: lin.as_ref().map(|r| r.verdict),
        converged_after_ms: convergence
            .as_ref()
            .and_then(|c| c.time_to_converge)
            .map(|ns| ns / 1_000_000),
        leader_terms: sim.leaders.len(),
        snapshots_installed: sim.snapshots_installed,
        bugs,
        faults_ran: sim.faults_ran,
    };
    RunOutput {
        report,
        history: sim.history,
        trace: sim.trace,
        linearizability: lin,
        convergence,
    }
}

impl RunReport {
    /// The one-line summary `odgm-sim run` prints.
    pub fn summary(&self) -> String {
        format!(
            "{} {} seed {}: {} ops ({} ok, {} fail, {} info), {} scans, {} faults, {:.1} s simulated in {:.2} s, trace {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenario,
            self.seed,
            self.ops.ok + self.ops.fail + self.ops.info,
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

/// The command that replays a run, with the cargo profile of the running build: a debug or
/// `checked` build keeps openraft's invariant checks, which a plain release build compiles
/// out, so a failure they found replays only in the same profile.
pub fn replay_command(scenario_path: &Path, seed: u64, bugs: &[String]) -> String {
    let mut cmd = format!(
        "cargo run {}-- run {} --seed {seed}",
        profile_flag(),
        scenario_path.display()
    );
    for b in bugs {
        cmd.push_str(&format!(" --bug {b}"));
    }
    cmd
}

/// The `cargo run` flag naming this build's profile, from where the executable sits
/// (`target/<profile>/`, or `target/<profile>/deps/` for a test); `--release` when unknown.
fn profile_flag() -> String {
    let exe = std::env::current_exe().ok();
    let mut dir = exe.as_deref().and_then(Path::parent);
    if dir.and_then(Path::file_name).is_some_and(|n| n == "deps") {
        dir = dir.and_then(Path::parent);
    }
    match dir.and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") => String::new(),
        Some("release") | None => "--release ".into(),
        Some(profile) => format!("--profile {profile} "),
    }
}

/// Writes a run's folder: the scenario, the seed and replay command, the history (JSON
/// lines), the trace, the report, the HTML visualization, and (with a random nemesis) the
/// faults that ran as a scenario with an explicit schedule. Returns the folder.
pub fn write_run_dir(
    dir: &Path,
    scenario: &Scenario,
    scenario_path: &Path,
    out: &RunOutput,
) -> std::io::Result<PathBuf> {
    let folder = dir.join(format!("{}-seed-{}", scenario.name, out.report.seed));
    std::fs::create_dir_all(&folder)?;
    // The scenario as it ran: with every planted bug that was on (the run's list includes
    // the scenario's own).
    let mut as_run = scenario.clone();
    as_run.bugs = out.report.bugs.clone();
    std::fs::write(folder.join("scenario.toml"), as_run.to_toml())?;
    if scenario.nemesis.is_some() && !out.report.faults_ran.is_empty() {
        let ran = super::shrink::with_schedule_that_ran(&as_run, &out.report.faults_ran);
        std::fs::write(
            folder.join("faults-ran.toml"),
            format!(
                "# The faults seed {} applied, the random nemesis's included, as an explicit\n\
                 # schedule. Without the nemesis the seed's other draws shift, so this file may\n\
                 # not fail the same way; `odgm-sim shrink` tries it first.\n{}",
                out.report.seed,
                ran.to_toml()
            ),
        )?;
    }
    std::fs::write(folder.join("seed"), format!("{}\n", out.report.seed))?;
    let replay = replay_command(scenario_path, out.report.seed, &out.report.bugs);
    let local = replay_command(&folder.join("scenario.toml"), out.report.seed, &[]);
    std::fs::write(folder.join("replay"), format!("{replay}\n{local}\n"))?;
    let mut hist = Vec::new();
    crate::check::formats::write_jsonl(&out.history, &mut hist)?;
    std::fs::write(folder.join("history.jsonl"), hist)?;
    let mut trace = out.trace.lines.join("\n");
    trace.push('\n');
    if out.trace.dropped > 0 {
        trace.push_str(&format!(
            "... {} more lines (counted in the hash, not kept)\n",
            out.trace.dropped
        ));
    }
    std::fs::write(folder.join("trace.log"), trace)?;
    let report = serde_json::json!({
        "report": out.report,
        "convergence": out.convergence,
        "linearizability": out.linearizability.as_ref().map(|r| serde_json::json!({
            "verdict": r.verdict,
            "parts": r.parts.len(),
            "decisive": r.decisive_part().map(|p| format!("{p:?}")),
        })),
    });
    std::fs::write(
        folder.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )?;
    let html = crate::check::html::render(
        &format!("{} seed {}", scenario.name, out.report.seed),
        &KvModel {
            absent_reads_empty: false,
            failed_cas_is_evidence: false,
        },
        &out.history,
        out.linearizability.as_ref(),
    );
    std::fs::write(folder.join("history.html"), html)?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_safety_fails_on_two_leaders_of_one_term() {
        let ok: BTreeSet<(u64, u64)> = [(1, 1), (2, 3), (3, 3), (5, 2)].into();
        assert_eq!(election_safety(&ok), None);
        let bad: BTreeSet<(u64, u64)> = [(1, 1), (2, 3), (2, 4), (3, 3)].into();
        let e = election_safety(&bad).expect("two leaders of term 2");
        assert!(e.contains("term 2") && e.contains("[3, 4]"), "{e}");
    }
}
