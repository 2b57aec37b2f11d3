//! Attacks on cluster membership, against real nodes: a removed member (which invited the
//! others) tries to write, mint an invite, remove a member and fetch members-only content with
//! its key; a member tries to move another member's addresses; forged join requests flood a
//! node. Each is refused, leaves the cluster's state as it was, and costs no Raft entry.

mod common;

use std::collections::BTreeMap;

use causeway::{Discovery, datadir, endpoint};
use causeway_catalog::{Command, CommandResult};
use causeway_proto::{EndpointKey, InviteTicket, alpn, join::JoinRequest, join::JoinResponse, join::MAX_JOIN_FRAME};
use causeway_raft::{
    MemberNode,
    wire::{self, ForwardRequest, ForwardResponse, RaftRequest, RaftResponse, StreamKind},
};
use common::*;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use serde_json::Value;

fn addr_of(node: &NodeProc) -> EndpointAddr {
    let id: EndpointId = node.endpoint_id().parse().expect("endpoint id");
    EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().expect("addr"))
}

fn key_of(node: &NodeProc) -> EndpointKey {
    node.endpoint_id().parse().expect("endpoint key")
}

/// An endpoint holding the secret key stored in `node`'s data dir (the node must be stopped).
async fn endpoint_with_key_of(node: &NodeProc) -> Endpoint {
    let key = datadir::read_key(&node.dir).expect("node key");
    endpoint::bind(key, "127.0.0.1:0".parse().expect("addr"), Discovery::Static, vec![])
        .await
        .expect("bind")
}

/// Sends one forwarded request over `causeway/raft/1` and returns what came back: the answer,
/// or the error that ended the exchange (a refused connection, a closed stream).
async fn forward(ep: &Endpoint, to: &NodeProc, req: ForwardRequest) -> Result<ForwardResponse, String> {
    let conn = ep.connect(addr_of(to), alpn::RAFT).await.map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame_after(
        &mut send,
        &[StreamKind::Rpc as u8],
        &RaftRequest::Forward(req),
        wire::MAX_RPC_FRAME,
    )
    .await
    .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    match wire::read_frame::<RaftResponse>(&mut recv, wire::MAX_RPC_FRAME).await {
        Ok(RaftResponse::Forward(r)) => Ok(r),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a forwarded request took effect on the cluster.
fn took_effect(r: &Result<ForwardResponse, String>) -> bool {
    matches!(
        r,
        Ok(ForwardResponse::Done)
            | Ok(ForwardResponse::Written(CommandResult::ResourceRegistered(_)))
            | Ok(ForwardResponse::Written(CommandResult::InviteCreated))
    )
}

fn member_ids(status: &Value) -> Vec<String> {
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["endpoint_id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_that_invited_the_others_is_refused_everything() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});
    // b publishes content shared with nobody: only the members may fetch it.
    let src = h.path("private.bin");
    std::fs::write(&src, vec![9u8; 50_000]).expect("write");
    let root = nodes[1].register_artifact("private", &src)["content"]
        .as_str()
        .expect("root")
        .to_string();
    let hash: iroh_blobs::HashAndFormat = root.parse().expect("root");

    // a makes one more ticket while it is a member, and keeps it.
    let kept = nodes[0].json(&["cluster", "invite"])["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    // a invited b and c, so both stored a as a peer when they joined. Remove a.
    let a_id = nodes[0].endpoint_id();
    let a_key = key_of(&nodes[0]);
    let out = nodes[1].cli(&["cluster", "remove", &a_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("a to leave the membership", || {
        let s = nodes[1].try_json(&["cluster", "status"])?;
        (!member_ids(&s).contains(&a_id) && s["leader"].is_string()).then_some(())
    });
    wait_for_voters(&nodes[1], 2);
    nodes[0].stop();
    let before = nodes[1].resource_names().expect("resources");
    let c_id = nodes[2].endpoint_id();

    // a's key, against each remaining member (one of them leads).
    let ep = endpoint_with_key_of(&nodes[0]).await;
    let ticket: InviteTicket = nodes[1].json(&["cluster", "invite"])["ticket"]
        .as_str()
        .expect("ticket")
        .parse()
        .expect("ticket");
    let mut minted = ticket.clone();
    minted.invite_id = [42; 16];
    minted.secret = [43; 32];
    for target in &nodes[1..] {
        let register = ForwardRequest::Write(Command::RegisterResource {
            name: "planted".into(),
            kind: "artifact".into(),
            owner: "removed".into(),
            path: None,
            metadata: BTreeMap::new(),
            registered_at_ms: 1,
        });
        let r = forward(&ep, target, register).await;
        assert!(
            !took_effect(&r),
            "a removed member registered a resource via {}: {r:?}",
            target.name
        );
        let invite = ForwardRequest::Write(Command::CreateInvite {
            invite_id: minted.invite_id,
            secret_hash: *blake3::hash(&minted.secret).as_bytes(),
            expires_at_ms: minted.expires_at_ms,
            created_by: a_key,
        });
        let r = forward(&ep, target, invite).await;
        assert!(
            !took_effect(&r),
            "a removed member minted an invite via {}: {r:?}",
            target.name
        );
        let remove = ForwardRequest::RemoveMember {
            id: c_id.parse().expect("id"),
        };
        let r = forward(&ep, target, remove).await;
        assert!(
            !took_effect(&r),
            "a removed member removed c via {}: {r:?}",
            target.name
        );
    }
    for target in &nodes[1..] {
        // Members-only content: a is nobody now.
        let conn = ep.connect(addr_of(target), iroh_blobs::ALPN).await;
        if let Ok(conn) = conn {
            let got = iroh_blobs::get::request::get_blob(conn, hash.hash).bytes().await;
            assert!(
                got.is_err(),
                "a removed member fetched a members-only blob from {}",
                target.name
            );
        }
    }

    // The cluster is as it was: no planted resource, c still a member, the minted ticket unknown.
    assert_eq!(nodes[2].resource_names().expect("resources"), before);
    let status = wait_for_voters(&nodes[2], 2);
    assert!(member_ids(&status).contains(&c_id), "{status}");
    let out = run_cli(&[
        "--data-dir",
        h.path("with-minted").to_str().expect("path"),
        "cluster",
        "join",
        &minted.to_string(),
        "--bind",
        &format!("127.0.0.1:{}", free_port()),
        "--discovery",
        "static",
    ]);
    assert!(!out.status.success(), "the minted ticket admitted a node");
    assert!(stderr(&out).contains("unknown to this cluster"), "{}", stderr(&out));
    // Nor does the ticket a made while it was a member bring it (or anyone) back.
    let out = run_cli(&[
        "--data-dir",
        h.path("with-kept").to_str().expect("path"),
        "cluster",
        "join",
        &kept,
        "--bind",
        &format!("127.0.0.1:{}", free_port()),
        "--discovery",
        "static",
    ]);
    assert!(!out.status.success(), "a removed member's kept ticket admitted a node");
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));

    // Once they know the membership, the joined nodes keep no trace of their join peers.
    for n in &nodes[1..] {
        let state = datadir::read_state(&n.dir).expect("node.json").expect("a node");
        assert!(
            state.bootstrap_peers.is_empty(),
            "{} still trusts {:?}",
            n.name,
            state.bootstrap_peers
        );
    }

    // From its own data dir, the removed node cannot write either.
    nodes[0].start();
    let out = nodes[0].cli(&["resource", "register", "--kind", "artifact", "--name", "via-cli"]);
    assert!(!out.status.success(), "the removed node registered a resource");
    assert_eq!(nodes[1].resource_names().expect("resources"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_change_another_members_addresses() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});
    let c_id = nodes[2].endpoint_id();
    let c_addrs = |s: &Value| {
        s["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["endpoint_id"] == c_id.as_str())
            .map(|m| m["addrs"].clone())
    };
    let recorded = c_addrs(&nodes[0].json(&["cluster", "status"])).expect("c recorded");
    // b speaks with its own key (the daemon stopped), to whichever of a and c leads.
    let b_id = nodes[1].endpoint_id();
    nodes[1].stop();
    let leader = wait_for("a leader other than b", || leader_of(&nodes[0]).filter(|l| *l != b_id));
    let leader = nodes.iter().find(|n| n.endpoint_id() == leader).expect("leader node");
    let ep = endpoint_with_key_of(&nodes[1]).await;
    let hijack = ForwardRequest::UpdateAddrs {
        id: c_id.parse().expect("id"),
        node: MemberNode {
            addrs: vec!["127.0.0.1:9".parse().expect("addr")],
        },
    };
    let r = forward(&ep, leader, hijack).await;
    assert!(!took_effect(&r), "b changed c's addresses: {r:?}");
    assert!(matches!(r, Ok(ForwardResponse::Failed(_))), "{r:?}");
    // Nor may it make an invite that names c as its author.
    let invite = ForwardRequest::Write(Command::CreateInvite {
        invite_id: [1; 16],
        secret_hash: [2; 32],
        expires_at_ms: u64::MAX,
        created_by: c_id.parse().expect("id"),
    });
    let r = forward(&ep, leader, invite).await;
    assert!(
        matches!(r, Ok(ForwardResponse::Failed(_))),
        "b made an invite in c's name: {r:?}"
    );
    // c is still recorded where it listens, and still replicates.
    nodes[0].register("after-hijack");
    assert_eq!(c_addrs(&nodes[0].json(&["cluster", "status"])), Some(recorded));
    wait_for("c to replicate", || {
        nodes[2]
            .resource_names()
            .filter(|n| n.contains(&"after-hijack".to_string()))
    });
}

/// Join log lines a node wrote so far.
fn join_lines(node: &NodeProc) -> usize {
    node.log().lines().filter(|l| l.contains("join")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_join_requests_cost_no_raft_entry_and_few_log_lines() {
    const FORGED: usize = 40;
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    let real: InviteTicket = a.json(&["cluster", "invite"])["ticket"]
        .as_str()
        .expect("ticket")
        .parse()
        .expect("ticket");
    let commit = |a: &NodeProc| a.json(&["cluster", "status"])["commit_index"].as_u64().expect("commit");
    let before = commit(&a);
    let lines_before = join_lines(&a);

    let mut refused = 0;
    for i in 0..FORGED {
        // A fresh endpoint each time, as anyone can make; half guess ids, half know a real one.
        let ep = endpoint::bind(
            iroh::SecretKey::generate(),
            "127.0.0.1:0".parse().expect("addr"),
            Discovery::Static,
            vec![],
        )
        .await
        .expect("bind");
        let req = JoinRequest {
            invite_id: if i % 2 == 0 { [i as u8; 16] } else { real.invite_id },
            secret: [7; 32],
            addrs: vec![],
        };
        let answer = async {
            let conn = ep.connect(addr_of(&a), alpn::JOIN).await.ok()?;
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            wire::write_frame(&mut send, &req, MAX_JOIN_FRAME).await.ok()?;
            send.finish().ok()?;
            let r: JoinResponse = wire::read_frame(&mut recv, MAX_JOIN_FRAME).await.ok()?;
            conn.close(0u32.into(), b"done");
            Some(r)
        }
        .await;
        assert!(
            !matches!(answer, Some(JoinResponse::Accepted { .. })),
            "a forged ticket was accepted"
        );
        refused += 1;
        ep.close().await;
    }
    assert_eq!(refused, FORGED);
    // Not one entry: nothing reached Raft.
    assert_eq!(commit(&a), before, "forged joins were written to the Raft log");
    let logged = join_lines(&a) - lines_before;
    assert!(
        logged <= 3,
        "{logged} log lines for {FORGED} forged joins:\n{}",
        a.log()
    );

    // The real ticket still works once this address's budget refills.
    let dir = h.path("real");
    let ticket = real.to_string();
    wait_for("the real ticket to be admitted", || {
        let out = run_cli(&[
            "--data-dir",
            dir.to_str().expect("path"),
            "cluster",
            "join",
            &ticket,
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
            "--discovery",
            "static",
        ]);
        if !out.status.success() {
            assert!(stderr(&out).contains("try again later"), "{}", stderr(&out));
        }
        out.status.success().then_some(())
    });
    assert!(commit(&a) > before);
    a.stop();
}
