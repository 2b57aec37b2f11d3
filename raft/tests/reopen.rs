//! Shutting a cluster node down and opening the same data dir again at once, in one process (as
//! `causeway init` followed by a start does): shutdown must leave nothing holding the database.

mod common;

use std::collections::BTreeSet;

use causeway_catalog::CommandResult;
use causeway_proto::EndpointKey;
use causeway_raft::{ClusterNode, MemberNode, RaftSettings};
use common::{endpoint, register, wait_until_leader};
use iroh::SecretKey;

/// Shutdown-and-reopen rounds: the race this guards against lost about one round in four.
const ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_then_immediate_reopen_of_the_same_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let secret = SecretKey::generate();
    let id = EndpointKey(*secret.public().as_bytes());
    for round in 0..ROUNDS {
        let ep = endpoint(secret.clone()).await;
        let cluster = ClusterNode::start(id, ep.clone(), &path, RaftSettings::default(), BTreeSet::new())
            .await
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        if round == 0 {
            let addrs = ep.bound_sockets();
            cluster
                .initialize_single(MemberNode { addrs })
                .await
                .expect("initialize");
        }
        wait_until_leader(&cluster).await;
        // A write per round keeps the storage writer busy right up to the shutdown.
        let result = cluster.write(register(format!("r{round}"))).await.expect("write");
        assert!(matches!(result, CommandResult::ResourceRegistered(_)), "{result:?}");
        // Every earlier round's write survived its shutdown: registering it again is a duplicate.
        if round > 0 {
            let again = cluster.write(register(format!("r{}", round - 1))).await.expect("write");
            assert!(!matches!(again, CommandResult::ResourceRegistered(_)), "{again:?}");
        }
        cluster.shutdown().await;
        // Shutdown returned because every other holder let go, not because it gave up waiting:
        // only the node's handle and this one hold the database now.
        let db = cluster.database();
        assert_eq!(
            std::sync::Arc::strong_count(&db),
            2,
            "round {round}: database still held"
        );
        drop(db);
        drop(cluster);
        ep.close().await;
    }
}
