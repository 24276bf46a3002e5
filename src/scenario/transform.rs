//! Scenario transforms that `odgm-sim shrink` builds its candidates from: the random nemesis
//! replaced by the faults that actually ran, a schedule grouped into units that stand or fall
//! together, and the size a shrinker compares.

use std::collections::BTreeMap;

use super::{Fault, Scenario, ScheduledFault, Target};
use crate::storage::DiskFaults;

/// How big a scenario is, as the shrinker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Schedule entries.
    pub schedule: usize,
    /// Nemesis fault kinds switched on (0: no nemesis).
    pub nemesis_kinds: usize,
    /// Fault phase, ms.
    pub duration_ms: u64,
    /// Clients.
    pub clients: u64,
    /// Nodes.
    pub nodes: u64,
}

impl Size {
    /// The size of `s`.
    pub fn of(s: &Scenario) -> Size {
        Size {
            schedule: s.schedule.len(),
            nemesis_kinds: s
                .nemesis
                .as_ref()
                .map_or(0, |n| n.kinds.values().filter(|w| **w > 0.0).count()),
            duration_ms: s.duration_ms,
            clients: s.workload.clients,
            nodes: s.cluster.nodes,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scheduled fault(s), {} nemesis kind(s), {} ms of faults, {} client(s), {} node(s)",
            self.schedule, self.nemesis_kinds, self.duration_ms, self.clients, self.nodes
        )
    }
}

/// `s` with its random nemesis replaced by `ran`, the faults a run of it applied (targets
/// resolved, times clamped into the fault phase).
pub fn with_schedule_that_ran(s: &Scenario, ran: &[ScheduledFault]) -> Scenario {
    let mut c = s.clone();
    c.nemesis = None;
    c.schedule = ran
        .iter()
        .map(|f| ScheduledFault {
            at_ms: f.at_ms.min(s.duration_ms.saturating_sub(1)),
            fault: f.fault.clone(),
        })
        .collect();
    c
}

/// `s` without the schedule entries at `dropped` (indexes).
pub fn without_entries(s: &Scenario, dropped: &std::collections::BTreeSet<usize>) -> Scenario {
    let mut c = s.clone();
    c.schedule = s
        .schedule
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, f)| f.clone())
        .collect();
    c
}

/// What a fault unit waits for to close: a restart of node n ("down", n), a resume, ...
type UnitKey = (&'static str, u64);

/// Groups a schedule's entries (by index) into units that stand or fall together: a fault
/// with the entry that undoes it (a kill and its node's restart, a pause and its resume, link
/// cuts and the heal after them, disk errors and the healthy rates after them, a clock skew
/// and its reset, a removal and the re-add). Dropping a whole unit keeps the schedule valid
/// where dropping one entry of it would not. Units are in the order of their first entry.
pub fn fault_units(schedule: &[ScheduledFault]) -> Vec<Vec<usize>> {
    let mut units: Vec<Vec<usize>> = Vec::new();
    // Open units by what closes them.
    let mut open: BTreeMap<UnitKey, usize> = BTreeMap::new();
    let mut net: Option<usize> = None;
    let node = |t: &Target| match t {
        Target::Node(n) => Some(*n),
        _ => None,
    };
    for (i, f) in schedule.iter().enumerate() {
        // (key this entry opens, key this entry closes)
        let (opens, closes): (Option<UnitKey>, Option<UnitKey>) = match &f.fault {
            Fault::Partition { .. }
            | Fault::Isolate { .. }
            | Fault::OneWay { .. }
            | Fault::Clog { .. } => {
                match net {
                    Some(u) => units[u].push(i),
                    None => {
                        net = Some(units.len());
                        units.push(vec![i]);
                    }
                }
                continue;
            }
            Fault::Heal => {
                match net.take() {
                    Some(u) => units[u].push(i),
                    None => units.push(vec![i]),
                }
                continue;
            }
            Fault::Kill { node: t, .. } | Fault::PowerLoss { node: t, .. } => {
                (node(t).map(|n| ("down", n)), None)
            }
            Fault::Restart { node: t } => (None, node(t).map(|n| ("down", n))),
            Fault::Pause { node: t } => (node(t).map(|n| ("paused", n)), None),
            Fault::Resume { node: t } => (None, node(t).map(|n| ("paused", n))),
            Fault::ClockSkew {
                node: t,
                offset_ms: 0,
                drift_ppm: 0,
            } => (None, node(t).map(|n| ("skew", n))),
            Fault::ClockSkew { node: t, .. } => (node(t).map(|n| ("skew", n)), None),
            Fault::DiskFaults { node: t, disk } if *disk == DiskFaults::none() => {
                (None, node(t).map(|n| ("disk", n)))
            }
            Fault::DiskFaults { node: t, .. } => (node(t).map(|n| ("disk", n)), None),
            Fault::RemoveReplica { node: t } => (node(t).map(|n| ("removed", n)), None),
            Fault::AddReplica { node: t } => (None, node(t).map(|n| ("removed", n))),
            Fault::Snapshot { .. } => (None, None),
        };
        if let Some(u) = closes.and_then(|k| open.remove(&k)) {
            units[u].push(i);
            continue;
        }
        if let Some(k) = opens {
            open.insert(k, units.len());
        }
        units.push(vec![i]);
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, fault: Fault) -> ScheduledFault {
        ScheduledFault { at_ms, fault }
    }

    fn node(n: u64) -> Target {
        Target::Node(n)
    }

    #[test]
    fn a_fault_and_what_undoes_it_form_one_unit() {
        let disk = DiskFaults {
            write_error_rate: 0.1,
            ..DiskFaults::none()
        };
        let skew = |offset_ms| Fault::ClockSkew {
            node: node(2),
            offset_ms,
            drift_ppm: 0,
        };
        let schedule = vec![
            at(
                0,
                Fault::Kill {
                    node: node(1),
                    after: None,
                },
            ),
            at(1, Fault::Clog { node: node(2) }),
            at(
                2,
                Fault::OneWay {
                    from: node(3),
                    to: node(2),
                },
            ),
            at(3, Fault::Snapshot { node: node(3) }),
            at(4, Fault::Restart { node: node(1) }),
            at(5, Fault::Heal),
            at(
                6,
                Fault::DiskFaults {
                    node: node(2),
                    disk,
                },
            ),
            at(7, skew(5)),
            at(
                8,
                Fault::DiskFaults {
                    node: node(2),
                    disk: DiskFaults::none(),
                },
            ),
            at(9, skew(0)),
            at(10, Fault::Restart { node: node(3) }),
            at(11, Fault::Heal),
            at(
                12,
                Fault::Pause {
                    node: Target::Random,
                },
            ),
            at(13, Fault::Resume { node: Target::All }),
        ];
        assert_eq!(
            fault_units(&schedule),
            vec![
                vec![0, 4],
                vec![1, 2, 5],
                vec![3],
                vec![6, 8],
                vec![7, 9],
                vec![10],
                vec![11],
                vec![12],
                vec![13],
            ]
        );
    }

    #[test]
    fn the_schedule_that_ran_replaces_the_nemesis_inside_the_fault_phase() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/raft-chaos.toml"
        ))
        .expect("raft-chaos scenario");
        let s = Scenario::parse(&text, "raft-chaos.toml", "raft-chaos").expect("valid");
        assert!(s.nemesis.is_some());
        let end = s.duration_ms;
        let ran = vec![
            at(
                10,
                Fault::Kill {
                    node: node(2),
                    after: None,
                },
            ),
            at(end, Fault::Restart { node: node(2) }),
        ];
        let m = with_schedule_that_ran(&s, &ran);
        assert!(m.nemesis.is_none());
        assert_eq!(m.schedule.len(), 2);
        assert_eq!(m.schedule[1].at_ms, end - 1);
        let back = Scenario::parse(&m.to_toml(), "m.toml", "m").expect("the result validates");
        assert_eq!(back.schedule, m.schedule);
        let dropped = without_entries(&m, &[0].into());
        assert_eq!(dropped.schedule, m.schedule[1..]);
    }
}
