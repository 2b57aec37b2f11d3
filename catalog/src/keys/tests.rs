use super::*;
use crate::test_support::{db, run};
use causeway_proto::card::{CardMember, ClusterCard, SignedCard};
use redb::ReadableDatabase;

fn signed(secret: &[u8; 32], key: &CardKey, cluster: ClusterId, epoch: u64, members: &[EndpointKey]) -> SignedCard {
    SignedCard::sign_as(
        ClusterCard {
            cluster_id: cluster,
            name: "peer".into(),
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

fn node_key(seed: u8) -> ([u8; 32], EndpointKey) {
    let s = [seed; 32];
    (s, causeway_proto::rotation::node_endpoint(&s))
}

fn add(name: &str, e: EndpointKey) -> Command {
    Command::AddLink {
        name: name.into(),
        endpoint: e,
        addrs: vec![],
        now_ms: 1,
    }
}

#[test]
fn a_peer_rotation_needs_the_old_key_and_a_majority_and_squatting_is_refused() {
    let (_d, db) = db();
    let first = [5u8; 32];
    let cluster = cluster_id_of(&first);
    let nodes: Vec<_> = (20..23).map(node_key).collect();
    let members: Vec<EndpointKey> = nodes.iter().map(|n| n.1).collect();
    let k0 = CardKey::first(cluster);
    assert!(matches!(run(&db, add("beta", members[0])), CommandResult::Link(_)));
    let pin = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(KeyedCard::first(signed(&first, &k0, cluster, 1, &members))),
    };
    assert!(matches!(run(&db, pin), CommandResult::Link(_)));

    // A second link whose card claims beta's endpoint is refused.
    let (other_secret, other_node) = node_key(40);
    let other = cluster_id_of(&other_secret);
    assert!(matches!(run(&db, add("gamma", other_node)), CommandResult::Link(_)));
    let squat = Command::PeerCard {
        link: "gamma".into(),
        card: Box::new(KeyedCard::first(signed(
            &other_secret,
            &CardKey::first(other),
            other,
            1,
            &[other_node, members[1]],
        ))),
    };
    assert!(matches!(
        run(&db, squat),
        CommandResult::Rejected(Rejection::EndpointClaimed { .. })
    ));
    let r = db.begin_read().unwrap();
    assert_eq!(
        crate::endpoint_index::owner(&r, &members[1]).unwrap().as_deref(),
        Some("beta")
    );
    drop(r);

    // Rotation signed by the old key alone: refused; with two of three members: followed.
    let next = [6u8; 32];
    let body = RotationBody {
        cluster_id: cluster,
        generation: 1,
        new_key: cluster_id_of(&next),
        previous_key: cluster,
    };
    let k1 = body.card_key();
    let card_under = |sigs: Vec<NodeSignature>, epoch| KeyedCard {
        signed: signed(&next, &k1, cluster, epoch, &members[..1]),
        key: k1,
        rotation: Some(RotationStatement::sign(body.clone(), &first, sigs)),
    };
    let lone = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(card_under(vec![], 2)),
    };
    assert!(matches!(run(&db, lone), CommandResult::Rejected(Rejection::PeerKey(_))));
    let sigs = vec![
        NodeSignature::sign(&nodes[0].0, &body),
        NodeSignature::sign(&nodes[1].0, &body),
    ];
    let good = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(card_under(sigs, 2)),
    };
    assert!(matches!(run(&db, good), CommandResult::Link(_)));
    // The old key's card of any epoch is now stale.
    let old = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(KeyedCard::first(signed(&first, &k0, cluster, u64::MAX, &members[2..]))),
    };
    assert!(matches!(run(&db, old), CommandResult::Rejected(Rejection::PeerKey(_))));
    let legacy = Command::UpdatePeerCard {
        cluster,
        card: signed(&first, &k0, cluster, u64::MAX, &members[2..]),
    };
    assert!(matches!(
        run(&db, legacy),
        CommandResult::Rejected(Rejection::BadCard(_))
    ));

    // A second statement of generation 1 with a majority: conflict, held until confirmed.
    let fork = [7u8; 32];
    let fork_body = RotationBody {
        new_key: cluster_id_of(&fork),
        ..body.clone()
    };
    let fork_sigs = vec![
        NodeSignature::sign(&nodes[1].0, &fork_body),
        NodeSignature::sign(&nodes[2].0, &fork_body),
    ];
    let fork_key = fork_body.card_key();
    let forked = KeyedCard {
        signed: signed(&fork, &fork_key, cluster, 3, &members[..1]),
        key: fork_key,
        rotation: Some(RotationStatement::sign(fork_body, &first, fork_sigs)),
    };
    let conflict = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(forked.clone()),
    };
    assert_eq!(run(&db, &conflict), CommandResult::Rejected(Rejection::KeyConflict(1)));
    let again = Command::PeerCard {
        link: "beta".into(),
        card: Box::new(card_under(vec![], 4)),
    };
    assert_eq!(run(&db, again), CommandResult::Rejected(Rejection::KeyConflict(1)));
    let confirm = Command::ConfirmPeerKey {
        link: "beta".into(),
        endpoint: members[0],
        addrs: vec![],
    };
    assert!(matches!(run(&db, confirm), CommandResult::Link(_)));
    assert!(matches!(run(&db, &conflict), CommandResult::Link(_)));
    let r = db.begin_read().unwrap();
    let held = held_key(&r, &cluster).unwrap();
    assert_eq!(held.key, fork_key);
    assert!(!held.conflict && !held.confirm);
}

#[test]
fn own_rotation_requires_the_current_key() {
    let (_d, db) = db();
    let first = [9u8; 32];
    let cluster = cluster_id_of(&first);
    run(
        &db,
        Command::InitCluster {
            cluster_id: cluster,
            cluster_secret: first,
            name: "alpha".into(),
        },
    );
    let (node_secret, node) = node_key(30);
    let k0 = CardKey::first(cluster);
    run(
        &db,
        Command::SetOwnCard {
            card: signed(&first, &k0, cluster, 1, &[node]),
        },
    );
    let next = [10u8; 32];
    let body = RotationBody {
        cluster_id: cluster,
        generation: 1,
        new_key: cluster_id_of(&next),
        previous_key: cluster,
    };
    assert_eq!(
        run(
            &db,
            Command::RotationRequest {
                body: Box::new(body.clone())
            }
        ),
        CommandResult::Applied
    );
    let sig = NodeSignature::sign(&node_secret, &body);
    assert_eq!(
        run(
            &db,
            Command::RotationSign {
                signature: Box::new(sig.clone())
            }
        ),
        CommandResult::Applied
    );
    let r = db.begin_read().unwrap();
    assert_eq!(pending_rotation(&r).unwrap().unwrap().signatures.len(), 1);
    drop(r);
    // Signed by a key that is not the current one: refused.
    let bad = RotationStatement::sign(body.clone(), &[1; 32], vec![sig.clone()]);
    assert!(matches!(
        run(
            &db,
            Command::RotateOwnKey {
                secret: KeySecret(next),
                statement: Box::new(bad)
            }
        ),
        CommandResult::Rejected(_)
    ));
    let good = RotationStatement::sign(body.clone(), &first, vec![sig]);
    assert_eq!(
        run(
            &db,
            Command::RotateOwnKey {
                secret: KeySecret(next),
                statement: Box::new(good)
            }
        ),
        CommandResult::Applied
    );
    let r = db.begin_read().unwrap();
    let own = own_key(&r).unwrap().unwrap();
    assert_eq!(own.key, body.card_key());
    assert!(pending_rotation(&r).unwrap().is_none());
    drop(r);
    // Cards are now accepted only under the new key.
    let stale_key = Command::SetOwnCard {
        card: signed(&first, &k0, cluster, 2, &[node]),
    };
    assert!(matches!(run(&db, stale_key), CommandResult::Rejected(_)));
    let fresh = Command::SetOwnCard {
        card: signed(&next, &body.card_key(), cluster, 2, &[node]),
    };
    assert_eq!(run(&db, fresh), CommandResult::Applied);
}
