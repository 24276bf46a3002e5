//! MST and eventual-consistency clusters under partitions, crashes and clock skew: after the
//! heal every replica converges, concurrent writes pick one winner everywhere, deletes stay
//! deleted, and the seed's fire-and-forget mode is caught diverging.
//!
//! `ODGM_SIM_SEEDS=N` sweeps seeds `0..N` (default 3); `ODGM_SIM_SEED=S` runs one seed.
#![cfg(madsim)]

mod common;

use std::time::Duration;

use odgm_sim::check::convergence::{check_convergence, ConvergenceReport, Violation};
use odgm_sim::shard::{ObjectEntry, ShardKind, ShardOptions};
use odgm_sim::sim::cluster::{AckLog, Cluster, ClusterSpec};
use odgm_sim::storage::EngineKind;
use rand::Rng;

const BOUND: Duration = Duration::from_secs(10);

fn spec(kind: ShardKind, options: ShardOptions) -> ClusterSpec {
    ClusterSpec {
        kind,
        engine: EngineKind::Redb,
        nodes: 3,
        spares: 0,
        options,
        client_timeout: Duration::from_millis(500),
        open: None,
        record: true,
        clock_drift_ppm: odgm_sim::scenario::ClusterConfig::DEFAULT_DRIFT_PPM,
        boot_jitter_ms: odgm_sim::scenario::ClusterConfig::DEFAULT_BOOT_JITTER_MS,
        engine_neutral: false,
    }
}

fn obj(v: String) -> ObjectEntry {
    ObjectEntry::with_field("v", v.into_bytes())
}

/// Clients write and delete random keys on random nodes until `stop`.
async fn writers(cluster: &Cluster, acked: &AckLog, stop: Duration) {
    let until = tokio::time::Instant::now() + stop;
    let mut tasks = Vec::new();
    for c in 0..3u64 {
        let client = cluster.client.clone();
        let addrs: Vec<_> = (1..=3).map(|i| cluster.client_addr(i)).collect();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while tokio::time::Instant::now() < until {
                let (node, key, delete) = {
                    let mut rng = odgm_sim::rt::thread_rng();
                    (
                        rng.gen_range(0..3),
                        rng.gen_range(0..20u64),
                        rng.gen_bool(0.25),
                    )
                };
                i += 1;
                if delete {
                    if let Ok(v) = client.delete(addrs[node], key).await {
                        acked.record(key, None, v);
                    }
                } else {
                    let e = obj(format!("c{c}-{i}"));
                    if let Ok(v) = client.set(addrs[node], key, e.clone()).await {
                        acked.record(key, Some(&e), v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

fn assert_converged(what: &str, seed: u64, report: &ConvergenceReport) {
    assert!(
        report.is_ok(),
        "{what} did not converge (seed {seed}): {:#?}",
        report.violations
    );
}

#[test]
fn mst_and_eventual_converge_after_partition_crash_and_skew() {
    for kind in [ShardKind::Mst, ShardKind::Eventual] {
        common::sweep(
            "mst_and_eventual_converge_after_partition_crash_and_skew",
            3,
            move |seed| async move {
                let cluster = Cluster::start(spec(kind, ShardOptions::default())).await;
                cluster.clock(2).set_offset_ms(3_000);
                cluster.clock(3).set_drift_ppm(-50_000);
                let acked = AckLog::default();
                let faults = async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cluster.partition(&[vec![1, 2], vec![3]]);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cluster.kill(2);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cluster.restart(2);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cluster.heal();
                };
                tokio::join!(
                    writers(&cluster, &acked, Duration::from_millis(4_500)),
                    faults
                );
                let input = cluster
                    .await_convergence(&acked, BOUND, Duration::from_millis(50))
                    .await;
                let report = check_convergence(&input);
                assert!(report.acked_checked > 50, "the workload ran: {report:?}");
                assert_converged(kind.name(), seed, &report);
            },
        );
    }
}

#[test]
fn concurrent_writes_pick_one_winner_and_deletes_stay_deleted() {
    for kind in [ShardKind::Mst, ShardKind::Eventual] {
        common::sweep(
            "concurrent_writes_pick_one_winner_and_deletes_stay_deleted",
            3,
            move |seed| async move {
                let cluster = Cluster::start(spec(kind, ShardOptions::default())).await;
                // Node 3 runs 10 s behind: its writes during the partition carry older wall
                // times than node 1's.
                cluster.clock(3).set_offset_ms(-10_000);
                tokio::time::sleep(Duration::from_millis(500)).await;
                let acked = AckLog::default();
                let (c, a1, a3) = (
                    &cluster.client,
                    cluster.client_addr(1),
                    cluster.client_addr(3),
                );
                let e = obj("before".into());
                let v = c.set(a1, 8, e.clone()).await.unwrap();
                acked.record(8, Some(&e), v);
                // Let key 8 reach everyone before the partition.
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.partition(&[vec![1], vec![2, 3]]);
                for (addr, side) in [(a1, "left"), (a3, "right")] {
                    let e = obj(side.into());
                    let v = c.set(addr, 7, e.clone()).await.unwrap();
                    acked.record(7, Some(&e), v);
                }
                let v = c.delete(a1, 8).await.unwrap();
                acked.record(8, None, v);
                let e = obj("older write after the delete".into());
                let v = c.set(a3, 8, e.clone()).await.unwrap();
                acked.record(8, Some(&e), v);
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.heal();
                let input = cluster
                    .await_convergence(&acked, BOUND, Duration::from_millis(50))
                    .await;
                let report = check_convergence(&input);
                assert_converged(kind.name(), seed, &report);
                let states = cluster.replica_states().await;
                let winners: Vec<_> = states.iter().map(|s| s.entries[&7].clone()).collect();
                assert!(winners.windows(2).all(|w| w[0] == w[1]), "{winners:?}");
                for s in &states {
                    assert_eq!(
                        s.entries[&8].value, None,
                        "key 8 stays deleted on {}",
                        s.node
                    );
                }
            },
        );
    }
}

/// The seed design's fire-and-forget replication loses pushes made during a partition; the
/// convergence checker must say so.
#[test]
fn fire_and_forget_is_caught_diverging() {
    common::sweep("fire_and_forget_is_caught_diverging", 3, |_| async move {
        let mut options = ShardOptions::default();
        options.eventual.repair = false;
        let cluster = Cluster::start(spec(ShardKind::Eventual, options)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.partition(&[vec![1, 2], vec![3]]);
        let acked = AckLog::default();
        let e = obj("lost on node 3".into());
        let v = cluster
            .client
            .set(cluster.client_addr(1), 5, e.clone())
            .await
            .unwrap();
        acked.record(5, Some(&e), v);
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.heal();
        let input = cluster
            .await_convergence(&acked, Duration::from_secs(3), Duration::from_millis(50))
            .await;
        let report = check_convergence(&input);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Diverged { key: 5, .. })),
            "divergence must be reported: {report:?}"
        );
    });
}

/// A Raft shard cluster through the `ShardState` interface: clients write to any node
/// (followers forward), reads are served by the leader, and a replica is added and another
/// removed through membership changes while the data stays whole.
#[test]
fn raft_shard_serves_clients_and_changes_membership() {
    use odgm_sim::shard::RaftShard;
    common::sweep(
        "raft_shard_serves_clients_and_changes_membership",
        3,
        |seed| async move {
            let mut s = spec(ShardKind::Raft, ShardOptions::default());
            s.spares = 1;
            s.client_timeout = Duration::from_secs(3);
            let cluster = Cluster::start(s).await;
            let mut waited = 0;
            let leader = loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += 1;
                assert!(waited < 100, "no leader after 10 s (seed {seed})");
                let found = (1..=3).find(|id| {
                    cluster.shard(*id).is_some_and(|sh| {
                        let r = sh.as_any().downcast_ref::<RaftShard>().unwrap();
                        r.raft_node().leader() == Some(*id)
                    })
                });
                if let Some(l) = found {
                    break l;
                }
            };
            let (c, follower) = (&cluster.client, if leader == 1 { 2 } else { 1 });
            for k in 0..50u64 {
                let node = 1 + k % 3;
                c.set(cluster.client_addr(node), k, obj(format!("v{k}")))
                    .await
                    .unwrap();
            }
            let got = c.get(cluster.client_addr(follower), 7).await.unwrap();
            assert_eq!(got.map(|e| e.fields["v"].clone()), Some(b"v7".to_vec()));
            let shard = cluster.shard(leader).unwrap();
            let raft = shard.as_any().downcast_ref::<RaftShard>().unwrap();
            raft.add_replica(4).await.unwrap();
            raft.remove_replica(follower).await.unwrap();
            for k in 50..60u64 {
                c.set(cluster.client_addr(leader), k, obj(format!("v{k}")))
                    .await
                    .unwrap();
            }
            let target = raft.raft_node().applied_index();
            let newcomer = cluster.shard(4).unwrap();
            let node4 = newcomer.as_any().downcast_ref::<RaftShard>().unwrap();
            for _ in 0..100 {
                if node4.raft_node().applied_index() >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(newcomer.storage().count().await.unwrap(), 60, "seed {seed}");
            let voters: Vec<u64> = node4
                .raft_node()
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            assert!(
                voters.contains(&4) && !voters.contains(&follower),
                "{voters:?}"
            );
        },
    );
}

/// Bytes that are not a request (too short, random, a length prefix claiming exabytes) and
/// requests with bad contents get dropped or answered with an error naming the problem; the
/// shard keeps serving and nothing is allocated for the claimed lengths.
#[test]
fn object_shard_survives_bad_requests() {
    use odgm_sim::shard::server::{ShardRequest, ShardResponse};
    use odgm_sim::shard::ShardError;
    common::sweep("object_shard_survives_bad_requests", 3, |seed| async move {
        let cluster = Cluster::start(spec(ShardKind::Mst, ShardOptions::default())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let addr = cluster.client_addr(1);
        let raw = madsim::net::Endpoint::bind("10.0.1.1:7100").await.unwrap();
        let mut huge = 5u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&4u32.to_le_bytes()); // variant: Scan
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes()); // prefix length
        let mut random = vec![0u8; 300];
        rand::Rng::fill(&mut odgm_sim::rt::thread_rng(), &mut random[..]);
        for frame in [vec![], vec![1, 2, 3], random, huge] {
            // Tag 1 is the transport's request tag.
            raw.send_to(addr, 1, &frame).await.unwrap();
        }
        let c = &cluster.client;
        let long_prefix = ShardRequest::Scan {
            prefix: vec![0; 20],
            limit: 10,
        };
        match c.call(addr, &long_prefix).await {
            Err(ShardError::Invalid(msg)) => assert!(msg.contains("prefix"), "{msg}"),
            other => panic!("a 20-byte prefix was not refused: {other:?} (seed {seed})"),
        }
        let unbounded = ShardRequest::Scan {
            prefix: vec![],
            limit: usize::MAX,
        };
        assert_eq!(
            c.call(addr, &unbounded).await.unwrap(),
            ShardResponse::Entries(vec![])
        );
        c.set(addr, 9, obj("after".into())).await.unwrap();
        let got = c.get(addr, 9).await.unwrap().unwrap();
        assert_eq!(got.fields["v"], b"after".to_vec(), "seed {seed}");
    });
}

/// A node's hybrid logical clock lives in memory. Chaos seeds 501822, 504376 and 512950
/// found an eventually consistent node that wrote while its clock ran ahead, restarted on a
/// clock set back, and then stamped a delete older than the write it had acknowledged: it
/// stored the delete over the write while its peer kept the write (last-writer-wins), and
/// the replicas never agreed. A node now takes in the newest version it stores when it
/// starts, so the delete is newer and wins everywhere.
#[test]
fn a_restart_on_a_clock_set_back_never_stamps_an_older_version() {
    common::sweep(
        "a_restart_on_a_clock_set_back_never_stamps_an_older_version",
        3,
        |seed| async move {
            let cluster = Cluster::start(spec(ShardKind::Eventual, ShardOptions::default())).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let acked = AckLog::default();
            let (c, a1) = (&cluster.client, cluster.client_addr(1));
            cluster.clock(1).set_offset_ms(10_000);
            let e = obj("ahead".into());
            let v = c.set(a1, 3, e.clone()).await.unwrap();
            acked.record(3, Some(&e), v);
            // Let the write reach every replica.
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.clock(1).set_offset_ms(0);
            cluster.kill(1);
            cluster.restart(1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let v = c.delete(a1, 3).await.unwrap();
            acked.record(3, None, v);
            let input = cluster
                .await_convergence(&acked, BOUND, Duration::from_millis(50))
                .await;
            assert_converged(
                "eventual after a restart on a clock set back",
                seed,
                &check_convergence(&input),
            );
        },
    );
}
