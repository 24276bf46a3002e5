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
    /// Raft nodes at the same applied index with different states.
    StateMachineSafety,
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
            Failure::StateMachineSafety { .. } => CheckKind::StateMachineSafety,
            Failure::Availability { .. } => CheckKind::Availability,
            Failure::ScanValue { .. } => CheckKind::ScanValue,
            Failure::Panic { .. } => CheckKind::Panic,
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
