//! Convergence: the final states of the replicas of a conflict-free or eventually-consistent
//! shard against the writes and deletes that were acknowledged.
//!
//! Checks, each with its own violation:
//! - every live replica holds the same entries (and the same MST root hash, where it has one);
//! - every acknowledged write is present, or superseded by a later version under
//!   last-writer-wins (hybrid logical clock, then node id);
//! - no acknowledged delete is undone by an older write (resurrection);
//! - after the last fault healed, the replicas agreed within the bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::Time;

/// A version as the checker sees it: the writer's hybrid-logical-clock time (physical ms,
/// logical counter) and its node. The stack has its own version type; the harness converts,
/// so the order the checker expects ([`Stamp::lww_cmp`]) is stated here, apart from the
/// implementation it judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Stamp {
    /// Physical component of the write's HLC time, ms.
    pub wall_ms: u64,
    /// Logical component of the write's HLC time.
    pub logical: u32,
    /// The node that accepted the write.
    pub node: u64,
}

impl Stamp {
    /// Last-writer-wins as a replicated map must merge: the later HLC time wins (physical,
    /// then logical), and at the same time the higher node id, so every replica picks the same
    /// winner of any two writes.
    pub fn lww_cmp(&self, other: &Stamp) -> std::cmp::Ordering {
        (self.wall_ms, self.logical, self.node).cmp(&(other.wall_ms, other.logical, other.node))
    }

    /// Whether `self` wins over `other`.
    pub fn beats(&self, other: &Stamp) -> bool {
        self.lww_cmp(other) == std::cmp::Ordering::Greater
    }
}

/// One key's entry on a replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its version.
    pub version: Stamp,
}

/// The final state of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Node id.
    pub node: u64,
    /// Whether the replica is up (crashed replicas are not compared).
    pub live: bool,
    /// Entries by key.
    pub entries: BTreeMap<u64, Entry>,
    /// The MST root hash, for replicas that keep one.
    pub root_hash: Option<Vec<u8>>,
}

/// A write or delete that a client saw acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedWrite {
    /// Key.
    pub key: u64,
    /// Written value; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The version the write was given.
    pub version: Stamp,
    /// When it was acknowledged.
    pub acked_at: Time,
}

/// The replicas' state digests at one moment, for measuring the time to converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When.
    pub time: Time,
    /// Digest of each live replica's state.
    pub digests: BTreeMap<u64, u64>,
}

/// Everything the convergence checker looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceInput {
    /// Final replica states.
    pub replicas: Vec<ReplicaState>,
    /// Acknowledged writes and deletes.
    pub acked: Vec<AckedWrite>,
    /// When the last fault healed.
    pub healed_at: Option<Time>,
    /// Digest samples taken after the heal, in time order.
    pub samples: Vec<Sample>,
    /// How long after the heal the replicas may take to agree.
    pub bound: Option<Time>,
}

/// A way convergence failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// No replica is live.
    NoLiveReplica,
    /// Live replicas hold different entries for a key (the smallest such key).
    Diverged {
        /// The key.
        key: u64,
        /// Each live replica's entry, as (node, entry), in node order.
        entries: Vec<(u64, Option<Entry>)>,
    },
    /// Live replicas report different MST root hashes.
    RootHashMismatch {
        /// Each replica's root hash (hex), as (node, hash), in node order.
        hashes: Vec<(u64, String)>,
    },
    /// An acknowledged write is neither present nor superseded.
    LostWrite {
        /// The write.
        write: AckedWrite,
        /// What the replicas hold for its key.
        found: Option<Entry>,
    },
    /// An acknowledged delete was undone by an older write.
    Resurrected {
        /// The delete.
        delete: AckedWrite,
        /// The older value that came back.
        found: Entry,
    },
    /// The replicas did not agree within the bound after the heal.
    SlowConvergence {
        /// The bound.
        bound: Time,
        /// How long they took (`None`: never, within the samples).
        took: Option<Time>,
    },
}

impl Violation {
    /// The key it is about, if it is about one.
    pub fn key(&self) -> Option<u64> {
        match self {
            Violation::Diverged { key, .. } => Some(*key),
            Violation::LostWrite { write, .. } => Some(write.key),
            Violation::Resurrected { delete, .. } => Some(delete.key),
            Violation::NoLiveReplica
            | Violation::RootHashMismatch { .. }
            | Violation::SlowConvergence { .. } => None,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: Time| ns as f64 / 1e6;
        match self {
            Violation::NoLiveReplica => write!(f, "no replica is live"),
            Violation::Diverged { key, entries } => {
                write!(f, "replicas diverged on key {key}: ")?;
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(n, e)| match e {
                        None => format!("node {n}: absent"),
                        Some(e) => format!(
                            "node {n}: {} at {:?}",
                            if e.value.is_some() {
                                "value"
                            } else {
                                "tombstone"
                            },
                            e.version
                        ),
                    })
                    .collect();
                write!(f, "{}", parts.join("; "))
            }
            Violation::RootHashMismatch { hashes } => {
                write!(f, "MST root hashes differ: {hashes:?}")
            }
            Violation::LostWrite { write, found } => write!(
                f,
                "acknowledged {} of key {} at {:?} is lost (replicas hold {:?})",
                if write.value.is_some() {
                    "write"
                } else {
                    "delete"
                },
                write.key,
                write.version,
                found.as_ref().map(|e| e.version)
            ),
            Violation::Resurrected { delete, found } => write!(
                f,
                "acknowledged delete of key {} at {:?} undone by an older write at {:?}",
                delete.key, delete.version, found.version
            ),
            Violation::SlowConvergence { bound, took } => match took {
                Some(t) => write!(
                    f,
                    "converged after {:.0} ms, bound {:.0} ms",
                    ms(*t),
                    ms(*bound)
                ),
                None => write!(f, "did not converge within {:.0} ms", ms(*bound)),
            },
        }
    }
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceReport {
    /// Everything that went wrong.
    pub violations: Vec<Violation>,
    /// Time from the heal to the first sample from which all replicas agreed for good.
    pub time_to_converge: Option<Time>,
    /// Live replicas compared.
    pub live_replicas: usize,
    /// Acknowledged writes checked.
    pub acked_checked: usize,
}

impl ConvergenceReport {
    /// No violations.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs every check.
pub fn check_convergence(input: &ConvergenceInput) -> ConvergenceReport {
    let mut report = ConvergenceReport::default();
    let live: Vec<&ReplicaState> = input.replicas.iter().filter(|r| r.live).collect();
    report.live_replicas = live.len();
    let Some(reference) = live.first() else {
        report.violations.push(Violation::NoLiveReplica);
        return report;
    };

    // Identical states: the smallest key on which any two live replicas differ.
    let mut keys: std::collections::BTreeSet<u64> = Default::default();
    for r in &live {
        keys.extend(r.entries.keys().copied());
    }
    for key in keys {
        let first = reference.entries.get(&key);
        if live.iter().any(|r| r.entries.get(&key) != first) {
            report.violations.push(Violation::Diverged {
                key,
                entries: live
                    .iter()
                    .map(|r| (r.node, r.entries.get(&key).cloned()))
                    .collect(),
            });
            break;
        }
    }

    let hashes: Vec<(u64, String)> = live
        .iter()
        .filter_map(|r| r.root_hash.as_ref().map(|h| (r.node, hex(h))))
        .collect();
    if hashes
        .iter()
        .map(|(_, h)| h)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        > 1
    {
        report
            .violations
            .push(Violation::RootHashMismatch { hashes });
    }

    // Acknowledged writes and deletes, judged on the reference replica (the others either
    // agree with it or a divergence was reported above).
    for w in &input.acked {
        report.acked_checked += 1;
        let found = reference.entries.get(&w.key);
        match &w.value {
            Some(_) => {
                let ok = found.is_some_and(|e| {
                    e.version.beats(&w.version) || (e.version == w.version && e.value == w.value)
                });
                if !ok {
                    report.violations.push(Violation::LostWrite {
                        write: w.clone(),
                        found: found.cloned(),
                    });
                }
            }
            None => {
                if let Some(e) = found {
                    if e.value.is_some() && !e.version.beats(&w.version) {
                        report.violations.push(Violation::Resurrected {
                            delete: w.clone(),
                            found: e.clone(),
                        });
                    }
                }
            }
        }
    }

    // Time to converge: the first sample after which every sample agrees.
    if let Some(healed) = input.healed_at {
        let after: Vec<&Sample> = input.samples.iter().filter(|s| s.time >= healed).collect();
        // A sample agrees when every replica live at the end answered it with one digest: a
        // replica still restarting is not in agreement yet.
        let agrees = |s: &Sample| {
            live.iter().all(|r| s.digests.contains_key(&r.node))
                && s.digests
                    .values()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    <= 1
        };
        let mut first_good: Option<Time> = None;
        for s in &after {
            if agrees(s) {
                first_good.get_or_insert(s.time);
            } else {
                first_good = None;
            }
        }
        report.time_to_converge = first_good.map(|t| t - healed);
        if let Some(bound) = input.bound {
            let slow = match report.time_to_converge {
                Some(t) => t > bound,
                None => true,
            };
            if slow {
                report.violations.push(Violation::SlowConvergence {
                    bound,
                    took: report.time_to_converge,
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(wall_ms: u64, node: u64) -> Stamp {
        Stamp {
            wall_ms,
            logical: 0,
            node,
        }
    }
    fn val(x: &str, version: Stamp) -> Entry {
        Entry {
            value: Some(x.as_bytes().to_vec()),
            version,
        }
    }
    fn tomb(version: Stamp) -> Entry {
        Entry {
            value: None,
            version,
        }
    }
    fn replica(node: u64, entries: &[(u64, Entry)]) -> ReplicaState {
        ReplicaState {
            node,
            live: true,
            entries: entries.iter().cloned().collect(),
            root_hash: None,
        }
    }
    fn write(key: u64, x: Option<&str>, version: Stamp) -> AckedWrite {
        AckedWrite {
            key,
            value: x.map(|s| s.as_bytes().to_vec()),
            version,
            acked_at: 0,
        }
    }

    fn kinds(r: &ConvergenceReport) -> Vec<&'static str> {
        r.violations
            .iter()
            .map(|v| match v {
                Violation::NoLiveReplica => "no_live",
                Violation::Diverged { .. } => "diverged",
                Violation::RootHashMismatch { .. } => "root",
                Violation::LostWrite { .. } => "lost",
                Violation::Resurrected { .. } => "resurrected",
                Violation::SlowConvergence { .. } => "slow",
            })
            .collect()
    }

    #[test]
    fn converged_replicas_with_superseded_writes_pass() {
        let state = [(1, val("b", v(10, 2))), (2, tomb(v(12, 1)))];
        let input = ConvergenceInput {
            replicas: vec![replica(1, &state), replica(2, &state), replica(3, &state)],
            acked: vec![
                write(1, Some("a"), v(10, 1)), // same time, lower node id: loses the tie
                write(1, Some("b"), v(10, 2)),
                write(2, Some("x"), v(11, 3)),
                write(2, None, v(12, 1)),
            ],
            ..Default::default()
        };
        let r = check_convergence(&input);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.acked_checked, 4);
    }

    #[test]
    fn each_failure_is_named() {
        // Divergence.
        let a = replica(1, &[(1, val("a", v(1, 1)))]);
        let b = replica(2, &[(1, val("b", v(2, 2)))]);
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone(), b],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["diverged"]);

        // A crashed replica is not compared.
        let mut dead = replica(2, &[]);
        dead.live = false;
        assert!(check_convergence(&ConvergenceInput {
            replicas: vec![a.clone(), dead.clone()],
            ..Default::default()
        })
        .is_ok());
        dead.live = false;
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![dead],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["no_live"]);

        // Same entries, different MST roots.
        let mut x = a.clone();
        let mut y = replica(2, &[(1, val("a", v(1, 1)))]);
        x.root_hash = Some(vec![1]);
        y.root_hash = Some(vec![2]);
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![x, y],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["root"]);

        // An acknowledged write lost: an older version won.
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone()],
            acked: vec![write(1, Some("z"), v(5, 1))],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["lost"]);
        // ...or the key is gone altogether.
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone()],
            acked: vec![write(7, Some("z"), v(5, 1))],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["lost"]);

        // A delete undone by an older write.
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone()],
            acked: vec![write(1, None, v(3, 1))],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["resurrected"]);

        // Slow convergence: agreement only 900 after the heal, bound 500.
        let sample = |time, d1, d2| Sample {
            time,
            digests: [(1, d1), (2, d2)].into_iter().collect(),
        };
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone()],
            healed_at: Some(100),
            samples: vec![
                sample(200, 1, 2),
                sample(600, 1, 3),
                sample(1000, 4, 4),
                sample(1100, 4, 4),
            ],
            bound: Some(500),
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["slow"]);
        assert_eq!(r.time_to_converge, Some(900));
        // A replica that is live at the end but missing from a sample (still restarting
        // after the heal) is not in agreement: the lone answer at 10 does not count.
        let mut a2 = a.clone();
        a2.node = 2;
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a.clone(), a2],
            healed_at: Some(0),
            samples: vec![
                Sample {
                    time: 10,
                    digests: [(1, 4)].into_iter().collect(),
                },
                sample(600, 4, 4),
            ],
            bound: Some(500),
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["slow"]);
        assert_eq!(r.time_to_converge, Some(600));
        // A disagreement after a moment of agreement restarts the clock.
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![a],
            healed_at: Some(0),
            samples: vec![sample(10, 1, 1), sample(20, 1, 2), sample(30, 2, 2)],
            bound: Some(100),
            ..Default::default()
        });
        assert!(r.is_ok());
        assert_eq!(r.time_to_converge, Some(30));
    }

    /// An implementation whose merge order disagrees with last-writer-wins (here: the node
    /// id decides before the time) keeps the wrong winner, and the checker, which states the
    /// order itself, reports the acknowledged later write as lost.
    #[test]
    fn an_implementation_with_another_order_is_caught() {
        let later = write(1, Some("new"), v(20, 1));
        let earlier = write(1, Some("old"), v(10, 3));
        // The implementation's order: node first.
        let wrong_winner = [&later, &earlier]
            .into_iter()
            .max_by_key(|w| (w.version.node, w.version.wall_ms))
            .unwrap();
        assert_eq!(wrong_winner.value, earlier.value);
        let state = [(1, val("old", wrong_winner.version))];
        let r = check_convergence(&ConvergenceInput {
            replicas: vec![replica(1, &state), replica(2, &state)],
            acked: vec![earlier.clone(), later.clone()],
            ..Default::default()
        });
        assert_eq!(kinds(&r), vec!["lost"], "{r:?}");
        // Equal times: the higher node id wins, on both sides of the comparison.
        assert!(v(5, 2).beats(&v(5, 1)) && !v(5, 1).beats(&v(5, 2)));
        let tick = Stamp {
            logical: 1,
            ..v(5, 1)
        };
        assert!(
            tick.beats(&v(5, 9)),
            "the logical counter comes before the node"
        );
    }
}
