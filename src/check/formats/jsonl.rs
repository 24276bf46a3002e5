//! odgm-sim's JSON lines: one operation, or `{"fault": ...}`, per line.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{err, history_err, read, LoadError};
use crate::check::history::{FaultEvent, History, Operation};

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
