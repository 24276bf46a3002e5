//! What a failed check says: a [`Failure`] with its facts as fields, and its [`CheckKind`].
//!
//! The kind is what the command line reasons about: `shrink` keeps a candidate only if it
//! fails the same kind of check, `bugs` and `chaos` group their summaries by it, and a run's
//! report lists failures as structured records (`report.json`, `--json`), never as text to
//! parse.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::convergence::Violation;

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The history is not linearizable.
    Linearizability,
    /// Scans and counts are not linearizable with the operations on their keys (the
    /// single-key operations alone are).
    MultiKeyRead,
    /// The linearizability checker ran out of budget: no verdict either way.
    CheckerBudget,
    /// The history could not be checked (malformed).
    MalformedHistory,
    /// Replicas did not converge, or lost or resurrected writes.
    Convergence,
    /// Two leaders in one Raft term.
    ElectionSafety,
    /// One Raft log index and term with two different entries.
    LogMatching,
    /// Raft nodes at the same applied index with different states, or one index applied
    /// with two different entries.
    StateMachineSafety,
    /// An entry applied somewhere is missing from the log of a leader elected after.
    LeaderCompleteness,
    /// A restarted Raft node holds less than its log store had reported durable.
    Durability,
    /// A Raft node's commit or applied index went back, or it applied below its snapshot.
    Monotonicity,
    /// A node stopped with no fault to explain it, or did not serve again after the heal.
    NodeStopped,
    /// The shard did not serve after the heal and the quiet phase.
    Availability,
    /// A scan returned a value no client wrote to its key.
    ScanValue,
    /// The simulation panicked (an assertion in the stack or the harness).
    Panic,
}

impl CheckKind {
    /// The name used in reports and summaries.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Linearizability => "linearizability",
            CheckKind::MultiKeyRead => "multi-key read",
            CheckKind::CheckerBudget => "checker budget",
            CheckKind::MalformedHistory => "history malformed",
            CheckKind::Convergence => "convergence",
            CheckKind::ElectionSafety => "election safety",
            CheckKind::LogMatching => "log matching",
            CheckKind::StateMachineSafety => "state machine safety",
            CheckKind::LeaderCompleteness => "leader completeness",
            CheckKind::Durability => "durability",
            CheckKind::Monotonicity => "monotonicity",
            CheckKind::NodeStopped => "node stopped",
            CheckKind::Availability => "availability",
            CheckKind::ScanValue => "scan value",
            CheckKind::Panic => "panic",
        }
    }

    /// Whether a failure of this kind shows a bug in what was checked. A checker that ran out
    /// of budget gave no verdict: the run is not known to be wrong.
    pub fn is_violation(self) -> bool {
        self != CheckKind::CheckerBudget
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A failed check and its facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Failure {
    /// The history is not linearizable.
    Linearizability {
        /// The part (key) that cannot be linearized, when the history was checked per key.
        key: Option<String>,
    },
    /// Scans or counts read what no single instant held, where the single-key operations are
    /// linearizable.
    MultiKeyRead {
        /// The keys of the part that cannot be linearized.
        keys: Option<String>,
    },
    /// The linearizability checker's budget ran out.
    CheckerBudget {
        /// The part it gave up on.
        key: Option<String>,
        /// Search steps spent on that part.
        steps: u64,
    },
    /// The history could not be checked.
    MalformedHistory {
        /// Why.
        message: String,
    },
    /// A convergence violation.
    Convergence {
        /// What went wrong.
        violation: Violation,
    },
    /// Two nodes led one term.
    ElectionSafety {
        /// The term.
        term: u64,
        /// The nodes that led it.
        leaders: Vec<u64>,
    },
    /// One (index, term) holds different entries on different nodes.
    LogMatching {
        /// Log index.
        index: u64,
        /// Term.
        term: u64,
        /// The nodes holding each variant (one group per entry hash).
        holders: Vec<Vec<u64>>,
    },
    /// Nodes that applied up to the same index hold different states.
    StateMachineSafety {
        /// The applied index (`None`: nothing applied).
        applied: Option<u64>,
        /// The nodes.
        nodes: Vec<u64>,
    },
    /// A node voted for two candidates in one term (across its restarts).
    DoubleVote {
        /// The node.
        node: u64,
        /// The term.
        term: u64,
        /// The first candidate, then the second.
        candidates: Vec<u64>,
        /// When it cast the second vote, ms since the run started.
        at_ms: u64,
    },
    /// One log index was applied with two different entries.
    AppliedConflict {
        /// The index.
        index: u64,
        /// The first application: node and the entry's term.
        first: Applied,
        /// The conflicting one.
        second: Applied,
        /// When the second was applied, ms since the run started.
        at_ms: u64,
    },
    /// An entry applied before a leader's election is not in the new leader's log.
    LeaderCompleteness {
        /// The new leader.
        leader: u64,
        /// Its term.
        term: u64,
        /// The entry's index.
        index: u64,
        /// The term of the entry applied there.
        applied_term: u64,
        /// The term of what the leader holds there (`None`: nothing).
        held_term: Option<u64>,
        /// When it was elected, ms since the run started.
        at_ms: u64,
    },
    /// A restarted node holds less than its log store had reported durable before.
    Durability {
        /// The node.
        node: u64,
        /// The start that came back with less (0 is the first).
        incarnation: u64,
        /// What was lost.
        lost: Lost,
        /// When it started again, ms since the run started.
        at_ms: u64,
    },
    /// Within one incarnation of a node, an index went back.
    Monotonicity {
        /// The node.
        node: u64,
        /// The incarnation.
        incarnation: u64,
        /// What went back.
        regress: Regress,
        /// When, ms since the run started.
        at_ms: u64,
    },
    /// A node stopped with no fault to explain it.
    NodeStopped {
        /// The node.
        node: u64,
        /// When, ms since the run started.
        at_ms: u64,
        /// Why, as the node said.
        why: String,
    },
    /// Nodes stopped by a fault and restarted by the heal did not serve again by the end.
    NotBack {
        /// The nodes.
        nodes: Vec<u64>,
    },
    /// No replica answered a read of these keys after the heal and the quiet phase.
    Availability {
        /// The keys.
        keys: Vec<u64>,
    },
    /// A scan returned a value no client wrote to its key.
    ScanValue {
        /// When the scan completed, ms since the run started.
        at_ms: u64,
        /// The key.
        key: String,
        /// The value it returned.
        value: String,
    },
    /// The simulation panicked.
    Panic {
        /// The panic message.
        message: String,
        /// Where (`file:line`), if known.
        location: Option<String>,
    },
}

/// One application of a log index: the node and the term of the entry it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The node.
    pub node: u64,
    /// Its incarnation.
    pub incarnation: u64,
    /// The term of the entry applied.
    pub term: u64,
}

/// What a restarted node lost ([`Failure::Durability`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Lost {
    /// Its vote went back: (term, candidate) reported durable, and what it came back with.
    Vote {
        /// The durable vote's term, candidate, and whether it was committed.
        durable: (u64, Option<u64>, bool),
        /// The vote it came back with.
        recovered: Option<(u64, Option<u64>, bool)>,
    },
    /// A log entry reported durable is missing or different.
    Entry {
        /// Its index.
        index: u64,
        /// The term of the durable entry.
        durable_term: u64,
        /// The term of what the log holds there (`None`: nothing).
        recovered_term: Option<u64>,
    },
}

/// What went back within one incarnation ([`Failure::Monotonicity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Regress {
    /// The commit index moved from `from` down to `to`.
    Commit {
        /// Before.
        from: u64,
        /// After.
        to: u64,
    },
    /// An entry was applied at `index`, not after the applied index `after`.
    Applied {
        /// The applied index before.
        after: u64,
        /// The index applied.
        index: u64,
    },
    /// An entry was applied at or below the snapshot the node installed.
    BelowSnapshot {
        /// The index applied.
        index: u64,
        /// The snapshot's last index.
        snapshot: u64,
    },
    /// The node started with its log purged past what its state machine holds: the entries
    /// in between are gone from both.
    BelowPurged {
        /// The state machine's applied index.
        applied: Option<u64>,
        /// The log's last purged index.
        purged: u64,
    },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Vote { durable, recovered } => {
                let vote = |(term, node, committed): (u64, Option<u64>, bool)| {
                    let whose = node.map_or("nobody".to_string(), |n| format!("node {n}"));
                    let kind = if committed { "leader" } else { "vote for" };
                    format!("term {term} {kind} {whose}")
                };
                write!(
                    f,
                    "its vote ({}) came back as {}",
                    vote(*durable),
                    recovered.map_or("nothing".to_string(), vote)
                )
            }
            Lost::Entry {
                index,
                durable_term,
                recovered_term,
            } => write!(
                f,
                "log index {index} (term {durable_term}) came back as {}",
                recovered_term.map_or("nothing".to_string(), |t| format!("term {t}"))
            ),
        }
    }
}

impl fmt::Display for Regress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Regress::Commit { from, to } => write!(f, "commit index went back from {from} to {to}"),
            Regress::Applied { after, index } => {
                write!(f, "applied index {index} after having applied {after}")
            }
            Regress::BelowSnapshot { index, snapshot } => write!(
                f,
                "applied index {index}, at or below its installed snapshot's {snapshot}"
            ),
            Regress::BelowPurged { applied, purged } => write!(
                f,
                "started with its log purged to {purged} but its state machine at {applied:?}"
            ),
        }
    }
}

impl Failure {
    /// Which check failed.
    pub fn kind(&self) -> CheckKind {
        match self {
            Failure::Linearizability { .. } => CheckKind::Linearizability,
            Failure::MultiKeyRead { .. } => CheckKind::MultiKeyRead,
            Failure::CheckerBudget { .. } => CheckKind::CheckerBudget,
            Failure::MalformedHistory { .. } => CheckKind::MalformedHistory,
            Failure::Convergence { .. } => CheckKind::Convergence,
            Failure::ElectionSafety { .. } => CheckKind::ElectionSafety,
            Failure::LogMatching { .. } => CheckKind::LogMatching,
            Failure::StateMachineSafety { .. } | Failure::AppliedConflict { .. } => {
                CheckKind::StateMachineSafety
            }
            Failure::DoubleVote { .. } => CheckKind::ElectionSafety,
            Failure::LeaderCompleteness { .. } => CheckKind::LeaderCompleteness,
            Failure::Durability { .. } => CheckKind::Durability,
            Failure::Monotonicity { .. } => CheckKind::Monotonicity,
            Failure::NodeStopped { .. } | Failure::NotBack { .. } => CheckKind::NodeStopped,
            Failure::Availability { .. } => CheckKind::Availability,
            Failure::ScanValue { .. } => CheckKind::ScanValue,
            Failure::Panic { .. } => CheckKind::Panic,
        }
    }
}

impl Failure {
    /// When the Raft invariant it names was broken, ms of simulated time, if it says.
    pub fn at_ms(&self) -> Option<u64> {
        match self {
            Failure::DoubleVote { at_ms, .. }
            | Failure::AppliedConflict { at_ms, .. }
            | Failure::LeaderCompleteness { at_ms, .. }
            | Failure::Durability { at_ms, .. }
            | Failure::Monotonicity { at_ms, .. } => Some(*at_ms),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &Option<String>| {
            k.as_ref()
                .map(|k| format!(" (key {k})"))
                .unwrap_or_default()
        };
        write!(f, "{}: ", self.kind())?;
        match self {
            Failure::Linearizability { key: k } => write!(f, "illegal{}", key(k)),
            Failure::MultiKeyRead { keys } => write!(
                f,
                "a scan or count is not linearizable{} (the single-key operations are)",
                keys.as_ref()
                    .map(|k| format!(" with keys {k}"))
                    .unwrap_or_default()
            ),
            Failure::CheckerBudget { key: k, steps } => write!(
                f,
                "unknown{}: the linearizability checker's budget ran out after {steps} steps",
                key(k)
            ),
            Failure::MalformedHistory { message } => f.write_str(message),
            Failure::Convergence { violation } => write!(f, "{violation}"),
            Failure::ElectionSafety { term, leaders } => {
                write!(f, "term {term} had more than one leader: nodes {leaders:?}")
            }
            Failure::LogMatching {
                index,
                term,
                holders,
            } => write!(
                f,
                "index {index} of term {term} holds different entries: {holders:?}"
            ),
            Failure::StateMachineSafety { applied, nodes } => write!(
                f,
                "nodes {nodes:?} applied up to {applied:?} but hold different states"
            ),
            Failure::DoubleVote {
                node,
                term,
                candidates,
                at_ms,
            } => write!(
                f,
                "node {node} voted for nodes {candidates:?} in term {term} (the second at {at_ms} ms)"
            ),
            Failure::AppliedConflict {
                index,
                first,
                second,
                at_ms,
            } => write!(
                f,
                "index {index} applied as term {} on node {} and as term {} on node {} (at {at_ms} ms)",
                first.term, first.node, second.term, second.node
            ),
            Failure::LeaderCompleteness {
                leader,
                term,
                index,
                applied_term,
                held_term,
                at_ms,
            } => write!(
                f,
                "node {leader} led term {term} from {at_ms} ms without index {index} (term {applied_term}), applied before; it held {}",
                held_term.map_or("nothing".to_string(), |t| format!("term {t}"))
            ),
            Failure::Durability {
                node,
                incarnation,
                lost,
                at_ms,
            } => write!(
                f,
                "node {node} restarted at {at_ms} ms (start {incarnation}) with less than it had reported durable: {lost}"
            ),
            Failure::Monotonicity {
                node,
                incarnation,
                regress,
                at_ms,
            } => write!(f, "node {node} (start {incarnation}) at {at_ms} ms: {regress}"),
            Failure::NodeStopped { node, at_ms, why } => write!(
                f,
                "node {node} stopped at {at_ms} ms with no fault to explain it: {why}"
            ),
            Failure::NotBack { nodes } => write!(
                f,
                "nodes {nodes:?} were restarted by the heal but did not serve again by the end"
            ),
            Failure::Availability { keys } => write!(
                f,
                "unavailable after the heal: no replica answered a read of keys {keys:?}"
            ),
            Failure::ScanValue { at_ms, key, value } => write!(
                f,
                "scan at {at_ms} ms returned key {key} = {value:?}, which no client wrote"
            ),
            Failure::Panic { message, location } => {
                write!(f, "{message}")?;
                match location {
                    Some(l) => write!(f, " at {l}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_structured_records_that_name_their_check() {
        let f = Failure::ScanValue {
            at_ms: 1200,
            key: "3".into(),
            value: "1.7".into(),
        };
        assert_eq!(f.kind(), CheckKind::ScanValue);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["check"], "scan_value");
        assert_eq!(json["key"], "3");
        let back: Failure = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
        assert!(
            f.to_string().starts_with("scan value: scan at 1200 ms"),
            "{f}"
        );
        assert!(!CheckKind::CheckerBudget.is_violation());
        // A failure nested in a failure (a convergence violation with per-node maps) comes
        // back from JSON too: reports are read back by sweeps and `shrink`.
        let diverged = Failure::Convergence {
            violation: Violation::Diverged {
                key: 5,
                entries: vec![(1, None), (2, None)],
            },
        };
        let text = serde_json::to_string(&diverged).unwrap();
        assert_eq!(serde_json::from_str::<Failure>(&text).unwrap(), diverged);
        assert!(CheckKind::Linearizability.is_violation());
    }
}
