//! openraft's `AsyncRuntime` on our `tokio` (madsim-tokio): madsim's executor, timers and
//! seeded RNG in simulation, real tokio in real mode. openraft's own `TokioRuntime` calls real
//! tokio directly, which panics inside a simulation ("there is no reactor running").

use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend};

/// The runtime openraft runs on (see the module docs).
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct RaftRuntime;

/// `tokio::time::Instant` of our tokio, wrapped so openraft's `Instant` trait can be
/// implemented for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RtInstant(pub tokio::time::Instant);

impl Add<Duration> for RtInstant {
    type Output = RtInstant;
    fn add(self, d: Duration) -> RtInstant {
        RtInstant(self.0 + d)
    }
}

impl AddAssign<Duration> for RtInstant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}

impl Sub<Duration> for RtInstant {
    type Output = RtInstant;
    fn sub(self, d: Duration) -> RtInstant {
        RtInstant(self.0 - d)
    }
}

impl Sub<RtInstant> for RtInstant {
    type Output = Duration;
    fn sub(self, other: RtInstant) -> Duration {
        self.0.saturating_duration_since(other.0)
    }
}

impl SubAssign<Duration> for RtInstant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d;
    }
}

impl openraft::Instant for RtInstant {
    fn now() -> Self {
        // madsim-tokio's Instant: the simulated clock in simulation, the OS clock in real mode.
        RtInstant(crate::rt::timers::now())
    }
}

/// A join handle that reports panics as errors.
pub struct RtJoinHandle<T>(tokio::task::JoinHandle<T>);

impl<T> Future for RtJoinHandle<T> {
    type Output = Result<T, RtJoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map_err(|e| RtJoinError(e.to_string()))
    }
}

/// A task that did not finish (cancelled or panicked).
#[derive(Debug, thiserror::Error)]
#[error("task failed: {0}")]
pub struct RtJoinError(String);

/// A timeout that elapsed.
#[derive(Debug, thiserror::Error)]
#[error("deadline elapsed")]
pub struct RtElapsed;

/// The timeout future: the inner future, raced against a sleep (the future wins ties).
pub struct RtTimeout<F> {
    fut: Pin<Box<F>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<R, F: Future<Output = R>> Future for RtTimeout<F> {
    type Output = Result<R, RtElapsed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(RtElapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A sleep future.
pub struct RtSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for RtSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// Oneshot sender.
pub struct RtOneshotSender<T>(tokio::sync::oneshot::Sender<T>);

impl<T> std::fmt::Debug for RtOneshotSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RtOneshotSender")
    }
}

impl<T> openraft::async_runtime::AsyncOneshotSendExt<T> for RtOneshotSender<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

/// The RNG openraft draws election jitter from: the simulation's seeded RNG in simulation.
pub struct RtRng(crate::rt::ThreadRng);

impl rand::RngCore for RtRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl AsyncRuntime for RaftRuntime {
    type JoinError = RtJoinError;
    type JoinHandle<T: OptionalSend + 'static> = RtJoinHandle<T>;
    type Sleep = RtSleep;
    type Instant = RtInstant;
    type TimeoutError = RtElapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = RtTimeout<T>;
    type ThreadLocalRng = RtRng;
    type OneshotSender<T: OptionalSend> = RtOneshotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // Boxed once here: openraft's task futures are large, and the executor would move
        // them by value through each layer of its spawn.
        RtJoinHandle(tokio::spawn(Box::pin(future)))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        RtSleep(Box::pin(crate::rt::timers::sleep(duration)))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        RtSleep(Box::pin(crate::rt::timers::sleep_until(deadline.0)))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        RtTimeout {
            fut: Box::pin(future),
            sleep: Box::pin(crate::rt::timers::sleep(duration)),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        RtTimeout {
            fut: Box::pin(future),
            sleep: Box::pin(crate::rt::timers::sleep_until(deadline.0)),
        }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.0.contains("panic")
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        RtRng(crate::rt::thread_rng())
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (RtOneshotSender(tx), rx)
    }
}
