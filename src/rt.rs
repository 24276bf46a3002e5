//! The runtime facade: the one module that knows whether the stack runs inside a madsim
//! simulation (`cfg(madsim)`, the default build) or on real tokio (`RUSTFLAGS= cargo build`).
//!
//! Business logic reads time and randomness only through here, so that in simulation both
//! come from the seeded simulator and a run is a pure function of its seed.

use std::time::Duration;

pub mod timers;

/// A random `u64`. In simulation it is drawn from the simulation's seeded RNG, so it is
/// reproducible from the seed; in real mode it comes from the OS.
pub fn random_u64() -> u64 {
    use rand::RngCore;
    thread_rng().next_u64()
}

/// The type of this mode's thread RNG: the simulation's seeded global RNG, or rand's
/// OS-seeded thread RNG in real mode.
#[cfg(madsim)]
pub type ThreadRng = madsim::rand::GlobalRng;
/// The type of this mode's thread RNG: the simulation's seeded global RNG, or rand's
/// OS-seeded thread RNG in real mode.
#[cfg(not(madsim))]
pub type ThreadRng = rand::rngs::ThreadRng;

/// This mode's thread RNG (see [`ThreadRng`]): the only place randomness enters.
pub fn thread_rng() -> ThreadRng {
    madsim::rand::thread_rng()
}

/// Milliseconds since the Unix epoch as this process sees it: simulated in simulation
/// (madsim starts its clock at a seed-derived date), the OS clock in real mode.
pub fn unix_time_ms() -> u64 {
    #[cfg(madsim)]
    {
        match madsim::time::TimeHandle::try_current() {
            Some(handle) => duration_ms(
                handle
                    .now_time()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            // Outside a running simulation (unit tests of a single engine, benchmarks)
            // there is no simulated clock; time stands still rather than reading the OS.
            None => 0,
        }
    }
    #[cfg(not(madsim))]
    {
        duration_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps for `d` of (simulated, in simulation) time. Outside any runtime it returns at once,
/// so storage code that charges simulated disk latency can also run under a plain executor.
pub async fn sleep(d: Duration) {
    if d.is_zero() {
        return;
    }
    #[cfg(madsim)]
    {
        if madsim::time::TimeHandle::try_current().is_some() {
            madsim::time::sleep(d).await;
        }
    }
    #[cfg(not(madsim))]
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::sleep(d).await;
        }
    }
}

thread_local! {
    /// Probability that the network delivers an idempotent protocol message twice. A
    /// simulation runs on one thread; its harness sets this when a run starts and resets it
    /// when the run ends.
    static DUPLICATE_RATE: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// Sets the probability that the (simulated) network duplicates an idempotent message.
pub fn set_duplicate_rate(p: f64) {
    DUPLICATE_RATE.with(|d| d.set(p));
}

/// Whether the network duplicates this idempotent message (always false in real mode, where
/// the transport's connections do not duplicate).
pub fn duplicate_message() -> bool {
    #[cfg(madsim)]
    {
        let p = DUPLICATE_RATE.with(|d| d.get());
        p > 0.0 && rand::Rng::gen_bool(&mut thread_rng(), p.min(1.0))
    }
    #[cfg(not(madsim))]
    {
        false
    }
}

/// Whether this thread's network may duplicate messages at all (no randomness drawn).
pub fn duplicates_possible() -> bool {
    #[cfg(madsim)]
    {
        DUPLICATE_RATE.with(|d| d.get()) > 0.0
    }
    #[cfg(not(madsim))]
    {
        false
    }
}

/// Real elapsed time, for the figures a command prints about itself (a run's wall time, a
/// sweep's seeds per second, a time budget). It reads the OS's monotonic clock, so it is
/// started and read only outside a simulation: inside one, time is the seed's.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Stopwatch {
        Stopwatch::outside_simulation();
        Stopwatch(std::time::Instant::now())
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        Stopwatch::outside_simulation();
        self.0.elapsed()
    }

    /// Seconds since the start.
    pub fn elapsed_secs(&self) -> f64 {
        self.elapsed().as_secs_f64()
    }

    /// Whole milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        (self.elapsed_secs() * 1000.0) as u64
    }

    fn outside_simulation() {
        #[cfg(madsim)]
        debug_assert!(
            madsim::time::TimeHandle::try_current().is_none(),
            "a stopwatch reads real time; inside a simulation time is simulated"
        );
    }
}
