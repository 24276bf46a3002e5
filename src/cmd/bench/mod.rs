//! Benchmarks behind `odgm-sim bench`: they print figures instead of asserting timings, since
//! the machines are shared and noisy.
//!
//! - [`engine`]: the engines' snapshot paths, outside any simulation, on real files;
//! - [`sim`]: a Raft snapshot to a new follower, and repair after a partition, inside a
//!   simulation (simulation build).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::storage::{
    DynStorage, EngineKind, FjallOptions, FjallStorage, MemoryStorage, RedbStorage,
};

pub mod engine;
#[cfg(madsim)]
pub mod sim;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Zero-copy snapshot cost, snapshot stream build and install throughput, peak RSS.
    Snapshot(SnapshotBenchArgs),
    /// A Raft leader sends a snapshot of N keys to a new follower (simulation build).
    #[cfg(madsim)]
    RaftSnapshot(sim::RaftSnapshotArgs),
    /// Time to converge and repair bytes after a partition, MST or eventual (simulation
    /// build).
    #[cfg(madsim)]
    Repair(sim::RepairArgs),
}

/// The data a benchmark loads.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Storage engine (on real files).
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
}

impl DataArgs {
    /// The cache size in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mib * 1024 * 1024
    }
}

/// Arguments of `bench snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotBenchArgs {
    /// What to load.
    #[command(flatten)]
    pub data: DataArgs,
    /// How many zero-copy snapshots to time.
    #[arg(long, default_value_t = 50)]
    pub snapshot_samples: usize,
}

/// Runs a benchmark.
pub fn run(b: BenchCommand) -> Result<ExitCode, String> {
    match b {
        BenchCommand::Snapshot(args) => engine::snapshot(&args),
        #[cfg(madsim)]
        BenchCommand::RaftSnapshot(args) => sim::raft_snapshot(&args),
        #[cfg(madsim)]
        BenchCommand::Repair(args) => sim::repair(&args),
    }
}

fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of this process in bytes (`VmHWM`), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux: `5 > /proc/self/clear_refs`),
/// so a later [`peak_rss_bytes`] covers one phase. Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Current resident set size of this process in bytes (`VmRSS`), if the OS tells.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A scratch folder removed on drop.
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("odgm-sim-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn open_bench_engine(
    engine: EngineKind,
    dir: &Scratch,
    name: &str,
    cache_bytes: u64,
) -> Result<DynStorage, String> {
    open_bench_engine_with(engine, dir, name, cache_bytes, 2)
}

/// As [`open_bench_engine`], with fjall's background threads set (0 inside a simulation).
pub(crate) fn open_bench_engine_with(
    engine: EngineKind,
    dir: &Scratch,
    name: &str,
    cache_bytes: u64,
    fjall_threads: usize,
) -> Result<DynStorage, String> {
    Ok(match engine {
        EngineKind::Memory => Arc::new(MemoryStorage::new()),
        EngineKind::Redb => Arc::new(
            RedbStorage::open_file(&dir.0.join(format!("{name}.redb")), cache_bytes as usize)
                .map_err(|e| e.to_string())?,
        ),
        EngineKind::Fjall => Arc::new(
            FjallStorage::open(
                &dir.0.join(name),
                FjallOptions {
                    // Outside a simulation fjall may flush and compact in the background;
                    // without that its memtables would hold all data.
                    worker_threads: fjall_threads,
                    cache_bytes,
                    sync_commits: false,
                },
            )
            .map_err(|e| e.to_string())?,
        ),
    })
}
