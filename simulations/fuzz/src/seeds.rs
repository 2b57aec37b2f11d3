//! Valid encodings of every message the targets decode: the seed corpus
//! (`cargo run --example make_corpus` writes them to `corpus/<target>/`).

use std::collections::{BTreeMap, BTreeSet};

use causeway_catalog::{Command, CommandResult, peer_views::PeerEntry, state};
use causeway_policy::ShareMode;
use causeway_proto::{
    ClusterId, EndpointKey, InviteTicket, alpn,
    card::{CardMember, ClusterCard, SignedCard, cluster_id_of},
    fed::{Auth, CatalogEntry, FedRequest, FedResponse, Hello, HelloReply, Welcome, prove},
    rotation::{KeyedCard, NodeSignature, RotationBody, RotationStatement},
    frame,
    join::{JoinRequest, JoinResponse},
    ticket::TicketMember,
};
use causeway_raft::{
    MemberNode, TypeConfig,
    status::{ClusterStatus, MemberStatus, Role},
    types::{Entry, SnapshotMeta, Vote},
    wire::{ForwardRequest, ForwardResponse, RaftRequest, RaftResponse, StreamKind},
};
use openraft::{
    EntryPayload, Membership, StoredMembership,
    raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse},
    testing::{blank_ent, log_id, membership_ent},
};
use redb::{Database, ReadableDatabase, backends::InMemoryBackend};
use serde::Serialize;

use crate::catalog_db::{self, LOCAL, OWN_SECRET, PEER_ENDPOINT, PEER_SECRET};
use crate::targets::{CHALLENGE, Sample, SampleChoice};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn pc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("encode seed")
}

fn sample_ticket() -> InviteTicket {
    InviteTicket {
        cluster: cluster_id_of(&OWN_SECRET),
        members: vec![
            TicketMember {
                endpoint: LOCAL,
                addrs: vec!["127.0.0.1:4000".parse().unwrap(), "[::1]:4000".parse().unwrap()],
            },
            TicketMember {
                endpoint: EndpointKey([45; 32]),
                addrs: vec!["192.0.2.7:4000".parse().unwrap()],
            },
        ],
        invite_id: [3; 16],
        secret: [4; 32],
        expires_at_ms: 1_800_000_000_000,
    }
}

/// The peer's card after a rotation to generation 1, signed by the old key and one member.
fn rotated_card() -> KeyedCard {
    let next = [91u8; 32];
    let body = RotationBody {
        cluster_id: cluster_id_of(&PEER_SECRET),
        generation: 1,
        new_key: cluster_id_of(&next),
        previous_key: cluster_id_of(&PEER_SECRET),
    };
    let sigs = vec![NodeSignature::sign(&[92; 32], &body)];
    let key = body.card_key();
    let signed = SignedCard::sign_as(two_member_card().card, &key, &next);
    KeyedCard {
        signed,
        key,
        rotation: Some(RotationStatement::sign(body, &PEER_SECRET, sigs)),
    }
}

fn two_member_card() -> SignedCard {
    SignedCard::sign(
        ClusterCard {
            cluster_id: cluster_id_of(&PEER_SECRET),
            name: "peer-cluster".into(),
            members: vec![
                CardMember {
                    endpoint: PEER_ENDPOINT,
                    addrs: vec!["127.0.0.1:7000".parse().unwrap(), "[::1]:7000".parse().unwrap()],
                },
                CardMember {
                    endpoint: EndpointKey([34; 32]),
                    addrs: vec![],
                },
            ],
            epoch: 4,
            issued_at_ms: 1_700_000_000_000,
        },
        &PEER_SECRET,
    )
}

fn catalog_entry(name: &str, mode: &str) -> CatalogEntry {
    CatalogEntry {
        name: name.into(),
        kind: "forge/repo".into(),
        owner: "peer-team".into(),
        version: 2,
        content: Some("b3cafe".into()),
        mode: mode.into(),
        read_only: false,
    }
}

/// The seeded catalog state, exported as a Raft snapshot carries it.
pub fn seeded_snapshot() -> state::CatalogSnapshot {
    let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
    let txn = db.begin_write().unwrap();
    state::create_tables(&txn).unwrap();
    for cmd in catalog_db::seed_commands() {
        state::apply(&txn, &cmd).unwrap();
    }
    txn.commit().unwrap();
    state::export(&db.begin_read().unwrap()).unwrap()
}

fn commands() -> Vec<(&'static str, Command)> {
    let peer = cluster_id_of(&PEER_SECRET);
    let mut out: Vec<(&'static str, Command)> = catalog_db::seed_commands()
        .into_iter()
        .map(|c| (c.label(), c))
        .collect();
    out.extend([
        (
            "update-metadata",
            Command::UpdateMetadata {
                name: "team/tools".into(),
                set: BTreeMap::from([("owner".into(), "ops".into())]),
                remove: vec!["k".into()],
                now_ms: 6,
            },
        ),
        (
            "remove-share",
            Command::RemoveShare {
                name: "team/tools".into(),
                audience: causeway_policy::Audience::Linked,
                now_ms: 7,
            },
        ),
        (
            "remove-resource",
            Command::RemoveResource {
                name: "team/tools".into(),
                now_ms: 8,
            },
        ),
        (
            "peer-catalog-sync",
            Command::PeerCatalogSync {
                cluster: peer,
                after: Some("a".into()),
                upto: Some("z".into()),
                entries: vec![catalog_db::peer_entry("m")],
            },
        ),
        (
            "peer-card-rotated",
            Command::PeerCard {
                link: "peer".into(),
                card: Box::new(rotated_card()),
            },
        ),
        (
            "rotation-request",
            Command::RotationRequest {
                body: Box::new(RotationBody {
                    cluster_id: cluster_id_of(&OWN_SECRET),
                    generation: 1,
                    new_key: cluster_id_of(&[93; 32]),
                    previous_key: cluster_id_of(&OWN_SECRET),
                }),
            },
        ),
        (
            "redeem-invite",
            Command::RedeemInvite {
                invite_id: [1; 16],
                secret_hash: [2; 32],
                joiner: EndpointKey([66; 32]),
                now_ms: 9,
            },
        ),
        (
            "update-peer-card",
            Command::UpdatePeerCard {
                cluster: peer,
                card: catalog_db::card(&PEER_SECRET, "peer", PEER_ENDPOINT, 2),
            },
        ),
        (
            "remove-link",
            Command::RemoveLink {
                name: "peer".into(),
                now_ms: 10,
            },
        ),
    ]);
    out
}

fn raft_requests() -> Vec<(&'static str, u8, RaftRequest)> {
    let a: EndpointKey = 1u64.into();
    let b: EndpointKey = 2u64.into();
    let vote = Vote::new_committed(3, a);
    let normal: Entry = Entry {
        log_id: log_id::<TypeConfig>(3, a, 5),
        payload: EntryPayload::Normal(Command::PublishResource {
            name: "team/tools".into(),
            content: Some("b3".into()),
            base_version: None,
            now_ms: 11,
        }
        .into()),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id::<TypeConfig>(3, a, 2)),
        entries: vec![
            blank_ent::<TypeConfig>(3, a, 3),
            membership_ent::<TypeConfig>(3, a, 4, vec![BTreeSet::from([a, b])]),
            normal,
        ],
        leader_commit: Some(log_id::<TypeConfig>(3, a, 2)),
    };
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([a])], [a, b]);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(3, a, 9)),
        last_membership: StoredMembership::new(Some(log_id::<TypeConfig>(3, a, 4)), membership),
    };
    vec![
        ("append", 1, RaftRequest::Append(append)),
        (
            "append-heartbeat",
            1,
            RaftRequest::Append(AppendEntriesRequest {
                vote: Vote::new_committed(3, a),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            }),
        ),
        (
            "vote",
            1,
            RaftRequest::Vote(VoteRequest::new(Vote::new(4, b), Some(log_id::<TypeConfig>(3, a, 9)))),
        ),
        (
            "pre-vote",
            1,
            RaftRequest::PreVote(VoteRequest::new(Vote::new(4, b), None)),
        ),
        (
            "snapshot",
            2,
            RaftRequest::Snapshot {
                vote: Vote::new_committed(3, a),
                meta,
                data: pc(&seeded_snapshot()),
            },
        ),
        (
            "forward-write",
            1,
            RaftRequest::Forward(ForwardRequest::Write(Command::RegisterResource {
                name: "new".into(),
                kind: "artifact".into(),
                owner: "me".into(),
                path: None,
                metadata: BTreeMap::new(),
                registered_at_ms: 12,
            })),
        ),
        ("forward-read-index", 1, RaftRequest::Forward(ForwardRequest::ReadIndex)),
        (
            "forward-add-learner",
            1,
            RaftRequest::Forward(ForwardRequest::AddLearner {
                id: b,
                node: MemberNode {
                    addrs: vec!["127.0.0.1:9000".parse().unwrap()],
                },
            }),
        ),
        (
            "forward-remove-member",
            1,
            RaftRequest::Forward(ForwardRequest::RemoveMember { id: b }),
        ),
        ("forward-status", 1, RaftRequest::Forward(ForwardRequest::Status)),
        (
            "forward-app",
            1,
            RaftRequest::Forward(ForwardRequest::App(vec![1, 2, 3])),
        ),
    ]
}

fn raft_responses() -> Vec<(&'static str, RaftResponse)> {
    let a: EndpointKey = 1u64.into();
    let status = ClusterStatus {
        leader: Some(a),
        term: 3,
        commit_index: 9,
        applied_index: 9,
        last_log_index: 9,
        snapshot_index: 0,
        purged_index: 0,
        reported_by: a,
        members: vec![MemberStatus {
            endpoint_id: a,
            role: Role::Voter,
            reachable: true,
            addrs: vec!["127.0.0.1:9000".parse().unwrap()],
            matched_index: Some(9),
        }],
    };
    vec![
        ("append-success", RaftResponse::Append(AppendEntriesResponse::Success)),
        ("append-conflict", RaftResponse::Append(AppendEntriesResponse::Conflict)),
        (
            "append-higher-vote",
            RaftResponse::Append(AppendEntriesResponse::HigherVote(Vote::new(5, a))),
        ),
        (
            "vote",
            RaftResponse::Vote(VoteResponse::new(
                Vote::new(4, a),
                Some(log_id::<TypeConfig>(3, a, 9)),
                true,
            )),
        ),
        (
            "snapshot",
            RaftResponse::Snapshot(SnapshotResponse {
                vote: Vote::new_committed(3, a),
            }),
        ),
        (
            "forward-written",
            RaftResponse::Forward(ForwardResponse::Written(CommandResult::InviteCreated)),
        ),
        ("forward-status", RaftResponse::Forward(ForwardResponse::Status(status))),
        (
            "forward-not-leader",
            RaftResponse::Forward(ForwardResponse::NotLeader(Some((a, MemberNode::default())))),
        ),
        ("error", RaftResponse::Error("refused".into())),
    ]
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, name.to_string(), bytes));

    // frames: pick byte, then length-prefixed frames.
    let sample = Sample {
        small: 7,
        num: 300,
        signed: -5,
        flag: true,
        letter: 'λ',
        text: "hello".into(),
        blob: vec![1, 2, 3],
        key: [9; 32],
        maybe: Some("x".into()),
        map: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        addr: Some("[::1]:80".parse().unwrap()),
        choice: SampleChoice::Struct { a: 1, b: vec![2, 3] },
    };
    let body = pc(&sample);
    let choices = pc(&vec![SampleChoice::Unit, SampleChoice::Tuple(4, "t".into())]);
    let mut stream = vec![0u8];
    for b in [&body, &choices] {
        stream.extend(frame::prefix(b.len()));
        stream.extend(b.iter());
    }
    add("frames", "two-frames", stream);
    let mut one = vec![2u8];
    one.extend(frame::prefix(body.len()));
    one.extend(&body);
    add("frames", "sample-card-limit", one);
    let mut too_large = vec![7u8];
    too_large.extend(frame::prefix(body.len()));
    too_large.extend(&body);
    add("frames", "over-limit", too_large);

    // ticket: the printed ticket, and its postcard body (which the target base32-encodes).
    let t = sample_ticket();
    add("ticket", "printed", t.to_string().into_bytes());
    add("ticket", "body", pc(&t));

    // card
    add(
        "card",
        "one-member",
        pc(&catalog_db::card(&PEER_SECRET, "peer", PEER_ENDPOINT, 1)),
    );
    add("card", "two-members", pc(&two_member_card()));

    // fed_messages
    let peer_card = KeyedCard::first(two_member_card());
    let id = peer_card.cluster_id();
    let proof = prove(&PEER_SECRET, &CHALLENGE, &PEER_ENDPOINT, &LOCAL, &id, &peer_card.key);
    add("fed_messages", "hello", pc(&Hello { challenge: [5; 32] }));
    add(
        "fed_messages",
        "hello-reply-card",
        pc(&HelloReply::Card {
            cluster_id: id,
            key: peer_card.key,
            proof,
            challenge: [6; 32],
        }),
    );
    add(
        "fed_messages",
        "hello-reply-refused",
        pc(&HelloReply::Refused("no card yet".into())),
    );
    add(
        "fed_messages",
        "auth",
        pc(&Auth {
            card: peer_card.clone(),
            proof,
        }),
    );
    add(
        "fed_messages",
        "welcome",
        pc(&Welcome::Accepted {
            links_back: true,
            card: Box::new(peer_card.clone()),
        }),
    );
    let rotated = rotated_card();
    add("fed_messages", "auth-rotated", pc(&Auth { card: rotated, proof }));
    add(
        "fed_messages",
        "welcome-refused",
        pc(&Welcome::Refused("stale card".into())),
    );
    let requests = [
        ("heartbeat", FedRequest::Heartbeat { seq: 1, card_epoch: 4 }),
        (
            "catalog-query",
            FedRequest::CatalogQuery {
                after: Some("a".into()),
                limit: 100,
            },
        ),
        (
            "catalog-lookup",
            FedRequest::CatalogLookup {
                name: "team/tools".into(),
            },
        ),
        (
            "push-offer",
            FedRequest::PushOffer {
                name: "team/tools".into(),
                version: 3,
            },
        ),
        (
            "write-back",
            FedRequest::WriteBack {
                name: "team/tools".into(),
                bundle: "b3bundle".into(),
            },
        ),
        (
            "catalog-changed",
            FedRequest::CatalogChanged {
                changes: vec![
                    ("repo".into(), Some(catalog_entry("repo", "push"))),
                    ("gone".into(), None),
                ],
            },
        ),
        ("card-update", FedRequest::CardUpdate(Box::new(peer_card.clone()))),
        (
            "goodbye",
            FedRequest::Goodbye {
                reason: "unlinked".into(),
            },
        ),
    ];
    for (name, r) in requests {
        add("fed_messages", &format!("request-{name}"), pc(&r));
    }
    let responses = [
        (
            "heartbeat-ack",
            FedResponse::HeartbeatAck {
                seq: 1,
                card_epoch: 4,
                links_back: true,
            },
        ),
        (
            "catalog",
            FedResponse::Catalog {
                entries: vec![catalog_entry("a", "pull"), catalog_entry("b", "Bidirectional")],
                more: false,
            },
        ),
        ("ok", FedResponse::Ok),
        ("denied", FedResponse::Denied("not shared".into())),
        ("error", FedResponse::Error("busy".into())),
    ];
    for (name, r) in responses {
        add("fed_messages", &format!("response-{name}"), pc(&r));
    }

    // join_messages
    add(
        "join_messages",
        "request",
        pc(&JoinRequest {
            invite_id: [3; 16],
            secret: [4; 32],
            addrs: vec!["127.0.0.1:4001".parse().unwrap(), "[::1]:4001".parse().unwrap()],
        }),
    );
    add(
        "join_messages",
        "accepted",
        pc(&JoinResponse::Accepted {
            cluster_id: cluster_id_of(&OWN_SECRET),
            cluster_name: "fuzz".into(),
            members: t.members.clone(),
        }),
    );
    add(
        "join_messages",
        "refused",
        pc(&JoinResponse::Refused("ticket used".into())),
    );

    // raft_wire: kind byte + request; and bare responses.
    for (name, kind, req) in raft_requests() {
        let mut b = vec![kind];
        b.extend(pc(&req));
        add("raft_wire", &format!("request-{name}"), b);
        // The same request as one frame of an append stream.
        if let RaftRequest::Append(append) = &req {
            let mut b = vec![StreamKind::Append as u8];
            b.extend(pc(append));
            add("raft_wire", &format!("append-stream-{name}"), b);
        }
    }
    for (name, resp) in raft_responses() {
        add("raft_wire", &format!("response-{name}"), pc(&resp));
    }

    // catalog_command: single commands, a sequence, peer entries, a snapshot.
    let mut seq = Vec::new();
    for (name, cmd) in commands() {
        let b = pc(&cmd);
        seq.extend(&b);
        add("catalog_command", &format!("command-{name}"), b);
    }
    add("catalog_command", "command-sequence", seq);
    add("catalog_command", "catalog-entry", pc(&catalog_entry("repo", "pull")));
    add(
        "catalog_command",
        "peer-entry",
        pc(&PeerEntry {
            mode: ShareMode::Push,
            ..catalog_db::peer_entry("p")
        }),
    );
    add("catalog_command", "snapshot", pc(&seeded_snapshot()));

    // alpn_ids
    for (name, a) in [("raft", alpn::RAFT), ("join", alpn::JOIN), ("fed", alpn::FED)] {
        add("alpn_ids", &format!("alpn-{name}"), a.to_vec());
    }
    add("alpn_ids", "alpn-raft-9", b"causeway/raft/9".to_vec());
    add("alpn_ids", "endpoint-id", LOCAL.to_string().into_bytes());
    add(
        "alpn_ids",
        "cluster-id",
        ClusterId([0xab; 32]).to_string().to_uppercase().into_bytes(),
    );
    add("alpn_ids", "mode", b" Bidirectional".to_vec());
    add("alpn_ids", "audience", b"linked".to_vec());
    out
}
