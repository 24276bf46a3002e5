//! Workload clients: concurrent clients issue get / set / delete / cas on a small key space,
//! and scans and counts of all of it, and record every operation into a key-value
//! [`History`] with simulated invoke and completion times. A reply that never came is `info` (indeterminate), never a failure; a
//! client whose operation is indeterminate retires and a fresh client id takes its place, as
//! in Jepsen, so no client ever has two operations pending.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use super::cluster::AckLog;
use super::trace;
use crate::check::history::{History, Outcome, Recorder};
use crate::check::model::{KvInput, KvOutput};
use crate::scenario::Workload;
use crate::shard::{ObjectEntry, ShardClient, ShardError, ShardRequest, ShardResponse};

/// What the clients recorded.
#[derive(Default)]
pub struct Recorded {
    /// The key-value history.
    pub history: Mutex<Recorder<KvInput, KvOutput>>,
    /// Acknowledged writes and deletes with their versions (for the convergence check).
    pub acked: AckLog,
}

impl Recorded {
    /// The finished history.
    pub fn take_history(&self) -> History<KvInput, KvOutput> {
        std::mem::take(&mut *self.history.lock().unwrap_or_else(|e| e.into_inner())).finish()
    }

    fn invoke(&self, client: u64, input: KvInput) {
        let at = trace::now_us() * 1_000;
        let r = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .invoke(client, input, at);
        debug_assert!(r.is_ok(), "{r:?}");
    }

    fn complete(&self, client: u64, outcome: Outcome, output: Option<KvOutput>) {
        let at = trace::now_us() * 1_000;
        let r = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(client, outcome, output, at);
        debug_assert!(r.is_ok(), "{r:?}");
    }
}

/// The nodes clients may talk to (the current replicas), shared with the fault injector.
pub type Members = Arc<Mutex<BTreeSet<u64>>>;

/// The current replicas, in id order.
pub fn current(members: &Members) -> Vec<u64> {
    members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect()
}

/// Where clients send requests.
#[derive(Clone)]
pub struct Targets {
    /// Node id -> client address.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// Current replicas.
    pub members: Members,
}

const FIELD: &str = "v";

/// The value a client sees in an object (`None`: absent or deleted).
pub(crate) fn value_of(e: &ObjectEntry) -> Option<String> {
    if e.tombstone {
        return None;
    }
    e.fields
        .get(FIELD)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn entry(value: &str) -> ObjectEntry {
    ObjectEntry::with_field(FIELD, value.as_bytes().to_vec())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Set,
    Delete,
    Cas,
    Scan,
    Count,
}

fn pick_kind(w: &Workload, r: u32) -> Kind {
    let m = &w.mix;
    let mut r = r;
    for (weight, kind) in [
        (m.get, Kind::Get),
        (m.set, Kind::Set),
        (m.delete, Kind::Delete),
        (m.cas, Kind::Cas),
        (m.scan, Kind::Scan),
        (m.count, Kind::Count),
    ] {
        if r < weight {
            return kind;
        }
        r -= weight;
    }
    Kind::Get
}

fn outcome_of(e: &ShardError) -> Outcome {
    trace::record(format_args!("client error: {e}"));
    if e.is_indeterminate() {
        Outcome::Info
    } else {
        Outcome::Fail
    }
}

/// Runs one client (worker `worker`) until `until`; returns how many operations it issued.
pub async fn client(
    worker: u64,
    w: Workload,
    shard: ShardClient,
    targets: Targets,
    rec: Arc<Recorded>,
    until: tokio::time::Instant,
) -> u64 {
    let mut generation = 0u64;
    let mut issued = 0u64;
    let mut seq = 0u64;
    // The value this client last saw or wrote for each key (a cas expects it).
    let mut seen: BTreeMap<u64, Option<String>> = BTreeMap::new();
    let total: u32 = {
        let m = &w.mix;
        m.get + m.set + m.delete + m.cas + m.scan + m.count
    };
    let mean_gap = 1.0 / w.rate;
    loop {
        let (gap, kind, key, node) = {
            let members = current(&targets.members);
            let mut rng = crate::rt::thread_rng();
            let gap = Duration::from_secs_f64(rng.gen_range(0.0..2.0 * mean_gap));
            let kind = pick_kind(&w, rng.gen_range(0..total));
            let key = rng.gen_range(0..w.keys);
            let node = members[rng.gen_range(0..members.len())];
            (gap, kind, key, node)
        };
        tokio::time::sleep(gap).await;
        if tokio::time::Instant::now() >= until {
            return issued;
        }
        issued += 1;
        seq += 1;
        let id = client_id(worker, generation);
        let addr = targets.addrs[&node];
        let k = key.to_string();
        let value = format!("{worker}.{seq}");
        let outcome = match kind {
            Kind::Get => {
                rec.invoke(id, KvInput::Get { key: k });
                match shard.get(addr, key).await {
                    Ok(e) => {
                        let v = e.as_ref().and_then(value_of);
                        seen.insert(key, v.clone());
                        rec.complete(id, Outcome::Ok, Some(KvOutput::Get { value: v }));
                        Outcome::Ok
                    }
                    // A read has no effect: an unanswered one is simply dropped.
                    Err(_) => {
                        rec.complete(id, Outcome::Fail, None);
                        Outcome::Fail
                    }
                }
            }
            Kind::Set => {
                rec.invoke(
                    id,
                    KvInput::Put {
                        key: k,
                        value: value.clone(),
                    },
                );
                let e = entry(&value);
                match shard.set(addr, key, e.clone()).await {
                    Ok(version) => {
                        rec.acked.record(key, Some(&e), version);
                        seen.insert(key, Some(value));
                        rec.complete(id, Outcome::Ok, Some(KvOutput::Ok));
                        Outcome::Ok
                    }
                    Err(err) => {
                        let o = outcome_of(&err);
                        rec.complete(id, o, None);
                        o
                    }
                }
            }
            Kind::Delete => {
                rec.invoke(id, KvInput::Delete { key: k });
                match shard.delete(addr, key).await {
                    Ok(version) => {
                        rec.acked.record(key, None, version);
                        seen.insert(key, None);
                        rec.complete(id, Outcome::Ok, Some(KvOutput::Ok));
                        Outcome::Ok
                    }
                    Err(err) => {
                        let o = outcome_of(&err);
                        rec.complete(id, o, None);
                        o
                    }
                }
            }
            Kind::Cas => {
                let from = seen.get(&key).cloned().flatten();
                rec.invoke(
                    id,
                    KvInput::Cas {
                        key: k,
                        from: from.clone(),
                        to: value.clone(),
                    },
                );
                cas(&shard, addr, key, from, &value, &rec, id, &mut seen).await
            }
            Kind::Scan => {
                rec.invoke(
                    id,
                    KvInput::Scan {
                        start: None,
                        end: None,
                    },
                );
                let req = ShardRequest::Scan {
                    prefix: Vec::new(),
                    limit: w.keys as usize,
                };
                match shard.call(addr, &req).await {
                    Ok(ShardResponse::Entries(es)) => {
                        let mut pairs: Vec<(String, String)> = es
                            .iter()
                            .filter_map(|(k, e)| value_of(e).map(|v| (k.to_string(), v)))
                            .collect();
                        pairs.sort();
                        rec.complete(id, Outcome::Ok, Some(KvOutput::Scan { pairs }));
                        Outcome::Ok
                    }
                    other => read_failed(&rec, id, other),
                }
            }
            Kind::Count => {
                rec.invoke(
                    id,
                    KvInput::Count {
                        start: None,
                        end: None,
                    },
                );
                match shard.call(addr, &ShardRequest::Count).await {
                    Ok(ShardResponse::Count(n)) => {
                        rec.complete(id, Outcome::Ok, Some(KvOutput::Count { n }));
                        Outcome::Ok
                    }
                    other => read_failed(&rec, id, other),
                }
            }
        };
        trace::record(format_args!(
            "client {id} {kind:?} key {key} on node {node}: {outcome:?}"
        ));
        if outcome == Outcome::Info {
            generation += 1;
        }
    }
}

/// Records a scan or count that got no answer it could use: a read has no effect, so it is
/// dropped however it ended.
fn read_failed(rec: &Recorded, id: u64, got: Result<ShardResponse, ShardError>) -> Outcome {
    match got {
        Ok(other) => tracing::warn!("unexpected reply to a read: {other:?}"),
        Err(e) => trace::record(format_args!("client error: {e}")),
    }
    rec.complete(id, Outcome::Fail, None);
    Outcome::Fail
}

/// A compare-and-set: read the object; if its value is not `from`, the cas fails (at the
/// read); otherwise commit a transaction that expects exactly what was read and writes
/// `to`. A conflict means the transaction did not apply (a definite failure).
#[allow(clippy::too_many_arguments)]
async fn cas(
    shard: &ShardClient,
    addr: SocketAddr,
    key: u64,
    from: Option<String>,
    to: &str,
    rec: &Recorded,
    id: u64,
    seen: &mut BTreeMap<u64, Option<String>>,
) -> Outcome {
    let current = match shard.get(addr, key).await {
        Ok(e) => e,
        Err(_) => {
            rec.complete(id, Outcome::Fail, None);
            return Outcome::Fail;
        }
    };
    let value = current.as_ref().and_then(value_of);
    if value != from {
        seen.insert(key, value);
        rec.complete(id, Outcome::Ok, Some(KvOutput::Cas { ok: false }));
        return Outcome::Ok;
    }
    let new = entry(to);
    let req = ShardRequest::Commit {
        reads: vec![(key, current)],
        writes: vec![(key, Some(new.clone()))],
    };
    match shard.call(addr, &req).await {
        Ok(ShardResponse::Written(version)) => {
            rec.acked.record(key, Some(&new), version);
            seen.insert(key, Some(to.to_string()));
            rec.complete(id, Outcome::Ok, Some(KvOutput::Cas { ok: true }));
            Outcome::Ok
        }
        Ok(other) => {
            tracing::warn!("unexpected reply to a commit: {other:?}");
            rec.complete(id, Outcome::Info, None);
            Outcome::Info
        }
        Err(err) => {
            let o = outcome_of(&err);
            rec.complete(id, o, None);
            o
        }
    }
}

/// Ids per client worker: a worker's fresh ids (after it retires one) follow each other.
const IDS_PER_WORKER: u64 = 1_000_000;

/// The history's client id of a worker's `generation`-th id.
fn client_id(worker: u64, generation: u64) -> u64 {
    worker * IDS_PER_WORKER + generation
}

/// The worker a client id belongs to: the lane the failure report draws it in.
pub fn worker_of(client: u64) -> u64 {
    client / IDS_PER_WORKER
}
