//! `PackedMap`: a persistent (copy-on-write) ordered map from byte strings to byte strings,
//! with many pairs packed into each leaf.
//!
//! A B+tree whose nodes sit behind `Arc`s: cloning the map is O(1) and shares every node;
//! a write copies only the nodes on its path that a clone still shares. A leaf keeps its
//! pairs in one buffer of about [`LEAF_BYTES`] (`[key_len u32][value_len u32][key][value]`
//! each, plus a 4-byte offset), so a pair costs its own bytes plus about 12, not an
//! allocation of its own and a slot in a half-empty node. Inserting past the last key
//! starts a new leaf instead of splitting the full one, so a load in key order (a snapshot
//! install) leaves full leaves.

use std::ops::Bound;
use std::sync::Arc;

/// Target bytes of a leaf's buffer; a leaf splits when it grows past this.
pub const LEAF_BYTES: usize = 4096;
/// Most children of a branch.
const FANOUT: usize = 64;
/// Bytes of an entry's header: key length and value length.
const HEADER: usize = 8;

/// Entries `[key_len u32][value_len u32][key][value]` in key order in one buffer.
#[derive(Clone, Default)]
struct Entries {
    buf: Vec<u8>,
    offs: Vec<u32>,
}

fn read_u32(b: &[u8], at: usize) -> usize {
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(n) as usize
}

impl Entries {
    fn len(&self) -> usize {
        self.offs.len()
    }

    fn bytes(&self) -> usize {
        self.buf.len()
    }

    fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let at = self.offs[i] as usize;
        let (k, v) = (read_u32(&self.buf, at), read_u32(&self.buf, at + 4));
        let key = at + HEADER;
        (&self.buf[key..key + k], &self.buf[key + k..key + k + v])
    }

    fn key(&self, i: usize) -> &[u8] {
        self.get(i).0
    }

    /// Where `key` is (`Ok`) or would go (`Err`).
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// How many keys are below `key` (or at most `key` when `inclusive`).
    fn rank(&self, key: &[u8], inclusive: bool) -> usize {
        match self.search(key) {
            Ok(i) if inclusive => i + 1,
            Ok(i) | Err(i) => i,
        }
    }

    fn end(&self, i: usize) -> usize {
        self.offs.get(i + 1).map_or(self.buf.len(), |&o| o as usize)
    }

    fn insert(&mut self, i: usize, key: &[u8], value: &[u8]) {
        let size = HEADER + key.len() + value.len();
        let at = self.offs.get(i).map_or(self.buf.len(), |&o| o as usize);
        if self.buf.len() + size > self.buf.capacity() {
            // Grow to a leaf's size at once, not by doubling past it.
            let want = (self.buf.len() + size).max(LEAF_BYTES);
            self.buf.reserve_exact(want - self.buf.len());
        }
        let (klen, vlen) = (
            (key.len() as u32).to_le_bytes(),
            (value.len() as u32).to_le_bytes(),
        );
        let entry = klen.iter().chain(&vlen).chain(key).chain(value).copied();
        self.buf.splice(at..at, entry);
        for o in &mut self.offs[i..] {
            *o += size as u32;
        }
        self.offs.insert(i, at as u32);
    }

    fn remove(&mut self, i: usize) {
        let (at, end) = (self.offs[i] as usize, self.end(i));
        self.buf.drain(at..end);
        self.offs.remove(i);
        for o in &mut self.offs[i..] {
            *o -= (end - at) as u32;
        }
    }

    /// Moves entries `from..` into a new `Entries`.
    fn split_off(&mut self, from: usize) -> Entries {
        let at = self.offs.get(from).map_or(self.buf.len(), |&o| o as usize);
        let mut buf = Vec::with_capacity((self.buf.len() - at).max(LEAF_BYTES));
        buf.extend_from_slice(&self.buf[at..]);
        let offs = self.offs[from..].iter().map(|o| o - at as u32).collect();
        self.buf.truncate(at);
        self.offs.truncate(from);
        Entries { buf, offs }
    }

    /// Appends every entry of `other`.
    fn append(&mut self, other: &Entries) {
        let base = self.buf.len() as u32;
        self.buf.reserve_exact(other.buf.len());
        self.buf.extend_from_slice(&other.buf);
        self.offs.extend(other.offs.iter().map(|o| o + base));
    }

    /// The index at which the entries split into two halves of about equal bytes.
    fn middle(&self) -> usize {
        let half = self.buf.len() / 2;
        self.offs
            .partition_point(|&o| (o as usize) < half)
            .clamp(1, self.len() - 1)
    }
}

#[derive(Clone)]
struct Branch {
    /// `seps.key(j)` is the smallest key of `children[j + 1]` (values empty).
    seps: Entries,
    children: Vec<Arc<Node>>,
    /// Pairs below this branch.
    len: usize,
}

impl Branch {
    /// The child whose keys include `key`.
    fn child_for(&self, key: &[u8]) -> usize {
        self.seps.rank(key, true)
    }
}

#[derive(Clone)]
enum Node {
    Leaf(Entries),
    Branch(Branch),
}

impl Node {
    fn len(&self) -> usize {
        match self {
            Node::Leaf(e) => e.len(),
            Node::Branch(b) => b.len,
        }
    }

    /// Whether the node is small enough to merge into a neighbour.
    fn is_small(&self) -> bool {
        match self {
            Node::Leaf(e) => e.bytes() < LEAF_BYTES / 4,
            Node::Branch(b) => b.children.len() < FANOUT / 4,
        }
    }
}

/// A split: the smallest key of the new right node, and the node.
type Split = Option<(Vec<u8>, Arc<Node>)>;

fn insert(node: &mut Arc<Node>, key: &[u8], value: &[u8]) -> (Option<Vec<u8>>, Split) {
    match Arc::make_mut(node) {
        Node::Leaf(e) => {
            let old = match e.search(key) {
                Ok(i) => {
                    let old = e.get(i).1.to_vec();
                    e.remove(i);
                    e.insert(i, key, value);
                    Some(old)
                }
                Err(i) => {
                    e.insert(i, key, value);
                    None
                }
            };
            if e.bytes() <= LEAF_BYTES || e.len() < 2 {
                return (old, None);
            }
            // Past the last key: a new leaf for it alone (a load in order fills leaves).
            let at = if old.is_none() && e.key(e.len() - 1) == key {
                e.len() - 1
            } else {
                e.middle()
            };
            let right = e.split_off(at);
            let sep = right.key(0).to_vec();
            (old, Some((sep, Arc::new(Node::Leaf(right)))))
        }
        Node::Branch(b) => {
            let i = b.child_for(key);
            let (old, split) = insert(&mut b.children[i], key, value);
            if old.is_none() {
                b.len += 1;
            }
            let Some((sep, right)) = split else {
                return (old, None);
            };
            b.seps.insert(i, &sep, &[]);
            b.children.insert(i + 1, right);
            if b.children.len() <= FANOUT {
                return (old, None);
            }
            let n = b.children.len();
            let at = if i + 2 == n { n - 1 } else { n / 2 };
            let mut right_seps = b.seps.split_off(at - 1);
            let up = right_seps.key(0).to_vec();
            right_seps.remove(0);
            let right_children = b.children.split_off(at);
            let right_len = right_children.iter().map(|c| c.len()).sum();
            b.len -= right_len;
            let right = Branch {
                seps: right_seps,
                children: right_children,
                len: right_len,
            };
            (old, Some((up, Arc::new(Node::Branch(right)))))
        }
    }
}

/// Removes `key` below `node`; the node may be left empty or small (the parent mends it).
fn remove(node: &mut Arc<Node>, key: &[u8]) -> Option<Vec<u8>> {
    // Look before copying: a miss must not copy shared nodes.
    match &**node {
        Node::Leaf(e) => {
            let i = e.search(key).ok()?;
            let Node::Leaf(e) = Arc::make_mut(node) else {
                unreachable!("checked to be a leaf")
            };
            let old = e.get(i).1.to_vec();
            e.remove(i);
            Some(old)
        }
        Node::Branch(b) => {
            let i = b.child_for(key);
            if !contains(&b.children[i], key) {
                return None;
            }
            let Node::Branch(b) = Arc::make_mut(node) else {
                unreachable!("checked to be a branch")
            };
            let old = remove(&mut b.children[i], key);
            b.len -= 1;
            mend(b, i);
            old
        }
    }
}

fn contains(node: &Node, key: &[u8]) -> bool {
    match node {
        Node::Leaf(e) => e.search(key).is_ok(),
        Node::Branch(b) => contains(&b.children[b.child_for(key)], key),
    }
}

/// After a removal below `b.children[i]`: drops the child if it is empty, or merges it with
/// a neighbour when both fit in one node.
fn mend(b: &mut Branch, i: usize) {
    if b.children[i].len() == 0 {
        b.children.remove(i);
        if b.seps.len() > 0 {
            // The removed child's lower separator; the first child has none, so the second
            // child's goes (it becomes the first).
            b.seps.remove(i.saturating_sub(1));
        }
        return;
    }
    if !b.children[i].is_small() || b.children.len() < 2 {
        return;
    }
    let (l, r) = if i + 1 < b.children.len() {
        (i, i + 1)
    } else {
        (i - 1, i)
    };
    let fits = match (&*b.children[l], &*b.children[r]) {
        (Node::Leaf(a), Node::Leaf(c)) => a.bytes() + c.bytes() <= LEAF_BYTES,
        (Node::Branch(a), Node::Branch(c)) => a.children.len() + c.children.len() <= FANOUT,
        _ => false,
    };
    if !fits {
        return;
    }
    let right = b.children.remove(r);
    let sep = b.seps.key(l).to_vec();
    b.seps.remove(l);
    match (Arc::make_mut(&mut b.children[l]), &*right) {
        (Node::Leaf(a), Node::Leaf(c)) => a.append(c),
        (Node::Branch(a), Node::Branch(c)) => {
            a.seps.insert(a.seps.len(), &sep, &[]);
            a.seps.append(&c.seps);
            a.children.extend(c.children.iter().cloned());
            a.len += c.len;
        }
        _ => unreachable!("checked to be of one kind"),
    }
}

/// Calls `f` on every pair in `(lo, hi)` in key order until it returns `false`; returns
/// `false` once stopped (by `f` or by passing `hi`).
fn visit(
    node: &Node,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> bool {
    let below_hi = |k: &[u8]| match hi {
        Bound::Included(h) => k <= h,
        Bound::Excluded(h) => k < h,
        Bound::Unbounded => true,
    };
    match node {
        Node::Leaf(e) => {
            let start = match lo {
                Bound::Included(k) => e.rank(k, false),
                Bound::Excluded(k) => e.rank(k, true),
                Bound::Unbounded => 0,
            };
            for i in start..e.len() {
                let (k, v) = e.get(i);
                if !below_hi(k) || !f(k, v) {
                    return false;
                }
            }
            true
        }
        Node::Branch(b) => {
            let start = match lo {
                Bound::Included(k) | Bound::Excluded(k) => b.child_for(k),
                Bound::Unbounded => 0,
            };
            for j in start..b.children.len() {
                if j > start && !below_hi(b.seps.key(j - 1)) {
                    return false;
                }
                if !visit(&b.children[j], lo, hi, f) {
                    return false;
                }
            }
            true
        }
    }
}

/// The map. Cloning is O(1).
#[derive(Clone, Default)]
pub struct PackedMap {
    root: Option<Arc<Node>>,
}

impl PackedMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.root.as_ref().map_or(0, |r| r.len())
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Leaf(e) => return e.search(key).ok().map(|i| e.get(i).1),
                Node::Branch(b) => node = &b.children[b.child_for(key)],
            }
        }
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let root = self
            .root
            .get_or_insert_with(|| Arc::new(Node::Leaf(Entries::default())));
        let (old, split) = insert(root, key, value);
        if let Some((sep, right)) = split {
            let left = root.clone();
            let len = left.len() + right.len();
            let mut seps = Entries::default();
            seps.insert(0, &sep, &[]);
            *root = Arc::new(Node::Branch(Branch {
                seps,
                children: vec![left, right],
                len,
            }));
        }
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let root = self.root.as_mut()?;
        let old = remove(root, key)?;
        // A root branch with one child gives way to the child; an empty root goes.
        loop {
            match self.root.as_deref() {
                Some(Node::Branch(b)) if b.children.len() == 1 => {
                    self.root = Some(b.children[0].clone());
                }
                Some(n) if n.len() == 0 => self.root = None,
                _ => break,
            }
        }
        Some(old)
    }

    /// Calls `f` on the pairs in the range in key order until it returns `false`.
    pub fn for_each_in(
        &self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) {
        if let Some(root) = &self.root {
            visit(root, range.0, range.1, &mut f);
        }
    }
}

impl std::fmt::Debug for PackedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        self.for_each_in((Bound::Unbounded, Bound::Unbounded), |k, v| {
            m.entry(&k, &v);
            true
        });
        m.finish()
    }
}

#[cfg(test)]
mod tests;
