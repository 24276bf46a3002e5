//! Watching the cluster for the checks: which node led which term (all run long), a final
//! read of every key after the quiet phase, and the Raft nodes' logs and states at the end.
//! Nothing here judges; the checks in `crate::check` do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::Cluster;
use super::trace;
use super::workload::{self, Recorded, Targets};
use crate::check::history::Outcome;
use crate::check::model::{KvInput, KvOutput};
use crate::check::raft::RaftObservation;

/// Leaders seen (Raft), as (term, node). openraft runs with `single-term-leader`, so a term
/// with two nodes here breaks election safety.
pub type LeaderLog = Arc<Mutex<BTreeSet<(u64, u64)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches every Raft node's metrics until `until` and records which node led which term.
/// A node's new incarnation (after a restart) is picked up within 20 ms.
pub async fn watch_leaders(cluster: Arc<Cluster>, log: LeaderLog, until: tokio::time::Instant) {
    // Weak handles keep each incarnation's allocation, so a new incarnation never shares
    // its address with one already watched.
    let mut watched: BTreeMap<u64, std::sync::Weak<crate::raft::RaftNode>> = BTreeMap::new();
    while tokio::time::Instant::now() < until {
        for id in cluster.node_ids() {
            let Some(node) = cluster.raft(id) else {
                continue;
            };
            if watched
                .get(&id)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&node)))
            {
                continue;
            }
            watched.insert(id, Arc::downgrade(&node));
            let mut rx = node.raft.metrics();
            drop(node);
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let (term, leading) = {
                        let m = rx.borrow_and_update();
                        (m.current_term, m.state == openraft::ServerState::Leader)
                    };
                    if leading && lock(&log).insert((term, id)) {
                        trace::record(format_args!("node {id} leads term {term}"));
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the quiet phase, one read of every key in `0..keys` (linearizable on Raft), each
/// through the replicas in turn until one answers, recorded into the history: a lost
/// acknowledged write shows up there.
///
/// Returns the keys no replica answered for: after the heal and the quiet phase the shard
/// must serve again.
pub async fn final_reads(
    keys: u64,
    cluster: &Cluster,
    targets: &Targets,
    rec: &Recorded,
) -> Vec<u64> {
    let mut unreadable = Vec::new();
    let members = workload::current(&targets.members);
    let reader = 999_000_000;
    for key in 0..keys {
        for (attempt, node) in members.iter().cycle().take(members.len() * 3).enumerate() {
            let id = reader + key * 100 + attempt as u64;
            let addr = targets.addrs[node];
            lock(&rec.history)
                .invoke(
                    id,
                    KvInput::Get {
                        key: key.to_string(),
                    },
                    trace::now_us() * 1_000,
                )
                .ok();
            let got = cluster.client.get(addr, key).await;
            let at = trace::now_us() * 1_000;
            let (outcome, output) = match &got {
                Ok(e) => {
                    let value = e.as_ref().and_then(workload::value_of);
                    trace::record(format_args!(
                        "final read key {key} on node {node}: {value:?}"
                    ));
                    (Outcome::Ok, Some(KvOutput::Get { value }))
                }
                Err(e) => {
                    trace::record(format_args!("final read key {key} on node {node}: {e}"));
                    (Outcome::Fail, None)
                }
            };
            lock(&rec.history).complete(id, outcome, output, at).ok();
            if got.is_ok() {
                break;
            }
            if attempt + 1 == members.len() * 3 {
                unreadable.push(key);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    unreadable
}

/// The Raft nodes' logs and state digests at the end, once their applied indexes agree (or
/// after 5 s of waiting). A node whose disk failed stops (fail-stop) and is left out.
pub async fn raft_observation(cluster: &Cluster) -> RaftObservation {
    let mut nodes = BTreeMap::new();
    for _ in 0..50 {
        nodes = cluster
            .node_ids()
            .into_iter()
            .filter_map(|id| cluster.raft(id).map(|r| (id, r)))
            .collect::<BTreeMap<_, _>>();
        let applied: BTreeSet<Option<u64>> = nodes.values().map(|r| r.applied_index()).collect();
        if applied.len() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut o = RaftObservation::default();
    for (id, r) in &nodes {
        match r.log_summary().await {
            Ok(l) => {
                o.logs.insert(*id, l);
            }
            Err(e) => trace::record(format_args!("node {id}: log unreadable, not compared: {e}")),
        }
    }
    for (id, r) in &nodes {
        let applied = r.applied_index();
        match super::state::replica_entries(r.app_storage()).await {
            Ok(entries) => {
                o.states
                    .insert(*id, (applied, super::state::digest(&entries)));
            }
            Err(e) => trace::record(format_args!(
                "node {id}: state unreadable, not compared: {e}"
            )),
        }
    }
    o
}
