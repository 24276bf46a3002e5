//! A run's folder (everything needed to look at a run and replay it) and the replay command.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bugs::Bug;
use crate::check::convergence::ConvergenceReport;
use crate::check::linearizability::{PartResult, Verdict};
use crate::scenario::transform::with_schedule_that_ran;
use crate::scenario::Scenario;
use crate::sim::report::{kv_model, RunOutput, RunReport};

/// Where failing runs are written unless `--out` says otherwise.
pub const DEFAULT_OUT: &str = "target/odgm-sim/runs";

/// The command that replays a run, with the cargo profile of the running build: a debug or
/// `checked` build keeps openraft's invariant checks, which a plain release build compiles
/// out, so a failure they found replays only in the same profile.
pub fn replay_command(scenario_path: &Path, seed: u64, bugs: &[Bug]) -> String {
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

/// `report.json`: the run's report, the convergence report, and the linearizability result
/// with the part that decided it.
#[derive(Serialize)]
struct ReportFile<'a> {
    report: &'a RunReport,
    convergence: Option<&'a ConvergenceReport>,
    linearizability: Option<Linearizability<'a>>,
}

#[derive(Serialize)]
struct Linearizability<'a> {
    verdict: Verdict,
    parts: usize,
    steps: u64,
    /// The first part with the overall verdict: for `illegal`, the key that cannot be
    /// linearized, the longest linearizable prefix found and the operation that could not be
    /// placed after it (indexes into `history.jsonl`'s operations).
    decisive: Option<&'a PartResult>,
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
        let ran = with_schedule_that_ran(&as_run, &out.report.faults_ran);
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
    let mut trace = out.trace.text.clone();
    if out.trace.dropped > 0 {
        trace.push_str(&format!(
            "... {} more lines (counted in the hash, not kept)\n",
            out.trace.dropped
        ));
    }
    std::fs::write(folder.join("trace.log"), trace)?;
    let report = ReportFile {
        report: &out.report,
        convergence: out.convergence.as_ref(),
        linearizability: out.linearizability.as_ref().map(|r| Linearizability {
            verdict: r.verdict,
            parts: r.parts.len(),
            steps: r.steps(),
            decisive: r.decisive_part(),
        }),
    };
    let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(folder.join("report.json"), text + "\n")?;
    let failures: Vec<String> = out.report.failures.iter().map(|f| f.to_string()).collect();
    let html = crate::check::html::render_report(
        &crate::check::html::Report {
            title: &format!("{} seed {}", scenario.name, out.report.seed),
            failures: &failures,
            lane_of: &crate::sim::workload::worker_of,
            // A convergence failure opens on its key (over the whole run: its writes'
            // acknowledgement times are on the simulated wall clock, not the history's); a
            // Raft invariant on when it broke.
            focus: out.report.failures.iter().find_map(|f| match f {
                crate::check::failure::Failure::Convergence { violation } => {
                    violation.key().map(|k| (k.to_string(), None))
                }
                other => other
                    .at_ms()
                    .map(|ms| (String::new(), Some(ms * 1_000_000))),
            }),
            raft: &out.raft_events,
        },
        &kv_model(),
        &out.history,
        out.linearizability.as_ref(),
    );
    std::fs::write(folder.join("history.html"), html)?;
    Ok(folder)
}

/// Reads the run report a run folder's `report.json` holds.
pub fn read_report(dir: &Path) -> Result<RunReport, String> {
    let path = dir.join("report.json");
    let bad = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Head {
        report: RunReport,
    }
    serde_json::from_str::<Head>(&text)
        .map(|h| h.report)
        .map_err(|e| bad(format!("no run report: {e}")))
}
