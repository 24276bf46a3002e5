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
use super::model::{Model, Step, Touches};

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
    let mut parts: Vec<(Option<String>, Vec<SearchOp<'_, M>>)> = groups
        .into_iter()
        .map(|(key, members)| {
            let ops = members
                .into_iter()
                .map(|k| {
                    let (index, ref output, ret) = kept[k];
                    let op = &history.ops[index];
                    let input = concealed[k].as_ref().unwrap_or(&op.input);
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
                        touches: model.touches(input),
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
const LOOKAHEAD_EVENTS: usize = 128;

fn memo_hash(set_hash: u64, state: u32) -> u64 {
    set_hash ^ (u64::from(state) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// One step of the search's stack: the call node of the operation at the place, the state
/// before the step, whether the step can never change a state, which alternative at its
/// place it was (0: the operation alone; `k > 0`: the `k`-th blind write the operation
/// needed, linearized just before it), that write, and whether the step is the write alone
/// (the operation, a scan or count that needs writes to several keys, still waits).
#[derive(Clone, Copy)]
struct Frame {
    call: usize,
    before: u32,
    read_only: bool,
    alt: u32,
    jit: Option<usize>,
    solo: bool,
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
    /// The operations of unknown result linearized just in time or deferred, by call time:
    /// they have no events.
    eventless: Vec<usize>,
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
    stack: Vec<Frame>,
    best: Vec<usize>,
    failed: Option<usize>,
    steps: u64,
    entry: usize,
    /// The next alternative to try at `entry` (see [`Frame::alt`]).
    alt: u32,
    /// Whether the level is in its second pass: the first tries every operation alone, the
    /// second what each may follow (writes of unknown result placed just before it).
    second_pass: bool,
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
        // reading), then by operation for a deterministic order. Blind writes linearized
        // just in time have none.
        let mut events: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * n);
        let mut eventless = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.jit || op.deferred {
                eventless.push(i);
                continue;
            }
            events.push((op.call, false, i));
            events.push((op.ret, true, i));
        }
        eventless.sort_by_key(|&i| (ops[i].call, i));
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
            eventless,
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
            alt: 0,
            second_pass: false,
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

    fn is_linearized(&self, op: usize) -> bool {
        self.linearized[op / 64] & (1u64 << (op % 64)) != 0
    }

    fn flip(&mut self, op: usize) {
        self.linearized[op / 64] ^= 1u64 << (op % 64);
        self.set_hash ^= self.zob[op];
    }

    /// The state after `op` from state `from` (`None`: illegal), memoised.
    fn transition(&mut self, from: u32, op: usize) -> Option<u32> {
        if let Some(&id) = self.transitions.get(&(from, op as u32)) {
            return (id != NONE).then_some(id);
        }
        let o = &self.ops[op];
        let current = &self.states.all[from as usize];
        let next = match self.model.step(current, o.input, o.output.as_ref()) {
            Step::Illegal => None,
            Step::Unchanged => Some(from),
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
            .insert((from, op as u32), next.unwrap_or(NONE));
        next
    }

    /// What may be linearized right before `op`, in the order tried: operations of unknown
    /// result not yet linearized that were invoked before the first pending return (nothing
    /// that must precede them is left), that change the state, one per distinct input
    /// (identical ones are interchangeable):
    /// - when `op` needs it (`illegal` here, or of unknown result and doing nothing here),
    ///   blind writes the model says may enable `op`, or a deferred operation that may go
    ///   before `op`: after the write `op` is legal (or, of unknown result, changes the
    ///   state), or, when illegal, may still wait for more (a scan of several keys, or the
    ///   deferred operation the write enables);
    /// - when `illegal`, or when `op` may change the state in a way that depends on it (not
    ///   a blind write, which would hide them), deferred operations on `op`'s keys (their
    ///   identical earlier twin linearized first), alone: `op` waits.
    ///
    /// Returns (operation, state after it, state after `op` if `op` then follows).
    fn candidates(
        &mut self,
        op: usize,
        illegal: bool,
        needs: bool,
    ) -> Vec<(usize, u32, Option<u32>)> {
        if self.eventless.is_empty() {
            return Vec::new();
        }
        let mut node = self.next[self.head];
        while node != NIL && self.is_call[node] {
            node = self.next[node];
        }
        let bound = if node == NIL {
            Time::MAX
        } else {
            self.ops[self.op_of[node]].ret
        };
        let ops = self.ops;
        let x = &ops[op];
        // Deferred operations that may go before `op`: a blind write that enables one of
        // them, which then enables `op`, is wanted too (a chain).
        let waiting: Vec<usize> = self
            .eventless
            .iter()
            .copied()
            .take_while(|&d| ops[d].call <= bound)
            .filter(|&d| {
                ops[d].deferred && !self.is_linearized(d) && overlap(&ops[d].touches, &x.touches)
            })
            .collect();
        let mut jit: Vec<(usize, u32, Option<u32>)> = Vec::new();
        let mut deferred: Vec<(usize, u32, Option<u32>)> = Vec::new();
        let mut tried: Vec<usize> = Vec::new();
        let now_id = self.state;
        for k in 0..self.eventless.len() {
            let w = self.eventless[k];
            let o = &ops[w];
            if o.call > bound {
                break;
            }
            let now = &self.states.all[now_id as usize];
            // Whether `o` may enable `op`, or a deferred operation waiting for `op`'s place.
            let enables = || {
                self.model
                    .may_enable(now, o.input, x.input, x.output.as_ref())
                    || waiting
                        .iter()
                        .any(|&d| d != w && self.model.may_enable(now, o.input, ops[d].input, None))
            };
            let wanted = if o.jit {
                needs && enables()
            } else {
                overlap(&o.touches, &x.touches)
                    && o.twin.is_none_or(|t| self.is_linearized(t))
                    && if illegal {
                        enables()
                    } else {
                        !(x.read_only || self.model.blind_write(x.input))
                    }
            };
            if !wanted || self.is_linearized(w) || tried.iter().any(|&t| ops[t].input == o.input) {
                continue;
            }
            tried.push(w);
            let Some(after_w) = self.transition(self.state, w) else {
                continue;
            };
            if after_w == self.state {
                continue;
            }
            if !o.jit {
                deferred.push((w, after_w, None));
                continue;
            }
            match self.transition(after_w, op) {
                None if illegal => jit.push((w, after_w, None)),
                None => {}
                Some(after_op) if x.unknown() && after_op == after_w => {}
                Some(after_op) => jit.push((w, after_w, Some(after_op))),
            }
        }
        if jit.len() > 1 {
            // Try first the writes that what comes next confirms: where several would do (a
            // count that needs some key to appear), the right choice saves the search from
            // backtracking through the others.
            let now = &self.states.all[now_id as usize];
            jit.sort_by_cached_key(|&(w, _, _)| self.confirmation(now, w));
        }
        jit.extend(deferred);
        jit
    }

    /// How soon what comes next confirms the blind write `w` in state `now`: the position of
    /// the first operation on its keys, if that operation could see what `w` leaves (a read
    /// of its value); a read that sees something else, or a write that hides it, rank last.
    fn confirmation(&self, now: &M::State, w: usize) -> usize {
        let ops = self.ops;
        let o = &ops[w];
        let mut node = self.next[self.head];
        for position in 0..2 * LOOKAHEAD_EVENTS {
            if node == NIL {
                break;
            }
            if self.is_call[node] {
                let x = &ops[self.op_of[node]];
                if overlap(&o.touches, &x.touches) && self.model.names_values(x.input) {
                    let sees = self
                        .model
                        .may_enable(now, o.input, x.input, x.output.as_ref());
                    return if sees && x.read_only {
                        position
                    } else {
                        usize::MAX
                    };
                }
            }
            node = self.next[node];
        }
        usize::MAX / 2
    }

    /// Lookahead pruning: a read that `state`, reached by linearizing `op` (`NIL`: by
    /// linearizing an operation that has no events), can no longer precede. Walks the remaining events in time order, collecting the operations invoked
    /// so far (those may still go before a read that returns later, and so may the blind
    /// writes of unknown result invoked by then); at each read's return it asks
    /// [`Model::may_precede`]. The walk stops at an operation that does not pass
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
        let mut jit = self.eventless.iter().copied().peekable();
        let linearized = &self.linearized;
        let mut node = self.next[self.head];
        for _ in 0..LOOKAHEAD_EVENTS {
            if node == NIL {
                break;
            }
            let x = self.op_of[node];
            let at = if self.is_call[node] {
                ops[x].call
            } else {
                ops[x].ret
            };
            let mut stop = false;
            while let Some(w) = jit.next_if(|&w| ops[w].call <= at) {
                if linearized[w / 64] & (1u64 << (w % 64)) != 0 {
                    continue;
                }
                if !ops[w].passes {
                    stop = true;
                    break;
                }
                between.push(w);
            }
            if stop {
                break;
            }
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

    /// The operations of the stack in order, a just-in-time write before the operation
    /// that needed it.
    fn stacked(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.stack.len() * 2);
        for f in &self.stack {
            out.extend(f.jit);
            if !f.solo {
                out.push(self.op_of[f.call]);
            }
        }
        out
    }

    /// Keeps the witness of an illegal history: the longest linearized prefix (the stack,
    /// then `then` if given) and the operation that could not follow it. A prefix as long
    /// as the one kept replaces it only if none was kept yet.
    fn note_witness(&mut self, then: &[usize], failed: usize) {
        let len = self
            .stack
            .iter()
            .map(|f| usize::from(f.jit.is_some()) + usize::from(!f.solo))
            .sum::<usize>()
            + then.len();
        if len > self.best.len() || (len == self.best.len() && self.failed.is_none()) {
            self.best = self.stacked();
            self.best.extend_from_slice(then);
            self.failed = Some(failed);
        }
    }

    /// Tries alternative `alt` of the operation at the current entry: 0 the operation alone,
    /// `k > 0` the `k`-th just-in-time write, then the operation. `None` when there is no
    /// such alternative; `Some(true)` when it was linearized (pushed), `Some(false)` when it
    /// was tried and not taken.
    fn try_alternative(&mut self, alt: u32) -> Option<bool> {
        let entry = self.entry;
        let op = self.op_of[entry];
        let ops = self.ops;
        let o = &ops[op];
        let (jit, new_state) = if alt == 0 {
            if o.jit {
                return None;
            }
            match self.transition(self.state, op) {
                Some(s) => (None, Some(s)),
                None => return Some(false),
            }
        } else {
            // An operation that is illegal here, or one of unknown result that would do
            // nothing here, asks for a blind write; one that is illegal or may change the
            // state, for a deferred operation on its keys.
            let plain = self.transition(self.state, op);
            let illegal = plain.is_none();
            let needs = illegal || (o.unknown() && plain == Some(self.state));
            if alt == 1 && !needs && o.read_only {
                return None;
            }
            let cands = self.candidates(op, illegal, needs);
            let (w, after_w, after_op) = *cands.get(alt as usize - 1)?;
            if after_op.is_none() {
                return Some(self.push_solo(w, after_w, alt));
            }
            (Some(w), after_op)
        };
        let new_state = new_state.expect("a legal step");
        if let Some(w) = jit {
            self.flip(w);
        }
        self.flip(op);
        let fresh = self.memo.insert(
            memo_hash(self.set_hash, new_state),
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
            let then: Vec<usize> = jit.into_iter().chain([op]).collect();
            self.note_witness(&then, read);
        }
        if fresh && blocker.is_none() {
            self.stack.push(Frame {
                call: entry,
                before: self.state,
                read_only: jit.is_none() && o.read_only,
                alt,
                jit,
                solo: false,
            });
            self.state = new_state;
            self.unlink(entry);
            self.unlink(self.ret_node[op]);
            self.entry = self.next[self.head];
            self.alt = 0;
            self.second_pass = false;
            return Some(true);
        }
        self.flip(op);
        if let Some(w) = jit {
            self.flip(w);
        }
        Some(false)
    }

    /// Linearizes the blind write `w` alone before the operation at the current entry, which
    /// stays there to be tried again (it needs more than one write); `false` if the search
    /// was here before.
    fn push_solo(&mut self, w: usize, after_w: u32, alt: u32) -> bool {
        self.flip(w);
        if !self
            .memo
            .insert(memo_hash(self.set_hash, after_w), &self.linearized, after_w)
        {
            self.flip(w);
            return false;
        }
        // Nothing to leave out of the walk: the operation at the entry still waits.
        if let Some(read) = self.lookahead_blocker(NIL, after_w) {
            self.note_witness(&[w], read);
            self.flip(w);
            return false;
        }
        self.stack.push(Frame {
            call: self.entry,
            before: self.state,
            read_only: false,
            alt,
            jit: Some(w),
            solo: true,
        });
        self.state = after_w;
        self.entry = self.next[self.head];
        self.alt = 0;
        self.second_pass = false;
        true
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
                // An operation of unknown result waits for its identical earlier twin; the
                // first pass tries each operation alone, the second what it may follow.
                let waits = self.ops[op].twin.is_some_and(|t| !self.is_linearized(t));
                let tried = if waits || (self.second_pass && self.alt == 0) {
                    None
                } else {
                    self.try_alternative(self.alt)
                };
                match tried {
                    Some(true) => {
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
                    }
                    Some(false) if self.second_pass => self.alt += 1,
                    Some(false) | None => {
                        self.entry = self.next[entry];
                        self.alt = u32::from(self.second_pass);
                    }
                }
            } else if !self.second_pass && !self.eventless.is_empty() {
                // The first pass met a return: now try, at this level, what each operation
                // may follow (writes of unknown result), the costlier choices.
                self.second_pass = true;
                self.entry = self.next[self.head];
                self.alt = 1;
            } else {
                // A return whose call is not linearized: nothing more can go before it.
                self.note_witness(&[], self.op_of[entry]);
                // Pop to the last operation that can change state. An operation that never
                // changes any state (a read, a cas known to have failed) was legal where it
                // stood, and every op that must precede it is already linearized; any
                // linearization of the rest stays one with it moved to that spot. So once
                // its subtree is exhausted, so is every alternative at its level, in both
                // passes.
                loop {
                    let Some(f) = self.stack.pop() else {
                        return Some(self.result(Verdict::Illegal, &self.best, self.failed, None));
                    };
                    let op = self.op_of[f.call];
                    if let Some(w) = f.jit {
                        self.flip(w);
                    }
                    self.state = f.before;
                    if !f.solo {
                        self.flip(op);
                        self.relink(self.ret_node[op]);
                        self.relink(f.call);
                    }
                    self.second_pass = f.alt > 0;
                    if f.alt > 0 {
                        self.entry = f.call;
                        self.alt = f.alt + 1;
                    } else {
                        self.entry = self.next[f.call];
                        self.alt = 0;
                    }
                    if !f.read_only {
                        break;
                    }
                }
            }
        }
        let order = self.stacked();
        Some(self.result(Verdict::Ok, &order, None, None))
    }
}

#[cfg(test)]
mod tests;
