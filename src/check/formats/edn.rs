//! Jepsen EDN histories, read and written.
//!
//! Reading takes what Jepsen and Knossos write: operation maps `{:process :type :f :value}`
//! one per line or in a vector or list, `;` comments anywhere, `:time` (nanoseconds) used
//! for real-time order when every operation has one (else the line order), and Jepsen's
//! `independent` histories, whose `:value` is `[key value]`: a register per key. Nemesis
//! events become fault windows. Porcupine's kv histories (`:key` beside `:value`) read the
//! same way.
//!
//! [`super::write_edn`] writes what this reads back.

use std::path::Path;

use edn_format::{Keyword, Value};

use super::{err, read, record, EventType, LoadError};
use crate::check::history::{FaultEvent, History, Recorder, Time};
use crate::check::model::{Keyed, KvInput, KvOutput, RegInput, RegOutput};

fn kw(name: &str) -> Value {
    Value::Keyword(Keyword::from_name(name))
}

fn field<'v>(map: &'v Value, name: &str) -> Option<&'v Value> {
    match map {
        Value::Map(m) => m.get(&kw(name)),
        _ => None,
    }
}

fn keyword_name(v: &Value) -> Option<&str> {
    match v {
        Value::Keyword(k) => Some(k.name()),
        _ => None,
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".into(), edn_format::emit_str)
}

/// The items of a vector or list.
fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Vector(items) | Value::List(items) => Some(items),
        _ => None,
    }
}

fn edn_opt_int(path: &Path, line: usize, v: Option<&Value>) -> Result<Option<i64>, LoadError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Integer(i)) => Ok(Some(*i)),
        other => Err(err(
            path,
            line,
            format!("expected an integer or nil, found {}", show(other)),
        )),
    }
}

fn edn_int(path: &Path, line: usize, v: Option<&Value>) -> Result<i64, LoadError> {
    edn_opt_int(path, line, v)?.ok_or_else(|| err(path, line, "expected an integer, found nil"))
}

fn edn_pair(path: &Path, line: usize, v: Option<&Value>) -> Result<(i64, i64), LoadError> {
    match v.and_then(items) {
        Some([a, b]) => Ok((edn_int(path, line, Some(a))?, edn_int(path, line, Some(b))?)),
        _ => Err(err(
            path,
            line,
            format!("expected `[from to]`, found {}", show(v)),
        )),
    }
}

/// A string value: a string, or an integer or keyword written as one.
fn edn_opt_string(
    path: &Path,
    line: usize,
    v: Option<&Value>,
) -> Result<Option<String>, LoadError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Integer(i)) => Ok(Some(i.to_string())),
        Some(Value::Keyword(k)) => Ok(Some(k.name().to_string())),
        other => Err(err(
            path,
            line,
            format!("expected a string or nil, found {}", show(other)),
        )),
    }
}

/// The text with `;` comments blanked out (strings kept, line breaks kept).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped, mut in_comment) = (false, false, false);
    for c in text.chars() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                out.push(c);
            } else {
                out.push(' ');
            }
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
            continue;
        }
        match c {
            ';' => {
                in_comment = true;
                out.push(' ');
            }
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The forms of a history with the line each starts on: the elements of one top-level
/// vector or list, or every top-level form. Nothing but whitespace, commas and comments may
/// stand between them.
fn edn_forms(path: &Path, text: &str) -> Result<Vec<(usize, Value)>, LoadError> {
    let text = without_comments(text);
    let bytes = text.as_bytes();
    let skip = |mut i: usize| {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
            i += 1;
        }
        i
    };
    let line_at = |i: usize| text[..i].matches('\n').count() + 1;
    let mut i = skip(0);
    // One collection holding everything: its elements are the forms.
    let mut end = bytes.len();
    if matches!(bytes.get(i), Some(b'[') | Some(b'(')) {
        let close = if bytes[i] == b'[' { b']' } else { b')' };
        // The matching close: the last non-blank byte must be it.
        let last = text.trim_end().len();
        if last == 0 || bytes[last - 1] != close {
            return Err(err(
                path,
                line_at(i),
                "EDN: the history opens a collection that does not close at the end of the file",
            ));
        }
        i += 1;
        end = last - 1;
    }
    let mut forms = Vec::new();
    loop {
        i = skip(i);
        if i >= end {
            break;
        }
        // Find the end of the form starting at i.
        let start = i;
        let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
        while i < end {
            let c = bytes[i];
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_string = false;
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'[' | b'(' | b'{' => depth += 1,
                    b']' | b')' | b'}' => {
                        depth -= 1;
                        if depth < 0 {
                            return Err(err(
                                path,
                                line_at(i),
                                format!("EDN: unbalanced `{}`", c as char),
                            ));
                        }
                    }
                    c if depth == 0 && (c.is_ascii_whitespace() || c == b',') => break,
                    _ => {}
                }
            }
            i += 1;
            if depth == 0 && !in_string && matches!(bytes[i - 1], b']' | b')' | b'}') {
                break;
            }
        }
        if depth != 0 || in_string {
            return Err(err(path, line_at(start), "EDN: this form does not close"));
        }
        let line = line_at(start);
        let value = edn_format::parse_str(&text[start..i])
            .map_err(|e| err(path, line, format!("EDN: {}", e.error)))?;
        forms.push((line, value));
    }
    Ok(forms)
}

/// One operation map's parts.
struct EdnEvent<'v> {
    /// `None`: the nemesis.
    process: Option<u64>,
    ty: EventType,
    f: &'v str,
    value: Option<&'v Value>,
    time: Option<Time>,
}

fn edn_event<'v>(path: &Path, line: usize, map: &'v Value) -> Result<EdnEvent<'v>, LoadError> {
    if !matches!(map, Value::Map(_)) {
        return Err(err(
            path,
            line,
            format!(
                "expected an operation map `{{:process :type :f :value}}`, found {}",
                edn_format::emit_str(map)
            ),
        ));
    }
    let process = match field(map, "process") {
        Some(Value::Integer(p)) if *p >= 0 => Some(*p as u64),
        Some(Value::Keyword(k)) if k.name() == "nemesis" => None,
        other => return Err(err(path, line, format!("bad :process {}", show(other)))),
    };
    let ty_name = field(map, "type")
        .and_then(keyword_name)
        .ok_or_else(|| err(path, line, "missing or non-keyword :type"))?;
    let ty = super::event_type(ty_name)
        .ok_or_else(|| err(path, line, format!("unknown :type :{ty_name}")))?;
    let f = field(map, "f")
        .and_then(keyword_name)
        .ok_or_else(|| err(path, line, "missing or non-keyword :f"))?;
    let time = match field(map, "time") {
        Some(Value::Integer(t)) if *t >= 0 => Some(*t as Time),
        _ => None,
    };
    Ok(EdnEvent {
        process,
        ty,
        f,
        value: field(map, "value"),
        time,
    })
}

/// A history's events, read: the forms as events with the time each happened at (`:time`
/// when every operation has one, else the line), and the nemesis's fault windows.
struct Events<'v> {
    ops: Vec<(usize, Time, EdnEvent<'v>, &'v Value)>,
    faults: Vec<FaultEvent>,
}

fn events<'v>(path: &Path, forms: &'v [(usize, Value)]) -> Result<Events<'v>, LoadError> {
    let mut parsed = Vec::with_capacity(forms.len());
    for (line, map) in forms {
        parsed.push((*line, edn_event(path, *line, map)?, map));
    }
    let timed = parsed
        .iter()
        .all(|(_, ev, _)| ev.process.is_none() || ev.time.is_some());
    let mut ops = Vec::new();
    let mut faults: Vec<FaultEvent> = Vec::new();
    let mut open_fault: Option<usize> = None;
    for (line, ev, map) in parsed {
        let at = if timed {
            ev.time.unwrap_or(line as Time)
        } else {
            line as Time
        };
        if ev.process.is_some() {
            ops.push((line, at, ev, map));
            continue;
        }
        // Nemesis: a :start opens a fault window, a :stop or :heal closes it.
        if ev.ty == EventType::Info {
            if ev.f.contains("stop") || ev.f.contains("heal") {
                if let Some(i) = open_fault.take() {
                    faults[i].end = Some(at);
                }
            } else {
                open_fault = Some(faults.len());
                faults.push(FaultEvent {
                    time: at,
                    end: None,
                    kind: ev.f.to_string(),
                    detail: ev.value.map(edn_format::emit_str).unwrap_or_default(),
                    node: None,
                });
            }
        }
    }
    Ok(Events { ops, faults })
}

/// A register history read from EDN.
pub enum RegisterEdn {
    /// One register.
    Plain(History<RegInput, RegOutput>),
    /// Jepsen's `independent`: a register per key (`:value [key value]`).
    Independent(History<Keyed<RegInput>, RegOutput>),
}

/// Whether a register history is `independent`: an invocation of a read or write whose
/// value is a tuple, or of a cas whose value holds one.
fn is_independent(events: &Events<'_>) -> bool {
    let invoked = |ev: &&EdnEvent<'_>| ev.ty == EventType::Invoke;
    events
        .ops
        .iter()
        .map(|(_, _, ev, _)| ev)
        .filter(invoked)
        .any(|ev| match (ev.f, ev.value) {
            ("read" | "write", Some(v)) => items(v).is_some(),
            ("cas", Some(v)) => matches!(items(v), Some([_, inner]) if items(inner).is_some()),
            _ => false,
        })
}

/// A register operation's input and output from its `:f`, `:type` and `:value`.
fn register_op(
    path: &Path,
    line: usize,
    f: &str,
    ty: EventType,
    value: Option<&Value>,
) -> Result<(Option<RegInput>, Option<RegOutput>), LoadError> {
    Ok(match (f, ty) {
        ("read", EventType::Invoke) => (Some(RegInput::Read), None),
        ("read", EventType::Ok) => (
            None,
            Some(RegOutput::Read {
                value: edn_opt_int(path, line, value)?,
            }),
        ),
        ("write", EventType::Invoke) => (
            Some(RegInput::Write {
                value: edn_int(path, line, value)?,
            }),
            None,
        ),
        ("write", EventType::Ok) => (None, Some(RegOutput::Write)),
        ("cas", EventType::Invoke) => {
            let (from, to) = edn_pair(path, line, value)?;
            (Some(RegInput::Cas { from, to }), None)
        }
        ("cas", EventType::Ok) => (None, Some(RegOutput::Cas { ok: true })),
        ("cas", EventType::Fail) => (None, Some(RegOutput::Cas { ok: false })),
        ("read" | "write" | "cas", _) => (None, None),
        (f, _) => return Err(err(path, line, format!("unknown operation :{f}"))),
    })
}

/// An `independent` tuple `[key value]`: the key (as a string) and the value.
fn tuple<'v>(
    path: &Path,
    line: usize,
    v: Option<&'v Value>,
) -> Result<(String, &'v Value), LoadError> {
    match v.and_then(items) {
        Some([k, v]) => Ok((edn_opt_string(path, line, Some(k))?.unwrap_or_default(), v)),
        _ => Err(err(
            path,
            line,
            format!(
                "expected a :key, or a :value that is an independent `[key value]`, found {}",
                show(v)
            ),
        )),
    }
}

/// Reads a Jepsen EDN history of a register (`:read`, `:write`, `:cas`), or of a register per
/// key (`independent`). `:fail` and `:info` keep Jepsen's meaning.
pub fn load_jepsen_edn(path: &Path) -> Result<RegisterEdn, LoadError> {
    let text = read(path)?;
    let forms = edn_forms(path, &text)?;
    let events = events(path, &forms)?;
    if is_independent(&events) {
        let mut rec: Recorder<Keyed<RegInput>, RegOutput> = Recorder::new();
        for (line, at, ev, _) in &events.ops {
            let process = ev.process.unwrap_or_default();
            let (key, value) = tuple(path, *line, ev.value)?;
            let (input, output) = register_op(path, *line, ev.f, ev.ty, Some(value))?;
            let input = input.map(|op| Keyed { key, op });
            record(&mut rec, path, *line, process, ev.ty, input, output, *at)?;
        }
        let mut h = rec.finish();
        h.faults = events.faults;
        return Ok(RegisterEdn::Independent(h));
    }
    let mut rec: Recorder<RegInput, RegOutput> = Recorder::new();
    for (line, at, ev, _) in &events.ops {
        let process = ev.process.unwrap_or_default();
        let (input, output) = register_op(path, *line, ev.f, ev.ty, ev.value)?;
        record(&mut rec, path, *line, process, ev.ty, input, output, *at)?;
    }
    let mut h = rec.finish();
    h.faults = events.faults;
    Ok(RegisterEdn::Plain(h))
}

/// A scan or count range `[start end]` (either may be nil), or nil for everything.
fn edn_range(
    path: &Path,
    line: usize,
    v: Option<&Value>,
) -> Result<(Option<String>, Option<String>), LoadError> {
    match v {
        None | Some(Value::Nil) => Ok((None, None)),
        Some(r) => match items(r) {
            Some([s, e]) => Ok((
                edn_opt_string(path, line, Some(s))?,
                edn_opt_string(path, line, Some(e))?,
            )),
            _ => Err(err(
                path,
                line,
                format!("expected a range `[start end]`, found {}", show(v)),
            )),
        },
    }
}

/// A scan's pairs `[[key value] ...]`.
fn edn_pairs(
    path: &Path,
    line: usize,
    v: Option<&Value>,
) -> Result<Vec<(String, String)>, LoadError> {
    let bad = || {
        err(
            path,
            line,
            format!("expected scan pairs `[[key value] ...]`, found {}", show(v)),
        )
    };
    let list = v.and_then(items).ok_or_else(bad)?;
    list.iter()
        .map(|p| match items(p) {
            Some([k, v]) => Ok((
                edn_opt_string(path, line, Some(k))?.unwrap_or_default(),
                edn_opt_string(path, line, Some(v))?.unwrap_or_default(),
            )),
            _ => Err(bad()),
        })
        .collect()
}

/// Reads a key-value history: Porcupine's kv files (`:key` beside `:value`) and the
/// `independent` form [`write_edn`] writes (`:value [key value]`), with `:f` one of `:get` /
/// `:read`, `:put` / `:write`, `:append`, `:delete`, `:cas` (`[from to]`), `:scan` and
/// `:count` (of a range `[start end]`, or nil for every key).
pub fn load_kv_edn(path: &Path) -> Result<History<KvInput, KvOutput>, LoadError> {
    let text = read(path)?;
    let forms = edn_forms(path, &text)?;
    let events = events(path, &forms)?;
    let mut rec: Recorder<KvInput, KvOutput> = Recorder::new();
    for (line, at, ev, map) in &events.ops {
        let line = *line;
        let process = ev.process.unwrap_or_default();
        let multi = matches!(ev.f, "scan" | "count");
        // The key and the value: `:key` beside `:value`, or an independent tuple.
        let (key, value) = match field(map, "key") {
            Some(k) => (
                edn_opt_string(path, line, Some(k))?.unwrap_or_default(),
                ev.value,
            ),
            None if multi => (String::new(), ev.value),
            None => {
                let (k, v) = tuple(path, line, ev.value)?;
                (k, Some(v))
            }
        };
        let string = |v| edn_opt_string(path, line, v);
        let need = |v: Option<String>| v.ok_or_else(|| err(path, line, "missing :value"));
        let (input, output) = match (ev.f, ev.ty) {
            ("get" | "read", EventType::Invoke) => (Some(KvInput::Get { key }), None),
            ("get" | "read", EventType::Ok) => (
                None,
                Some(KvOutput::Get {
                    value: string(value)?,
                }),
            ),
            ("put" | "write", EventType::Invoke) => (
                Some(KvInput::Put {
                    key,
                    value: need(string(value)?)?,
                }),
                None,
            ),
            ("append", EventType::Invoke) => (
                Some(KvInput::Append {
                    key,
                    value: need(string(value)?)?,
                }),
                None,
            ),
            ("delete", EventType::Invoke) => (Some(KvInput::Delete { key }), None),
            ("cas", EventType::Invoke) => {
                let bad = || {
                    err(
                        path,
                        line,
                        format!("expected `[from to]`, found {}", show(value)),
                    )
                };
                let [from, to] = value.and_then(items).ok_or_else(bad)? else {
                    return Err(bad());
                };
                (
                    Some(KvInput::Cas {
                        key,
                        from: string(Some(from))?,
                        to: need(string(Some(to))?)?,
                    }),
                    None,
                )
            }
            ("cas", EventType::Ok) => (None, Some(KvOutput::Cas { ok: true })),
            ("cas", EventType::Fail) => (None, Some(KvOutput::Cas { ok: false })),
            ("scan", EventType::Invoke) => {
                let (start, end) = edn_range(path, line, value)?;
                (Some(KvInput::Scan { start, end }), None)
            }
            ("scan", EventType::Ok) => (
                None,
                Some(KvOutput::Scan {
                    pairs: edn_pairs(path, line, value)?,
                }),
            ),
            ("count", EventType::Invoke) => {
                let (start, end) = edn_range(path, line, value)?;
                (Some(KvInput::Count { start, end }), None)
            }
            ("count", EventType::Ok) => (
                None,
                Some(KvOutput::Count {
                    n: edn_int(path, line, value)?.max(0) as u64,
                }),
            ),
            ("put" | "write" | "append" | "delete", EventType::Ok) => (None, Some(KvOutput::Ok)),
            (
                "get" | "read" | "put" | "write" | "append" | "delete" | "cas" | "scan" | "count",
                _,
            ) => (None, None),
            (f, _) => return Err(err(path, line, format!("unknown operation :{f}"))),
        };
        record(&mut rec, path, line, process, ev.ty, input, output, *at)?;
    }
    let mut h = rec.finish();
    h.faults = events.faults;
    Ok(h)
}
