//! History file formats: Porcupine's Jepsen etcd logs and kv histories, Jepsen EDN histories,
//! and our own JSON lines. Every error names the file and the line.

use std::io::Write;
use std::path::{Path, PathBuf};

use edn_format::{Keyword, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::history::{FaultEvent, History, HistoryError, Operation, Outcome, Recorder, Time};
use super::model::{KvInput, KvOutput, RegInput, RegOutput};

/// Largest history file read (it is read whole).
pub const MAX_HISTORY_BYTES: u64 = 512 * 1024 * 1024;

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Porcupine's `jepsen/etcd_NNN.log` (single cas register).
    PorcupineEtcd,
    /// Porcupine's `kv/cNN-*.txt` (get / put / append).
    PorcupineKv,
    /// A Jepsen EDN history: a vector of, or one per line, `{:process :type :f :value}` maps.
    JepsenEdn,
    /// odgm-sim's JSON lines: one operation (or `{"fault": ...}`) per line.
    Jsonl,
}

impl Format {
    /// Guesses the format from a file name.
    pub fn infer(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "log" => Some(Format::PorcupineEtcd),
            "edn" => Some(Format::JepsenEdn),
            "jsonl" => Some(Format::Jsonl),
            "txt" if name.starts_with('c') => Some(Format::PorcupineKv),
            _ => None,
        }
    }
}

/// A history file that could not be read.
#[derive(Debug, Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err(file: &Path, line: usize, message: impl Into<String>) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| err(path, 0, e.to_string()))?;
    if meta.len() > MAX_HISTORY_BYTES {
        return Err(err(
            path,
            0,
            format!(
                "{} bytes exceeds the {MAX_HISTORY_BYTES}-byte limit",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| err(path, 0, e.to_string()))
}

fn history_err(path: &Path, line: usize, e: HistoryError) -> LoadError {
    err(path, line, e.to_string())
}

/// The kind of an event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

fn event_type(s: &str) -> Option<EventType> {
    Some(match s.trim_start_matches(':') {
        "invoke" => EventType::Invoke,
        "ok" => EventType::Ok,
        "fail" => EventType::Fail,
        "info" => EventType::Info,
        _ => return None,
    })
}

/// Feeds one event into a recorder, naming the line on error.
#[allow(clippy::too_many_arguments)]
fn record<I, O>(
    rec: &mut Recorder<I, O>,
    path: &Path,
    line: usize,
    process: u64,
    ty: EventType,
    input: Option<I>,
    output: Option<O>,
    at: Time,
) -> Result<(), LoadError> {
    let r = match ty {
        EventType::Invoke => {
            let input = input.ok_or_else(|| err(path, line, "invocation without an input"))?;
            rec.invoke(process, input, at)
        }
        EventType::Ok => rec.complete(process, Outcome::Ok, output, at),
        EventType::Fail => rec.complete(process, Outcome::Fail, output, at),
        EventType::Info => rec.complete(process, Outcome::Info, None, at),
    };
    r.map_err(|e| history_err(path, line, e))
}

// ---------------------------------------------------------------------------------------
// Porcupine etcd logs
// ---------------------------------------------------------------------------------------

fn parse_int(path: &Path, line: usize, s: &str) -> Result<i64, LoadError> {
    s.parse()
        .map_err(|_| err(path, line, format!("expected an integer, found `{s}`")))
}

fn parse_opt_int(path: &Path, line: usize, s: &str) -> Result<Option<i64>, LoadError> {
    if s == "nil" {
        Ok(None)
    } else {
        parse_int(path, line, s).map(Some)
    }
}

fn parse_pair(path: &Path, line: usize, s: &str) -> Result<(i64, i64), LoadError> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| err(path, line, format!("expected `[from to]`, found `{s}`")))?;
    let mut it = inner.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), None) => Ok((parse_int(path, line, a)?, parse_int(path, line, b)?)),
        _ => Err(err(
            path,
            line,
            format!("expected `[from to]`, found `{s}`"),
        )),
    }
}

/// Reads a Porcupine etcd log (see `tests/data/porcupine/README.md`).
pub fn load_porcupine_etcd(path: &Path) -> Result<History<RegInput, RegOutput>, LoadError> {
    let text = read(path)?;
    let mut rec = Recorder::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let toks: Vec<&str> = raw.split_whitespace().collect();
        if toks.is_empty() {
            continue;
        }
        let at = toks
            .iter()
            .position(|t| *t == "jepsen.util")
            .filter(|&p| toks.get(p + 1) == Some(&"-"))
            .ok_or_else(|| {
                err(
                    path,
                    line,
                    "expected `INFO jepsen.util - <process> <type> <f> <value>`",
                )
            })?;
        let rest = &toks[at + 2..];
        if rest.len() < 3 {
            return Err(err(path, line, "expected `<process> <type> <f> <value>`"));
        }
        if rest[0] == ":nemesis" {
            rec.fault(FaultEvent {
                time: line as Time,
                end: None,
                kind: rest[2].trim_start_matches(':').to_string(),
                detail: rest[3..].join(" "),
            });
            continue;
        }
        let process: u64 = rest[0]
            .parse()
            .map_err(|_| err(path, line, format!("bad process id `{}`", rest[0])))?;
        let ty = event_type(rest[1])
            .ok_or_else(|| err(path, line, format!("unknown event type `{}`", rest[1])))?;
        let value = rest[3..].join(" ");
        let (input, output) = match (rest[2], ty) {
            (":read", EventType::Invoke) => (Some(RegInput::Read), None),
            (":read", EventType::Ok) => (
                None,
                Some(RegOutput::Read {
                    value: parse_opt_int(path, line, &value)?,
                }),
            ),
            (":write", EventType::Invoke) => (
                Some(RegInput::Write {
                    value: parse_int(path, line, &value)?,
                }),
                None,
            ),
            (":write", EventType::Ok) => (None, Some(RegOutput::Write)),
            (":cas", EventType::Invoke) => {
                let (from, to) = parse_pair(path, line, &value)?;
                (Some(RegInput::Cas { from, to }), None)
            }
            (":cas", EventType::Ok) => (None, Some(RegOutput::Cas { ok: true })),
            (":cas", EventType::Fail) => (None, Some(RegOutput::Cas { ok: false })),
            (":read" | ":write" | ":cas", _) => (None, None),
            (f, _) => return Err(err(path, line, format!("unknown operation `{f}`"))),
        };
        record(
            &mut rec,
            path,
            line,
            process,
            ty,
            input,
            output,
            line as Time,
        )?;
    }
    Ok(rec.finish())
}

// ---------------------------------------------------------------------------------------
// EDN helpers
// ---------------------------------------------------------------------------------------

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

fn edn_opt_int(path: &Path, line: usize, v: Option<&Value>) -> Result<Option<i64>, LoadError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Integer(i)) => Ok(Some(*i)),
        Some(other) => Err(err(
            path,
            line,
            format!(
                "expected an integer or nil, found {}",
                edn_format::emit_str(other)
            ),
        )),
    }
}

fn edn_int(path: &Path, line: usize, v: Option<&Value>) -> Result<i64, LoadError> {
    edn_opt_int(path, line, v)?.ok_or_else(|| err(path, line, "expected an integer, found nil"))
}

fn edn_pair(path: &Path, line: usize, v: Option<&Value>) -> Result<(i64, i64), LoadError> {
    match v {
        Some(Value::Vector(items)) | Some(Value::List(items)) if items.len() == 2 => Ok((
            edn_int(path, line, items.first())?,
            edn_int(path, line, items.get(1))?,
        )),
        other => Err(err(
            path,
            line,
            format!(
                "expected `[from to]`, found {}",
                other.map_or("nothing".into(), edn_format::emit_str)
            ),
        )),
    }
}

fn edn_opt_string(
    path: &Path,
    line: usize,
    v: Option<&Value>,
) -> Result<Option<String>, LoadError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(
            path,
            line,
            format!(
                "expected a string or nil, found {}",
                edn_format::emit_str(other)
            ),
        )),
    }
}

/// Top-level EDN maps of a file, with their line numbers: either one vector holding them, or
/// one map per line.
fn edn_maps(path: &Path, text: &str) -> Result<Vec<(usize, Value)>, LoadError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v = edn_format::parse_str(text)
            .map_err(|e| err(path, e.row, format!("EDN: {} (column {})", e.error, e.col)))?;
        let Value::Vector(items) = v else {
            return Err(err(path, 1, "expected a vector of operation maps"));
        };
        // The parser does not keep positions; the index stands in for the line.
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v))
            .collect());
    }
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let v = edn_format::parse_str(raw)
            .map_err(|e| err(path, i + 1, format!("EDN: {} (column {})", e.error, e.col)))?;
        out.push((i + 1, v));
    }
    Ok(out)
}

struct EdnEvent<'v> {
    process: Option<u64>,
    ty: EventType,
    f: &'v str,
    value: Option<&'v Value>,
}

fn edn_event<'v>(path: &Path, line: usize, map: &'v Value) -> Result<EdnEvent<'v>, LoadError> {
    if !matches!(map, Value::Map(_)) {
        return Err(err(
            path,
            line,
            "expected an operation map `{:process :type :f :value}`",
        ));
    }
    let process = match field(map, "process") {
        Some(Value::Integer(p)) if *p >= 0 => Some(*p as u64),
        Some(Value::Keyword(k)) if k.name() == "nemesis" => None,
        other => {
            return Err(err(
                path,
                line,
                format!(
                    "bad :process {}",
                    other.map_or("(missing)".into(), edn_format::emit_str)
                ),
            ))
        }
    };
    let ty_name = field(map, "type")
        .and_then(keyword_name)
        .ok_or_else(|| err(path, line, "missing or non-keyword :type"))?;
    let ty =
        event_type(ty_name).ok_or_else(|| err(path, line, format!("unknown :type :{ty_name}")))?;
    let f = field(map, "f")
        .and_then(keyword_name)
        .ok_or_else(|| err(path, line, "missing or non-keyword :f"))?;
    Ok(EdnEvent {
        process,
        ty,
        f,
        value: field(map, "value"),
    })
}

// ---------------------------------------------------------------------------------------
// Porcupine kv and Jepsen EDN
// ---------------------------------------------------------------------------------------

/// Reads a Porcupine kv history (one EDN map per line, with `:key`).
pub fn load_porcupine_kv(path: &Path) -> Result<History<KvInput, KvOutput>, LoadError> {
    let text = read(path)?;
    let mut rec = Recorder::new();
    for (line, map) in edn_maps(path, &text)? {
        let ev = edn_event(path, line, &map)?;
        let Some(process) = ev.process else { continue };
        let key = match field(&map, "key") {
            Some(Value::String(k)) => k.clone(),
            Some(Value::Integer(k)) => k.to_string(),
            _ => return Err(err(path, line, "missing :key")),
        };
        let value = edn_opt_string(path, line, ev.value)?;
        let need = |v: Option<String>| v.ok_or_else(|| err(path, line, "missing :value"));
        let (input, output) = match (ev.f, ev.ty) {
            ("get", EventType::Invoke) => (Some(KvInput::Get { key }), None),
            ("get", EventType::Ok) => (None, Some(KvOutput::Get { value })),
            ("put", EventType::Invoke) => (
                Some(KvInput::Put {
                    key,
                    value: need(value)?,
                }),
                None,
            ),
            ("append", EventType::Invoke) => (
                Some(KvInput::Append {
                    key,
                    value: need(value)?,
                }),
                None,
            ),
            ("put" | "append", EventType::Ok) => (None, Some(KvOutput::Ok)),
            ("get" | "put" | "append", _) => (None, None),
            (f, _) => return Err(err(path, line, format!("unknown operation :{f}"))),
        };
        record(
            &mut rec,
            path,
            line,
            process,
            ev.ty,
            input,
            output,
            line as Time,
        )?;
    }
    Ok(rec.finish())
}

/// Reads a Jepsen EDN history of a register (`:read`, `:write`, `:cas`). Nemesis events
/// become fault events; `:fail` and `:info` keep Jepsen's meaning.
pub fn load_jepsen_edn(path: &Path) -> Result<History<RegInput, RegOutput>, LoadError> {
    let text = read(path)?;
    let mut rec = Recorder::new();
    let mut open_fault: Option<usize> = None;
    let mut faults: Vec<FaultEvent> = Vec::new();
    for (line, map) in edn_maps(path, &text)? {
        let ev = edn_event(path, line, &map)?;
        let at = line as Time;
        let Some(process) = ev.process else {
            // Nemesis: a :start opens a fault window, a :stop closes it.
            if ev.ty == EventType::Info {
                let detail = ev.value.map(edn_format::emit_str).unwrap_or_default();
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
                        detail,
                    });
                }
            }
            continue;
        };
        let (input, output) = match (ev.f, ev.ty) {
            ("read", EventType::Invoke) => (Some(RegInput::Read), None),
            ("read", EventType::Ok) => (
                None,
                Some(RegOutput::Read {
                    value: edn_opt_int(path, line, ev.value)?,
                }),
            ),
            ("write", EventType::Invoke) => (
                Some(RegInput::Write {
                    value: edn_int(path, line, ev.value)?,
                }),
                None,
            ),
            ("write", EventType::Ok) => (None, Some(RegOutput::Write)),
            ("cas", EventType::Invoke) => {
                let (from, to) = edn_pair(path, line, ev.value)?;
                (Some(RegInput::Cas { from, to }), None)
            }
            ("cas", EventType::Ok) => (None, Some(RegOutput::Cas { ok: true })),
            ("cas", EventType::Fail) => (None, Some(RegOutput::Cas { ok: false })),
            ("read" | "write" | "cas", _) => (None, None),
            (f, _) => return Err(err(path, line, format!("unknown operation :{f}"))),
        };
        record(&mut rec, path, line, process, ev.ty, input, output, at)?;
    }
    let mut h = rec.finish();
    h.faults.extend(faults);
    Ok(h)
}

// ---------------------------------------------------------------------------------------
// JSON lines
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonLine<I, O> {
    Fault { fault: FaultEvent },
    Op(Operation<I, O>),
}

/// Reads our JSON-lines format: one operation object per line, or `{"fault": {...}}`.
pub fn load_jsonl<I: DeserializeOwned, O: DeserializeOwned>(
    path: &Path,
) -> Result<History<I, O>, LoadError> {
    let text = read(path)?;
    let mut h = History::default();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: JsonLine<I, O> = serde_json::from_str(raw).map_err(|e| {
            err(
                path,
                i + 1,
                format!("{e} (expected an operation or a fault object)"),
            )
        })?;
        match line {
            JsonLine::Fault { fault } => h.faults.push(fault),
            JsonLine::Op(op) => h.ops.push(op),
        }
    }
    h.validate().map_err(|e| history_err(path, 0, e))?;
    Ok(h)
}

/// Writes a history as JSON lines (operations, then faults).
pub fn write_jsonl<I: Serialize + Clone, O: Serialize + Clone>(
    history: &History<I, O>,
    mut out: impl Write,
) -> std::io::Result<()> {
    for op in &history.ops {
        serde_json::to_writer(&mut out, &JsonLine::<I, O>::Op(op.clone()))?;
        out.write_all(b"\n")?;
    }
    for fault in &history.faults {
        serde_json::to_writer(
            &mut out,
            &JsonLine::<I, O>::Fault {
                fault: fault.clone(),
            },
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
