//! Recorded histories: what each client invoked, when, and what came back.
//!
//! Times are opaque ordered numbers (simulated nanoseconds, or line numbers for imported
//! logs). Operation A precedes B in real time iff A completed strictly before B was invoked.
//! An `info` outcome is indeterminate: the operation may have taken effect at any moment
//! after its invocation, or never; it has no completion time.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A point in time; only the order matters.
pub type Time = u64;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened, with the recorded output.
    Ok,
    /// It definitely did not take effect (or, for some models, its failure is an output).
    Fail,
    /// Unknown: timed out or the connection was lost.
    Info,
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The client (process) that issued it; a client has at most one operation pending.
    pub client: u64,
    /// When it was invoked.
    pub invoke: Time,
    /// When it completed; `None` for `info` (never observed to complete).
    pub complete: Option<Time>,
    /// What was asked.
    pub input: I,
    /// What came back (`None` when nothing did).
    pub output: Option<O>,
    /// How it ended.
    pub outcome: Outcome,
}

/// A fault that happened during the run, shown next to the operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// When it started.
    pub time: Time,
    /// When it was healed, if it was.
    pub end: Option<Time>,
    /// Short kind (`partition`, `crash`, ...).
    pub kind: String,
    /// Free text.
    pub detail: String,
    /// The node it struck, when it struck one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
}

/// A history of operations plus fault events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History<I, O> {
    /// Operations in invocation order.
    pub ops: Vec<Operation<I, O>>,
    /// Faults, in time order.
    pub faults: Vec<FaultEvent>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self {
            ops: Vec::new(),
            faults: Vec::new(),
        }
    }
}

/// A malformed history.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// A client invoked while it had an operation pending.
    #[error("client {client} invoked at {at} while its operation invoked at {pending_since} was pending")]
    ConcurrentInvoke {
        /// The client.
        client: u64,
        /// The new invocation.
        at: Time,
        /// The pending one.
        pending_since: Time,
    },
    /// A completion with no pending invocation.
    #[error("client {client} completed at {at} with no operation pending")]
    CompletionWithoutInvoke {
        /// The client.
        client: u64,
        /// The completion.
        at: Time,
    },
    /// A completion before its invocation.
    #[error("client {client}: completion at {complete} precedes invocation at {invoke}")]
    CompletesBeforeInvoke {
        /// The client.
        client: u64,
        /// Invocation.
        invoke: Time,
        /// Completion.
        complete: Time,
    },
    /// An `ok` operation with no output.
    #[error("client {client}: ok operation invoked at {invoke} has no output")]
    OkWithoutOutput {
        /// The client.
        client: u64,
        /// Invocation.
        invoke: Time,
    },
}

impl<I, O> History<I, O> {
    /// Checks the shape rules: per client, operations do not overlap; completions follow
    /// invocations; `ok` operations have outputs.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut busy_until: std::collections::BTreeMap<u64, (Time, Option<Time>)> =
            Default::default();
        let mut order: Vec<&Operation<I, O>> = self.ops.iter().collect();
        order.sort_by_key(|o| o.invoke);
        for op in order {
            if let Some(c) = op.complete {
                if c < op.invoke {
                    return Err(HistoryError::CompletesBeforeInvoke {
                        client: op.client,
                        invoke: op.invoke,
                        complete: c,
                    });
                }
            }
            if op.outcome == Outcome::Ok && op.output.is_none() {
                return Err(HistoryError::OkWithoutOutput {
                    client: op.client,
                    invoke: op.invoke,
                });
            }
            if let Some((since, until)) = busy_until.get(&op.client) {
                let free = until.is_some_and(|u| u <= op.invoke);
                if !free {
                    return Err(HistoryError::ConcurrentInvoke {
                        client: op.client,
                        at: op.invoke,
                        pending_since: *since,
                    });
                }
            }
            busy_until.insert(op.client, (op.invoke, op.complete));
        }
        Ok(())
    }
}

/// Records a history as it happens: `invoke`, then `complete` (or nothing, for operations
/// still pending at the end, which [`Recorder::finish`] marks `info`).
#[derive(Debug)]
pub struct Recorder<I, O> {
    history: History<I, O>,
    pending: std::collections::BTreeMap<u64, usize>,
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Self {
            history: History::default(),
            pending: Default::default(),
        }
    }
}

impl<I, O> Recorder<I, O> {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation.
    pub fn invoke(&mut self, client: u64, input: I, at: Time) -> Result<(), HistoryError> {
        if let Some(&i) = self.pending.get(&client) {
            return Err(HistoryError::ConcurrentInvoke {
                client,
                at,
                pending_since: self.history.ops[i].invoke,
            });
        }
        self.pending.insert(client, self.history.ops.len());
        self.history.ops.push(Operation {
            client,
            invoke: at,
            complete: None,
            input,
            output: None,
            outcome: Outcome::Info,
        });
        Ok(())
    }

    /// Records a completion of the client's pending operation. An `info` outcome leaves the
    /// completion time unset (the operation may take effect later).
    pub fn complete(
        &mut self,
        client: u64,
        outcome: Outcome,
        output: Option<O>,
        at: Time,
    ) -> Result<(), HistoryError> {
        let i = self
            .pending
            .remove(&client)
            .ok_or(HistoryError::CompletionWithoutInvoke { client, at })?;
        let op = &mut self.history.ops[i];
        if at < op.invoke {
            return Err(HistoryError::CompletesBeforeInvoke {
                client,
                invoke: op.invoke,
                complete: at,
            });
        }
        op.outcome = outcome;
        op.output = output;
        op.complete = (outcome != Outcome::Info).then_some(at);
        Ok(())
    }

    /// Records a fault event.
    pub fn fault(&mut self, event: FaultEvent) {
        self.history.faults.push(event);
    }

    /// Whether the client has an operation pending.
    pub fn is_pending(&self, client: u64) -> bool {
        self.pending.contains_key(&client)
    }

    /// The history; operations still pending are indeterminate (`info`).
    pub fn finish(self) -> History<I, O> {
        self.history
    }
}
