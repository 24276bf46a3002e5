//! Writing histories as Jepsen EDN: one operation map per line with `:time`; registers as
//! Knossos reads them (`:read`, `:write`, `:cas`; a failed cas is `:fail`), keyed registers
//! and the key-value model as `independent` tuples (`:read`, `:write`, `:cas`, `:delete`,
//! `:append`, `:scan`, `:count`), which [`super::load_kv_edn`] reads back.

use std::collections::BTreeMap;
use std::io::Write;

use edn_format::{Keyword, Value};

use crate::check::history::{History, Outcome, Time};
use crate::check::model::{Keyed, KvInput, KvOutput, RegInput, RegOutput};

fn kw(name: &str) -> Value {
    Value::Keyword(Keyword::from_name(name))
}

/// How an operation appears in a Jepsen history.
pub trait JepsenOp {
    /// The operation's output.
    type Output;
    /// `:f`.
    fn f(&self) -> &'static str;
    /// The invocation's `:value`.
    fn invoke_value(&self) -> Value;
    /// The completion's `:type` and `:value` (an `ok` or `fail` completion).
    fn completion(&self, output: Option<&Self::Output>, outcome: Outcome) -> (&'static str, Value);
}

fn outcome_type(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Nil, Value::Integer)
}

fn opt_str(v: Option<&str>) -> Value {
    v.map_or(Value::Nil, |s| Value::String(s.to_string()))
}

impl JepsenOp for RegInput {
    type Output = RegOutput;

    fn f(&self) -> &'static str {
        match self {
            RegInput::Read => "read",
            RegInput::Write { .. } => "write",
            RegInput::Cas { .. } => "cas",
        }
    }

    fn invoke_value(&self) -> Value {
        match self {
            RegInput::Read => Value::Nil,
            RegInput::Write { value } => Value::Integer(*value),
            RegInput::Cas { from, to } => {
                Value::Vector(vec![Value::Integer(*from), Value::Integer(*to)])
            }
        }
    }

    fn completion(&self, output: Option<&RegOutput>, outcome: Outcome) -> (&'static str, Value) {
        match (self, output) {
            (RegInput::Read, Some(RegOutput::Read { value })) => ("ok", opt_int(*value)),
            // Jepsen records a cas that found another value as a failure.
            (RegInput::Cas { .. }, Some(RegOutput::Cas { ok: false })) => {
                ("fail", self.invoke_value())
            }
            _ => (outcome_type(outcome), self.invoke_value()),
        }
    }
}

impl<I: JepsenOp> JepsenOp for Keyed<I> {
    type Output = I::Output;

    fn f(&self) -> &'static str {
        self.op.f()
    }

    fn invoke_value(&self) -> Value {
        Value::Vector(vec![
            Value::String(self.key.clone()),
            self.op.invoke_value(),
        ])
    }

    fn completion(&self, output: Option<&I::Output>, outcome: Outcome) -> (&'static str, Value) {
        let (ty, v) = self.op.completion(output, outcome);
        (ty, Value::Vector(vec![Value::String(self.key.clone()), v]))
    }
}

impl JepsenOp for KvInput {
    type Output = KvOutput;

    fn f(&self) -> &'static str {
        match self {
            KvInput::Get { .. } => "read",
            KvInput::Put { .. } => "write",
            KvInput::Append { .. } => "append",
            KvInput::Delete { .. } => "delete",
            KvInput::Cas { .. } => "cas",
            KvInput::Scan { .. } => "scan",
            KvInput::Count { .. } => "count",
        }
    }

    fn invoke_value(&self) -> Value {
        let keyed = |k: &str, v: Value| Value::Vector(vec![Value::String(k.to_string()), v]);
        let range = |s: &Option<String>, e: &Option<String>| match (s, e) {
            (None, None) => Value::Nil,
            (s, e) => Value::Vector(vec![opt_str(s.as_deref()), opt_str(e.as_deref())]),
        };
        match self {
            KvInput::Get { key } | KvInput::Delete { key } => keyed(key, Value::Nil),
            KvInput::Put { key, value } | KvInput::Append { key, value } => {
                keyed(key, Value::String(value.clone()))
            }
            KvInput::Cas { key, from, to } => keyed(
                key,
                Value::Vector(vec![opt_str(from.as_deref()), Value::String(to.clone())]),
            ),
            KvInput::Scan { start, end } | KvInput::Count { start, end } => range(start, end),
        }
    }

    fn completion(&self, output: Option<&KvOutput>, outcome: Outcome) -> (&'static str, Value) {
        match (self, output) {
            (KvInput::Get { key }, Some(KvOutput::Get { value })) => (
                "ok",
                Value::Vector(vec![Value::String(key.clone()), opt_str(value.as_deref())]),
            ),
            (KvInput::Cas { .. }, Some(KvOutput::Cas { ok: false })) => {
                ("fail", self.invoke_value())
            }
            (KvInput::Scan { .. }, Some(KvOutput::Scan { pairs })) => (
                "ok",
                Value::Vector(
                    pairs
                        .iter()
                        .map(|(k, v)| {
                            Value::Vector(vec![Value::String(k.clone()), Value::String(v.clone())])
                        })
                        .collect(),
                ),
            ),
            (KvInput::Count { .. }, Some(KvOutput::Count { n })) => {
                ("ok", Value::Integer(*n as i64))
            }
            _ => (outcome_type(outcome), self.invoke_value()),
        }
    }
}

fn op_map(process: Value, ty: &str, f: &str, value: Value, time: Time) -> Value {
    let mut m = BTreeMap::new();
    m.insert(kw("process"), process);
    m.insert(kw("type"), kw(ty));
    m.insert(kw("f"), kw(f));
    m.insert(kw("value"), value);
    m.insert(kw("time"), Value::Integer(time.min(i64::MAX as u64) as i64));
    Value::Map(m)
}

/// Writes a history as Jepsen EDN, one operation map per line in time order: each
/// operation's invocation, then its completion (`:ok`, `:fail`, or `:info` at the end for an
/// operation whose result is unknown); faults as nemesis `:start-KIND` / `:stop-KIND` events.
pub fn write_edn<I: JepsenOp<Output = O>, O>(
    history: &History<I, O>,
    mut out: impl Write,
) -> std::io::Result<()> {
    let end = history
        .ops
        .iter()
        .map(|o| o.complete.unwrap_or(o.invoke))
        .chain(history.faults.iter().map(|f| f.end.unwrap_or(f.time)))
        .max()
        .unwrap_or(0)
        + 1;
    // (time, order among events at that time, form)
    let mut events: Vec<(Time, u8, usize, Value)> = Vec::new();
    for (n, op) in history.ops.iter().enumerate() {
        let p = Value::Integer(op.client as i64);
        let f = op.input.f();
        events.push((
            op.invoke,
            1,
            n,
            op_map(p.clone(), "invoke", f, op.input.invoke_value(), op.invoke),
        ));
        let (ty, value, at) = match (op.outcome, op.complete) {
            (Outcome::Info, _) | (_, None) => ("info", op.input.invoke_value(), end),
            (outcome, Some(at)) => {
                let (ty, v) = op.input.completion(op.output.as_ref(), outcome);
                (ty, v, at)
            }
        };
        events.push((at, 2, n, op_map(p, ty, f, value, at)));
    }
    for (n, fault) in history.faults.iter().enumerate() {
        let nemesis = kw("nemesis");
        let detail = Value::String(fault.detail.clone());
        let start = format!("start-{}", fault.kind);
        events.push((
            fault.time,
            0,
            n,
            op_map(nemesis.clone(), "info", &start, detail.clone(), fault.time),
        ));
        if let Some(e) = fault.end {
            let stop = format!("stop-{}", fault.kind);
            events.push((e, 0, n, op_map(nemesis, "info", &stop, detail, e)));
        }
    }
    events.sort_by_key(|(t, order, n, _)| (*t, *order, *n));
    for (_, _, _, v) in events {
        writeln!(out, "{}", edn_format::emit_str(&v))?;
    }
    Ok(())
}
