//! Porcupine's `jepsen/etcd_NNN.log`: Jepsen console logs of one compare-and-set register.

use std::path::Path;

use super::{err, event_type, read, record, EventType, LoadError};
use crate::check::history::{FaultEvent, History, Recorder, Time};
use crate::check::model::{RegInput, RegOutput};

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
                node: None,
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
