//! Sequential specifications: tiny `init` / `step` state machines.
//!
//! `step(state, input, output)` returns the next state if the operation with that output is
//! legal in `state`, `None` otherwise. An `output` of `None` means the operation's result is
//! unknown (an `info` operation that took effect): the model applies its effect and accepts.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The result of one step of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<S> {
    /// The operation cannot happen in this state with this output.
    Illegal,
    /// Legal, and the state stays as it was (reads; saves a copy).
    Unchanged,
    /// Legal, and this is the new state.
    To(S),
}

impl<S: Clone> Step<S> {
    /// The state after the step, or `None` if illegal.
    pub fn apply(self, state: &S) -> Option<S> {
        match self {
            Step::Illegal => None,
            Step::Unchanged => Some(state.clone()),
            Step::To(s) => Some(s),
        }
    }
}

/// A sequential specification.
pub trait Model: Send + Sync {
    /// Model state; hashed and compared by the memoising search.
    type State: Clone + Eq + Hash + Debug + Send;
    /// Operation input.
    type Input: Clone + Debug + Send + Sync;
    /// Operation output.
    type Output: Clone + Debug + PartialEq + Send + Sync;

    /// Name for reports.
    fn name(&self) -> &'static str;

    /// The initial state.
    fn init(&self) -> Self::State;

    /// What the operation does in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Step<Self::State>;

    /// What a `fail` outcome means: `None` drops the operation (it did not happen); `Some`
    /// turns it into an operation that happened with that output.
    fn on_fail(
        &self,
        _input: &Self::Input,
        _output: Option<&Self::Output>,
    ) -> Option<Self::Output> {
        None
    }

    /// The key an operation touches, for P-compositionality; `None` if the model cannot be
    /// split.
    fn partition_key(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// Whether an operation with an unknown result may be removed altogether because it can
    /// neither change the state nor constrain it (a read).
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Whether an operation with an unknown result (`info`) may be left out because no other
    /// operation can tell whether it took effect. `others` are the operations that did not
    /// complete before it was invoked (input, output; `None`: unknown).
    ///
    /// A model answers `true` only where removing the operation from any linearization
    /// leaves a linearization: then leaving it out changes no verdict (the other way holds
    /// for every info operation: it may never take effect). Many writes that timed out are
    /// what makes a search explode; the default keeps everything.
    fn unobservable<'a>(
        &self,
        _input: &Self::Input,
        _others: &mut dyn Iterator<Item = (&'a Self::Input, Option<&'a Self::Output>)>,
    ) -> bool {
        false
    }

    /// Whether the operation, with this output, leaves every state unchanged wherever it is
    /// legal (a read; a cas known to have failed). The search uses it to prune: such an
    /// operation, legal where it stands, may always be linearized right there.
    fn never_changes_state(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        output.is_some() && self.is_read_only(input)
    }

    /// Whether the model offers lookahead pruning ([`Model::lookahead_passes`] and
    /// [`Model::may_precede`]). The search skips the lookahead when it does not.
    fn lookahead(&self) -> bool {
        false
    }

    /// Lookahead: whether [`Model::may_precede`] still decides for reads that return after
    /// this operation was invoked. `false` ends the walk there (for the key-value model: a
    /// put, delete or cas may reset a value, so later reads say nothing of the state now).
    fn lookahead_passes(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// Lookahead: whether `state` can still come before the operation when exactly the
    /// operations in `between` (not linearized yet, invoked before it returned) may be
    /// linearized in between, in any order, any of them or none. `false` must be certain:
    /// the search then abandons every linearization that continues from `state`.
    fn may_precede<'a>(
        &self,
        _state: &Self::State,
        _input: &Self::Input,
        _output: Option<&Self::Output>,
        _between: &mut dyn Iterator<Item = (&'a Self::Input, Option<&'a Self::Output>)>,
    ) -> bool {
        true
    }

    /// Approximate heap and inline bytes of a state, for the checker's memory budget.
    fn state_bytes(&self, _state: &Self::State) -> usize {
        std::mem::size_of::<Self::State>()
    }

    /// One line describing an operation, for reports and the visualization.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(o) => format!("{input:?} -> {o:?}"),
            None => format!("{input:?} -> ?"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Registers
// ---------------------------------------------------------------------------------------

/// Input of the register models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum RegInput {
    /// Read the value.
    Read,
    /// Write a value.
    Write {
        /// The value.
        value: i64,
    },
    /// Compare-and-set.
    Cas {
        /// Expected value.
        from: i64,
        /// New value.
        to: i64,
    },
}

/// Output of the register models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum RegOutput {
    /// A read's value (`None`: never written).
    Read {
        /// The value read.
        value: Option<i64>,
    },
    /// A write was acknowledged.
    Write,
    /// A cas result: whether it swapped.
    Cas {
        /// Swapped or not.
        ok: bool,
    },
}

/// How a register model treats failed compare-and-sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CasFailure {
    /// Plain read/write register: no cas.
    NoCas,
    /// Porcupine's etcd model: a failed cas happened and is evidence that the value differed.
    Evidence,
    /// Knossos's cas-register: failed operations are dropped.
    Dropped,
}

/// A single register, starting absent (never written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterModel {
    /// Failure semantics of cas.
    pub cas: CasFailure,
}

impl RegisterModel {
    /// Read/write register.
    pub const REGISTER: RegisterModel = RegisterModel {
        cas: CasFailure::NoCas,
    };
    /// Porcupine's etcd model.
    pub const ETCD: RegisterModel = RegisterModel {
        cas: CasFailure::Evidence,
    };
    /// Knossos's cas-register.
    pub const KNOSSOS_CAS: RegisterModel = RegisterModel {
        cas: CasFailure::Dropped,
    };
}

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegInput;
    type Output = RegOutput;

    fn name(&self) -> &'static str {
        match self.cas {
            CasFailure::NoCas => "register",
            CasFailure::Evidence => "etcd",
            CasFailure::Dropped => "cas-register",
        }
    }

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(&self, s: &Option<i64>, i: &RegInput, o: Option<&RegOutput>) -> Step<Option<i64>> {
        let legal = |ok: bool| if ok { Step::Unchanged } else { Step::Illegal };
        match (i, o) {
            (RegInput::Read, None) => Step::Unchanged,
            (RegInput::Read, Some(RegOutput::Read { value })) => legal(value == s),
            (RegInput::Write { value }, None | Some(RegOutput::Write)) => Step::To(Some(*value)),
            (RegInput::Cas { .. }, _) if self.cas == CasFailure::NoCas => Step::Illegal,
            (RegInput::Cas { from, to }, None) => {
                if *s == Some(*from) {
                    Step::To(Some(*to))
                } else {
                    Step::Unchanged
                }
            }
            (RegInput::Cas { from, to }, Some(RegOutput::Cas { ok: true })) => {
                if *s == Some(*from) {
                    Step::To(Some(*to))
                } else {
                    Step::Illegal
                }
            }
            (RegInput::Cas { from, .. }, Some(RegOutput::Cas { ok: false })) => {
                legal(*s != Some(*from))
            }
            _ => Step::Illegal,
        }
    }

    fn on_fail(&self, i: &RegInput, _o: Option<&RegOutput>) -> Option<RegOutput> {
        match (self.cas, i) {
            (CasFailure::Evidence, RegInput::Cas { .. }) => Some(RegOutput::Cas { ok: false }),
            _ => None,
        }
    }

    fn is_read_only(&self, i: &RegInput) -> bool {
        matches!(i, RegInput::Read)
    }

    fn never_changes_state(&self, i: &RegInput, o: Option<&RegOutput>) -> bool {
        matches!(
            (i, o),
            (RegInput::Read, Some(_)) | (RegInput::Cas { .. }, Some(RegOutput::Cas { ok: false }))
        )
    }

    fn lookahead(&self) -> bool {
        true
    }

    /// A read's value is whatever the last write before it left, so reads after any
    /// operation still decide.
    fn lookahead_passes(&self, _input: &RegInput, _output: Option<&RegOutput>) -> bool {
        true
    }

    /// A read of `v` can follow `state` only if `state` is `v` or something still to be
    /// linearized before it may write `v` (a write of `v`, or a cas to `v` that succeeded
    /// or whose result is unknown). Nothing makes the register absent again.
    fn may_precede<'a>(
        &self,
        state: &Option<i64>,
        input: &RegInput,
        output: Option<&RegOutput>,
        between: &mut dyn Iterator<Item = (&'a RegInput, Option<&'a RegOutput>)>,
    ) -> bool {
        let (RegInput::Read, Some(RegOutput::Read { value })) = (input, output) else {
            return true;
        };
        let Some(v) = *value else {
            return state.is_none();
        };
        if *state == Some(v) {
            return true;
        }
        let mut between = between;
        Iterator::any(&mut between, |(i, o): (&RegInput, Option<&RegOutput>)| {
            matches!(
                (i, o),
                (RegInput::Write { value }, _) if *value == v
            ) || matches!(
                (i, o),
                (RegInput::Cas { to, .. }, None | Some(RegOutput::Cas { ok: true })) if *to == v
            )
        })
    }

    fn describe(&self, i: &RegInput, o: Option<&RegOutput>) -> String {
        let show = |v: &Option<i64>| v.map_or("nil".to_string(), |v| v.to_string());
        match (i, o) {
            (RegInput::Read, Some(RegOutput::Read { value })) => format!("read -> {}", show(value)),
            (RegInput::Read, _) => "read -> ?".into(),
            (RegInput::Write { value }, Some(_)) => format!("write {value}"),
            (RegInput::Write { value }, None) => format!("write {value} ?"),
            (RegInput::Cas { from, to }, Some(RegOutput::Cas { ok })) => {
                format!("cas {from}->{to} {}", if *ok { "ok" } else { "fail" })
            }
            (RegInput::Cas { from, to }, _) => format!("cas {from}->{to} ?"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Key-value map
// ---------------------------------------------------------------------------------------

/// Input of the key-value model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum KvInput {
    /// Read a key.
    Get {
        /// Key.
        key: String,
    },
    /// Overwrite a key.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Append to a key's value.
    Append {
        /// Key.
        key: String,
        /// Suffix.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// Key.
        key: String,
    },
    /// Compare-and-set a key (`from: None`: the key must be absent).
    Cas {
        /// Key.
        key: String,
        /// Expected value.
        from: Option<String>,
        /// New value.
        to: String,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Append { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// Output of the key-value model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum KvOutput {
    /// A get's value (`None`: absent).
    Get {
        /// The value.
        value: Option<String>,
    },
    /// A write (put, append, delete) was acknowledged.
    Ok,
    /// A cas result.
    Cas {
        /// Swapped or not.
        ok: bool,
    },
}

/// A string value built by puts and appends, kept as a persistent rope: an append adds one
/// node that shares everything before it, so the search's many orderings of concurrent
/// appends cost a node each, not a copy of the whole value. Hash and length are kept
/// incrementally; equality is exact (content, compared from the end).
#[derive(Debug)]
pub struct Rope {
    prev: Option<Arc<Rope>>,
    piece: Arc<str>,
    len: usize,
    hash: u64,
}

const ROPE_BASE: u64 = 0x100_0000_01B3;

fn rope_hash(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = h.wrapping_mul(ROPE_BASE).wrapping_add(u64::from(b) + 1);
    }
    h
}

impl Rope {
    fn leaf(s: &str) -> Arc<Rope> {
        Arc::new(Rope {
            prev: None,
            piece: Arc::from(s),
            len: s.len(),
            hash: rope_hash(0, s.as_bytes()),
        })
    }

    fn append(this: &Arc<Rope>, s: &str) -> Arc<Rope> {
        Arc::new(Rope {
            prev: Some(this.clone()),
            piece: Arc::from(s),
            len: this.len + s.len(),
            hash: rope_hash(this.hash, s.as_bytes()),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the value equals `s`, comparing pieces from the end (where two orderings of
    /// the same appends first differ).
    pub fn eq_str(&self, s: &str) -> bool {
        if self.len != s.len() {
            return false;
        }
        let bytes = s.as_bytes();
        let mut end = bytes.len();
        let mut node = Some(self);
        while let Some(n) = node {
            let start = end - n.piece.len();
            if bytes[start..end] != *n.piece.as_bytes() {
                return false;
            }
            end = start;
            node = n.prev.as_deref();
        }
        true
    }

    /// Whether the value is a prefix of `s` (or equal to it), comparing pieces from the end.
    pub fn is_prefix_of(&self, s: &str) -> bool {
        self.len <= s.len() && s.is_char_boundary(self.len) && self.eq_str(&s[..self.len])
    }

    /// The value as one string.
    pub fn to_string_value(&self) -> String {
        let mut pieces = Vec::new();
        let mut node = Some(self);
        while let Some(n) = node {
            pieces.push(&*n.piece);
            node = n.prev.as_deref();
        }
        pieces.iter().rev().copied().collect()
    }
}

impl PartialEq for Rope {
    fn eq(&self, other: &Rope) -> bool {
        self.len == other.len
            && self.hash == other.hash
            && (std::ptr::eq(self, other) || self.eq_str(&other.to_string_value()))
    }
}

impl Eq for Rope {}

impl Hash for Rope {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.len.hash(h);
        self.hash.hash(h);
    }
}

/// The state of [`KvModel`]: pairs sorted by key, values as [`Rope`]s. Copying a state for the
/// search costs one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KvState(Vec<(Arc<str>, Arc<Rope>)>);

impl KvState {
    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&Rope> {
        self.find(key).ok().map(|i| &*self.0[i].1)
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    fn set(&mut self, key: &str, value: Arc<Rope>) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (Arc::from(key), value)),
        }
    }

    fn append(&mut self, key: &str, suffix: &str) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = Rope::append(&self.0[i].1, suffix),
            Err(i) => self.0.insert(i, (Arc::from(key), Rope::leaf(suffix))),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Ok(i) = self.find(key) {
            self.0.remove(i);
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A map from string keys to string values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvModel {
    /// Porcupine's convention: an absent key reads as `""`.
    pub absent_reads_empty: bool,
    /// A `fail` cas is evidence that the value differed (etcd's convention); otherwise a
    /// `fail` cas did not happen and is dropped (odgm-sim's recording: a cas that found a
    /// different value is an `ok` with `ok: false`).
    pub failed_cas_is_evidence: bool,
}

impl KvModel {
    /// Whether two values are the same value (an absent key and `""` are the same when
    /// absent keys read as empty).
    fn same(&self, a: Option<&str>, b: Option<&str>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            (Some(v), None) | (None, Some(v)) => self.absent_reads_empty && v.is_empty(),
        }
    }

    fn matches(&self, actual: Option<&Rope>, seen: Option<&str>) -> bool {
        match (actual, seen) {
            (Some(a), Some(s)) => a.eq_str(s),
            (None, None) => true,
            (Some(a), None) => self.absent_reads_empty && a.is_empty(),
            (None, Some(s)) => self.absent_reads_empty && s.is_empty(),
        }
    }
}

impl Model for KvModel {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> Self::State {
        KvState::default()
    }

    fn step(&self, s: &Self::State, i: &KvInput, o: Option<&KvOutput>) -> Step<Self::State> {
        let with = |f: &dyn Fn(&mut Self::State)| {
            let mut n = s.clone();
            f(&mut n);
            Step::To(n)
        };
        match (i, o) {
            (KvInput::Get { .. }, None) => Step::Unchanged,
            (KvInput::Get { key }, Some(KvOutput::Get { value })) => {
                if self.matches(s.get(key), value.as_deref()) {
                    Step::Unchanged
                } else {
                    Step::Illegal
                }
            }
            (KvInput::Put { key, value }, None | Some(KvOutput::Ok)) => {
                with(&|n| n.set(key, Rope::leaf(value)))
            }
            (KvInput::Append { key, value }, None | Some(KvOutput::Ok)) => {
                with(&|n| n.append(key, value))
            }
            (KvInput::Delete { key }, None | Some(KvOutput::Ok)) => with(&|n| n.remove(key)),
            (KvInput::Cas { key, from, to }, out) => {
                let hit = self.matches(s.get(key), from.as_deref());
                let apply = || with(&|n| n.set(key, Rope::leaf(to)));
                match out {
                    None if hit => apply(),
                    None => Step::Unchanged,
                    Some(KvOutput::Cas { ok: true }) if hit => apply(),
                    Some(KvOutput::Cas { ok: false }) if !hit => Step::Unchanged,
                    Some(_) => Step::Illegal,
                }
            }
            _ => Step::Illegal,
        }
    }

    fn lookahead(&self) -> bool {
        true
    }

    /// Appends, reads, and cas known to have failed: they never reset a value.
    fn lookahead_passes(&self, input: &KvInput, output: Option<&KvOutput>) -> bool {
        matches!(
            (input, output),
            (KvInput::Append { .. } | KvInput::Get { .. }, _)
                | (KvInput::Cas { .. }, Some(KvOutput::Cas { ok: false }))
        )
    }

    /// A read that returned `v` can follow `state` through appends only if the key's value
    /// in `state` is a prefix of `v` (appends never shorten a value or change what it
    /// starts with), or absent when `v` is absent. (The walk stops before anything else,
    /// so `between` holds appends and reads only.)
    fn may_precede<'a>(
        &self,
        state: &KvState,
        input: &KvInput,
        output: Option<&KvOutput>,
        _between: &mut dyn Iterator<Item = (&'a KvInput, Option<&'a KvOutput>)>,
    ) -> bool {
        let (KvInput::Get { key }, Some(KvOutput::Get { value: seen })) = (input, output) else {
            return true;
        };
        match (state.get(key), seen.as_deref()) {
            (None, _) => true,
            (Some(a), Some(s)) => a.is_prefix_of(s),
            (Some(a), None) => self.absent_reads_empty && a.is_empty(),
        }
    }

    fn on_fail(&self, i: &KvInput, _o: Option<&KvOutput>) -> Option<KvOutput> {
        match i {
            KvInput::Cas { .. } if self.failed_cas_is_evidence => Some(KvOutput::Cas { ok: false }),
            _ => None,
        }
    }

    /// A put or delete with an unknown result is unobservable when no later-or-concurrent
    /// operation on its key could see the value it leaves: no read returned that value, no
    /// cas (successful or of unknown result) expected it, and no failed cas or append
    /// touches the key (they depend on the value under them, whatever it is).
    ///
    /// Removing such a write from a linearization leaves one: between it and the next write
    /// stand only reads of other values (impossible there, so none), successful cas of
    /// other values (likewise none), and cas of unknown result that did nothing there; those
    /// move to the very end, where they may do anything. After the next write the states
    /// are the same as before.
    fn unobservable<'a>(
        &self,
        input: &KvInput,
        others: &mut dyn Iterator<Item = (&'a KvInput, Option<&'a KvOutput>)>,
    ) -> bool {
        let (key, leaves) = match input {
            KvInput::Put { key, value } => (key, Some(value.as_str())),
            KvInput::Delete { key } => (key, None),
            _ => return false,
        };
        others
            .filter(|(i, _)| i.key() == key)
            .all(|(i, o)| match (i, o) {
                (KvInput::Get { .. }, Some(KvOutput::Get { value })) => {
                    !self.same(value.as_deref(), leaves)
                }
                (KvInput::Get { .. }, _)
                | (KvInput::Put { .. }, _)
                | (KvInput::Delete { .. }, _) => true,
                // A cas that expected another value did nothing where the write left its value;
                // one whose result is unknown can move to the very end instead, where it may
                // do anything.
                (KvInput::Cas { from, .. }, Some(KvOutput::Cas { ok: true }) | None) => {
                    !self.same(from.as_deref(), leaves)
                }
                _ => false,
            })
    }

    fn partition_key(&self, i: &KvInput) -> Option<String> {
        Some(i.key().to_string())
    }

    fn is_read_only(&self, i: &KvInput) -> bool {
        matches!(i, KvInput::Get { .. })
    }

    fn state_bytes(&self, s: &Self::State) -> usize {
        // A new state adds at most one rope node to what earlier states share.
        s.0.len() * 16 + 96 + 24
    }

    fn never_changes_state(&self, i: &KvInput, o: Option<&KvOutput>) -> bool {
        matches!(
            (i, o),
            (KvInput::Get { .. }, Some(_))
                | (KvInput::Cas { .. }, Some(KvOutput::Cas { ok: false }))
        )
    }

    fn describe(&self, i: &KvInput, o: Option<&KvOutput>) -> String {
        let out = match o {
            None => "?".to_string(),
            Some(KvOutput::Ok) => "ok".into(),
            Some(KvOutput::Get { value }) => format!("{value:?}"),
            Some(KvOutput::Cas { ok }) => if *ok { "ok" } else { "fail" }.into(),
        };
        match i {
            KvInput::Get { key } => format!("get {key} -> {out}"),
            KvInput::Put { key, value } => format!("put {key}={value:?} {out}"),
            KvInput::Append { key, value } => format!("append {key}+={value:?} {out}"),
            KvInput::Delete { key } => format!("delete {key} {out}"),
            KvInput::Cas { key, from, to } => format!("cas {key} {from:?}->{to:?} {out}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookahead_reads_must_extend_the_state() {
        let m = KvModel::default();
        let mut s = KvState::default();
        let get = KvInput::Get { key: "k".into() };
        let ok = |s: &KvState, i: &KvInput, v: Option<&str>| {
            let out = KvOutput::Get {
                value: v.map(str::to_string),
            };
            m.may_precede(s, i, Some(&out), &mut std::iter::empty())
        };
        assert!(ok(&s, &get, Some("ab")));
        assert!(ok(&s, &get, None));
        s.append("k", "a");
        s.append("k", "bc");
        assert!(ok(&s, &get, Some("abc")));
        assert!(ok(&s, &get, Some("abcd")));
        assert!(!ok(&s, &get, Some("ab")));
        assert!(!ok(&s, &get, Some("abd")));
        assert!(!ok(&s, &get, None));
        // Another key's read says nothing about this one.
        let other = KvInput::Get { key: "j".into() };
        assert!(ok(&s, &other, None));
        let put = KvInput::Put {
            key: "k".into(),
            value: "x".into(),
        };
        assert!(!m.lookahead_passes(&put, Some(&KvOutput::Ok)));
        let append = KvInput::Append {
            key: "k".into(),
            value: "x".into(),
        };
        assert!(m.lookahead_passes(&append, None));
    }

    #[test]
    fn lookahead_reads_need_a_writer_of_their_value() {
        let m = RegisterModel::ETCD;
        let read = RegInput::Read;
        let got = |v: Option<i64>| RegOutput::Read { value: v };
        let w2 = RegInput::Write { value: 2 };
        let cas_to_2 = RegInput::Cas { from: 1, to: 2 };
        let failed = RegOutput::Cas { ok: false };
        let ok =
            |state: Option<i64>, v: Option<i64>, between: &[(&RegInput, Option<&RegOutput>)]| {
                m.may_precede(&state, &read, Some(&got(v)), &mut between.iter().copied())
            };
        assert!(ok(Some(2), Some(2), &[]));
        assert!(!ok(Some(1), Some(2), &[]));
        assert!(ok(Some(1), Some(2), &[(&w2, None)]));
        assert!(ok(Some(1), Some(2), &[(&cas_to_2, None)]));
        assert!(!ok(Some(1), Some(2), &[(&cas_to_2, Some(&failed))]));
        assert!(ok(None, None, &[(&w2, None)]));
        assert!(!ok(Some(1), None, &[(&w2, None)]));
    }

    #[test]
    fn etcd_and_knossos_differ_on_failed_cas() {
        let cas = RegInput::Cas { from: 1, to: 2 };
        assert_eq!(
            RegisterModel::ETCD.on_fail(&cas, None),
            Some(RegOutput::Cas { ok: false })
        );
        assert_eq!(RegisterModel::KNOSSOS_CAS.on_fail(&cas, None), None);
    }

    #[test]
    fn register_steps() {
        let m = RegisterModel::ETCD;
        let step = |s: Option<i64>, i: &RegInput, o: Option<&RegOutput>| m.step(&s, i, o).apply(&s);
        assert_eq!(
            step(
                None,
                &RegInput::Read,
                Some(&RegOutput::Read { value: None })
            ),
            Some(None)
        );
        assert_eq!(
            step(
                None,
                &RegInput::Read,
                Some(&RegOutput::Read { value: Some(1) })
            ),
            None
        );
        let cas = RegInput::Cas { from: 1, to: 2 };
        assert_eq!(
            step(Some(1), &cas, Some(&RegOutput::Cas { ok: true })),
            Some(Some(2))
        );
        assert_eq!(
            step(Some(1), &cas, Some(&RegOutput::Cas { ok: false })),
            None
        );
        assert_eq!(step(Some(3), &cas, None), Some(Some(3)));
        assert_eq!(
            RegisterModel::REGISTER.step(&Some(1), &cas, None),
            Step::Illegal
        );
    }

    #[test]
    fn kv_steps() {
        let m = KvModel {
            absent_reads_empty: true,
            failed_cas_is_evidence: false,
        };
        let s = m.init();
        let get = |k: &str| KvInput::Get { key: k.into() };
        let s = m
            .step(
                &s,
                &KvInput::Append {
                    key: "a".into(),
                    value: "x".into(),
                },
                Some(&KvOutput::Ok),
            )
            .apply(&s)
            .unwrap();
        let empty = Some(&KvOutput::Get {
            value: Some(String::new()),
        });
        assert_eq!(
            m.step(
                &s,
                &get("a"),
                Some(&KvOutput::Get {
                    value: Some("x".into())
                })
            ),
            Step::Unchanged
        );
        assert_eq!(m.step(&s, &get("b"), empty), Step::Unchanged);
        assert_eq!(KvModel::default().step(&s, &get("b"), empty), Step::Illegal);
    }
}
