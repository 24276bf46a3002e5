//! Leadership confirmations shared by concurrent reads, as etcd batches ReadIndex requests.
//!
//! A linearizable read on the leader needs a round of heartbeats that a quorum answers,
//! started after the read arrived: only then does the read point (the commit index the round
//! reports) cover every write that completed before the read began. Reads that arrive while a
//! round is in flight cannot join it (it started before them), so they queue, and one round
//! started as soon as the current one ends confirms all of them at once. A node serving
//! `n` concurrent reads sends one round per round-trip instead of one per read. No leases:
//! every read still waits for a quorum's answer to a round that began after it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft};

use super::types::{LogId, NodeId, TypeConfig};
use crate::coverage::{self, Corner};
use crate::probe::{Probe, RaftEvent};

/// The outcome of one confirmation round: the read point (every read confirmed by it must
/// wait until the state machine has applied up to it) or why leadership was not confirmed.
pub type Confirmed =
    Result<Option<LogId>, RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>;

/// Runs one confirmation round (openraft's `get_read_log_id`, possibly wrapped).
pub type RoundFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Confirmed> + Send>> + Send + Sync>;

#[derive(Default)]
struct Queue {
    /// A round is in flight (its driver task runs).
    running: bool,
    /// Reads waiting for the next round.
    waiting: Vec<tokio::sync::oneshot::Sender<Confirmed>>,
}

/// Shares confirmation rounds between the reads a node serves. Clones share the queue.
#[derive(Clone)]
pub struct ReadBatcher {
    queue: Arc<Mutex<Queue>>,
    round: RoundFn,
    raft: Raft<TypeConfig>,
    probe: Probe,
}

impl ReadBatcher {
    /// A batcher that confirms with `round`, waits for applies on `raft` and reports each
    /// round to `probe`.
    pub fn new(raft: Raft<TypeConfig>, round: RoundFn, probe: Probe) -> Self {
        Self {
            queue: Arc::default(),
            round,
            raft,
            probe,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Confirms this node's leadership with a round that starts after the call, then waits
    /// until the state machine has applied up to the round's read point. The same contract
    /// as openraft's `ensure_linearizable`.
    pub async fn ensure_linearizable(&self) -> Confirmed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.queue();
            q.waiting.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.drive().await });
        }
        let read_point = match rx.await {
            Ok(r) => r?,
            Err(_) => {
                return Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
            }
        };
        let applied = self.raft.metrics().borrow().last_applied;
        if read_point.map(|l| l.index) > applied.map(|l| l.index) {
            let index = read_point.map_or(0, |l| l.index);
            self.raft
                .wait(None)
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|_| RaftError::Fatal(openraft::error::Fatal::Stopped))?;
        }
        Ok(read_point)
    }

    /// Runs rounds while reads wait for one: each round confirms every read queued before it
    /// started.
    async fn drive(&self) {
        loop {
            let batch = {
                let mut q = self.queue();
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let outcome = (self.round)().await;
            coverage::hit_if(outcome.is_err(), Corner::RaftReadRoundFailed);
            if outcome.is_ok() {
                let reads = batch.len() as u64;
                coverage::hit_if(reads > 1, Corner::RaftReadsBatched);
                self.probe.emit(|| RaftEvent::ReadsConfirmed { reads });
            }
            for tx in batch {
                // A read that gave up (its client timed out) dropped its receiver.
                let _ = tx.send(outcome.clone());
            }
        }
    }
}
