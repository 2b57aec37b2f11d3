//! Runs openraft's storage conformance suite against the redb log and state machine, so a
//! broken append, truncation, purge or snapshot fails here.

mod common;

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

/// A snapshot is a view of the state machine as of its build: entries applied after it do not
/// show in its bytes, and a member that installs it holds exactly that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_shows_the_state_machine_as_of_its_build() {
    use causeway_raft::types::Entry;
    use openraft::{
        entry::RaftEntry,
        storage::{RaftSnapshotBuilder, RaftStateMachine},
        testing::log_id,
    };

    let names = |db: &redb::Database| -> Vec<String> {
        use redb::ReadableDatabase;
        let txn = db.begin_read().expect("read");
        causeway_catalog::state::list_resources(&txn, None, 100)
            .expect("list")
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let leader = causeway_proto::EndpointKey([7; 32]);
    let register = |index: u64, name: &str| -> Result<_, std::io::Error> {
        let cmd = common::register(name.into());
        Ok((
            Entry::new_normal(log_id::<TypeConfig>(1, leader, index), cmd.into()),
            None,
        ))
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = store::open(&dir.path().join("leader.redb")).expect("open");
    sm.apply(futures::stream::iter([register(1, "before")]))
        .await
        .expect("apply");
    let built = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id::<TypeConfig>(1, leader, 1)));
    sm.apply(futures::stream::iter([register(2, "after")]))
        .await
        .expect("apply");
    // applied_state waits for the writer, so the database now shows both entries.
    assert_eq!(
        sm.applied_state().await.expect("applied").0,
        Some(log_id::<TypeConfig>(1, leader, 2))
    );
    assert_eq!(names(&sm.database()), ["after", "before"]);
    let current = sm.get_current_snapshot().await.expect("current").expect("some");
    assert_eq!(current.meta.last_log_id, Some(log_id::<TypeConfig>(1, leader, 2)));

    let (_log2, mut follower) = store::open(&dir.path().join("follower.redb")).expect("open");
    follower
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("install");
    assert_eq!(
        follower.applied_state().await.expect("applied").0,
        Some(log_id::<TypeConfig>(1, leader, 1))
    );
    assert_eq!(names(&follower.database()), ["before"]);
}

/// A database from a version that stored an encoded copy of the catalog as its snapshot loses
/// that copy when opened: a snapshot is now a view of the state machine, and the copy would only
/// take space.
#[test]
fn a_stored_snapshot_of_an_earlier_version_is_deleted_at_open() {
    use redb::{ReadableDatabase, TableDefinition};
    let stored: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(stored)
            .expect("table")
            .insert("data", vec![7u8; 4096].as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let (log, _sm) = store::open(&path).expect("open");
    let db = log.database();
    let txn = db.begin_read().expect("read");
    assert!(matches!(
        txn.open_table(stored),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
    drop(txn);
    drop(db);
    let writer = log.writer();
    writer.stop();
}
