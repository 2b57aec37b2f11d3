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
