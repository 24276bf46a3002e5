//! Every shipped scenario, swept over seeds, each seed in its own `odgm-sim run` process (so
//! no seed sees what an earlier one left in the process). A failure names the seed and
//! prints the command that replays it.
//!
//! `ODGM_SIM_SEEDS=N` sweeps seeds `0..N` (default 3); `ODGM_SIM_SEED=S` runs one seed.
//!
//! Each scenario's seeds run once per test process, whichever test asks first
//! ([`swept`]): the scenario's own test checks they passed, and the coverage test checks that
//! the whole sweep reached every corner marked as the sweep's.
#![cfg(madsim)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{LazyLock, OnceLock};

use odgm_sim::check::CheckKind;
use odgm_sim::cmd::coverage::Coverage;
use odgm_sim::cmd::process::{sweep_processes, SweepOptions, SweepRun};
use odgm_sim::cmd::sweep::{coverage_of, scenario_files};
use odgm_sim::coverage::Expect;
use odgm_sim::sim::report::RunReport;

const DEFAULT_SEEDS: u64 = 3;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_odgm-sim"))
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn options(jobs: usize) -> SweepOptions {
    SweepOptions {
        jobs,
        out: Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenario-runs"),
        ..SweepOptions::default()
    }
}

/// The runs of one shipped scenario's seeds, swept the first time any test asks.
fn swept(name: &str) -> &'static [SweepRun] {
    SWEPT[name].get_or_init(|| {
        let path = scenario(name);
        let runs: Vec<(PathBuf, u64)> = common::seeds(DEFAULT_SEEDS)
            .into_iter()
            .map(|s| (path.clone(), s))
            .collect();
        sweep_processes(exe(), &runs, &options(1), &|_| {})
    })
}

fn sweep(name: &str) {
    all_passed(&format!("seeds of {name}"), swept(name));
}

/// Fails, naming each failing seed and its replay command, unless every run passed.
fn all_passed(what: &str, results: &[SweepRun]) {
    let failed: Vec<&SweepRun> = results.iter().filter(|r| !r.passed()).collect();
    for r in &failed {
        eprintln!("seed {} failed: {}", r.seed, r.what_failed());
        eprintln!("  replay: {}", r.replay(&[]));
    }
    assert!(
        failed.is_empty(),
        "{} of {} {what} failed (replay commands above)",
        failed.len(),
        results.len()
    );
}

macro_rules! scenarios {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                sweep($name);
            }
        )*

        /// Every shipped scenario's seeds, swept at most once per process.
        static SWEPT: LazyLock<BTreeMap<&'static str, OnceLock<Vec<SweepRun>>>> =
            LazyLock::new(|| [$($name),*].into_iter().map(|n| (n, OnceLock::new())).collect());

        #[test]
        fn every_shipped_scenario_has_a_test() {
            let tested: Vec<&str> = vec![$($name),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
            for f in scenario_files(&[dir]).unwrap() {
                let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
                assert!(tested.contains(&stem.as_str()), "scenarios/{stem}.toml has no test here");
            }
        }
    };
}

scenarios! {
    raft_leader_partition => "raft-leader-partition",
    raft_power_outage => "raft-power-outage",
    raft_snapshot_crash => "raft-snapshot-crash",
    raft_crash_restart => "raft-crash-restart",
    raft_snapshot_install => "raft-snapshot-install",
    raft_power_loss => "raft-power-loss",
    raft_membership => "raft-membership",
    raft_chaos => "raft-chaos",
    raft_small_log => "raft-small-log",
    mst_capped_exchange => "mst-capped-exchange",
    raft_cut_on_vote => "raft-cut-on-vote",
    raft_clock_drift => "raft-clock-drift",
    raft_misdirected_io => "raft-misdirected-io",
    raft_snapshot_cut => "raft-snapshot-cut",
    raft_replace_node => "raft-replace-node",
    mst_partition_skew => "mst-partition-skew",
    mst_concurrent_writes => "mst-concurrent-writes",
    mst_chaos => "mst-chaos",
    eventual_partition => "eventual-partition",
    eventual_chaos => "eventual-chaos",
    none_baseline => "none-baseline",
    none_chaos => "none-chaos",
}

/// Chaos seeds per sweep seed in the generic chaos phase.
const CHAOS_PER_SEED: u64 = 16;

/// A short generic chaos phase beside the scenario sweep: scenarios drawn by `odgm-sim
/// chaos`'s generator (every mode, engine and nemesis), chaos seeds `0..8N` for
/// `ODGM_SIM_SEEDS=N` (48 by default), each in its own process; `ODGM_SIM_SEED=S` runs chaos
/// seed S alone. A failure prints the command that replays it.
#[test]
fn generic_chaos() {
    all_passed("chaos seeds", chaos_swept());
}

/// The generic chaos phase's runs, swept the first time any test asks.
fn chaos_swept() -> &'static [SweepRun] {
    static RUNS: OnceLock<Vec<SweepRun>> = OnceLock::new();
    RUNS.get_or_init(chaos_runs)
}

fn chaos_runs() -> Vec<SweepRun> {
    let seeds: Vec<u64> = match std::env::var("ODGM_SIM_SEED") {
        Ok(_) => common::seeds(DEFAULT_SEEDS),
        Err(_) => (0..common::seeds(DEFAULT_SEEDS).len() as u64 * CHAOS_PER_SEED).collect(),
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generic-chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let runs: Vec<(PathBuf, u64)> = seeds
        .into_iter()
        .map(|seed| {
            let d = odgm_sim::scenario::generate::chaos(seed);
            let file = dir.join(format!("{}.toml", d.scenario.name));
            std::fs::write(&file, d.to_toml()).unwrap();
            (file, seed)
        })
        .collect();
    sweep_processes(exe(), &runs, &options(2), &|_| {})
}

/// The shipped sweep (every scenario's seeds and the generic chaos phase) reaches every
/// corner of the stack marked as the sweep's (`odgm-sim coverage` lists them): a change
/// that stops the sweep from reaching one fails here, naming it. Checked only with at least
/// the default seeds (a replay of one seed reaches less).
#[test]
fn the_shipped_sweep_reaches_every_sweep_corner() {
    if common::seeds(DEFAULT_SEEDS).len() < DEFAULT_SEEDS as usize {
        eprintln!("fewer seeds than the shipped sweep's: coverage not checked");
        return;
    }
    let mut cov = Coverage::default();
    for name in SWEPT.keys() {
        cov.merge(&coverage_of(swept(name)));
    }
    cov.merge(&coverage_of(chaos_swept()));
    let missing = cov.missing(Expect::Sweep);
    for c in &missing {
        eprintln!("not reached: {c}: {}", c.why().trim());
    }
    assert!(
        missing.is_empty(),
        "{} corner(s) the shipped sweep must reach were not reached (above); the table:\n{}",
        missing.len(),
        cov.render()
    );
}

/// Runs `odgm-sim` with these arguments.
fn odgm(args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .args(args)
        .output()
        .expect("odgm-sim starts")
}

/// Runs a shipped scenario with a planted bug into a fresh `out` folder; the bug must fail
/// the run.
fn failing_run(
    name: &str,
    seed: u64,
    bug: &str,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let _ = std::fs::remove_dir_all(out);
    let (path, seed) = (scenario(name), seed.to_string());
    let mut args = vec!["run", path.to_str().unwrap(), "--seed", &seed, "--bug", bug];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    let run = odgm(&args);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the planted bug {bug} must fail {name} seed {seed}"
    );
    run
}

fn run_json(args: &[&str]) -> RunReport {
    let out = Command::new(exe())
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A seed's trace hash is the same run alone, in a sweep next to other seeds, and in
/// parallel with them; and `--check-determinism` agrees.
#[test]
fn a_seed_is_the_same_alone_in_a_sweep_and_in_parallel() {
    let path = scenario("raft-chaos");
    let p = path.to_str().unwrap();
    let alone = run_json(&[p, "--seed", "3"]);
    let runs: Vec<(PathBuf, u64)> = (1..=4).map(|s| (path.clone(), s)).collect();
    for jobs in [1, 2] {
        let results = sweep_processes(exe(), &runs, &options(jobs), &|_| {});
        let three = results.iter().find(|r| r.seed == 3).unwrap();
        let report = three.report.as_ref().unwrap();
        assert_eq!(report.trace_hash, alone.trace_hash, "jobs {jobs}");
        assert_eq!(report.ops, alone.ops, "jobs {jobs}");
        // Different seeds give different runs.
        let four = results.iter().find(|r| r.seed == 4).unwrap();
        assert_ne!(four.report.as_ref().unwrap().trace_hash, alone.trace_hash);
    }
    let check = Command::new(exe())
        .args(["run", p, "--seed", "3", "--check-determinism"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(text.contains(&alone.trace_hash), "{text}");
}

/// `odgm-sim differential` runs the same seed on every engine that fits a scenario and
/// finds them agreeing (the control); with a planted engine difference on (fjall's scan drops
/// the last pair of a range) it exits 1, naming the first history line where fjall parts
/// from the others and the commands that replay both runs.
#[test]
fn the_differential_sweep_agrees_across_engines_and_catches_a_planted_difference() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential");
    let diff = |extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&out);
        let o = Command::new(exe())
            .arg("differential")
            .arg(scenario("raft-leader-partition"))
            .arg(scenario("mst-concurrent-writes"))
            .args(["--seeds", "0", "--jobs", "2", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .expect("odgm-sim differential runs");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, text) = diff(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("raft-leader-partition seed 0: redb = memory fjall = memory"),
        "{text}"
    );
    assert!(
        text.contains("mst-concurrent-writes seed 0: redb = memory fjall = memory"),
        "{text}"
    );
    assert!(text.contains("4 comparison(s), 0 parted"), "{text}");
    let (code, text) = diff(&["--bug", "fjall-scan-drops-last"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "DIFFER mst-concurrent-writes seed 0: fjall parts from memory at history line"
        ),
        "{text}"
    );
    assert!(
        text.contains("--bug fjall-scan-drops-last"),
        "no replay command: {text}"
    );
}

/// The planted engine difference is one only the differential sees: every shipped scenario
/// on fjall passes its own checks with it on, and `odgm-sim bugs` catches it by comparing
/// engines, with the same comparison agreeing when the bug is off (the control).
#[test]
fn a_planted_engine_difference_is_seen_by_the_differential_alone() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let on_fjall: Vec<(PathBuf, u64)> = scenario_files(std::slice::from_ref(&dir))
        .unwrap()
        .into_iter()
        .filter(|f| {
            odgm_sim::scenario::Scenario::load(f)
                .unwrap()
                .cluster
                .engine
                == odgm_sim::storage::EngineKind::Fjall
        })
        .flat_map(|f| {
            common::seeds(DEFAULT_SEEDS)
                .into_iter()
                .map(move |s| (f.clone(), s))
        })
        .collect();
    assert!(!on_fjall.is_empty(), "no shipped scenario runs on fjall");
    let opts = SweepOptions {
        bugs: vec![odgm_sim::bugs::Bug::FjallScanDropsLast],
        ..options(2)
    };
    all_passed(
        "fjall runs with fjall-scan-drops-last on",
        &sweep_processes(exe(), &on_fjall, &opts, &|_| {}),
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential-bug");
    let o = odgm(&[
        "bugs",
        "--bug",
        "fjall-scan-drops-last",
        "--seeds",
        "3",
        "--jobs",
        "2",
        "--scenario-dir",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("by mst-concurrent-writes seed")
            && text.contains("control passed")
            && text.contains("fjall parts from memory at history line")
            && text.contains("every run passed its own checks"),
        "{text}"
    );
}

/// A scenario file with a mistake is refused with its file and line, and nothing runs.
#[test]
fn a_bad_scenario_is_refused_before_anything_runs() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(scenario("raft-crash-restart"))
        .unwrap()
        .replace("engine = \"redb\"", "engine = \"rocksdb\"");
    std::fs::write(&bad, &text).unwrap();
    let out = Command::new(exe())
        .args(["run", bad.to_str().unwrap(), "--seed", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("rocksdb")).unwrap() + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}:")) && err.contains("rocksdb"),
        "{err}"
    );
}

/// A failing run (the seed's fire-and-forget eventual consistency, which cannot repair a
/// partition) prints its failure and replay command, exits 1, and writes a folder with the
/// scenario, seed, history, trace, report and visualization.
#[test]
fn a_failing_run_writes_its_folder_and_replay_command() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("failing-run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fire-and-forget.toml");
    // The partition lasts until the fault phase ends, so no later write hides the
    // divergence.
    let text = "duration_ms = 6000\nquiet_ms = 3000\n\n[cluster]\nmode = \"eventual\"\n\
                engine = \"redb\"\nnodes = 3\n\n[cluster.eventual]\nrepair = false\n\n\
                [workload]\nclients = 3\nkeys = 20\nrate = 10.0\n\n[[schedule]]\nat_ms = 1000\n\
                fault = \"partition\"\ngroups = [[1], [2, 3]]\n";
    std::fs::write(&file, text).unwrap();
    let out = Command::new(exe())
        .args(["run", file.to_str().unwrap(), "--seed", "1", "--out"])
        .arg(dir.join("runs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL fire-and-forget seed 1"), "{stdout}");
    assert!(stdout.contains("convergence:"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            // The test runs the debug build, and a replay names the build's profile.
            "replay: cargo run -- run {} --seed 1",
            file.display()
        )),
        "{stdout}"
    );
    let folder = dir.join("runs").join("fire-and-forget-seed-1");
    for f in [
        "scenario.toml",
        "seed",
        "replay",
        "history.jsonl",
        "trace.log",
        "report.json",
        "history.html",
    ] {
        let meta = std::fs::metadata(folder.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let trace = std::fs::read_to_string(folder.join("trace.log")).unwrap();
    assert!(trace
        .lines()
        .next()
        .unwrap()
        .contains("scenario fire-and-forget seed 1"));
}

/// Each planted bug, switched on with `--bug`, makes a shipped scenario fail within a few
/// seeds: the checks can fail.
/// `odgm-sim bugs` reports a planted bug as caught (exit 0) when a scenario that can see it
/// fails, and as escaped (exit 1) when run only against a scenario that cannot: the command
/// can fail. CI runs the full hunt over every bug (`odgm-sim bugs --seeds 10`).
#[test]
fn the_bugs_command_reports_caught_and_escaped_bugs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bug-runs");
    let json = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bugs.json");
    let bugs = |extra: &[&str]| {
        let o = Command::new(exe())
            .args([
                "bugs",
                "--bug",
                "disk-sync-lies",
                "--seeds",
                "2",
                "--jobs",
                "2",
            ])
            .arg("--scenario-dir")
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .arg("--json")
            .arg(&json)
            .args(extra)
            .output()
            .expect("odgm-sim bugs runs");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, text) = bugs(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("disk-sync-lies") && text.contains("caught after"),
        "{text}"
    );
    assert!(
        text.contains("--bug disk-sync-lies"),
        "no replay command: {text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report[0]["caught"], true);

    // Crashes without power loss keep what the OS cached, so a lying sync cannot show.
    let crash = dir.join("raft-crash-restart.toml");
    let (code, text) = bugs(&["--scenario", crash.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ESCAPED"), "{text}");
}

/// `odgm-sim shrink` turns a failing run folder into a smaller scenario that still fails the
/// same check with the same seed.
#[test]
fn shrink_writes_a_smaller_scenario_that_still_fails() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shrink-runs");
    failing_run("mst-partition-skew", 0, "mst-no-tombstones", &out, &[]);
    let dir = out.join("mst-partition-skew-seed-0");
    let shrink = odgm(&["shrink", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&shrink.stdout);
    assert_eq!(shrink.status.code(), Some(0), "{text}");
    let minimal = dir.join("minimal.toml");
    let small = odgm_sim::scenario::Scenario::load(&minimal).expect("minimal scenario loads");
    let big = odgm_sim::scenario::Scenario::load(&scenario("mst-partition-skew")).unwrap();
    assert!(
        small.schedule.len() < big.schedule.len() || small.cluster.nodes < big.cluster.nodes,
        "nothing shrank: {text}"
    );
    assert_eq!(small.bugs, vec![odgm_sim::bugs::Bug::MstNoTombstones]);
    let replay = odgm(&[
        "run",
        minimal.to_str().unwrap(),
        "--seed",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "the minimal scenario must still fail"
    );
}

#[test]
fn shrink_turns_the_random_nemesis_into_the_schedule_that_ran() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shrink-nemesis-runs");
    let run = failing_run("eventual-chaos", 1, "eventual-no-repair", &out, &["--json"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a report line")).expect("json");
    let ran = report["faults_ran"].as_array().expect("faults_ran").len();
    assert!(ran > 0, "the nemesis applied no fault: {stdout}");
    let dir = out.join("eventual-chaos-seed-1");
    let explicit = odgm_sim::scenario::Scenario::load(&dir.join("faults-ran.toml"))
        .expect("faults-ran.toml is a valid scenario");
    assert!(explicit.nemesis.is_none());
    assert_eq!(explicit.schedule.len(), ran);
    // Two candidate runs: the original, then the nemesis as the schedule that ran.
    let shrink = odgm(&["shrink", dir.to_str().unwrap(), "--max-runs", "2"]);
    let text = String::from_utf8_lossy(&shrink.stdout);
    assert_eq!(shrink.status.code(), Some(0), "{text}");
    assert!(text.contains("still fails, kept"), "{text}");
    let small = odgm_sim::scenario::Scenario::load(&dir.join("minimal.toml")).unwrap();
    assert!(small.nemesis.is_none(), "{text}");
    assert_eq!(small.schedule, explicit.schedule);
}

/// A scan failure shrinks: with the planted bug that pairs each scanned key with the next
/// key's value, an eventually consistent run (no linearizability check) fails the scan
/// check alone, and `shrink` keeps a smaller scenario that fails the same check. (The check
/// kind is what shrink matches, not the failure's text, which names a time and a value that
/// change with every candidate.)
#[test]
fn a_scan_failure_shrinks_to_a_smaller_scenario_failing_the_same_check() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shrink-scan-runs");
    let run = failing_run(
        "eventual-partition",
        0,
        "scan-values-shifted",
        &out,
        &["--json"],
    );
    let report: RunReport = serde_json::from_str(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .last()
            .expect("a report line"),
    )
    .expect("a report");
    let kinds: Vec<CheckKind> = report.failures.iter().map(|f| f.kind()).collect();
    assert_eq!(kinds, vec![CheckKind::ScanValue], "{:?}", report.failures);
    let dir = out.join("eventual-partition-seed-0");
    let shrink = odgm(&["shrink", dir.to_str().unwrap(), "--max-runs", "40"]);
    let text = String::from_utf8_lossy(&shrink.stdout);
    assert_eq!(shrink.status.code(), Some(0), "{text}");
    let minimal = dir.join("minimal.toml");
    let small = odgm_sim::scenario::Scenario::load(&minimal).expect("minimal scenario loads");
    let big = odgm_sim::scenario::Scenario::load(&scenario("eventual-partition")).unwrap();
    assert!(
        small.schedule.len() < big.schedule.len()
            && (small.duration_ms < big.duration_ms
                || small.workload.clients < big.workload.clients),
        "nothing shrank: {text}"
    );
    let replay = run_json(&[
        minimal.to_str().unwrap(),
        "--seed",
        "0",
        "--out",
        out.join("replay").to_str().unwrap(),
    ]);
    assert!(
        replay
            .failures
            .iter()
            .any(|f| f.kind() == CheckKind::ScanValue),
        "the minimal scenario must fail the scan check: {:?}",
        replay.failures
    );
}

/// A leader that answers scans and counts from its own state without confirming it still
/// leads (the planted bug) serves stale ones while it is cut off: the check of scans and
/// counts as reads of every key at one instant catches it, and nothing else does (its gets
/// still confirm leadership, so the single-key operations are linearizable). The same
/// seed passes without the bug (the scenario sweep runs it).
#[test]
fn stale_scans_on_a_deposed_leader_fail_the_multi_key_read_check_alone() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stale-scan-runs");
    let run = failing_run(
        "raft-leader-partition",
        0,
        "raft-leader-local-scans",
        &out,
        &["--json"],
    );
    let report: RunReport = serde_json::from_str(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .last()
            .expect("a report line"),
    )
    .expect("a report");
    let kinds: Vec<CheckKind> = report.failures.iter().map(|f| f.kind()).collect();
    assert_eq!(
        kinds,
        vec![CheckKind::MultiKeyRead],
        "{:?}",
        report.failures
    );
}

/// Each invariant checked over the recorded Raft events, and the check for nodes that stop
/// by themselves, fires in a simulation when a broken component (a planted bug) breaks it,
/// and the same seed passes with the bug off.
#[test]
fn each_raft_event_check_fires_on_a_broken_component() {
    let cases: [(&str, u64, &str, &[CheckKind]); 4] = [
        (
            "raft-power-outage",
            1,
            "raft-ack-before-sync",
            &[
                CheckKind::StateMachineSafety,
                CheckKind::LeaderCompleteness,
                CheckKind::Durability,
            ],
        ),
        (
            "raft-cut-on-vote",
            1,
            "raft-vote-not-synced",
            &[CheckKind::ElectionSafety, CheckKind::Durability],
        ),
        (
            "raft-snapshot-install",
            0,
            "raft-purge-ungated",
            &[CheckKind::Monotonicity],
        ),
        (
            "raft-crash-restart",
            0,
            "raft-init-not-idempotent",
            &[CheckKind::NodeStopped],
        ),
    ];
    for (name, seed, bug, kinds) in cases {
        let path = scenario(name);
        let (path, seed) = (path.to_str().unwrap(), seed.to_string());
        let broken = run_json(&[path, "--seed", &seed, "--bug", bug]);
        let found: Vec<CheckKind> = broken.failures.iter().map(|f| f.kind()).collect();
        for kind in kinds {
            assert!(
                found.contains(kind),
                "{name} seed {seed} with {bug}: no {kind} failure in {:?}",
                broken.failures
            );
        }
        let control = run_json(&[path, "--seed", &seed]);
        assert!(
            control.passed,
            "{name} seed {seed} fails with no bug: {:?}",
            control.failures
        );
    }
}

/// A leader lease timed on the leader's own clock (planted bug `raft-lease-reads`) is caught
/// when clocks drift and their drift reaches the nodes' timers, and passes when the same
/// scenario keeps every clock on time: drift is what exposes it.
#[test]
fn a_lease_on_a_drifting_clock_is_caught_and_only_with_drift() {
    let path = scenario("raft-clock-drift");
    let drifting = run_json(&[
        path.to_str().unwrap(),
        "--seed",
        "0",
        "--bug",
        "raft-lease-reads",
    ]);
    assert!(
        drifting
            .failures
            .iter()
            .any(|f| f.kind() == CheckKind::Linearizability),
        "{:?}",
        drifting.failures
    );
    let on_time = std::fs::read_to_string(&path)
        .unwrap()
        .replace("clock_drift_ppm = 50000", "clock_drift_ppm = 0")
        .replace("drift_ppm = -900000", "drift_ppm = 0")
        .replace("drift_ppm = 100000", "drift_ppm = 0");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("raft-clock-on-time.toml");
    std::fs::write(&file, on_time).unwrap();
    for seed in ["0", "1", "2"] {
        let r = run_json(&[
            file.to_str().unwrap(),
            "--seed",
            seed,
            "--bug",
            "raft-lease-reads",
        ]);
        assert!(r.passed, "seed {seed} on time: {:?}", r.failures);
    }
}

/// `odgm-sim chaos --bug NAME` hunts a planted bug with drawn scenarios, and counts a catch
/// only where the same seed passes with the bug off.
#[test]
fn generic_chaos_catches_a_planted_bug_with_a_passing_control() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generic-hunt");
    let _ = std::fs::remove_dir_all(&out);
    let o = odgm(&[
        "chaos",
        "--bug",
        "raft-init-not-idempotent",
        "--budget",
        "120s",
        "--max-runs",
        "20",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("caught after"), "{text}");
    assert!(text.contains("control passed"), "{text}");
    assert!(text.contains("--bug raft-init-not-idempotent"), "{text}");
}

/// Runs a pinned regression scenario (`tests/data/regressions/NAME.toml`) with its seed and
/// asserts it passes. The files are kept as drawn when the failure was found: the chaos
/// generator's draws change as it grows, so regenerating a seed would not give the same run.
fn regression_passes(name: &str, seed: u64) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/regressions")
        .join(format!("{name}.toml"));
    let r = run_json(&[file.to_str().unwrap(), "--seed", &seed.to_string()]);
    assert!(r.passed, "{name} seed {seed}: {:?}", r.failures);
}

/// The quiet phase starts at the heal: chaos seed 702291's membership change, slowed by a
/// nearly stalled leader clock, ran 8 s past the fault phase, and the final reads came right
/// after the heal, before the cluster had a leader again (availability failure).
#[test]
fn the_quiet_phase_is_whole_when_a_fault_runs_late() {
    regression_passes("chaos-702291", 702_291);
}

/// Chaos seed 430 (drawn with snapshots in 1 KiB chunks) found two stack bugs. A follower
/// took a new leader's transfer of a snapshot it had half-received from the old leader as a
/// resend of the old transfer, and installed it under the old vote; openraft refused it, the
/// leader read its own vote in the refusal as success, and the follower's log got a hole
/// (an openraft panic on apply). And a deposed leader forwarded writes it had logged, and the
/// next leader had committed, when openraft dropped them from its log: one put ran twice,
/// and a later scan saw a value that had been overwritten (multi-key read failure).
#[test]
fn a_snapshot_resent_by_a_new_leader_and_a_deposed_leaders_writes_run_once() {
    regression_passes("chaos-430", 430);
}

/// Chaos seed 1714: elections livelocked for the rest of the run. Election ranks spread
/// from 150 to 525 ms; a node with a shorter log, refused for it, retried after its own
/// timeout plus openraft's smaller-log backoff (452 ms), before the node with the longer log
/// (525 ms) ever asked, so it took every new term first. Ranks now stay within that retry
/// (`RaftOptions::max_election_ranks`).
#[test]
fn the_node_with_the_longer_log_gets_to_campaign() {
    regression_passes("chaos-1714", 1714);
}

/// Chaos seed 51574 (Raft on fjall): a follower installed a snapshot, purged its log and
/// crashed; fjall reopened without the pairs the install had bulk-ingested into a cleared
/// keyspace, and the purged log could not apply them again (state-machine safety). Installs
/// now write through fjall's journal.
#[test]
fn an_installed_snapshot_survives_a_crash_on_fjall() {
    regression_passes("chaos-51574", 51_574);
}

/// Guided chaos seed 1414: the leader built a newer snapshot, releasing the one openraft had
/// picked to send, before the transfer opened it; the send's storage error stopped the
/// leader. A superseded snapshot now fails the send as a network error, and openraft sends
/// the current one.
#[test]
fn a_snapshot_replaced_before_its_transfer_does_not_stop_the_leader() {
    regression_passes("chaos-1414-of-1142", 1414);
}
