//! One function per fuzz target. Each takes arbitrary bytes, decodes them the way the node
//! does, and on success checks round trips and runs the validation that follows decoding in
//! the node. None of them may panic; an `assert!` here that fails is a finding too.

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr};

use causeway_catalog::{Command, state::CatalogSnapshot, validate};
use causeway_policy::{Audience, ShareMode};
use causeway_proto::{
    ClusterId, EndpointKey, InviteTicket, alpn,
    card::{CardKey, MAX_CARD_BYTES, MAX_CARD_MEMBERS, MAX_CARD_NAME, MAX_MEMBER_ADDRS, SignedCard, cluster_id_of},
    fed::{
        Auth, Expectation, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, check_card, check_peer,
        prove, verify_proof,
    },
    rotation::{KeyVerdict, KeyedCard},
    frame::{self, FrameError, PREFIX_LEN},
    join::{JoinRequest, JoinResponse, MAX_JOIN_FRAME},
    ticket::{MAX_TICKET_LEN, MAX_TICKET_MEMBERS, PREFIX as TICKET_PREFIX},
};
use causeway_raft::{
    store::MAX_SNAPSHOT,
    wire::{ForwardRequest, ForwardResponse, MAX_RPC_FRAME, RaftRequest, RaftResponse, StreamKind},
};
use openraft::{EntryPayload, raft::AppendEntriesResponse};
use serde::{Deserialize, Serialize};

use crate::catalog_db::{self, LOCAL};
use crate::check::{base32, decode_framed, round_trip_bytes, round_trip_eq, take_many};

/// Most commands applied from one input.
const MAX_COMMANDS: usize = 16;
/// The challenge this side sent in the fuzzed handshakes.
pub const CHALLENGE: [u8; 32] = [77; 32];

// ---------------------------------------------------------------------------------------------
// frames

/// A message with every shape postcard has to decode, to exercise the framing on its own.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub small: u8,
    pub num: u64,
    pub signed: i64,
    pub flag: bool,
    pub letter: char,
    pub text: String,
    pub blob: Vec<u8>,
    pub key: [u8; 32],
    pub maybe: Option<String>,
    pub map: BTreeMap<String, u32>,
    pub addr: Option<SocketAddr>,
    pub choice: SampleChoice,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum SampleChoice {
    Unit,
    Tuple(u16, String),
    Struct { a: u32, b: Vec<u64> },
}

/// Limits the node reads frames under.
const LIMITS: [usize; 8] = [
    MAX_FED_FRAME,
    MAX_JOIN_FRAME,
    MAX_CARD_BYTES,
    MAX_TICKET_LEN,
    MAX_RPC_FRAME,
    0,
    1,
    64,
];

/// `frame::body_len`, `frame::prefix` and `frame::decode` on a stream of length-prefixed
/// frames, read the way `raft::wire::read_frame` reads them. Byte 0 picks the limit.
pub fn frames(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(pick) % LIMITS.len()];
    let mut rest = stream;
    while rest.len() >= PREFIX_LEN {
        let prefix: [u8; PREFIX_LEN] = rest[..PREFIX_LEN].try_into().unwrap();
        rest = &rest[PREFIX_LEN..];
        let announced = u32::from_be_bytes(prefix) as usize;
        match frame::body_len(prefix, limit) {
            Ok(len) => {
                assert_eq!(len, announced);
                assert!(len <= limit);
                assert_eq!(frame::prefix(len), prefix);
                // The stream ends before the body does: read_exact fails, nothing is decoded.
                let Some(body) = rest.get(..len) else { break };
                rest = &rest[len..];
                frame_body(body, limit);
            }
            Err(FrameError::TooLarge { len, limit: l }) => {
                assert!(len == announced && l == limit && len > limit);
                break;
            }
            Err(e) => panic!("body_len failed other than TooLarge: {e}"),
        }
    }
    frame_body(stream, limit);
}

fn frame_body(body: &[u8], limit: usize) {
    if let Some(v) = decode_framed::<Sample>(body, limit) {
        let bytes = round_trip_eq(&v, body.len());
        assert!(frame::encode(&v, limit).is_ok());
        assert_eq!(frame::encode(&v, limit).unwrap(), bytes);
    }
    if let Some(v) = decode_framed::<Vec<SampleChoice>>(body, limit) {
        round_trip_eq(&v, body.len());
    }
    if let Some(v) = decode_framed::<(String, Vec<String>, u128)>(body, limit) {
        round_trip_eq(&v, body.len());
    }
}

// ---------------------------------------------------------------------------------------------
// ticket

/// `InviteTicket::from_str`, on the input as text and on the input as a ticket body (the prefix
/// plus the input in base32, so the fuzzer reaches the postcard decoder at once).
pub fn ticket(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        ticket_text(text);
    }
    ticket_text(&format!("{TICKET_PREFIX}{}", base32(data)));
}

fn ticket_text(text: &str) {
    let ticket = match InviteTicket::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(text.trim().len() <= MAX_TICKET_LEN);
    assert!(!ticket.members.is_empty() && ticket.members.len() <= MAX_TICKET_MEMBERS);
    // The admin copies the printed ticket: it must parse back to the same ticket.
    let printed = ticket.to_string();
    assert!(printed.starts_with(TICKET_PREFIX));
    assert!(
        printed.len() <= text.trim().len(),
        "a parsed ticket prints longer ({}) than its text ({})",
        printed.len(),
        text.trim().len()
    );
    let back: InviteTicket = printed
        .parse()
        .unwrap_or_else(|e| panic!("a printed ticket does not parse: {e}"));
    assert_eq!(back, ticket);
    // What a joiner then sends from it.
    let req = JoinRequest {
        invite_id: ticket.invite_id,
        secret: ticket.secret,
        addrs: ticket
            .members
            .iter()
            .flat_map(|m| m.addrs.iter().copied())
            .take(16)
            .collect(),
    };
    assert!(frame::encode(&req, MAX_JOIN_FRAME).is_ok());
}

// ---------------------------------------------------------------------------------------------
// card

/// `SignedCard` decoded under `MAX_CARD_BYTES`, then `SignedCard::verify`; the decoded card is
/// also re-signed with a known key, which must then verify exactly when its shape is allowed,
/// and used in a handshake check with a proof made for it.
pub fn card(data: &[u8]) {
    let Some(signed) = decode_framed::<SignedCard>(data, MAX_CARD_BYTES) else {
        return;
    };
    round_trip_eq(&signed, data.len());
    let c = &signed.card;
    let shape_ok = !c.members.is_empty()
        && c.members.len() <= MAX_CARD_MEMBERS
        && c.members.iter().all(|m| m.addrs.len() <= MAX_MEMBER_ADDRS)
        && c.name.len() <= MAX_CARD_NAME;
    match signed.verify() {
        Ok(v) => {
            assert!(shape_ok, "a card outside the shape limits verified");
            assert_eq!(v, c);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for m in &c.members {
        assert!(c.lists(&m.endpoint));
        assert!(c.member(&m.endpoint).is_some());
    }
    peer_checks(&KeyedCard::first(signed.clone()), &[0; 64]);

    // Re-signed by a known cluster key.
    let secret = catalog_db::PEER_SECRET;
    let mut card = c.clone();
    card.cluster_id = cluster_id_of(&secret);
    let resigned = SignedCard::sign(card, &secret);
    assert_eq!(
        resigned.verify().is_ok(),
        shape_ok,
        "verify disagrees with the shape limits on a correctly signed card"
    );
    if shape_ok {
        let remote = resigned.card.members[0].endpoint;
        let id = resigned.card.cluster_id;
        let proof = prove(&secret, &CHALLENGE, &remote, &LOCAL, &id, &CardKey::first(id));
        let pinned = Expectation {
            pinned: Some(id),
            known_epoch: resigned.card.epoch,
            ..Default::default()
        };
        let keyed = KeyedCard::first(resigned.clone());
        assert!(check_peer(&keyed, &proof, &CHALLENGE, &remote, &LOCAL, &pinned).is_ok());
        assert!(check_peer(&keyed, &proof, &[78; 32], &remote, &LOCAL, &pinned).is_err());
        let mut tampered = resigned.clone();
        tampered.card.epoch ^= 1;
        assert!(tampered.verify().is_err(), "a card with a changed epoch still verifies");
    }
}

/// `fed::check_peer` on a decoded card and proof, as the listener and the dialer run it, with
/// no expectation, a matching pin and a wrong pin.
fn peer_checks(card: &KeyedCard, proof: &[u8; 64]) {
    let claimed = card.cluster_id();
    let remotes = [
        card.signed
            .card
            .members
            .first()
            .map(|m| m.endpoint)
            .unwrap_or(EndpointKey([7; 32])),
        catalog_db::PEER_ENDPOINT,
    ];
    let expectations = [
        Expectation::default(),
        Expectation {
            pinned: Some(claimed),
            known_epoch: card.epoch().saturating_add(1),
            ..Default::default()
        },
        Expectation {
            pinned: Some(ClusterId([9; 32])),
            ..Default::default()
        },
    ];
    for remote in &remotes {
        for expect in &expectations {
            match check_peer(card, proof, &CHALLENGE, remote, &LOCAL, expect) {
                Ok(verdict) => {
                    assert!(card.verify().is_ok() && card.signed.card.lists(remote));
                    if let Some(p) = expect.pinned {
                        assert_eq!(p, claimed);
                        assert!(verdict != KeyVerdict::Same || card.epoch() >= expect.known_epoch);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
            if let Ok(verdict) = check_card(card, remote, expect) {
                assert!(card.verify().is_ok() && card.signed.card.lists(remote));
                let _ = verdict;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fed_messages

/// Every federation message type decoded under `MAX_FED_FRAME` from the same bytes, each
/// followed by what the node does next with it: handshake checks on cards and proofs, card
/// verification, peer catalog entries converted and validated (and recorded when valid).
pub fn fed_messages(data: &[u8]) {
    let n = data.len();
    if let Some(m) = decode_framed::<Hello>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
    }
    if let Some(m) = decode_framed::<HelloReply>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
        match &m {
            HelloReply::Card {
                cluster_id,
                key,
                proof,
                challenge,
            } => {
                let remote = catalog_db::PEER_ENDPOINT;
                if verify_proof(cluster_id, key, proof, &CHALLENGE, &remote, &LOCAL).is_ok() {
                    assert!(key.generation > 0 || key.key == *cluster_id);
                }
                let _ = challenge;
            }
            HelloReply::Refused(reason) => {
                let _ = format!("the peer refused: {reason}");
            }
        }
    }
    if let Some(m) = decode_framed::<Auth>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
        peer_checks(&m.card, &m.proof);
    }
    if let Some(m) = decode_framed::<Welcome>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
        if let Welcome::Accepted { card, .. } = &m {
            peer_checks(card, &[0; 64]);
        }
    }
    if let Some(m) = decode_framed::<FedRequest>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
        match &m {
            FedRequest::CatalogChanged { changes } => {
                for (name, entry) in changes.iter().take(64) {
                    let _ = validate::resource_name(name);
                    if let Some(e) = entry {
                        catalog_db::catalog_entry(e, n);
                    }
                }
            }
            FedRequest::CardUpdate(card) => {
                let _ = card.verify();
                peer_checks(card, &[0; 64]);
            }
            FedRequest::PushOffer { name, .. }
            | FedRequest::WriteBack { name, .. }
            | FedRequest::CatalogLookup { name } => {
                let _ = validate::resource_name(name);
            }
            FedRequest::CatalogQuery { after, .. } => {
                if let Some(a) = after {
                    let _ = validate::resource_name(a);
                }
            }
            FedRequest::Heartbeat { .. } | FedRequest::Goodbye { .. } => {}
        }
    }
    if let Some(m) = decode_framed::<FedResponse>(data, MAX_FED_FRAME) {
        round_trip_eq(&m, n);
        if let FedResponse::Catalog { entries, .. } = &m {
            for e in entries.iter().take(64) {
                catalog_db::catalog_entry(e, n);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// join_messages

/// `JoinRequest` and `JoinResponse` decoded under `MAX_JOIN_FRAME`, with the checks the node
/// makes on them.
pub fn join_messages(data: &[u8]) {
    if let Some(req) = decode_framed::<JoinRequest>(data, MAX_JOIN_FRAME) {
        round_trip_eq(&req, data.len());
        let _ = req.addrs.len() <= causeway_proto::join::MAX_JOIN_ADDRS;
        let _ = format!("{req:?}");
    }
    if let Some(resp) = decode_framed::<JoinResponse>(data, MAX_JOIN_FRAME) {
        round_trip_eq(&resp, data.len());
        if let JoinResponse::Accepted {
            cluster_id,
            cluster_name,
            members,
        } = &resp
        {
            let _ = validate::cluster_name(cluster_name);
            let _ = (cluster_id.to_string(), cluster_id.short());
            for m in members {
                let _ = m.endpoint.short();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// raft_wire

/// A `causeway/raft/1` stream: byte 0 is the stream kind (`StreamKind::from_byte`), the rest a
/// `RaftRequest` under that kind's limit. The whole input is also read as a `RaftResponse`.
/// Commands inside append entries and forwarded writes go through the catalog state machine,
/// snapshot data through the snapshot install path.
pub fn raft_wire(data: &[u8]) {
    if let Some((&kind, body)) = data.split_first() {
        match StreamKind::from_byte(kind) {
            Some(k) => {
                assert_eq!(k as u8, kind);
                assert!(k.limit() <= MAX_SNAPSHOT && MAX_RPC_FRAME <= k.limit());
                if let Some(req) = decode_framed::<RaftRequest>(body, k.limit()) {
                    raft_request(&req, body.len());
                }
                if k == StreamKind::Append {
                    append_frame(body);
                }
            }
            None => assert!(kind != 1 && kind != 2),
        }
    }
    if let Some(resp) = decode_framed::<RaftResponse>(data, MAX_RPC_FRAME) {
        round_trip_bytes(&resp, data.len());
        let _ = format!("{resp:?}");
        match &resp {
            RaftResponse::Append(a) => {
                let _ = a.to_string();
                if let AppendEntriesResponse::HigherVote(v) = a {
                    let _ = v.to_string();
                }
            }
            RaftResponse::Vote(v) => {
                let _ = v.to_string();
            }
            RaftResponse::Snapshot(s) => {
                let _ = s.vote.to_string();
            }
            RaftResponse::Forward(f) => forward_response(f),
            RaftResponse::Error(e) => {
                let _ = e.len();
            }
        }
    }
}

/// One request of an append stream, read into its entries' own bytes: whatever is accepted is
/// written back from those slices into a frame that reads back to the same entries and slices
/// (its other fields may come out in postcard's shortest form), and each slice is its entry.
fn append_frame(body: &[u8]) {
    let Ok((req, received)) = causeway_raft::append_frame::decode(bytes::Bytes::copy_from_slice(body), MAX_RPC_FRAME)
    else {
        return;
    };
    assert_eq!(received.len(), req.entries.len());
    let encodings: Vec<_> = received.iter().map(|(_, b)| Some(b.clone())).collect();
    let frame = causeway_raft::append_frame::encode(&req, &encodings, MAX_RPC_FRAME).expect("re-encode");
    let again = bytes::Bytes::copy_from_slice(&frame[causeway_proto::frame::PREFIX_LEN..]);
    let (_, received_again) = causeway_raft::append_frame::decode(again, MAX_RPC_FRAME).expect("own frame");
    assert_eq!(received_again, received);
    for ((id, bytes), entry) in received.iter().zip(&req.entries) {
        assert_eq!(*id, entry.log_id);
        let back: causeway_raft::types::Entry = postcard::from_bytes(bytes).expect("entry slice");
        assert_eq!(back.log_id, entry.log_id);
    }
}

fn raft_request(req: &RaftRequest, input_len: usize) {
    round_trip_bytes(req, input_len);
    let _ = format!("{req:?}");
    match req {
        RaftRequest::Append(a) => {
            let _ = a.to_string();
            let mut commands = Vec::new();
            for entry in &a.entries {
                let _ = entry.to_string();
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(cmd) => commands.push(Command::clone(cmd)),
                    EntryPayload::Membership(m) => {
                        let _ = m.to_string();
                        let _ = (
                            m.voter_ids().count(),
                            m.learner_ids().count(),
                            m.get_joint_config().len(),
                        );
                        for (id, node) in m.nodes() {
                            let _ = (id.short(), node.to_string());
                        }
                    }
                }
            }
            for cmd in commands.iter().take(MAX_COMMANDS) {
                catalog_db::command_shape(cmd, input_len);
            }
            commands.truncate(MAX_COMMANDS);
            catalog_db::apply_to_seeded(&commands);
        }
        RaftRequest::Vote(v) | RaftRequest::PreVote(v) => {
            let _ = v.to_string();
        }
        RaftRequest::Snapshot { vote, meta, data } => {
            let _ = (vote.to_string(), meta.to_string());
            let _ = meta.last_membership.membership().to_string();
            // install_snapshot decodes the data as one catalog snapshot.
            if let Some(snap) = decode_framed::<CatalogSnapshot>(data, MAX_SNAPSHOT) {
                catalog_db::snapshot(&snap, data.len());
            }
        }
        RaftRequest::Forward(f) => match f {
            ForwardRequest::Write(cmd) => {
                catalog_db::command_shape(cmd, input_len);
                catalog_db::apply_to_seeded(std::slice::from_ref(cmd));
            }
            ForwardRequest::AddLearner { id, node } | ForwardRequest::UpdateAddrs { id, node } => {
                let _ = (id.short(), node.to_string());
            }
            ForwardRequest::RemoveMember { id } => {
                let _ = id.short();
            }
            ForwardRequest::ReadIndex | ForwardRequest::Status | ForwardRequest::App(_) => {}
        },
    }
}

fn forward_response(f: &ForwardResponse) {
    match f {
        ForwardResponse::Written(r) => {
            let _ = format!("{r:?}");
        }
        ForwardResponse::Status(s) => {
            let _ = format!("{s:?}");
        }
        ForwardResponse::NotLeader(Some((id, node))) => {
            let _ = (id.short(), node.to_string());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// catalog_command

/// `causeway_catalog::Command` as it arrives in a Raft entry: decoded, round-tripped and applied
/// to the seeded state machine (the input is also read as up to 16 commands end to end, applied
/// in order). The peer-view path: `fed::CatalogEntry` converted and validated into a
/// `PeerEntry`, and `PeerEntry` itself. And a `CatalogSnapshot`, installed.
pub fn catalog_command(data: &[u8]) {
    let n = data.len();
    if let Some(cmd) = decode_framed::<Command>(data, MAX_RPC_FRAME) {
        catalog_db::command_shape(&cmd, n);
    }
    let cmds: Vec<Command> = take_many(data, MAX_COMMANDS);
    if !cmds.is_empty() {
        catalog_db::apply_to_seeded(&cmds);
    }
    if let Some(e) = decode_framed::<causeway_proto::fed::CatalogEntry>(data, MAX_FED_FRAME) {
        catalog_db::catalog_entry(&e, n);
    }
    if let Some(p) = decode_framed::<causeway_catalog::peer_views::PeerEntry>(data, MAX_RPC_FRAME) {
        round_trip_eq(&p, n);
        let _ = p.validate();
    }
    if let Some(snap) = decode_framed::<CatalogSnapshot>(data, MAX_SNAPSHOT) {
        catalog_db::snapshot(&snap, n);
    }
}

// ---------------------------------------------------------------------------------------------
// alpn_ids

/// `alpn::check` on the input as an offered ALPN; `EndpointKey`/`ClusterId::from_str`, and the
/// CLI words that also travel as text (`ShareMode`, `Audience`), on the input as text.
pub fn alpn_ids(data: &[u8]) {
    match alpn::check(data) {
        Ok((family, version)) => {
            assert!(data.starts_with(b"causeway/"));
            let canonical = format!("causeway/{family}/{version}");
            assert_eq!(alpn::check(canonical.as_bytes()), Ok((family, version)));
            assert!(
                alpn::SUPPORTED
                    .iter()
                    .any(|(f, vs)| *f == family && vs.contains(&version))
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for known in [alpn::RAFT, alpn::JOIN, alpn::FED] {
        if data == known {
            assert!(alpn::check(data).is_ok());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        id_text::<EndpointKey>(text);
        id_text::<ClusterId>(text);
        if let Ok(mode) = text.parse::<ShareMode>() {
            assert_eq!(mode.to_string().parse::<ShareMode>(), Ok(mode));
        }
        if let Ok(a) = text.parse::<Audience>() {
            assert_eq!(a.to_string().parse::<Audience>(), Ok(a));
            assert!(a.to_string().len() <= text.trim().len());
        }
    }
    if let Some(raw) = data.get(..32) {
        let key = EndpointKey(raw.try_into().unwrap());
        assert_eq!(key.to_string().parse::<EndpointKey>(), Ok(key));
    }
}

fn id_text<T>(text: &str)
where
    T: FromStr<Err = causeway_proto::IdParseError> + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    match text.parse::<T>() {
        Ok(id) => {
            let printed = id.to_string();
            assert_eq!(printed, text.trim().to_ascii_lowercase());
            assert_eq!(printed.parse::<T>(), Ok(id));
        }
        Err(e) => {
            assert!(e.input.chars().count() <= 80);
            let _ = e.to_string();
        }
    }
}
