//! History file formats: Porcupine's Jepsen etcd logs and kv histories, Jepsen EDN histories,
//! and our own JSON lines. Every error names the file and the line.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::history::{History, HistoryError, Outcome, Recorder, Time};
use super::model::{KvInput, KvOutput};

/// Largest history file read (it is read whole).
pub const MAX_HISTORY_BYTES: u64 = 512 * 1024 * 1024;

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Porcupine's `jepsen/etcd_NNN.log` (single cas register).
    PorcupineEtcd,
    /// Porcupine's `kv/cNN-*.txt` (get / put / append).
    PorcupineKv,
    /// A Jepsen EDN history: `{:process :type :f :value}` maps, one per line or in a vector
    /// or list, with `;` comments anywhere; `:value [key value]` for `independent` keys.
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

pub(crate) fn err(file: &Path, line: usize, message: impl Into<String>) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

pub(crate) fn read(path: &Path) -> Result<String, LoadError> {
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

pub(crate) fn history_err(path: &Path, line: usize, e: HistoryError) -> LoadError {
    err(path, line, e.to_string())
}

/// The kind of an event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

pub(crate) fn event_type(s: &str) -> Option<EventType> {
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
pub(crate) fn record<I, O>(
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

mod edn;
mod edn_export;
mod etcd;
mod jsonl;

pub use edn::{load_jepsen_edn, load_kv_edn, RegisterEdn};
pub use edn_export::{write_edn, JepsenOp};
pub use etcd::load_porcupine_etcd;
pub use jsonl::{load_jsonl, write_jsonl};

/// Reads a Porcupine kv history (`kv/cNN-*.txt`: one EDN map per line, with `:key`); the
/// same reader as [`load_kv_edn`].
pub fn load_porcupine_kv(path: &Path) -> Result<History<KvInput, KvOutput>, LoadError> {
    load_kv_edn(path)
}
