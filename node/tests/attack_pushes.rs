//! A linked peer pushing into this cluster, attacked against real nodes: push offers refused
//! unless the link takes them, per-peer caps on pushed mirrors and bytes, a pushed name that
//! gives way to a local registration, public write-back refused, and a running transfer
//! stopped when its link is removed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Registers a file of `len` bytes as the artifact `name` on `node` (which publishes it) and
/// shares it with `peer` under a push share.
fn push_artifact(h: &Harness, node: &NodeProc, name: &str, len: usize, peer: &str) {
    let path = h.path(&format!("{name}.bin"));
    std::fs::write(&path, vec![name.len() as u8; len]).expect("write artifact");
    node.register_artifact(name, &path);
    let out = node.cli(&["share", name, "--with", peer, "--mode", "push"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn resource(node: &NodeProc, name: &str) -> Option<Value> {
    node.try_json(&["resource", "list"])?
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

fn link_row(node: &NodeProc, link: &str) -> Value {
    node.json(&["link", "list"])
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["name"] == link)
        .cloned()
        .expect("link row")
}

/// Waits until `node` logged a line holding every one of `words`.
fn wait_logged(node: &NodeProc, words: &[&str]) {
    wait_for(&format!("{} to log {words:?}", node.name), || {
        node.log()
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
            .then_some(())
    });
}

#[test]
fn push_offers_are_refused_until_the_link_takes_them() {
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    assert_eq!(link_row(&b, "a")["accept_pushes"], false, "pushes are off by default");

    push_artifact(&h, &a, "offered", 1000, "b");
    wait_logged(&a, &["push offer refused", "offered", "does not accept pushes"]);
    assert!(resource(&b, "offered").is_none(), "a refused push left nothing behind");

    let set = b.json(&["link", "set", "a", "--accept-pushes", "on"]);
    assert_eq!(set["accept_pushes"], true);
    assert_eq!(link_row(&b, "a")["accept_pushes"], true);
    assert!(a.cli(&["resource", "publish", "offered"]).status.success());
    let a_cluster = cluster_id(&a);
    wait_for("the pushed mirror at b", || {
        (resource(&b, "offered")?["mirror_of"] == a_cluster.as_str()).then_some(())
    });

    // Off again: the next offer is refused (the mirror b now holds still follows its origin
    // through change notifications, as any mirror b chose to keep).
    assert_eq!(
        b.json(&["link", "set", "a", "--accept-pushes", "off"])["accept_pushes"],
        false
    );
    let refusals = |n: &NodeProc| n.log().matches("push offer refused").count();
    let before = refusals(&a);
    assert!(a.cli(&["resource", "publish", "offered"]).status.success());
    wait_for("a second refusal", || (refusals(&a) > before).then_some(()));
}

#[test]
fn pushes_beyond_the_per_peer_caps_are_refused_and_nothing_is_recorded() {
    let h = Harness::new();
    let (mut a, mut b) = (h.init("a"), h.init("b"));
    b.edit_config(|c| {
        c.federation.max_pushed_resources_per_peer = 2;
        c.federation.max_pushed_bytes_per_peer = 4096;
    });
    a.start();
    b.start();
    link_add(&a, &b, "b");
    let addr = format!("127.0.0.1:{}", a.port);
    let out = b.cli(&[
        "link",
        "add",
        &a.endpoint_id(),
        "--addr",
        &addr,
        "--name",
        "a",
        "--accept-pushes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_pinned(&a, "b");
    wait_pinned(&b, "a");
    assert_eq!(link_row(&b, "a")["accept_pushes"], true);

    push_artifact(&h, &a, "small", 1000, "b");
    wait_for("the first pushed mirror", || resource(&b, "small"));

    // 8 KiB when 3 KiB are left of the peer's bytes: fetched, refused, not recorded.
    push_artifact(&h, &a, "large", 8192, "b");
    let row = wait_for("the refused pushed transfer", || {
        let all = b.try_json(&["sync", "status"])?;
        let row = all.as_array()?.iter().find(|t| t["resource"] == "large")?.clone();
        (row["state"] == "failed").then_some(row)
    });
    assert!(
        row["reason"].as_str().unwrap().contains("max_pushed_bytes_per_peer"),
        "{row}"
    );
    assert!(resource(&b, "large").is_none());

    // A second mirror fits; a third name is beyond max_pushed_resources_per_peer.
    push_artifact(&h, &a, "second", 100, "b");
    wait_for("the second pushed mirror", || resource(&b, "second"));
    push_artifact(&h, &a, "third", 100, "b");
    wait_logged(&a, &["push offer refused", "third", "max_pushed_resources_per_peer"]);
    assert!(resource(&b, "third").is_none());
    assert!(resource(&b, "large").is_none());
}

#[test]
fn a_pushed_name_gives_way_to_a_local_resource_and_public_write_back_is_refused() {
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    assert!(b.cli(&["link", "set", "a", "--accept-pushes", "on"]).status.success());
    push_artifact(&h, &a, "tools", 500, "b");
    let a_cluster = cluster_id(&a);
    wait_for("the pushed mirror of tools", || {
        (resource(&b, "tools")?["mirror_of"] == a_cluster.as_str()).then_some(())
    });

    // b's own registration takes the name from the mirror the peer's push made.
    let out = b.cli(&[
        "resource", "register", "--kind", "artifact", "--name", "tools", "--owner", "local",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mine = resource(&b, "tools").unwrap();
    assert!(mine["mirror_of"].is_null(), "{mine}");
    assert_eq!(mine["owner"], "local");

    // Later pushes of that name are refused; the local resource is left as it is.
    assert!(a.cli(&["resource", "publish", "tools"]).status.success());
    wait_logged(&a, &["push offer refused", "tools"]);
    let after = resource(&b, "tools").unwrap();
    assert!(after["mirror_of"].is_null() && after["owner"] == "local", "{after}");

    // Public write-back: anyone can make a cluster key, so it is refused with the reason.
    let out = a.cli(&["share", "tools", "--with", "public", "--mode", "bidirectional"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("public share cannot allow write-back"),
        "{}",
        stderr(&out)
    );
    let shares = resource(&a, "tools").unwrap()["shares"].clone();
    assert!(
        !shares.as_array().unwrap().iter().any(|s| s["with"] == "public"),
        "{shares}"
    );
    let out = a.cli(&[
        "share",
        "tools",
        "--with",
        "public",
        "--mode",
        "bidirectional",
        "--read-only",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn removing_a_link_stops_a_running_pull_from_that_peer() {
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |c| c.sync.stall_after_ms = 60_000);
    let path = h.path("big.bin");
    std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
    a.register_artifact("big", &path);
    assert!(
        a.cli(&["share", "big", "--with", "b", "--mode", "pull"])
            .status
            .success()
    );

    // a stops answering mid-pull: without a stop, b's transfer waits on it for a long time.
    a.pause();
    let mut pull = std::process::Command::new(BIN)
        .args(["--data-dir", b.dir_str(), "sync", "big", "--from", "a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sync");
    wait_for("b's pull to start", || {
        let all = b.try_json(&["sync", "status"])?;
        all.as_array()?.iter().any(|t| t["resource"] == "big").then_some(())
    });
    assert!(b.cli(&["link", "remove", "a"]).status.success());
    let removed = Instant::now();
    let status = loop {
        if let Some(s) = pull.try_wait().expect("wait") {
            break s;
        }
        if removed.elapsed() > Duration::from_secs(5) {
            let _ = pull.kill();
            a.resume();
            panic!("the pull was still running 5 s after its link was removed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    a.resume();
    assert!(!status.success());
    let out = pull.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("link to its origin was removed"), "{err}");
    assert!(resource(&b, "big").is_none());
}
