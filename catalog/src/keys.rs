//! Cluster keys, replicated: this cluster's current key and a rotation being signed by its
//! members, and for each pinned peer the key held for it (with the statement that introduced
//! it). Cards of peers are accepted here, deterministically, under the rules of
//! `causeway_proto::rotation`; a card that claims an endpoint another link owns is refused.

use causeway_proto::{
    ClusterId, EndpointKey,
    card::{CardKey, cluster_id_of},
    rotation::{HeldKey, KeyError, KeyVerdict, KeyedCard, NodeSignature, RotationBody, RotationStatement, judge},
};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult, Rejection};
use crate::links::{self, LinkRecord};
use crate::state::{CLUSTER, CatalogError, decode, encode};

const OWN_KEY: &[u8] = b"key";
/// In the cluster table (so snapshots carry it), `PEER_KEY_PREFIX` + peer cluster ID to postcard
/// [`HeldKey`]; no row: the peer's first key.
const PEER_KEY_PREFIX: &[u8] = b"peer-key/";

fn peer_key_row(cluster: &ClusterId) -> Vec<u8> {
    let mut k = PEER_KEY_PREFIX.to_vec();
    k.extend_from_slice(cluster.as_bytes());
    k
}
const PENDING_ROTATION: &[u8] = b"rotation";

/// A cluster key's secret; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySecret(pub [u8; 32]);

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

/// This cluster's current key. No row: generation 0, the identity's secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnKey {
    pub key: CardKey,
    pub secret: KeySecret,
    /// The statement that introduced this key (none at generation 0).
    pub statement: Option<RotationStatement>,
}

/// A rotation the leader started, and the members' signatures gathered so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRotation {
    pub body: RotationBody,
    pub signatures: Vec<NodeSignature>,
}

fn reject(r: Rejection) -> Result<CommandResult, CatalogError> {
    Ok(CommandResult::Rejected(r))
}

fn get<T: for<'de> Deserialize<'de>>(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<T>, CatalogError> {
    t.get(key)?.map(|v| decode(v.value())).transpose()
}

/// The current key of this cluster, once it has an identity.
pub fn own_key(txn: &ReadTransaction) -> Result<Option<OwnKey>, CatalogError> {
    let t = match txn.open_table(CLUSTER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if let Some(k) = get(&t, OWN_KEY)? {
        return Ok(Some(k));
    }
    drop(t);
    Ok(crate::state::cluster_identity(txn)?.map(|i| first_key(&i)))
}

fn first_key(i: &crate::ClusterIdentity) -> OwnKey {
    OwnKey {
        key: CardKey::first(i.cluster_id),
        secret: KeySecret(i.cluster_secret),
        statement: None,
    }
}

pub(crate) fn own_key_w(txn: &WriteTransaction) -> Result<Option<OwnKey>, CatalogError> {
    let t = txn.open_table(CLUSTER)?;
    if let Some(k) = get(&t, OWN_KEY)? {
        return Ok(Some(k));
    }
    let identity: Option<crate::ClusterIdentity> = get(&t, b"identity")?;
    Ok(identity.map(|i| first_key(&i)))
}

/// The rotation being signed, if any.
pub fn pending_rotation(txn: &ReadTransaction) -> Result<Option<PendingRotation>, CatalogError> {
    let t = match txn.open_table(CLUSTER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    get(&t, PENDING_ROTATION)
}

/// The key held for peer `cluster`.
pub fn held_key(txn: &ReadTransaction, cluster: &ClusterId) -> Result<HeldKey, CatalogError> {
    let t = match txn.open_table(CLUSTER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HeldKey::first(*cluster)),
        Err(e) => return Err(e.into()),
    };
    Ok(get(&t, &peer_key_row(cluster))?.unwrap_or_else(|| HeldKey::first(*cluster)))
}

pub(crate) fn held_key_w(txn: &WriteTransaction, cluster: &ClusterId) -> Result<HeldKey, CatalogError> {
    let t = txn.open_table(CLUSTER)?;
    Ok(get(&t, &peer_key_row(cluster))?.unwrap_or_else(|| HeldKey::first(*cluster)))
}

fn put_held(txn: &WriteTransaction, cluster: &ClusterId, held: &HeldKey) -> Result<(), CatalogError> {
    txn.open_table(CLUSTER)?
        .insert(peer_key_row(cluster).as_slice(), encode(held)?.as_slice())?;
    Ok(())
}

/// Rotation of this cluster's own key: start, sign, adopt.
pub(crate) fn apply_own(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    let Some(current) = own_key_w(txn)? else {
        return reject(Rejection::Invalid("cluster has no identity yet".into()));
    };
    let cluster_id = {
        let t = txn.open_table(CLUSTER)?;
        let identity: Option<crate::ClusterIdentity> = get(&t, b"identity")?;
        identity.map(|i| i.cluster_id)
    };
    let Some(cluster_id) = cluster_id else {
        return reject(Rejection::Invalid("cluster has no identity yet".into()));
    };
    let follows = |b: &RotationBody| {
        b.cluster_id == cluster_id && b.generation == current.key.generation + 1 && b.previous_key == current.key.key
    };
    match cmd {
        Command::RotationRequest { body } => {
            if !follows(body) {
                return reject(Rejection::Invalid("rotation does not follow the current key".into()));
            }
            let pending = PendingRotation {
                body: (**body).clone(),
                signatures: Vec::new(),
            };
            txn.open_table(CLUSTER)?
                .insert(PENDING_ROTATION, encode(&pending)?.as_slice())?;
            Ok(CommandResult::Applied)
        }
        Command::RotationSign { signature } => {
            let mut t = txn.open_table(CLUSTER)?;
            let Some(mut pending) = get::<PendingRotation>(&t, PENDING_ROTATION)? else {
                return reject(Rejection::Invalid("no rotation is being signed".into()));
            };
            let card: Option<causeway_proto::card::SignedCard> = get(&t, b"card")?;
            let listed = card.is_some_and(|c| c.card.lists(&signature.endpoint));
            if !listed || !signature.verifies(&pending.body) {
                return reject(Rejection::Invalid("not a member's signature of this rotation".into()));
            }
            if !pending.signatures.iter().any(|s| s.endpoint == signature.endpoint) {
                pending.signatures.push((**signature).clone());
                t.insert(PENDING_ROTATION, encode(&pending)?.as_slice())?;
            }
            Ok(CommandResult::Applied)
        }
        Command::RotateOwnKey { secret, statement } => {
            let b = &statement.body;
            if !follows(b) || cluster_id_of(&secret.0) != b.new_key {
                return reject(Rejection::Invalid("rotation does not follow the current key".into()));
            }
            // The previous key's signature is required; the members' majority is what peers
            // check (a cluster shrinking to one member rotates without it).
            if statement.check(cluster_id, &current.key, &[]).is_err() {
                return reject(Rejection::Invalid("rotation is not signed by the current key".into()));
            }
            let key = OwnKey {
                key: b.card_key(),
                secret: secret.clone(),
                statement: Some((**statement).clone()),
            };
            let mut t = txn.open_table(CLUSTER)?;
            t.insert(OWN_KEY, encode(&key)?.as_slice())?;
            t.remove(PENDING_ROTATION)?;
            Ok(CommandResult::Applied)
        }
        _ => reject(Rejection::Invalid("not a key command".into())),
    }
}

/// The first endpoint of `card` that another link (or this cluster itself) owns.
fn claimed_elsewhere(txn: &WriteTransaction, link: &str, card: &KeyedCard) -> Result<Option<Rejection>, CatalogError> {
    let own: Option<causeway_proto::card::SignedCard> = get(&txn.open_table(CLUSTER)?, b"card")?;
    for m in &card.signed.card.members {
        if own.as_ref().is_some_and(|c| c.card.lists(&m.endpoint)) {
            return Ok(Some(Rejection::EndpointClaimed {
                endpoint: m.endpoint,
                owner: "this cluster".into(),
            }));
        }
        if let Some(owner) = crate::endpoint_index::owner_w(txn, &m.endpoint)?
            && owner != link
        {
            return Ok(Some(Rejection::EndpointClaimed {
                endpoint: m.endpoint,
                owner,
            }));
        }
    }
    Ok(None)
}

/// A peer's card under its key (`Command::PeerCard`) and an admin's confirmation.
pub(crate) fn apply_peer(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    match cmd {
        Command::PeerCard { link: name, card } => {
            let all = links::all(txn)?;
            let active = || all.iter().filter(|l| !l.is_removed());
            let Some(mut link) = active().find(|l| l.name == *name).cloned() else {
                return reject(Rejection::NoSuchLink(name.clone()));
            };
            if let Err(e) = card.verify() {
                return reject(Rejection::BadCard(e.to_string()));
            }
            let cluster = card.cluster_id();
            if let Some(p) = link.pinned
                && p != cluster
            {
                return reject(Rejection::PinnedMismatch {
                    name: name.clone(),
                    pinned: p,
                    presented: cluster,
                });
            }
            if let Some(r) = claimed_elsewhere(txn, name, card)? {
                return reject(r);
            }
            let members = card.signed.card.endpoints();
            let held = match link.pinned {
                None => {
                    if let Some(other) = active().find(|l| l.pinned == Some(cluster)) {
                        return reject(Rejection::ClusterAlreadyLinked {
                            cluster,
                            name: other.name.clone(),
                        });
                    }
                    adopted(card, members)
                }
                Some(_) => {
                    let held = held_key_w(txn, &cluster)?;
                    let held_members = link.card.as_ref().map(|c| c.card.endpoints()).unwrap_or_default();
                    match judge(card, &held, &held_members) {
                        Ok(KeyVerdict::Same) => {
                            let known = link.card.as_ref().map(|k| k.card.epoch).unwrap_or(0);
                            if card.epoch() <= known {
                                return reject(Rejection::StaleCard {
                                    presented: card.epoch(),
                                    known,
                                });
                            }
                            held
                        }
                        Ok(KeyVerdict::Rotated) => HeldKey {
                            universe: held_members,
                            ..adopted(card, Vec::new())
                        },
                        Ok(KeyVerdict::Confirmed) => adopted(card, members),
                        Err(KeyError::Conflict(generation)) => {
                            // Both statements are refused from now on, until an admin confirms.
                            put_held(txn, &cluster, &HeldKey { conflict: true, ..held })?;
                            return reject(Rejection::KeyConflict(generation));
                        }
                        Err(e) => return reject(Rejection::PeerKey(e.to_string())),
                    }
                }
            };
            link.pinned = Some(cluster);
            link.card = Some(card.signed.clone());
            put_held(txn, &cluster, &held)?;
            links::put(txn, &link)?;
            crate::endpoint_index::rebuild(txn)?;
            Ok(CommandResult::Link(link))
        }
        Command::ConfirmPeerKey {
            link: name,
            endpoint,
            addrs,
        } => {
            let all = links::all(txn)?;
            let Some(mut link) = all.into_iter().find(|l| !l.is_removed() && l.name == *name) else {
                return reject(Rejection::NoSuchLink(name.clone()));
            };
            if addrs.len() > links::MAX_LINK_ADDRS {
                return reject(Rejection::Invalid(format!(
                    "at most {} addresses",
                    links::MAX_LINK_ADDRS
                )));
            }
            if let Some(cluster) = link.pinned {
                let held = held_key_w(txn, &cluster)?;
                put_held(
                    txn,
                    &cluster,
                    &HeldKey {
                        conflict: false,
                        confirm: true,
                        ..held
                    },
                )?;
            }
            link.endpoint = *endpoint;
            link.addrs = addrs.clone();
            links::put(txn, &link)?;
            crate::endpoint_index::rebuild(txn)?;
            Ok(CommandResult::Link(link))
        }
        _ => reject(Rejection::Invalid("not a peer key command".into())),
    }
}

/// What is held after taking `card`'s key as presented.
fn adopted(card: &KeyedCard, universe: Vec<EndpointKey>) -> HeldKey {
    HeldKey {
        key: card.key,
        statement: card.rotation.clone(),
        universe,
        conflict: false,
        confirm: false,
    }
}

/// Whether the link's peer waits for an admin: a conflict, or a confirmation not yet used.
pub fn awaiting_admin(txn: &ReadTransaction, link: &LinkRecord) -> Result<Option<HeldKey>, CatalogError> {
    match link.pinned {
        Some(c) => {
            let held = held_key(txn, &c)?;
            Ok((held.conflict || held.confirm).then_some(held))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
