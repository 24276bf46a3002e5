//! `odgm-sim differential`: the same scenario and seed on every storage engine. The engines
//! promise the same answers, so wherever a scenario fits every engine they must give the same
//! client-visible history (every operation, its times, its answer) and the same final reads
//! of every replica. A difference prints the first operation (or final read) where the runs
//! part, and the commands that replay both.
//!
//! The runs are made comparable by [`ClusterConfig::engine_neutral`]: the seed's random draws
//! do not depend on the engine, and no disk latency or fault is charged, so the only thing
//! that differs between the runs is the engine. An engine joins a scenario only where the
//! scenario fits it: the memory engine forgets everything when its process stops, so it
//! runs only scenarios without kills, power cuts or restarts; power cuts and disk faults
//! need redb's simulated disk (the scenario's validation refuses them elsewhere), and a
//! random nemesis that crashes nodes arms its crashes on that disk's syncs, so only redb
//! runs such a scenario as drawn.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::folder::DEFAULT_OUT;
use super::process::{exe, sweep_processes, SweepOptions, SweepRun};
use super::sweep::{scenario_files, SeedRange};
use crate::bugs::Bug;
use crate::scenario::{ClusterConfig, Fault, NemesisKind, Scenario};
use crate::storage::EngineKind;

/// Arguments of `odgm-sim differential`.
#[derive(Debug, Args)]
pub struct DifferentialArgs {
    /// Scenario files (or folders of them).
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Seeds `A..B` (B excluded) or one seed.
    #[arg(long, default_value = "0..5")]
    pub seeds: SeedRange,
    /// The engines to compare, comma-separated; the first that fits a scenario is the
    /// reference the others are compared with.
    #[arg(long, value_delimiter = ',', default_value = "memory,redb,fjall")]
    pub engines: Vec<EngineKind>,
    /// Processes at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Switch on a planted bug in every run (repeatable).
    #[arg(long = "bug", value_name = "NAME", value_enum)]
    pub bugs: Vec<Bug>,
    /// Where the per-engine scenarios and every run's folder go.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
}

/// Whether a scenario stops a process (its memory engine would forget what it held).
pub fn stops_processes(s: &Scenario) -> bool {
    let scheduled = s.schedule.iter().any(|f| {
        matches!(
            f.fault,
            Fault::Kill { .. } | Fault::PowerLoss { .. } | Fault::Restart { .. }
        )
    });
    scheduled || draws_crashes(s)
}

/// Whether the scenario's random nemesis draws crashes or power cuts: what it arms them on
/// depends on the engine (syncs of redb's simulated disk), so only redb runs it as drawn.
pub fn draws_crashes(s: &Scenario) -> bool {
    s.nemesis.as_ref().is_some_and(|n| {
        [NemesisKind::Kill, NemesisKind::PowerLoss]
            .iter()
            .any(|k| n.kinds.get(k).is_some_and(|w| *w > 0.0))
    })
}

/// `scenario` on `engine`, engine-neutral, if it fits the engine.
pub fn on_engine(s: &Scenario, engine: EngineKind) -> Result<Scenario, String> {
    if engine == EngineKind::Memory && stops_processes(s) {
        return Err("it stops processes, and the memory engine keeps nothing".into());
    }
    if engine != EngineKind::Redb && draws_crashes(s) {
        return Err(
            "its nemesis arms crashes on disk syncs where the disk is simulated (redb), so the runs would differ by more than the engine"
                .into(),
        );
    }
    let mut copy = s.clone();
    copy.cluster = ClusterConfig {
        engine,
        engine_neutral: true,
        ..s.cluster.clone()
    };
    // The scenario's own validation decides what else fits (power cuts, disk faults).
    Scenario::parse(&copy.to_toml(), &s.name, &s.name)
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
}

/// Where two runs of one seed part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parting {
    /// What differs: `history line N` or `final reads line N`.
    pub place: String,
    /// The reference run's line (empty where it has none).
    pub reference: String,
    /// The other run's line.
    pub other: String,
}

/// The first line where two texts differ, if they do.
pub fn first_difference(what: &str, a: &str, b: &str) -> Option<Parting> {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                return Some(Parting {
                    place: format!("{what} line {n}"),
                    reference: x.unwrap_or_default().to_string(),
                    other: y.unwrap_or_default().to_string(),
                })
            }
        }
    }
    None
}

/// What a run showed the outside: its history and its final reads (trace lines).
fn observed(run: &SweepRun, out: &Path) -> Result<(String, String), String> {
    let report = run.report.as_ref().map_err(|e| e.to_string())?;
    let folder = out.join(format!("{}-seed-{}", report.scenario, run.seed));
    let read = |f: &str| {
        std::fs::read_to_string(folder.join(f))
            .map_err(|e| format!("{}: {e}", folder.join(f).display()))
    };
    let trace = read("trace.log")?;
    let finals: Vec<&str> = trace
        .lines()
        // The line's time stamp comes first; the read itself is what must agree.
        .filter_map(|l| l.find("final read key").map(|at| &l[at..]))
        .collect();
    Ok((read("history.jsonl")?, finals.join("\n")))
}

/// One seed of one scenario, run on every engine that fits it.
#[derive(Debug, Clone)]
pub struct Compared {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The first engine that fits, the others' reference.
    pub reference: EngineKind,
    /// Each engine's run: the engine, what failed its own checks (empty: it passed), and
    /// its replay command; the reference first.
    pub runs: Vec<(EngineKind, String, String)>,
    /// Each other engine whose run parted from the reference's, and where.
    pub parted: Vec<(EngineKind, Parting)>,
}

impl Compared {
    /// Whether every run passed its own checks.
    pub fn all_passed(&self) -> bool {
        self.runs.iter().all(|(_, failed, _)| failed.is_empty())
    }

    /// The command that replays `engine`'s run ("" if it did not run).
    pub fn replay(&self, engine: EngineKind) -> &str {
        self.runs
            .iter()
            .find(|(e, _, _)| *e == engine)
            .map_or("", |(_, _, cmd)| cmd.as_str())
    }
}

/// What [`compare`] did with one scenario.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// The engines that do not fit the scenario, and why.
    pub skipped: Vec<(EngineKind, String)>,
    /// One entry per seed; empty when fewer than two engines fit.
    pub seeds: Vec<Compared>,
}

/// Runs scenario `s` for each of `seeds` on each of `engines` that fits it (an
/// engine-neutral copy per engine under `dir/<engine>/`), `bugs` on, and compares each
/// engine's history and final reads with the first engine's.
pub fn compare(
    exe: &Path,
    s: &Scenario,
    seeds: &[u64],
    (engines, bugs): (&[EngineKind], &[Bug]),
    jobs: usize,
    dir: &Path,
) -> Result<Comparison, String> {
    let mut cmp = Comparison::default();
    let mut fitting: Vec<(EngineKind, PathBuf)> = Vec::new();
    for &e in engines {
        match on_engine(s, e) {
            Ok(copy) => {
                let path = dir.join(e.to_string()).join(format!("{}.toml", s.name));
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
                }
                std::fs::write(&path, copy.to_toml())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                fitting.push((e, path));
            }
            Err(why) => cmp.skipped.push((e, why)),
        }
    }
    if fitting.len() < 2 {
        return Ok(cmp);
    }
    let mut per_engine: Vec<(EngineKind, Vec<SweepRun>, PathBuf)> = Vec::new();
    for (e, path) in &fitting {
        let out = dir.join(e.to_string()).join("runs");
        let runs: Vec<(PathBuf, u64)> = seeds.iter().map(|&s| (path.clone(), s)).collect();
        let opts = SweepOptions {
            jobs,
            bugs: bugs.to_vec(),
            out: out.clone(),
            twice: false,
            keep: true,
        };
        per_engine.push((*e, sweep_processes(exe, &runs, &opts, &|_| {}), out));
    }
    let (reference, ref_runs, ref_out) = &per_engine[0];
    for (i, &seed) in seeds.iter().enumerate() {
        // A run that left no history (its process died, say) is not compared; it fails
        // its own checks, which its entry says.
        let ref_seen = observed(&ref_runs[i], ref_out);
        let mut c = Compared {
            scenario: s.name.clone(),
            seed,
            reference: *reference,
            runs: Vec::new(),
            parted: Vec::new(),
        };
        for (engine, runs, out) in &per_engine {
            let run = &runs[i];
            let seen = if engine == reference {
                ref_seen.as_ref().map(|_| ()).map_err(String::clone)
            } else {
                observed(run, out).map(|(history, finals)| {
                    if let Ok((ref_history, ref_finals)) = &ref_seen {
                        if let Some(p) = first_difference("history", ref_history, &history)
                            .or_else(|| first_difference("final reads", ref_finals, &finals))
                        {
                            c.parted.push((*engine, p));
                        }
                    }
                })
            };
            let failed = match (run.passed(), seen) {
                (true, Ok(())) => String::new(),
                (true, Err(e)) => format!("no history to compare: {e}"),
                (false, Ok(())) => run.what_failed(),
                (false, Err(e)) => format!("{}; no history to compare: {e}", run.what_failed()),
            };
            c.runs.push((*engine, failed, run.replay(bugs)));
        }
        cmp.seeds.push(c);
    }
    Ok(cmp)
}

/// Prints one compared seed: the engines that agree on one line, or each run that failed
/// its checks and each parting with the commands that replay both runs. Returns whether
/// everything agreed and passed.
pub fn print_compared(c: &Compared) -> bool {
    for (engine, failed, cmd) in &c.runs {
        if !failed.is_empty() {
            println!(
                "FAIL {} seed {} on {engine}: {failed}\n  replay: {cmd}",
                c.scenario, c.seed
            );
        }
    }
    for (engine, p) in &c.parted {
        println!(
            "DIFFER {} seed {}: {engine} parts from {} at {}\n  {}: {}\n  {engine}: {}\n  replay: {}\n          {}",
            c.scenario,
            c.seed,
            c.reference,
            p.place,
            c.reference,
            p.reference,
            p.other,
            c.replay(c.reference),
            c.replay(*engine)
        );
    }
    let ok = c.parted.is_empty() && c.all_passed();
    if ok {
        let agree: String = c
            .runs
            .iter()
            .skip(1)
            .map(|(e, _, _)| format!(" {e} = {}", c.reference))
            .collect();
        println!("{} seed {}:{agree}", c.scenario, c.seed);
    }
    ok
}

/// `odgm-sim differential`.
pub fn differential_command(args: &DifferentialArgs) -> Result<ExitCode, String> {
    let files = scenario_files(&args.scenarios)?;
    let dir = args.out.join("differential");
    let jobs = super::default_jobs(args.jobs);
    let exe = exe()?;
    let seeds: Vec<u64> = (args.seeds.start..args.seeds.end).collect();
    let (mut compared, mut parted, mut failed) = (0usize, 0usize, 0usize);
    for f in &files {
        let s = Scenario::load(f).map_err(|e| e.to_string())?;
        let cmp = compare(&exe, &s, &seeds, (&args.engines, &args.bugs), jobs, &dir)?;
        for (e, why) in &cmp.skipped {
            println!("{}: skips {e}: {why}", s.name);
        }
        if cmp.seeds.is_empty() {
            println!(
                "{}: fits fewer than two engines; nothing to compare",
                s.name
            );
        }
        for c in &cmp.seeds {
            print_compared(c);
            compared += c.runs.len() - 1;
            parted += c.parted.len();
            failed += c.runs.iter().filter(|(_, f, _)| !f.is_empty()).count();
        }
    }
    println!(
        "differential: {compared} comparison(s), {parted} parted, {failed} run(s) failed their checks"
    );
    Ok(if parted == 0 && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_names_its_line() {
        assert_eq!(first_difference("history", "a\nb\n", "a\nb\n"), None);
        let p = first_difference("history", "a\nb\nc", "a\nx\nc").unwrap();
        assert_eq!(p.place, "history line 2");
        assert_eq!((p.reference.as_str(), p.other.as_str()), ("b", "x"));
        let p = first_difference("final reads", "a", "a\nextra").unwrap();
        assert_eq!(p.place, "final reads line 2");
        assert_eq!(p.reference, "");
    }

    #[test]
    fn an_engine_joins_only_the_scenarios_that_fit_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let load = |n: &str| Scenario::load(&dir.join(format!("{n}.toml"))).unwrap();
        // Kills: no memory engine; power cuts: redb only.
        let crash = load("raft-crash-restart");
        assert!(on_engine(&crash, EngineKind::Memory).is_err());
        assert!(
            on_engine(&crash, EngineKind::Redb)
                .unwrap()
                .cluster
                .engine_neutral
        );
        let power = load("raft-power-loss");
        assert!(on_engine(&power, EngineKind::Fjall).is_err());
        // A nemesis that crashes nodes arms the crashes on redb's disk syncs: redb only.
        let chaos = load("raft-chaos");
        assert!(draws_crashes(&chaos));
        assert!(on_engine(&chaos, EngineKind::Fjall).is_err());
        let calm = load("raft-leader-partition");
        for e in [EngineKind::Memory, EngineKind::Redb, EngineKind::Fjall] {
            assert_eq!(on_engine(&calm, e).unwrap().cluster.engine, e);
        }
    }
}
