use super::*;
use crate::card::{CardMember, ClusterCard, cluster_id_of};

const FIRST: [u8; 32] = [1; 32];
const NEXT: [u8; 32] = [2; 32];
const NODES: [[u8; 32]; 3] = [[11; 32], [12; 32], [13; 32]];

fn node(i: usize) -> EndpointKey {
    EndpointKey(SigningKey::from_bytes(&NODES[i]).verifying_key().to_bytes())
}

fn members() -> Vec<EndpointKey> {
    (0..3).map(node).collect()
}

fn card(key: &CardKey, secret: &[u8; 32], epoch: u64) -> SignedCard {
    SignedCard::sign_as(
        ClusterCard {
            cluster_id: cluster_id_of(&FIRST),
            name: "a".into(),
            members: members()
                .into_iter()
                .map(|endpoint| CardMember {
                    endpoint,
                    addrs: vec![],
                })
                .collect(),
            epoch,
            issued_at_ms: 0,
        },
        key,
        secret,
    )
}

fn rotated(next: &[u8; 32], signers: &[usize]) -> KeyedCard {
    let body = RotationBody {
        cluster_id: cluster_id_of(&FIRST),
        generation: 1,
        new_key: cluster_id_of(next),
        previous_key: cluster_id_of(&FIRST),
    };
    let sigs = signers.iter().map(|i| NodeSignature::sign(&NODES[*i], &body)).collect();
    let key = body.card_key();
    KeyedCard {
        signed: card(&key, next, 5),
        key,
        rotation: Some(RotationStatement::sign(body, &FIRST, sigs)),
    }
}

#[test]
fn a_majority_rotation_is_followed_and_a_lone_key_is_not() {
    let held = HeldKey::first(cluster_id_of(&FIRST));
    let ok = rotated(&NEXT, &[0, 1]);
    assert!(ok.verify().is_ok());
    assert_eq!(judge(&ok, &held, &members()), Ok(KeyVerdict::Rotated));
    // The old key alone, or with one node of three.
    assert_eq!(
        judge(&rotated(&NEXT, &[]), &held, &members()),
        Err(KeyError::NeedsConfirmation(1))
    );
    assert_eq!(
        judge(&rotated(&NEXT, &[2]), &held, &members()),
        Err(KeyError::NeedsConfirmation(1))
    );
    // A duplicated signer counts once.
    assert_eq!(
        judge(&rotated(&NEXT, &[2, 2]), &held, &members()),
        Err(KeyError::NeedsConfirmation(1))
    );
    // Not signed by the previous key.
    let mut forged = ok.clone();
    if let Some(r) = forged.rotation.as_mut() {
        r.key_signature = sign_with(&[9; 32], &r.body.signing_bytes());
    }
    assert!(matches!(judge(&forged, &held, &members()), Err(KeyError::Rotation(_))));
    // An old-generation card after the rotation is stale, whatever its epoch.
    let after = HeldKey {
        key: ok.key,
        statement: ok.rotation.clone(),
        universe: members(),
        conflict: false,
        confirm: false,
    };
    let old = KeyedCard::first(card(&CardKey::first(cluster_id_of(&FIRST)), &FIRST, u64::MAX));
    assert!(old.verify().is_ok());
    assert!(matches!(
        judge(&old, &after, &members()),
        Err(KeyError::StaleGeneration { .. })
    ));
    // A second statement for the same generation with a majority: conflict; without: mismatch.
    let other = rotated(&[3; 32], &[1, 2]);
    assert_eq!(judge(&other, &after, &members()), Err(KeyError::Conflict(1)));
    let weak = rotated(&[3; 32], &[2]);
    assert_eq!(judge(&weak, &after, &members()), Err(KeyError::KeyMismatch(1)));
    assert_eq!(judge(&ok, &after, &members()), Ok(KeyVerdict::Same));
    // An admin's confirmation takes the next key as presented, but never the old one back.
    let confirming = HeldKey { confirm: true, ..after };
    assert!(matches!(
        judge(&old, &confirming, &members()),
        Err(KeyError::StaleGeneration { .. })
    ));
    assert_eq!(judge(&weak, &confirming, &members()), Ok(KeyVerdict::Confirmed));
}
