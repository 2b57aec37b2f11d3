//! The library API for subsystems: the `monitoring` example against a real daemon through
//! `causeway::Client` (checked through the CLI, and run twice to show it is idempotent), the
//! client's error kinds and long-poll change feed, and the embedded form (`Node::start` in
//! process) with the same operations.

mod common;

#[path = "../examples/monitoring.rs"]
#[allow(dead_code)]
mod monitoring;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use causeway::{
    Client, ClientError, Config, Discovery, Node, NodeError,
    api::{ChangeView, RegisterResource},
    endpoint::EndpointError,
};
use causeway_policy::ShareMode;
use common::*;
use serde_json::Value;

/// Long enough that a long poll only returns early because a change arrived.
const LONG_WAIT: Duration = Duration::from_secs(25);
/// The delay before a spawned writer acts, so a long poll is already waiting.
const TRIGGER_DELAY: Duration = Duration::from_millis(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn request(name: &str, kind: &str) -> RegisterResource {
    RegisterResource {
        name: name.into(),
        kind: kind.into(),
        owner: "tests".into(),
        path: None,
        metadata: BTreeMap::new(),
        on_register: causeway::OnRegister::RecordOnly,
    }
}

fn remote_kind<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Remote { kind, .. }) => kind,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn row<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .expect("resource list is an array")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {rows}"))
}

fn assert_dashboard(r: &Value, min_version: u64) {
    let name = &r["name"];
    assert_eq!(r["kind"], monitoring::KIND, "{name}");
    assert_eq!(r["owner"], monitoring::OWNER, "{name}");
    assert!(
        r["version"].as_u64().expect("version") >= min_version,
        "{name} version: {r}"
    );
    assert!(
        r["metadata"]["panels"]
            .as_str()
            .is_some_and(|p| p.parse::<u32>().is_ok()),
        "{r}"
    );
    assert_eq!(r["metadata"]["source"], "prometheus", "{r}");
    assert_eq!(r["metadata"]["refresh"], "30s", "{r}");
}

#[test]
fn monitoring_example_registers_dashboards_idempotently() {
    let h = Harness::new();
    let mut node = h.init("a");
    node.start();
    let rt = runtime();

    let defs = h.path("dashboards");
    let first = rt
        .block_on(monitoring::run(&node.dir, &defs, &["cpu", "latency"]))
        .expect("first run");
    assert_eq!(first.registered, ["cpu", "latency"]);
    assert!(first.already_registered.is_empty());
    assert_eq!(
        first.versions,
        BTreeMap::from([("cpu".into(), 1), ("latency".into(), 1)])
    );
    assert_eq!(first.shared.as_deref(), Some("cpu"));
    assert_eq!(first.listed, ["cpu", "latency"]);
    // Registered (at version 1: registering published the definition) and metadata, twice;
    // the share.
    assert_eq!(first.seen_changes.len(), 5, "{:?}", first.seen_changes);

    let rows = node.json(&["resource", "list"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert_dashboard(row(&rows, "cpu"), 1);
    assert_dashboard(row(&rows, "latency"), 1);
    let cpu = node.json(&["resource", "show", "cpu"]);
    assert_dashboard(&cpu, 1);
    assert!(cpu["content"].is_string(), "the definition is published: {cpu}");
    assert_eq!(
        cpu["shares"],
        serde_json::json!([{ "with": "public", "mode": "pull", "read_only": true }])
    );
    let latency = node.json(&["resource", "show", "latency"]);
    assert_eq!(latency["shares"], serde_json::json!([]));

    // Again: nothing is registered twice, each dashboard gets one more version.
    let second = rt
        .block_on(monitoring::run(&node.dir, &defs, &["cpu", "latency"]))
        .expect("second run");
    assert!(second.registered.is_empty(), "{second:?}");
    assert_eq!(second.already_registered, ["cpu", "latency"]);
    assert_eq!(
        second.versions,
        BTreeMap::from([("cpu".into(), 2), ("latency".into(), 2)])
    );
    assert_eq!(second.listed, ["cpu", "latency"]);
    assert_eq!(second.seen_changes.len(), 5, "{:?}", second.seen_changes);
    assert!(
        second.seen_changes.iter().all(|(kind, _)| kind != "registered"),
        "{:?}",
        second.seen_changes
    );

    let rows = node.json(&["resource", "list"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    for name in ["cpu", "latency"] {
        assert_dashboard(row(&rows, name), 2);
    }
    let cpu = node.json(&["resource", "show", "cpu"]);
    assert_eq!(cpu["shares"].as_array().map(Vec::len), Some(1), "{cpu}");

    // A name some other subsystem owns is not taken over.
    node.register("disk");
    let err = rt
        .block_on(monitoring::run(&node.dir, &defs, &["disk"]))
        .expect_err("disk is an artifact");
    assert!(err.to_string().contains("not as a monitoring dashboard"), "{err:#}");
    assert!(node.stop(), "daemon exits cleanly: {}", node.log());
}

#[test]
fn client_reports_errors_and_long_polls_changes() {
    let h = Harness::new();
    let mut node = h.init("a");
    let rt = runtime();

    // No daemon yet.
    match rt.block_on(Client::connect(&node.dir)) {
        Err(ClientError::NotRunning { .. }) => {}
        Err(e) => panic!("expected NotRunning, got {e:?}"),
        Ok(_) => panic!("connected without a daemon"),
    }
    node.start();

    rt.block_on(async {
        let mut c = Client::connect(&node.dir).await.expect("connect");
        assert_eq!(remote_kind(c.show_resource("missing").await), "not_found");
        assert_eq!(remote_kind(c.publish("missing", None).await), "not_found");
        assert_eq!(remote_kind(c.remove_resource("missing").await), "not_found");
        assert_eq!(
            remote_kind(c.register_resource(request("bad", "Not A Kind")).await),
            "invalid"
        );
        assert_eq!(
            remote_kind(c.register_resource(request("bad name", "artifact")).await),
            "invalid"
        );
        assert_eq!(
            remote_kind(c.share("missing", "public", "sideways", false).await),
            "invalid"
        );

        let r = c.register_resource(request("tmp", "artifact")).await.expect("register");
        assert_eq!((r.name.as_str(), r.version), ("tmp", 0));
        assert_eq!(
            remote_kind(c.register_resource(request("tmp", "artifact")).await),
            "conflict"
        );
        c.remove_resource("tmp").await.expect("remove");
        assert_eq!(remote_kind(c.show_resource("tmp").await), "not_found");
        // The connection still serves after errors.
        assert!(c.id().await.is_ok());

        // A long poll returns with the change a delayed writer makes.
        let now = c.changes(0, Duration::ZERO).await.expect("changes").newest_seq;
        let dir = node.dir.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(TRIGGER_DELAY).await;
            let mut w = Client::connect(&dir).await?;
            w.register_resource(request("late", "monitoring/dashboard")).await
        });
        let batch = c.changes(now, LONG_WAIT).await.expect("long poll");
        writer.await.expect("writer task").expect("late register");
        assert!(batch.complete);
        let first = batch.changes.first().expect("a change arrived");
        assert_eq!((first.kind.as_str(), first.name.as_str()), ("registered", "late"));
        assert_eq!(first.seq, now + 1);
        assert_eq!(batch.last_seq, batch.changes.last().map(|c| c.seq).unwrap());

        // Nothing new: a zero wait returns at once with no changes and the same position.
        let idle = c.changes(batch.last_seq, Duration::ZERO).await.expect("changes");
        assert!(idle.changes.is_empty());
        assert_eq!(idle.last_seq, batch.last_seq);
    });
    assert!(node.stop(), "daemon exits cleanly: {}", node.log());
}

fn kinds_of(changes: &[ChangeView], name: &str) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.name == name)
        .map(|c| c.kind.clone())
        .collect()
}

/// Starts the embedded node in `dir`, retrying while its port is still held: iroh releases the
/// UDP socket of a closed endpoint a few milliseconds after `close()` returns, so binding the
/// same port right after `init` or `shutdown` in the same process can fail for a moment.
async fn start_node(dir: &Path) -> Node {
    let started = Instant::now();
    loop {
        let config = Config::load(&dir.join("config.toml")).expect("config");
        match Node::start(dir, config).await {
            Ok(node) => return node,
            Err(NodeError::Endpoint(EndpointError::Bind(..))) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("start embedded node: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_node_serves_the_same_api() {
    let tmp = tempfile::Builder::new()
        .prefix("causeway-embedded-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("node");
    let bind = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let info = causeway::init::init(&dir, Some("embedded".into()), bind, Discovery::Static)
        .await
        .expect("init");
    assert_eq!(info.cluster_name, "embedded");
    let node = start_node(&dir).await;
    assert_eq!(node.id_info().endpoint_id, info.endpoint_id);

    let start = node.changes(0, 10, Duration::ZERO).await.expect("changes").newest_seq;

    // 25 resources, listed back 10 at a time in name order.
    let names: Vec<String> = (0..25).map(|i| format!("dash-{i:02}")).collect();
    for name in names.iter().rev() {
        let mut req = request(name, monitoring::KIND);
        req.metadata.insert("panels".into(), "3".into());
        let r = node.register_resource(req).await.expect("register");
        assert_eq!(r.version, 0);
    }
    let mut listed = Vec::new();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = node.list_resources(after.clone(), 10).await.expect("list");
        pages.push(page.len());
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.name.clone());
        listed.extend(page.into_iter().map(|r| r.name));
    }
    assert_eq!(pages, [10, 10, 5, 0]);
    assert_eq!(listed, names);

    // Metadata, versions, shares.
    let set = BTreeMap::from([("refresh".to_string(), "1m".to_string())]);
    let r = node
        .update_metadata("dash-00", set, vec!["panels".into()])
        .await
        .expect("meta");
    assert_eq!(r.metadata, BTreeMap::from([("refresh".to_string(), "1m".to_string())]));
    assert_eq!(node.publish("dash-00", None).await.expect("publish").version, 1);
    // A content root as the catalog prints it: 64 lowercase hex digits of a BLAKE3 hash.
    let root = blake3::hash(b"dash-00 version 2").to_hex().to_string();
    let r = node.publish("dash-00", Some(root.clone())).await.expect("publish");
    assert_eq!((r.version, r.content.as_deref()), (2, Some(root.as_str())));
    let r = node
        .share("dash-00", "public", ShareMode::Pull, true)
        .await
        .expect("share");
    assert_eq!(r.shares.len(), 1);
    assert_eq!(
        (
            r.shares[0].with.as_str(),
            r.shares[0].mode.as_str(),
            r.shares[0].read_only
        ),
        ("public", "pull", true)
    );
    let shown = node.show_resource("dash-00").await.expect("show");
    assert_eq!((shown.version, shown.shares.len()), (2, 1));

    // Errors come back typed.
    assert!(matches!(
        node.show_resource("missing").await,
        Err(NodeError::NotFound(_))
    ));
    assert!(matches!(
        node.register_resource(request("dash-00", monitoring::KIND)).await,
        Err(NodeError::Conflict(_))
    ));
    assert!(matches!(
        node.register_resource(request("x", "Bad Kind")).await,
        Err(NodeError::Invalid(_))
    ));
    assert!(matches!(
        node.publish("dash-01", Some(String::new())).await,
        Err(NodeError::Invalid(_))
    ));

    node.remove_resource("dash-00").await.expect("remove");
    assert!(matches!(
        node.show_resource("dash-00").await,
        Err(NodeError::NotFound(_))
    ));
    assert!(matches!(
        node.remove_resource("dash-00").await,
        Err(NodeError::NotFound(_))
    ));
    assert_eq!(node.list_resources(None, 100).await.expect("list").len(), 24);

    // The change feed has every step, in order, and pages by `limit`.
    let mut changes = Vec::new();
    let mut seq = start;
    loop {
        let batch = node.changes(seq, 10, Duration::ZERO).await.expect("changes");
        assert!(batch.complete);
        assert!(batch.changes.len() <= 10);
        if batch.changes.is_empty() {
            assert_eq!(batch.last_seq, batch.newest_seq);
            break;
        }
        seq = batch.last_seq;
        changes.extend(batch.changes);
    }
    assert_eq!(changes.len(), 25 + 5);
    assert!(changes.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(
        kinds_of(&changes, "dash-00"),
        [
            "registered",
            "metadata_updated",
            "published",
            "published",
            "shares_changed",
            "removed"
        ]
    );
    assert_eq!(kinds_of(&changes, "dash-24"), ["registered"]);

    // A long poll on the embedded node returns with a delayed writer's change.
    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIGGER_DELAY).await;
            node.publish("dash-24", None).await
        })
    };
    let batch = node.changes(seq, 10, LONG_WAIT).await.expect("long poll");
    assert_eq!(writer.await.expect("writer task").expect("publish").version, 1);
    let first = batch.changes.first().expect("a change arrived");
    assert_eq!(
        (first.kind.as_str(), first.name.as_str(), first.version),
        ("published", "dash-24", 1)
    );

    node.shutdown().await;
    drop(node);

    // The catalog is durable: the same directory starts again with everything in it.
    let node = start_node(&dir).await;
    let rows = node.list_resources(None, 100).await.expect("list after restart");
    assert_eq!(rows.len(), 24);
    assert_eq!(rows.last().map(|r| (r.name.as_str(), r.version)), Some(("dash-24", 1)));
    node.shutdown().await;
}
