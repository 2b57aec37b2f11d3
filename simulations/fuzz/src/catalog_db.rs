//! The catalog state machine under fuzzed commands and snapshots, on in-memory redb databases.
//!
//! Commands are applied to a database seeded with a small realistic state (an initialized
//! cluster, a shared resource, an open invite, a pinned link with a peer view, a mirror) inside
//! one write transaction that is then aborted, so every input meets the same state and a crash
//! replays exactly.

use std::{cell::RefCell, collections::BTreeMap};

use causeway_catalog::{
    Command, CommandResult,
    peer_views::PeerEntry,
    state::{self, CatalogSnapshot},
};
use causeway_policy::{Audience, ShareMode, ShareRule};
use causeway_proto::{
    ClusterId, EndpointKey,
    card::{CardMember, ClusterCard, SignedCard, cluster_id_of},
    fed::CatalogEntry,
};
use redb::{Database, ReadableDatabase, backends::InMemoryBackend};

use crate::check::round_trip_eq;

/// Key of the fuzzed cluster.
pub const OWN_SECRET: [u8; 32] = [11; 32];
/// Key of the peer cluster the seeded state links to.
pub const PEER_SECRET: [u8; 32] = [22; 32];
/// The peer cluster's member endpoint.
pub const PEER_ENDPOINT: EndpointKey = EndpointKey([33; 32]);
/// This node's endpoint.
pub const LOCAL: EndpointKey = EndpointKey([44; 32]);

pub fn card(secret: &[u8; 32], name: &str, member: EndpointKey, epoch: u64) -> SignedCard {
    SignedCard::sign(
        ClusterCard {
            cluster_id: cluster_id_of(secret),
            name: name.into(),
            members: vec![CardMember {
                endpoint: member,
                addrs: vec!["127.0.0.1:7000".parse().unwrap()],
            }],
            epoch,
            issued_at_ms: 1_700_000_000_000,
        },
        secret,
    )
}

pub fn peer_entry(name: &str) -> PeerEntry {
    PeerEntry {
        name: name.into(),
        kind: "forge/repo".into(),
        owner: "peer-team".into(),
        version: 3,
        content: Some("b3aa".into()),
        mode: ShareMode::Pull,
        read_only: true,
    }
}

/// The commands that build the seeded state; each must apply without a rejection.
pub fn seed_commands() -> Vec<Command> {
    let peer = cluster_id_of(&PEER_SECRET);
    vec![
        Command::InitCluster {
            cluster_id: cluster_id_of(&OWN_SECRET),
            cluster_secret: OWN_SECRET,
            name: "fuzz".into(),
        },
        Command::SetOwnCard {
            card: card(&OWN_SECRET, "fuzz", LOCAL, 1),
        },
        Command::RegisterResource {
            name: "team/tools".into(),
            kind: "artifact".into(),
            owner: "ops".into(),
            path: Some("/srv/tools".into()),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            registered_at_ms: 1,
        },
        Command::PublishResource {
            name: "team/tools".into(),
            content: Some("b3deadbeef".into()),
            base_version: None,
            now_ms: 2,
        },
        Command::SetShare {
            name: "team/tools".into(),
            rule: ShareRule::new(Audience::Linked, ShareMode::Bidirectional, false),
            now_ms: 3,
        },
        Command::CreateInvite {
            invite_id: [1; 16],
            secret_hash: [2; 32],
            expires_at_ms: 10_000,
            created_by: LOCAL,
        },
        Command::AddLink {
            name: "peer".into(),
            endpoint: PEER_ENDPOINT,
            addrs: vec!["127.0.0.1:7000".parse().unwrap()],
            now_ms: 4,
        },
        Command::PinLink {
            name: "peer".into(),
            card: card(&PEER_SECRET, "peer", PEER_ENDPOINT, 1),
        },
        Command::PeerCatalogUpdate {
            cluster: peer,
            changes: vec![("shared".into(), Some(peer_entry("shared")))],
        },
        Command::RecordMirror {
            name: "mirror".into(),
            origin: peer,
            kind: "forge/repo".into(),
            owner: "peer-team".into(),
            version: 1,
            content: Some("c1".into()),
            now_ms: 5,
        },
    ]
}

fn memory_db() -> Database {
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .expect("in-memory redb")
}

fn seeded_db() -> Database {
    let db = memory_db();
    let txn = db.begin_write().unwrap();
    state::create_tables(&txn).unwrap();
    for cmd in seed_commands() {
        let r = state::apply(&txn, &cmd).unwrap();
        assert!(
            !matches!(r, CommandResult::Rejected(_)),
            "seed {} rejected: {r:?}",
            cmd.label()
        );
    }
    txn.commit().unwrap();
    db
}

thread_local! {
    static SEEDED: RefCell<Option<Database>> = const { RefCell::new(None) };
    /// Reused for every snapshot: `state::import` deletes and recreates every catalog table,
    /// so each import starts from the same (empty) state whatever the previous input left.
    static SNAPSHOT_DB: RefCell<Option<Database>> = const { RefCell::new(None) };
}

/// Checks on one decoded command that need no database.
pub fn command_shape(cmd: &Command, input_len: usize) {
    round_trip_eq(cmd, input_len);
    assert_eq!(cmd.to_string(), cmd.label());
    let _ = format!("{cmd:?}");
}

/// Applies `cmds` in order to the seeded state, inside one transaction that is then aborted.
/// A storage error (`Err`) on this healthy database is a finding: the state machine stops on
/// one (see `causeway_catalog::state::apply`), so a command a member can propose must never
/// cause one; rule violations must come back as `CommandResult::Rejected`.
pub fn apply_to_seeded(cmds: &[Command]) {
    if cmds.is_empty() {
        return;
    }
    SEEDED.with(|cell| {
        let mut slot = cell.borrow_mut();
        let db = slot.get_or_insert_with(seeded_db);
        let txn = db.begin_write().expect("begin write");
        for cmd in cmds {
            match state::apply(&txn, cmd) {
                Ok(result) => {
                    let _ = format!("{result:?}");
                    if let CommandResult::Rejected(r) = &result {
                        let _ = r.to_string();
                    }
                }
                Err(e) => panic!(
                    "state::apply returned a storage error for {} on a healthy database: {e}",
                    cmd.label()
                ),
            }
        }
        txn.abort().expect("abort");
    });
}

/// The node's conversion of a peer's catalog entry (`to_peer_entry` in
/// node/src/federation/catalog.rs, which is crate-private there), repeated here.
pub fn to_peer_entry(e: &CatalogEntry) -> Result<PeerEntry, String> {
    let p = PeerEntry {
        name: e.name.clone(),
        kind: e.kind.clone(),
        owner: e.owner.clone(),
        version: e.version,
        content: e.content.clone(),
        mode: e.mode.parse::<ShareMode>().map_err(|e| e.to_string())?,
        read_only: e.read_only,
    };
    p.validate()?;
    Ok(p)
}

/// A peer's catalog entry as the node takes it in: converted, validated, and (when valid)
/// recorded through a `PeerCatalogUpdate` against the seeded state.
pub fn catalog_entry(e: &CatalogEntry, input_len: usize) {
    round_trip_eq(e, input_len);
    if let Ok(p) = to_peer_entry(e) {
        assert!(p.validate().is_ok());
        assert!(e.mode.trim().eq_ignore_ascii_case(p.mode.as_str()));
        let bytes = postcard::to_stdvec(&p).unwrap();
        round_trip_eq(&p, bytes.len());
        apply_to_seeded(&[Command::PeerCatalogUpdate {
            cluster: cluster_id_of(&PEER_SECRET),
            changes: vec![(p.name.clone(), Some(p))],
        }]);
    }
}

/// A catalog snapshot as a member installs it (raft/src/store.rs `install_snapshot`): imported
/// into a fresh database, then every reader of the imported rows runs, then commands are
/// applied on top. Corrupt rows may give errors, never panics.
pub fn snapshot(snap: &CatalogSnapshot, input_len: usize) {
    round_trip_eq(snap, input_len);
    SNAPSHOT_DB.with(|cell| {
        let mut slot = cell.borrow_mut();
        let db = slot.get_or_insert_with(memory_db);
        let txn = db.begin_write().unwrap();
        if state::import(&txn, snap).is_err() {
            txn.abort().unwrap();
            return;
        }
        txn.commit().unwrap();
        installed(db, snap);
    });
}

fn installed(db: &Database, snap: &CatalogSnapshot) {
    // Names, invite ids and clusters that the snapshot carries, to aim the probes at.
    let table = |i: usize| snap.tables.get(i).map(Vec::as_slice).unwrap_or_default();
    let names: Vec<String> = table(1)
        .iter()
        .take(4)
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    let invites: Vec<[u8; 16]> = table(2)
        .iter()
        .filter_map(|(k, _)| k.as_slice().try_into().ok())
        .take(4)
        .collect();
    let links: Vec<String> = table(3)
        .iter()
        .take(4)
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    let mut clusters: Vec<ClusterId> = table(5)
        .iter()
        .filter_map(|(k, _)| k.get(..32).and_then(|b| b.try_into().ok()).map(ClusterId))
        .take(4)
        .collect();
    clusters.push(cluster_id_of(&PEER_SECRET));

    let r = db.begin_read().unwrap();
    let _ = state::export(&r);
    let _ = state::cluster_identity(&r);
    let _ = state::own_card(&r);
    let _ = state::list_resources(&r, None, 1000);
    for n in &names {
        let _ = state::get_resource(&r, n);
        let _ = state::list_resources(&r, Some(n), 10);
    }
    for id in &invites {
        let _ = state::get_invite(&r, id);
    }
    let _ = causeway_catalog::links::list(&r);
    for c in &clusters {
        let _ = causeway_catalog::peer_views::list(&r, c, None, 1000);
    }
    let _ = causeway_catalog::resources::last_change_seq(&r);
    let _ = causeway_catalog::resources::changes_after(&r, 0, 1000);
    let _ = causeway_catalog::resources::changes_after(&r, u64::MAX, 1000);
    drop(r);

    // Commands a member may apply right after installing the snapshot.
    let mut probes = vec![
        Command::RegisterResource {
            name: "probe".into(),
            kind: "artifact".into(),
            owner: String::new(),
            path: None,
            metadata: BTreeMap::new(),
            registered_at_ms: 9,
        },
        Command::InitCluster {
            cluster_id: cluster_id_of(&OWN_SECRET),
            cluster_secret: OWN_SECRET,
            name: "fuzz".into(),
        },
        Command::SetOwnCard {
            card: card(&OWN_SECRET, "fuzz", LOCAL, 2),
        },
        Command::AddLink {
            name: "probe".into(),
            endpoint: EndpointKey([55; 32]),
            addrs: vec![],
            now_ms: 9,
        },
    ];
    for n in &names {
        probes.push(Command::PublishResource {
            name: n.clone(),
            content: Some("b3".into()),
            base_version: None,
            now_ms: 9,
        });
        probes.push(Command::UpdateMetadata {
            name: n.clone(),
            set: BTreeMap::from([("k2".into(), "v".into())]),
            remove: vec!["k".into()],
            now_ms: 9,
        });
        probes.push(Command::SetShare {
            name: n.clone(),
            rule: ShareRule::new(Audience::Public, ShareMode::Pull, true),
            now_ms: 9,
        });
        probes.push(Command::RecordMirror {
            name: n.clone(),
            origin: cluster_id_of(&PEER_SECRET),
            kind: "artifact".into(),
            owner: String::new(),
            version: 7,
            content: None,
            now_ms: 9,
        });
        probes.push(Command::RemoveResource {
            name: n.clone(),
            now_ms: 9,
        });
    }
    for id in &invites {
        probes.push(Command::RedeemInvite {
            invite_id: *id,
            secret_hash: [2; 32],
            joiner: EndpointKey([66; 32]),
            now_ms: 9,
        });
    }
    for l in &links {
        probes.push(Command::PinLink {
            name: l.clone(),
            card: card(&PEER_SECRET, "peer", PEER_ENDPOINT, 2),
        });
        probes.push(Command::RemoveLink {
            name: l.clone(),
            now_ms: 9,
        });
    }
    for c in &clusters {
        probes.push(Command::UpdatePeerCard {
            cluster: *c,
            card: card(&PEER_SECRET, "peer", PEER_ENDPOINT, 3),
        });
        probes.push(Command::PeerCatalogUpdate {
            cluster: *c,
            changes: vec![("shared".into(), None), ("new".into(), Some(peer_entry("new")))],
        });
        probes.push(Command::PeerCatalogSync {
            cluster: *c,
            after: None,
            upto: None,
            entries: vec![peer_entry("x")],
        });
    }
    // Each probe in its own transaction: storage errors from corrupt rows are allowed here (the
    // leader sent a corrupt snapshot), panics are not.
    for cmd in &probes {
        let txn = db.begin_write().unwrap();
        let _ = state::apply(&txn, cmd).map(|r| format!("{r:?}"));
        txn.abort().unwrap();
    }
}
