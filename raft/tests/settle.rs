//! A write is answered as soon as its entry is applied, a moment before the apply's transaction
//! commits; `settle` is what lets a caller read its own writes from the database without a
//! read barrier.

mod common;

use causeway_catalog::CommandResult;
use common::{register, single_node_leader};
use redb::ReadableDatabase;

/// Concurrent writers: enough that storage rounds carry many applies, so an answer given before
/// its round commits would be read back missing often if `settle` did not wait for the commit.
const WRITERS: usize = 32;
const WRITES_EACH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_write_is_in_the_database_after_settle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, ep) = single_node_leader(dir.path()).await;

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
