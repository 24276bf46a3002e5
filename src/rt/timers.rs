//! Node-local time for timers: each simulated node reads its own monotonic clock, which runs
//! fast or slow by its drift, so a drifting node's elections, heartbeats, retries and RPC
//! timeouts fire early or late in simulated time, as they would on a machine whose oscillator
//! is off. The stack's timers read time through here, never through `tokio::time` directly.
//!
//! A node's clock is a [`Drift`]: local time advances `1 + ppm / 10^6` times as fast as
//! simulated time, counted from the last change of rate, so changing the rate never makes the
//! clock jump. The harness registers each node's drift under the node's madsim id
//! ([`register`]); a task reads the drift of the node it runs on. With no drift registered (real
//! mode, unit tests, the client host) local time is simulated time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// madsim-tokio's `Instant`: simulated time inside a simulation, the OS clock in real mode.
use tokio::time::Instant;

/// Most drift a clock may have, in ppm either way (at -100 % it would stand still; at
/// -90 % it is a nearly stalled clock, as a paused VM shows).
pub const MAX_DRIFT_PPM: i64 = 900_000;

#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Simulated time of the last change of rate, and the local time it showed then.
    anchor: Option<(Instant, Instant)>,
    ppm: i64,
}

/// A node's monotonic clock rate. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Drift(Arc<Mutex<Rate>>);

impl Default for Drift {
    fn default() -> Self {
        Drift(Arc::new(Mutex::new(Rate {
            anchor: None,
            ppm: 0,
        })))
    }
}

fn scale(d: Duration, num: i64, den: i64) -> Duration {
    let ns = d.as_nanos() as i128 * num as i128 / den as i128;
    Duration::from_nanos(ns.clamp(0, u64::MAX as i128) as u64)
}

impl Drift {
    fn rate(&self) -> Rate {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The drift now, ppm.
    pub fn ppm(&self) -> i64 {
        self.rate().ppm
    }

    /// Sets the drift from now on (clamped to [`MAX_DRIFT_PPM`]).
    pub fn set_ppm(&self, ppm: i64) {
        let now = Instant::now();
        let local = self.local(now);
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.anchor = Some((now, local));
        r.ppm = ppm.clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM);
    }

    /// The local time this clock shows at simulated time `at`.
    pub fn local(&self, at: Instant) -> Instant {
        let r = self.rate();
        match r.anchor {
            Some((global, local)) if r.ppm != 0 => {
                let since = at.saturating_duration_since(global);
                local + scale(since, 1_000_000 + r.ppm, 1_000_000)
            }
            Some((global, local)) => local + at.saturating_duration_since(global),
            None => at,
        }
    }

    /// The simulated time at which this clock shows `local` (now, if it already has).
    pub fn simulated(&self, local: Instant) -> Instant {
        let r = self.rate();
        let now = Instant::now();
        let (global, at) = r.anchor.unwrap_or((now, now));
        let shown = self.local(now);
        if local <= shown {
            return now;
        }
        global + scale(local - at, 1_000_000, 1_000_000 + r.ppm)
    }

    /// How long in simulated time `d` of this clock's time lasts.
    pub fn simulated_duration(&self, d: Duration) -> Duration {
        scale(d, 1_000_000, 1_000_000 + self.rate().ppm)
    }
}

#[cfg(madsim)]
thread_local! {
    /// The drift of each node of the simulation on this thread, by madsim node id.
    static DRIFTS: std::cell::RefCell<std::collections::BTreeMap<madsim::task::NodeId, Drift>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Registers the clock of the madsim node `node`.
#[cfg(madsim)]
pub fn register(node: madsim::task::NodeId, drift: Drift) {
    DRIFTS.with(|d| d.borrow_mut().insert(node, drift));
}

/// Forgets every registered clock (a simulation ends, or a new cluster starts).
pub fn clear() {
    #[cfg(madsim)]
    DRIFTS.with(|d| d.borrow_mut().clear());
}

/// The clock of the node the current task runs on, if one is registered.
fn current() -> Option<Drift> {
    #[cfg(madsim)]
    {
        let any = DRIFTS.with(|d| !d.borrow().is_empty());
        if !any || madsim::runtime::Handle::try_current().is_err() {
            return None;
        }
        let node = madsim::plugin::node();
        DRIFTS.with(|d| d.borrow().get(&node).cloned())
    }
    #[cfg(not(madsim))]
    None
}

/// Now, on this node's monotonic clock.
pub fn now() -> Instant {
    let at = Instant::now();
    current().map_or(at, |d| d.local(at))
}

/// Sleeps for `d` of this node's time.
pub fn sleep(d: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(current().map_or(d, |c| c.simulated_duration(d)))
}

/// Sleeps until this node's clock shows `deadline` (a time from [`now`]).
pub fn sleep_until(deadline: Instant) -> tokio::time::Sleep {
    tokio::time::sleep_until(current().map_or(deadline, |c| c.simulated(deadline)))
}

/// Runs `fut` for at most `d` of this node's time.
pub async fn timeout<F: Future>(
    d: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(current().map_or(d, |c| c.simulated_duration(d)), fut).await
}

#[cfg(all(test, madsim))]
mod tests {
    use super::*;

    /// Within a millisecond (madsim's timers fire a little after their deadline).
    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(1)
    }

    #[test]
    fn a_fast_clock_runs_ahead_and_its_timers_fire_early() {
        let rt = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
        rt.block_on(async {
            let d = Drift::default();
            d.set_ppm(50_000);
            let start = Instant::now();
            let shown = d.local(start);
            tokio::time::sleep(Duration::from_secs(10)).await;
            let later = d.local(Instant::now());
            assert!(close(later - shown, Duration::from_millis(10_500)));
            assert_eq!(
                d.simulated_duration(Duration::from_millis(1_050)),
                Duration::from_secs(1)
            );
            assert!(close(
                d.simulated(later + Duration::from_millis(1_050)) - Instant::now(),
                Duration::from_secs(1)
            ));
            // A change of rate does not make the clock jump.
            d.set_ppm(-50_000);
            assert_eq!(d.local(Instant::now()), later);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(close(
                d.local(Instant::now()) - later,
                Duration::from_millis(9_500)
            ));
            // A deadline already shown is now.
            assert_eq!(d.simulated(later), Instant::now());
        });
    }

    #[test]
    fn a_registered_node_sleeps_on_its_own_clock() {
        let rt = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
        rt.block_on(async {
            let handle = madsim::runtime::Handle::current();
            let node = handle.create_node().name("slow").build();
            let drift = Drift::default();
            drift.set_ppm(-100_000);
            register(node.id(), drift);
            let took = node
                .spawn(async {
                    let t = Instant::now();
                    sleep(Duration::from_millis(900)).await;
                    Instant::now() - t
                })
                .await
                .unwrap();
            clear();
            assert!(close(took, Duration::from_secs(1)), "{took:?}");
            // Unregistered, simulated time.
            let t = Instant::now();
            sleep(Duration::from_millis(900)).await;
            assert!(close(Instant::now() - t, Duration::from_millis(900)));
        });
    }
}
