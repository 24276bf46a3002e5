//! odgm-sim: the ODGM storage, shard and replication stack, built to run under a
//! deterministic simulation (madsim) as well as on real tokio, and the testbed that runs it.
//!
//! The stack, from the bottom up:
//! - [`rt`]: the one place that switches between simulation and real mode;
//! - [`net`]: the request/response transport (simulated network or TCP);
//! - [`storage`]: the application-data storage traits, the memory / redb / fjall engines,
//!   the simulated disk, and the streaming snapshot wire format;
//! - [`raft`]: openraft's runtime, log store, state machine, snapshots and network;
//! - [`shard`]: one `ShardState` trait over Raft, MST, eventual and unreplicated shards;
//! - [`bugs`]: planted bugs the stack can switch on for a run;
//! - [`coverage`]: the corners of the stack a run reached (coverage probes);
//! - [`probe`]: what the Raft storage reports as it runs (votes, appends, commits, applies,
//!   snapshots), for the invariant checks.
//!
//! The testbed:
//! - [`scenario`]: the scenario schema, its validation, the chaos generator, transforms;
//! - [`check`]: checkers over what a run recorded (linearizability, convergence, Raft
//!   invariants, scans) and typed failures;
//! - [`sim`]: the harness: clusters, clients, faults, observation, a run from scenario to
//!   verdict;
//! - [`cmd`]: the `odgm-sim` command line.
//!
//! Data flows one way: `cmd` → `sim` → {`scenario`, `check`, `shard`, `raft`, `storage`}
//! → `rt`; `tests/layering.rs` checks that no module imports one that imports it back.

#![warn(missing_docs)]

pub mod bugs;
pub mod check;
pub mod cmd;
pub mod coverage;
pub mod net;
pub mod probe;
pub mod raft;
pub mod rt;
pub mod scenario;
pub mod shard;
pub mod sim;
pub mod storage;
