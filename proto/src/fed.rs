//! Messages on `causeway/fed/1` and the pure checks of the handshake that binds a cluster card
//! to the QUIC connection.
//!
//! Handshake, on the first stream of a connection: the dialer sends [`Hello`] with a fresh
//! challenge; the listener answers [`HelloReply`] with its card, a proof over the dialer's
//! challenge and its own challenge; the dialer sends [`Auth`] with its card and proof; the
//! listener answers [`Welcome`]. A proof is a signature by the cluster key over the challenge and
//! both endpoint IDs, so a captured card or transcript cannot be replayed by another endpoint or
//! in another session. After the handshake every request travels on its own stream.

use serde::{Deserialize, Serialize};

use crate::card::{CardError, ClusterCard, SignedCard, sign_with, verify_by};
use crate::ids::{ClusterId, EndpointKey};

/// Largest federation control message.
pub const MAX_FED_FRAME: usize = 1 << 20;
const PROOF_DOMAIN: &[u8] = b"causeway/session/v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub challenge: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Card {
        card: Box<SignedCard>,
        #[serde(with = "crate::card::sig_bytes")]
        proof: [u8; 64],
        challenge: [u8; 32],
    },
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub card: SignedCard,
    #[serde(with = "crate::card::sig_bytes")]
    pub proof: [u8; 64],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// `links_back`: the listener's cluster has a link to the dialer's cluster.
    Accepted {
        links_back: bool,
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
    /// A newer card of the sender's cluster.
    CardUpdate(SignedCard),
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

fn proof_bytes(challenge: &[u8; 32], prover: &EndpointKey, verifier: &EndpointKey, card: &ClusterCard) -> Vec<u8> {
    let mut msg = PROOF_DOMAIN.to_vec();
    msg.extend_from_slice(challenge);
    msg.extend_from_slice(prover.as_bytes());
    msg.extend_from_slice(verifier.as_bytes());
    msg.extend_from_slice(card.cluster_id.as_bytes());
    msg.extend_from_slice(&card.epoch.to_be_bytes());
    msg
}

/// The prover's signature, by its cluster key, binding this session's challenge to both ends.
pub fn prove(
    cluster_secret: &[u8; 32],
    challenge: &[u8; 32],
    prover: &EndpointKey,
    verifier: &EndpointKey,
    card: &ClusterCard,
) -> [u8; 64] {
    sign_with(cluster_secret, &proof_bytes(challenge, prover, verifier, card))
}

/// What this side already knows about the peer cluster, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    /// The cluster ID pinned for this endpoint's link.
    pub pinned: Option<ClusterId>,
    /// Epoch of the newest card accepted from that cluster.
    pub known_epoch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum HandshakeError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error("card of cluster {cluster} does not list the connecting endpoint {remote}")]
    NotListed { cluster: ClusterId, remote: EndpointKey },
    #[error("session proof does not verify (replayed or forged handshake)")]
    BadProof,
    #[error("endpoint presents cluster {presented}, but the link is pinned to cluster {pinned}")]
    PinnedMismatch { pinned: ClusterId, presented: ClusterId },
    #[error("stale card: epoch {presented} is older than the known epoch {known}")]
    StaleCard { presented: u64, known: u64 },
}

/// Verifies a peer's card and proof for this session: a valid signature, a card that lists the
/// connection's verified endpoint, a proof over our challenge, the pinned cluster and no older
/// epoch than we know. Returns the verified card.
pub fn check_peer<'a>(
    card: &'a SignedCard,
    proof: &[u8; 64],
    our_challenge: &[u8; 32],
    remote: &EndpointKey,
    local: &EndpointKey,
    expect: &Expectation,
) -> Result<&'a ClusterCard, HandshakeError> {
    let c = card.verify()?;
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
    verify_by(&c.cluster_id, &proof_bytes(our_challenge, remote, local, c), proof)
        .map_err(|_| HandshakeError::BadProof)?;
    if expect.pinned.is_some() && c.epoch < expect.known_epoch {
        return Err(HandshakeError::StaleCard {
            presented: c.epoch,
            known: expect.known_epoch,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{CardMember, cluster_id_of};

    const SECRET: [u8; 32] = [3; 32];
    const PEER: EndpointKey = EndpointKey([1; 32]);
    const ME: EndpointKey = EndpointKey([2; 32]);

    fn card(epoch: u64, member: EndpointKey) -> SignedCard {
        SignedCard::sign(
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
        )
    }

    #[test]
    fn valid_session_passes() {
        let c = card(2, PEER);
        let challenge = [9; 32];
        let proof = prove(&SECRET, &challenge, &PEER, &ME, &c.card);
        let exp = Expectation {
            pinned: Some(cluster_id_of(&SECRET)),
            known_epoch: 2,
        };
        assert!(check_peer(&c, &proof, &challenge, &PEER, &ME, &exp).is_ok());
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let challenge = [9; 32];
        let c = card(2, PEER);
        let proof = prove(&SECRET, &challenge, &PEER, &ME, &c.card);
        let none = Expectation::default();
        // Replayed proof from another session.
        assert_eq!(
            check_peer(&c, &proof, &[8; 32], &PEER, &ME, &none),
            Err(HandshakeError::BadProof)
        );
        // Captured card presented by another endpoint.
        let other = EndpointKey([5; 32]);
        assert!(matches!(
            check_peer(&c, &proof, &challenge, &other, &ME, &none),
            Err(HandshakeError::NotListed { .. })
        ));
        // Pinned to a different cluster.
        let exp = Expectation {
            pinned: Some(ClusterId([4; 32])),
            known_epoch: 0,
        };
        assert!(matches!(
            check_peer(&c, &proof, &challenge, &PEER, &ME, &exp),
            Err(HandshakeError::PinnedMismatch { .. })
        ));
        // Older card than already known.
        let exp = Expectation {
            pinned: Some(cluster_id_of(&SECRET)),
            known_epoch: 3,
        };
        assert!(matches!(
            check_peer(&c, &proof, &challenge, &PEER, &ME, &exp),
            Err(HandshakeError::StaleCard { .. })
        ));
        // Bad signature.
        let mut bad = c.clone();
        bad.signature[0] ^= 1;
        assert!(matches!(
            check_peer(&bad, &proof, &challenge, &PEER, &ME, &none),
            Err(HandshakeError::Card(_))
        ));
    }
}
