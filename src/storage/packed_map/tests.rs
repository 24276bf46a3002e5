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
