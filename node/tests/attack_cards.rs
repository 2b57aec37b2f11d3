//! Attacks on cluster cards and keys, against real nodes: a removed member replaying the old
//! cluster key (stale generation, forged rotations), conflicting rotations, an admin's key
//! rotation followed by peers, and a peer claiming another peer's endpoint in its card.

mod common;

use std::sync::{Arc, Mutex};

use causeway::{Discovery, endpoint};
use causeway_proto::{
    ClusterId, EndpointKey,
    card::{CardKey, CardMember, ClusterCard, SignedCard, cluster_id_of},
    fed::{Auth, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, prove},
    rotation::{KeyedCard, NodeSignature, RotationBody, RotationStatement, node_endpoint},
};
use causeway_raft::wire;
use common::*;
use iroh::{
    Endpoint, EndpointAddr, EndpointId,
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler, Router},
};
use redb::ReadableDatabase;
use serde_json::Value;

async fn endpoint_with(key: iroh::SecretKey) -> Endpoint {
    endpoint::bind(key, "127.0.0.1:0".parse().unwrap(), Discovery::Static, vec![])
        .await
        .unwrap()
}

fn key_of(ep: &Endpoint) -> EndpointKey {
    EndpointKey(*ep.id().as_bytes())
}

fn addr_of(node: &NodeProc) -> EndpointAddr {
    let id: EndpointId = node.endpoint_id().parse().unwrap();
    EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().unwrap())
}

fn card_under(secret: &[u8; 32], key: &CardKey, cluster: ClusterId, epoch: u64, members: &[EndpointKey]) -> SignedCard {
    SignedCard::sign_as(
        ClusterCard {
            cluster_id: cluster,
            name: "crafted".into(),
            members: members
                .iter()
                .map(|e| CardMember {
                    endpoint: *e,
                    addrs: vec![],
                })
                .collect(),
            epoch,
            issued_at_ms: 0,
        },
        key,
        secret,
    )
}

/// A rotation of `cluster` from `previous` (with its secret) to a new key `next`, signed by the
/// given node secrets; and a card of `epoch` under the new key.
fn rotated(
    cluster: ClusterId,
    previous: (&CardKey, &[u8; 32]),
    next: &[u8; 32],
    signers: &[[u8; 32]],
    epoch: u64,
    members: &[EndpointKey],
) -> KeyedCard {
    let body = RotationBody {
        cluster_id: cluster,
        generation: previous.0.generation + 1,
        new_key: cluster_id_of(next),
        previous_key: previous.0.key,
    };
    let sigs = signers.iter().map(|s| NodeSignature::sign(s, &body)).collect();
    let key = body.card_key();
    KeyedCard {
        signed: card_under(next, &key, cluster, epoch, members),
        key,
        rotation: Some(RotationStatement::sign(body, previous.1, sigs)),
    }
}

/// Dials `target` as a member of a cluster with `card` (under the key whose secret is
/// `secret`) and returns the listener's verdict, with the connection when accepted.
async fn dial_as(
    ep: &Endpoint,
    target: EndpointAddr,
    card: &KeyedCard,
    secret: &[u8; 32],
) -> (Result<Welcome, String>, Option<Connection>) {
    let run = async {
        let conn = ep
            .connect(target, causeway_proto::alpn::FED)
            .await
            .map_err(|e| e.to_string())?;
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        wire::write_frame(&mut send, &Hello { challenge: [1; 32] }, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let reply: HelloReply = wire::read_frame(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let HelloReply::Card { challenge, .. } = reply else {
            return Err("listener refused hello".to_string());
        };
        let auth = Auth {
            proof: prove(secret, &challenge, &key_of(ep), &remote, &card.cluster_id(), &card.key),
            card: card.clone(),
        };
        wire::write_frame(&mut send, &auth, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let w: Welcome = wire::read_frame(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        Ok((w, conn))
    };
    match run.await {
        Ok((w, conn)) => (Ok(w), Some(conn)),
        Err(e) => (Err(e), None),
    }
}

fn refusal(w: &Result<Welcome, String>) -> String {
    match w {
        Ok(Welcome::Refused(r)) => r.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A crafted listener presenting whatever card and key the test sets.
#[derive(Clone, Debug)]
struct CraftedPeer {
    me: EndpointKey,
    state: Arc<Mutex<([u8; 32], KeyedCard)>>,
}

impl CraftedPeer {
    fn set(&self, secret: [u8; 32], card: KeyedCard) {
        *self.state.lock().unwrap() = (secret, card);
    }
}

impl ProtocolHandler for CraftedPeer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
            return Ok(());
        };
        let Ok(hello) = wire::read_frame::<Hello>(&mut recv, MAX_FED_FRAME).await else {
            return Ok(());
        };
        let (secret, card) = self.state.lock().unwrap().clone();
        let reply = HelloReply::Card {
            cluster_id: card.cluster_id(),
            key: card.key,
            proof: prove(
                &secret,
                &hello.challenge,
                &self.me,
                &remote,
                &card.cluster_id(),
                &card.key,
            ),
            challenge: [3; 32],
        };
        if wire::write_frame(&mut send, &reply, MAX_FED_FRAME).await.is_err()
            || wire::read_frame::<Auth>(&mut recv, MAX_FED_FRAME).await.is_err()
        {
            return Ok(());
        }
        let welcome = Welcome::Accepted {
            links_back: false,
            card: Box::new(card),
        };
        let _ = wire::write_frame(&mut send, &welcome, MAX_FED_FRAME).await;
        let _ = send.finish();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let epoch = self.state.lock().unwrap().1.epoch();
            let resp = match wire::read_frame::<FedRequest>(&mut recv, MAX_FED_FRAME).await {
                Ok(FedRequest::Heartbeat { seq, .. }) => FedResponse::HeartbeatAck {
                    seq,
                    card_epoch: epoch,
                    links_back: false,
                },
                Ok(FedRequest::CatalogQuery { .. }) => FedResponse::Catalog {
                    entries: vec![],
                    more: false,
                },
                _ => FedResponse::Ok,
            };
            let _ = wire::write_frame(&mut send, &resp, MAX_FED_FRAME).await;
            let _ = send.finish();
        }
        Ok(())
    }
}

/// `node`'s link named `name`, once `pred` holds for it.
fn link_where(node: &NodeProc, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{}'s link {name}: {what}", node.name), || {
        node.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .find(|l| l["name"] == name && l["direction"] == "outbound")
            .filter(|l| pred(l))
            .cloned()
    })
}

fn endpoints_of(link: &Value) -> Vec<String> {
    link["endpoints"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The catalog of `peer` as `node` sees it: the names, when the query succeeds.
fn catalog_names(node: &NodeProc, peer: &str) -> Option<Vec<String>> {
    let v = node.try_json(&["catalog", peer])?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|e| e["name"].as_str().map(String::from))
            .collect(),
    )
}

fn share_linked(node: &NodeProc, name: &str) {
    node.register(name);
    let out = node.cli(&["share", name, "--with", "linked", "--mode", "pull"]);
    assert!(out.status.success(), "share: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_speak_for_its_old_cluster() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});
    let mut p = h.init("p");
    p.start();
    share_linked(&nodes[0], "doc");
    link_add(&p, &nodes[0], "alpha");
    link_add(&nodes[0], &p, "peer");
    link_where(&p, "alpha", "pinned on three members", |l| {
        l["state"] == "active" && endpoints_of(l).len() == 3
    });
    let cluster: ClusterId = cluster_id(&nodes[0]).parse().unwrap();

    // What a removed member (or its stolen disk) keeps: the cluster key and its node key.
    let c_id = nodes[2].endpoint_id();
    nodes[2].kill9();
    let c_dir = nodes[2].dir.clone();
    let node_key = causeway::datadir::read_key(&c_dir).unwrap();
    let old_secret = {
        let db = redb::Database::open(c_dir.join(causeway::datadir::DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        causeway_catalog::keys::own_key(&txn).unwrap().unwrap().secret.0
    };
    assert_eq!(cluster_id_of(&old_secret), cluster);

    // Before its removal, the member opens a federation session to the peer and keeps it.
    let held_epoch = link_where(&p, "alpha", "with a card", |l| l["card_epoch"].is_u64())["card_epoch"]
        .as_u64()
        .unwrap();
    let members: Vec<EndpointKey> = nodes.iter().map(|n| n.endpoint_id().parse().unwrap()).collect();
    let honest = KeyedCard::first(card_under(
        &old_secret,
        &CardKey::first(cluster),
        cluster,
        held_epoch,
        &members,
    ));
    let held = endpoint_with(node_key.clone()).await;
    let (w, conn) = dial_as(&held, addr_of(&p), &honest, &old_secret).await;
    assert!(matches!(w, Ok(Welcome::Accepted { .. })), "{w:?}");
    let conn = conn.unwrap();

    let out = nodes[0].cli(&["cluster", "remove", &c_id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The leader rotates at once and the peer follows without its admin.
    let l = link_where(&p, "alpha", "on key generation 1", |l| l["key_generation"] == 1);
    assert!(!endpoints_of(&l).contains(&c_id), "{l}");

    // The session it held open no longer speaks for alpha: no catalog through it.
    let body = causeway_proto::encode(&FedRequest::CatalogQuery { after: None, limit: 10 }, MAX_FED_FRAME).unwrap();
    let mut bytes = causeway_proto::frame::prefix(body.len()).to_vec();
    bytes.extend_from_slice(&body);
    let r = fed_raw(&conn, &bytes).await;
    assert!(!matches!(r, Ok(FedResponse::Catalog { .. })), "{r:?}");
    held.close().await;

    // The removed member, with the old key: a card of a huge epoch listing only itself.
    let attacker = endpoint_with(node_key.clone()).await;
    let me = key_of(&attacker);
    let first = CardKey::first(cluster);
    let squat = KeyedCard::first(card_under(&old_secret, &first, cluster, 1_000_000_000_000, &[me]));
    let (w, _) = dial_as(&attacker, addr_of(&p), &squat, &old_secret).await;
    let r = refusal(&w);
    assert!(r.contains("stale") && r.contains("generation"), "{r}");

    // A rotation forged with the old key alone, or with the removed node's signature too.
    let forged_key = [77u8; 32];
    for signers in [vec![], vec![node_key.to_bytes()]] {
        let forged = rotated(
            cluster,
            (&first, &old_secret),
            &forged_key,
            &signers,
            2_000_000_000_000,
            &[me],
        );
        let (w, _) = dial_as(&attacker, addr_of(&p), &forged, &forged_key).await;
        let r = refusal(&w);
        assert!(r.contains("another key"), "{r}");
    }

    // The peer keeps the real cluster's endpoints and keeps working with it.
    let l = link_where(&p, "alpha", "active on the real members", |l| {
        l["state"] == "active" && l["key_generation"] == 1
    });
    let eps = endpoints_of(&l);
    assert_eq!(eps.len(), 2, "{l}");
    assert!(eps.contains(&nodes[0].endpoint_id()) && eps.contains(&nodes[1].endpoint_id()));
    wait_for("the peer's catalog of alpha", || {
        catalog_names(&p, "alpha").filter(|n| n.contains(&"doc".to_string()))
    });
    attacker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_rotations_fail_the_link_until_an_admin_confirms() {
    let h = Harness::new();
    let mut p = h.init("p");
    p.start();
    let t = endpoint_with(iroh::SecretKey::generate()).await;
    let me = key_of(&t);
    // A crafted three-member cluster: the test holds every member's node key.
    let n1 = t.secret_key().to_bytes();
    let (n2, n3) = ([52u8; 32], [53u8; 32]);
    let members = [me, node_endpoint(&n2), node_endpoint(&n3)];
    let k0 = [50u8; 32];
    let cluster = cluster_id_of(&k0);
    let first = CardKey::first(cluster);
    let peer = CraftedPeer {
        me,
        state: Arc::new(Mutex::new((
            k0,
            KeyedCard::first(card_under(&k0, &first, cluster, 1, &members)),
        ))),
    };
    let router = Router::builder(t.clone())
        .accept(causeway_proto::alpn::FED, peer.clone())
        .spawn();
    let out = p.cli(&[
        "link",
        "add",
        &me.to_string(),
        "--addr",
        &format!("127.0.0.1:{}", t.bound_sockets()[0].port()),
        "--name",
        "tee",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_where(&p, "tee", "pinned", |l| l["state"] == "active");

    // A rotation signed by the old key and two of three members: followed.
    let (k1, k1b) = ([60u8; 32], [61u8; 32]);
    let one = rotated(cluster, (&first, &k0), &k1, &[n1, n2], 2, &members);
    peer.set(k1, one.clone());
    link_where(&p, "tee", "on generation 1", |l| {
        l["state"] == "active" && l["key_generation"] == 1
    });

    // Another statement for generation 1, with its own majority: both are refused.
    let other = rotated(cluster, (&first, &k0), &k1b, &[n2, n3], 3, &members);
    peer.set(k1b, other);
    let l = link_where(&p, "tee", "failing on the conflict", |l| {
        l["state"] == "failing"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("conflicting key rotation"))
    });
    assert_eq!(l["key_generation"], 1);
    // The first key, with a newer card, is not taken back either.
    let again = KeyedCard {
        signed: card_under(&k1, &one.key, cluster, 4, &members),
        ..one.clone()
    };
    peer.set(k1, again);
    let conn = dial_as(&t, addr_of(&p), &one, &k1).await;
    assert!(refusal(&conn.0).contains("conflicting key rotation"));
    link_where(&p, "tee", "still failing", |l| l["state"] == "failing");

    // The admin confirms the peer: the key it presents now is taken.
    let out = p.cli(&[
        "link",
        "add",
        &me.to_string(),
        "--addr",
        &format!("127.0.0.1:{}", t.bound_sockets()[0].port()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_where(&p, "tee", "active after the confirmation", |l| {
        l["state"] == "active" && l["card_epoch"] == 4
    });
    router.shutdown().await.unwrap();
}

#[test]
fn rotate_key_is_followed_by_peers_without_their_admin() {
    let h = Harness::new();
    let nodes = h.three_node_cluster(|_| {});
    let mut p = h.init("p");
    p.start();
    share_linked(&nodes[0], "doc");
    link_add(&p, &nodes[0], "alpha");
    link_add(&nodes[0], &p, "peer");
    link_where(&p, "alpha", "pinned", |l| {
        l["state"] == "active" && l["key_generation"] == 0
    });
    wait_for("the peer's catalog of alpha", || {
        catalog_names(&p, "alpha").filter(|n| n.contains(&"doc".to_string()))
    });

    let v = nodes[1].json(&["cluster", "rotate-key"]);
    assert_eq!(v["generation"], 1, "{v}");
    assert_eq!(v["majority"], true, "{v}");
    assert!(v["signers"].as_u64().unwrap() >= 2, "{v}");

    let l = link_where(&p, "alpha", "re-pinned on generation 1", |l| {
        l["state"] == "active" && l["key_generation"] == 1
    });
    assert_eq!(endpoints_of(&l).len(), 3, "{l}");
    // Queries keep working under the new key, on a fresh session.
    nodes[0].register("later");
    let out = nodes[0].cli(&["share", "later", "--with", "linked", "--mode", "pull"]);
    assert!(out.status.success());
    wait_for("the peer's catalog under the new key", || {
        catalog_names(&p, "alpha").filter(|n| n.contains(&"later".to_string()))
    });
    // A second rotation is followed as well.
    let v = nodes[0].json(&["cluster", "rotate-key"]);
    assert_eq!(v["generation"], 2, "{v}");
    link_where(&p, "alpha", "on generation 2", |l| {
        l["state"] == "active" && l["key_generation"] == 2
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_claiming_another_peers_endpoint_is_refused() {
    let h = Harness::new();
    let mut victim = h.init("v");
    let mut partner = h.init("q");
    victim.start();
    partner.start();
    victim.register("for-partner");
    let q_cluster = cluster_id(&partner);
    let out = victim.cli(&["share", "for-partner", "--with", &q_cluster, "--mode", "pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_add(&victim, &partner, "partner");
    link_add(&partner, &victim, "victim");
    link_where(&victim, "partner", "pinned", |l| l["state"] == "active");

    // The attacker: a linked peer whose link sorts before the partner's.
    let t = endpoint_with(iroh::SecretKey::generate()).await;
    let me = key_of(&t);
    let k = [70u8; 32];
    let cluster = cluster_id_of(&k);
    let first = CardKey::first(cluster);
    let honest = KeyedCard::first(card_under(&k, &first, cluster, 1, &[me]));
    let peer = CraftedPeer {
        me,
        state: Arc::new(Mutex::new((k, honest.clone()))),
    };
    let router = Router::builder(t.clone())
        .accept(causeway_proto::alpn::FED, peer.clone())
        .spawn();
    let out = victim.cli(&[
        "link",
        "add",
        &me.to_string(),
        "--addr",
        &format!("127.0.0.1:{}", t.bound_sockets()[0].port()),
        "--name",
        "evil",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_where(&victim, "evil", "pinned", |l| l["state"] == "active");

    // Its card now claims the partner's endpoint: by update, and at a new handshake.
    let q_key: EndpointKey = partner.endpoint_id().parse().unwrap();
    let squat = KeyedCard::first(card_under(&k, &first, cluster, 2, &[me, q_key]));
    let (w, conn) = dial_as(&t, addr_of(&victim), &honest, &k).await;
    assert!(matches!(w, Ok(Welcome::Accepted { .. })), "{w:?}");
    let conn = conn.unwrap();
    let resp = fed_request(&conn, &FedRequest::CardUpdate(Box::new(squat.clone()))).await;
    match resp {
        FedResponse::Denied(r) => assert!(r.contains("belongs to"), "{r}"),
        other => panic!("a squatting card was not refused: {other:?}"),
    }
    let (w, _) = dial_as(&t, addr_of(&victim), &squat, &k).await;
    assert!(refusal(&w).contains("belongs to"), "{w:?}");
    peer.set(k, squat);
    let evil = link_where(&victim, "evil", "still on its own endpoint", |l| l["card_epoch"] == 1);
    assert_eq!(endpoints_of(&evil), vec![me.to_string()]);

    // The partner keeps its endpoint, its handshakes and its own view of what we share.
    let l = link_where(&victim, "partner", "active", |l| l["state"] == "active");
    assert_eq!(endpoints_of(&l), vec![partner.endpoint_id()]);
    wait_for("the partner's view of the victim's catalog", || {
        catalog_names(&partner, "victim").filter(|n| n == &vec!["for-partner".to_string()])
    });
    link_where(&partner, "victim", "mutual", |l| l["mutual"] == true);

    // Relinking the partner works.
    let out = victim.cli(&["link", "remove", "partner"]);
    assert!(out.status.success(), "{}", stderr(&out));
    link_add(&victim, &partner, "partner");
    link_where(&victim, "partner", "pinned again", |l| {
        l["state"] == "active" && l["peer"] == q_cluster.as_str()
    });
    conn.close(0u32.into(), b"done");
    router.shutdown().await.unwrap();
}

#[test]
fn a_rotation_without_a_majority_waits_for_the_peers_admin() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    let mut b = h.join("b", &a);
    b.start();
    wait_for_voters(&a, 2);
    let mut p = h.init("p");
    p.start();
    link_add(&p, &a, "alpha");
    link_add(&a, &p, "peer");
    link_where(&p, "alpha", "pinned on two members", |l| {
        l["state"] == "active" && endpoints_of(l).len() == 2
    });

    // Two members to one: the remaining member alone cannot be a majority of the previous card.
    let out = a.cli(&["cluster", "remove", &b.endpoint_id()]);
    assert!(out.status.success(), "{}", stderr(&out));
    b.kill9();
    let l = link_where(&p, "alpha", "refusing the new key", |l| {
        l["reason"].as_str().is_some_and(|r| r.contains("majority"))
    });
    assert_eq!(l["key_generation"], 0, "{l}");

    // Its admin confirms the cluster: the new key is taken.
    let out = p.cli(&[
        "link",
        "add",
        &a.endpoint_id(),
        "--addr",
        &format!("127.0.0.1:{}", a.port),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let l = link_where(&p, "alpha", "on generation 1 after the confirmation", |l| {
        l["state"] == "active" && l["key_generation"] == 1
    });
    assert_eq!(endpoints_of(&l), vec![a.endpoint_id()]);
}
