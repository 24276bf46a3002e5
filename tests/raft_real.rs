//! A 3-node Raft cluster on real tokio over loopback TCP: the same stack as in simulation,
//! built with `RUSTFLAGS= cargo test --test raft_real` (CI runs it).
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use odgm_sim::raft::{RaftNode, RaftOptions, ShardCommand, ShardOp};
use odgm_sim::storage::{DynDevice, DynStorage, FileDevice, MemoryStorage};

async fn wait_leader(nodes: &[Arc<RaftNode>]) -> u64 {
    for _ in 0..200 {
        let leaders: Vec<_> = nodes.iter().map(|n| n.leader()).collect();
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| *x == Some(*l)) {
                return *l;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        // The Raft log on a real file, as a real deployment keeps it.
        let log: DynDevice = Arc::new(
            FileDevice::open(&dir.path().join(format!("raft-{id}.log"))).expect("log file"),
        );
        let app: DynStorage = Arc::new(MemoryStorage::new());
        let node = RaftNode::start(
            id,
            "127.0.0.1:0".parse().unwrap(),
            RaftOptions::default().ranked(id - 1, 3),
            log,
            app,
            Default::default(),
        )
        .await
        .expect("start");
        nodes.push(node);
    }
    let members: BTreeMap<u64, SocketAddr> = nodes.iter().map(|n| (n.id, n.addr())).collect();
    nodes[0].initialize(&members).await.expect("initialize");
    let leader = wait_leader(&nodes).await;
    // Writes through a follower are forwarded to the leader.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    for i in 0..50u64 {
        let cmd = ShardCommand {
            ops: vec![ShardOp::Put {
                key: i.to_be_bytes().to_vec(),
                value: (i * 10).to_be_bytes().to_vec(),
            }],
        };
        follower.write(cmd).await.expect("write commits");
    }
    assert_eq!(
        follower.read(&7u64.to_be_bytes()).await.expect("read"),
        Some(70u64.to_be_bytes().to_vec())
    );
    // Every node applies everything.
    for _ in 0..100 {
        let counts: Vec<u64> = futures::future::join_all(
            nodes
                .iter()
                .map(|n| async { n.app_storage().count().await.unwrap() }),
        )
        .await;
        if counts.iter().all(|c| *c == 50) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not every node applied the 50 writes");
}
