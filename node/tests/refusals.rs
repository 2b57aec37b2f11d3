//! Bad input of every kind is refused with a clear error while the node keeps serving: garbage
//! and oversized Raft frames, non-members and unknown protocol versions on the Raft ALPN,
//! forged, reused and expired tickets, and CLI misuse.

mod common;

use causeway::{Discovery, datadir, endpoint};
use causeway_raft::wire::{self, AppendReply, RaftResponse};
use common::*;
use iroh::{EndpointAddr, EndpointId};

fn addr_of(node: &NodeProc) -> EndpointAddr {
    let id: EndpointId = node.endpoint_id().parse().expect("endpoint id");
    EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().unwrap())
}

async fn raw_request(conn: &iroh::endpoint::Connection, bytes: &[u8]) -> String {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("send");
    send.finish().expect("finish");
    match wire::read_frame::<RaftResponse>(&mut recv, wire::MAX_RPC_FRAME).await {
        Ok(RaftResponse::Error(msg)) => msg,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// Sends `bytes` on a new append stream (kind byte included) and returns the refusal it gets.
async fn raw_append_stream(conn: &iroh::endpoint::Connection, bytes: &[u8]) -> String {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("send");
    send.finish().expect("finish");
    let reply = wire::read_frame::<AppendReply>(&mut recv, wire::MAX_RPC_FRAME).await;
    // After a refusal the follower closes the stream: nothing more is answered.
    let after = wire::read_frame_or_end::<AppendReply>(&mut recv, wire::MAX_RPC_FRAME).await;
    assert!(
        matches!(after, Ok(None)),
        "the stream should end after a refusal: {after:?}"
    );
    match reply {
        Ok(AppendReply::Refused(msg)) => msg,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_alpn_refuses_bad_frames_and_strangers() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    // b joins (so its key is a member) but does not run: the test speaks with b's key.
    let b = h.join("b", &a);
    let b_key = datadir::read_key(&b.dir).unwrap();
    let ep = endpoint::bind(b_key, "127.0.0.1:0".parse().unwrap(), Discovery::Static, vec![])
        .await
        .unwrap();
    let conn = ep
        .connect(addr_of(&a), causeway_proto::alpn::RAFT)
        .await
        .expect("member connects");

    let msg = raw_request(&conn, &[9]).await;
    assert!(msg.contains("unknown stream kind"), "{msg}");
    let mut oversized = vec![1u8];
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let msg = raw_request(&conn, &oversized).await;
    assert!(msg.contains("exceeds the limit"), "{msg}");
    let msg = raw_request(&conn, &[1, 0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert!(msg.contains("malformed"), "{msg}");

    // The same on a pipelined append stream: refused, and the stream closes.
    let append = wire::StreamKind::Append as u8;
    let mut oversized = vec![append];
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let msg = raw_append_stream(&conn, &oversized).await;
    assert!(msg.contains("exceeds the limit"), "{msg}");
    let msg = raw_append_stream(&conn, &[append, 0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert!(msg.contains("malformed"), "{msg}");
    let msg = raw_append_stream(&conn, &[append, 0, 0, 0, 9, 1]).await;
    assert!(msg.contains("ended") || msg.contains("finished"), "{msg}");

    // A stranger is refused at the connection.
    let stranger = endpoint::bind(
        iroh::SecretKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Discovery::Static,
        vec![],
    )
    .await
    .unwrap();
    let refused = async {
        let conn = stranger.connect(addr_of(&a), causeway_proto::alpn::RAFT).await.ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(&[1, 0, 0, 0, 0]).await.ok()?;
        send.finish().ok()?;
        wire::read_frame::<RaftResponse>(&mut recv, wire::MAX_RPC_FRAME)
            .await
            .ok()
    }
    .await;
    assert!(refused.is_none(), "a non-member got an answer: {refused:?}");
    wait_for("the refusal in the log", || {
        a.log().contains("not a member of this cluster").then_some(())
    });

    // An unsupported protocol version does not even connect.
    let v9 = stranger.connect(addr_of(&a), b"causeway/raft/9").await;
    assert!(v9.is_err(), "causeway/raft/9 should be refused");

    // The node keeps serving.
    a.register("still-serving");
    assert_eq!(a.resource_names().unwrap(), ["still-serving"]);
    ep.close().await;
    stranger.close().await;
}

#[test]
fn tickets_that_are_forged_reused_expired_or_garbage_are_refused() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    let ticket_text = a.json(&["cluster", "invite"])["ticket"].as_str().unwrap().to_string();
    let ticket: causeway_proto::InviteTicket = ticket_text.parse().unwrap();

    let try_join = |name: &str, ticket: &str| {
        let dir = h.path(name);
        let bind = format!("127.0.0.1:{}", free_port());
        let out = run_cli(&[
            "--data-dir",
            dir.to_str().unwrap(),
            "cluster",
            "join",
            ticket,
            "--bind",
            &bind,
            "--discovery",
            "static",
        ]);
        (out, dir)
    };

    let mut forged = ticket.clone();
    forged.secret[0] ^= 1;
    let (out, dir) = try_join("forged", &forged.to_string());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("forged"), "{}", stderr(&out));
    assert_path_gone(&dir);

    let mut unknown = ticket.clone();
    unknown.invite_id = [7; 16];
    let (out, _) = try_join("unknown", &unknown.to_string());
    assert!(stderr(&out).contains("unknown to this cluster"), "{}", stderr(&out));

    let (out, _) = try_join("first", &ticket_text);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, dir) = try_join("second", &ticket_text);
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    assert_path_gone(&dir);

    let short = a.json(&["cluster", "invite", "--ttl", "1"]);
    let expires = short["expires_at_ms"].as_u64().unwrap();
    wait_for("the short ticket to expire", || {
        (causeway::node::now_ms() > expires).then_some(())
    });
    let (out, _) = try_join("late", short["ticket"].as_str().unwrap());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    let (out, _) = try_join("garbage", "cwinvite1notbase32!!");
    assert!(stderr(&out).contains("invalid invite ticket"), "{}", stderr(&out));

    // A node that already holds cluster state refuses to join another cluster.
    let other = h.init("other");
    let fresh = a.json(&["cluster", "invite"])["ticket"].as_str().unwrap().to_string();
    let out = run_cli(&[
        "--data-dir",
        other.dir_str(),
        "cluster",
        "join",
        &fresh,
        "--discovery",
        "static",
    ]);
    assert!(stderr(&out).contains("already holds a node"), "{}", stderr(&out));

    // Still serving after all of it.
    a.register("fine");
}

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = stderr(out);
    assert_eq!(err.trim().lines().count(), 1, "error should be one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn cli_errors_are_one_clear_line() {
    let h = Harness::new();
    let missing = h.path("missing");
    one_line_error(
        &run_cli(&["--data-dir", missing.to_str().unwrap(), "resource", "list"]),
        "does not exist",
    );
    one_line_error(
        &run_cli(&["--data-dir", missing.to_str().unwrap(), "run"]),
        "does not exist",
    );
    one_line_error(&run_cli(&["run"]), "no data directory");
    let out = run_cli(&[
        "init",
        "--data-dir",
        missing.to_str().unwrap(),
        "--bind",
        "localhost",
        "--discovery",
        "static",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid bind address"), "{}", stderr(&out));
    assert_path_gone(&missing);

    let a = h.init("a");
    one_line_error(&a.cli(&["resource", "list"]), "cannot reach the causeway daemon");
    one_line_error(&a.cli(&["cluster", "status"]), "is `causeway run` running");

    // init twice: refused, nothing changed.
    let key = std::fs::read(a.dir.join("node.key")).unwrap();
    let state = std::fs::read(a.dir.join("node.json")).unwrap();
    let out = run_cli(&[
        "init",
        "--data-dir",
        a.dir_str(),
        "--bind",
        "127.0.0.1:1",
        "--discovery",
        "static",
    ]);
    one_line_error(&out, "already holds a node");
    assert_eq!(std::fs::read(a.dir.join("node.key")).unwrap(), key);
    assert_eq!(std::fs::read(a.dir.join("node.json")).unwrap(), state);

    // Key and state files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["node.key", "node.json", "config.toml"] {
        let mode = std::fs::metadata(a.dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} mode {mode:o}");
    }
    let out = run_cli(&[
        "--data-dir",
        a.dir_str(),
        "resource",
        "register",
        "--kind",
        "Bad Kind",
        "--name",
        "x",
    ]);
    one_line_error(&out, "invalid kind");
    let out = run_cli(&[
        "--data-dir",
        a.dir_str(),
        "resource",
        "register",
        "--kind",
        "artifact",
        "--name",
        "",
    ]);
    one_line_error(&out, "name is empty");
    let out = run_cli(&[
        "--data-dir",
        a.dir_str(),
        "resource",
        "register",
        "--kind",
        "artifact",
        "--name",
        "x",
        "--path",
        "/no/such/path",
    ]);
    one_line_error(&out, "does not exist");
}
