//! Every `ShardState` method, transactions included, on every shard kind and engine, on one
//! node: each combination runs the same script, and every combination must produce the same
//! observable trace (versions aside, which differ by construction).
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use odgm_sim::shard::factory::AddressBook;
use odgm_sim::shard::{
    DynShard, NodeClock, NodeContext, ObjectEntry, ShardError, ShardFactory, ShardKind,
    ShardMetadata, ShardOptions,
};
use odgm_sim::storage::{open_ephemeral, EngineKind, MemoryDevice};

/// A fresh address per combination (madsim does not reuse a killed node's address).
fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, i as u8, 1))
}

async fn shard(kind: ShardKind, engine: EngineKind, ip: IpAddr) -> DynShard {
    let mut book = BTreeMap::new();
    book.insert(1, SocketAddr::new(ip, 7000));
    let ctx = NodeContext {
        node: 1,
        addresses: AddressBook(book),
        app: open_ephemeral(engine, 1).unwrap(),
        log: Some(std::sync::Arc::new(MemoryDevice::new())),
        clock: NodeClock::new(),
        probe: Default::default(),
    };
    let meta = ShardMetadata {
        id: 1,
        collection: "things".into(),
        partition_id: 0,
        replicas: vec![1],
        kind,
        options: ShardOptions::default(),
    };
    ShardFactory::create(meta, ctx).await.unwrap()
}

fn obj(v: &str) -> ObjectEntry {
    ObjectEntry::with_field("v", v.as_bytes().to_vec())
}

/// What a caller can observe, with versions removed.
fn show(e: &Option<ObjectEntry>) -> String {
    match e {
        Some(e) => format!(
            "{:?}{}",
            e.fields
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).to_string()))
                .collect::<Vec<_>>(),
            if e.tombstone { "(tombstone)" } else { "" }
        ),
        None => "none".into(),
    }
}

async fn script(s: DynShard) -> Vec<String> {
    let mut t = Vec::new();
    // Not ready before initialize.
    t.push(format!("{:?}", s.get(1).await.err()));
    s.initialize().await.unwrap();
    assert!(*s.watch_readiness().borrow());
    // Raft: wait for the single node to lead.
    for _ in 0..100 {
        if s.count().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    t.push(format!("empty count {}", s.count().await.unwrap()));
    t.push(format!("empty get {}", show(&s.get(1).await.unwrap())));
    let v1 = s.set(1, obj("a")).await.unwrap();
    let v2 = s.set(1, obj("b")).await.unwrap();
    assert!(v2 > v1, "versions grow: {v1:?} {v2:?}");
    let got = s.get(1).await.unwrap();
    assert_eq!(
        got.as_ref().map(|e| e.version),
        Some(v2),
        "get returns the version set"
    );
    t.push(format!("get after overwrite {}", show(&got)));
    // Ids that share prefixes.
    for id in [0x0100, 0x0101, 0x0102, 0x0200, u64::MAX] {
        s.set(id, obj(&format!("{id:x}"))).await.unwrap();
    }
    t.push(format!("count {}", s.count().await.unwrap()));
    let prefix = &0x0100u64.to_be_bytes()[..7];
    let scanned = s.scan(prefix, 100).await.unwrap();
    t.push(format!(
        "scan prefix {:?}",
        scanned.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    ));
    let limited = s.scan(&[], 2).await.unwrap();
    t.push(format!(
        "scan limit {:?}",
        limited.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    ));
    t.push(format!(
        "scan bad prefix {:?}",
        s.scan(&[0; 9], 1).await.err()
    ));
    s.delete(0x0101).await.unwrap();
    s.delete(999).await.unwrap();
    t.push(format!(
        "deleted get {}",
        show(&s.get(0x0101).await.unwrap())
    ));
    t.push(format!("count after delete {}", s.count().await.unwrap()));
    let all = s.scan(&[], 100).await.unwrap();
    t.push(format!(
        "scan all {:?}",
        all.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    ));
    s.batch_set(vec![(10, obj("x")), (11, obj("y"))])
        .await
        .unwrap();
    s.batch_delete(vec![10, 0x0200]).await.unwrap();
    t.push(format!(
        "after batches {} {} {} count {}",
        show(&s.get(10).await.unwrap()),
        show(&s.get(11).await.unwrap()),
        show(&s.get(0x0200).await.unwrap()),
        s.count().await.unwrap()
    ));
    // Transactions: read-your-writes, atomic commit, rollback, conflict.
    let mut tx = s.begin_transaction().await.unwrap();
    t.push(format!("tx read {}", show(&tx.get(1).await.unwrap())));
    tx.set(20, obj("t1")).await.unwrap();
    tx.delete(1).await.unwrap();
    t.push(format!("tx own write {}", show(&tx.get(20).await.unwrap())));
    t.push(format!("tx own delete {}", show(&tx.get(1).await.unwrap())));
    t.push(format!(
        "outside before commit {}",
        show(&s.get(20).await.unwrap())
    ));
    tx.commit().await.unwrap();
    t.push(format!(
        "after commit {} {}",
        show(&s.get(20).await.unwrap()),
        show(&s.get(1).await.unwrap())
    ));
    let mut tx = s.begin_transaction().await.unwrap();
    tx.set(21, obj("never")).await.unwrap();
    tx.rollback().await.unwrap();
    t.push(format!(
        "after rollback {}",
        show(&s.get(21).await.unwrap())
    ));
    let mut tx = s.begin_transaction().await.unwrap();
    tx.get(11).await.unwrap();
    tx.set(22, obj("conflicted")).await.unwrap();
    s.set(11, obj("changed underneath")).await.unwrap();
    t.push(format!("conflict {:?}", tx.commit().await.err()));
    t.push(format!(
        "after conflict {}",
        show(&s.get(22).await.unwrap())
    ));
    let mut tx = s.begin_transaction().await.unwrap();
    tx.get(23).await.unwrap();
    s.set(23, obj("appeared")).await.unwrap();
    t.push(format!("conflict on absent {:?}", tx.commit().await.err()));
    // Snapshots.
    let snap = s.create_snapshot().await.unwrap();
    assert!(!snap.is_empty());
    s.compact_storage().await.unwrap();
    // Close.
    s.close().await.unwrap();
    t.push(format!("closed {:?}", s.get(1).await.err()));
    t
}

#[madsim::test]
async fn every_kind_and_engine_behaves_the_same() {
    let handle = madsim::runtime::Handle::current();
    let mut traces: Vec<(String, Vec<String>)> = Vec::new();
    for kind in [
        ShardKind::None,
        ShardKind::Eventual,
        ShardKind::Mst,
        ShardKind::Raft,
    ] {
        for engine in [EngineKind::Memory, EngineKind::Redb, EngineKind::Fjall] {
            let ip = ip(traces.len());
            let node = handle.create_node().ip(ip).build();
            let trace = node
                .spawn(async move { script(shard(kind, engine, ip).await).await })
                .await
                .unwrap();
            handle.kill(node.id());
            traces.push((format!("{}/{}", kind.name(), engine), trace));
        }
    }
    let (first_name, first) = &traces[0];
    assert!(first.iter().any(|l| l.contains("Conflict")), "{first:#?}");
    for (name, trace) in &traces[1..] {
        assert_eq!(trace, first, "{name} differs from {first_name}");
    }
}

/// Restoring a snapshot brings back the state it captured (all kinds but Raft, where a
/// replica takes its state from the log or the leader).
#[madsim::test]
async fn restore_returns_to_the_snapshot() {
    let handle = madsim::runtime::Handle::current();
    let mut n = 0;
    for kind in [
        ShardKind::None,
        ShardKind::Eventual,
        ShardKind::Mst,
        ShardKind::Raft,
    ] {
        for engine in [EngineKind::Memory, EngineKind::Redb, EngineKind::Fjall] {
            n += 1;
            let ip = ip(n);
            let node = handle.create_node().ip(ip).build();
            node.spawn(async move {
                let s = shard(kind, engine, ip).await;
                s.initialize().await.unwrap();
                for _ in 0..100 {
                    if s.count().await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                s.set(1, obj("kept")).await.unwrap();
                let snap = s.create_snapshot().await.unwrap();
                s.set(1, obj("lost")).await.unwrap();
                s.set(2, obj("lost too")).await.unwrap();
                let r = s.restore_from_snapshot(&snap).await;
                if kind == ShardKind::Raft {
                    assert!(matches!(r, Err(ShardError::Unsupported(_))), "{r:?}");
                    return;
                }
                r.unwrap();
                assert_eq!(show(&s.get(1).await.unwrap()), show(&Some(obj("kept"))));
                assert_eq!(s.get(2).await.unwrap(), None, "{kind:?}/{engine}");
                assert!(matches!(
                    s.restore_from_snapshot("snap-nope").await,
                    Err(ShardError::Invalid(_))
                ));
            })
            .await
            .unwrap();
            handle.kill(node.id());
        }
    }
}
