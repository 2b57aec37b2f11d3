//! The cluster card: a cluster's ID, name, members and their addresses, and an epoch, signed by
//! the cluster key. Peers accept any endpoint listed in the newest card signed by a pinned key.

use std::net::SocketAddr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, EndpointKey};

/// Domain separation for card signatures.
const CARD_DOMAIN: &[u8] = b"causeway/card/v1";
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

    fn signing_bytes(&self) -> Vec<u8> {
        let mut msg = CARD_DOMAIN.to_vec();
        msg.extend(postcard::to_stdvec(self).unwrap_or_default());
        msg
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
    pub fn sign(card: ClusterCard, cluster_secret: &[u8; 32]) -> Self {
        let signature = sign_with(cluster_secret, &card.signing_bytes());
        Self { card, signature }
    }

    /// Checks shape limits and that the card is signed by the key its cluster ID names.
    pub fn verify(&self) -> Result<&ClusterCard, CardError> {
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
        verify_by(&c.cluster_id, &c.signing_bytes(), &self.signature)?;
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
        let mut bad_sig = signed.clone();
        bad_sig.signature[3] ^= 1;
        assert!(matches!(bad_sig.verify(), Err(CardError::BadSignature(_))));
        // A card claiming another cluster's ID but signed by a different key.
        let mut claim = SignedCard::sign(card(&[9u8; 32]), &[9u8; 32]);
        claim.card.cluster_id = cluster_id_of(&secret);
        assert!(matches!(claim.verify(), Err(CardError::BadSignature(_))));
    }
}
