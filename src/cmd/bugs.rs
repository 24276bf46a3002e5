//! `odgm-sim bugs`: hunts each planted bug, and reports per bug whether it was caught, after
//! how many runs, and how long that took.
//!
//! - By default each bug runs against the scenarios that should catch it, seed after seed,
//!   until a run fails or the seed budget is spent.
//! - `--generic` hunts it with the chaos generator instead, the way nobody anticipated it:
//!   seed after seed draws a whole scenario ([`generate::chaos`]), skipping only draws whose
//!   cluster does not run the bug's code at all ([`reaches`]), until a run fails or the run
//!   budget is spent. A failing run is rerun with the bug off, as a control: the catch
//!   counts only if the control passes; a control that fails is a failure of the unbugged
//!   stack, reported as such, and the hunt goes on. `--guided` draws as `chaos --guided`
//!   does.
//! - A bug no check of a single run can see ([`Detector::Differential`]) is hunted by
//!   comparing the same run across engines ([`hunt_differential`]), over its scenarios or
//!   over chaos draws with `--generic` (uniform ones: only a draw without crashes fits more
//!   than one engine); the same comparison with the bug off is the control.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::differential::compare;
use super::folder::DEFAULT_OUT;
use super::guided::Guide;
use super::process::{control, exe, sweep_processes, Findings, SweepOptions, SweepRun};
use crate::bugs::{Bug, Detector};
use crate::rt::Stopwatch;
use crate::scenario::{generate, Scenario};
use crate::shard::ShardKind;
use crate::storage::EngineKind;

/// Arguments of `odgm-sim bugs`.
#[derive(Debug, Args)]
pub struct BugsArgs {
    /// Most seeds per bug (each seed runs every scenario that should catch the bug).
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// Only these bugs (repeatable); every planted bug if none.
    #[arg(long = "bug", value_enum)]
    pub bugs: Vec<Bug>,
    /// Run these scenario files instead of each bug's own (for checking that a bug escapes
    /// a scenario that cannot see it).
    #[arg(long = "scenario")]
    pub scenarios: Vec<PathBuf>,
    /// The folder holding the shipped scenarios.
    #[arg(long, default_value = "scenarios")]
    pub scenario_dir: PathBuf,
    /// Processes at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where the catching runs write their folders.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Hunt with the chaos generator instead of each bug's own scenarios.
    #[arg(long)]
    pub generic: bool,
    /// Most runs per bug with `--generic`.
    #[arg(long, default_value_t = 500)]
    pub runs: u64,
    /// The first chaos seed with `--generic`.
    #[arg(long, default_value_t = 0)]
    pub start_seed: u64,
    /// With `--generic`: draw as `chaos --guided` does (half the runs are children of runs
    /// that reached rare corners) instead of uniformly. A bug found only by comparing
    /// engines is hunted with uniform draws all the same.
    #[arg(long, requires = "generic")]
    pub guided: bool,
}

/// Whether a drawn scenario runs the code a planted bug lives in: its replication mode, or
/// the simulated disk for a disk bug (redb is the engine on simulated disks), for a bug that
/// needs lost writes to show, a Raft log on a disk that can lose them, and for one that needs
/// a crash to show, a Raft node that can crash (not on the memory engine).
pub fn reaches(bug: Bug, s: &Scenario) -> bool {
    let (mode, engine) = (s.cluster.mode, s.cluster.engine);
    match bug {
        Bug::LwwRemoteWins => matches!(mode, ShardKind::Mst | ShardKind::Eventual),
        Bug::EventualNoRepair => mode == ShardKind::Eventual,
        Bug::MstNoTombstones => mode == ShardKind::Mst,
        Bug::DiskSyncLies => engine == EngineKind::Redb,
        Bug::RaftAckBeforeSync
        | Bug::RaftAppliedNotPersisted
        | Bug::RaftVoteNotSynced
        | Bug::RaftPurgeUngated => mode == ShardKind::Raft && engine == EngineKind::Redb,
        Bug::RaftSnapshotNonAtomic | Bug::RaftInitNotIdempotent => {
            mode == ShardKind::Raft && engine != EngineKind::Memory
        }
        Bug::RaftFollowerLocalReads
        | Bug::RaftLeaderLocalScans
        | Bug::RaftAppendAckEarly
        | Bug::RaftLeaseReads
        | Bug::RaftInstallUnstaged => mode == ShardKind::Raft,
        Bug::ScanValuesShifted => true,
        Bug::FjallScanDropsLast => engine == EngineKind::Fjall,
    }
}

/// What happened to one bug.
#[derive(Debug, Clone, Serialize)]
pub struct Hunt {
    /// The bug.
    pub bug: Bug,
    /// Whether a run failed with the bug on.
    pub caught: bool,
    /// Runs done (up to and including the first failing one).
    pub runs: usize,
    /// Seeds started.
    pub seeds: u64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// The failing run: scenario, seed, what failed, and its replay command.
    pub by: Option<Caught>,
    /// Generic hunts: draws skipped because their cluster does not run the bug's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    /// Generic hunts: the control runs (bug off) of failing runs that failed too: failures of
    /// the unbugged stack, not catches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control_failed: Vec<Caught>,
    /// Generic hunts: runs that failed only because the checker's budget ran out (no verdict
    /// is no evidence of the bug; the hunt goes on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<Caught>,
}

/// The run that caught a bug.
#[derive(Debug, Clone, Serialize)]
pub struct Caught {
    /// Scenario file.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// What it found.
    #[serde(flatten)]
    pub found: Findings,
    /// The command that replays it.
    pub replay: String,
    /// One line saying what failed.
    #[serde(skip)]
    pub what: String,
}

/// Hunts one bug over `scenarios`: seeds `0..budget`, every scenario per seed, `jobs` runs
/// at a time; stops after the first batch with a failing run and reports the first failing
/// run in seed order.
pub fn hunt(
    exe: &Path,
    bug: Bug,
    scenarios: &[PathBuf],
    budget: u64,
    jobs: usize,
    out: &Path,
) -> Hunt {
    let started = Stopwatch::start();
    let opts = SweepOptions {
        jobs,
        bugs: vec![bug],
        out: out.to_path_buf(),
        twice: false,
        keep: false,
    };
    let all: Vec<(PathBuf, u64)> = (0..budget)
        .flat_map(|seed| scenarios.iter().map(move |s| (s.clone(), seed)))
        .collect();
    let mut done = 0;
    let mut caught: Option<SweepRun> = None;
    for batch in all.chunks(jobs.max(1)) {
        let results = sweep_processes(exe, batch, &opts, &|_| {});
        for r in results {
            if caught.is_none() {
                done += 1;
                if !r.passed() {
                    caught = Some(r);
                }
            }
        }
        if caught.is_some() {
            break;
        }
    }
    let seeds = match &caught {
        Some(r) => r.seed + 1,
        None => budget,
    };
    Hunt {
        bug,
        caught: caught.is_some(),
        runs: done,
        seeds,
        wall_s: started.elapsed_secs(),
        by: caught.map(|r| Caught::of(&r, bug)),
        skipped: None,
        control_failed: Vec::new(),
        undecided: Vec::new(),
    }
}

impl Caught {
    fn of(r: &SweepRun, bug: Bug) -> Caught {
        Caught {
            scenario: r.scenario.display().to_string(),
            seed: r.seed,
            found: r.findings(),
            replay: r.replay(&[bug]),
            what: r.what_failed(),
        }
    }
}

/// Hunts one bug with the chaos generator: seeds from `start_seed` on, each drawing a
/// scenario (written under `out/generic/<bug>/`), draws the bug cannot reach skipped, `jobs`
/// runs at a time, at most `budget` runs and no new batch after `seconds` of wall time. The
/// first failing run in seed order whose control (the same seed with the bug off) passes is
/// the catch. `guided` draws as `chaos --guided` does, learning from the runs' corners.
pub fn hunt_generic(
    exe: &Path,
    bug: Bug,
    start_seed: u64,
    (budget, seconds): (u64, f64),
    (jobs, guided): (usize, bool),
    out: &Path,
) -> Result<Hunt, String> {
    if bug.detector() == Detector::Differential {
        // Uniform draws: only a draw without crashes fits more than one engine (see
        // `differential::on_engine`), and the guide learns from single runs.
        let draw = |seed| Ok(vec![generate::chaos(seed).scenario]);
        let limits = ((start_seed, u64::MAX), (budget, seconds));
        return hunt_differential(exe, bug, draw, limits, jobs, out);
    }
    let started = Stopwatch::start();
    let dir = out.join("generic").join(bug.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let opts = SweepOptions {
        jobs,
        bugs: vec![bug],
        out: out.to_path_buf(),
        twice: false,
        keep: false,
    };
    let (mut seed, mut runs, mut skipped) = (start_seed, 0u64, 0u64);
    let mut caught: Option<SweepRun> = None;
    let (mut control_failed, mut undecided) = (Vec::new(), Vec::new());
    let mut guide = Guide::new(start_seed);
    while caught.is_none() && runs < budget && started.elapsed_secs() < seconds {
        let (mut batch, mut drawn) = (Vec::new(), Vec::new());
        while batch.len() < jobs.max(1) && runs + (batch.len() as u64) < budget {
            let d = if guided {
                guide.draw(seed).0
            } else {
                generate::chaos(seed)
            };
            if reaches(bug, &d.scenario) {
                let file = dir.join(format!("{}.toml", d.scenario.name));
                std::fs::write(&file, d.to_toml())
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                batch.push((file, seed));
                drawn.push(d);
            } else {
                skipped += 1;
            }
            seed += 1;
        }
        for (r, d) in sweep_processes(exe, &batch, &opts, &|_| {})
            .into_iter()
            .zip(drawn)
        {
            if caught.is_some() {
                break;
            }
            runs += 1;
            if guided {
                let corners = r.report.as_ref().map(|rep| rep.corners.clone());
                guide.learn(d, r.seed, &corners.unwrap_or_default());
            }
            if r.passed() {
                let _ = std::fs::remove_file(&r.scenario);
                continue;
            }
            if r.undecided() {
                undecided.push(Caught::of(&r, bug));
                continue;
            }
            let c = control(exe, &r, out);
            if c.passed() {
                caught = Some(r);
            } else {
                control_failed.push(Caught::of(&c, bug));
            }
        }
    }
    Ok(Hunt {
        bug,
        caught: caught.is_some(),
        runs: runs as usize,
        seeds: seed - start_seed,
        wall_s: started.elapsed_secs(),
        by: caught.map(|r| Caught::of(&r, bug)),
        skipped: Some(skipped),
        control_failed,
        undecided,
    })
}

/// Hunts a bug only comparing engines shows: seed after seed from `start`, every scenario
/// `scenarios(seed)` gives runs on each engine it fits with the bug on ([`compare`]), until
/// `seeds` seeds or `budget` runs are spent or no new seed starts after `seconds`. The
/// first comparison that parts is the catch if the same comparison with the bug off (a
/// control, under `control/`) agrees and passes; scenarios that fit fewer than two engines
/// count as skipped.
pub fn hunt_differential(
    exe: &Path,
    bug: Bug,
    mut scenarios: impl FnMut(u64) -> Result<Vec<Scenario>, String>,
    ((start, seeds), (budget, seconds)): ((u64, u64), (u64, f64)),
    jobs: usize,
    out: &Path,
) -> Result<Hunt, String> {
    let started = Stopwatch::start();
    let dir = out.join("differential").join(bug.name());
    let control_dir = dir.join("control");
    let (mut runs, mut skipped, mut seed) = (0u64, 0u64, start);
    let mut by = None;
    let mut control_failed = Vec::new();
    'hunt: while by.is_none()
        && runs < budget
        && seed - start < seeds
        && started.elapsed_secs() < seconds
    {
        for s in scenarios(seed)? {
            let on = compare(exe, &s, &[seed], (&EngineKind::ALL, &[bug]), jobs, &dir)?;
            let Some(c) = on.seeds.first() else {
                skipped += 1;
                continue;
            };
            runs += c.runs.len() as u64;
            let Some((engine, p)) = c.parted.first() else {
                continue;
            };
            let off = compare(
                exe,
                &s,
                &[seed],
                (&EngineKind::ALL, &[]),
                jobs,
                &control_dir,
            )?;
            let checks = if c.all_passed() {
                "every run passed its own checks".to_string()
            } else {
                let failed = c.runs.iter().filter(|(_, f, _)| !f.is_empty());
                let failed: Vec<String> = failed.map(|(e, f, _)| format!("{e}: {f}")).collect();
                format!("its own checks failed too ({})", failed.join("; "))
            };
            let found = Caught {
                scenario: dir
                    .join(engine.name())
                    .join(format!("{}.toml", s.name))
                    .display()
                    .to_string(),
                seed,
                found: Findings::default(),
                replay: c.replay(*engine).to_string(),
                what: format!(
                    "{engine} parts from {} at {}; {checks}",
                    c.reference, p.place
                ),
            };
            match off.seeds.first() {
                Some(o) if o.parted.is_empty() && o.all_passed() => {
                    by = Some(found);
                    break 'hunt;
                }
                _ => control_failed.push(found),
            }
            if runs >= budget {
                break;
            }
        }
        seed += 1;
    }
    Ok(Hunt {
        bug,
        caught: by.is_some(),
        runs: runs as usize,
        seeds: seed + u64::from(by.is_some()) - start,
        wall_s: started.elapsed_secs(),
        by,
        skipped: Some(skipped),
        control_failed,
        undecided: Vec::new(),
    })
}

/// A scenario file's stem (its name in the output).
fn stem(f: &Path) -> String {
    f.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// `odgm-sim bugs`.
pub fn bugs_command(args: &BugsArgs) -> Result<ExitCode, String> {
    let bugs: Vec<Bug> = if args.bugs.is_empty() {
        Bug::all().to_vec()
    } else {
        args.bugs.clone()
    };
    if args.seeds == 0 || args.runs == 0 {
        return Err("--seeds and --runs must be at least 1".into());
    }
    if args.generic && !args.scenarios.is_empty() {
        return Err("--generic draws its scenarios; it takes no --scenario".into());
    }
    // Every scenario is checked before anything runs.
    let mut plan = Vec::new();
    for bug in &bugs {
        let files: Vec<PathBuf> = if args.generic {
            Vec::new()
        } else if args.scenarios.is_empty() {
            bug.caught_by()
                .iter()
                .map(|s| args.scenario_dir.join(format!("{s}.toml")))
                .collect()
        } else {
            args.scenarios.clone()
        };
        for f in &files {
            Scenario::load(f).map_err(|e| e.to_string())?;
        }
        plan.push((*bug, files));
    }
    let jobs = super::default_jobs(args.jobs);
    let exe = exe()?;
    if args.generic {
        println!(
            "bugs --generic{}: {} planted bug(s), up to {} chaos run(s) each from seed {}, {} run(s) at a time",
            if args.guided { " --guided" } else { "" },
            bugs.len(),
            args.runs,
            args.start_seed,
            jobs
        );
    } else {
        println!(
            "bugs: {} planted bug(s), up to {} seed(s) each, {} run(s) at a time",
            bugs.len(),
            args.seeds,
            jobs
        );
    }
    let mut hunts = Vec::new();
    for (bug, files) in &plan {
        let h = if args.generic {
            hunt_generic(
                &exe,
                *bug,
                args.start_seed,
                (args.runs, f64::INFINITY),
                (jobs, args.guided),
                &args.out,
            )?
        } else if bug.detector() == Detector::Differential {
            let loaded = files
                .iter()
                .map(|f| Scenario::load(f).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let load = |_| Ok(loaded.clone());
            let limits = ((0, args.seeds), (u64::MAX, f64::INFINITY));
            hunt_differential(&exe, *bug, load, limits, jobs, &args.out)?
        } else {
            hunt(&exe, *bug, files, args.seeds, jobs, &args.out)
        };
        print_hunt(&h, files);
        hunts.push(h);
    }
    let escaped: Vec<&str> = hunts
        .iter()
        .filter(|h| !h.caught)
        .map(|h| h.bug.name())
        .collect();
    println!(
        "{} of {} bug(s) caught in {:.1} s",
        hunts.len() - escaped.len(),
        hunts.len(),
        hunts.iter().map(|h| h.wall_s).sum::<f64>()
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&hunts).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if escaped.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("escaped: {}", escaped.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// Prints one bug's hunt: the catch (and, for a generic hunt, that its control passed), or
/// that it escaped; and any run that failed with the bug off too.
pub(super) fn print_hunt(h: &Hunt, files: &[PathBuf]) {
    let within = match h.skipped {
        Some(skipped) => format!("{} seed(s) drawn, {skipped} not reaching it", h.seeds),
        None => format!("{} seed(s)", h.seeds),
    };
    match &h.by {
        Some(by) => println!(
            "  {:<28} caught after {:>3} run(s) ({within}) in {:>6.1} s by {} seed {}{}: {}\n  {:<28} replay: {}",
            h.bug,
            h.runs,
            h.wall_s,
            stem(Path::new(&by.scenario)),
            by.seed,
            if h.skipped.is_some() { ", control passed" } else { "" },
            by.what,
            "",
            by.replay
        ),
        None => println!(
            "  {:<28} ESCAPED {} run(s) ({within}) in {:.1} s{}",
            h.bug,
            h.runs,
            h.wall_s,
            if files.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    files.iter().map(|f| stem(f)).collect::<Vec<_>>().join(", ")
                )
            }
        ),
    }
    for c in &h.undecided {
        println!(
            "  {:<28} seed {} has no verdict (not a catch): {}",
            "", c.seed, c.what
        );
    }
    for c in &h.control_failed {
        println!(
            "  {:<28} seed {} fails with the bug off too (the stack's failure, not a catch): {}\n  {:<28} replay: {}",
            "",
            c.seed,
            c.what,
            "",
            c.replay
        );
    }
}
