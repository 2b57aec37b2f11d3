//! What a peer's catalog view shows: whether each resource is listed, with which mode and
//! read-only flag (`visible_mode`), and the owner's preview of that view (`preview`).

use serde::{Deserialize, Serialize};

use crate::{
    decide::Grant,
    peer::{Action, PeerRelation},
    rule::{ShareMode, ShareRule},
};

/// The mode and read-only flag `peer` sees for a resource in its catalog view, or `None` when it
/// may not see the resource.
///
/// They are those of the most permissive covering rule (bidirectional over push over pull, then
/// writable over read-only), so the view agrees with [`decide`](crate::decide): the peer is
/// offered pushes exactly when the mode is push or bidirectional, and may write back exactly
/// when it is bidirectional and not read-only. An unknown endpoint may only see and pull, so its
/// view is always `(Pull, true)` whatever the public rule says.
pub fn visible_mode(peer: &PeerRelation, rules: &[ShareRule]) -> Option<(ShareMode, bool)> {
    catalog_entry(peer, rules).map(|entry| (entry.mode, entry.read_only))
}

/// One line of `causeway share preview PEER`: a resource the peer would see, how, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreviewEntry<N> {
    pub name: N,
    pub mode: ShareMode,
    pub read_only: bool,
    /// The rule that gives the peer this mode and read-only flag.
    pub grant: Grant,
}

/// The resources `peer` would see in its catalog view, in input order, with the mode and
/// read-only flag it would see and the rule responsible. Resources it may not see are left out.
pub fn preview<'a, N, I>(peer: &PeerRelation, resources: I) -> Vec<PreviewEntry<N>>
where
    I: IntoIterator<Item = (N, &'a [ShareRule])>,
{
    resources
        .into_iter()
        .filter_map(|(name, rules)| {
            catalog_entry(peer, rules).map(|entry| PreviewEntry {
                name,
                mode: entry.mode,
                read_only: entry.read_only,
                grant: entry.grant,
            })
        })
        .collect()
}

struct CatalogEntry {
    mode: ShareMode,
    read_only: bool,
    grant: Grant,
}

fn catalog_entry(peer: &PeerRelation, rules: &[ShareRule]) -> Option<CatalogEntry> {
    let (rule_index, rule) = rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.covers(peer, Action::See))
        // Most permissive first; among equals, the most specific, then the lowest index, to
        // match how `decide` picks its granting rule.
        .max_by_key(|(index, rule)| {
            (
                rule.mode,
                !rule.read_only_in_effect(),
                rule.audience.specificity(),
                std::cmp::Reverse(*index),
            )
        })?;
    let grant = Grant {
        rule_index,
        rule: *rule,
    };
    // Show what the peer may actually do, not what the rule would allow a verified cluster.
    let (mode, read_only) = if *peer == PeerRelation::Unknown {
        (ShareMode::Pull, true)
    } else {
        (rule.mode, rule.read_only_in_effect())
    };
    Some(CatalogEntry { mode, read_only, grant })
}

#[cfg(test)]
mod tests {
    use causeway_proto::ClusterId;

    use super::*;
    use crate::rule::{Audience, ShareMode::*};

    const A: ClusterId = ClusterId([0xa; 32]);

    fn rule(audience: Audience, mode: ShareMode, read_only: bool) -> ShareRule {
        ShareRule::new(audience, mode, read_only)
    }

    /// The peer, its resource's rules, and the view it should get.
    type ViewCase = (PeerRelation, Vec<ShareRule>, Option<(ShareMode, bool)>);

    #[test]
    fn visible_mode_table() {
        let linked = PeerRelation::Linked(A);
        let unlinked = PeerRelation::Unlinked(A);
        let unknown = PeerRelation::Unknown;
        let table: Vec<ViewCase> = vec![
            (linked, vec![], None),
            (linked, vec![rule(Audience::Linked, Pull, true)], Some((Pull, true))),
            (
                linked,
                vec![rule(Audience::Linked, Pull, false), rule(Audience::Public, Push, true)],
                Some((Push, true)),
            ),
            (
                linked,
                vec![
                    rule(Audience::Cluster(A), Bidirectional, true),
                    rule(Audience::Linked, Bidirectional, false),
                ],
                Some((Bidirectional, false)),
            ),
            // A public rule shows as read-only: it never lets a peer write back.
            (
                linked,
                vec![rule(Audience::Public, Bidirectional, false)],
                Some((Bidirectional, true)),
            ),
            // A writable pull rule does not make a read-only bidirectional rule writable.
            (
                linked,
                vec![
                    rule(Audience::Linked, Bidirectional, true),
                    rule(Audience::Linked, Pull, false),
                ],
                Some((Bidirectional, true)),
            ),
            (unlinked, vec![rule(Audience::Linked, Bidirectional, false)], None),
            (
                unlinked,
                vec![
                    rule(Audience::Linked, Bidirectional, false),
                    rule(Audience::Public, Pull, true),
                ],
                Some((Pull, true)),
            ),
            (unknown, vec![rule(Audience::Linked, Pull, false)], None),
            (
                unknown,
                vec![rule(Audience::Public, Bidirectional, false)],
                Some((Pull, true)),
            ),
        ];
        for (peer, rules, expected) in table {
            assert_eq!(visible_mode(&peer, &rules), expected, "{peer} {rules:?}");
        }
    }

    #[test]
    fn preview_lists_visible_resources_in_order_with_their_rule() {
        let private: Vec<ShareRule> = vec![];
        let docs = vec![rule(Audience::Public, Pull, false)];
        let repo = vec![
            rule(Audience::Linked, Pull, false),
            rule(Audience::Cluster(A), Bidirectional, false),
        ];
        let resources = [
            ("secret", private.as_slice()),
            ("repo", repo.as_slice()),
            ("docs", docs.as_slice()),
        ];
        let entries = preview(&PeerRelation::Linked(A), resources);
        assert_eq!(
            entries,
            vec![
                PreviewEntry {
                    name: "repo",
                    mode: Bidirectional,
                    read_only: false,
                    grant: Grant {
                        rule_index: 1,
                        rule: repo[1]
                    },
                },
                PreviewEntry {
                    name: "docs",
                    mode: Pull,
                    read_only: false,
                    grant: Grant {
                        rule_index: 0,
                        rule: docs[0]
                    },
                },
            ]
        );
        let names: Vec<_> = preview(&PeerRelation::Unknown, resources)
            .into_iter()
            .map(|entry| entry.name)
            .collect();
        assert_eq!(names, ["docs"]);
    }

    #[test]
    fn equal_modes_are_credited_to_the_most_specific_rule() {
        let rules = [
            rule(Audience::Public, Push, false),
            rule(Audience::Linked, Push, false),
            rule(Audience::Linked, Push, false),
        ];
        let entries = preview(&PeerRelation::Linked(A), [("r", rules.as_slice())]);
        assert_eq!(entries[0].grant.rule_index, 1);
    }
}
