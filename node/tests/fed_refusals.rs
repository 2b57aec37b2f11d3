//! The federation handshake refuses what it must, with a reason in the logs and in link status,
//! and the node keeps serving: bad signatures, cards that do not list the connecting endpoint,
//! replayed session proofs, endpoints claiming a pinned cluster, a pinned peer that presents
//! another cluster key, stale cards, garbage and unsupported protocol versions. The listener
//! shows its members only after the dialer proved itself.

mod common;

use std::sync::{Arc, Mutex};

use causeway::{Discovery, endpoint};
use causeway_proto::{
    ClusterId, EndpointKey,
    card::{CardKey, CardMember, ClusterCard, SignedCard, cluster_id_of},
    fed::{Auth, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, prove},
    rotation::KeyedCard,
};
use causeway_raft::wire;
use common::*;
use iroh::{
    Endpoint, EndpointAddr, EndpointId,
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler, Router},
};

fn addr_of(node: &NodeProc) -> EndpointAddr {
    let id: EndpointId = node.endpoint_id().parse().unwrap();
    EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().unwrap())
}

fn key_of(ep: &Endpoint) -> EndpointKey {
    EndpointKey(*ep.id().as_bytes())
}

fn card(secret: &[u8; 32], epoch: u64, members: &[EndpointKey]) -> SignedCard {
    SignedCard::sign(
        ClusterCard {
            cluster_id: cluster_id_of(secret),
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
        secret,
    )
}

/// A first-key proof by `secret` of the cluster it names.
fn first_proof(secret: &[u8; 32], challenge: &[u8; 32], me: &EndpointKey, remote: &EndpointKey) -> [u8; 64] {
    let id = cluster_id_of(secret);
    prove(secret, challenge, me, remote, &id, &CardKey::first(id))
}

fn accepted(w: &Result<Welcome, String>) -> bool {
    matches!(w, Ok(Welcome::Accepted { links_back: false, .. }))
}

async fn test_endpoint() -> Endpoint {
    endpoint::bind(
        iroh::SecretKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        Discovery::Static,
        vec![],
    )
    .await
    .unwrap()
}

/// Dials `target` and runs the dialer's half with the given card, proving with `proof_for`
/// (given the listener's challenge). Returns the listener's verdict.
async fn crafted_dial(
    ep: &Endpoint,
    target: EndpointAddr,
    my_card: SignedCard,
    proof_for: impl FnOnce(&[u8; 32], &EndpointKey) -> [u8; 64],
) -> Result<Welcome, String> {
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
    // Before we proved ourselves, the listener names its cluster and key, not its members.
    let HelloReply::Card { challenge, key, .. } = reply else {
        return Err("listener refused hello".into());
    };
    assert_eq!(key.generation, 0);
    let auth = Auth {
        card: KeyedCard::first(my_card),
        proof: proof_for(&challenge, &remote),
    };
    wire::write_frame(&mut send, &auth, MAX_FED_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    wire::read_frame(&mut recv, MAX_FED_FRAME)
        .await
        .map_err(|e| e.to_string())
}

fn refused(w: Result<Welcome, String>) -> String {
    match w {
        Ok(Welcome::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_handshakes_are_refused_with_reasons() {
    let h = Harness::new();
    let mut a = h.init("a");
    let mut b = h.init("b");
    a.start();
    b.start();
    let out = a.cli(&[
        "link",
        "add",
        &b.endpoint_id(),
        "--addr",
        &format!("127.0.0.1:{}", b.port),
        "--name",
        "beta",
    ]);
    assert!(out.status.success());
    let b_cluster: ClusterId = b.json(&["id"])["cluster_id"].as_str().unwrap().parse().unwrap();
    wait_for("a's link to b to be pinned", || {
        a.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .any(|l| l["name"] == "beta" && l["peer"].is_string())
            .then_some(())
    });

    let t = test_endpoint().await;
    let me = key_of(&t);
    let secret = [42u8; 32];
    let good = card(&secret, 1, &[me]);
    let a_addr = addr_of(&a);

    // A well-formed stranger is accepted as an inbound peer (public view only).
    let w = crafted_dial(&t, a_addr.clone(), good.clone(), |ch, remote| {
        first_proof(&secret, ch, &me, remote)
    })
    .await;
    assert!(accepted(&w), "{w:?}");
    if let Ok(Welcome::Accepted { card, .. }) = &w {
        assert!(card.verify().is_ok(), "the listener's full card verifies");
        assert_eq!(card.signed.card.members.len(), 1);
    }

    // Bad signature.
    let mut bad = good.clone();
    bad.signature[5] ^= 1;
    let r = refused(
        crafted_dial(&t, a_addr.clone(), bad, |ch, remote| {
            first_proof(&secret, ch, &me, remote)
        })
        .await,
    );
    assert!(r.contains("signature"), "{r}");

    // A card that does not list the connecting endpoint (captured from someone else).
    let other = card(&secret, 1, &[EndpointKey([9; 32])]);
    let r = refused(
        crafted_dial(&t, a_addr.clone(), other, |ch, remote| {
            first_proof(&secret, ch, &me, remote)
        })
        .await,
    );
    assert!(r.contains("does not list"), "{r}");

    // A replayed proof from another session.
    let r = refused(
        crafted_dial(&t, a_addr.clone(), good.clone(), |_, remote| {
            first_proof(&secret, &[0; 32], &me, remote)
        })
        .await,
    );
    assert!(r.contains("session proof"), "{r}");

    // An unknown endpoint claiming b's pinned cluster, with a card it could not have signed.
    let mut claim = card(&secret, 7, &[me]);
    claim.card.cluster_id = b_cluster;
    let r = refused(
        crafted_dial(&t, a_addr.clone(), claim, |ch, remote| {
            prove(&secret, ch, &me, remote, &b_cluster, &CardKey::first(b_cluster))
        })
        .await,
    );
    assert!(r.contains("does not verify"), "{r}");

    // Garbage instead of a hello.
    let conn: Connection = t.connect(a_addr.clone(), causeway_proto::alpn::FED).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    send.finish().unwrap();
    assert!(wire::read_frame::<HelloReply>(&mut recv, MAX_FED_FRAME).await.is_err());

    // An unsupported protocol version does not connect.
    assert!(t.connect(a_addr.clone(), b"causeway/fed/9").await.is_err());

    // Logged, and the node keeps serving its real link.
    wait_for("refusals in a's log", || {
        a.log().contains("refused federation handshake").then_some(())
    });
    wait_for("a's link to b active", || {
        a.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .any(|l| l["name"] == "beta" && l["state"] == "active")
            .then_some(())
    });
    t.close().await;
    b.kill9();
}

/// A crafted listener whose card and key the test switches at will.
#[derive(Clone, Debug)]
struct CraftedPeer {
    me: EndpointKey,
    state: Arc<Mutex<([u8; 32], SignedCard)>>,
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
        let id = card.card.cluster_id;
        let reply = HelloReply::Card {
            cluster_id: id,
            key: CardKey::first(id),
            proof: prove(&secret, &hello.challenge, &self.me, &remote, &id, &CardKey::first(id)),
            challenge: [3; 32],
        };
        if wire::write_frame(&mut send, &reply, MAX_FED_FRAME).await.is_err() {
            return Ok(());
        }
        if wire::read_frame::<Auth>(&mut recv, MAX_FED_FRAME).await.is_err() {
            return Ok(());
        }
        let welcome = Welcome::Accepted {
            links_back: false,
            card: Box::new(KeyedCard::first(card)),
        };
        let _ = wire::write_frame(&mut send, &welcome, MAX_FED_FRAME).await;
        let _ = send.finish();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let epoch = self.state.lock().unwrap().1.card.epoch;
            let resp = match wire::read_frame::<FedRequest>(&mut recv, MAX_FED_FRAME).await {
                Ok(FedRequest::Heartbeat { seq, .. }) => FedResponse::HeartbeatAck {
                    seq,
                    card_epoch: epoch,
                    links_back: false,
                },
                _ => FedResponse::Ok,
            };
            let _ = wire::write_frame(&mut send, &resp, MAX_FED_FRAME).await;
            let _ = send.finish();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_peer_presenting_another_key_or_a_stale_card_is_refused() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    let t = test_endpoint().await;
    let me = key_of(&t);
    let t_port = t.bound_sockets()[0].port();
    let k1 = [11u8; 32];
    let k2 = [22u8; 32];
    let peer = CraftedPeer {
        me,
        state: Arc::new(Mutex::new((k1, card(&k1, 3, &[me])))),
    };
    let router = Router::builder(t.clone())
        .accept(causeway_proto::alpn::FED, peer.clone())
        .spawn();

    let out = a.cli(&[
        "link",
        "add",
        &me.to_string(),
        "--addr",
        &format!("127.0.0.1:{t_port}"),
        "--name",
        "tee",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tee = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        a.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .find(|l| l["name"] == "tee")
            .filter(|l| pred(l))
            .cloned()
    };
    let l = wait_for("tee pinned and active", || tee(&|l| l["state"] == "active"));
    assert_eq!(l["peer"], cluster_id_of(&k1).to_string().as_str());

    // The same endpoint now presents another cluster's key: refused, and the link says why.
    *peer.state.lock().unwrap() = (k2, card(&k2, 9, &[me]));
    let l = wait_for("tee to report the key change", || {
        tee(&|l| l["reason"].as_str().is_some_and(|r| r.contains("pinned")))
    });
    assert_eq!(
        l["peer"],
        cluster_id_of(&k1).to_string().as_str(),
        "the pin never moves"
    );
    wait_for("tee failing", || tee(&|l| l["state"] == "failing"));

    // The right key but an older card than known: refused as stale.
    *peer.state.lock().unwrap() = (k1, card(&k1, 1, &[me]));
    wait_for("tee to report the stale card", || {
        tee(&|l| l["reason"].as_str().is_some_and(|r| r.contains("stale")))
    });

    // A newer card of the pinned cluster: accepted again.
    *peer.state.lock().unwrap() = (k1, card(&k1, 4, &[me]));
    wait_for("tee active on epoch 4", || {
        tee(&|l| l["state"] == "active" && l["card_epoch"] == 4)
    });
    router.shutdown().await.unwrap();
}
