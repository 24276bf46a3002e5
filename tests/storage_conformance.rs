//! One conformance suite for every engine: random sequences of put / delete / batch / scan /
//! count / snapshot / restore / stream round trips, compared against a `BTreeMap` model.

use std::collections::BTreeMap;
use std::ops::Bound;

use futures::StreamExt;
use odgm_sim::storage::stream::{self, SnapshotHeader};
use odgm_sim::storage::write_back::WriteBack;
use odgm_sim::storage::{
    open_ephemeral, DynStorage, EngineKind, KeyRange, WriteBatch, MAX_HELD_SNAPSHOTS,
};
use proptest::prelude::*;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Data writes, a meta write, and whether the batch is unsynced.
    Batch(
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
        Option<(Vec<u8>, Vec<u8>)>,
        bool,
    ),
    Get(Vec<u8>),
    Scan(Option<Vec<u8>>, Option<Vec<u8>>, usize),
    ScanPrefix(Vec<u8>),
    Count,
    Snapshot,
    Restore(usize),
    /// Export a snapshot through the wire format and install it into the same storage.
    StreamRoundTrip(usize, usize),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..3)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        2 => (
            prop::collection::vec((key(), prop::option::of(value())), 0..5),
            prop::option::of((key(), value())),
            any::<bool>()
        )
            .prop_map(|(ops, meta, unsynced)| Op::Batch(ops, meta, unsynced)),
        2 => key().prop_map(Op::Get),
        2 => (prop::option::of(key()), prop::option::of(key()), 1usize..6)
            .prop_map(|(a, b, l)| Op::Scan(a, b, l)),
        1 => key().prop_map(Op::ScanPrefix),
        1 => Just(Op::Count),
        1 => Just(Op::Snapshot),
        1 => (0usize..4).prop_map(Op::Restore),
        1 => (0usize..4, 1usize..40).prop_map(|(s, c)| Op::StreamRoundTrip(s, c)),
    ]
}

#[derive(Clone)]
struct Model {
    data: Map,
    meta: Map,
}

async fn collect(mut s: odgm_sim::storage::KvStream) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        out.push(p.expect("stream item"));
    }
    out
}

async fn run(engine: EngineKind, write_back: bool, ops: Vec<Op>) {
    let mut store: DynStorage = open_ephemeral(engine, 7).expect("open");
    if write_back {
        store = WriteBack::new(store);
    }
    let mut model = Model {
        data: Map::new(),
        meta: Map::new(),
    };
    // Snapshots the model still expects to be held, oldest first.
    let mut snaps: Vec<(odgm_sim::storage::ZeroCopySnapshot, Model)> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let ctx = format!("{engine} step {step} {op:?}");
        match op {
            Op::Put(k, v) => {
                store.put(&k, &v).await.expect(&ctx);
                model.data.insert(k, v);
            }
            Op::Delete(k) => {
                store.delete(&k).await.expect(&ctx);
                model.data.remove(&k);
            }
            Op::Batch(ops, meta, unsynced) => {
                let mut b = WriteBatch::new();
                b.unsynced = unsynced;
                for (k, v) in ops {
                    match v {
                        Some(v) => {
                            b.put(k.clone(), v.clone());
                            model.data.insert(k, v);
                        }
                        None => {
                            b.delete(k.clone());
                            model.data.remove(&k);
                        }
                    }
                }
                if let Some((k, v)) = meta {
                    b.put_meta(k.clone(), v.clone());
                    model.meta.insert(k, v);
                }
                store.write_batch(b).await.expect(&ctx);
            }
            Op::Get(k) => {
                assert_eq!(
                    store.get(&k).await.expect(&ctx),
                    model.data.get(&k).cloned(),
                    "{ctx}"
                );
                assert_eq!(
                    store.get_meta(&k).await.expect(&ctx),
                    model.meta.get(&k).cloned(),
                    "{ctx}"
                );
            }
            Op::Scan(a, b, limit) => {
                let range = KeyRange {
                    start: a.map_or(Bound::Unbounded, Bound::Included),
                    end: b.map_or(Bound::Unbounded, Bound::Excluded),
                };
                let got = store.scan(range.clone(), limit).await.expect(&ctx);
                let want: Vec<_> = model
                    .data
                    .iter()
                    .filter(|(k, _)| range.contains(k))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
            Op::ScanPrefix(p) => {
                let got = store.scan_prefix(&p, usize::MAX).await.expect(&ctx);
                let want: Vec<_> = model
                    .data
                    .iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
            Op::Count => {
                assert_eq!(
                    store.count().await.expect(&ctx),
                    model.data.len() as u64,
                    "{ctx}"
                );
                let all = collect(store.export_stream().await.expect(&ctx)).await;
                let want: Vec<_> = model.data.clone().into_iter().collect();
                assert_eq!(all, want, "{ctx}");
            }
            Op::Snapshot => {
                let s = store.create_zero_copy_snapshot().await.expect(&ctx);
                assert_eq!(store.latest_snapshot().await.expect(&ctx), Some(s.clone()));
                snaps.push((s, model.clone()));
                if snaps.len() > MAX_HELD_SNAPSHOTS {
                    snaps.remove(0);
                }
            }
            Op::Restore(i) => {
                let Some((s, m)) = snaps.get(i % snaps.len().max(1)).cloned() else {
                    continue;
                };
                store.restore_from_snapshot(&s).await.expect(&ctx);
                model = m;
                // A restore may release snapshots taken before it (fjall reuses their space).
                snaps.clear();
            }
            Op::StreamRoundTrip(i, chunk) => {
                let Some((s, m)) = snaps.get(i % snaps.len().max(1)).cloned() else {
                    continue;
                };
                let pairs = store.create_kv_snapshot_stream(&s).await.expect(&ctx);
                let header = SnapshotHeader {
                    snapshot_id: s.snapshot_id.clone(),
                    raft: None,
                    meta: m.meta.clone().into_iter().collect(),
                };
                // Writes continue while the stream is read: they must not leak into it.
                store.put(b"\x03\x03\x03", b"late").await.expect(&ctx);
                let chunks = stream::encode(&header, pairs, chunk).expect(&ctx);
                let (h, decoded) = stream::decode(chunks).await.expect(&ctx);
                assert_eq!(h, header, "{ctx}");
                let n = store
                    .install_kv_snapshot_from_stream(decoded, h.meta)
                    .await
                    .expect(&ctx);
                assert_eq!(n, m.data.len() as u64, "{ctx}");
                model = m;
                snaps.clear();
            }
        }
    }
    let all = collect(store.export_stream().await.expect("final export")).await;
    assert_eq!(
        all,
        model.data.into_iter().collect::<Vec<_>>(),
        "{engine} final state"
    );
}

fn check(engine: EngineKind, ops: Vec<Op>) {
    futures::executor::block_on(run(engine, false, ops));
}

/// The same storage behind [`WriteBack`], whose unsynced batches wait in memory.
fn check_write_back(engine: EngineKind, ops: Vec<Op>) {
    futures::executor::block_on(run(engine, true, ops));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        check(EngineKind::Memory, ops);
    }

    #[test]
    fn redb_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        check(EngineKind::Redb, ops);
    }

    #[test]
    fn fjall_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        check(EngineKind::Fjall, ops);
    }

    #[test]
    fn memory_behind_write_back_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        check_write_back(EngineKind::Memory, ops);
    }

    #[test]
    fn redb_behind_write_back_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        check_write_back(EngineKind::Redb, ops);
    }
}

/// A stream that fails part-way must leave the old state in place (atomic install).
#[test]
fn failed_install_keeps_old_state() {
    for engine in EngineKind::ALL {
        futures::executor::block_on(async {
            let store = open_ephemeral(engine, 1).unwrap();
            store.put(b"old", b"1").await.unwrap();
            let bad = futures::stream::iter(vec![
                Ok((b"a".to_vec(), b"x".to_vec())),
                Err(odgm_sim::storage::StorageError::Io("link dropped".into())),
            ])
            .boxed();
            assert!(store
                .install_kv_snapshot_from_stream(bad, vec![])
                .await
                .is_err());
            assert_eq!(
                store.get(b"old").await.unwrap(),
                Some(b"1".to_vec()),
                "{engine}"
            );
            assert_eq!(store.get(b"a").await.unwrap(), None, "{engine}");
            assert_eq!(store.count().await.unwrap(), 1, "{engine}");
        });
    }
}

/// Keys too large for the format are refused before anything is written.
#[test]
fn oversized_keys_are_refused() {
    for engine in EngineKind::ALL {
        futures::executor::block_on(async {
            let store = open_ephemeral(engine, 1).unwrap();
            let big = vec![0u8; odgm_sim::storage::MAX_KEY_BYTES + 1];
            assert!(store.put(&big, b"v").await.is_err(), "{engine}");
            assert_eq!(store.count().await.unwrap(), 0);
        });
    }
}

/// What a fjall store holds after an install survives a restart: the installed pairs, none
/// of the old ones, twice over (the second install reuses the generation the first left).
#[test]
fn fjall_keeps_an_installed_snapshot_across_a_restart() {
    use odgm_sim::storage::{
        ApplicationDataStorage, FjallOptions, FjallStorage, SnapshotCapableStorage,
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fjall-reopen");
    let _ = std::fs::remove_dir_all(&dir);
    futures::executor::block_on(async {
        let mut expect: Map = BTreeMap::new();
        for round in 0..3u8 {
            let store = FjallStorage::open(&dir, FjallOptions::default()).unwrap();
            for (k, v) in &expect {
                assert_eq!(
                    store.get(k).await.unwrap().as_ref(),
                    Some(v),
                    "round {round}"
                );
            }
            assert_eq!(
                store.count().await.unwrap(),
                expect.len() as u64,
                "round {round}"
            );
            let mut b = WriteBatch::new();
            b.put(vec![b'o', round], vec![round]);
            b.unsynced = true;
            store.write_batch(b).await.unwrap();
            store.put(b"synced", &[round]).await.unwrap();
            expect = (0..5u8)
                .map(|i| (vec![b'k', round, i], vec![round, i]))
                .collect();
            let pairs: Vec<_> = expect.clone().into_iter().map(Ok).collect();
            store
                .install_kv_snapshot_from_stream(futures::stream::iter(pairs).boxed(), vec![])
                .await
                .unwrap();
            for (k, v) in &expect {
                assert_eq!(
                    store.get(k).await.unwrap().as_ref(),
                    Some(v),
                    "round {round}"
                );
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
