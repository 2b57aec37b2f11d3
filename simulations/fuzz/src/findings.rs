//! Inputs that make a target fail today, kept as code (one is over 1 MiB) so a fix can be
//! checked: `cargo test -- --ignored known_findings`. See "Findings" in README.md.

use causeway_catalog::Command;
use causeway_proto::card::{CardMember, ClusterCard, SignedCard, cluster_id_of};

use crate::catalog_db::{LOCAL, OWN_SECRET, PEER_SECRET};

/// One finding: target, short name, input.
pub type Finding = (&'static str, &'static str, Vec<u8>);

fn pc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap()
}

/// Every known finding.
pub fn all() -> Vec<Finding> {
    // 1. A mirror recorded at version u64::MAX (the version comes from the peer's catalog
    //    entry), then published: `r.version += 1` in catalog/src/resources.rs overflows.
    let mut mirror_then_publish = pc(&Command::RecordMirror {
        name: "mirror".into(),
        origin: cluster_id_of(&PEER_SECRET),
        kind: "forge/repo".into(),
        owner: "peer-team".into(),
        version: u64::MAX,
        content: Some("c1".into()),
        now_ms: 5,
    });
    mirror_then_publish.extend(pc(&Command::PublishResource {
        name: "mirror".into(),
        content: None,
        base_version: None,
        now_ms: 0,
    }));

    // 2. SetOwnCard is applied without any size check: a card over the catalog's 1 MiB record
    //    limit makes `state::apply` return a storage error (the state machine stops on one).
    let big = Command::SetOwnCard {
        card: SignedCard::sign(
            ClusterCard {
                cluster_id: cluster_id_of(&OWN_SECRET),
                name: "a".repeat(1_100_000),
                members: vec![CardMember {
                    endpoint: LOCAL,
                    addrs: vec![],
                }],
                epoch: 2,
                issued_at_ms: 0,
            },
            &OWN_SECRET,
        ),
    };

    vec![
        ("catalog_command", "mirror-u64-max-then-publish", mirror_then_publish),
        ("catalog_command", "set-own-card-over-1mib", pc(&big)),
    ]
}
