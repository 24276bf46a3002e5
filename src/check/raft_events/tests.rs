use super::*;

/// Builds a record: events in order, each at 1 ms more than the last.
#[derive(Default)]
struct Rec(Vec<Recorded>);

impl Rec {
    fn at(mut self, node: u64, incarnation: u64, event: RaftEvent) -> Rec {
        let at_us = (self.0.len() as u64 + 1) * 1000;
        self.0.push(Recorded {
            at_us,
            node,
            incarnation,
            event,
        });
        self
    }
}

fn e(index: u64, term: u64, hash: u64) -> EntryId {
    EntryId { index, term, hash }
}

fn p(term: u64, index: u64) -> LogPos {
    LogPos { term, index }
}

fn vote(term: u64, voted_for: u64, committed: bool) -> RaftEvent {
    RaftEvent::VoteSaved(VoteRec {
        term,
        voted_for: Some(voted_for),
        committed,
    })
}

fn recovered(vote: Option<VoteRec>, purged: Option<LogPos>, entries: &[EntryId]) -> RaftEvent {
    RaftEvent::LogRecovered {
        vote,
        purged,
        entries: entries.to_vec(),
    }
}

/// A healthy run: node 1 leads term 1 and replicates two entries to node 2, which restarts
/// with all of it, then node 2 leads term 2 holding everything applied.
fn healthy() -> Rec {
    Rec::default()
        .at(1, 0, RaftEvent::StateMachineOpened { applied: None })
        .at(1, 0, recovered(None, None, &[]))
        .at(2, 0, RaftEvent::StateMachineOpened { applied: None })
        .at(2, 0, recovered(None, None, &[]))
        .at(1, 0, vote(1, 1, false))
        .at(2, 0, vote(1, 1, false))
        .at(1, 0, vote(1, 1, true))
        .at(1, 0, RaftEvent::Appended(vec![e(1, 1, 10), e(2, 1, 20)]))
        .at(2, 0, vote(1, 1, true))
        .at(2, 0, RaftEvent::Appended(vec![e(1, 1, 10), e(2, 1, 20)]))
        .at(1, 0, RaftEvent::Committed(p(1, 2)))
        .at(1, 0, RaftEvent::Applied(vec![e(1, 1, 10), e(2, 1, 20)]))
        .at(2, 0, RaftEvent::Committed(p(1, 2)))
        .at(2, 0, RaftEvent::Applied(vec![e(1, 1, 10), e(2, 1, 20)]))
        .at(
            2,
            1,
            RaftEvent::StateMachineOpened {
                applied: Some(p(1, 1)),
            },
        )
        .at(
            2,
            1,
            recovered(led_by_1(), None, &[e(1, 1, 10), e(2, 1, 20)]),
        )
        .at(2, 1, RaftEvent::Applied(vec![e(2, 1, 20)]))
        .at(2, 1, vote(2, 2, false))
        .at(2, 1, vote(2, 2, true))
        .at(2, 1, RaftEvent::Appended(vec![e(3, 2, 30)]))
}

/// Node 1's committed vote for itself in term 1.
fn led_by_1() -> Option<VoteRec> {
    Some(VoteRec {
        term: 1,
        voted_for: Some(1),
        committed: true,
    })
}

#[test]
fn a_healthy_record_passes_every_check() {
    assert_eq!(check(&healthy().0), vec![]);
}

#[test]
fn election_safety_fires_on_two_leaders_of_a_term_and_on_a_double_vote() {
    let two_leaders = healthy().at(2, 1, vote(1, 2, true)).0;
    assert!(matches!(
        election_safety(&two_leaders),
        Some(Failure::ElectionSafety { term: 1, .. })
    ));
    // Node 2 voted for 1 in term 1 in its first start, and for 3 after its restart.
    let double = healthy().at(2, 1, vote(1, 3, false)).0;
    assert_eq!(
        election_safety(&double),
        Some(Failure::DoubleVote {
            node: 2,
            term: 1,
            candidates: vec![1, 3],
            at_ms: double.len() as u64,
        })
    );
}

#[test]
fn state_machine_safety_fires_on_an_index_applied_with_two_entries() {
    let bad = healthy()
        .at(1, 0, RaftEvent::Applied(vec![e(3, 2, 30)]))
        .at(3, 0, RaftEvent::Applied(vec![e(3, 2, 31)]))
        .0;
    let Some(Failure::AppliedConflict {
        index: 3,
        first,
        second,
        ..
    }) = state_machine_safety(&bad)
    else {
        panic!("no conflict found in {bad:?}");
    };
    assert_eq!((first.node, second.node), (1, 3));
    // The same entry applied again after a restart is no conflict.
    let again = healthy().at(1, 1, RaftEvent::Applied(vec![e(2, 1, 20)])).0;
    assert_eq!(state_machine_safety(&again), None);
}

#[test]
fn leader_completeness_fires_when_a_new_leader_lacks_an_applied_entry() {
    // Node 3 never got entry 2 (applied by nodes 1 and 2) and is elected for term 3.
    let bad = healthy()
        .at(3, 0, recovered(None, None, &[e(1, 1, 10)]))
        .at(3, 0, vote(3, 3, true))
        .0;
    assert_eq!(
        leader_completeness(&bad),
        Some(Failure::LeaderCompleteness {
            leader: 3,
            term: 3,
            index: 2,
            applied_term: 1,
            held_term: None,
            at_ms: bad.len() as u64,
        })
    );
    // Covered by a snapshot it installed, the entry need not be in its log.
    let covered = healthy()
        .at(3, 0, recovered(None, None, &[e(1, 1, 10)]))
        .at(3, 0, RaftEvent::SnapshotInstalled(Some(p(1, 2))))
        .at(3, 0, vote(3, 3, true))
        .0;
    assert_eq!(leader_completeness(&covered), None);
    // A different entry at that index is no better than none.
    let other = healthy()
        .at(3, 0, recovered(None, None, &[e(1, 1, 10), e(2, 2, 99)]))
        .at(3, 0, vote(3, 3, true))
        .0;
    assert!(matches!(
        leader_completeness(&other),
        Some(Failure::LeaderCompleteness {
            held_term: Some(2),
            ..
        })
    ));
}

#[test]
fn durability_fires_on_a_lost_vote_or_a_lost_entry() {
    // Node 1 reported entries 1 and 2 durable, and comes back with entry 1 only.
    let lost_entry = healthy()
        .at(1, 1, recovered(led_by_1(), None, &[e(1, 1, 10)]))
        .0;
    assert!(matches!(
        durability(&lost_entry),
        Some(Failure::Durability {
            node: 1,
            incarnation: 1,
            lost: Lost::Entry {
                index: 2,
                durable_term: 1,
                recovered_term: None
            },
            ..
        })
    ));
    // ... or with its vote of term 1 gone.
    let lost_vote = healthy()
        .at(1, 1, recovered(None, None, &[e(1, 1, 10), e(2, 1, 20)]))
        .0;
    assert!(matches!(
        durability(&lost_vote),
        Some(Failure::Durability {
            lost: Lost::Vote { .. },
            ..
        })
    ));
    // A truncation reported before the crash may or may not have landed; entries purged
    // since do not count.
    let fine = healthy()
        .at(1, 0, RaftEvent::Truncated { from: 2 })
        .at(1, 1, recovered(led_by_1(), Some(p(1, 1)), &[]))
        .0;
    assert_eq!(durability(&fine), None);
}

#[test]
fn monotonicity_fires_on_commits_or_applies_going_back() {
    let commit = healthy().at(1, 0, RaftEvent::Committed(p(1, 1))).0;
    assert!(matches!(
        monotonicity(&commit),
        Some(Failure::Monotonicity {
            regress: Regress::Commit { from: 2, to: 1 },
            ..
        })
    ));
    let apply = healthy().at(1, 0, RaftEvent::Applied(vec![e(2, 1, 20)])).0;
    assert!(matches!(
        monotonicity(&apply),
        Some(Failure::Monotonicity {
            regress: Regress::Applied { after: 2, index: 2 },
            ..
        })
    ));
    let below_snapshot = healthy()
        .at(3, 0, RaftEvent::SnapshotInstalled(Some(p(1, 5))))
        .at(3, 0, RaftEvent::Applied(vec![e(4, 1, 40)]))
        .0;
    assert!(matches!(
        monotonicity(&below_snapshot),
        Some(Failure::Monotonicity {
            regress: Regress::BelowSnapshot {
                index: 4,
                snapshot: 5
            },
            ..
        })
    ));
    let purged_past = healthy()
        .at(
            1,
            1,
            RaftEvent::StateMachineOpened {
                applied: Some(p(1, 1)),
            },
        )
        .at(1, 1, recovered(None, Some(p(1, 2)), &[]))
        .0;
    assert!(matches!(
        monotonicity(&purged_past),
        Some(Failure::Monotonicity {
            regress: Regress::BelowPurged {
                applied: Some(1),
                purged: 2
            },
            ..
        })
    ));
}
