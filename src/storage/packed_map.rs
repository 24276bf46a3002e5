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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u16, usize),
        Delete(u16),
        Snapshot,
        Range(u16, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (any::<u16>(), 0usize..700).prop_map(|(k, v)| Op::Put(k % 2000, v)),
            3 => any::<u16>().prop_map(|k| Op::Delete(k % 2000)),
            1 => Just(Op::Snapshot),
            1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Range(a % 2000, b % 2000)),
        ]
    }

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn key(k: u16) -> Vec<u8> {
        // Keys of varied length sharing prefixes.
        format!("{k}").into_bytes()
    }

    fn all(m: &PackedMap) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        m.for_each_in((Bound::Unbounded, Bound::Unbounded), |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    /// Checks the tree's own invariants: lengths, separators, key order, no empty node.
    fn check_node(n: &Node, lo: Option<&[u8]>, hi: Option<&[u8]>) -> usize {
        match n {
            Node::Leaf(e) => {
                assert!(e.len() > 0, "empty leaf");
                for i in 0..e.len() {
                    let k = e.key(i);
                    assert!(lo.is_none_or(|l| k >= l) && hi.is_none_or(|h| k < h));
                    if i > 0 {
                        assert!(e.key(i - 1) < k);
                    }
                }
                e.len()
            }
            Node::Branch(b) => {
                assert_eq!(b.seps.len() + 1, b.children.len());
                assert!(b.children.len() <= FANOUT);
                let mut total = 0;
                for (j, c) in b.children.iter().enumerate() {
                    let l = if j == 0 { lo } else { Some(b.seps.key(j - 1)) };
                    let h = if j + 1 == b.children.len() {
                        hi
                    } else {
                        Some(b.seps.key(j))
                    };
                    total += check_node(c, l, h);
                }
                assert_eq!(total, b.len);
                total
            }
        }
    }

    fn check(m: &PackedMap) {
        if let Some(r) = &m.root {
            assert_eq!(check_node(r, None, None), m.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn behaves_like_a_btreemap_with_snapshots(ops in prop::collection::vec(op(), 1..1500)) {
            let mut m = PackedMap::new();
            let mut model = Model::new();
            let mut snaps: Vec<(PackedMap, Model)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Put(k, len) => {
                        let v = vec![(n % 251) as u8; len];
                        prop_assert_eq!(m.insert(&key(k), &v), model.insert(key(k), v));
                    }
                    Op::Delete(k) => {
                        prop_assert_eq!(m.remove(&key(k)), model.remove(&key(k)));
                    }
                    Op::Snapshot => snaps.push((m.clone(), model.clone())),
                    Op::Range(a, b) => {
                        let (a, b) = (key(a).min(key(b)), key(a).max(key(b)));
                        let mut got = Vec::new();
                        m.for_each_in((Bound::Included(&a), Bound::Excluded(&b)), |k, v| {
                            got.push((k.to_vec(), v.to_vec()));
                            got.len() < 50
                        });
                        let want: Vec<_> = model
                            .range::<[u8], _>((Bound::Included(&a[..]), Bound::Excluded(&b[..])))
                            .take(50)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
            check(&m);
            let want: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(all(&m), want);
            for (s, model) in snaps {
                check(&s);
                prop_assert_eq!(all(&s), model.into_iter().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_load_in_key_order_fills_its_leaves() {
        let mut m = PackedMap::new();
        for k in 0u64..100_000 {
            m.insert(&k.to_be_bytes(), &[7u8; 100]);
        }
        check(&m);
        let (mut leaves, mut bytes) = (0usize, 0usize);
        fn walk(n: &Node, leaves: &mut usize, bytes: &mut usize) {
            match n {
                Node::Leaf(e) => {
                    *leaves += 1;
                    *bytes += e.bytes();
                }
                Node::Branch(b) => b.children.iter().for_each(|c| walk(c, leaves, bytes)),
            }
        }
        walk(m.root.as_ref().unwrap(), &mut leaves, &mut bytes);
        let fill = bytes as f64 / (leaves * LEAF_BYTES) as f64;
        assert!(fill > 0.95, "leaves {fill:.2} full");
        for k in (0u64..100_000).step_by(2) {
            m.remove(&k.to_be_bytes());
        }
        check(&m);
        assert_eq!(m.len(), 50_000);
        assert_eq!(all(&m)[0].0, 1u64.to_be_bytes());
        // The rest in a scrambled order, through merges of leaves and branches.
        let snapshot = m.clone();
        let mut odd: Vec<u64> = (1u64..100_000).step_by(2).collect();
        let mut x = 12345u64;
        for i in (1..odd.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            odd.swap(i, (x >> 33) as usize % (i + 1));
        }
        for (n, k) in odd.iter().enumerate() {
            assert_eq!(m.remove(&k.to_be_bytes()), Some(vec![7u8; 100]));
            if n % 5_000 == 0 {
                check(&m);
            }
        }
        assert!(m.is_empty() && m.root.is_none());
        check(&snapshot);
        assert_eq!(snapshot.len(), 50_000);
    }
}
