//! openraft's own storage conformance suite (`openraft::testing::Suite`) against the Raft log
//! (the append-only segmented log) on each device it runs on, with the state machine on each
//! engine. The suite purges entries it never applied, so the log's purge gate (which waits for
//! the state machine) is left off; everything else is as a node opens it.

use std::sync::Arc;

use odgm_sim::raft::log_store::DEFAULT_SEGMENT_BYTES;
use odgm_sim::raft::{LogStore, ObjectShardStateMachine, TypeConfig};
use odgm_sim::storage::{
    open_ephemeral, DiskFaults, DynDevice, EngineKind, FileDevice, MemoryDevice, SimDisk,
};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

/// Where the log lives.
#[derive(Clone, Copy)]
enum Device {
    Memory,
    SimDisk,
    File,
}

struct Builder {
    device: Device,
    engine: EngineKind,
    segment_bytes: u64,
}

impl StoreBuilder<TypeConfig, LogStore, ObjectShardStateMachine, Option<tempfile::TempDir>>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<(Option<tempfile::TempDir>, LogStore, ObjectShardStateMachine), StorageError<u64>>
    {
        let (guard, device): (_, DynDevice) = match self.device {
            Device::Memory => (None, Arc::new(MemoryDevice::new())),
            Device::SimDisk => (
                None,
                Arc::new(SimDisk::new(7, DiskFaults::none()).backend()),
            ),
            Device::File => {
                let dir = tempfile::tempdir().expect("temp dir");
                let f = FileDevice::open(&dir.path().join("raft.log")).expect("log file");
                (Some(dir), Arc::new(f))
            }
        };
        let app = open_ephemeral(self.engine, 2).expect("app storage");
        let sm = ObjectShardStateMachine::open(app).await?;
        let log = LogStore::open(device, self.segment_bytes)?;
        Ok((guard, log, sm))
    }
}

fn suite(device: Device, engine: EngineKind, segment_bytes: u64) {
    Suite::test_all(Builder {
        device,
        engine,
        segment_bytes,
    })
    .expect("suite");
}

#[test]
fn openraft_suite_log_in_memory() {
    suite(Device::Memory, EngineKind::Memory, DEFAULT_SEGMENT_BYTES);
}

#[test]
fn openraft_suite_log_on_simdisk_redb() {
    suite(Device::SimDisk, EngineKind::Redb, DEFAULT_SEGMENT_BYTES);
}

/// Segments so small that most appends roll over to a new one and purges free slots.
#[test]
fn openraft_suite_log_on_simdisk_small_segments() {
    suite(Device::SimDisk, EngineKind::Redb, 512);
}

#[test]
fn openraft_suite_log_on_file_fjall() {
    suite(Device::File, EngineKind::Fjall, DEFAULT_SEGMENT_BYTES);
}
