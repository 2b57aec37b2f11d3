//! A node whose storage failed says so at once: the write that hit the failure gets an error,
//! and `settle` reports the failed storage instead of waiting for an apply that never commits.

mod common;

use std::collections::BTreeMap;

use causeway_catalog::Command;
use causeway_raft::ClusterError;
use common::{register, single_node_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_stops_the_storage_and_settle_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, ep) = single_node_leader(dir.path()).await;
    cluster.write(register("x".into())).await.expect("register");
    cluster.settle().await.expect("settle while healthy");

    // A row that no longer decodes: applying a command that reads it fails the storage round.
    let db = cluster.database();
    let txn = db.begin_write().expect("write txn");
    causeway_catalog::state::corrupt_resource_row(&txn, "x").expect("damage the row");
    txn.commit().expect("commit");
    drop(db);

    let update = Command::UpdateMetadata {
        name: "x".into(),
        set: BTreeMap::from([("k".into(), "v".into())]),
        remove: Vec::new(),
        now_ms: 2,
    };
    let written = cluster.write(update).await;
    assert!(
        written.is_err(),
        "the write whose apply failed was answered: {written:?}"
    );

    // Without the failure check, settle would wait out its deadline and report a timeout.
    match cluster.settle().await {
        Err(ClusterError::Storage(e)) => assert!(e.to_string().contains("failed"), "{e}"),
        other => panic!("settle on a failed storage: {other:?}"),
    }
    cluster.shutdown().await;
    ep.close().await;
}
