//! The `odgm-sim` command line: argument parsing, dispatch, child processes and run folders.
//!
//! - [`run`]: `run` (one seed in this process) and its run folder;
//! - [`sweep`]: `sweep` (every seed in its own process) over [`process`];
//! - [`bugs`], [`chaos`], [`shrink`]: commands built on sweeps of child runs;
//! - [`check`]: `check`, the linearizability checker over history files;
//! - [`differential`]: `differential`, the same runs on every storage engine;
//! - [`coverage`]: the coverage table of a sweep or chaos session, and `coverage`;
//! - [`bench`]: benchmarks that print figures.
//!
//! This module drives `crate::sim`; nothing below it imports this module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
#[cfg(madsim)]
pub mod bugs;
#[cfg(madsim)]
pub mod chaos;
pub mod check;
pub mod coverage;
#[cfg(madsim)]
pub mod differential;
#[cfg(madsim)]
pub mod folder;
#[cfg(madsim)]
pub mod guided;
#[cfg(madsim)]
pub mod process;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod sweep;

/// odgm-sim: deterministic simulation testbed for the ODGM storage, shard and replication stack.
#[derive(Debug, Parser)]
#[command(name = "odgm-sim", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check history files for linearizability (optionally against a manifest of verdicts).
    Check(check::CheckArgs),
    /// Run one scenario with one seed and print its verdict (simulation build).
    #[cfg(madsim)]
    Run(run::RunArgs),
    /// Run scenarios over a range of seeds, each seed in its own process (simulation build).
    #[cfg(madsim)]
    Sweep(sweep::SweepArgs),
    /// Run every planted bug against the scenarios that should catch it and report how fast
    /// each is caught (simulation build).
    #[cfg(madsim)]
    Bugs(bugs::BugsArgs),
    /// Swarm testing until a time budget is spent: each seed draws a random scenario
    /// (mode, engine, nodes, network, workload, nemesis) and runs it (simulation build).
    #[cfg(madsim)]
    Chaos(chaos::ChaosArgs),
    /// Shrink a failing run's folder to the smallest scenario that still fails the same
    /// check with the same seed (simulation build).
    #[cfg(madsim)]
    Shrink(shrink::ShrinkArgs),
    /// Run the same scenarios and seeds on every storage engine and compare what clients
    /// saw and the final reads (simulation build).
    #[cfg(madsim)]
    Differential(differential::DifferentialArgs),
    /// Print the catalogue of coverage corners, or merge and print coverage files.
    Coverage(coverage::CoverageArgs),
    /// Benchmarks that print figures (run them in a release build).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs a parsed command line and returns the process exit code: what the command returned,
/// or 2 with the error on standard error when the input was bad.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        #[cfg(madsim)]
        Command::Run(args) => run::run_command(&args),
        #[cfg(madsim)]
        Command::Sweep(args) => sweep::sweep_command(&args),
        #[cfg(madsim)]
        Command::Bugs(args) => bugs::bugs_command(&args),
        #[cfg(madsim)]
        Command::Chaos(args) => chaos::chaos_command(&args),
        #[cfg(madsim)]
        Command::Shrink(args) => shrink::shrink_command(&args),
        #[cfg(madsim)]
        Command::Differential(args) => differential::differential_command(&args),
        Command::Coverage(args) => coverage::coverage_command(&args),
        Command::Bench(b) => bench::run(b),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Processes at once when `--jobs` is not given: one per core.
pub fn default_jobs(jobs: Option<usize>) -> usize {
    jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}
