//! The cluster card: a cluster's ID, name, members and their addresses, and an epoch, signed by
//! the cluster's current key. The cluster ID is the first key (generation 0); a rotation
//! ([`crate::rotation`]) moves the card to a new key of the next generation, and peers order
//! cards by (generation, epoch).

use std::net::SocketAddr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, EndpointKey};

/// Domain separation for card signatures by the first key (generation 0).
const CARD_DOMAIN: &[u8] = b"causeway/card/v1";
/// Domain separation for card signatures by a rotated key (generation 1 and later).
const CARD_DOMAIN_ROTATED: &[u8] = b"causeway/card/v2";
/// Most members a card may list.
pub const MAX_CARD_MEMBERS: usize = 64;
/// Most addresses per member.
pub const MAX_MEMBER_ADDRS: usize = 16;
/// Longest cluster name in a card.
pub const MAX_CARD_NAME: usize = 64;
/// Largest encoded signed card.
pub const MAX_CARD_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardMember {
    pub endpoint: EndpointKey,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCard {
    pub cluster_id: ClusterId,
    pub name: String,
    pub members: Vec<CardMember>,
    /// Grows by one whenever membership or addresses change; a peer never goes back to a
    /// lower epoch.
    pub epoch: u64,
    pub issued_at_ms: u64,
}

impl ClusterCard {
    pub fn lists(&self, endpoint: &EndpointKey) -> bool {
        self.members.iter().any(|m| &m.endpoint == endpoint)
    }

    pub fn member(&self, endpoint: &EndpointKey) -> Option<&CardMember> {
        self.members.iter().find(|m| &m.endpoint == endpoint)
    }

    /// What the key of `key` signs: generation 0 keeps the first format, so cards stored before
    /// rotation existed still verify; a later generation binds the generation and key as well.
    fn signing_bytes(&self, key: &CardKey) -> Vec<u8> {
        let mut msg = if key.generation == 0 {
            CARD_DOMAIN.to_vec()
        } else {
            let mut m = CARD_DOMAIN_ROTATED.to_vec();
            m.extend_from_slice(&key.generation.to_be_bytes());
            m.extend_from_slice(key.key.as_bytes());
            m
        };
        msg.extend(postcard::to_stdvec(self).unwrap_or_default());
        msg
    }

    /// Every member's endpoint.
    pub fn endpoints(&self) -> Vec<EndpointKey> {
        self.members.iter().map(|m| m.endpoint).collect()
    }
}

/// The key that signs a cluster's cards now, and its generation (0: the cluster ID itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardKey {
    pub generation: u64,
    pub key: ClusterId,
}

impl CardKey {
    /// The first key of a cluster: its ID.
    pub fn first(cluster_id: ClusterId) -> Self {
        Self {
            generation: 0,
            key: cluster_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCard {
    pub card: ClusterCard,
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

pub(crate) mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CardError {
    #[error("cluster ID {0} is not a valid public key")]
    BadClusterKey(ClusterId),
    #[error("card signature does not verify against cluster key {0}")]
    BadSignature(ClusterId),
    #[error("card is malformed: {0}")]
    Malformed(String),
    #[error("a card of generation 0 must be signed by the cluster ID itself")]
    FirstKeyMismatch,
}

/// Signs with a cluster secret key (32 bytes, ed25519).
pub fn sign_with(secret: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    SigningKey::from_bytes(secret).sign(msg).to_bytes()
}

/// The cluster ID (public key) of a cluster secret.
pub fn cluster_id_of(secret: &[u8; 32]) -> ClusterId {
    ClusterId(SigningKey::from_bytes(secret).verifying_key().to_bytes())
}

/// Verifies `signature` over `msg` by cluster `id`.
pub fn verify_by(id: &ClusterId, msg: &[u8], signature: &[u8; 64]) -> Result<(), CardError> {
    let key = VerifyingKey::from_bytes(id.as_bytes()).map_err(|_| CardError::BadClusterKey(*id))?;
    key.verify_strict(msg, &Signature::from_bytes(signature))
        .map_err(|_| CardError::BadSignature(*id))
}

impl SignedCard {
    /// Signs with the first key (generation 0), the cluster ID's secret.
    pub fn sign(card: ClusterCard, cluster_secret: &[u8; 32]) -> Self {
        let key = CardKey::first(card.cluster_id);
        Self::sign_as(card, &key, cluster_secret)
    }

    /// Signs with the secret of `key` (the caller holds the secret of that generation).
    pub fn sign_as(card: ClusterCard, key: &CardKey, secret: &[u8; 32]) -> Self {
        let signature = sign_with(secret, &card.signing_bytes(key));
        Self { card, signature }
    }

    /// Checks shape limits and that the card is signed by the key its cluster ID names
    /// (generation 0).
    pub fn verify(&self) -> Result<&ClusterCard, CardError> {
        self.verify_as(&CardKey::first(self.card.cluster_id))
    }

    /// Checks shape limits and that the card is signed by `key`; a generation-0 key must be
    /// the cluster ID. Whether `key` is the cluster's legitimate current key is the caller's
    /// decision (pinning, or a rotation statement).
    pub fn verify_as(&self, key: &CardKey) -> Result<&ClusterCard, CardError> {
        let c = &self.card;
        if c.members.is_empty() || c.members.len() > MAX_CARD_MEMBERS {
            return Err(CardError::Malformed(format!(
                "{} members (1..={MAX_CARD_MEMBERS})",
                c.members.len()
            )));
        }
        if c.members.iter().any(|m| m.addrs.len() > MAX_MEMBER_ADDRS) {
            return Err(CardError::Malformed("too many addresses for a member".into()));
        }
        if c.name.len() > MAX_CARD_NAME {
            return Err(CardError::Malformed("name too long".into()));
        }
        // The name is shown to admins (`link list`): no control characters that could rewrite
        // what their terminal shows.
        if c.name.chars().any(char::is_control) {
            return Err(CardError::Malformed("name holds control characters".into()));
        }
        if key.generation == 0 && key.key != c.cluster_id {
            return Err(CardError::FirstKeyMismatch);
        }
        verify_by(&key.key, &c.signing_bytes(key), &self.signature)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(secret: &[u8; 32]) -> ClusterCard {
        ClusterCard {
            cluster_id: cluster_id_of(secret),
            name: "alpha".into(),
            members: vec![CardMember {
                endpoint: EndpointKey([1; 32]),
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
            }],
            epoch: 1,
            issued_at_ms: 5,
        }
    }

    #[test]
    fn signed_cards_verify_and_tampering_fails() {
        let secret = [7u8; 32];
        let signed = SignedCard::sign(card(&secret), &secret);
        assert!(signed.verify().is_ok());
        let bytes = postcard::to_stdvec(&signed).unwrap();
        let back: SignedCard = crate::decode(&bytes, MAX_CARD_BYTES).unwrap();
        assert_eq!(back, signed);

        let mut tampered = signed.clone();
        tampered.card.epoch = 2;
        assert!(matches!(tampered.verify(), Err(CardError::BadSignature(_))));
        let mut named = card(&secret);
        named.name = "peer-b\x1b[2K\r".into();
        assert!(matches!(
            SignedCard::sign(named, &secret).verify(),
            Err(CardError::Malformed(_))
        ));
        let mut bad_sig = signed.clone();
        bad_sig.signature[3] ^= 1;
        assert!(matches!(bad_sig.verify(), Err(CardError::BadSignature(_))));
        // A card claiming another cluster's ID but signed by a different key.
        let mut claim = SignedCard::sign(card(&[9u8; 32]), &[9u8; 32]);
        claim.card.cluster_id = cluster_id_of(&secret);
        assert!(matches!(claim.verify(), Err(CardError::BadSignature(_))));
    }

    #[test]
    fn rotated_cards_verify_only_under_their_key_and_generation() {
        let first = [7u8; 32];
        let next = [8u8; 32];
        let key = CardKey {
            generation: 1,
            key: cluster_id_of(&next),
        };
        let signed = SignedCard::sign_as(card(&first), &key, &next);
        assert!(signed.verify_as(&key).is_ok());
        assert!(signed.verify().is_err());
        let other_gen = CardKey { generation: 2, ..key };
        assert!(signed.verify_as(&other_gen).is_err());
        // Generation 0 is the cluster ID, whatever key is named.
        let fake_first = CardKey {
            generation: 0,
            key: cluster_id_of(&next),
        };
        assert_eq!(signed.verify_as(&fake_first), Err(CardError::FirstKeyMismatch));
    }
}
