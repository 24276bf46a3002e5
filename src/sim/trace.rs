//! The run trace: one line per event, with simulated time and node, from the harness (client
//! operations, faults, phases) and from the stack's `tracing` events. Its hash summarises a
//! run; two processes running the same seed must produce the same lines.
//!
//! Lines look like `    1234.567ms n3 WARN odgm_sim::raft::node: message key=value`; `n0` is
//! the harness, `n1..` the nodes in id order, and the last node the client host.
//! The collector is per thread (a simulation runs on one thread).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::hash::Hasher;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

struct Collector {
    start: tokio::time::Instant,
    /// The lines kept, each ending in a newline.
    text: String,
    kept: u64,
    hasher: rustc_hash::FxHasher,
    limit: usize,
    dropped: u64,
}

thread_local! {
    static TRACE: RefCell<Option<Collector>> = const { RefCell::new(None) };
}

/// A finished trace.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The lines kept (the first `limit`), each ending in a newline.
    pub text: String,
    /// How many lines `text` holds.
    pub kept: u64,
    /// Hash over every line, kept or not.
    pub hash: u64,
    /// Lines counted in the hash but not kept.
    pub dropped: u64,
}

/// Starts collecting on this thread (inside a running simulation); at most `limit` lines
/// are kept in memory, every line counts in the hash.
pub fn begin(limit: usize) {
    TRACE.with(|t| {
        *t.borrow_mut() = Some(Collector {
            start: tokio::time::Instant::now(),
            text: String::new(),
            kept: 0,
            hasher: rustc_hash::FxHasher::default(),
            limit,
            dropped: 0,
        })
    });
}

/// Stops collecting and returns the trace.
pub fn finish() -> Trace {
    TRACE.with(|t| match t.borrow_mut().take() {
        Some(c) => Trace {
            text: c.text,
            kept: c.kept,
            hash: c.hasher.finish(),
            dropped: c.dropped,
        },
        None => Trace::default(),
    })
}

/// Simulated time since the trace began, in microseconds (0 when not collecting).
pub fn now_us() -> u64 {
    TRACE.with(|t| {
        t.borrow()
            .as_ref()
            .map_or(0, |c| c.start.elapsed().as_micros() as u64)
    })
}

fn push(node: madsim::task::NodeId, level: &str, target: &str, text: &str) {
    TRACE.with(|t| {
        let mut t = t.borrow_mut();
        let Some(c) = t.as_mut() else { return };
        let us = c.start.elapsed().as_micros();
        // Written in place at the end of the kept text, and taken back off if over the limit.
        let start = c.text.len();
        let _ = writeln!(
            c.text,
            "{:>8}.{:03}ms n{node} {level} {target}: {text}",
            us / 1000,
            us % 1000
        );
        c.hasher.write(&c.text.as_bytes()[start..]);
        if (c.kept as usize) < c.limit {
            c.kept += 1;
        } else {
            c.text.truncate(start);
            c.dropped += 1;
        }
    });
}

fn current_node() -> madsim::task::NodeId {
    madsim::plugin::node()
}

/// Records a harness event.
pub fn record(text: impl std::fmt::Display) {
    push(current_node(), "EVENT", "harness", &text.to_string());
}

/// The `tracing` subscriber a run installs: it takes the stack's events at its level and
/// above (our crate's at `info` or that level, whichever is more verbose) into the trace, and
/// keeps no spans (tracking every span the stack opens would cost more than the run).
pub struct TraceSubscriber {
    stack: tracing::Level,
    ours: tracing::Level,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl TraceSubscriber {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        if !meta.is_event() {
            return false;
        }
        let limit = if meta.target().starts_with("odgm_sim") {
            self.ours
        } else {
            self.stack
        };
        *meta.level() <= limit
    }
}

impl Subscriber for TraceSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.wants(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(std::cmp::max(
            self.stack, self.ours,
        )))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        let meta = event.metadata();
        push(current_node(), meta.level().as_str(), meta.target(), &f.0);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// The subscriber for a run at `stack_level`.
pub fn subscriber(stack_level: tracing::Level) -> TraceSubscriber {
    TraceSubscriber {
        stack: stack_level,
        ours: std::cmp::max(stack_level, tracing::Level::INFO),
    }
}
