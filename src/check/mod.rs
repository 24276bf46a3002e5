//! Checkers: pure functions over a recorded [`History`], independent of the simulator.
//!
//! - [`history`]: operations with invoke / completion times and `ok | fail | info` outcomes,
//!   plus the fault events that happened around them.
//! - [`model`]: sequential specifications — register, two compare-and-set registers
//!   (etcd-style and Knossos-style failure handling) and a key-value map.
//! - [`linearizability`]: Wing & Gong search with Lowe's memoisation and P-compositionality.
//! - [`convergence`]: final replica states against acknowledged writes under last-writer-wins.
//! - [`formats`]: Porcupine's etcd and kv logs, Jepsen EDN, and our JSON-lines format.
//! - [`html`]: a self-contained visualization of a checked history.

pub mod command;
pub mod convergence;
pub mod formats;
pub mod history;
pub mod html;
pub mod linearizability;
pub mod model;

pub use history::{FaultEvent, History, HistoryError, Operation, Outcome, Recorder, Time};
pub use linearizability::{check, CheckOptions, CheckResult, Verdict};
pub use model::{
    KvInput, KvModel, KvOutput, KvState, Model, RegInput, RegOutput, RegisterModel, Step,
};
