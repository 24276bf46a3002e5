//! Tripwires: faults armed to land right after something a node's Raft stack reports (its
//! next N votes saved, appends made durable, snapshot chunks received or log purges), heard through the
//! node's probe as it happens, so the fault lands between two steps of the stack with
//! nothing in between.
//!
//! A wire that trips acts at once, inside the probe call: the node's disks go dark (a crash
//! or power cut, which the injector then carries out), or every link between the node and
//! the others is cut (an isolation). Armed cuts counted in syncs live in the simulated disk
//! itself (`SimDisk::cut_power_after_syncs`); this module sees only the stack's events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use madsim::task::NodeId;

use crate::probe::RaftEvent;
use crate::scenario::CutAfter;
use crate::storage::SimDisk;

/// What a wire does when it trips.
#[derive(Clone)]
pub enum Trip {
    /// The node's simulated disks go dark (none: the node has none, and only the injector's
    /// stop follows).
    PowerOff(Vec<SimDisk>),
    /// The node's simulated disks go dark after this many more writes or syncs: part-way
    /// through whatever the node does next. The wire counts as gone off once they do.
    PowerOffAfterOps(Vec<SimDisk>, u64),
    /// Every link between `node` and `others` is cut, both ways.
    Isolate {
        /// The node's madsim id.
        node: NodeId,
        /// Every other node's madsim id.
        others: Vec<NodeId>,
    },
}

/// Which of a node's wires: each node has at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wire {
    /// A crash or power cut.
    Crash,
    /// An isolation.
    Isolate,
}

impl Trip {
    fn wire(&self) -> Wire {
        match self {
            Trip::PowerOff(_) | Trip::PowerOffAfterOps(..) => Wire::Crash,
            Trip::Isolate { .. } => Wire::Isolate,
        }
    }

    fn fire(&self) {
        match self {
            Trip::PowerOff(disks) => {
                for d in disks {
                    d.cut_power_now();
                }
            }
            Trip::PowerOffAfterOps(disks, ops) => {
                for d in disks {
                    d.cut_power_after(*ops);
                }
            }
            Trip::Isolate { node, others } => {
                let net = madsim::net::NetSim::current();
                for o in others {
                    net.clog_link(*node, *o);
                    net.clog_link(*o, *node);
                }
            }
        }
    }
}

#[derive(Default)]
struct Wires {
    /// Armed wires by node: what they wait for (with how many are still to come) and what
    /// they do.
    armed: BTreeMap<(u64, Wire), (CutAfter, Trip)>,
    /// Wires that went off and that nothing has reset since.
    tripped: BTreeSet<(u64, Wire)>,
}

/// The armed wires of a cluster (cheap to clone; clones share them).
#[derive(Clone, Default)]
pub struct Tripwires(Arc<Mutex<Wires>>);

impl Tripwires {
    fn lock(&self) -> MutexGuard<'_, Wires> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a wire on node `id` (replacing one of its kind): `trip` happens right after
    /// `after`.
    pub fn arm(&self, id: u64, after: CutAfter, trip: Trip) {
        let key = (id, trip.wire());
        let mut w = self.lock();
        w.tripped.remove(&key);
        w.armed.insert(key, (after, trip));
    }

    /// Disarms node `id`'s wire of a kind and forgets that it tripped; whether it was armed.
    pub fn disarm(&self, id: u64, wire: Wire) -> bool {
        let mut w = self.lock();
        w.tripped.remove(&(id, wire));
        w.armed.remove(&(id, wire)).is_some()
    }

    /// Whether node `id`'s wire of a kind tripped (and nothing reset it since).
    pub fn tripped(&self, id: u64, wire: Wire) -> bool {
        self.lock().tripped.contains(&(id, wire))
    }

    /// Counts `event`, which node `id`'s stack reported, against the node's armed wires, and
    /// trips each whose last awaited event this is.
    pub fn hear(&self, id: u64, event: &RaftEvent) {
        let mut w = self.lock();
        let mut fire = Vec::new();
        for wire in [Wire::Crash, Wire::Isolate] {
            let Some((after, _)) = w.armed.get_mut(&(id, wire)) else {
                continue;
            };
            let left = match (after, event) {
                (CutAfter::Votes(n), RaftEvent::VoteSaved(_))
                | (CutAfter::Appends(n), RaftEvent::Appended(_))
                | (CutAfter::Chunks(n), RaftEvent::SnapshotChunk { .. })
                | (CutAfter::Purges(n), RaftEvent::Purged(_)) => n,
                // The install's start sets the disks counting its operations (the count is
                // theirs, not this wire's).
                (CutAfter::InstallOps(_), RaftEvent::SnapshotInstalling(_)) => {
                    let (_, trip) = w.armed.remove(&(id, wire)).expect("looked up above");
                    fire.push(trip);
                    continue;
                }
                _ => continue,
            };
            *left = left.saturating_sub(1);
            if *left == 0 {
                let (_, trip) = w.armed.remove(&(id, wire)).expect("looked up above");
                w.tripped.insert((id, wire));
                fire.push(trip);
            }
        }
        drop(w);
        for trip in fire {
            trip.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::VoteRec;
    use crate::storage::DiskFaults;

    #[test]
    fn a_wire_trips_on_its_own_kind_of_event_and_only_after_the_count() {
        let disk = SimDisk::new(1, DiskFaults::none());
        let wires = Tripwires::default();
        wires.arm(3, CutAfter::Chunks(2), Trip::PowerOff(vec![disk.clone()]));
        let chunk = RaftEvent::SnapshotChunk { from: 1, seq: 0 };
        let vote = RaftEvent::VoteSaved(VoteRec {
            term: 1,
            voted_for: Some(1),
            committed: false,
        });
        wires.hear(3, &vote);
        wires.hear(2, &chunk);
        wires.hear(3, &chunk);
        assert!(!wires.tripped(3, Wire::Crash) && !disk.is_powered_off());
        wires.hear(3, &chunk);
        assert!(wires.tripped(3, Wire::Crash) && disk.is_powered_off());
        assert!(!wires.tripped(3, Wire::Isolate));
        // It went off once; a disarm reports nothing armed and forgets the trip.
        assert!(!wires.disarm(3, Wire::Crash));
        assert!(!wires.tripped(3, Wire::Crash));
    }

    #[test]
    fn an_install_wire_darkens_the_disk_part_way_into_the_install() {
        use redb::StorageBackend;
        let disk = SimDisk::new(1, DiskFaults::none());
        let wires = Tripwires::default();
        wires.arm(
            3,
            CutAfter::InstallOps(2),
            Trip::PowerOffAfterOps(vec![disk.clone()], 2),
        );
        let b = disk.backend();
        b.set_len(4096).unwrap();
        // Operations before the install do not count.
        b.write(0, &[1; 512]).unwrap();
        b.sync_data().unwrap();
        wires.hear(3, &RaftEvent::SnapshotInstalled(None));
        assert!(!disk.cut_armed() && !disk.is_powered_off());
        wires.hear(3, &RaftEvent::SnapshotInstalling(None));
        // The disk counts now; the wire itself has not gone off until the disk does.
        assert!(disk.cut_armed() && !wires.tripped(3, Wire::Crash));
        b.write(512, &[2; 512]).unwrap();
        assert!(!disk.is_powered_off());
        let second = b.write(1024, &[3; 512]);
        let third = b.write(1536, &[4; 512]);
        assert!(disk.is_powered_off(), "{second:?} {third:?}");
        assert!(third.is_err());
    }
}
