//! Planted bugs: realistic mistakes that a scenario or `--bug NAME` switches on for one run,
//! so the testbed can show that its checks catch them.
//!
//! The switches live in a per-thread set: a simulation runs on one thread, the harness sets
//! the set when a run starts and clears it when the run ends, so nothing leaks between runs.

use std::cell::RefCell;
use std::collections::BTreeSet;

/// A planted bug: its name and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Bug {
    /// The name used with `--bug` and in scenario files.
    pub name: &'static str,
    /// What goes wrong.
    pub what: &'static str,
    /// The shipped scenarios (file stems under `scenarios/`) that should catch it, cheapest
    /// first; `odgm-sim bugs` runs them.
    pub caught_by: &'static [&'static str],
}

/// Every planted bug.
pub const ALL: &[Bug] = &[
    Bug {
        name: "lww-remote-wins",
        what: "MST and eventual merges take the incoming version whatever its timestamp",
        caught_by: &["mst-partition-skew", "mst-concurrent-writes"],
    },
    Bug {
        name: "eventual-no-repair",
        what: "eventual consistency pushes once and forgets (no outbox, no retry)",
        caught_by: &["eventual-partition"],
    },
    Bug {
        name: "disk-sync-lies",
        what: "the simulated disk reports a sync as done but persists nothing",
        caught_by: &["none-baseline", "raft-power-loss"],
    },
    Bug {
        name: "raft-follower-local-reads",
        what: "Raft followers answer reads from their own state instead of the leader's",
        caught_by: &["raft-leader-partition"],
    },
    Bug {
        name: "raft-ack-before-sync",
        what: "the Raft log acknowledges appended entries before they are synced to disk",
        caught_by: &["raft-power-outage"],
    },
    Bug {
        name: "raft-applied-not-persisted",
        what: "the Raft state machine saves its applied index apart from the data it applied",
        caught_by: &["raft-power-loss", "raft-power-outage"],
    },
    Bug {
        name: "raft-snapshot-non-atomic",
        what: "a Raft follower installs a snapshot in place, pair by pair, after clearing its data",
        caught_by: &["raft-snapshot-crash"],
    },
    Bug {
        name: "mst-no-tombstones",
        what: "MST deletes remove the object instead of writing a tombstone",
        caught_by: &["mst-partition-skew", "mst-concurrent-writes"],
    },
];

thread_local! {
    static ACTIVE: RefCell<BTreeSet<&'static str>> = const { RefCell::new(BTreeSet::new()) };
}

/// The names of every planted bug.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|b| b.name).collect()
}

/// Whether `name` is a planted bug.
pub fn is_known(name: &str) -> bool {
    ALL.iter().any(|b| b.name == name)
}

/// Switches on exactly `names` for this thread's runs (unknown names are ignored; scenario
/// validation and the CLI refuse them first).
pub fn set_active(names: &[String]) {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        a.clear();
        for b in ALL {
            if names.iter().any(|n| n == b.name) {
                a.insert(b.name);
            }
        }
    });
}

/// Whether the bug is switched on in this thread.
pub fn active(name: &str) -> bool {
    ACTIVE.with(|a| a.borrow().contains(name))
}

/// The planted bug called `name`.
pub fn get(name: &str) -> Option<&'static Bug> {
    ALL.iter().find(|b| b.name == name)
}
