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
//! need redb's simulated disk (the scenario's validation refuses them elsewhere).

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
    let drawn = s.nemesis.as_ref().is_some_and(|n| {
        [NemesisKind::Kill, NemesisKind::PowerLoss]
            .iter()
            .any(|k| n.kinds.get(k).is_some_and(|w| *w > 0.0))
    });
    scheduled || drawn
}

/// `scenario` on `engine`, engine-neutral, if it fits the engine.
pub fn on_engine(s: &Scenario, engine: EngineKind) -> Result<Scenario, String> {
    if engine == EngineKind::Memory && stops_processes(s) {
        return Err("it stops processes, and the memory engine keeps nothing".into());
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

/// `odgm-sim differential`.
pub fn differential_command(args: &DifferentialArgs) -> Result<ExitCode, String> {
    let files = scenario_files(&args.scenarios)?;
    let dir = args.out.join("differential");
    let jobs = super::default_jobs(args.jobs);
    let exe = exe()?;
    let mut parted = 0usize;
    let mut compared = 0usize;
    let mut failed = 0usize;
    for f in &files {
        let s = Scenario::load(f).map_err(|e| e.to_string())?;
        let mut engines: Vec<(EngineKind, PathBuf)> = Vec::new();
        for &e in &args.engines {
            match on_engine(&s, e) {
                Ok(copy) => {
                    let path = dir.join(e.to_string()).join(format!("{}.toml", s.name));
                    if let Some(p) = path.parent() {
                        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
                    }
                    std::fs::write(&path, copy.to_toml())
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    engines.push((e, path));
                }
                Err(why) => println!("{}: skips {e}: {why}", s.name),
            }
        }
        if engines.len() < 2 {
            println!(
                "{}: fits fewer than two engines; nothing to compare",
                s.name
            );
            continue;
        }
        let seeds: Vec<u64> = (args.seeds.start..args.seeds.end).collect();
        let mut per_engine: Vec<(EngineKind, Vec<SweepRun>, PathBuf)> = Vec::new();
        for (e, path) in &engines {
            let out = dir.join(e.to_string()).join("runs");
            let runs: Vec<(PathBuf, u64)> = seeds.iter().map(|&s| (path.clone(), s)).collect();
            let opts = SweepOptions {
                jobs,
                bugs: args.bugs.clone(),
                out: out.clone(),
                twice: false,
                keep: true,
            };
            per_engine.push((*e, sweep_processes(&exe, &runs, &opts, &|_| {}), out));
        }
        let (ref_engine, ref_runs, ref_out) = &per_engine[0];
        for (i, seed) in seeds.iter().enumerate() {
            let reference = &ref_runs[i];
            let mut line = format!("{} seed {seed}:", s.name);
            let mut ok = true;
            for (engine, runs, _) in &per_engine {
                let run = &runs[i];
                if !run.passed() {
                    failed += 1;
                    ok = false;
                    println!(
                        "FAIL {} seed {seed} on {engine}: {}\n  replay: {}",
                        s.name,
                        run.what_failed(),
                        run.replay(&args.bugs)
                    );
                }
            }
            let (ref_history, ref_finals) = observed(reference, ref_out)?;
            for (engine, runs, out) in per_engine.iter().skip(1) {
                compared += 1;
                let (history, finals) = observed(&runs[i], out)?;
                let parting = first_difference("history", &ref_history, &history)
                    .or_else(|| first_difference("final reads", &ref_finals, &finals));
                match parting {
                    None => line += &format!(" {engine} = {ref_engine}"),
                    Some(p) => {
                        ok = false;
                        parted += 1;
                        println!(
                            "DIFFER {} seed {seed}: {engine} parts from {ref_engine} at {}\n  {ref_engine}: {}\n  {engine}: {}\n  replay: {}\n          {}",
                            s.name,
                            p.place,
                            p.reference,
                            p.other,
                            reference.replay(&args.bugs),
                            runs[i].replay(&args.bugs)
                        );
                    }
                }
            }
            if ok {
                println!("{line}");
            }
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
        let calm = load("raft-leader-partition");
        for e in [EngineKind::Memory, EngineKind::Redb, EngineKind::Fjall] {
            assert_eq!(on_engine(&calm, e).unwrap().cluster.engine, e);
        }
    }
}
