//! Concurrent writes share log entries (`Command::Batch`), yet each writer gets its own command's
//! result, rejections included, and the batched entries read back after a restart.

mod common;

use std::collections::BTreeSet;

use causeway_catalog::{CommandResult, Rejection};
use causeway_proto::EndpointKey;
use causeway_raft::{ClusterNode, RaftSettings};
use common::{endpoint, register, single_node_leader, wait_until_leader};

/// Pairs of writers race for the same names, so that a batch holds commands that are rejected
/// beside ones that apply.
const NAMES: usize = 32;
const WRITES_EACH: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_in_shared_entries_each_get_their_own_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, ep) = single_node_leader(dir.path()).await;
    let first_index = cluster.status().await.last_log_index;

    let mut writers = Vec::new();
    for w in 0..2 * NAMES {
        let cluster = cluster.clone();
        writers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..WRITES_EACH {
                let name = format!("n{}-{i}", w % NAMES);
                let result = cluster.write(register(name.clone())).await.expect("write");
                results.push((name, result));
            }
            results
        }));
    }
    let mut registered = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    for w in writers {
        for (name, result) in w.await.expect("writer") {
            match result {
                CommandResult::ResourceRegistered(r) if r.name == name => assert!(registered.insert(name)),
                CommandResult::Rejected(Rejection::ResourceExists(n)) if n == name => assert!(rejected.insert(name)),
                other => panic!("{name} was answered with {other:?}"),
            }
        }
    }
    // Each name was registered by one writer of its pair and refused to the other.
    assert_eq!(registered.len(), NAMES * WRITES_EACH);
    assert_eq!(registered, rejected);
    let writes = 2 * NAMES * WRITES_EACH;
    let entries = cluster.status().await.last_log_index - first_index;
    assert!(
        entries < writes as u64,
        "{writes} concurrent writes took {entries} log entries: none were batched"
    );

    // The batches read back from the log and the state machine after a restart.
    let secret = ep.secret_key().clone();
    cluster.shutdown().await;
    drop(cluster);
    ep.close().await;
    let ep = endpoint(secret.clone()).await;
    let id = EndpointKey(*secret.public().as_bytes());
    let cluster = ClusterNode::start(
        id,
        ep.clone(),
        &dir.path().join("raft.redb"),
        RaftSettings::default(),
        BTreeSet::new(),
    )
    .await
    .expect("restart");
    wait_until_leader(&cluster).await;
    for name in &registered {
        let again = cluster.write(register(name.clone())).await.expect("write");
        assert_eq!(again, CommandResult::Rejected(Rejection::ResourceExists(name.clone())));
    }
    cluster.shutdown().await;
    ep.close().await;
}
