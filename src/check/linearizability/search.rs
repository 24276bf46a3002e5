//! The resumable search over one part: Wing & Gong's walk of the call and return events with
//! Lowe's memo, the backtracking stack, the witness of an illegal part, and the two passes of
//! each level (every operation alone, then what it may follow; see [`placement`]).

use super::{CheckOptions, PartResult, SearchOp, Verdict};
use crate::check::history::Time;
use crate::check::model::{Model, Step};

mod placement;

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
/// arenas (the sets as fixed-width words), chained by the hash of the state and of the
/// set's operations of known result; no allocation per lookup.
///
/// A pair also counts as explored when an explored pair has the same state, the same
/// operations of known result and a subset of the eventless ones (of unknown result, which
/// may take effect at any time after their call or never): whatever the search can do from
/// the larger set, it can do from the smaller one, leaving the extra operations out, so
/// the larger set has no linearization the smaller one lacked.
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

    /// Records (set, state) under `hash`; false if it, or a pair that covers it (the same
    /// state and operations outside `eventless`, a subset of those in it), was there.
    fn insert(&mut self, hash: u64, set: &[u64], state: u32, eventless: &[u64]) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut e = head;
        while e != NONE {
            let i = e as usize;
            if self.state[i] == state
                && self.bits[i * self.words..(i + 1) * self.words]
                    .iter()
                    .zip(set)
                    .zip(eventless)
                    .all(|((&old, &new), &free)| old & !new == 0 && (old ^ new) & !free == 0)
            {
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
    /// Where the lookahead of `before` ended ([`Search::walked_to`]).
    walked_before: Time,
    read_only: bool,
    alt: u32,
    jit: Option<usize>,
    solo: bool,
}

/// The resumable search over one part.
pub(super) struct Search<'m, 'h, M: Model> {
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
    /// The eventless operations as a set (the words of `linearized`).
    eventless_set: Vec<u64>,
    states: States<M::State>,
    state_bytes: usize,
    /// Model steps already taken: (state id, op) -> next state id, or `NONE` if illegal.
    /// The search revisits the same pair under many linearized sets.
    transitions: rustc_hash::FxHashMap<(u32, u32), u32>,
    state: u32,
    linearized: Vec<u64>,
    /// The hash of the linearized operations outside `eventless` (see [`Memo`]).
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
    /// Where the lookahead's walk for the current state ended: the time of the first event
    /// it did not reach (0: no walk yet).
    walked_to: Time,
    /// Scratch for the lookahead: what may come between, by key.
    between: Between,
}

/// The lookahead's operations that may come between, kept by key so that a read of one key
/// looks only at what may touch it: the operations on each single key (by the key's number)
/// and those on ranges or on everything.
#[derive(Default)]
pub(super) struct Between {
    by_key: Vec<Vec<usize>>,
    /// Key numbers whose list is not empty, to clear them.
    used: Vec<u32>,
    wide: Vec<usize>,
    /// Every operation, in the order added.
    all: Vec<usize>,
}

impl Between {
    fn clear(&mut self) {
        for &k in &self.used {
            self.by_key[k as usize].clear();
        }
        self.used.clear();
        self.wide.clear();
        self.all.clear();
    }

    fn push(&mut self, op: usize, key: Option<u32>) {
        self.all.push(op);
        match key {
            Some(k) => {
                let k = k as usize;
                if k >= self.by_key.len() {
                    self.by_key.resize_with(k + 1, Vec::new);
                }
                if self.by_key[k].is_empty() {
                    self.used.push(k as u32);
                }
                self.by_key[k].push(op);
            }
            None => self.wide.push(op),
        }
    }

    /// What may touch an operation on `key` (`None`: on a range or everything: all of it).
    fn touching(&self, key: Option<u32>) -> impl Iterator<Item = usize> + '_ {
        let (first, then) = match key {
            Some(k) => (
                self.by_key.get(k as usize).map_or(&[][..], Vec::as_slice),
                &self.wide[..],
            ),
            None => (&self.all[..], &[][..]),
        };
        first.iter().chain(then).copied()
    }
}

impl<'m, 'h, M: Model> Search<'m, 'h, M> {
    pub(super) fn new(
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
        let mut eventless_set = vec![0u64; words];
        for &i in &eventless {
            eventless_set[i / 64] |= 1u64 << (i % 64);
        }
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
            eventless_set,
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
            walked_to: 0,
            between: Between::default(),
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
        let bit = 1u64 << (op % 64);
        self.linearized[op / 64] ^= bit;
        if self.eventless_set[op / 64] & bit == 0 {
            self.set_hash ^= self.zob[op];
        }
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
            &self.eventless_set,
        );
        let both = [jit.unwrap_or(op), op];
        let step = if jit.is_some() { &both[..] } else { &both[1..] };
        let walk = if fresh {
            Some(self.lookahead_blocker(step, new_state))
        } else {
            None
        };
        if let Some(Err(read)) = walk {
            // The witness: this prefix, then the read it cannot reach.
            self.note_witness(step, read);
        }
        if let Some(Ok(walked_to)) = walk {
            self.stack.push(Frame {
                call: entry,
                before: self.state,
                walked_before: self.walked_to,
                read_only: jit.is_none() && o.read_only,
                alt,
                jit,
                solo: false,
            });
            self.state = new_state;
            self.walked_to = walked_to;
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
        if !self.memo.insert(
            memo_hash(self.set_hash, after_w),
            &self.linearized,
            after_w,
            &self.eventless_set,
        ) {
            self.flip(w);
            return false;
        }
        // Nothing to leave out of the walk: the operation at the entry still waits.
        let walked_to = match self.lookahead_blocker(&[w], after_w) {
            Ok(to) => to,
            Err(read) => {
                self.note_witness(&[w], read);
                self.flip(w);
                return false;
            }
        };
        self.stack.push(Frame {
            call: self.entry,
            before: self.state,
            walked_before: self.walked_to,
            read_only: false,
            alt,
            jit: Some(w),
            solo: true,
        });
        self.state = after_w;
        self.walked_to = walked_to;
        self.entry = self.next[self.head];
        self.alt = 0;
        self.second_pass = false;
        true
    }

    /// Runs up to `slice` more steps; `Some` once the part is decided or out of budget.
    pub(super) fn run(&mut self, slice: u64) -> Option<PartResult> {
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
                    self.walked_to = f.walked_before;
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
