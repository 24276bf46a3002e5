//! Linearizability: the Wing & Gong search with Lowe's memoisation, as Porcupine does it, and
//! P-compositionality (a history is linearizable iff each per-key part is).
//!
//! The search walks a doubly linked list of call and return events in time order. At a call
//! it tries to linearize the operation now (the model accepts it and the pair (set of
//! linearized operations, model state) was not seen before); at a return whose operation is
//! not linearized yet it backtracks. The memo cache makes the search visit each
//! (set, state) configuration at most once.
//!
//! Budgets are counted in search steps and cache entries, not in wall time, so a verdict is a
//! pure function of the history and the options. When a budget runs out the verdict is
//! `Unknown`, never `Ok`.
//!
//! This file holds the options, the verdicts and the splitting of a history into parts; the
//! search over one part is in `linearizability/search.rs` (what it may place before an
//! operation in `search/placement.rs`), the tests in `linearizability/tests.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{History, HistoryError, Outcome, Time};
use super::model::{Model, Touches};

/// Options of the search.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Split the history into parts of keys that operations connect (P-compositionality,
    /// exact by locality) when the model tells what each operation touches.
    pub partition: bool,
    /// The reductions that use what operations of unknown result can and cannot do:
    /// just-in-time linearization of blind writes, one of several identical ones, and
    /// unobserved written values concealed as one. Off, the search is the plain one they
    /// are tested against.
    pub reduce: bool,
    /// Search steps allowed per part before giving up with `Unknown` (0: no limit).
    pub max_steps: u64,
    /// Approximate bytes of memo and model states allowed per part before giving up with
    /// `Unknown` (0: no limit).
    pub max_memory_bytes: usize,
    /// Worker threads for checking parts in parallel (1: in the calling thread; use 1
    /// inside a simulation, which forbids OS threads).
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            partition: true,
            reduce: true,
            max_steps: 200_000_000,
            max_memory_bytes: 2 << 30,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Linearizable.
    Ok,
    /// Not linearizable.
    Illegal,
    /// A budget ran out first.
    Unknown,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Illegal => "illegal",
            Verdict::Unknown => "unknown",
        })
    }
}

/// The result for one part (one key, or the whole history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartResult {
    /// The partition key, if the history was split.
    pub key: Option<String>,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations checked in this part.
    pub ops: usize,
    /// Search steps taken.
    pub steps: u64,
    /// `Ok`: a linearization (indices into the history's operations). `Illegal`: the longest
    /// linearizable prefix found.
    pub linearization: Vec<usize>,
    /// `Illegal`: the operation that could not be placed after that prefix.
    pub failed_op: Option<usize>,
    /// `Unknown`: which budget ran out.
    pub reason: Option<String>,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Overall verdict: `Illegal` if any part is, else `Unknown` if any part is, else `Ok`.
    pub verdict: Verdict,
    /// Per part, in key order.
    pub parts: Vec<PartResult>,
    /// Operations left out because they cannot matter (failed, or reads with unknown result).
    pub dropped_ops: usize,
}

impl CheckResult {
    /// The first part with the overall verdict (the witness for `Illegal`).
    pub fn decisive_part(&self) -> Option<&PartResult> {
        self.parts.iter().find(|p| p.verdict == self.verdict)
    }

    /// Search steps over all parts.
    pub fn steps(&self) -> u64 {
        self.parts.iter().map(|p| p.steps).sum()
    }
}

/// An operation as the search sees it.
struct SearchOp<'h, M: Model> {
    index: usize,
    call: Time,
    ret: Time,
    input: &'h M::Input,
    output: Option<M::Output>,
    /// `Model::never_changes_state` for this operation.
    read_only: bool,
    /// `Model::lookahead_passes` for this operation.
    passes: bool,
    /// A blind write of unknown result, linearized just in time.
    jit: bool,
    /// Another operation of unknown result, linearized only right before an operation on
    /// the same keys that it can matter to.
    deferred: bool,
    /// An earlier-invoked operation of unknown result with the same input, which is tried
    /// first: this one only once that one is linearized.
    twin: Option<usize>,
    /// What part of the state it touches.
    touches: Touches,
    /// Its one key's number within the history when it touches one key (`Touches::Key`),
    /// so that the lookahead can pass a read only the operations on its key at the cost of
    /// comparing two numbers.
    key: Option<u32>,
}

impl<M: Model> SearchOp<'_, M> {
    /// Whether its result is unknown: it may take effect any time after its call, or never.
    fn unknown(&self) -> bool {
        self.output.is_none() && self.ret == Time::MAX
    }
}

/// Checks `history` against `model`. The history is validated first.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> Result<CheckResult, HistoryError> {
    history.validate()?;
    // What the search keeps of each operation: a failed one that did not happen and a read
    // of unknown result say nothing.
    let mut kept: Vec<(usize, Option<M::Output>, Time)> = Vec::with_capacity(history.ops.len());
    let mut dropped = 0;
    for (index, op) in history.ops.iter().enumerate() {
        let (output, ret) = match op.outcome {
            Outcome::Ok => (op.output.clone(), op.complete.unwrap_or(Time::MAX)),
            Outcome::Fail => match model.on_fail(&op.input, op.output.as_ref()) {
                Some(o) => (Some(o), op.complete.unwrap_or(Time::MAX)),
                None => {
                    dropped += 1;
                    continue;
                }
            },
            Outcome::Info => {
                if model.is_read_only(&op.input) {
                    dropped += 1;
                    continue;
                }
                (None, Time::MAX)
            }
        };
        kept.push((index, output, ret));
    }
    let groups: Vec<(Option<String>, Vec<usize>)> = if options.partition {
        split(model, history, &kept)
    } else {
        vec![(None, (0..kept.len()).collect())]
    };
    // Concealed inputs, per kept operation, owned here for the parts to borrow.
    let mut concealed: Vec<Option<M::Input>> = vec![None; kept.len()];
    if options.reduce {
        for (_, members) in &groups {
            let ops: Vec<(&M::Input, Option<&M::Output>)> = members
                .iter()
                .map(|&k| (&history.ops[kept[k].0].input, kept[k].1.as_ref()))
                .collect();
            for (&k, c) in members.iter().zip(model.conceal(&ops)) {
                concealed[k] = c;
            }
        }
    }
    let mut key_numbers: BTreeMap<String, u32> = BTreeMap::new();
    let mut parts: Vec<(Option<String>, Vec<SearchOp<'_, M>>)> = groups
        .into_iter()
        .map(|(key, members)| {
            let ops = members
                .into_iter()
                .map(|k| {
                    let (index, ref output, ret) = kept[k];
                    let op = &history.ops[index];
                    let input = concealed[k].as_ref().unwrap_or(&op.input);
                    let touches = model.touches(input);
                    let key = match &touches {
                        Touches::Key(k) => Some(match key_numbers.get(k) {
                            Some(&n) => n,
                            None => {
                                let n = key_numbers.len() as u32;
                                key_numbers.insert(k.clone(), n);
                                n
                            }
                        }),
                        _ => None,
                    };
                    SearchOp {
                        index,
                        call: op.invoke,
                        ret,
                        input,
                        output: output.clone(),
                        read_only: model.never_changes_state(input, output.as_ref()),
                        passes: model.lookahead_passes(input, output.as_ref()),
                        jit: false,
                        deferred: false,
                        twin: None,
                        touches,
                        key,
                    }
                })
                .collect();
            (key, ops)
        })
        .collect();

    for (_, ops) in parts.iter_mut() {
        dropped += drop_unobservable(model, ops);
        if options.reduce {
            mark_reductions(model, ops);
        }
    }
    let results = run_parts(model, &mut parts, options);
    let verdict = if results.iter().any(|r| r.verdict == Verdict::Illegal) {
        Verdict::Illegal
    } else if results.iter().any(|r| r.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Ok
    };
    Ok(CheckResult {
        verdict,
        parts: results,
        dropped_ops: dropped,
    })
}

/// Splits the kept operations (indexes into `kept`) into parts of keys that operations
/// connect: a single-key operation ties itself to its key, a scan or count ties every key
/// in its range together. Parts are named by their keys (`a` or `a,b,c`) and come in key
/// order; a model that cannot be split gives one part.
fn split<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    kept: &[(usize, Option<M::Output>, Time)],
) -> Vec<(Option<String>, Vec<usize>)> {
    let touches: Vec<Touches> = kept
        .iter()
        .map(|(i, _, _)| model.touches(&history.ops[*i].input))
        .collect();
    if touches.contains(&Touches::Everything) {
        return vec![(None, (0..kept.len()).collect())];
    }
    let keys: std::collections::BTreeSet<&str> = touches
        .iter()
        .filter_map(|t| match t {
            Touches::Key(k) => Some(k.as_str()),
            _ => None,
        })
        .collect();
    let index: BTreeMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    // Union-find over the keys; a range joins the consecutive keys it holds.
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let in_range = |k: &str, a: &Option<String>, b: &Option<String>| {
        a.as_deref().is_none_or(|a| k >= a) && b.as_deref().is_none_or(|b| k < b)
    };
    for t in &touches {
        if let Touches::Range(a, b) = t {
            let held: Vec<usize> = keys
                .iter()
                .filter(|k| in_range(k, a, b))
                .map(|k| index[k])
                .collect();
            for w in held.windows(2) {
                let (x, y) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
                parent[x.max(y)] = x.min(y);
            }
        }
    }
    // Group operations by the root of their key (ranges: of their first key; a range that
    // holds no key stands alone).
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut alone: Vec<usize> = Vec::new();
    for (k, t) in touches.iter().enumerate() {
        let first = match t {
            Touches::Key(key) => Some(index[key.as_str()]),
            Touches::Range(a, b) => keys.iter().find(|k| in_range(k, a, b)).map(|k| index[k]),
            Touches::Everything => None,
        };
        match first {
            Some(i) => by_root.entry(root(&mut parent, i)).or_default().push(k),
            None => alone.push(k),
        }
    }
    let names: Vec<&str> = keys.into_iter().collect();
    let mut members: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        members.entry(root(&mut parent, i)).or_default().push(name);
    }
    let mut parts: Vec<(Option<String>, Vec<usize>)> = by_root
        .into_iter()
        .map(|(r, ops)| (Some(members[&r].join(",")), ops))
        .collect();
    if !alone.is_empty() {
        parts.push((Some("(no key)".into()), alone));
    }
    parts
}

/// Marks the operations of unknown result that the search treats specially: blind writes
/// linearized just in time (when the model says that is exact for every operation of the
/// part), the others deferred to right before an operation on their keys, and for those,
/// the earlier identical operation each waits for.
fn mark_reductions<M: Model>(model: &M, ops: &mut [SearchOp<'_, M>]) {
    let jit = ops
        .iter()
        .all(|o| model.allows_jit(o.input, o.output.as_ref()));
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].call, ops[i].index));
    let mut last_unknown: Vec<usize> = Vec::new();
    for &i in &order {
        if !ops[i].unknown() {
            continue;
        }
        if jit && model.blind_write(ops[i].input) {
            ops[i].jit = true;
            continue;
        }
        ops[i].deferred = true;
        ops[i].twin = last_unknown
            .iter()
            .rev()
            .copied()
            .find(|&j| ops[j].input == ops[i].input);
        last_unknown.push(i);
    }
}

/// Leaves out the operations with unknown results that the model calls unobservable
/// ([`Model::unobservable`]), judged against the part's operations that did not complete
/// before each was invoked. Returns how many it left out.
fn drop_unobservable<M: Model>(model: &M, ops: &mut Vec<SearchOp<'_, M>>) -> usize {
    let unknown = |o: &SearchOp<'_, M>| o.output.is_none() && o.ret == Time::MAX;
    let gone: Vec<bool> = ops
        .iter()
        .map(|op| {
            unknown(op) && {
                // Returning at the same time as the call counts as overlapping, as in the
                // search.
                let mut others = ops
                    .iter()
                    .filter(|o| o.index != op.index && o.ret >= op.call)
                    .map(|o| (o.input, o.output.as_ref()));
                model.unobservable(op.input, &mut others)
            }
        })
        .collect();
    let before = ops.len();
    let mut gone = gone.into_iter();
    ops.retain(|_| !gone.next().unwrap_or(false));
    before - ops.len()
}

/// Whether two operations touch a common key.
fn overlap(a: &Touches, b: &Touches) -> bool {
    let in_range = |k: &str, s: &Option<String>, e: &Option<String>| {
        s.as_deref().is_none_or(|s| k >= s) && e.as_deref().is_none_or(|e| k < e)
    };
    match (a, b) {
        (Touches::Everything, _) | (_, Touches::Everything) => true,
        (Touches::Key(x), Touches::Key(y)) => x == y,
        (Touches::Key(k), Touches::Range(s, e)) | (Touches::Range(s, e), Touches::Key(k)) => {
            in_range(k, s, e)
        }
        (Touches::Range(s1, e1), Touches::Range(s2, e2)) => {
            // [s1, e1) and [s2, e2) meet unless one ends before the other starts.
            let before = |e: &Option<String>, s: &Option<String>| match (e, s) {
                (Some(e), Some(s)) => e <= s,
                _ => false,
            };
            !before(e1, s2) && !before(e2, s1)
        }
    }
}

/// Steps a part runs before the scheduler moves to the next part.
const SLICE_STEPS: u64 = 4096;

/// Runs the parts' searches round-robin, a slice of steps each, so that one part that
/// explodes cannot keep a quickly-illegal part from being found; the first illegal part
/// ends the check (the others are reported `unknown`, "stopped"). With one thread the
/// schedule, and so the report, is deterministic.
fn run_parts<M: Model>(
    model: &M,
    parts: &mut [(Option<String>, Vec<SearchOp<'_, M>>)],
    options: &CheckOptions,
) -> Vec<PartResult> {
    let threads = options.threads.clamp(1, parts.len().max(1));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<PartResult>>> =
        parts.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let parts = &*parts;
    let worker = |mine: Vec<usize>| {
        let mut searches: Vec<(usize, Search<'_, '_, M>)> = mine
            .into_iter()
            .map(|i| {
                (
                    i,
                    Search::new(model, parts[i].0.clone(), &parts[i].1, options),
                )
            })
            .collect();
        while !searches.is_empty() {
            let mut k = 0;
            while k < searches.len() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let (i, search) = &mut searches[k];
                match search.run(SLICE_STEPS) {
                    Some(r) => {
                        if r.verdict == Verdict::Illegal {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        *slots[*i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                        searches.swap_remove(k);
                    }
                    None => k += 1,
                }
            }
        }
    };
    if threads == 1 {
        worker((0..parts.len()).collect());
    } else {
        std::thread::scope(|scope| {
            for t in 0..threads {
                let mine: Vec<usize> = (t..parts.len()).step_by(threads).collect();
                let worker = &worker;
                scope.spawn(move || worker(mine));
            }
        });
    }
    slots
        .into_iter()
        .zip(parts)
        .map(|(slot, (key, ops))| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| PartResult {
                    key: key.clone(),
                    verdict: Verdict::Unknown,
                    ops: ops.len(),
                    steps: 0,
                    linearization: Vec::new(),
                    failed_op: None,
                    reason: Some("stopped: another part is illegal".into()),
                })
        })
        .collect()
}

mod search;
use search::Search;

#[cfg(test)]
mod tests;
