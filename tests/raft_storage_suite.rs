//! openraft's own storage conformance suite (`openraft::testing::Suite`) against the log store
//! and state machine, on every engine.

use odgm_sim::raft::{LogStore, ObjectShardStateMachine, TypeConfig};
use odgm_sim::storage::{open_ephemeral, EngineKind};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder(EngineKind);

impl StoreBuilder<TypeConfig, LogStore, ObjectShardStateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, ObjectShardStateMachine), StorageError<u64>> {
        let log = open_ephemeral(self.0, 1).expect("log storage");
        let app = open_ephemeral(self.0, 2).expect("app storage");
        Ok((
            (),
            LogStore::new(log),
            ObjectShardStateMachine::open(app).await?,
        ))
    }
}

#[test]
fn openraft_suite_memory() {
    Suite::test_all(Builder(EngineKind::Memory)).expect("suite");
}

#[test]
fn openraft_suite_redb() {
    Suite::test_all(Builder(EngineKind::Redb)).expect("suite");
}

#[test]
fn openraft_suite_fjall() {
    Suite::test_all(Builder(EngineKind::Fjall)).expect("suite");
}
