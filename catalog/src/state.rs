//! The catalog tables in redb and the deterministic apply of commands to them, plus export and
//! import of the whole catalog for Raft snapshots.

use causeway_proto::{ClusterId, EndpointKey, card::SignedCard};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult, Rejection, Resource};

/// Singletons such as the cluster identity.
pub(crate) const CLUSTER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_cluster");
/// Resource name (UTF-8) to postcard `Resource`.
pub(crate) const RESOURCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_resources");
/// Invite id to postcard `Invite`.
const INVITES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_invites");

/// Every catalog table, in snapshot order.
/// Link name to postcard `LinkRecord`.
pub(crate) const LINKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_links");

/// Change sequence number (8 bytes, big-endian) to postcard `Change`.
pub(crate) const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_changes");

/// Peer cluster ID (32 bytes) followed by resource name, to postcard `PeerEntry`: what each
/// linked peer shares with us, as last synced.
pub(crate) const PEER_CATALOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_peer_views");

/// Every catalog table, in snapshot order (append only: snapshots index tables by position).
const ALL_TABLES: [TableDefinition<&[u8], &[u8]>; 6] = [CLUSTER, RESOURCES, INVITES, LINKS, CHANGES, PEER_CATALOG];

const IDENTITY_KEY: &[u8] = b"identity";
const CARD_KEY: &[u8] = b"card";

/// Largest page a list call returns.
pub const MAX_PAGE: usize = 1000;
/// Largest stored record decoded from the tables.
const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("catalog record is corrupt: {0}")]
    Corrupt(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogError {
            fn from(e: $t) -> Self { CatalogError::Storage(e.into()) }
        }
    )*};
}
storage_from!(redb::TableError, redb::StorageError);

/// The cluster's key and name, replicated to every member.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub cluster_id: ClusterId,
    pub cluster_secret: [u8; 32],
    pub name: String,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("cluster_id", &self.cluster_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum InviteState {
    Open,
    Used {
        by: EndpointKey,
        at_ms: u64,
    },
    /// Its maker was removed from the cluster before anyone used it.
    Revoked {
        at_ms: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    pub secret_hash: [u8; 32],
    pub expires_at_ms: u64,
    pub created_by: EndpointKey,
    pub state: InviteState,
}

/// The whole catalog as plain rows, for a Raft snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// One entry per table in `ALL_TABLES` order: its rows as (key, value).
    pub tables: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CatalogError> {
    causeway_proto::decode(bytes, MAX_RECORD).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogError> {
    causeway_proto::encode(value, MAX_RECORD).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

/// Creates the catalog tables so later read transactions find them, and builds the derived
/// share index once if the database predates it.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), CatalogError> {
    for t in ALL_TABLES {
        txn.open_table(t)?;
    }
    crate::share_index::ensure(txn)?;
    crate::endpoint_index::ensure(txn)?;
    crate::mirror_index::ensure(txn)
}

/// Applies one committed command. Storage errors are returned (the caller must stop, as the
/// state machine cannot skip an entry); rule violations become `CommandResult::Rejected`.
/// To apply many in one transaction, use one [`crate::StateWriter`] for all of them.
pub fn apply(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    let mut writer = crate::StateWriter::new(txn);
    let result = writer.apply(cmd)?;
    writer.finish()?;
    Ok(result)
}

/// Applies a command about the cluster itself: its identity, invites and card.
pub(crate) fn apply_cluster(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    match cmd {
        Command::InitCluster {
            cluster_id,
            cluster_secret,
            name,
        } => {
            let mut t = txn.open_table(CLUSTER)?;
            if t.get(IDENTITY_KEY)?.is_some() {
                return Ok(CommandResult::Rejected(Rejection::AlreadyInitialized));
            }
            let identity = ClusterIdentity {
                cluster_id: *cluster_id,
                cluster_secret: *cluster_secret,
                name: name.clone(),
            };
            t.insert(IDENTITY_KEY, encode(&identity)?.as_slice())?;
            Ok(CommandResult::ClusterInitialized)
        }
        Command::CreateInvite {
            invite_id,
            secret_hash,
            expires_at_ms,
            created_by,
        } => {
            let mut t = txn.open_table(INVITES)?;
            if t.get(invite_id.as_slice())?.is_some() {
                return Ok(CommandResult::Rejected(Rejection::InviteExists));
            }
            let invite = Invite {
                secret_hash: *secret_hash,
                expires_at_ms: *expires_at_ms,
                created_by: *created_by,
                state: InviteState::Open,
            };
            t.insert(invite_id.as_slice(), encode(&invite)?.as_slice())?;
            Ok(CommandResult::InviteCreated)
        }
        Command::RedeemInvite {
            invite_id,
            secret_hash,
            joiner,
            now_ms,
        } => {
            let mut t = txn.open_table(INVITES)?;
            let Some(mut invite) = t
                .get(invite_id.as_slice())?
                .map(|v| decode::<Invite>(v.value()))
                .transpose()?
            else {
                return Ok(CommandResult::Rejected(Rejection::InviteUnknown));
            };
            if invite.secret_hash != *secret_hash {
                return Ok(CommandResult::Rejected(Rejection::InviteForged));
            }
            match invite.state {
                InviteState::Open => {}
                InviteState::Used { .. } => return Ok(CommandResult::Rejected(Rejection::InviteUsed)),
                InviteState::Revoked { .. } => return Ok(CommandResult::Rejected(Rejection::InviteRevoked)),
            }
            if *now_ms > invite.expires_at_ms {
                return Ok(CommandResult::Rejected(Rejection::InviteExpired));
            }
            invite.state = InviteState::Used {
                by: *joiner,
                at_ms: *now_ms,
            };
            t.insert(invite_id.as_slice(), encode(&invite)?.as_slice())?;
            Ok(CommandResult::InviteRedeemed)
        }
        Command::RevokeInvitesOf { member, now_ms } => {
            let mut t = txn.open_table(INVITES)?;
            let mut revoked = Vec::new();
            for row in t.range::<&[u8]>(..)? {
                let (k, v) = row?;
                let invite: Invite = decode(v.value())?;
                if invite.created_by == *member && invite.state == InviteState::Open {
                    revoked.push((k.value().to_vec(), invite));
                }
            }
            for (key, mut invite) in revoked.iter().cloned() {
                invite.state = InviteState::Revoked { at_ms: *now_ms };
                t.insert(key.as_slice(), encode(&invite)?.as_slice())?;
            }
            Ok(CommandResult::InvitesRevoked(
                u32::try_from(revoked.len()).unwrap_or(u32::MAX),
            ))
        }
        Command::SetOwnCard { card } => {
            // Only a valid card of this very cluster, signed by its current key, within the
            // record size, may be stored.
            let identity = cluster_identity_w(txn)?;
            let key = crate::keys::own_key_w(txn)?;
            let valid = key.is_some_and(|k| card.verify_as(&k.key).is_ok())
                && identity.is_some_and(|i| i.cluster_id == card.card.cluster_id)
                && encode(card).is_ok();
            if !valid {
                return Ok(CommandResult::Rejected(Rejection::BadCard(
                    "not a valid card of this cluster".into(),
                )));
            }
            let mut t = txn.open_table(CLUSTER)?;
            let current: Option<SignedCard> = t.get(CARD_KEY)?.map(|v| decode(v.value())).transpose()?;
            if let Some(cur) = current
                && cur.card.epoch >= card.card.epoch
            {
                return Ok(CommandResult::Rejected(Rejection::StaleCard {
                    presented: card.card.epoch,
                    known: cur.card.epoch,
                }));
            }
            t.insert(CARD_KEY, encode(card)?.as_slice())?;
            Ok(CommandResult::Applied)
        }
        _ => Ok(CommandResult::Rejected(Rejection::Invalid(
            "not a cluster command".into(),
        ))),
    }
}

/// This cluster's latest signed card.
pub fn own_card(txn: &ReadTransaction) -> Result<Option<SignedCard>, CatalogError> {
    let t = match txn.open_table(CLUSTER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    t.get(CARD_KEY)?.map(|v| decode(v.value())).transpose()
}

fn cluster_identity_w(txn: &WriteTransaction) -> Result<Option<ClusterIdentity>, CatalogError> {
    let t = txn.open_table(CLUSTER)?;
    t.get(IDENTITY_KEY)?.map(|v| decode(v.value())).transpose()
}

/// The cluster identity, once `InitCluster` has been applied.
pub fn cluster_identity(txn: &ReadTransaction) -> Result<Option<ClusterIdentity>, CatalogError> {
    let t = match txn.open_table(CLUSTER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    t.get(IDENTITY_KEY)?.map(|v| decode(v.value())).transpose()
}

pub fn get_resource(txn: &ReadTransaction, name: &str) -> Result<Option<Resource>, CatalogError> {
    let t = match txn.open_table(RESOURCES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    t.get(name.as_bytes())?.map(|v| decode(v.value())).transpose()
}

/// One page of resources in name order, starting strictly after `after`.
pub fn list_resources(txn: &ReadTransaction, after: Option<&str>, limit: usize) -> Result<Vec<Resource>, CatalogError> {
    let t = match txn.open_table(RESOURCES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let limit = limit.clamp(1, MAX_PAGE);
    let mut out = Vec::with_capacity(limit.min(64));
    let range = match after {
        Some(a) => t.range::<&[u8]>((std::ops::Bound::Excluded(a.as_bytes()), std::ops::Bound::Unbounded))?,
        None => t.range::<&[u8]>(..)?,
    };
    for row in range {
        let (_, v) = row?;
        out.push(decode(v.value())?);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

pub fn get_invite(txn: &ReadTransaction, invite_id: &[u8; 16]) -> Result<Option<Invite>, CatalogError> {
    let t = match txn.open_table(INVITES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    t.get(invite_id.as_slice())?.map(|v| decode(v.value())).transpose()
}

/// How many rows a snapshot of the catalog holds (what [`export`] would copy), read from the
/// tables' stored lengths without walking them.
pub fn snapshot_rows(txn: &ReadTransaction) -> Result<u64, CatalogError> {
    let mut rows = 0u64;
    for def in ALL_TABLES {
        match txn.open_table(def) {
            Ok(t) => rows = rows.saturating_add(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rows)
}

/// Copies every catalog row out, for a snapshot.
pub fn export(txn: &ReadTransaction) -> Result<CatalogSnapshot, CatalogError> {
    let mut snap = CatalogSnapshot::default();
    for def in ALL_TABLES {
        let mut rows = Vec::new();
        match txn.open_table(def) {
            Ok(t) => {
                for row in t.range::<&[u8]>(..)? {
                    let (k, v) = row?;
                    rows.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        snap.tables.push(rows);
    }
    Ok(snap)
}

/// Overwrites `name`'s resource row with bytes that do not decode, so that the next command
/// reading it fails. Only for tests of what a node does once its storage has failed.
#[doc(hidden)]
pub fn corrupt_resource_row(txn: &WriteTransaction, name: &str) -> Result<(), CatalogError> {
    txn.open_table(RESOURCES)?
        .insert(name.as_bytes(), [0xff_u8; 3].as_slice())?;
    Ok(())
}

/// The postcard encoding of [`export`]'s snapshot, written straight from the tables: building a
/// snapshot of a large catalog was mostly two allocations and copies per row for the
/// intermediate rows, on every member, every few hundred thousand writes.
pub fn export_encoded(txn: &ReadTransaction) -> Result<Vec<u8>, CatalogError> {
    // postcard: a sequence is its length as a varint, then its elements; bytes are raw; a
    // tuple or a one-field struct is its fields in order.
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut out = Vec::new();
    varint(&mut out, ALL_TABLES.len() as u64);
    for def in ALL_TABLES {
        match txn.open_table(def) {
            Ok(t) => {
                varint(&mut out, t.len()?);
                for row in t.range::<&[u8]>(..)? {
                    let (k, v) = row?;
                    for bytes in [k.value(), v.value()] {
                        varint(&mut out, bytes.len() as u64);
                        out.extend_from_slice(bytes);
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => varint(&mut out, 0),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Replaces the whole catalog with a snapshot's rows. The share index is not in a snapshot: it
/// is rebuilt from the imported resources.
pub fn import(txn: &WriteTransaction, snap: &CatalogSnapshot) -> Result<(), CatalogError> {
    if snap.tables.len() > ALL_TABLES.len() {
        return Err(CatalogError::Corrupt(format!(
            "snapshot has {} tables, this version knows {}",
            snap.tables.len(),
            ALL_TABLES.len()
        )));
    }
    for (i, def) in ALL_TABLES.into_iter().enumerate() {
        txn.delete_table(def).map_err(|e| CatalogError::Storage(e.into()))?;
        let mut t = txn.open_table(def)?;
        if let Some(rows) = snap.tables.get(i) {
            for (k, v) in rows {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
    }
    crate::share_index::rebuild(txn)?;
    crate::endpoint_index::rebuild(txn)?;
    crate::mirror_index::rebuild(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{db, register, run};
    use redb::ReadableDatabase;

    #[test]
    fn register_list_and_duplicates() {
        let (_d, db) = db();
        assert!(matches!(run(&db, register("b")), CommandResult::ResourceRegistered(_)));
        assert!(matches!(run(&db, register("a")), CommandResult::ResourceRegistered(_)));
        assert_eq!(
            run(&db, register("a")),
            CommandResult::Rejected(Rejection::ResourceExists("a".into()))
        );
        assert!(matches!(
            run(&db, register("")),
            CommandResult::Rejected(Rejection::Invalid(_))
        ));
        let r = db.begin_read().unwrap();
        let names: Vec<_> = list_resources(&r, None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let page: Vec<_> = list_resources(&r, Some("a"), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(page, ["b"]);
    }

    #[test]
    fn a_refused_duplicate_leaves_the_resource_and_the_feed_as_they_were() {
        let (_d, db) = db();
        run(&db, register("a"));
        run(
            &db,
            Command::PublishResource {
                name: "a".into(),
                content: Some("c1".into()),
                base_version: None,
                now_ms: 5,
            },
        );
        let read = |db: &redb::Database| {
            let r = db.begin_read().unwrap();
            let resource = get_resource(&r, "a").unwrap();
            (resource, crate::resources::last_change_seq(&r).unwrap())
        };
        let before = read(&db);
        let again = Command::RegisterResource {
            name: "a".into(),
            kind: "repo".into(),
            owner: "someone-else".into(),
            path: Some("/elsewhere".into()),
            metadata: Default::default(),
            registered_at_ms: 9,
        };
        assert_eq!(
            run(&db, again),
            CommandResult::Rejected(Rejection::ResourceExists("a".into()))
        );
        assert_eq!(read(&db), before);
        assert_eq!(before.0.map(|r| (r.owner, r.version)), Some(("ci".to_string(), 1)));
    }

    #[test]
    fn invites_are_one_time_and_expire() {
        let (_d, db) = db();
        let me = EndpointKey([9; 32]);
        let create = |id: u8, exp| Command::CreateInvite {
            invite_id: [id; 16],
            secret_hash: [1; 32],
            expires_at_ms: exp,
            created_by: me,
        };
        let redeem = |id: u8, hash: u8, now| Command::RedeemInvite {
            invite_id: [id; 16],
            secret_hash: [hash; 32],
            joiner: EndpointKey([7; 32]),
            now_ms: now,
        };
        assert_eq!(run(&db, create(1, 100)), CommandResult::InviteCreated);
        assert_eq!(
            run(&db, redeem(1, 2, 50)),
            CommandResult::Rejected(Rejection::InviteForged)
        );
        assert_eq!(run(&db, redeem(1, 1, 50)), CommandResult::InviteRedeemed);
        assert_eq!(
            run(&db, redeem(1, 1, 60)),
            CommandResult::Rejected(Rejection::InviteUsed)
        );
        assert_eq!(run(&db, create(2, 100)), CommandResult::InviteCreated);
        assert_eq!(
            run(&db, redeem(2, 1, 101)),
            CommandResult::Rejected(Rejection::InviteExpired)
        );
        assert_eq!(
            run(&db, redeem(3, 1, 1)),
            CommandResult::Rejected(Rejection::InviteUnknown)
        );
    }

    #[test]
    fn a_removed_members_open_invites_are_revoked_and_others_kept() {
        let (_d, db) = db();
        let (gone, stays) = (EndpointKey([9; 32]), EndpointKey([8; 32]));
        let create = |id: u8, by| Command::CreateInvite {
            invite_id: [id; 16],
            secret_hash: [1; 32],
            expires_at_ms: 100,
            created_by: by,
        };
        let redeem = |id: u8| Command::RedeemInvite {
            invite_id: [id; 16],
            secret_hash: [1; 32],
            joiner: EndpointKey([7; 32]),
            now_ms: 10,
        };
        for (id, by) in [(1, gone), (2, gone), (3, stays)] {
            assert_eq!(run(&db, create(id, by)), CommandResult::InviteCreated);
        }
        assert_eq!(run(&db, redeem(2)), CommandResult::InviteRedeemed);
        let revoke = Command::RevokeInvitesOf {
            member: gone,
            now_ms: 5,
        };
        // Only the open one: the used one stays a record of who joined.
        assert_eq!(run(&db, revoke.clone()), CommandResult::InvitesRevoked(1));
        assert_eq!(run(&db, redeem(1)), CommandResult::Rejected(Rejection::InviteRevoked));
        assert_eq!(run(&db, redeem(3)), CommandResult::InviteRedeemed);
        assert_eq!(run(&db, revoke), CommandResult::InvitesRevoked(0));
    }

    #[test]
    fn snapshot_round_trip() {
        let (_d, db) = db();
        run(&db, register("x"));
        run(
            &db,
            Command::InitCluster {
                cluster_id: ClusterId([1; 32]),
                cluster_secret: [2; 32],
                name: "alpha".into(),
            },
        );
        // A row longer than 127 bytes takes a two-byte length in the encoding.
        run(&db, register(&"long-".repeat(30)));
        let snap = export(&db.begin_read().unwrap()).unwrap();
        assert!(snap.tables.iter().flatten().any(|(_, v)| v.len() > 127));
        assert_eq!(
            export_encoded(&db.begin_read().unwrap()).unwrap(),
            postcard::to_stdvec(&snap).unwrap(),
            "the direct encoding must be postcard's"
        );
        let (_d2, other) = super::tests::db();
        run(&other, register("stale"));
        let txn = other.begin_write().unwrap();
        import(&txn, &snap).unwrap();
        txn.commit().unwrap();
        let r = other.begin_read().unwrap();
        assert_eq!(export(&r).unwrap(), snap);
        assert!(get_resource(&r, "stale").unwrap().is_none());
        assert_eq!(cluster_identity(&r).unwrap().unwrap().name, "alpha");
    }
}
