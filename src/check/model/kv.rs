//! A key-value map with get, put, append, delete and compare-and-set per key, and scans and
//! counts of a key range, which read every key in it at one instant.

use std::fmt::Debug;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use super::kv_state::{in_range, key_eq, Rope};
use super::{KvState, Model, Step, Touches};

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
    /// Every present key in `[start, end)` with its value, at one instant.
    Scan {
        /// First key (`None`: from the start).
        #[serde(default)]
        start: Option<String>,
        /// Key after the last (`None`: to the end).
        #[serde(default)]
        end: Option<String>,
    },
    /// How many keys in `[start, end)` are present, at one instant.
    Count {
        /// First key (`None`: from the start).
        #[serde(default)]
        start: Option<String>,
        /// Key after the last (`None`: to the end).
        #[serde(default)]
        end: Option<String>,
    },
}

impl KvInput {
    /// The key a single-key operation touches (`None` for a scan or a count).
    pub fn key(&self) -> Option<&str> {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Append { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => Some(key),
            KvInput::Scan { .. } | KvInput::Count { .. } => None,
        }
    }

    /// Whether the operation reads `key` (a single-key operation on it, or a scan or count
    /// whose range holds it).
    pub fn covers(&self, key: &str) -> bool {
        match self {
            KvInput::Scan { start, end } | KvInput::Count { start, end } => {
                in_range(key, start.as_deref(), end.as_deref())
            }
            single => single.key().is_some_and(|k| key_eq(k, key)),
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
    /// A scan's pairs (key, value), in key order.
    Scan {
        /// The pairs.
        pairs: Vec<(String, String)>,
    },
    /// A count's result.
    Count {
        /// Present keys in the range.
        n: u64,
    },
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
    /// Whether a read of `key` that saw `seen` can follow `state` when exactly the operations
    /// `between` (on that key) may come between (see [`Model::may_precede`]).
    fn may_see<'a>(
        &self,
        state: &KvState,
        key: &str,
        seen: Option<&str>,
        between: impl IntoIterator<Item = (&'a KvInput, Option<&'a KvOutput>)>,
    ) -> bool {
        let (mut appends, mut resets, mut writer) = (false, false, false);
        for (i, o) in between {
            match i {
                KvInput::Append { key: k, .. } if key_eq(k, key) => appends = true,
                KvInput::Put { key: k, value } if key_eq(k, key) => {
                    resets = true;
                    writer |= self.same(Some(value), seen);
                }
                KvInput::Delete { key: k } if key_eq(k, key) => {
                    resets = true;
                    writer |= self.same(None, seen);
                }
                // A cas known to have failed writes nothing.
                KvInput::Cas { key: k, to, .. }
                    if key_eq(k, key) && !matches!(o, Some(KvOutput::Cas { ok: false })) =>
                {
                    resets = true;
                    writer |= self.same(Some(to), seen);
                }
                _ => {}
            }
        }
        if appends {
            return resets
                || match (state.get(key), seen) {
                    (None, _) => true,
                    (Some(a), Some(s)) => a.is_prefix_of(s),
                    (Some(a), None) => self.absent_reads_empty && a.is_empty(),
                };
        }
        writer || self.matches(state.get(key), seen)
    }

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
            (KvInput::Scan { .. } | KvInput::Count { .. }, None) => Step::Unchanged,
            (KvInput::Scan { start, end }, Some(KvOutput::Scan { pairs })) => {
                let mut seen: Vec<&(String, String)> = pairs.iter().collect();
                seen.sort();
                let mut present = s.range(start.as_deref(), end.as_deref());
                let same = seen.iter().all(|(k, v)| {
                    present
                        .next()
                        .is_some_and(|(pk, pv)| pk == k && pv.eq_str(v))
                }) && present.next().is_none();
                if same {
                    Step::Unchanged
                } else {
                    Step::Illegal
                }
            }
            (KvInput::Count { start, end }, Some(KvOutput::Count { n })) => {
                if s.range(start.as_deref(), end.as_deref()).count() as u64 == *n {
                    Step::Unchanged
                } else {
                    Step::Illegal
                }
            }
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

    /// Every operation: [`Model::may_precede`] looks at what may come between itself.
    fn lookahead_passes(&self, _input: &KvInput, _output: Option<&KvOutput>) -> bool {
        true
    }

    /// A read of key `k` that returned `v` can follow `state` only if the key holds `v` in
    /// `state`, or something that may still come between writes exactly `v` there (a put of
    /// `v`, a cas to `v` that did not fail, a delete when `v` is absent): with unique written
    /// values the read names its writer, and a write of anything else cannot be what it saw.
    /// With appends to `k` between, the key's value in `state` must be a prefix of `v`
    /// (appends never shorten a value or change what it starts with), or come from a put,
    /// delete or cas between (anything may happen then). A scan is such a read of every key
    /// in its range; a count needs enough writes between that can add (or remove) keys.
    fn may_precede<'a>(
        &self,
        state: &KvState,
        input: &KvInput,
        output: Option<&KvOutput>,
        between: &mut dyn Iterator<Item = (&'a KvInput, Option<&'a KvOutput>)>,
    ) -> bool {
        match (input, output) {
            (KvInput::Get { key }, Some(KvOutput::Get { value: seen })) => {
                self.may_see(state, key, seen.as_deref(), between)
            }
            (KvInput::Scan { start, end }, Some(KvOutput::Scan { pairs })) => {
                // Only writes matter to what a key may show.
                let between: Vec<_> = between.filter(|(i, _)| !self.is_read_only(i)).collect();
                let (start, end) = (start.as_deref(), end.as_deref());
                let keys: std::collections::BTreeSet<&str> = state
                    .range(start, end)
                    .map(|(k, _)| k)
                    .chain(pairs.iter().map(|(k, _)| k.as_str()))
                    .collect();
                keys.into_iter().all(|k| {
                    let seen = pairs
                        .iter()
                        .find(|(pk, _)| pk == k)
                        .map(|(_, v)| v.as_str());
                    self.may_see(state, k, seen, between.iter().copied())
                })
            }
            (KvInput::Count { start, end }, Some(KvOutput::Count { n })) => {
                let (start, end) = (start.as_deref(), end.as_deref());
                let now = state.range(start, end).count() as u64;
                // Keys with a write to come may end up either way.
                let written: std::collections::BTreeSet<&str> = between
                    .filter(|(i, o)| match i {
                        KvInput::Cas { .. } => !matches!(o, Some(KvOutput::Cas { ok: false })),
                        KvInput::Put { .. } | KvInput::Delete { .. } | KvInput::Append { .. } => {
                            true
                        }
                        _ => false,
                    })
                    .filter_map(|(i, _)| i.key())
                    .filter(|k| in_range(k, start, end))
                    .collect();
                let can_remove = written.iter().filter(|k| state.get(k).is_some()).count() as u64;
                let can_add = written.len() as u64 - can_remove;
                *n <= now + can_add && *n + can_remove >= now
            }
            _ => true,
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
            .filter(|(i, _)| i.covers(key))
            .all(|(i, o)| match (i, o) {
                (KvInput::Get { .. }, Some(KvOutput::Get { value })) => {
                    !self.same(value.as_deref(), leaves)
                }
                // A scan reads the key like a get: it saw another value, or saw none.
                (KvInput::Scan { .. }, Some(KvOutput::Scan { pairs })) => {
                    let seen = pairs
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.as_str());
                    !self.same(seen, leaves)
                }
                (KvInput::Get { .. } | KvInput::Scan { .. }, None)
                | (KvInput::Put { .. }, _)
                | (KvInput::Delete { .. }, _) => true,
                // A cas that expected another value did nothing where the write left its value;
                // one whose result is unknown can move to the very end instead, where it may
                // do anything.
                (KvInput::Cas { from, .. }, Some(KvOutput::Cas { ok: true }) | None) => {
                    !self.same(from.as_deref(), leaves)
                }
                // A count sees whether the key is there, whatever the value.
                _ => false,
            })
    }

    fn touches(&self, i: &KvInput) -> Touches {
        match i {
            KvInput::Scan { start, end } | KvInput::Count { start, end } => {
                Touches::Range(start.clone(), end.clone())
            }
            single => Touches::Key(single.key().unwrap_or_default().to_string()),
        }
    }

    fn is_read_only(&self, i: &KvInput) -> bool {
        matches!(
            i,
            KvInput::Get { .. } | KvInput::Scan { .. } | KvInput::Count { .. }
        )
    }

    /// Values written by puts and cas that no operation observes (no get or scan returns
    /// them, no cas expects them) become one stand-in value per key. Nothing compares them
    /// with anything but observed values, which they all differ from, so every step gives the
    /// same answer. A key with appends keeps its values (an append builds on them), and an
    /// empty value stays (an absent key may read as empty).
    fn conceal(&self, ops: &[(&KvInput, Option<&KvOutput>)]) -> Vec<Option<KvInput>> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut appended: BTreeSet<&str> = BTreeSet::new();
        let mut all_seen: BTreeSet<&str> = BTreeSet::new();
        for (i, o) in ops {
            match (i, o) {
                (KvInput::Get { key }, Some(KvOutput::Get { value: Some(v) })) => {
                    seen.entry(key).or_default().insert(v);
                    all_seen.insert(v);
                }
                (KvInput::Scan { .. }, Some(KvOutput::Scan { pairs })) => {
                    for (k, v) in pairs {
                        seen.entry(k).or_default().insert(v);
                        all_seen.insert(v);
                    }
                }
                (
                    KvInput::Cas {
                        key, from: Some(f), ..
                    },
                    _,
                ) => {
                    seen.entry(key).or_default().insert(f);
                    all_seen.insert(f);
                }
                (KvInput::Append { key, .. }, _) => {
                    appended.insert(key);
                }
                _ => {}
            }
        }
        let mut stand_in = String::from("\u{1}unobserved");
        while all_seen.contains(stand_in.as_str()) {
            stand_in.push('\u{1}');
        }
        let hidden = |key: &str, v: &str| {
            !v.is_empty()
                && !appended.contains(key)
                && !seen.get(key).is_some_and(|vs| vs.contains(v))
        };
        ops.iter()
            .map(|(i, _)| match i {
                KvInput::Put { key, value } if hidden(key, value) && *value != stand_in => {
                    Some(KvInput::Put {
                        key: key.clone(),
                        value: stand_in.clone(),
                    })
                }
                KvInput::Cas { key, from, to } if hidden(key, to) && *to != stand_in => {
                    Some(KvInput::Cas {
                        key: key.clone(),
                        from: from.clone(),
                        to: stand_in.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }

    fn names_values(&self, i: &KvInput) -> bool {
        !matches!(i, KvInput::Count { .. })
    }

    fn blind_write(&self, i: &KvInput) -> bool {
        matches!(i, KvInput::Put { .. } | KvInput::Delete { .. })
    }

    fn allows_jit(&self, i: &KvInput, _o: Option<&KvOutput>) -> bool {
        !matches!(i, KvInput::Append { .. })
    }

    /// A write of `w` to key `k` (a put, a delete, or a cas that finds what it expects) can
    /// make an operation legal only if it reads `k`: a get,
    /// cas or scan that expects what `w` leaves there (a failed cas: something else), or a
    /// count whose range holds `k` and that needs `k` to appear (or to go).
    fn may_enable(&self, s: &KvState, w: &KvInput, op: &KvInput, out: Option<&KvOutput>) -> bool {
        let (key, leaves) = match w {
            KvInput::Put { key, value } => (key.as_str(), Some(value.as_str())),
            KvInput::Delete { key } => (key.as_str(), None),
            // A cas of unknown result writes only where it finds what it expects.
            KvInput::Cas { key, from, to } => {
                if !self.matches(s.get(key), from.as_deref()) {
                    return false;
                }
                (key.as_str(), Some(to.as_str()))
            }
            _ => return true,
        };
        if !op.covers(key) {
            return false;
        }
        match (op, out) {
            (KvInput::Get { .. }, Some(KvOutput::Get { value })) => {
                self.same(value.as_deref(), leaves)
            }
            (KvInput::Cas { from, .. }, Some(KvOutput::Cas { ok: false })) => {
                !self.same(from.as_deref(), leaves)
            }
            (KvInput::Cas { from, .. }, _) => self.same(from.as_deref(), leaves),
            (KvInput::Scan { .. }, Some(KvOutput::Scan { pairs })) => {
                let seen = pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str());
                self.same(seen, leaves)
            }
            // A count that saw more keys needs a key to appear, one that saw fewer needs a
            // key to go.
            (KvInput::Count { start, end }, Some(KvOutput::Count { n })) => {
                let now = s.range(start.as_deref(), end.as_deref()).count() as u64;
                let present = s.get(key).is_some();
                match leaves {
                    Some(_) => *n > now && !present,
                    None => *n < now && present,
                }
            }
            _ => true,
        }
    }

    fn state_bytes(&self, s: &Self::State) -> usize {
        // A new state adds at most one rope node to what earlier states share.
        s.len() * 16 + 96 + 24
    }

    fn never_changes_state(&self, i: &KvInput, o: Option<&KvOutput>) -> bool {
        matches!(
            (i, o),
            (
                KvInput::Get { .. } | KvInput::Scan { .. } | KvInput::Count { .. },
                Some(_)
            ) | (KvInput::Cas { .. }, Some(KvOutput::Cas { ok: false }))
        )
    }

    fn describe(&self, i: &KvInput, o: Option<&KvOutput>) -> String {
        let out = match o {
            None => "?".to_string(),
            Some(KvOutput::Ok) => "ok".into(),
            Some(KvOutput::Get { value }) => format!("{value:?}"),
            Some(KvOutput::Cas { ok }) => if *ok { "ok" } else { "fail" }.into(),
            Some(KvOutput::Scan { pairs }) => {
                let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("[{}]", shown.join(" "))
            }
            Some(KvOutput::Count { n }) => n.to_string(),
        };
        let range = |s: &Option<String>, e: &Option<String>| match (s, e) {
            (None, None) => "all".to_string(),
            (s, e) => format!(
                "{}..{}",
                s.as_deref().unwrap_or(""),
                e.as_deref().unwrap_or("")
            ),
        };
        match i {
            KvInput::Get { key } => format!("get {key} -> {out}"),
            KvInput::Put { key, value } => format!("put {key}={value:?} {out}"),
            KvInput::Append { key, value } => format!("append {key}+={value:?} {out}"),
            KvInput::Delete { key } => format!("delete {key} {out}"),
            KvInput::Cas { key, from, to } => format!("cas {key} {from:?}->{to:?} {out}"),
            KvInput::Scan { start, end } => format!("scan {} -> {out}", range(start, end)),
            KvInput::Count { start, end } => format!("count {} -> {out}", range(start, end)),
        }
    }
}
