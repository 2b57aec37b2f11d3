//! What a peer can make a node allocate or store is capped, and every peer request has a
//! deadline: a linked peer whose catalog never ends, streams that announce large frames and
//! send nothing, more streams and connections than the caps, and change notifications past a
//! view's cap or the notification rate. Each attack runs against a real node process, whose
//! memory (VmRSS) is read from /proc.

mod common;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use causeway::federation::limits::{
    MAX_FED_CONNECTIONS_PER_ENDPOINT, MAX_STREAMS_PER_CONNECTION, NOTIFY_BURST, NOTIFY_MAX_WAIT, NOTIFY_PER_SEC,
    REQUEST_READ_TIMEOUT,
};
use causeway_catalog::peer_views::{MAX_PEER_VIEW_BYTES, MAX_PEER_VIEW_ENTRIES};
use causeway_proto::{
    EndpointKey,
    fed::{Auth, CatalogEntry, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, prove},
    frame,
};
use causeway_raft::wire;
use common::*;
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler, Router},
};

/// Resident memory of `node`'s process, in MiB.
fn rss_mib(node: &NodeProc) -> u64 {
    let dir = node.dir.canonicalize().unwrap_or(node.dir.clone());
    let needle = dir.to_string_lossy().into_owned();
    for proc_dir in std::fs::read_dir("/proc").expect("/proc") {
        let path = proc_dir.expect("entry").path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !(cmdline.contains(" run") && (cmdline.contains(&needle) || cmdline.contains(node.dir_str()))) {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            return kb / 1024;
        }
    }
    panic!("no process of {} found", node.name);
}

/// A linked peer the test plays: it answers the handshake honestly and serves a catalog that
/// never ends (`flood`) or is empty.
#[derive(Clone, Debug)]
struct Peer {
    secret: [u8; 32],
    card: causeway_proto::card::SignedCard,
    flood: bool,
}

/// An entry as large as validation lets it be.
fn fat_entry(i: u64) -> CatalogEntry {
    CatalogEntry {
        name: format!("n{i:012}-{}", "x".repeat(180)),
        kind: "artifact".into(),
        owner: "o".repeat(128),
        version: 1,
        content: Some("c".repeat(128)),
        mode: "pull".into(),
        read_only: true,
    }
}

impl ProtocolHandler for Peer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        let me = self.card.card.members[0].endpoint;
        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
            return Ok(());
        };
        let Ok(hello) = wire::read_frame::<Hello>(&mut recv, MAX_FED_FRAME).await else {
            return Ok(());
        };
        let keyed = causeway_proto::rotation::KeyedCard::first(self.card.clone());
        let reply = HelloReply::Card {
            proof: prove(
                &self.secret,
                &hello.challenge,
                &me,
                &remote,
                &keyed.cluster_id(),
                &keyed.key,
            ),
            cluster_id: keyed.cluster_id(),
            key: keyed.key,
            challenge: [3; 32],
        };
        if wire::write_frame(&mut send, &reply, MAX_FED_FRAME).await.is_err()
            || wire::read_frame::<Auth>(&mut recv, MAX_FED_FRAME).await.is_err()
        {
            return Ok(());
        }
        let welcome = Welcome::Accepted {
            links_back: true,
            card: Box::new(keyed),
        };
        let _ = wire::write_frame(&mut send, &welcome, MAX_FED_FRAME).await;
        let _ = send.finish();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let flood = self.flood;
            tokio::spawn(async move {
                let resp = match wire::read_frame::<FedRequest>(&mut recv, MAX_FED_FRAME).await {
                    Ok(FedRequest::Heartbeat { seq, card_epoch }) => FedResponse::HeartbeatAck {
                        seq,
                        card_epoch,
                        links_back: true,
                    },
                    // Always more, each page after the cursor: the catalog never ends.
                    Ok(FedRequest::CatalogQuery { after, .. }) if flood => {
                        let from = after.map(|a| a[1..13].parse::<u64>().unwrap() + 1).unwrap_or(0);
                        FedResponse::Catalog {
                            entries: (from..from + 500).map(fat_entry).collect(),
                            more: true,
                        }
                    }
                    Ok(FedRequest::CatalogQuery { .. }) => FedResponse::Catalog {
                        entries: vec![],
                        more: false,
                    },
                    _ => FedResponse::Ok,
                };
                let _ = wire::write_frame(&mut send, &resp, MAX_FED_FRAME).await;
                let _ = send.finish();
            });
        }
        Ok(())
    }
}

/// Starts the test's peer on `crafted`'s endpoint and has `victim` link to it.
fn serve_and_link(crafted: &CraftedCluster, victim: &NodeProc, flood: bool) -> Router {
    let peer = Peer {
        secret: crafted.secret,
        card: crafted.card(),
        flood,
    };
    let router = Router::builder(crafted.endpoint.clone())
        .accept(causeway_proto::alpn::FED, peer)
        .spawn();
    let port = crafted.endpoint.bound_sockets()[0].port();
    let out = victim.cli(&[
        "link",
        "add",
        &crafted.key().to_string(),
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--name",
        "crafted",
    ]);
    assert!(out.status.success(), "link add: {}", stderr(&out));
    wait_pinned(victim, "crafted");
    router
}

/// The dialer's half of the handshake, as `CraftedCluster::connect`, but a refusal is an error.
async fn try_connect(crafted: &CraftedCluster, node: &NodeProc) -> Result<Connection, String> {
    let id: iroh::EndpointId = node.endpoint_id().parse().expect("endpoint id");
    let addr = iroh::EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().expect("addr"));
    let conn = crafted
        .endpoint
        .connect(addr, causeway_proto::alpn::FED)
        .await
        .map_err(|e| e.to_string())?;
    let remote = EndpointKey(*conn.remote_id().as_bytes());
    let s = |e: wire::WireError| e.to_string();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame(&mut send, &Hello { challenge: [1; 32] }, MAX_FED_FRAME)
        .await
        .map_err(s)?;
    let HelloReply::Card { challenge, .. } = wire::read_frame(&mut recv, MAX_FED_FRAME).await.map_err(s)? else {
        return Err("hello refused".into());
    };
    let card = causeway_proto::rotation::KeyedCard::first(crafted.card());
    let auth = Auth {
        proof: prove(
            &crafted.secret,
            &challenge,
            &crafted.key(),
            &remote,
            &card.cluster_id(),
            &card.key,
        ),
        card,
    };
    wire::write_frame(&mut send, &auth, MAX_FED_FRAME).await.map_err(s)?;
    send.finish().map_err(|e| e.to_string())?;
    match wire::read_frame::<Welcome>(&mut recv, MAX_FED_FRAME).await.map_err(s)? {
        Welcome::Accepted { .. } => Ok(conn),
        Welcome::Refused(r) => Err(r),
    }
}

/// Opens a stream that announces a `len`-byte request and sends only 10 bytes of it.
async fn held_stream(conn: &Connection, len: usize) -> (iroh::endpoint::SendStream, iroh::endpoint::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let mut bytes = frame::prefix(len).to_vec();
    bytes.extend_from_slice(&[0; 10]);
    send.write_all(&bytes).await.expect("write");
    (send, recv)
}

fn notification(entries: Vec<CatalogEntry>) -> FedRequest {
    FedRequest::CatalogChanged {
        changes: entries.into_iter().map(|e| (e.name.clone(), Some(e))).collect(),
    }
}

/// A linked peer answering every page with `more = true`: `catalog PEER` fails within its
/// deadline, memory stays bounded, and the replicated view is kept at the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_peer_catalog_is_cut_at_the_caps() {
    let h = Harness::new();
    let mut victim = h.init("victim");
    victim.edit_config(|c| c.federation.catalog_resync_ms = 1000);
    victim.start();
    let crafted = CraftedCluster::new().await;
    let router = serve_and_link(&crafted, &victim, true);
    let before = rss_mib(&victim);

    let start = Instant::now();
    let mut cli = Command::new(BIN)
        .args(["--data-dir", victim.dir_str(), "catalog", "crafted", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("catalog");
    let mut peak = before;
    let status = loop {
        peak = peak.max(rss_mib(&victim));
        if let Some(status) = cli.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > causeway::federation::catalog::CATALOG_QUERY_TIMEOUT + Duration::from_secs(15) {
            let _ = cli.kill();
            panic!(
                "`catalog crafted` still running after {:?}; peak RSS {peak} MiB",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = std::io::read_to_string(cli.stderr.take().expect("stderr")).unwrap_or_default();
    assert!(!status.success(), "an endless catalog is an error");
    assert!(err.contains("more than"), "{err}");
    assert!(peak < before + 150, "victim grew from {before} MiB to {peak} MiB");

    // The resync keeps the view at the caps, however long the peer's catalog is.
    let count = |v: &NodeProc| {
        v.try_json(&["catalog", "crafted", "--cached"])
            .and_then(|j| j.as_array().map(Vec::len))
    };
    let e = fat_entry(0);
    let entry_bytes = causeway_catalog::peer_views::entry_bytes(&causeway_catalog::peer_views::PeerEntry {
        name: e.name,
        kind: e.kind,
        owner: e.owner,
        version: e.version,
        content: e.content,
        mode: causeway_policy::ShareMode::Pull,
        read_only: e.read_only,
    });
    // All entries are the same size: the bytes cap or the entries cap, whichever comes first.
    let cap = (MAX_PEER_VIEW_BYTES / entry_bytes).min(MAX_PEER_VIEW_ENTRIES);
    let kept = wait_for("the resync to store the view up to the cap", || {
        count(&victim).filter(|n| *n == cap)
    });
    // Later resyncs keep it there.
    let later = Instant::now();
    while later.elapsed() < Duration::from_secs(3) {
        assert!(count(&victim).is_none_or(|n| n <= kept), "the view grew past the cap");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(rss_mib(&victim) < before + 150);
    router.shutdown().await.expect("shutdown");
}

/// Streams that announce large requests and send nothing cost little and are let go after the
/// read deadline; streams and connections past the caps are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_and_connection_floods_are_bounded() {
    let h = Harness::new();
    let mut victim = h.init("victim");
    victim.start();
    let attacker = CraftedCluster::new().await;
    let before = rss_mib(&victim);

    // The attack as reported: 90 streams on each of 8 connections, each announcing a full
    // frame. An unlinked cluster's requests are small: refused before any body is read.
    let mut conns = Vec::new();
    let mut held = Vec::new();
    for _ in 0..MAX_FED_CONNECTIONS_PER_ENDPOINT {
        let conn = try_connect(&attacker, &victim).await.expect("handshake");
        for _ in 0..90 {
            held.push(held_stream(&conn, MAX_FED_FRAME).await);
        }
        conns.push(conn);
    }
    let after = rss_mib(&victim);
    assert!(after < before + 100, "victim grew from {before} MiB to {after} MiB");
    let (_, recv) = &mut held[0];
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        wire::read_frame::<FedResponse>(recv, MAX_FED_FRAME),
    )
    .await
    .expect("an oversized request is answered at once");
    assert!(
        matches!(&answer, Ok(FedResponse::Error(e)) if e.contains("exceeds")),
        "{answer:?}"
    );

    // A connection more from the same endpoint is refused.
    assert!(
        try_connect(&attacker, &victim).await.is_err(),
        "connection past the per-endpoint cap accepted"
    );
    drop(held);
    for c in conns.drain(..) {
        c.close(0u32.into(), b"done");
    }

    // A small request held open is let go after the deadline; streams past the
    // per-connection cap are refused at once.
    let conn = wait_for_async_connect(&attacker, &victim).await;
    let mut slow = Vec::new();
    for _ in 0..MAX_STREAMS_PER_CONNECTION {
        slow.push(held_stream(&conn, 1000).await);
    }
    let extra = tokio::time::timeout(Duration::from_secs(5), fed_request_result(&conn)).await;
    assert!(
        matches!(extra, Ok(Err(_))),
        "a stream past the cap is refused: {extra:?}"
    );
    let started = Instant::now();
    let (_, recv) = &mut slow[0];
    let answer = tokio::time::timeout(
        REQUEST_READ_TIMEOUT + Duration::from_secs(5),
        wire::read_frame::<FedResponse>(recv, MAX_FED_FRAME),
    )
    .await
    .expect("a held stream is answered after the read deadline");
    assert!(matches!(&answer, Ok(FedResponse::Error(_))), "{answer:?}");
    assert!(started.elapsed() >= REQUEST_READ_TIMEOUT - Duration::from_secs(2));
    for (_, recv) in slow.iter_mut().skip(1) {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            wire::read_frame::<FedResponse>(recv, MAX_FED_FRAME),
        )
        .await
        .expect("every held stream is let go");
        assert!(matches!(&answer, Ok(FedResponse::Error(_))), "{answer:?}");
    }
    // Once they are let go, the connection serves again.
    let again = tokio::time::timeout(Duration::from_secs(5), fed_request_result(&conn)).await;
    assert!(matches!(again, Ok(Ok(FedResponse::HeartbeatAck { .. }))), "{again:?}");
    assert!(victim.is_running());
}

/// A heartbeat on a new stream; the stream's error if it was refused.
async fn fed_request_result(conn: &Connection) -> Result<FedResponse, String> {
    let req = FedRequest::Heartbeat { seq: 1, card_epoch: 1 };
    let body = causeway_proto::encode(&req, MAX_FED_FRAME).expect("encode");
    let mut bytes = frame::prefix(body.len()).to_vec();
    bytes.extend_from_slice(&body);
    fed_raw(conn, &bytes).await
}

/// Connects once the victim has let the previous connections go.
async fn wait_for_async_connect(attacker: &CraftedCluster, victim: &NodeProc) -> Connection {
    let start = Instant::now();
    loop {
        match try_connect(attacker, victim).await {
            Ok(c) => return c,
            Err(e) => assert!(start.elapsed() < DEADLINE, "cannot connect again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Change notifications from a linked peer: refused past the view's caps, and past the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_past_the_view_cap_or_the_rate_are_refused() {
    let h = Harness::new();
    let mut victim = h.init("victim");
    // No resync during the test: the view holds only what was notified.
    victim.edit_config(|c| c.federation.catalog_resync_ms = 3_600_000);
    victim.start();
    let crafted = CraftedCluster::new().await;
    let router = serve_and_link(&crafted, &victim, false);
    let conn = Arc::new(try_connect(&crafted, &victim).await.expect("handshake"));

    // Page after page of the largest entries, until the view's cap refuses one.
    let mut accepted = 0;
    let refusal = loop {
        let first = accepted as u64 * 500;
        let req = notification((first..first + 500).map(fat_entry).collect());
        match fed_request(&conn, &req).await {
            FedResponse::Ok => accepted += 1,
            FedResponse::Error(e) => break e,
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            accepted * 500 <= MAX_PEER_VIEW_ENTRIES,
            "no cap after {accepted} notifications"
        );
    };
    assert!(refusal.contains("may hold"), "{refusal}");
    let kept = victim
        .json(&["catalog", "crafted", "--cached"])
        .as_array()
        .map(Vec::len);
    assert_eq!(kept, Some(accepted * 500));
    // Removals still go through at the cap.
    let removal = FedRequest::CatalogChanged {
        changes: vec![(fat_entry(0).name, None)],
    };
    assert_eq!(fed_request(&conn, &removal).await, FedResponse::Ok);

    // A burst of notifications on a few connections (each within its stream cap): past the
    // burst and the longest wait, refused.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..3 {
        let conn = match c {
            0 => conn.clone(),
            _ => Arc::new(try_connect(&crafted, &victim).await.expect("handshake")),
        };
        for _ in 0..MAX_STREAMS_PER_CONNECTION - 2 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let req = FedRequest::CatalogChanged {
                    changes: vec![(fat_entry(1).name, None)],
                };
                let body = causeway_proto::encode(&req, MAX_FED_FRAME).expect("encode");
                let mut bytes = frame::prefix(body.len()).to_vec();
                bytes.extend_from_slice(&body);
                fed_raw(&conn, &bytes).await
            }));
        }
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task").expect("answered"));
    }
    let ok = answers.iter().filter(|a| **a == FedResponse::Ok).count();
    let limited = answers
        .iter()
        .filter(|a| matches!(a, FedResponse::Error(e) if e.contains("too many change notifications")))
        .count();
    let allowed = NOTIFY_BURST + NOTIFY_PER_SEC * (start.elapsed() + NOTIFY_MAX_WAIT).as_secs_f64() + 1.0;
    assert!(limited > 0, "no notification refused: {answers:?}");
    assert!(
        (ok as f64) <= allowed,
        "{ok} notifications written, at most {allowed} allowed"
    );
    router.shutdown().await.expect("shutdown");
}
