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
//! The search is one piece (about 700 lines): the event list, the memo, the prunings and the
//! lookahead all read and change the same search state, so they stay in one file. The tests
//! are in `linearizability/tests.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{History, HistoryError, Outcome, Time};
use super::model::{Model, Step};

/// Options of the search.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Split the history by key (P-compositionality) when the model allows it.
    pub partition: bool,
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
}

/// Checks `history` against `model`. The history is validated first.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> Result<CheckResult, HistoryError> {
    history.validate()?;
    let mut kept: Vec<SearchOp<'_, M>> = Vec::with_capacity(history.ops.len());
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
        let read_only = model.never_changes_state(&op.input, output.as_ref());
        let passes = model.lookahead_passes(&op.input, output.as_ref());
        kept.push(SearchOp {
            index,
            call: op.invoke,
            ret,
            input: &op.input,
            output,
            read_only,
            passes,
        });
    }

    let keys: Option<Vec<String>> = if options.partition {
        kept.iter().map(|o| model.partition_key(o.input)).collect()
    } else {
        None
    };
    let mut parts: Vec<(Option<String>, Vec<SearchOp<'_, M>>)> = match keys {
        Some(keys) => {
            let mut by_key: BTreeMap<String, Vec<SearchOp<'_, M>>> = BTreeMap::new();
            for (op, key) in kept.into_iter().zip(keys) {
                by_key.entry(key).or_default().push(op);
            }
            by_key.into_iter().map(|(k, v)| (Some(k), v)).collect()
        }
        None => vec![(None, kept)],
    };

    for (_, ops) in parts.iter_mut() {
        dropped += drop_unobservable(model, ops);
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

const NIL: usize = usize::MAX;
const NONE: u32 = u32::MAX;

/// Zobrist key of an operation: the linearized set is hashed as the XOR of its members' keys,
/// updated in O(1) as operations are linearized and undone.
fn zobrist(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Model states seen so far, each stored once and named by an id, so that memo entries and
/// the backtracking stack hold a `u32` instead of a state.
struct States<S> {
    ids: rustc_hash::FxHashMap<S, u32>,
    all: Vec<S>,
}

impl<S: Clone + Eq + std::hash::Hash> States<S> {
    fn intern(&mut self, s: S) -> u32 {
        if let Some(&id) = self.ids.get(&s) {
            return id;
        }
        let id = self.all.len() as u32;
        self.all.push(s.clone());
        self.ids.insert(s, id);
        id
    }
}

/// Lowe's memo: the (linearized set, state) pairs already explored. Entries live in flat
/// arenas (the sets as fixed-width words), chained by hash; no allocation per lookup.
struct Memo {
    heads: rustc_hash::FxHashMap<u64, u32>,
    words: usize,
    bits: Vec<u64>,
    state: Vec<u32>,
    next: Vec<u32>,
}

impl Memo {
    fn len(&self) -> usize {
        self.state.len()
    }

    /// Records (set, state) under `hash`; false if it was there already.
    fn insert(&mut self, hash: u64, set: &[u64], state: u32) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut e = head;
        while e != NONE {
            let i = e as usize;
            if self.state[i] == state && self.bits[i * self.words..(i + 1) * self.words] == *set {
                return false;
            }
            e = self.next[i];
        }
        let id = self.state.len() as u32;
        self.bits.extend_from_slice(set);
        self.state.push(state);
        self.next.push(head);
        self.heads.insert(hash, id);
        true
    }
}

/// How many remaining events the lookahead walks past at most.
const LOOKAHEAD_EVENTS: usize = 32;

fn memo_hash(set_hash: u64, state: u32) -> u64 {
    set_hash ^ (u64::from(state) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The resumable search over one part.
struct Search<'m, 'h, M: Model> {
    model: &'m M,
    options: &'m CheckOptions,
    key: Option<String>,
    ops: &'m [SearchOp<'h, M>],
    head: usize,
    next: Vec<usize>,
    prev: Vec<usize>,
    op_of: Vec<usize>,
    is_call: Vec<bool>,
    ret_node: Vec<usize>,
    zob: Vec<u64>,
    states: States<M::State>,
    state_bytes: usize,
    /// Model steps already taken: (state id, op) -> next state id, or `NONE` if illegal.
    /// The search revisits the same pair under many linearized sets.
    transitions: rustc_hash::FxHashMap<(u32, u32), u32>,
    state: u32,
    linearized: Vec<u64>,
    set_hash: u64,
    memo: Memo,
    /// (call node, state id before it, whether the operation never changes any state)
    stack: Vec<(usize, u32, bool)>,
    best: Vec<usize>,
    failed: Option<usize>,
    steps: u64,
    entry: usize,
    /// Scratch for the lookahead.
    between: Vec<usize>,
}

impl<'m, 'h, M: Model> Search<'m, 'h, M> {
    fn new(
        model: &'m M,
        key: Option<String>,
        ops: &'m [SearchOp<'h, M>],
        options: &'m CheckOptions,
    ) -> Self {
        let n = ops.len();
        // Events: calls before returns at equal times (overlapping is the permissive
        // reading), then by operation for a deterministic order.
        let mut events: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            events.push((op.ret, true, i));
        }
        events.sort_unstable();
        let len = events.len();
        let head = len;
        let mut next = vec![NIL; len + 1];
        let mut prev = vec![NIL; len + 1];
        let mut op_of = vec![0usize; len];
        let mut is_call = vec![false; len];
        let mut ret_node = vec![NIL; n];
        for (node, &(_, is_ret, op)) in events.iter().enumerate() {
            op_of[node] = op;
            is_call[node] = !is_ret;
            if is_ret {
                ret_node[op] = node;
            }
            let before = if node == 0 { head } else { node - 1 };
            next[before] = node;
            prev[node] = before;
        }
        let words = n.div_ceil(64).max(1);
        let mut states = States {
            ids: Default::default(),
            all: Vec::new(),
        };
        let init = model.init();
        let state_bytes = model.state_bytes(&init);
        let state = states.intern(init);
        let entry = next[head];
        Search {
            model,
            options,
            key,
            ops,
            head,
            next,
            prev,
            op_of,
            is_call,
            ret_node,
            zob: (0..n).map(zobrist).collect(),
            states,
            state_bytes,
            transitions: Default::default(),
            state,
            linearized: vec![0u64; words],
            set_hash: 0,
            memo: Memo {
                heads: Default::default(),
                words,
                bits: Vec::new(),
                state: Vec::new(),
                next: Vec::new(),
            },
            stack: Vec::new(),
            best: Vec::new(),
            failed: None,
            steps: 0,
            entry,
            between: Vec::new(),
        }
    }

    fn result(
        &self,
        verdict: Verdict,
        linearization: &[usize],
        failed: Option<usize>,
        reason: Option<&str>,
    ) -> PartResult {
        PartResult {
            key: self.key.clone(),
            verdict,
            ops: self.ops.len(),
            steps: self.steps,
            linearization: linearization.iter().map(|&i| self.ops[i].index).collect(),
            failed_op: failed.map(|i| self.ops[i].index),
            reason: reason.map(str::to_string),
        }
    }

    /// Approximate bytes held by the memo and the interned states.
    fn memory_bytes(&self) -> usize {
        self.memo.len() * (self.memo.words * 8 + 8 + 24)
            + self.transitions.len() * 24
            + self.state_bytes
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    /// Lookahead pruning: a read that `state`, reached by linearizing `op`, can no longer
    /// precede. Walks the remaining events in time order, collecting the operations invoked
    /// so far (those may still go before a read that returns later); at each read's return
    /// it asks [`Model::may_precede`]. The walk stops at an operation that does not pass
    /// ([`Model::lookahead_passes`]) or after [`LOOKAHEAD_EVENTS`] events (looking at fewer
    /// reads prunes less, never wrongly). A read found is certain, so no linearization is
    /// lost.
    fn lookahead_blocker(&mut self, op: usize, state: u32) -> Option<usize> {
        if !self.model.lookahead() || state == self.state {
            return None;
        }
        let s = &self.states.all[state as usize];
        let ops = self.ops;
        let between = &mut self.between;
        between.clear();
        let mut node = self.next[self.head];
        for _ in 0..LOOKAHEAD_EVENTS {
            if node == NIL {
                break;
            }
            let x = self.op_of[node];
            if x != op {
                let o = &ops[x];
                if self.is_call[node] {
                    if !o.passes {
                        break;
                    }
                    between.push(x);
                } else {
                    let mut others = between
                        .iter()
                        .map(|&b| (ops[b].input, ops[b].output.as_ref()));
                    if !self
                        .model
                        .may_precede(s, o.input, o.output.as_ref(), &mut others)
                    {
                        return Some(x);
                    }
                }
            }
            node = self.next[node];
        }
        None
    }

    /// Keeps the witness of an illegal history: the longest linearized prefix (the stack,
    /// then `then` if given) and the operation that could not follow it. A prefix as long
    /// as the one kept replaces it only if none was kept yet.
    fn note_witness(&mut self, then: Option<usize>, failed: usize) {
        let len = self.stack.len() + usize::from(then.is_some());
        if len > self.best.len() || (len == self.best.len() && self.failed.is_none()) {
            self.best = self.stack.iter().map(|&(c, _, _)| self.op_of[c]).collect();
            self.best.extend(then);
            self.failed = Some(failed);
        }
    }

    /// Runs up to `slice` more steps; `Some` once the part is decided or out of budget.
    fn run(&mut self, slice: u64) -> Option<PartResult> {
        let stop_at = self.steps + slice;
        while self.next[self.head] != NIL {
            if self.steps >= stop_at {
                return None;
            }
            self.steps += 1;
            if self.options.max_steps > 0 && self.steps > self.options.max_steps {
                return Some(self.result(
                    Verdict::Unknown,
                    &self.best,
                    self.failed,
                    Some("step budget exhausted"),
                ));
            }
            let entry = self.entry;
            if self.is_call[entry] {
                let op = self.op_of[entry];
                let ops = self.ops;
                let o = &ops[op];
                let new_state = match self.transitions.get(&(self.state, op as u32)) {
                    Some(&NONE) => None,
                    Some(&id) => Some(id),
                    None => {
                        let current = &self.states.all[self.state as usize];
                        let next = match self.model.step(current, o.input, o.output.as_ref()) {
                            Step::Illegal => None,
                            Step::Unchanged => Some(self.state),
                            Step::To(s) => {
                                let before = self.states.all.len();
                                let bytes = self.model.state_bytes(&s);
                                let id = self.states.intern(s);
                                if self.states.all.len() > before {
                                    self.state_bytes += bytes;
                                }
                                Some(id)
                            }
                        };
                        self.transitions
                            .insert((self.state, op as u32), next.unwrap_or(NONE));
                        next
                    }
                };
                if let Some(new_state) = new_state {
                    let (w, b) = (op / 64, 1u64 << (op % 64));
                    self.linearized[w] |= b;
                    let new_hash = self.set_hash ^ self.zob[op];
                    let fresh = self.memo.insert(
                        memo_hash(new_hash, new_state),
                        &self.linearized,
                        new_state,
                    );
                    let blocker = if fresh {
                        self.lookahead_blocker(op, new_state)
                    } else {
                        None
                    };
                    if let Some(read) = blocker {
                        // The witness: this prefix, then the read it cannot reach.
                        self.note_witness(Some(op), read);
                    }
                    if fresh && blocker.is_none() {
                        if self.options.max_memory_bytes > 0
                            && self.memory_bytes() > self.options.max_memory_bytes
                        {
                            return Some(self.result(
                                Verdict::Unknown,
                                &self.best,
                                self.failed,
                                Some("memory budget exhausted"),
                            ));
                        }
                        self.stack.push((entry, self.state, o.read_only));
                        self.state = new_state;
                        self.set_hash = new_hash;
                        self.unlink(entry);
                        self.unlink(self.ret_node[op]);
                        self.entry = self.next[self.head];
                        continue;
                    }
                    self.linearized[w] &= !b;
                }
                self.entry = self.next[entry];
            } else {
                // A return whose call is not linearized: nothing more can go before it.
                self.note_witness(None, self.op_of[entry]);
                // Pop to the last operation that can change state. An operation that never
                // changes any state (a read, a cas known to have failed) was legal where it
                // stood, and every op that must precede it is already linearized; any
                // linearization of the rest stays one with it moved to that spot. So once
                // its subtree is exhausted, so is every alternative at its level.
                loop {
                    let Some((call, before, read_only)) = self.stack.pop() else {
                        return Some(self.result(Verdict::Illegal, &self.best, self.failed, None));
                    };
                    let op = self.op_of[call];
                    self.linearized[op / 64] &= !(1u64 << (op % 64));
                    self.set_hash ^= self.zob[op];
                    self.state = before;
                    self.relink(self.ret_node[op]);
                    self.relink(call);
                    self.entry = self.next[call];
                    if !read_only {
                        break;
                    }
                }
            }
        }
        let order: Vec<usize> = self.stack.iter().map(|&(c, _, _)| self.op_of[c]).collect();
        Some(self.result(Verdict::Ok, &order, None, None))
    }
}

#[cfg(test)]
mod tests;
