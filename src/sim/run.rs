//! One run: a scenario with a seed, start to verdict.
//!
//! The run builds its own madsim runtime from the seed, starts the cluster, runs the workload
//! with the schedule and the nemesis for `duration_ms`, heals everything, lets the cluster
//! settle for `quiet_ms` (waiting for convergence where that is checked), observes the
//! cluster (final reads, Raft logs and states), and hands all of it to the checks
//! ([`super::report`]).
//!
//! A run is a pure function of (scenario, seed, build), provided it runs in a fresh process
//! (`odgm-sim run`): tokio's `select!` draws branch order from a process-wide counter that
//! the previous runs in a process would have moved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::{Cluster, ClusterSpec, Death, RaftRecord};
use super::faults::{self, Injector};
use super::observe::{self, LeaderLog};
use super::report::{self, RunOutput, Simulated};
use super::trace;
use super::workload::{self, Recorded, Targets};
use crate::bugs::Bug;
use crate::check::failure::Failure;
use crate::rt::Stopwatch;
use crate::scenario::Scenario;
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
    pub bugs: Vec<Bug>,
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

    /// The planted bugs of a run of `scenario`: the scenario's and these options', sorted.
    pub fn bugs_for(&self, scenario: &Scenario) -> Vec<Bug> {
        let mut bugs = scenario.bugs.clone();
        bugs.extend(self.bugs.iter().copied());
        bugs.sort();
        bugs.dedup();
        bugs
    }
}

/// The per-thread state a run sets (planted bugs, the network's duplication rate); dropping
/// the guard resets it, whether the run ends or panics, so nothing leaks into the next run
/// on this thread.
struct RunGuard;

impl RunGuard {
    fn enter(bugs: &[Bug], duplicate: f64) -> RunGuard {
        crate::bugs::set_active(bugs);
        crate::rt::set_duplicate_rate(duplicate);
        crate::coverage::clear();
        RunGuard
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        crate::rt::set_duplicate_rate(0.0);
        crate::bugs::set_active(&[]);
    }
}

thread_local! {
    /// The Raft record of the run on this thread, when its Raft invariants are checked: a run
    /// that panics still has it checked.
    static RAFT_RECORD: std::cell::RefCell<Option<RaftRecord>> = const { std::cell::RefCell::new(None) };
}

/// Runs a scenario with one seed.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunOutput {
    RAFT_RECORD.with(|r| r.borrow_mut().take());
    let started = Stopwatch::start();
    let bugs = opts.bugs_for(scenario);
    let sim = {
        let _guard = RunGuard::enter(&bugs, scenario.network.duplicate);
        let rt =
            madsim::runtime::Runtime::with_seed_and_config(opts.seed, madsim::Config::default());
        let _trace = tracing::subscriber::set_default(trace::subscriber(opts.trace_level));
        let (s, o) = (scenario.clone(), opts.clone());
        rt.block_on(async move { simulate(s, o).await })
    };
    RAFT_RECORD.with(|r| r.borrow_mut().take());
    let corners = crate::coverage::reached();
    let mut out = report::verdict(scenario, opts.seed, sim, bugs);
    out.report.wall_ms = started.elapsed_ms();
    out.report.corners = corners;
    out
}

/// Runs like [`run`], but a panic inside the simulation (an assertion in the stack, such as
/// openraft's own invariant checks) becomes a failed run: its report names the panic and
/// where it happened, and it keeps the trace up to the panic (the history is lost).
pub fn run_catching(scenario: &Scenario, opts: &RunOptions) -> RunOutput {
    let started = Stopwatch::start();
    let location: Arc<Mutex<Option<String>>> = Arc::default();
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
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let location = location.lock().unwrap_or_else(|e| e.into_inner()).take();
    // What the Raft storage reported up to the panic is still checked: the panic is often
    // where openraft noticed what one of our invariants says.
    let recorded = RAFT_RECORD
        .with(|r| r.borrow_mut().take())
        .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let mut failures = vec![Failure::Panic { message, location }];
    failures.extend(crate::check::raft_events::check(&recorded));
    let mut out = report::panicked(
        scenario,
        opts.seed,
        trace::finish(),
        opts.bugs_for(scenario),
        failures,
    );
    out.report.wall_ms = started.elapsed_ms();
    out.report.corners = crate::coverage::reached();
    out
}

async fn simulate(s: Scenario, opts: RunOptions) -> Simulated {
    trace::begin(opts.trace_limit);
    let start = tokio::time::Instant::now();
    let start_ms = trace::now_us() / 1000;
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
            open: None,
            record: c.mode == ShardKind::Raft,
            clock_drift_ppm: c.clock_drift_ppm,
            boot_jitter_ms: c.boot_jitter_ms,
            engine_neutral: c.engine_neutral,
        })
        .await,
    );
    if s.checks.raft_invariants {
        RAFT_RECORD.with(|r| *r.borrow_mut() = cluster.raft_record_handle());
    }
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
        tokio::spawn(observe::watch_leaders(
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
        .map(|n| tokio::spawn(super::nemesis::run(inj.clone(), n, fault_end)));
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
    // The quiet phase is whole even when a fault ran past the fault phase (a membership
    // change waits up to its admin timeout): the final reads come `quiet_ms` after the heal.
    let healed_at = tokio::time::Instant::now();
    let run_end = run_end.max(healed_at + Duration::from_millis(s.quiet_ms));

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

    let unreadable = if s.checks.linearizability {
        observe::final_reads(s.workload.keys, &cluster, &targets, &rec).await
    } else {
        Vec::new()
    };
    let mut raft = if s.checks.raft_invariants {
        Some(observe::raft_observation(&cluster).await)
    } else {
        None
    };
    let deaths: Vec<Death> = cluster
        .deaths()
        .into_iter()
        .map(|d| Death {
            at_ms: d.at_ms.saturating_sub(start_ms),
            ..d
        })
        .collect();
    // Every replica must serve at the end: the heal restarted whatever a fault stopped. A
    // node whose disk a fault damaged for good may stay down; refusing to open is its job.
    let not_back: Vec<u64> = workload::current(&members)
        .into_iter()
        .filter(|&id| !cluster.is_up(id) || cluster.raft(id).is_some_and(|r| r.fatal().is_some()))
        .filter(|&id| !cluster.disk_damaged(id))
        .collect();
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
    let leaders = leaders.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let raft_events = if raft.is_some() {
        cluster.raft_record()
    } else {
        Vec::new()
    };
    if let Some(r) = raft.as_mut() {
        r.leaders = leaders.clone();
    }
    drop(inj);
    drop(cluster);
    Simulated {
        history,
        convergence,
        leaders: leaders.len(),
        raft,
        raft_events,
        unreadable,
        deaths,
        not_back,
        snapshots_installed,
        simulated_ms,
        faults_ran,
        trace: trace::finish(),
    }
}
