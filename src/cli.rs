//! The `odgm-sim` command line: argument parsing and dispatch to the subcommands.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::storage::EngineKind;

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
    Check(crate::check::command::CheckArgs),
    /// Run one scenario with one seed and print its verdict (simulation build).
    #[cfg(madsim)]
    Run(crate::sim::command::RunArgs),
    /// Run scenarios over a range of seeds, each seed in its own process (simulation build).
    #[cfg(madsim)]
    Sweep(crate::sim::command::SweepArgs),
    /// Run every planted bug against the scenarios that should catch it and report how fast
    /// each is caught (simulation build).
    #[cfg(madsim)]
    Bugs(crate::sim::bughunt::BugsArgs),
    /// Swarm testing until a time budget is spent: each seed draws a random scenario
    /// (mode, engine, nodes, network, workload, nemesis) and runs it (simulation build).
    #[cfg(madsim)]
    Chaos(crate::sim::chaos::ChaosArgs),
    /// Shrink a failing run's folder to the smallest scenario that still fails the same
    /// check with the same seed (simulation build).
    #[cfg(madsim)]
    Shrink(crate::sim::shrink::ShrinkArgs),
    /// Benchmarks that print figures (run them in a release build).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Zero-copy snapshot cost, snapshot stream build and install throughput, peak RSS.
    Snapshot(SnapshotBenchArgs),
    /// A Raft leader sends a snapshot of N keys to a new follower (simulation build).
    #[cfg(madsim)]
    RaftSnapshot(crate::sim::bench::RaftSnapshotArgs),
    /// Time to converge and repair bytes after a partition, MST or eventual (simulation
    /// build).
    #[cfg(madsim)]
    Repair(crate::sim::bench::RepairArgs),
}

/// Arguments of `bench snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotBenchArgs {
    /// Storage engine.
    #[arg(long, default_value = "redb")]
    pub engine: EngineKind,
    /// Number of keys to load.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Engine cache size in MiB (redb page cache, fjall block cache).
    #[arg(long, default_value_t = 16)]
    pub cache_mib: u64,
    /// How many zero-copy snapshots to time.
    #[arg(long, default_value_t = 50)]
    pub snapshot_samples: usize,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => crate::check::command::run(&args),
        #[cfg(madsim)]
        Command::Run(args) => crate::sim::command::run_command(&args),
        #[cfg(madsim)]
        Command::Sweep(args) => crate::sim::command::sweep_command(&args),
        #[cfg(madsim)]
        Command::Bugs(args) => crate::sim::bughunt::bugs_command(&args),
        #[cfg(madsim)]
        Command::Chaos(args) => crate::sim::chaos::chaos_command(&args),
        #[cfg(madsim)]
        Command::Shrink(args) => crate::sim::shrink::shrink_command(&args),
        Command::Bench(BenchCommand::Snapshot(args)) => crate::bench::snapshot(&args),
        #[cfg(madsim)]
        Command::Bench(BenchCommand::RaftSnapshot(args)) => crate::sim::bench::raft_snapshot(&args),
        #[cfg(madsim)]
        Command::Bench(BenchCommand::Repair(args)) => crate::sim::bench::repair(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
