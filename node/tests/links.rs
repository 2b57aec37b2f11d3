//! Federation links between real clusters: asymmetric then mutual, health when a peer dies and
//! returns, link work moving with leadership, new cards reaching linked peers, removal and
//! relinking.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The bound within which a dead peer must read `failing` (issue: 10 s on loopback).
const DEAD_PEER_BOUND: Duration = Duration::from_secs(10);

fn link(node: &NodeProc, name: &str) -> Option<Value> {
    node.try_json(&["link", "list"])?
        .as_array()?
        .iter()
        .find(|l| l["name"] == name && l["direction"] == "outbound")
        .cloned()
}

fn wait_link(node: &NodeProc, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{} link {name}: {what}", node.name), || {
        link(node, name).filter(|l| pred(l))
    })
}

#[test]
fn single_node_clusters_link_asymmetric_then_mutual_fail_and_recover() {
    let h = Harness::new();
    let mut a = h.init("a");
    let mut b = h.init("b");
    a.start();
    b.start();

    link_add(&a, &b, "beta");
    let l = wait_link(&a, "beta", "active", |l| l["state"] == "active");
    assert_eq!(l["mutual"], false, "only a links b: {l}");
    assert_eq!(l["peer"], cluster_id(&b).as_str(), "pinned to b's cluster");
    assert!(l["last_heartbeat_ms_ago"].is_u64());
    // b sees a as an inbound peer it grants nothing to.
    let inbound = wait_for("b to list a as inbound", || {
        b.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .find(|l| l["direction"] == "inbound")
            .cloned()
    });
    assert_eq!(inbound["peer"], cluster_id(&a).as_str());
    assert_eq!(inbound["state"], "pending");

    link_add(&b, &a, "alpha");
    wait_link(&a, "beta", "mutual", |l| l["state"] == "active" && l["mutual"] == true);
    wait_link(&b, "alpha", "mutual", |l| l["state"] == "active" && l["mutual"] == true);

    // Kill the peer: failing within the bound, never active meanwhile.
    b.kill9();
    let start = Instant::now();
    let l = wait_link(&a, "beta", "failing", |l| l["state"] == "failing");
    assert!(start.elapsed() < DEAD_PEER_BOUND, "failing after {:?}", start.elapsed());
    assert!(l["reason"].is_string(), "a failing link says why: {l}");
    assert_eq!(l["mutual"], false);
    b.start();
    wait_link(&a, "beta", "active again", |l| {
        l["state"] == "active" && l["mutual"] == true
    });

    // Remove: tombstoned, the peer notices, and relinking works without cleanup.
    let out = a.cli(&["link", "remove", "beta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_link(&a, "beta", "removed", |l| l["state"] == "removed");
    wait_link(&b, "alpha", "no longer mutual", |l| {
        l["state"] == "active" && l["mutual"] == false
    });
    // PEER may also be the cluster ID or an endpoint ID.
    link_add(&a, &b, "beta");
    wait_link(&a, "beta", "relinked", |l| {
        l["state"] == "active" && l["mutual"] == true
    });
    let out = a.cli(&["link", "remove", &cluster_id(&b)]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_add(&a, &b, "beta");
    let out = a.cli(&["link", "remove", &b.endpoint_id()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.cli(&["link", "remove", "nobody"]);
    assert!(stderr(&out).contains("no link matches"), "{}", stderr(&out));
}

#[test]
fn three_node_clusters_link_and_link_work_follows_the_leader() {
    let h = Harness::new();
    let a = h.three_node_cluster(|_| {});
    let hb = Harness::new();
    let b = hb.three_node_cluster(|_| {});

    // Link through any member: a's follower adds, b's node 2 is the address given.
    link_add(&a[1], &b[2], "beta");
    let l = wait_link(&a[0], "beta", "active with b's full card", |l| {
        l["state"] == "active" && l["endpoints"].as_array().is_some_and(|e| e.len() == 3)
    });
    assert_eq!(l["mutual"], false);
    link_add(&b[0], &a[2], "alpha");
    wait_link(&a[2], "beta", "mutual", |l| l["mutual"] == true);
    wait_link(&b[1], "alpha", "mutual", |l| l["mutual"] == true);

    // Kill a's leader: the new leader carries on the link work.
    let mut a = a;
    let old = leader_of(&a[0]).unwrap();
    let li = a.iter().position(|n| n.endpoint_id() == old).unwrap();
    a[li].kill9();
    let other = (li + 1) % 3;
    wait_for("a new leader in a", || leader_of(&a[other]).filter(|l| *l != old));
    wait_link(&a[other], "beta", "active from the new leader", |l| {
        l["state"] == "active" && l["mutual"] == true
    });
    // b's link to a keeps working through a's remaining endpoints.
    wait_link(&b[0], "alpha", "still active", |l| l["state"] == "active");
}

#[test]
fn peer_adds_a_node_and_its_new_card_is_accepted() {
    let h = Harness::new();
    let mut a1 = h.init("a1");
    a1.start();
    let mut b = h.init("b");
    b.start();
    link_add(&a1, &b, "beta");
    link_add(&b, &a1, "alpha");
    let l = wait_link(&b, "alpha", "mutual", |l| l["mutual"] == true);
    let epoch = l["card_epoch"].as_u64().unwrap();

    let mut a2 = h.join("a2", &a1);
    a2.start();
    let mut a3 = h.join("a3", &a1);
    a3.start();
    wait_for_voters(&a1, 3);
    let a2_id = a2.endpoint_id();
    let l = wait_link(&b, "alpha", "a's new card", |l| {
        l["card_epoch"].as_u64().is_some_and(|e| e > epoch)
            && l["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == a2_id.as_str()))
    });
    assert_eq!(l["endpoints"].as_array().unwrap().len(), 3, "{l}");

    // a's founder dies: a new member of a, known to b only through the new card, now heartbeats.
    a1.kill9();
    wait_for("a new leader in a", || leader_of(&a2).filter(|l| *l != a1_id_of(&h)));
    wait_link(&a2, "beta", "active from a new member", |l| {
        l["state"] == "active" && l["mutual"] == true
    });
    wait_link(&b, "alpha", "active via a2/a3", |l| l["state"] == "active");
    let _ = &mut a3;
}

fn a1_id_of(h: &Harness) -> String {
    let key = causeway::datadir::read_key(&h.path("a1")).unwrap();
    causeway::node::endpoint_key(&key.public()).to_string()
}
