//! Cluster key rotation: the statement that moves a cluster's cards from one key to the next,
//! signed by the previous key and by the node keys of a majority of the previous card's
//! members, and the pure judgement a peer makes of a card presented under some key.

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::card::{CardError, CardKey, MAX_CARD_MEMBERS, SignedCard, sign_with, verify_by};
use crate::ids::{ClusterId, EndpointKey};

/// Domain separation for rotation statements (previous key and node keys sign the same bytes).
const ROTATION_DOMAIN: &[u8] = b"causeway/rotation/v1";

/// What a rotation says: cluster `cluster_id` replaces `previous_key` by `new_key`, which
/// becomes generation `generation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationBody {
    pub cluster_id: ClusterId,
    pub generation: u64,
    pub new_key: ClusterId,
    pub previous_key: ClusterId,
}

impl RotationBody {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut msg = ROTATION_DOMAIN.to_vec();
        msg.extend_from_slice(self.cluster_id.as_bytes());
        msg.extend_from_slice(&self.generation.to_be_bytes());
        msg.extend_from_slice(self.new_key.as_bytes());
        msg.extend_from_slice(self.previous_key.as_bytes());
        msg
    }

    /// The key this body introduces.
    pub fn card_key(&self) -> CardKey {
        CardKey {
            generation: self.generation,
            key: self.new_key,
        }
    }
}

/// The endpoint (public key) of a node secret key.
pub fn node_endpoint(node_secret: &[u8; 32]) -> EndpointKey {
    EndpointKey(SigningKey::from_bytes(node_secret).verifying_key().to_bytes())
}

/// One member's signature of a rotation, by its node (endpoint) key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSignature {
    pub endpoint: EndpointKey,
    #[serde(with = "crate::card::sig_bytes")]
    pub signature: [u8; 64],
}

impl NodeSignature {
    /// Signs `body` with a node's secret key (its iroh secret key bytes).
    pub fn sign(node_secret: &[u8; 32], body: &RotationBody) -> Self {
        Self {
            endpoint: node_endpoint(node_secret),
            signature: sign_with(node_secret, &body.signing_bytes()),
        }
    }

    pub fn verifies(&self, body: &RotationBody) -> bool {
        VerifyingKey::from_bytes(self.endpoint.as_bytes())
            .and_then(|k| k.verify_strict(&body.signing_bytes(), &Signature::from_bytes(&self.signature)))
            .is_ok()
    }
}

/// A complete rotation statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatement {
    pub body: RotationBody,
    /// By the previous key.
    #[serde(with = "crate::card::sig_bytes")]
    pub key_signature: [u8; 64],
    pub node_signatures: Vec<NodeSignature>,
}

impl RotationStatement {
    pub fn sign(body: RotationBody, previous_secret: &[u8; 32], node_signatures: Vec<NodeSignature>) -> Self {
        let key_signature = sign_with(previous_secret, &body.signing_bytes());
        Self {
            body,
            key_signature,
            node_signatures,
        }
    }

    /// How many distinct members of `universe` signed it validly.
    pub fn signers_among(&self, universe: &[EndpointKey]) -> usize {
        let mut seen: Vec<EndpointKey> = Vec::new();
        for s in &self.node_signatures {
            if universe.contains(&s.endpoint) && !seen.contains(&s.endpoint) && s.verifies(&self.body) {
                seen.push(s.endpoint);
            }
        }
        seen.len()
    }

    /// Checks the statement follows `held` for `cluster_id` and is signed by the held key;
    /// tells whether a majority of `universe` (the members of the card held) signed it.
    pub fn check(
        &self,
        cluster_id: ClusterId,
        held: &CardKey,
        universe: &[EndpointKey],
    ) -> Result<Support, RotationError> {
        let b = &self.body;
        if b.cluster_id != cluster_id {
            return Err(RotationError::Malformed("statement of another cluster".into()));
        }
        if self.node_signatures.len() > MAX_CARD_MEMBERS {
            return Err(RotationError::Malformed("too many node signatures".into()));
        }
        if b.generation != held.generation.saturating_add(1) || b.previous_key != held.key {
            return Err(RotationError::Malformed(format!(
                "statement does not follow generation {}",
                held.generation
            )));
        }
        verify_by(&b.previous_key, &b.signing_bytes(), &self.key_signature)
            .map_err(|_| RotationError::Malformed("not signed by the previous key".into()))?;
        if majority(self.signers_among(universe), universe.len()) {
            Ok(Support::Majority)
        } else {
            Ok(Support::NoMajority)
        }
    }
}

/// Whether `signers` of `members` are a strict majority.
pub fn majority(signers: usize, members: usize) -> bool {
    members > 0 && signers * 2 > members
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The previous key and a majority of the previous members signed.
    Majority,
    /// The previous key signed, but not enough members (a cluster shrinking from two to one):
    /// a peer follows it only when its admin confirms.
    NoMajority,
}

/// A card as a cluster presents it to peers: the signed card, the key and generation that
/// signed it, and the statement that introduced that key (none at generation 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedCard {
    pub signed: SignedCard,
    pub key: CardKey,
    pub rotation: Option<RotationStatement>,
}

impl KeyedCard {
    /// A first-generation card.
    pub fn first(signed: SignedCard) -> Self {
        Self {
            key: CardKey::first(signed.card.cluster_id),
            signed,
            rotation: None,
        }
    }

    /// The card's shape and signature under its own key, and a statement that matches it.
    pub fn verify(&self) -> Result<(), CardError> {
        self.signed.verify_as(&self.key)?;
        if let Some(r) = &self.rotation
            && (r.body.card_key() != self.key || r.body.cluster_id != self.signed.card.cluster_id)
        {
            return Err(CardError::Malformed("rotation statement is for another key".into()));
        }
        Ok(())
    }

    pub fn cluster_id(&self) -> ClusterId {
        self.signed.card.cluster_id
    }

    pub fn epoch(&self) -> u64 {
        self.signed.card.epoch
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RotationError {
    #[error("invalid key rotation: {0}")]
    Malformed(String),
}

/// What a peer holds about a pinned cluster's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldKey {
    pub key: CardKey,
    /// The statement that introduced `key`, and the members it was checked against.
    pub statement: Option<RotationStatement>,
    pub universe: Vec<EndpointKey>,
    /// Two different statements for `key.generation` were seen: both refused until an admin
    /// confirms the peer again.
    pub conflict: bool,
    /// The admin confirmed the peer (`link add` again): the next card the peer presents is
    /// taken under whatever key signed it.
    pub confirm: bool,
}

impl HeldKey {
    pub fn first(cluster_id: ClusterId) -> Self {
        Self {
            key: CardKey::first(cluster_id),
            statement: None,
            universe: Vec::new(),
            conflict: false,
            confirm: false,
        }
    }
}

/// How a presented card relates to what is held, when it may be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Same key and generation as held.
    Same,
    /// The next generation, introduced by a statement with a majority.
    Rotated,
    /// Taken on the admin's confirmation.
    Confirmed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum KeyError {
    #[error("conflicting key rotation for generation {0}; waiting for an admin to confirm the peer (link add)")]
    Conflict(u64),
    #[error("stale card: key generation {presented} is older than the known generation {known}")]
    StaleGeneration { presented: u64, known: u64 },
    #[error("card is signed by another key than the known key of generation {0}")]
    KeyMismatch(u64),
    #[error(
        "key rotation to generation {0} is not signed by a majority of the members; an admin must confirm it (link add)"
    )]
    NeedsConfirmation(u64),
    #[error("missed key rotations from generation {from} to {to}; an admin must confirm the peer (link add)")]
    MissedRotations { from: u64, to: u64 },
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// Judges the key of a presented card (already checked by [`KeyedCard::verify`] and of the
/// pinned cluster) against what is held, `held_members` being the members of the card held.
pub fn judge(presented: &KeyedCard, held: &HeldKey, held_members: &[EndpointKey]) -> Result<KeyVerdict, KeyError> {
    if held.confirm {
        // The admin's confirmation takes the next key as presented, never an older one: the
        // first key stays in every former member's database.
        if presented.key.generation < held.key.generation {
            return Err(KeyError::StaleGeneration {
                presented: presented.key.generation,
                known: held.key.generation,
            });
        }
        return Ok(KeyVerdict::Confirmed);
    }
    if held.conflict {
        return Err(KeyError::Conflict(held.key.generation));
    }
    let (p, h) = (presented.key.generation, held.key.generation);
    let cluster = presented.cluster_id();
    if p < h {
        return Err(KeyError::StaleGeneration { presented: p, known: h });
    }
    if p == h {
        if presented.key == held.key {
            return Ok(KeyVerdict::Same);
        }
        // Another key for the generation held: a conflict if its statement stands as well as
        // the one accepted (the previous key and a majority of the same members).
        if let (Some(theirs), Some(ours)) = (&presented.rotation, &held.statement) {
            let previous = CardKey {
                generation: h - 1,
                key: ours.body.previous_key,
            };
            if theirs != ours && theirs.check(cluster, &previous, &held.universe) == Ok(Support::Majority) {
                return Err(KeyError::Conflict(h));
            }
        }
        return Err(KeyError::KeyMismatch(h));
    }
    if p > h.saturating_add(1) {
        return Err(KeyError::MissedRotations { from: h, to: p });
    }
    let Some(stmt) = &presented.rotation else {
        return Err(RotationError::Malformed("a new key without a rotation statement".into()).into());
    };
    match stmt.check(cluster, &held.key, held_members)? {
        Support::Majority => Ok(KeyVerdict::Rotated),
        Support::NoMajority => Err(KeyError::NeedsConfirmation(p)),
    }
}

#[cfg(test)]
mod tests;
