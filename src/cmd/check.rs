//! `odgm-sim check`: checks history files and, with a manifest, compares against known
//! verdicts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::check::formats::{self, Format, JepsenOp, LoadError, RegisterEdn};
use crate::check::history::History;
use crate::check::html;
use crate::check::linearizability::{check, CheckOptions, CheckResult, Verdict};
use crate::check::model::{KeyedModel, KvModel, Model, RegisterModel};

/// The model names of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelName {
    /// Read/write register.
    Register,
    /// Compare-and-set register; failed operations are dropped (Knossos).
    CasRegister,
    /// Compare-and-set register; a failed cas is evidence the value differed (Porcupine).
    Etcd,
    /// Key-value map with get / put / append / delete / cas.
    Kv,
}

impl ModelName {
    fn from_manifest(name: &str) -> Option<ModelName> {
        Some(match name {
            "etcd-register" | "etcd" => ModelName::Etcd,
            "cas-register" => ModelName::CasRegister,
            "register" => ModelName::Register,
            n if n.starts_with("kv") => ModelName::Kv,
            _ => return None,
        })
    }
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// History files (with `--manifest` and no files: every file the manifest lists).
    pub files: Vec<PathBuf>,
    /// File format (default: from the file name: .log, cNN-*.txt, .edn, .jsonl).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Sequential model (default: from the manifest row, else etcd for registers, kv for kv).
    #[arg(long, value_enum)]
    pub model: Option<ModelName>,
    /// Check the history as one map, not as a model per key: it is still split where no
    /// operation connects two keys (locality makes that exact), so scans and counts tie
    /// their keys together and the rest stays apart. (The default does the same; the
    /// flag is kept for scripts that ask for it.)
    #[arg(long)]
    pub no_partition: bool,
    /// Search the whole history at once, without splitting it at all (exponential in the
    /// keys: for testing the split).
    #[arg(long)]
    pub whole: bool,
    /// The register's value before any write (Knossos checks its corpus as
    /// `(cas-register 0)`); register models only.
    #[arg(long, value_name = "VALUE", allow_negative_numbers = true)]
    pub init: Option<i64>,
    /// Write each loaded history as Jepsen EDN (with several inputs, OUT-<name>.edn each):
    /// registers as Knossos reads them, keys as `independent` tuples.
    #[arg(long, value_name = "OUT.edn")]
    pub export_edn: Option<PathBuf>,
    /// Expected verdicts (TSV: file, model, expected ok|bad, ...; files relative to it).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Write an HTML visualization (one file; with several inputs, OUT-<name>.html each).
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Time each check over several runs and print per-file and total figures.
    #[arg(long)]
    pub bench: bool,
    /// Runs per file with --bench (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    pub bench_runs: usize,
    /// Search steps allowed per part before the verdict is `unknown`.
    #[arg(long, default_value_t = CheckOptions::default().max_steps)]
    pub max_steps: u64,
    /// Worker threads for checking parts in parallel.
    #[arg(long)]
    pub threads: Option<usize>,
}

struct Expected {
    model: Option<ModelName>,
    ok: bool,
}

fn read_manifest(path: &Path) -> Result<BTreeMap<PathBuf, Expected>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if i == 0 && cols.first() == Some(&"file") || line.trim().is_empty() {
            continue;
        }
        if cols.len() < 3 {
            return Err(format!(
                "{}:{}: expected at least 3 tab-separated columns (file, model, expected)",
                path.display(),
                i + 1
            ));
        }
        let ok = match cols[2] {
            "ok" => true,
            "bad" => false,
            other => {
                return Err(format!(
                    "{}:{}: expected `ok` or `bad`, found `{other}`",
                    path.display(),
                    i + 1
                ))
            }
        };
        let file = canonical(&dir.join(cols[0]));
        out.insert(
            file,
            Expected {
                model: ModelName::from_manifest(cols[1]),
                ok,
            },
        );
    }
    Ok(out)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One file's outcome.
struct FileOutcome {
    verdict: Verdict,
    best: Duration,
    ops: usize,
    parts: usize,
    steps: u64,
}

/// What to do with each loaded history.
struct Job<'a> {
    opts: &'a CheckOptions,
    runs: usize,
    html_out: Option<&'a Path>,
    edn_out: Option<&'a Path>,
    title: String,
}

impl Job<'_> {
    fn run<M: Model>(
        &self,
        model: &M,
        history: &History<M::Input, M::Output>,
    ) -> Result<FileOutcome, String>
    where
        M::Input: JepsenOp<Output = M::Output>,
    {
        if let Some(out) = self.edn_out {
            let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
            formats::write_edn(history, std::io::BufWriter::new(file))
                .map_err(|e| format!("{}: {e}", out.display()))?;
        }
        let mut best = Duration::MAX;
        let mut result: Option<CheckResult> = None;
        for _ in 0..self.runs.max(1) {
            // Checking runs outside any simulation, so the wall clock is the right clock here.
            let t = crate::rt::Stopwatch::start();
            let r = check(model, history, self.opts).map_err(|e| e.to_string())?;
            best = best.min(t.elapsed());
            result = Some(r);
        }
        let result = result.ok_or("no run")?;
        if let Some(out) = self.html_out {
            std::fs::write(
                out,
                html::render(&self.title, model, history, Some(&result)),
            )
            .map_err(|e| format!("{}: {e}", out.display()))?;
        }
        Ok(FileOutcome {
            verdict: result.verdict,
            best,
            ops: history.ops.len(),
            parts: result.parts.len(),
            steps: result.steps(),
        })
    }
}

fn load_err(e: LoadError) -> String {
    e.to_string()
}

fn check_file(
    path: &Path,
    format: Format,
    model: ModelName,
    init: Option<i64>,
    job: &Job<'_>,
) -> Result<FileOutcome, String> {
    let register = match model {
        ModelName::Register => Some(RegisterModel::REGISTER),
        ModelName::CasRegister => Some(RegisterModel::KNOSSOS_CAS),
        ModelName::Etcd => Some(RegisterModel::ETCD),
        ModelName::Kv => None,
    }
    .map(|m| m.starting_at(init));
    if init.is_some() && register.is_none() {
        return Err("--init sets a register's first value; the kv model has none".into());
    }
    match (format, register) {
        (Format::PorcupineEtcd, Some(m)) => {
            job.run(&m, &formats::load_porcupine_etcd(path).map_err(load_err)?)
        }
        (Format::JepsenEdn, Some(m)) => match formats::load_jepsen_edn(path).map_err(load_err)? {
            RegisterEdn::Plain(h) => job.run(&m, &h),
            RegisterEdn::Independent(h) => job.run(&KeyedModel(m), &h),
        },
        (Format::Jsonl, Some(m)) => job.run(&m, &formats::load_jsonl(path).map_err(load_err)?),
        (Format::PorcupineKv, None) => {
            let m = KvModel {
                absent_reads_empty: true,
                failed_cas_is_evidence: false,
            };
            job.run(&m, &formats::load_porcupine_kv(path).map_err(load_err)?)
        }
        (Format::JepsenEdn, None) => job.run(
            &KvModel::default(),
            &formats::load_kv_edn(path).map_err(load_err)?,
        ),
        (Format::Jsonl, None) => job.run(
            &KvModel::default(),
            &formats::load_jsonl(path).map_err(load_err)?,
        ),
        (f, _) => Err(format!(
            "{}: format {f:?} does not go with model {model:?}",
            path.display()
        )),
    }
}

/// The output file for `file` of `count` inputs: `out` itself for one, `OUT-<name>.ext`
/// for several.
fn per_file(out: &Path, file: &Path, count: usize, ext: &str) -> PathBuf {
    if count == 1 {
        return out.to_path_buf();
    }
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("history");
    let base = out.with_extension("");
    PathBuf::from(format!("{}-{stem}.{ext}", base.display()))
}

/// Runs `odgm-sim check`.
pub fn run(args: &CheckArgs) -> Result<ExitCode, String> {
    let manifest = args.manifest.as_deref().map(read_manifest).transpose()?;
    let mut files: Vec<PathBuf> = args.files.clone();
    if files.is_empty() {
        match &manifest {
            Some(m) => files = m.keys().cloned().collect(),
            None => return Err("no history files given (and no --manifest)".into()),
        }
    }
    let mut opts = CheckOptions {
        partition: !args.whole,
        max_steps: args.max_steps,
        ..CheckOptions::default()
    };
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    let runs = if args.bench {
        args.bench_runs.max(1)
    } else {
        1
    };
    let mut total = Duration::ZERO;
    let (mut n_ok, mut n_illegal, mut n_unknown, mut mismatches, mut errors) = (0, 0, 0, 0, 0);
    let width = files
        .iter()
        .map(|f| f.display().to_string().len())
        .max()
        .unwrap_or(0);
    for file in &files {
        let expected = manifest.as_ref().map(|m| m.get(&canonical(file)));
        if let Some(None) = expected {
            println!("{:width$}  NOT IN MANIFEST", file.display());
            mismatches += 1;
            continue;
        }
        let expected = expected.flatten();
        let Some(format) = args.format.or_else(|| Format::infer(file)) else {
            println!(
                "{:width$}  ERROR cannot tell the format; pass --format",
                file.display()
            );
            errors += 1;
            continue;
        };
        let model = args
            .model
            .or(expected.and_then(|e| e.model))
            .unwrap_or(match format {
                Format::PorcupineKv => ModelName::Kv,
                _ => ModelName::Etcd,
            });
        let html_out = args
            .html
            .as_ref()
            .map(|h| per_file(h, file, files.len(), "html"));
        let edn_out = args
            .export_edn
            .as_ref()
            .map(|h| per_file(h, file, files.len(), "edn"));
        let job = Job {
            opts: &opts,
            runs,
            html_out: html_out.as_deref(),
            edn_out: edn_out.as_deref(),
            title: file.display().to_string(),
        };
        match check_file(file, format, model, args.init, &job) {
            Ok(o) => {
                total += o.best;
                match o.verdict {
                    Verdict::Ok => n_ok += 1,
                    Verdict::Illegal => n_illegal += 1,
                    Verdict::Unknown => n_unknown += 1,
                }
                let judged = match expected {
                    Some(e) => {
                        let right =
                            (o.verdict == Verdict::Ok) == e.ok && o.verdict != Verdict::Unknown;
                        if !right {
                            mismatches += 1;
                        }
                        format!(
                            "  expected {:<3} {}",
                            if e.ok { "ok" } else { "bad" },
                            if right { "match" } else { "MISMATCH" }
                        )
                    }
                    None => String::new(),
                };
                println!(
                    "{:width$}  {:<7} {:>9.3} ms  {:>5} ops {:>3} parts {:>9} steps{judged}",
                    file.display(),
                    o.verdict.to_string(),
                    o.best.as_secs_f64() * 1e3,
                    o.ops,
                    o.parts,
                    o.steps
                );
            }
            Err(e) => {
                println!("{:width$}  ERROR {e}", file.display());
                errors += 1;
            }
        }
    }
    println!(
        "{} files: {n_ok} ok, {n_illegal} illegal, {n_unknown} unknown, {errors} errors; \
         checking time {:.1} ms{}",
        files.len(),
        total.as_secs_f64() * 1e3,
        if args.bench {
            format!(" (fastest of {runs} runs per file)")
        } else {
            String::new()
        }
    );
    match super::bench::peak_rss_bytes() {
        Some(peak) => println!("peak memory: {:.1} MiB", super::bench::mib(peak)),
        None => println!("peak memory: not known on this system"),
    }
    if manifest.is_some() {
        println!("manifest: {mismatches} mismatches");
        return Ok(if mismatches == 0 && errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    Ok(if errors > 0 {
        ExitCode::from(2)
    } else if n_illegal + n_unknown > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
