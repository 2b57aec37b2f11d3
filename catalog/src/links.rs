//! Federation links as replicated records: which clusters this cluster federates with, the
//! cluster ID pinned at the first handshake, the newest card accepted from it, and tombstones of
//! removed links, and each link's options (whether the peer's push offers are taken).

use std::net::SocketAddr;

use causeway_proto::{ClusterId, EndpointKey, card::SignedCard};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult, Rejection};
use crate::state::{CatalogError, LINKS, decode, encode};
use crate::validate;

/// Most addresses stored for the endpoint a link was added with.
pub const MAX_LINK_ADDRS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub name: String,
    /// The endpoint the admin linked to, and the addresses given with it.
    pub endpoint: EndpointKey,
    pub addrs: Vec<SocketAddr>,
    /// Set by the first successful handshake; never changes afterwards.
    pub pinned: Option<ClusterId>,
    /// The newest verified card of the pinned cluster.
    pub card: Option<SignedCard>,
    pub created_at_ms: u64,
    pub removed_at_ms: Option<u64>,
    /// Whether this peer's push offers are taken (they create and advance mirrors here without
    /// an admin's `sync`). Off unless the admin opts in: `link add --accept-pushes`, `link set`.
    pub accept_pushes: bool,
}

/// A link as stored before links had options; it reads as a link that takes no pushes.
#[derive(Deserialize)]
struct LinkRecordV1 {
    name: String,
    endpoint: EndpointKey,
    addrs: Vec<SocketAddr>,
    pinned: Option<ClusterId>,
    card: Option<SignedCard>,
    created_at_ms: u64,
    removed_at_ms: Option<u64>,
}

/// Decodes a stored link, also in the layout of earlier versions (a database opened after an
/// upgrade, or a snapshot from a member not yet upgraded). postcard is not self-describing:
/// a record in the old layout ends where the new field would start, so it fails to decode as
/// the new one (and a new one, one byte longer, fails as the old one).
pub(crate) fn decode_link(bytes: &[u8]) -> Result<LinkRecord, CatalogError> {
    match decode::<LinkRecord>(bytes) {
        Ok(l) => Ok(l),
        Err(new_err) => {
            let Ok(v1) = decode::<LinkRecordV1>(bytes) else {
                return Err(new_err);
            };
            Ok(LinkRecord {
                name: v1.name,
                endpoint: v1.endpoint,
                addrs: v1.addrs,
                pinned: v1.pinned,
                card: v1.card,
                created_at_ms: v1.created_at_ms,
                removed_at_ms: v1.removed_at_ms,
                accept_pushes: false,
            })
        }
    }
}

impl LinkRecord {
    pub fn is_removed(&self) -> bool {
        self.removed_at_ms.is_some()
    }

    /// Every endpoint to try when dialling the peer, with what is known of its addresses: the
    /// card's members once pinned, else the endpoint the admin gave.
    pub fn dial_targets(&self) -> Vec<(EndpointKey, Vec<SocketAddr>)> {
        let mut out: Vec<(EndpointKey, Vec<SocketAddr>)> = match &self.card {
            Some(c) => c.card.members.iter().map(|m| (m.endpoint, m.addrs.clone())).collect(),
            None => Vec::new(),
        };
        match out.iter_mut().find(|(e, _)| *e == self.endpoint) {
            Some((_, addrs)) => {
                for a in &self.addrs {
                    if !addrs.contains(a) {
                        addrs.push(*a);
                    }
                }
            }
            None if self.card.is_none() => out.push((self.endpoint, self.addrs.clone())),
            None => {}
        }
        out
    }

    /// Whether `endpoint` speaks for this link's peer.
    pub fn recognizes(&self, endpoint: &EndpointKey) -> bool {
        match &self.card {
            Some(c) => c.card.lists(endpoint),
            None => self.endpoint == *endpoint,
        }
    }
}

pub(crate) fn all(txn: &WriteTransaction) -> Result<Vec<LinkRecord>, CatalogError> {
    let t = txn.open_table(LINKS)?;
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)? {
        out.push(decode_link(row?.1.value())?);
    }
    Ok(out)
}

pub(crate) fn put(txn: &WriteTransaction, link: &LinkRecord) -> Result<(), CatalogError> {
    txn.open_table(LINKS)?
        .insert(link.name.as_bytes(), encode(link)?.as_slice())?;
    Ok(())
}

fn reject(r: Rejection) -> Result<CommandResult, CatalogError> {
    Ok(CommandResult::Rejected(r))
}

fn add(
    txn: &WriteTransaction,
    links: &[LinkRecord],
    name: &str,
    endpoint: &EndpointKey,
    addrs: &[SocketAddr],
    now_ms: u64,
    accept_pushes: bool,
) -> Result<CommandResult, CatalogError> {
    if let Err(e) = validate::cluster_name(name) {
        return reject(Rejection::Invalid(format!("link name: {e}")));
    }
    if addrs.len() > MAX_LINK_ADDRS {
        return reject(Rejection::Invalid(format!("at most {MAX_LINK_ADDRS} addresses")));
    }
    if links.iter().any(|l| !l.is_removed() && l.name == name) {
        return reject(Rejection::LinkNameTaken(name.to_string()));
    }
    // One owner per endpoint, through the endpoint index (a pinned card's members, or the
    // endpoint an admin gave before pinning).
    if let Some(owner) = crate::endpoint_index::owner_w(txn, endpoint)? {
        return reject(Rejection::AlreadyLinked {
            endpoint: *endpoint,
            name: owner,
        });
    }
    let link = LinkRecord {
        name: name.to_string(),
        endpoint: *endpoint,
        addrs: addrs.to_vec(),
        pinned: None,
        card: None,
        created_at_ms: now_ms,
        removed_at_ms: None,
        accept_pushes,
    };
    put(txn, &link)?;
    Ok(CommandResult::Link(link))
}

pub(crate) fn apply(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    let result = apply_link(txn, cmd)?;
    if matches!(result, CommandResult::Link(_)) {
        crate::endpoint_index::rebuild(txn)?;
    }
    Ok(result)
}

fn apply_link(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    let links = all(txn)?;
    let active = || links.iter().filter(|l| !l.is_removed());
    match cmd {
        Command::AddLink {
            name,
            endpoint,
            addrs,
            now_ms,
        } => add(txn, &links, name, endpoint, addrs, *now_ms, false),
        Command::AddLinkV2 {
            name,
            endpoint,
            addrs,
            now_ms,
            accept_pushes,
        } => add(txn, &links, name, endpoint, addrs, *now_ms, *accept_pushes),
        Command::SetLinkPushes { name, accept_pushes } => {
            let Some(mut link) = active().find(|l| l.name == *name).cloned() else {
                return reject(Rejection::NoSuchLink(name.clone()));
            };
            link.accept_pushes = *accept_pushes;
            put(txn, &link)?;
            Ok(CommandResult::Link(link))
        }
        Command::PinLink { name, card } => {
            let Some(mut link) = active().find(|l| l.name == *name).cloned() else {
                return reject(Rejection::NoSuchLink(name.clone()));
            };
            let Ok(c) = card.verify() else {
                return reject(Rejection::BadCard("signature does not verify".into()));
            };
            if link.pinned.is_some() && crate::keys::held_key_w(txn, &c.cluster_id)?.key.generation > 0 {
                return reject(Rejection::BadCard(
                    "a card of the peer's first key, after a rotation".into(),
                ));
            }
            match link.pinned {
                Some(p) if p != c.cluster_id => {
                    return reject(Rejection::PinnedMismatch {
                        name: name.clone(),
                        pinned: p,
                        presented: c.cluster_id,
                    });
                }
                Some(_) => {}
                None => {
                    if let Some(other) = active().find(|l| l.pinned == Some(c.cluster_id) && l.name != *name) {
                        return reject(Rejection::ClusterAlreadyLinked {
                            cluster: c.cluster_id,
                            name: other.name.clone(),
                        });
                    }
                }
            }
            let known = link.card.as_ref().map(|k| k.card.epoch).unwrap_or(0);
            if link.pinned.is_some() && c.epoch < known {
                return reject(Rejection::StaleCard {
                    presented: c.epoch,
                    known,
                });
            }
            link.pinned = Some(c.cluster_id);
            link.card = Some(card.clone());
            put(txn, &link)?;
            Ok(CommandResult::Link(link))
        }
        Command::UpdatePeerCard { cluster, card } => {
            let Some(mut link) = active().find(|l| l.pinned == Some(*cluster)).cloned() else {
                return reject(Rejection::NoLinkForCluster(*cluster));
            };
            match card.verify() {
                Ok(c) if c.cluster_id == *cluster => {}
                _ => return reject(Rejection::BadCard(format!("not a valid card of cluster {cluster}"))),
            }
            if crate::keys::held_key_w(txn, cluster)?.key.generation > 0 {
                return reject(Rejection::BadCard(
                    "a card of the peer's first key, after a rotation".into(),
                ));
            }
            let known = link.card.as_ref().map(|k| k.card.epoch).unwrap_or(0);
            if card.card.epoch <= known {
                return reject(Rejection::StaleCard {
                    presented: card.card.epoch,
                    known,
                });
            }
            link.card = Some(card.clone());
            put(txn, &link)?;
            Ok(CommandResult::Link(link))
        }
        Command::RemoveLink { name, now_ms } => {
            let Some(mut link) = active().find(|l| l.name == *name).cloned() else {
                return reject(Rejection::NoSuchLink(name.clone()));
            };
            link.removed_at_ms = Some(*now_ms);
            put(txn, &link)?;
            if let Some(cluster) = link.pinned {
                // What an unlinked peer shares is not kept: relinking resyncs it.
                crate::peer_views::clear(txn, &cluster)?;
            }
            Ok(CommandResult::Link(link))
        }
        _ => Ok(CommandResult::Rejected(Rejection::Invalid("not a link command".into()))),
    }
}

/// Every link, tombstones included, in name order.
pub fn list(txn: &ReadTransaction) -> Result<Vec<LinkRecord>, CatalogError> {
    let t = match txn.open_table(LINKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)? {
        out.push(decode_link(row?.1.value())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run;
    use causeway_proto::card::{CardMember, ClusterCard, cluster_id_of};
    use redb::{Database, ReadableDatabase};

    fn card(secret: [u8; 32], epoch: u64, members: &[EndpointKey]) -> SignedCard {
        SignedCard::sign(
            ClusterCard {
                cluster_id: cluster_id_of(&secret),
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
            &secret,
        )
    }

    #[test]
    fn link_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("l.redb")).unwrap();
        let e1 = EndpointKey([1; 32]);
        let e2 = EndpointKey([2; 32]);
        let add = |name: &str, e| Command::AddLink {
            name: name.into(),
            endpoint: e,
            addrs: vec![],
            now_ms: 1,
        };
        assert!(matches!(run(&db, add("beta", e1)), CommandResult::Link(_)));
        assert!(matches!(
            run(&db, add("beta", e2)),
            CommandResult::Rejected(Rejection::LinkNameTaken(_))
        ));
        assert!(matches!(
            run(&db, add("b2", e1)),
            CommandResult::Rejected(Rejection::AlreadyLinked { .. })
        ));
        let secret = [5; 32];
        let pin = Command::PinLink {
            name: "beta".into(),
            card: card(secret, 1, &[e1]),
        };
        assert!(matches!(run(&db, pin), CommandResult::Link(_)));
        // A different cluster key for the pinned link is refused.
        let other = Command::PinLink {
            name: "beta".into(),
            card: card([6; 32], 9, &[e1]),
        };
        assert!(matches!(
            run(&db, other),
            CommandResult::Rejected(Rejection::PinnedMismatch { .. })
        ));
        // A newer card adds an endpoint; an old one is refused.
        let cluster = cluster_id_of(&secret);
        let newer = Command::UpdatePeerCard {
            cluster,
            card: card(secret, 2, &[e1, e2]),
        };
        assert!(matches!(run(&db, newer), CommandResult::Link(_)));
        let stale = Command::UpdatePeerCard {
            cluster,
            card: card(secret, 2, &[e1]),
        };
        assert!(matches!(
            run(&db, stale),
            CommandResult::Rejected(Rejection::StaleCard { .. })
        ));
        let links = list(&db.begin_read().unwrap()).unwrap();
        assert!(links[0].recognizes(&e2));
        assert_eq!(links[0].dial_targets().len(), 2);
        // Remove, then relink under the same name without cleanup.
        let rm = Command::RemoveLink {
            name: "beta".into(),
            now_ms: 2,
        };
        assert!(matches!(run(&db, rm), CommandResult::Link(l) if l.is_removed()));
        assert!(matches!(run(&db, add("beta", e1)), CommandResult::Link(l) if l.pinned.is_none()));
    }

    #[test]
    fn pushes_are_a_link_option_off_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("l.redb")).unwrap();
        let add = |name: &str, e: u8, accept_pushes| Command::AddLinkV2 {
            name: name.into(),
            endpoint: EndpointKey([e; 32]),
            addrs: vec![],
            now_ms: 1,
            accept_pushes,
        };
        assert!(matches!(run(&db, add("on", 1, true)), CommandResult::Link(l) if l.accept_pushes));
        assert!(matches!(run(&db, add("off", 2, false)), CommandResult::Link(l) if !l.accept_pushes));
        // An entry of an earlier version's log adds a link that takes no pushes.
        let old = Command::AddLink {
            name: "old".into(),
            endpoint: EndpointKey([3; 32]),
            addrs: vec![],
            now_ms: 1,
        };
        assert!(matches!(run(&db, old), CommandResult::Link(l) if !l.accept_pushes));
        let set = |name: &str, accept_pushes| Command::SetLinkPushes {
            name: name.into(),
            accept_pushes,
        };
        assert!(matches!(run(&db, set("old", true)), CommandResult::Link(l) if l.accept_pushes));
        assert!(matches!(run(&db, set("on", false)), CommandResult::Link(l) if !l.accept_pushes));
        assert!(matches!(
            run(&db, set("nope", true)),
            CommandResult::Rejected(Rejection::NoSuchLink(_))
        ));
        let on: Vec<_> = list(&db.begin_read().unwrap())
            .unwrap()
            .into_iter()
            .filter(|l| l.accept_pushes)
            .map(|l| l.name)
            .collect();
        assert_eq!(on, ["old"]);
    }

    #[test]
    fn a_link_stored_by_an_earlier_version_reads_as_taking_no_pushes() {
        #[derive(Serialize)]
        struct Earlier<'a> {
            name: &'a str,
            endpoint: EndpointKey,
            addrs: Vec<SocketAddr>,
            pinned: Option<ClusterId>,
            card: Option<SignedCard>,
            created_at_ms: u64,
            removed_at_ms: Option<u64>,
        }
        let bytes = encode(&Earlier {
            name: "beta",
            endpoint: EndpointKey([1; 32]),
            addrs: vec!["127.0.0.1:9".parse().unwrap()],
            pinned: Some(ClusterId([2; 32])),
            card: Some(card([5; 32], 3, &[EndpointKey([1; 32])])),
            created_at_ms: 7,
            removed_at_ms: None,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("l.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(LINKS)
            .unwrap()
            .insert(b"beta".as_slice(), bytes.as_slice())
            .unwrap();
        txn.commit().unwrap();
        let links = list(&db.begin_read().unwrap()).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].name.as_str(), links[0].created_at_ms), ("beta", 7));
        assert!(!links[0].accept_pushes);
        assert_eq!(links[0].card.as_ref().map(|c| c.card.epoch), Some(3));
        // Commands apply over it and store the current layout.
        let set = Command::SetLinkPushes {
            name: "beta".into(),
            accept_pushes: true,
        };
        assert!(matches!(run(&db, set), CommandResult::Link(l) if l.accept_pushes));
        let stored = db.begin_read().unwrap();
        let t = stored.open_table(LINKS).unwrap();
        let row = t.get(b"beta".as_slice()).unwrap().unwrap();
        assert!(decode::<LinkRecord>(row.value()).unwrap().accept_pushes);
    }
}
