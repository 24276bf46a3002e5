use std::sync::Arc;

use futures::executor::block_on;
use openraft::CommittedLeaderId;

use super::*;
use crate::raft::types::{ShardCommand, ShardOp};
use crate::storage::{open_ephemeral, EngineKind, PowerLossMode, RedbStorage, SimDisk};

fn put(index: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ShardCommand {
            ops: vec![ShardOp::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            }],
        }),
    }
}

async fn pairs_of(storage: &DynStorage, snapshot: &ZeroCopySnapshot) -> Vec<Pair> {
    let stream = storage.create_kv_snapshot_stream(snapshot).await.unwrap();
    stream.map(|p| p.unwrap()).collect().await
}

#[test]
fn a_snapshot_holds_the_state_of_when_its_builder_was_taken() {
    // openraft builds snapshots in a task of its own while applies go on.
    block_on(async {
        let storage = open_ephemeral(EngineKind::Memory, 1).unwrap();
        let mut sm = ObjectShardStateMachine::open(storage.clone())
            .await
            .unwrap();
        sm.apply([put(1, "k", "a")]).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        sm.apply([put(2, "k", "b")]).await.unwrap();
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
        let SnapshotData::Local { snapshot, .. } = *snap.snapshot else {
            panic!("a built snapshot is local");
        };
        let pairs = pairs_of(&storage, &snapshot).await;
        assert_eq!(pairs, vec![(b"k".to_vec(), b"a".to_vec())]);
    });
}

#[test]
fn applies_lost_in_a_power_loss_leave_a_consistent_older_state() {
    block_on(async {
        let disk = SimDisk::new(7, crate::storage::DiskFaults::none());
        let open = |disk: &SimDisk| -> DynStorage {
            Arc::new(RedbStorage::open_on_disk(disk.clone()).unwrap())
        };
        let mut sm = ObjectShardStateMachine::open(open(&disk)).await.unwrap();
        let n = SYNC_EVERY + 3;
        for i in 1..=n {
            sm.apply([put(i, "k", &i.to_string())]).await.unwrap();
        }
        disk.fence();
        drop(sm);
        disk.power_loss(PowerLossMode::DropAll);
        // The synced batch survives, the ones after it are gone: applied id and data agree.
        let storage = open(&disk);
        let mut sm = ObjectShardStateMachine::open(storage.clone())
            .await
            .unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(SYNC_EVERY));
        let v = storage.get(b"k").await.unwrap();
        assert_eq!(v, Some(SYNC_EVERY.to_string().into_bytes()));

        // Taking a snapshot builder syncs: nothing it covers can be lost afterwards.
        sm.apply([put(SYNC_EVERY + 1, "k", "x")]).await.unwrap();
        let _builder = sm.get_snapshot_builder().await;
        disk.fence();
        drop(sm);
        disk.power_loss(PowerLossMode::DropAll);
        let mut sm = ObjectShardStateMachine::open(open(&disk)).await.unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(SYNC_EVERY + 1));
    });
}

/// A purge past what the state machine holds durably waits for it (here: for the sync a
/// snapshot builder makes), and gives up when an install fails.
#[cfg(madsim)]
#[test]
fn a_purge_waits_until_the_purged_effects_are_durable() {
    use openraft::storage::RaftLogStorage;

    use crate::raft::LogStore;
    use crate::storage::MemoryDevice;

    let rt = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
    rt.block_on(async {
        let app = open_ephemeral(EngineKind::Memory, 1).unwrap();
        let mut sm = ObjectShardStateMachine::open(app).await.unwrap();
        let gate = sm.durable_applied();
        let mut log = LogStore::open(Arc::new(MemoryDevice::new()), 1 << 16)
            .unwrap()
            .with_purge_gate(gate.clone());
        for i in 1..=3 {
            sm.apply([put(i, "k", "v")]).await.unwrap();
        }
        assert!(!gate.covers(1), "unsynced applies are not durable");
        let purge = madsim::task::spawn(async move {
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3)).await
        });
        madsim::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(
            !purge.is_finished(),
            "the purge went ahead of the state machine"
        );
        let _builder = sm.get_snapshot_builder().await;
        assert!(gate.covers(3));
        purge
            .await
            .unwrap()
            .expect("the purge completes once the applies are durable");

        // An install that fails releases a waiting purge with an error.
        let mut log = LogStore::open(Arc::new(MemoryDevice::new()), 1 << 16)
            .unwrap()
            .with_purge_gate(gate.clone());
        let purge = madsim::task::spawn(async move {
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 10))
                .await
        });
        madsim::time::sleep(std::time::Duration::from_secs(1)).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Err(StorageError::Io("broken stream".into())))
            .await
            .unwrap();
        drop(tx);
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 10)),
            last_membership: StoredMembership::default(),
            snapshot_id: "s".into(),
        };
        assert!(sm
            .install_snapshot(&meta, Box::new(SnapshotData::Incoming(rx)))
            .await
            .is_err());
        assert!(
            purge.await.unwrap().is_err(),
            "a failed install must not leave the purge waiting"
        );
    });
}
