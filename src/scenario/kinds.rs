//! The fault vocabulary: [`FaultKind`] (what a schedule entry can do) and [`NemesisKind`]
//! (what the random nemesis can draw). Each kind knows its name in files, the fields it takes
//! and what it needs of the cluster ([`Need`]); validation, emission, the chaos generator and
//! the harness all ask the kind, so adding one is one variant and the `match`es the compiler
//! then points at.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ClusterConfig;
use crate::shard::ShardKind;
use crate::storage::EngineKind;

/// Defines a kind enum whose variants have fixed names: the names are the enum's serde form,
/// its `Display` and `FromStr`, so no list of names exists apart from the enum.
macro_rules! named_kinds {
    ($(#[$meta:meta])* pub enum $kind:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $kind {
            $($(#[$vmeta])* $variant,)*
        }

        impl $kind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [$kind] = &[$($kind::$variant,)*];

            /// The name used in scenario files.
            pub fn name(self) -> &'static str {
                match self {
                    $($kind::$variant => $name,)*
                }
            }

            /// Every name, comma-separated (for error messages).
            pub fn names() -> String {
                $kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }

        impl std::str::FromStr for $kind {
            type Err = String;

            fn from_str(s: &str) -> Result<$kind, String> {
                $kind::ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| {
                    format!("{s:?} (expected one of {})", $kind::names())
                })
            }
        }

        impl Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$kind, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e| serde::de::Error::custom(format!("unknown kind {e}")))
            }
        }
    };
}

/// Something a fault kind needs of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The redb engine: its disks are simulated, so they can lose power and fail.
    RedbEngine,
    /// Raft: the fault acts on Raft's log, snapshots or membership.
    Raft,
    /// At least two nodes, so that there is a link to cut.
    TwoNodes,
    /// Raft nodes that keep their log and vote across a crash: a Raft node on the memory
    /// engine would come back empty under its old identity, forgetting whom it voted for
    /// and what it acknowledged, which Raft does not allow.
    DurableRaftLog,
}

impl Need {
    /// Whether `cluster` has it.
    pub fn met_by(self, cluster: &ClusterConfig) -> bool {
        match self {
            Need::RedbEngine => cluster.engine == EngineKind::Redb,
            Need::Raft => cluster.mode == ShardKind::Raft,
            Need::TwoNodes => cluster.nodes >= 2,
            Need::DurableRaftLog => {
                cluster.mode != ShardKind::Raft || cluster.engine != EngineKind::Memory
            }
        }
    }

    /// The first need `cluster` does not meet.
    pub fn first_unmet(needs: &[Need], cluster: &ClusterConfig) -> Option<Need> {
        needs.iter().copied().find(|n| !n.met_by(cluster))
    }

    /// Why a fault cannot happen in `cluster`, for error messages.
    pub fn unmet(self, what: &str, cluster: &ClusterConfig) -> String {
        match self {
            Need::RedbEngine => format!(
                "{what} needs the redb engine (on the simulated disk); this cluster uses {}",
                cluster.engine.name()
            ),
            Need::Raft => format!(
                "{what} is a Raft fault; this cluster's mode is {}",
                cluster.mode.name()
            ),
            Need::TwoNodes => format!("{what} needs at least 2 nodes; this cluster has 1"),
            Need::DurableRaftLog => format!(
                "{what} of a Raft node on the memory engine: its log and vote would vanish and \
                 it would come back empty under its old identity, which Raft does not allow \
                 (use redb or fjall, or kill one node by id and replace it with remove_replica)"
            ),
        }
    }
}

named_kinds! {
    /// What a schedule entry does (the `fault` field of `[[schedule]]`).
    pub enum FaultKind {
        /// Cut every link between groups.
        Partition = "partition",
        /// Cut one node from every other.
        Isolate = "isolate",
        /// Lose messages from one node to another only.
        OneWay = "one_way",
        /// Nothing in or out of a node.
        Clog = "clog",
        /// Restore every link.
        Heal = "heal",
        /// Stop a node's process.
        Kill = "kill",
        /// Stop a node and cut its power.
        PowerLoss = "power_loss",
        /// Start a stopped node.
        Restart = "restart",
        /// Freeze a node.
        Pause = "pause",
        /// Unfreeze a node.
        Resume = "resume",
        /// Set a node's clock offset and drift.
        ClockSkew = "clock_skew",
        /// Set a node's disk fault rates.
        DiskFaults = "disk_faults",
        /// Build a snapshot now.
        Snapshot = "snapshot",
        /// Add a replica.
        AddReplica = "add_replica",
        /// Remove a replica.
        RemoveReplica = "remove_replica",
    }
}

impl FaultKind {
    /// The fields a schedule entry of this kind takes, beyond `at_ms` and `fault`.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Partition => &["groups"],
            FaultKind::Isolate => &["node", "after"],
            FaultKind::Clog
            | FaultKind::Restart
            | FaultKind::Pause
            | FaultKind::Resume
            | FaultKind::Snapshot
            | FaultKind::AddReplica
            | FaultKind::RemoveReplica => &["node"],
            FaultKind::OneWay => &["from", "to"],
            FaultKind::Heal => &[],
            FaultKind::PowerLoss => &["node", "mode", "after"],
            FaultKind::Kill => &["node", "after"],
            FaultKind::ClockSkew => &["node", "offset_ms", "drift_ppm"],
            FaultKind::DiskFaults => &["node", "disk"],
        }
    }

    /// The fields that may be left out (they default to 0).
    pub fn optional_fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::ClockSkew => &["offset_ms", "drift_ppm"],
            FaultKind::PowerLoss | FaultKind::Kill | FaultKind::Isolate => &["after"],
            _ => &[],
        }
    }

    /// What the kind needs of the cluster.
    pub fn needs(self) -> &'static [Need] {
        match self {
            FaultKind::Partition | FaultKind::Isolate | FaultKind::OneWay | FaultKind::Clog => {
                &[Need::TwoNodes]
            }
            FaultKind::PowerLoss | FaultKind::DiskFaults => &[Need::RedbEngine],
            FaultKind::Snapshot | FaultKind::AddReplica | FaultKind::RemoveReplica => &[Need::Raft],
            FaultKind::Kill => &[Need::DurableRaftLog],
            FaultKind::Heal
            | FaultKind::Restart
            | FaultKind::Pause
            | FaultKind::Resume
            | FaultKind::ClockSkew => &[],
        }
    }

    /// Whether it cuts links (a `heal` undoes it).
    pub fn cuts_links(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::Isolate | FaultKind::OneWay | FaultKind::Clog
        )
    }
}

named_kinds! {
    /// What the random nemesis can inject (the keys of `[nemesis.kinds]`). Declared in name
    /// order: a nemesis iterates its kinds in this order when it draws from the seed, as the
    /// file lists them sorted.
    pub enum NemesisKind {
        /// Set a node's clock offset and drift, then reset it.
        ClockSkew = "clock_skew",
        /// Clog a node, then heal.
        Clog = "clog",
        /// Give a node's disks error rates and latency, then clear them.
        DiskFaults = "disk_faults",
        /// Kill a node, then restart it.
        Kill = "kill",
        /// Remove a follower from the membership, then add it back.
        Membership = "membership",
        /// Lose messages from one node to another, then heal.
        OneWay = "one_way",
        /// Split the nodes in two, then heal.
        Partition = "partition",
        /// Freeze a node, then resume it.
        Pause = "pause",
        /// Cut a node's power, then restart it.
        PowerLoss = "power_loss",
        /// Make a node build a snapshot.
        Snapshot = "snapshot",
    }
}

impl NemesisKind {
    /// What the kind needs of the cluster.
    pub fn needs(self) -> &'static [Need] {
        match self {
            NemesisKind::Partition | NemesisKind::OneWay | NemesisKind::Clog => &[Need::TwoNodes],
            NemesisKind::PowerLoss | NemesisKind::DiskFaults => &[Need::RedbEngine],
            NemesisKind::Snapshot => &[Need::Raft],
            NemesisKind::Membership => &[Need::Raft, Need::TwoNodes],
            NemesisKind::Kill => &[Need::DurableRaftLog],
            NemesisKind::Pause | NemesisKind::ClockSkew => &[],
        }
    }
}
