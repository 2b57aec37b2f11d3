//! Messages on `causeway/fed/2` and the pure checks of the handshake that binds a cluster card
//! to the QUIC connection.
//!
//! Handshake, on the first stream of a connection: the dialer sends [`Hello`] with a fresh
//! challenge; the listener answers [`HelloReply`] with only its cluster ID, current key and a
//! proof over the dialer's challenge, plus its own challenge; the dialer sends [`Auth`] with its
//! full card and proof; the listener verifies it and only then answers [`Welcome`] with its own
//! full card (members and addresses), which the dialer checks against the proof it already has.
//! A proof is a signature by the cluster's current key over the challenge, both endpoint IDs and
//! the key's generation, so a captured card or transcript cannot be replayed by another endpoint
//! or in another session. After the handshake every request travels on its own stream.

use serde::{Deserialize, Serialize};

use crate::card::{CardError, CardKey, sign_with, verify_by};
use crate::ids::{ClusterId, EndpointKey};
use crate::rotation::{HeldKey, KeyError, KeyVerdict, KeyedCard, judge};

/// Largest federation control message.
pub const MAX_FED_FRAME: usize = 1 << 20;
const PROOF_DOMAIN: &[u8] = b"causeway/session/v2";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub challenge: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Who the listener is, without its members: the full card follows in [`Welcome`] once the
    /// dialer has proved itself.
    Card {
        cluster_id: ClusterId,
        key: CardKey,
        #[serde(with = "crate::card::sig_bytes")]
        proof: [u8; 64],
        challenge: [u8; 32],
    },
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub card: KeyedCard,
    #[serde(with = "crate::card::sig_bytes")]
    pub proof: [u8; 64],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// `links_back`: the listener's cluster has a link to the dialer's cluster; `card`: the
    /// listener's full card, under the key its proof named.
    Accepted {
        links_back: bool,
        card: Box<KeyedCard>,
    },
    Refused(String),
}

/// Most entries in one catalog page or change notification.
pub const MAX_CATALOG_PAGE: usize = 500;

/// One resource as a peer may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub content: Option<String>,
    /// "pull", "push" or "bidirectional".
    pub mode: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedRequest {
    Heartbeat {
        seq: u64,
        card_epoch: u64,
    },
    /// "What do you share with my cluster?", a page after `after` in name order.
    CatalogQuery {
        after: Option<String>,
        limit: u32,
    },
    /// "A new version of `name` is ready for you": the owner offers it under a push share; the
    /// receiver pulls it if its own policy accepts pushes from the sender.
    PushOffer {
        name: String,
        version: u64,
    },
    /// The sender (a mirror of the receiver's `name`) offers its new commits back: a git bundle
    /// it serves as blob `bundle` (a content root) to the receiver's cluster.
    WriteBack {
        name: String,
        bundle: String,
    },
    /// What the sender shares with the receiver changed: new entries, or `None` for a resource
    /// the receiver may no longer see.
    CatalogChanged {
        changes: Vec<(String, Option<CatalogEntry>)>,
    },
    /// A newer card of the sender's cluster (a new epoch, or a new key with its statement).
    CardUpdate(Box<KeyedCard>),
    /// The sender removed its link; the receiver may close connections.
    Goodbye {
        reason: String,
    },
    /// "What do you share with my cluster under this name?": answered with a `Catalog` of that
    /// one entry, or of none, the same for a missing name as for one not shared with the sender.
    /// (Appended last: the variant order is the wire format.)
    CatalogLookup {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedResponse {
    HeartbeatAck {
        seq: u64,
        card_epoch: u64,
        links_back: bool,
    },
    /// `more`: further visible entries follow the last one.
    Catalog {
        entries: Vec<CatalogEntry>,
        more: bool,
    },
    Ok,
    /// Policy refused the request; the reason is safe to show the requester.
    Denied(String),
    Error(String),
}

fn proof_bytes(
    challenge: &[u8; 32],
    prover: &EndpointKey,
    verifier: &EndpointKey,
    cluster_id: &ClusterId,
    key: &CardKey,
) -> Vec<u8> {
    let mut msg = PROOF_DOMAIN.to_vec();
    msg.extend_from_slice(challenge);
    msg.extend_from_slice(prover.as_bytes());
    msg.extend_from_slice(verifier.as_bytes());
    msg.extend_from_slice(cluster_id.as_bytes());
    msg.extend_from_slice(&key.generation.to_be_bytes());
    msg.extend_from_slice(key.key.as_bytes());
    msg
}

/// The prover's signature, by its cluster's current key (`secret` of `key`), binding this
/// session's challenge to both ends.
pub fn prove(
    secret: &[u8; 32],
    challenge: &[u8; 32],
    prover: &EndpointKey,
    verifier: &EndpointKey,
    cluster_id: &ClusterId,
    key: &CardKey,
) -> [u8; 64] {
    sign_with(secret, &proof_bytes(challenge, prover, verifier, cluster_id, key))
}

/// What this side already knows about the peer cluster, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    /// The cluster ID pinned for this endpoint's link.
    pub pinned: Option<ClusterId>,
    /// Epoch of the newest card accepted from that cluster.
    pub known_epoch: u64,
    /// The key held for the pinned cluster (`None`: its first key), and the members of the
    /// card held, against which a rotation is checked.
    pub held: Option<HeldKey>,
    pub held_members: Vec<EndpointKey>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum HandshakeError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("card of cluster {cluster} does not list the connecting endpoint {remote}")]
    NotListed { cluster: ClusterId, remote: EndpointKey },
    #[error("session proof does not verify (replayed or forged handshake)")]
    BadProof,
    #[error("endpoint presents cluster {presented}, but the link is pinned to cluster {pinned}")]
    PinnedMismatch { pinned: ClusterId, presented: ClusterId },
    #[error("stale card: epoch {presented} is older than the known epoch {known}")]
    StaleCard { presented: u64, known: u64 },
    #[error("the full card does not match the key the peer proved ({0})")]
    CardNotProved(String),
}

/// Checks a proof by `key` of `cluster_id` over our challenge, made by `remote` for `local`.
pub fn verify_proof(
    cluster_id: &ClusterId,
    key: &CardKey,
    proof: &[u8; 64],
    our_challenge: &[u8; 32],
    remote: &EndpointKey,
    local: &EndpointKey,
) -> Result<(), HandshakeError> {
    if key.generation == 0 && key.key != *cluster_id {
        return Err(HandshakeError::BadProof);
    }
    verify_by(
        &key.key,
        &proof_bytes(our_challenge, remote, local, cluster_id, key),
        proof,
    )
    .map_err(|_| HandshakeError::BadProof)
}

/// Checks a peer's card for this connection: valid under its own key, of the pinned cluster,
/// listing the connection's verified endpoint, under a key we hold or can follow, and no older
/// than what we know.
pub fn check_card(card: &KeyedCard, remote: &EndpointKey, expect: &Expectation) -> Result<KeyVerdict, HandshakeError> {
    card.verify()?;
    let c = &card.signed.card;
    if let Some(pinned) = expect.pinned
        && pinned != c.cluster_id
    {
        return Err(HandshakeError::PinnedMismatch {
            pinned,
            presented: c.cluster_id,
        });
    }
    if !c.lists(remote) {
        return Err(HandshakeError::NotListed {
            cluster: c.cluster_id,
            remote: *remote,
        });
    }
    if expect.pinned.is_none() {
        return Ok(KeyVerdict::Confirmed);
    }
    let first = HeldKey::first(c.cluster_id);
    let held = expect.held.as_ref().unwrap_or(&first);
    let verdict = judge(card, held, &expect.held_members)?;
    if verdict == KeyVerdict::Same && c.epoch < expect.known_epoch {
        return Err(HandshakeError::StaleCard {
            presented: c.epoch,
            known: expect.known_epoch,
        });
    }
    Ok(verdict)
}

/// The listener's check of the dialer: its proof over our challenge, then its card.
pub fn check_peer(
    card: &KeyedCard,
    proof: &[u8; 64],
    our_challenge: &[u8; 32],
    remote: &EndpointKey,
    local: &EndpointKey,
    expect: &Expectation,
) -> Result<KeyVerdict, HandshakeError> {
    card.verify()?;
    verify_proof(&card.cluster_id(), &card.key, proof, our_challenge, remote, local)?;
    check_card(card, remote, expect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{CardMember, ClusterCard, SignedCard, cluster_id_of};

    const SECRET: [u8; 32] = [3; 32];
    const PEER: EndpointKey = EndpointKey([1; 32]);
    const ME: EndpointKey = EndpointKey([2; 32]);

    fn card(epoch: u64, member: EndpointKey) -> KeyedCard {
        KeyedCard::first(SignedCard::sign(
            ClusterCard {
                cluster_id: cluster_id_of(&SECRET),
                name: "b".into(),
                members: vec![CardMember {
                    endpoint: member,
                    addrs: vec![],
                }],
                epoch,
                issued_at_ms: 0,
            },
            &SECRET,
        ))
    }

    fn proof(c: &KeyedCard, challenge: &[u8; 32]) -> [u8; 64] {
        prove(&SECRET, challenge, &PEER, &ME, &c.cluster_id(), &c.key)
    }

    fn pinned(known_epoch: u64) -> Expectation {
        Expectation {
            pinned: Some(cluster_id_of(&SECRET)),
            known_epoch,
            ..Default::default()
        }
    }

    #[test]
    fn valid_session_passes() {
        let c = card(2, PEER);
        let challenge = [9; 32];
        let p = proof(&c, &challenge);
        assert_eq!(
            check_peer(&c, &p, &challenge, &PEER, &ME, &pinned(2)),
            Ok(KeyVerdict::Same)
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let challenge = [9; 32];
        let c = card(2, PEER);
        let p = proof(&c, &challenge);
        let none = Expectation::default();
        // Replayed proof from another session.
        assert_eq!(
            check_peer(&c, &p, &[8; 32], &PEER, &ME, &none),
            Err(HandshakeError::BadProof)
        );
        // Captured card presented by another endpoint.
        let other = EndpointKey([5; 32]);
        assert!(check_peer(&c, &p, &challenge, &other, &ME, &none).is_err());
        assert!(matches!(
            check_card(&c, &other, &none),
            Err(HandshakeError::NotListed { .. })
        ));
        // Pinned to a different cluster.
        let exp = Expectation {
            pinned: Some(ClusterId([4; 32])),
            ..Default::default()
        };
        assert!(matches!(
            check_peer(&c, &p, &challenge, &PEER, &ME, &exp),
            Err(HandshakeError::PinnedMismatch { .. })
        ));
        // Older card than already known.
        assert!(matches!(
            check_peer(&c, &p, &challenge, &PEER, &ME, &pinned(3)),
            Err(HandshakeError::StaleCard { .. })
        ));
        // Bad signature.
        let mut bad = c.clone();
        bad.signed.signature[0] ^= 1;
        assert!(matches!(
            check_peer(&bad, &p, &challenge, &PEER, &ME, &none),
            Err(HandshakeError::Card(_))
        ));
    }
}
