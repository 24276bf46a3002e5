//! Checkers: pure functions over what a run recorded, independent of the simulator and of
//! the stack they judge.
//!
//! - [`history`]: operations with invoke / completion times and `ok | fail | info` outcomes,
//!   plus the fault events that happened around them.
//! - [`model`]: sequential specifications — register, two compare-and-set registers
//!   (etcd-style and Knossos-style failure handling) and a key-value map.
//! - [`linearizability`]: Wing & Gong search with Lowe's memoisation and P-compositionality.
//! - [`convergence`]: final replica states against acknowledged writes under last-writer-wins.
//! - [`raft`]: Raft invariants over what the harness observed of a cluster at the end.
//! - [`raft_events`]: Raft invariants on every event the nodes' storage reported.
//! - [`scan`]: scans return only values some client wrote.
//! - [`failure`]: what a failed check says, as a typed record.
//! - [`formats`]: Porcupine's etcd and kv logs, Jepsen EDN, and our JSON-lines format.
//! - [`html`]: a self-contained visualization of a checked history.

pub mod convergence;
pub mod failure;
pub mod formats;
pub mod history;
pub mod html;
pub mod linearizability;
pub mod model;
pub mod raft;
pub mod raft_events;
pub mod scan;

pub use failure::{CheckKind, Failure};
pub use history::{FaultEvent, History, HistoryError, Operation, Outcome, Recorder, Time};
pub use linearizability::{check, CheckOptions, CheckResult, Verdict};
pub use model::{
    KvInput, KvModel, KvOutput, KvState, Model, RegInput, RegOutput, RegisterModel, Step,
};
