//! Per-node time: a physical clock that the simulation can offset and drift, a hybrid
//! logical clock over it that never goes backwards and stays ahead of every timestamp it has
//! seen, so causality holds under skew, and the versions it stamps on writes, whose order is
//! last-writer-wins.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::coverage::{self, Corner};
use crate::rt;

/// A hybrid logical clock timestamp.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical component (milliseconds as the node's clock saw them).
    pub wall_ms: u64,
    /// Logical counter, for events within one millisecond or behind a faster clock.
    pub logical: u32,
}

/// The version of a value. Its order is the last-writer-wins order every replica merges by:
/// by HLC, then by the origin node, so every replica picks the same winner for any two
/// versions (the derived order, field by field).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// When it was written.
    pub hlc: Hlc,
    /// Which node wrote it.
    pub node: u64,
}

/// A node's physical clock: the process clock (simulated time in simulation), plus an offset,
/// plus a drift in parts per million since the clock was made. Cloning shares the settings,
/// so the harness can skew a node's clock while the node runs.
#[derive(Debug, Clone)]
pub struct NodeClock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    epoch_ms: AtomicU64,
    offset_ms: AtomicI64,
    drift_ppm: AtomicI64,
    /// The node's monotonic clock, which its timers read: it drifts with this clock.
    timers: rt::timers::Drift,
}

impl Default for NodeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeClock {
    /// A clock with no offset and no drift.
    pub fn new() -> Self {
        NodeClock {
            inner: Arc::new(ClockInner {
                epoch_ms: AtomicU64::new(rt::unix_time_ms()),
                offset_ms: AtomicI64::new(0),
                drift_ppm: AtomicI64::new(0),
                timers: rt::timers::Drift::default(),
            }),
        }
    }

    /// Sets the offset from true time (may be negative).
    pub fn set_offset_ms(&self, offset: i64) {
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// The node's monotonic clock, for its timers (it drifts as this clock does).
    pub fn timers(&self) -> &rt::timers::Drift {
        &self.inner.timers
    }

    /// The drift in effect, ppm.
    pub fn drift_ppm(&self) -> i64 {
        self.inner.drift_ppm.load(Ordering::Relaxed)
    }

    /// Sets the drift: the clock gains `ppm` microseconds per second (negative: loses), counted
    /// from now. The node's timers run fast or slow with it.
    pub fn set_drift_ppm(&self, ppm: i64) {
        self.inner.timers.set_ppm(ppm);
        // Fold the drift so far into the offset so the clock does not jump.
        let now = self.now_ms() as i64;
        let base = rt::unix_time_ms();
        self.inner.epoch_ms.store(base, Ordering::Relaxed);
        self.inner.drift_ppm.store(ppm, Ordering::Relaxed);
        self.inner
            .offset_ms
            .store(now - base as i64, Ordering::Relaxed);
    }

    /// The offset now in effect, drift included.
    pub fn skew_ms(&self) -> i64 {
        self.now_ms() as i64 - rt::unix_time_ms() as i64
    }

    /// Milliseconds since the Unix epoch as this node believes.
    pub fn now_ms(&self) -> u64 {
        let t = rt::unix_time_ms() as i64;
        let since = t - self.inner.epoch_ms.load(Ordering::Relaxed) as i64;
        let drift = since * self.inner.drift_ppm.load(Ordering::Relaxed) / 1_000_000;
        (t + self.inner.offset_ms.load(Ordering::Relaxed) + drift).max(0) as u64
    }
}

/// A hybrid logical clock (Kulkarni et al.): `wall_ms` is the largest physical time seen,
/// `logical` orders events within it.
#[derive(Debug)]
pub struct HlcClock {
    node: u64,
    clock: NodeClock,
    last: Mutex<Hlc>,
}

impl HlcClock {
    /// An HLC for `node` over `clock`.
    pub fn new(node: u64, clock: NodeClock) -> Self {
        HlcClock {
            node,
            clock,
            last: Mutex::new(Hlc::default()),
        }
    }

    /// The physical clock underneath.
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }

    /// A new timestamp for a local event, strictly after every one before.
    pub fn tick(&self) -> Version {
        let phys = self.clock.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if phys > last.wall_ms {
            Hlc {
                wall_ms: phys,
                logical: 0,
            }
        } else {
            coverage::hit(Corner::HlcLogicalCounter);
            Hlc {
                wall_ms: last.wall_ms,
                logical: last.logical.saturating_add(1),
            }
        };
        Version {
            hlc: *last,
            node: self.node,
        }
    }

    /// Takes in a timestamp seen from another node, so later local events order after it.
    /// Returns whether it was ahead of this clock (and moved it).
    pub fn observe(&self, seen: Hlc) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let ahead = seen > *last;
        if ahead {
            *last = seen;
        }
        ahead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_and_follow_observed_timestamps() {
        let hlc = HlcClock::new(1, NodeClock::new());
        let a = hlc.tick();
        let b = hlc.tick();
        assert!(b > a);
        let far = Hlc {
            wall_ms: a.hlc.wall_ms + 1_000_000,
            logical: 7,
        };
        hlc.observe(far);
        let c = hlc.tick();
        assert!(c.hlc > far, "{c:?} must follow {far:?}");
    }

    #[test]
    fn offset_moves_the_clock() {
        let c = NodeClock::new();
        let before = c.now_ms();
        c.set_offset_ms(5_000);
        assert!(c.now_ms() >= before + 5_000);
        c.set_offset_ms(-1_000_000_000_000_000);
        assert_eq!(c.now_ms(), 0, "a clock never goes below the epoch");
    }
}
