//! Peers are answered from the cluster's current state: a member cut off from its majority
//! refuses catalog queries and blob requests instead of serving what may have been revoked;
//! `sync status` rows start from the mirror version the replicated state records; a mirror
//! follows an origin that removed and registered the name again (its versions start over).

mod common;

use causeway_proto::fed::{FedRequest, FedResponse};
use common::*;
use serde_json::Value;

fn pull_row(node: &NodeProc, name: &str) -> Option<Value> {
    node.try_json(&["sync", "status"])?
        .as_array()?
        .iter()
        .find(|t| t["resource"] == name && t["direction"] == "pull")
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_cut_off_from_its_majority_serves_peers_nothing() {
    let h = Harness::new();
    let nodes = h.three_node_cluster(|_| {});
    let leader = leader_of(&nodes[0]).expect("leader");
    let (isolated, others): (Vec<&NodeProc>, Vec<&NodeProc>) = {
        let follower = nodes
            .iter()
            .position(|n| n.endpoint_id() != leader)
            .expect("a follower");
        let (i, o): (Vec<_>, Vec<_>) = nodes.iter().enumerate().partition(|(k, _)| *k == follower);
        (
            i.into_iter().map(|(_, n)| n).collect(),
            o.into_iter().map(|(_, n)| n).collect(),
        )
    };
    let member = isolated[0];
    let src = h.path("report.bin");
    std::fs::write(&src, vec![7u8; 100_000]).expect("write");
    let root = nodes[0].register_artifact("report", &src)["content"]
        .as_str()
        .expect("root")
        .to_string();
    let out = nodes[0].cli(&["share", "report", "--with", "public", "--mode", "pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash: iroh_blobs::HashAndFormat = root.parse().expect("root");

    // While connected, the follower answers from confirmed state: the catalog and the blob.
    let stranger = CraftedCluster::new().await;
    let conn = stranger.connect(member).await;
    let query = FedRequest::CatalogQuery {
        after: None,
        limit: 100,
    };
    let FedResponse::Catalog { entries, .. } = fed_request(&conn, &query).await else {
        panic!("catalog expected");
    };
    assert_eq!(entries.len(), 1);
    let id: iroh::EndpointId = member.endpoint_id().parse().expect("id");
    let addr = iroh::EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", member.port).parse().expect("addr"));
    let blob = || async {
        let c = stranger
            .endpoint
            .connect(addr.clone(), iroh_blobs::ALPN)
            .await
            .expect("blob connect");
        iroh_blobs::get::request::get_blob(c, hash.hash).bytes().await
    };
    let mut served = None;
    for _ in 0..100 {
        // The follower replicates the content from the leader in the background.
        if let Ok(b) = blob().await {
            served = Some(b);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(served.expect("blob served by the follower").len(), 100_000);

    // Cut it off: with the other two paused, it cannot confirm the current state, so it
    // refuses rather than serve a share that may have been revoked meanwhile.
    for n in &others {
        n.pause();
    }
    let refused = fed_request(&conn, &query).await;
    let blob_refused = blob().await;
    for n in &others {
        n.resume();
    }
    match refused {
        FedResponse::Error(reason) => assert!(reason.contains("current state"), "{reason}"),
        other => panic!("an isolated member answered {other:?}"),
    }
    assert!(blob_refused.is_err(), "an isolated member served a blob");

    // Back with its majority, it serves again.
    let conn = stranger.connect(member).await;
    let mut answered = false;
    for _ in 0..100 {
        if let FedResponse::Catalog { entries, .. } = fed_request(&conn, &query).await {
            assert_eq!(entries.len(), 1);
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(answered, "the member never served again after healing");
}

#[test]
fn a_restarted_mirror_reads_its_recorded_version_and_follows_a_re_registered_origin() {
    let h = Harness::new();
    let (mut a, mut b) = h.linked_pair(|_| {}, |_| {});
    let src = h.path("v.bin");
    std::fs::write(&src, b"first").expect("write");
    a.register_artifact("v", &src);
    std::fs::write(&src, b"second").expect("write");
    assert!(a.cli(&["resource", "publish", "v"]).status.success());
    assert!(a.cli(&["share", "v", "--with", "b", "--mode", "pull"]).status.success());
    let mirror = b.json(&["sync", "v", "--from", "a"]);
    assert_eq!(mirror["version"], 2);

    // b restarts while a is down; a failed attempt must not make the current mirror read as
    // version 0.
    a.stop();
    b.stop();
    b.start();
    let out = b.cli(&["sync", "v", "--from", "a"]);
    assert!(!out.status.success(), "sync from a stopped peer succeeded");
    let row = pull_row(&b, "v").expect("a pull row");
    assert_eq!(row["version"], 2, "{row}");

    // a removes the resource and registers the name again: versions start over at 1, with
    // other content; b's mirror follows by itself (notification, then reconcile).
    a.start();
    wait_pinned(&b, "a");
    assert!(a.cli(&["resource", "remove", "v"]).status.success());
    std::fs::write(&src, b"third, a new resource").expect("write");
    let fresh = a.register_artifact("v", &src);
    assert_eq!(fresh["version"], 1);
    assert!(a.cli(&["share", "v", "--with", "b", "--mode", "pull"]).status.success());
    let file = b.dir.join("mirrors").join(cluster_id(&a)).join("artifacts").join("v");
    wait_for("b's mirror to follow the re-registered resource", || {
        let r = b.try_json(&["resource", "show", "v"])?;
        (r["version"] == 1 && r["content"] == fresh["content"]).then_some(())
    });
    assert_eq!(std::fs::read(&file).expect("mirror file"), b"third, a new resource");
    wait_for("the pull row to read synced at version 1", || {
        let row = pull_row(&b, "v")?;
        (row["state"] == "synced" && row["version"] == 1).then_some(())
    });
}
