//! Raft replication on openraft 0.9: the type config, the runtime, the durable log store, the
//! shard state machine, and snapshots as streams.

// openraft's traits return its own `StorageError`, which is large; the helpers here return
// what the traits demand.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod node;
pub mod read_batch;
pub mod runtime;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use log_store::LogStore;
pub use node::{RaftNode, RaftOptions};
pub use runtime::RaftRuntime;
pub use snapshot::SnapshotData;
pub use state_machine::ObjectShardStateMachine;
pub use types::{CommandResult, NodeId, OpResult, ShardCommand, ShardOp, TypeConfig};
