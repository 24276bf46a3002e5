//! Raft invariants, as pure functions over what the harness observed of a cluster: which
//! node led which term, the nodes' logs, and each node's state digest at its applied index.
//!
//! - election safety: at most one leader per term;
//! - log matching: an index written in a term holds the same entry on every node;
//! - state-machine safety: nodes that applied up to the same index hold the same state.

use std::collections::{BTreeMap, BTreeSet};

use super::failure::Failure;

/// A node's log: index -> (term, entry hash).
pub type LogSummary = BTreeMap<u64, (u64, u64)>;

/// What the harness observed of a Raft cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftObservation {
    /// Every (term, node) some node's metrics showed leading.
    pub leaders: BTreeSet<(u64, u64)>,
    /// Each readable node's log at the end.
    pub logs: BTreeMap<u64, LogSummary>,
    /// Each readable node's applied index and a digest of its state at the end.
    pub states: BTreeMap<u64, (Option<u64>, u64)>,
}

/// Every invariant over `o`.
pub fn check(o: &RaftObservation) -> Vec<Failure> {
    let mut failures = Vec::new();
    failures.extend(log_matching(&o.logs));
    failures.extend(state_machine_safety(&o.states));
    failures.extend(election_safety(&o.leaders));
    failures
}

/// At most one node leads a term.
pub fn election_safety(leaders: &BTreeSet<(u64, u64)>) -> Option<Failure> {
    let mut by_term: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (term, node) in leaders {
        by_term.entry(*term).or_default().push(*node);
    }
    let (term, leaders) = by_term.into_iter().find(|(_, n)| n.len() > 1)?;
    Some(Failure::ElectionSafety { term, leaders })
}

/// An index written in the same term holds the same entry on every node (the first index
/// where it does not).
pub fn log_matching(logs: &BTreeMap<u64, LogSummary>) -> Option<Failure> {
    // (index, term) -> entry hash -> nodes holding it
    let mut held: BTreeMap<(u64, u64), BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for (id, log) in logs {
        for (index, (term, hash)) in log {
            held.entry((*index, *term))
                .or_default()
                .entry(*hash)
                .or_default()
                .push(*id);
        }
    }
    let ((index, term), variants) = held.into_iter().find(|(_, v)| v.len() > 1)?;
    Some(Failure::LogMatching {
        index,
        term,
        holders: variants.into_values().collect(),
    })
}

/// Nodes that applied up to the same index hold the same state.
pub fn state_machine_safety(states: &BTreeMap<u64, (Option<u64>, u64)>) -> Vec<Failure> {
    let mut by_applied: BTreeMap<Option<u64>, Vec<(u64, u64)>> = BTreeMap::new();
    for (id, (applied, digest)) in states {
        by_applied.entry(*applied).or_default().push((*id, *digest));
    }
    by_applied
        .into_iter()
        .filter(|(_, s)| s.iter().map(|(_, d)| d).collect::<BTreeSet<_>>().len() > 1)
        .map(|(applied, s)| Failure::StateMachineSafety {
            applied,
            nodes: s.into_iter().map(|(id, _)| id).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_safety_fails_on_two_leaders_of_one_term() {
        let ok: BTreeSet<(u64, u64)> = [(1, 1), (2, 3), (3, 3), (5, 2)].into();
        assert_eq!(election_safety(&ok), None);
        let bad: BTreeSet<(u64, u64)> = [(1, 1), (2, 3), (2, 4), (3, 3)].into();
        assert_eq!(
            election_safety(&bad),
            Some(Failure::ElectionSafety {
                term: 2,
                leaders: vec![3, 4]
            })
        );
    }

    #[test]
    fn log_matching_fails_on_one_index_and_term_with_two_entries() {
        let log = |entries: &[(u64, u64, u64)]| -> LogSummary {
            entries.iter().map(|(i, t, h)| (*i, (*t, *h))).collect()
        };
        let mut logs = BTreeMap::new();
        logs.insert(1, log(&[(1, 1, 10), (2, 1, 20), (3, 2, 30)]));
        logs.insert(2, log(&[(1, 1, 10), (2, 1, 20)]));
        // A different entry at index 3 in another term is a later overwrite, not a mismatch.
        logs.insert(3, log(&[(1, 1, 10), (2, 1, 20), (3, 3, 31)]));
        assert_eq!(log_matching(&logs), None);
        logs.insert(4, log(&[(1, 1, 10), (2, 1, 21)]));
        assert_eq!(
            log_matching(&logs),
            Some(Failure::LogMatching {
                index: 2,
                term: 1,
                holders: vec![vec![1, 2, 3], vec![4]],
            })
        );
    }

    #[test]
    fn state_machine_safety_fails_on_one_applied_index_with_two_states() {
        let mut states = BTreeMap::new();
        states.insert(1, (Some(7), 100));
        states.insert(2, (Some(7), 100));
        states.insert(3, (Some(5), 99));
        assert!(state_machine_safety(&states).is_empty());
        states.insert(4, (Some(7), 101));
        assert_eq!(
            state_machine_safety(&states),
            vec![Failure::StateMachineSafety {
                applied: Some(7),
                nodes: vec![1, 2, 4],
            }]
        );
        let o = RaftObservation {
            states,
            ..Default::default()
        };
        assert_eq!(check(&o).len(), 1);
    }
}
