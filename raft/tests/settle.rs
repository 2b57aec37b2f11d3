//! A write is answered as soon as its entry is applied, a moment before the apply's transaction
//! commits; `settle` is what lets a caller read its own writes from the database without a
//! read barrier.

mod common;

use std::collections::BTreeSet;

use causeway_catalog::CommandResult;
use causeway_proto::EndpointKey;
use causeway_raft::{ClusterNode, MemberNode, RaftSettings};
use common::{endpoint, register, wait_until_leader};
use iroh::SecretKey;
use redb::ReadableDatabase;

/// Concurrent writers: enough that storage rounds carry many applies, so an answer given before
/// its round commits would be read back missing often if `settle` did not wait for the commit.
const WRITERS: usize = 32;
const WRITES_EACH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_write_is_in_the_database_after_settle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = SecretKey::generate();
    let id = EndpointKey(*secret.public().as_bytes());
    let ep = endpoint(secret).await;
    let cluster = ClusterNode::start(
        id,
        ep.clone(),
        &dir.path().join("raft.redb"),
        RaftSettings::default(),
        BTreeSet::new(),
    )
    .await
    .expect("start");
    cluster
        .initialize_single(MemberNode {
            addrs: ep.bound_sockets(),
        })
        .await
        .expect("initialize");
    wait_until_leader(&cluster).await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let cluster = cluster.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_EACH {
                let name = format!("w{w}-{i}");
                let result = cluster.write(register(name.clone())).await.expect("write");
                // Concurrent writes are proposed in batches: each writer must get its own answer.
                assert!(
                    matches!(&result, CommandResult::ResourceRegistered(r) if r.name == name),
                    "{name} was answered with {result:?}"
                );
                cluster.settle().await.expect("settle");
                let db = cluster.database();
                let txn = db.begin_read().expect("read");
                let found = causeway_catalog::state::get_resource(&txn, &name).expect("get");
                assert!(
                    found.is_some(),
                    "{name} was answered and settled but is not in the database"
                );
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    cluster.shutdown().await;
    ep.close().await;
}
