//! The federation catalog through real processes: what a linked cluster, an unlinked cluster
//! and an unknown peer may discover, change notifications keeping a peer's view current, and
//! bad input on the catalog query.

mod common;

use causeway_proto::fed::{FedRequest, FedResponse};
use common::*;
use serde_json::Value;

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn register(node: &NodeProc, kind: &str, name: &str) {
    let out = node.cli(&[
        "resource", "register", "--kind", kind, "--name", name, "--owner", "test",
    ]);
    assert!(out.status.success(), "register {name}: {}", stderr(&out));
}

fn share(node: &NodeProc, name: &str, with: &str, mode: &str) {
    let out = node.cli(&["share", name, "--with", with, "--mode", mode]);
    assert!(out.status.success(), "share {name}: {}", stderr(&out));
}

#[test]
fn shared_resources_are_discovered_and_private_ones_never_leak() {
    let h = Harness::new();
    let (mut a, mut b, mut c) = (h.init("a"), h.init("b"), h.init("c"));
    a.start();
    b.start();
    c.start();
    // a and b federate both ways; c links a, but a never linked c.
    link_add(&a, &b, "b");
    link_add(&b, &a, "a");
    link_add(&c, &a, "a");
    wait_pinned(&a, "b");
    wait_pinned(&b, "a");
    wait_pinned(&c, "a");

    register(&a, "forge/repo", "infra-tools");
    register(&a, "monitoring/dashboard", "latency");
    register(&a, "artifact", "public");
    register(&a, "artifact", "private");
    share(&a, "infra-tools", "b", "pull");
    share(&a, "latency", "linked", "bidirectional");
    share(&a, "public", "public", "pull");

    let seen_by_b = b.json(&["catalog", "a"]);
    assert_eq!(names(&seen_by_b), ["infra-tools", "latency", "public"]);
    let infra = &seen_by_b[0];
    assert_eq!(infra["kind"], "forge/repo");
    assert_eq!(infra["mode"], "pull");
    assert_eq!(infra["read_only"], false);
    assert_eq!(infra["version"], 0);
    assert_eq!(seen_by_b[1]["kind"], "monitoring/dashboard");
    assert_eq!(seen_by_b[1]["mode"], "bidirectional");
    // c is not linked by a: public only, never "private".
    assert_eq!(names(&c.json(&["catalog", "a"])), ["public"]);

    // The preview says the same, with the granting rules.
    let preview = a.json(&["share", "preview", "b"]);
    assert_eq!(names(&preview), ["infra-tools", "latency", "public"]);
    assert_eq!(preview[1]["rule"], "linked bidirectional");
    let public_view = a.json(&["share", "preview", "public"]);
    assert_eq!(names(&public_view), ["public"]);
    assert_eq!(public_view[0]["may"], serde_json::json!(["see", "pull"]));

    // Notifications keep b's replicated view current (the periodic resync is a minute away).
    wait_for("b's cached view of a", || {
        let v = b.try_json(&["catalog", "a", "--cached"])?;
        (names(&v) == ["infra-tools", "latency", "public"]).then_some(())
    });
    let out = a.cli(&["resource", "publish", "latency"]);
    assert!(out.status.success());
    wait_for("the new version in b's cached view", || {
        let v = b.try_json(&["catalog", "a", "--cached"])?;
        v.as_array()?
            .iter()
            .any(|e| e["name"] == "latency" && e["version"] == 1)
            .then_some(())
    });
    // A share revoked: it disappears from b's views.
    let out = a.cli(&["share", "remove", "infra-tools", "--with", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&b.json(&["catalog", "a"])), ["latency", "public"]);
    wait_for("infra-tools gone from b's cached view", || {
        let v = b.try_json(&["catalog", "a", "--cached"])?;
        (names(&v) == ["latency", "public"]).then_some(())
    });
    // Publishing the private resource tells nobody anything.
    let out = a.cli(&["resource", "publish", "private"]);
    assert!(out.status.success());
    a.register("marker");
    share(&a, "marker", "linked", "pull");
    wait_for("the marker in b's cached view", || {
        let v = b.try_json(&["catalog", "a", "--cached"])?;
        names(&v).contains(&"marker".to_string()).then_some(v)
    });
    assert!(!names(&b.json(&["catalog", "a", "--cached"])).contains(&"private".to_string()));
    // c keeps no view of a: a does not link c, so a never notifies it.
    assert_eq!(names(&c.json(&["catalog", "a", "--cached"])), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_query_refuses_bad_input_and_hides_what_is_not_shared() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    a.register("alpha");
    a.register("private-thing");
    a.register("zulu");
    share(&a, "alpha", "public", "pull");
    share(&a, "zulu", "public", "pull");
    let peer = CraftedCluster::new().await;
    let conn = peer.connect(&a).await;

    let page = |after: Option<&str>, limit: u32| FedRequest::CatalogQuery {
        after: after.map(String::from),
        limit,
    };
    let FedResponse::Catalog { entries, more } = fed_request(&conn, &page(None, 100)).await else {
        panic!("catalog expected");
    };
    assert_eq!(
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "zulu"]
    );
    assert!(!more);
    // Paging with limit 1 reveals only visible names as cursors.
    let FedResponse::Catalog { entries, more } = fed_request(&conn, &page(None, 1)).await else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    assert!(more);
    // A cursor at an unshared name answers exactly like a cursor at a missing one.
    let at_private = fed_request(&conn, &page(Some("private-thing"), 100)).await;
    let at_missing = fed_request(&conn, &page(Some("private-thinh"), 100)).await;
    assert_eq!(at_private, at_missing);
    // A lookup by name: the shared entry, and the same empty answer for an unshared name as
    // for a missing one; a malformed name is an error.
    let lookup = |name: &str| FedRequest::CatalogLookup { name: name.into() };
    let FedResponse::Catalog { entries, more } = fed_request(&conn, &lookup("zulu")).await else {
        panic!("catalog expected");
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "zulu");
    assert!(!more);
    let unshared = fed_request(&conn, &lookup("private-thing")).await;
    assert_eq!(unshared, fed_request(&conn, &lookup("private-thinh")).await);
    assert_eq!(
        unshared,
        FedResponse::Catalog {
            entries: vec![],
            more: false
        }
    );
    assert!(matches!(
        fed_request(&conn, &lookup("../etc")).await,
        FedResponse::Error(_)
    ));
    // Limits are clamped, not trusted.
    assert!(matches!(
        fed_request(&conn, &page(None, 0)).await,
        FedResponse::Catalog { .. }
    ));
    assert!(matches!(
        fed_request(&conn, &page(None, u32::MAX)).await,
        FedResponse::Catalog { .. }
    ));
    // A malformed cursor, garbage and an oversized frame are errors, not panics.
    assert!(matches!(
        fed_request(&conn, &page(Some("../etc"), 10)).await,
        FedResponse::Error(_)
    ));
    assert!(matches!(
        fed_raw(&conn, &[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).await,
        Ok(FedResponse::Error(_))
    ));
    assert!(matches!(
        fed_raw(&conn, &[0xff, 0xff, 0xff, 0xff]).await,
        Ok(FedResponse::Error(_))
    ));
    // Change notifications from a cluster a does not link are not recorded.
    let bogus = FedRequest::CatalogChanged {
        changes: vec![("x".into(), None)],
    };
    assert_eq!(fed_request(&conn, &bogus).await, FedResponse::Ok);
    // Still serving.
    a.register("after");
    assert!(a.resource_names().unwrap().contains(&"after".to_string()));
}
