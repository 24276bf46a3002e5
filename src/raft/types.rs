//! What Raft replicates: shard commands (applied atomically, one entry each) and their
//! results, and the openraft type configuration.

use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotData;
use super::RaftRuntime;

/// Node ids are `u64`.
pub type NodeId = u64;

/// One operation of a shard command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardOp {
    /// Set a key.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Key.
        key: Vec<u8>,
    },
    /// Set `key` to `new` (or remove it when `new` is `None`) iff its value is `expected`.
    Cas {
        /// Key.
        key: Vec<u8>,
        /// Expected current value (`None`: absent).
        expected: Option<Vec<u8>>,
        /// New value (`None`: delete).
        new: Option<Vec<u8>>,
    },
    /// A precondition: unless `key` holds `expected` (`None`: absent) when the command
    /// applies, the whole command is aborted and none of its operations take effect. This is
    /// how a shard transaction commits atomically and only if what it read is still current.
    Expect {
        /// Key.
        key: Vec<u8>,
        /// The value the command expects.
        expected: Option<Vec<u8>>,
    },
}

/// A shard command: its operations apply atomically, in order, as one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardCommand {
    /// The operations.
    pub ops: Vec<ShardOp>,
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Put or delete applied.
    Done,
    /// A cas: whether it swapped, and the value it found.
    Cas {
        /// Swapped or not.
        ok: bool,
        /// The value found before the cas.
        current: Option<Vec<u8>>,
    },
}

/// The result of a command (empty for blank and membership entries).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommandResult {
    /// One result per operation (empty when the command was aborted).
    pub results: Vec<OpResult>,
    /// The first `Expect` that failed, by its index in the command; nothing was applied.
    pub aborted: Option<usize>,
    /// The log index the command was applied at.
    pub index: u64,
}

openraft::declare_raft_types!(
    /// The openraft type configuration of a Raft shard.
    pub TypeConfig:
        D = ShardCommand,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = SnapshotData,
        AsyncRuntime = RaftRuntime,
);

/// A Raft log entry of a shard.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Stored membership.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// openraft's storage error.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// A log position as the probe reports it.
pub fn pos(id: &LogId) -> crate::probe::LogPos {
    crate::probe::LogPos {
        term: id.leader_id.term,
        index: id.index,
    }
}

/// An entry's identity for the probe, from its encoded bytes (as stored).
pub fn entry_id(id: &LogId, encoded: &[u8]) -> crate::probe::EntryId {
    crate::probe::EntryId {
        index: id.index,
        term: id.leader_id.term,
        hash: crate::probe::hash_bytes(encoded),
    }
}
