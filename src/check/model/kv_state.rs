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

/// Keys per chunk of a [`KvState`] before it splits.
const CHUNK: usize = 32;

/// Consecutive pairs of a [`KvState`], sorted by key.
type Chunk = Vec<(Arc<str>, Arc<Rope>)>;

/// The state of [`KvModel`]: pairs sorted by key, values as [`Rope`]s, in shared chunks of
/// consecutive keys. The search copies a state for every step it tries; a copy shares every
/// chunk, and a change copies only the chunk it touches, so a step costs the same with three
/// keys or three hundred. Equality and hashing are by content (chunk boundaries depend on the
/// order keys arrived in); the hash is kept incrementally, one term per pair.
#[derive(Debug, Clone, Default)]
pub struct KvState {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
    hash: u64,
}

/// One pair's term of the state's hash (terms are added, so order does not matter).
fn pair_hash(key: &str, value: &Rope) -> u64 {
    let mut h = rope_hash(0x9e37_79b9_7f4a_7c15, key.as_bytes());
    h ^= (value.hash ^ value.len as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h.wrapping_mul(0xc4ce_b9fe_1a85_ec53)
}

impl PartialEq for KvState {
    fn eq(&self, other: &KvState) -> bool {
        if self.len != other.len || self.hash != other.hash {
            return false;
        }
        if self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return true;
        }
        self.iter()
            .zip(other.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.len.hash(h);
        self.hash.hash(h);
    }
}

impl KvState {
    fn iter(&self) -> impl Iterator<Item = (&str, &Rope)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .map(|(k, v)| (&**k, &**v))
    }

    /// The chunk that holds `key` or would: the first whose last key is at or past it (or
    /// the last chunk).
    fn chunk_of(&self, key: &str) -> usize {
        let i = self.chunks.partition_point(|c| {
            c.last()
                .is_some_and(|(k, _)| key_cmp(k, key) == std::cmp::Ordering::Less)
        });
        i.min(self.chunks.len().saturating_sub(1))
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&Rope> {
        let chunk = self.chunks.get(self.chunk_of(key))?;
        let i = chunk.binary_search_by(|(k, _)| key_cmp(k, key)).ok()?;
        Some(&chunk[i].1)
    }

    /// Applies `change` to the value of `key` (`None`: absent), keeping chunks and hash.
    fn update(&mut self, key: &str, change: impl FnOnce(Option<&Arc<Rope>>) -> Option<Arc<Rope>>) {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::default());
        }
        let c = self.chunk_of(key);
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        let found = chunk.binary_search_by(|(k, _)| key_cmp(k, key));
        let old = found.ok().map(|i| chunk[i].1.clone());
        let new = change(old.as_ref());
        if let Some(v) = &old {
            self.hash = self.hash.wrapping_sub(pair_hash(key, v));
        }
        if let Some(v) = &new {
            self.hash = self.hash.wrapping_add(pair_hash(key, v));
        }
        match (found, new) {
            (Ok(i), Some(v)) => chunk[i].1 = v,
            (Ok(i), None) => {
                chunk.remove(i);
                self.len -= 1;
                if chunk.is_empty() {
                    self.chunks.remove(c);
                }
            }
            (Err(i), Some(v)) => {
                chunk.insert(i, (Arc::from(key), v));
                self.len += 1;
                if chunk.len() > 2 * CHUNK {
                    let tail = chunk.split_off(CHUNK);
                    self.chunks.insert(c + 1, Arc::new(tail));
                }
            }
            (Err(_), None) => {
                if chunk.is_empty() {
                    self.chunks.remove(c);
                }
            }
        }
    }

    pub(super) fn set(&mut self, key: &str, value: Arc<Rope>) {
        self.update(key, |_| Some(value));
    }

    pub(super) fn append(&mut self, key: &str, suffix: &str) {
        self.update(key, |old| {
            Some(match old {
                Some(v) => Rope::append(v, suffix),
                None => Rope::leaf(suffix),
            })
        });
    }

    pub(super) fn remove(&mut self, key: &str) {
        if self.get(key).is_some() {
            self.update(key, |_| None);
        }
    }

    /// The present keys in `[start, end)` with their values, in key order.
    pub fn range<'s>(
        &'s self,
        start: Option<&'s str>,
        end: Option<&'s str>,
    ) -> impl Iterator<Item = (&'s str, &'s Rope)> + 's {
        let first = start.map_or(0, |s| self.chunk_of(s));
        self.chunks[first.min(self.chunks.len())..]
            .iter()
            .flat_map(|c| c.iter())
            .map(|(k, v)| (&**k, &**v))
            .skip_while(move |(k, _)| start.is_some_and(|s| *k < s))
            .take_while(move |(k, _)| end.is_none_or(|e| *k < e))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The order of two keys (byte order, as `str`'s), compared in place: keys are a few bytes,
/// and the search compares them millions of times, where a call out to `memcmp` per
/// comparison costs more than the comparison.
#[inline]
pub fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.as_bytes().iter().cmp(b.as_bytes().iter())
}

/// Whether two keys are equal, compared in place (see [`key_cmp`]).
#[inline]
pub fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Whether `key` is in `[start, end)`.
pub(super) fn in_range(key: &str, start: Option<&str>, end: Option<&str>) -> bool {
    start.is_none_or(|s| key >= s) && end.is_none_or(|e| key < e)
}
