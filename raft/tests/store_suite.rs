//! Runs openraft's storage conformance suite against the redb log and state machine, so a
//! broken append, truncation, purge or snapshot fails here.

use causeway_raft::{
    TypeConfig,
    store::{self, LogStore, StateMachineStore},
};
use openraft::{
    StorageError,
    testing::log::{StoreBuilder, Suite},
    type_config::TypeConfigExt,
};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let (log, sm) = store::open(&dir.path().join("raft.redb"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_passes_openraft_suite() {
    Suite::test_all(RedbBuilder).await.expect("storage suite");
}

/// The committed index is written at most every so often during a run; a clean stop must still
/// leave the newest one on disk, so a restart re-applies up to it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_keeps_the_newest_committed_index() {
    use openraft::{storage::RaftLogStorage, testing::log_id};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let leader = causeway_proto::EndpointKey([7; 32]);
    let mut committed = None;
    for index in [3, 9] {
        let (mut log, _sm) = store::open(&path).expect("open");
        assert_eq!(log.read_committed().await.expect("read"), committed);
        committed = Some(log_id::<TypeConfig>(2, leader, index));
        log.save_committed(committed).await.expect("save");
        assert_eq!(log.read_committed().await.expect("read"), committed);
        let writer = log.writer();
        tokio::task::spawn_blocking(move || writer.stop()).await.expect("stop");
    }
    let (mut log, _sm) = store::open(&path).expect("open");
    assert_eq!(log.read_committed().await.expect("read"), committed);
}
