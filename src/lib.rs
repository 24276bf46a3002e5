//! odgm-sim: the ODGM storage, shard and replication stack, built to run under a
//! deterministic simulation (madsim) as well as on real tokio.
//!
//! The tree follows the stack from the bottom up:
//! - [`storage`]: the application-data storage traits, the memory / redb / fjall engines,
//!   the simulated disk, and the streaming snapshot wire format.
//! - [`check`]: histories and the linearizability and convergence checkers.
//! - [`rt`]: the one place that switches between simulation and real mode.

#![warn(missing_docs)]

pub mod bench;
pub mod bugs;
pub mod check;
pub mod cli;
pub mod net;
pub mod raft;
pub mod rt;
pub mod scenario;
pub mod shard;
pub mod sim;
pub mod storage;
