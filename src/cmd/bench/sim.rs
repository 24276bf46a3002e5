//! Benchmarks that run inside a simulation: a Raft snapshot sent to a new follower, and the
//! repair after a partition in the MST and eventual modes. They print figures; nothing here
//! is asserted.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{
    mib, open_bench_engine_with, peak_rss_bytes, reset_peak_rss, rss_bytes, DataArgs, Scratch,
};
use crate::check::convergence::check_convergence;
use crate::raft::snapshot::held;
use crate::raft::{RaftNode, RaftOptions, ShardCommand, ShardOp};
use crate::rt::Stopwatch;
use crate::shard::{ObjectEntry, ShardKind, ShardOptions};
use crate::sim::cluster::{node_addr, AckLog, Cluster, ClusterSpec, StoreOpener};
use crate::storage::DynStorage;
use crate::storage::EngineKind;

/// Arguments of `bench raft-snapshot`.
#[derive(Debug, clap::Args)]
pub struct RaftSnapshotArgs {
    /// What the leader holds (its snapshot).
    #[command(flatten)]
    pub data: DataArgs,
    /// Simulation seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Load the leader through Raft commands (100 puts each) instead of the engine's bulk
    /// path. Loading leaves allocator residue that then dominates the peak RSS figure.
    #[arg(long)]
    pub load_through_raft: bool,
}

/// Arguments of `bench repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// Replication mode: mst or eventual.
    #[arg(long, default_value = "mst")]
    pub mode: ShardKind,
    /// How long node 3 is cut off from nodes 1 and 2 while clients write to all three.
    #[arg(long, default_value_t = 5)]
    pub partition_secs: u64,
    /// Client writes per second (all nodes together).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Distinct keys written.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Simulation seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn runtime(seed: u64) -> madsim::runtime::Runtime {
    madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
}

/// A cluster of two Raft nodes, the second a spare outside the membership, with engines on
/// real files under `dir`; node 1's application store is bulk-loaded with `preload` keys
/// before its state machine opens it.
fn bench_cluster(args: &RaftSnapshotArgs, dir: &Arc<Scratch>, preload: u64) -> ClusterSpec {
    let (engine, value_bytes, dir) = (args.data.engine, args.data.value_bytes, dir.clone());
    let cache = args.data.cache_bytes();
    let open = move |id: u64| {
        let dir = dir.clone();
        let open: futures::future::BoxFuture<'static, Result<DynStorage, String>> =
            Box::pin(async move {
                let s = open_bench_engine_with(engine, &dir, &format!("app{id}"), cache, 0)?;
                if id == 1 && preload > 0 {
                    // The engine's bulk path, generated as it is written.
                    let pairs =
                        futures::stream::iter((0..preload).map(move |k| {
                            Ok((crate::shard::object_key(k), vec![0xAB; value_bytes]))
                        }));
                    s.install_kv_snapshot_from_stream(Box::pin(pairs), Vec::new())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(s)
            });
        open
    };
    ClusterSpec {
        kind: ShardKind::Raft,
        engine,
        nodes: 1,
        spares: 1,
        options: ShardOptions {
            raft: RaftOptions {
                snapshot_every: u64::MAX / 4,
                keep_after_snapshot: 0,
                client_timeout_ms: 60_000,
                ..RaftOptions::default()
            },
            ..ShardOptions::default()
        },
        client_timeout: Duration::from_secs(60),
        open: Some(StoreOpener(Arc::new(open))),
        record: false,
        clock_drift_ppm: 0,
        boot_jitter_ms: 0,
        engine_neutral: false,
    }
}

/// The Raft node on `id` once it is up.
async fn raft_node(cluster: &Cluster, id: u64) -> Result<Arc<RaftNode>, String> {
    for _ in 0..600 {
        if let Some(n) = cluster.raft(id) {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("node {id} did not start within 60 s"))
}

/// Loads the leader: in bulk (then a few hundred entries through Raft, so the log reaches
/// openraft's purge batch and the snapshot replaces it), or all through Raft commands.
async fn load_leader(leader: &RaftNode, args: &RaftSnapshotArgs, bulk: u64) -> Result<(), String> {
    leader
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "single node leads")
        .await
        .map_err(|e| e.to_string())?;
    let value = vec![0xAB; args.data.value_bytes];
    let mut rewrites = if bulk > 0 { args.data.keys.min(300) } else { 0 };
    while rewrites > 0 {
        rewrites -= 1;
        let ops = vec![ShardOp::Put {
            key: crate::shard::object_key(rewrites),
            value: value.clone(),
        }];
        leader
            .write(ShardCommand { ops })
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut next = bulk;
    while next < args.data.keys {
        let ops = (next..args.data.keys.min(next + 100))
            .map(|k| ShardOp::Put {
                key: crate::shard::object_key(k),
                value: value.clone(),
            })
            .collect::<Vec<_>>();
        next += ops.len() as u64;
        leader
            .write(ShardCommand { ops })
            .await
            .map_err(|e| e.to_string())?;
    }
    leader
        .snapshot_now(Duration::from_secs(600))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `odgm-sim bench raft-snapshot`. The phases run one `block_on` each, so the real time of
/// each is measured between them, outside the simulation.
pub fn raft_snapshot(args: &RaftSnapshotArgs) -> Result<ExitCode, String> {
    if args.data.engine == EngineKind::Memory {
        return Err("raft-snapshot measures engines on files: use redb or fjall".into());
    }
    let dir = Arc::new(Scratch::new("raft-snapshot").map_err(|e| e.to_string())?);
    let (engine, keys, value_bytes) = (args.data.engine, args.data.keys, args.data.value_bytes);
    let bulk = if args.load_through_raft { 0 } else { keys };
    let rt = runtime(args.seed);
    let load = Stopwatch::start();
    let (cluster, leader) = rt.block_on(async {
        let cluster = Cluster::start(bench_cluster(args, &dir, bulk)).await;
        let leader = raft_node(&cluster, 1).await?;
        load_leader(&leader, args, bulk).await?;
        Ok::<_, String>((cluster, leader))
    })?;
    let loaded_in = load.elapsed_secs();
    let target = leader.applied_index().unwrap_or(0);
    let rss_before = rss_bytes().unwrap_or(0);
    let load_peak = peak_rss_bytes().unwrap_or(0);
    let phase_peak = reset_peak_rss();
    held::reset();
    let wall = Stopwatch::start();
    let (follower, sim) = rt.block_on(async {
        let follower = raft_node(&cluster, 2).await?;
        let sim = tokio::time::Instant::now();
        leader
            .raft
            .add_learner(2, openraft::BasicNode::new(node_addr(2).to_string()), true)
            .await
            .map_err(|e| e.to_string())?;
        follower
            .raft
            .wait(Some(Duration::from_secs(600)))
            .applied_index_at_least(Some(target), "follower caught up")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((follower, sim.elapsed()))
    })?;
    let wall = wall.elapsed_secs();
    let count = rt
        .block_on(follower.app_storage().count())
        .map_err(|e| e.to_string())?;
    let bytes = keys * (9 + value_bytes as u64);
    println!("raft-snapshot  engine {engine}  keys {keys}  value {value_bytes} B");
    println!(
        "loaded {}: {loaded_in:.2} s wall",
        if bulk > 0 {
            "in bulk (then 300 entries through Raft)"
        } else {
            "through Raft"
        }
    );
    println!(
        "snapshot to follower: {:.2} s wall, {:.2} s simulated, {:.1} MB/s wall",
        wall,
        sim.as_secs_f64(),
        bytes as f64 / 1e6 / wall.max(1e-2)
    );
    println!(
        "installed: {} snapshot(s), {count} keys on the follower",
        follower.snapshots_installed()
    );
    println!(
        "largest snapshot bytes held at once: {} B ({:.2} MiB)",
        held::peak(),
        mib(held::peak())
    );
    println!(
        "peak RSS while loading {:.1} MiB; before transfer {:.1} MiB, after {:.1} MiB",
        mib(load_peak),
        mib(rss_before),
        mib(rss_bytes().unwrap_or(0)),
    );
    println!(
        "peak RSS {} {:.1} MiB",
        if phase_peak {
            "during the transfer"
        } else {
            "of the process"
        },
        mib(peak_rss_bytes().unwrap_or(0))
    );
    if count != keys || follower.snapshots_installed() == 0 {
        return Err(format!(
            "the follower has {count} of {keys} keys after {} installs",
            follower.snapshots_installed()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `odgm-sim bench repair`.
pub fn repair(args: &RepairArgs) -> Result<ExitCode, String> {
    if !matches!(args.mode, ShardKind::Mst | ShardKind::Eventual) {
        return Err("repair is measured for --mode mst or eventual".into());
    }
    let (mode, secs, rate, keys) = (
        args.mode,
        args.partition_secs,
        args.rate.max(1),
        args.keys.max(1),
    );
    runtime(args.seed).block_on(async move {
        let cluster = Cluster::start(ClusterSpec {
            kind: mode,
            engine: EngineKind::Redb,
            nodes: 3,
            spares: 0,
            options: ShardOptions::default(),
            client_timeout: Duration::from_millis(500),
            open: None,
            record: false,
            clock_drift_ppm: 0,
            boot_jitter_ms: 0,
            engine_neutral: false,
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.partition(&[vec![1, 2], vec![3]]);
        let acked = AckLog::default();
        let before = cluster.repair_bytes();
        let gap = Duration::from_nanos(1_000_000_000 / rate);
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut written = 0u64;
        while tokio::time::Instant::now() < until {
            let (node, key) = {
                let mut rng = crate::rt::thread_rng();
                (rng.gen_range(1..=3u64), rng.gen_range(0..keys))
            };
            let e = ObjectEntry::with_field("v", written.to_le_bytes().to_vec());
            let (client, addr) = (cluster.client.clone(), cluster.client_addr(node));
            let acked = acked.clone();
            tokio::spawn(async move {
                if let Ok(v) = client.set(addr, key, e.clone()).await {
                    acked.record(key, Some(&e), v);
                }
            });
            written += 1;
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let during = cluster.repair_bytes() - before;
        let at_heal = cluster.repair_bytes();
        cluster.heal();
        let input = cluster
            .await_convergence(&acked, Duration::from_secs(120), Duration::from_millis(10))
            .await;
        let after = cluster.repair_bytes() - at_heal;
        let report = check_convergence(&input);
        println!(
            "repair  mode {}  partition {secs} s  {written} writes at {rate}/s over {keys} keys",
            mode.name()
        );
        match report.time_to_converge {
            Some(t) => println!("time to converge after heal: {:.3} s", t as f64 / 1e9),
            None => println!("time to converge after heal: not within 120 s"),
        }
        println!("repair bytes after heal until converged: {after}");
        println!("repair bytes during the partition (syncs among reachable nodes, attempts to the cut-off one): {during}");
        println!(
            "convergence check: {}",
            if report.is_ok() {
                "ok".to_string()
            } else {
                format!("{:?}", report.violations)
            }
        );
        Ok(if report.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
