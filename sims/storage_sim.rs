//! The storage engines inside a madsim simulation: redb on a SimDisk with latency charged in
//! simulated time, fjall with no worker threads, and the same seed giving the same outcome.
//!
//! `ODGM_SIM_SEEDS=N` sweeps seeds `0..N` (default 16); `ODGM_SIM_SEED=S` runs one seed.
#![cfg(madsim)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use odgm_sim::storage::stream::{self, SnapshotHeader};
use odgm_sim::storage::{
    ApplicationDataStorage, DiskFaults, FjallOptions, FjallStorage, PowerLossMode, RedbStorage,
    SimDisk, SnapshotCapableStorage,
};

/// What one simulated run observed; equal seeds must give equal outcomes.
#[derive(Debug, PartialEq)]
struct Outcome {
    elapsed: Duration,
    disk: odgm_sim::storage::DiskStats,
    keys_after_crash: u64,
    fjall_count: u64,
}

async fn workload() -> Outcome {
    let start = tokio::time::Instant::now();
    let seed = odgm_sim::rt::random_u64();
    let disk = SimDisk::new(
        seed,
        DiskFaults {
            latency_us_min: 50,
            latency_us_max: 5_000,
            ..DiskFaults::none()
        },
    );
    let redb = RedbStorage::open_on_disk(disk.clone()).expect("open redb");
    let fjall = FjallStorage::open_temporary(FjallOptions::default()).expect("open fjall");
    // Two concurrent writers per engine exercise the write lock under simulated latency.
    let mut tasks = Vec::new();
    let redb = std::sync::Arc::new(redb);
    let fjall = std::sync::Arc::new(fjall);
    for w in 0..2u8 {
        let (r, f) = (redb.clone(), fjall.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50u8 {
                let n = odgm_sim::rt::random_u64() % 20;
                tokio::time::sleep(Duration::from_millis(n)).await;
                r.put(&[w, i], &[i; 64]).await.expect("redb put");
                f.put(&[w, i], &[i; 64]).await.expect("fjall put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    // A snapshot shipped from redb to fjall through the wire format.
    let snap = redb.create_zero_copy_snapshot().await.expect("snapshot");
    let pairs = redb.create_kv_snapshot_stream(&snap).await.expect("stream");
    let chunks = stream::encode(&SnapshotHeader::default(), pairs, 1000).expect("encode");
    let (h, decoded) = stream::decode(chunks).await.expect("decode");
    fjall
        .install_kv_snapshot_from_stream(decoded, h.meta)
        .await
        .expect("install");
    let fjall_count = fjall.count().await.expect("count");
    let exported: Vec<_> = fjall.export_stream().await.expect("export").collect().await;
    assert_eq!(exported.len() as u64, fjall_count);

    drop(redb);
    disk.power_loss(PowerLossMode::TornSectors);
    let reopened = RedbStorage::open_on_disk(disk.clone()).expect("reopen");
    Outcome {
        elapsed: start.elapsed(),
        disk: disk.stats(),
        keys_after_crash: reopened.count().await.expect("count"),
        fjall_count,
    }
}

fn run(seed: u64) -> Outcome {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(workload())
}

#[test]
fn storage_sweep() {
    common::sweep("storage_sweep", 16, |seed| async move {
        let o = workload().await;
        assert_eq!(o.fjall_count, 100, "seed {seed}: {o:?}");
        assert_eq!(o.keys_after_crash, 100, "seed {seed}: {o:?}");
    });
}

#[test]
fn engines_run_in_simulated_time() {
    let o = run(1);
    // 200 committed writes, each charged at least 50 µs of simulated disk latency per I/O.
    assert!(o.elapsed >= Duration::from_millis(10), "{o:?}");
    assert_eq!(o.fjall_count, 100);
    // Every write was acknowledged after a durable commit, so all survive the power loss.
    assert_eq!(o.keys_after_crash, 100);
}

#[test]
fn same_seed_same_outcome() {
    for seed in [3, 4] {
        assert_eq!(run(seed), run(seed), "seed {seed}");
    }
    assert_ne!(run(3).elapsed, run(4).elapsed);
}
