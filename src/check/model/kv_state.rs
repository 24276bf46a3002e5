//! The key-value model's state: string values as persistent ropes (an append shares what it
//! extends), pairs sorted by key.

use std::hash::Hash;
use std::sync::Arc;

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
    pub(super) fn leaf(s: &str) -> Arc<Rope> {
        Arc::new(Rope {
            prev: None,
            piece: Arc::from(s),
            len: s.len(),
            hash: rope_hash(0, s.as_bytes()),
        })
    }

    pub(super) fn append(this: &Arc<Rope>, s: &str) -> Arc<Rope> {
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

    pub(super) fn set(&mut self, key: &str, value: Arc<Rope>) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (Arc::from(key), value)),
        }
    }

    pub(super) fn append(&mut self, key: &str, suffix: &str) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = Rope::append(&self.0[i].1, suffix),
            Err(i) => self.0.insert(i, (Arc::from(key), Rope::leaf(suffix))),
        }
    }

    pub(super) fn remove(&mut self, key: &str) {
        if let Ok(i) = self.find(key) {
            self.0.remove(i);
        }
    }

    /// The present keys in `[start, end)` with their values, in key order.
    pub fn range<'s>(
        &'s self,
        start: Option<&'s str>,
        end: Option<&'s str>,
    ) -> impl Iterator<Item = (&'s str, &'s Rope)> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| in_range(k, start, end))
            .map(|(k, v)| (&**k, &**v))
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

/// Whether `key` is in `[start, end)`.
pub(super) fn in_range(key: &str, start: Option<&str>, end: Option<&str>) -> bool {
    start.is_none_or(|s| key >= s) && end.is_none_or(|e| key < e)
}
