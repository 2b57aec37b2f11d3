//! The decision function: may this peer do this action on this resource, and which rule says so
//! (or precisely why not).

use std::{cmp::Reverse, fmt};

use serde::{Deserialize, Serialize};

use crate::{
    denial::DenyReason,
    peer::{Action, PeerRelation},
    rule::{Audience, ShareRule},
};

/// The rule that granted a request, and where it sits in the resource's rule list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub rule_index: usize,
    pub rule: ShareRule,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule #{} ({})", self.rule_index, self.rule)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Grant(Grant),
    Deny(DenyReason),
}

impl Decision {
    pub fn is_granted(&self) -> bool {
        matches!(self, Decision::Grant(_))
    }

    pub fn into_result(self) -> Result<Grant, DenyReason> {
        match self {
            Decision::Grant(grant) => Ok(grant),
            Decision::Deny(reason) => Err(reason),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Grant(grant) => write!(f, "granted by {grant}"),
            Decision::Deny(reason) => write!(f, "denied: {reason}"),
        }
    }
}

/// May `peer` do `action` on a resource whose share rules are `resource`?
///
/// `None` means the resource does not exist. When several rules grant, the most specific one is
/// returned (cluster over linked over public), ties going to the lowest index, so the answer is
/// deterministic and names the rule the admin most likely meant.
pub fn decide(peer: &PeerRelation, resource: Option<&[ShareRule]>, action: Action) -> Decision {
    let Some(rules) = resource else {
        return Decision::Deny(DenyReason::UnknownResource);
    };
    // Visibility is settled first, whatever was asked: a peer that may not see the resource must
    // only ever get a reason that `peer_visible` turns into `NotFound`.
    if !rules.iter().any(|rule| rule.covers(peer, Action::See)) {
        return Decision::Deny(hidden_reason(peer, rules));
    }
    match most_specific(rules, |rule| rule.grants(peer, action)) {
        Some(grant) => Decision::Grant(grant),
        None => Decision::Deny(visible_but_forbidden_reason(peer, rules, action)),
    }
}

/// The granting candidate with the narrowest audience, ties to the lowest index.
fn most_specific(rules: &[ShareRule], mut candidate: impl FnMut(&ShareRule) -> bool) -> Option<Grant> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| candidate(rule))
        .min_by_key(|(index, rule)| (Reverse(rule.audience.specificity()), *index))
        .map(|(rule_index, rule)| Grant {
            rule_index,
            rule: *rule,
        })
}

/// Why a peer that no rule lets see the resource is denied.
fn hidden_reason(peer: &PeerRelation, rules: &[ShareRule]) -> DenyReason {
    match peer {
        PeerRelation::Unknown => DenyReason::UnknownPeer,
        PeerRelation::Unlinked(cluster) => {
            let would_cover_if_linked = rules.iter().any(|rule| match rule.audience {
                Audience::Cluster(id) => id == *cluster,
                Audience::Linked => true,
                Audience::Public => false,
            });
            if would_cover_if_linked {
                DenyReason::NotLinked { cluster: *cluster }
            } else {
                DenyReason::NoRuleForPeer
            }
        }
        PeerRelation::Linked(_) => DenyReason::NoRuleForPeer,
    }
}

/// Why a peer that may see the resource may not do `action` on it.
fn visible_but_forbidden_reason(peer: &PeerRelation, rules: &[ShareRule], action: Action) -> DenyReason {
    if *peer == PeerRelation::Unknown {
        return DenyReason::PublicViewOnly { action };
    }
    // For a verified peer coverage does not depend on the action, so the rules that let it see
    // are the ones that fall short here; report the most permissive of them.
    let best = rules
        .iter()
        .filter(|rule| rule.covers(peer, Action::See))
        .max_by_key(|rule| (rule.mode, !rule.read_only_in_effect()));
    match best {
        // Write-back is refused under a bidirectional rule only because every such rule is
        // read-only (a writable one would have granted).
        Some(rule) if action == Action::WriteBack && rule.mode.allows(action) => DenyReason::ReadOnly,
        Some(rule) => DenyReason::ModeForbids {
            mode: rule.mode,
            action,
        },
        // Unreachable after the visibility check; still fail closed and hide the resource.
        None => DenyReason::NoRuleForPeer,
    }
}

#[cfg(test)]
mod tests {
    use causeway_proto::ClusterId;

    use super::*;
    use crate::rule::ShareMode::{self, *};

    const A: ClusterId = ClusterId([0xa; 32]);
    const B: ClusterId = ClusterId([0xb; 32]);

    fn rule(audience: Audience, mode: ShareMode, read_only: bool) -> ShareRule {
        ShareRule::new(audience, mode, read_only)
    }

    fn granted_by(index: usize, rules: &[ShareRule]) -> Decision {
        Decision::Grant(Grant {
            rule_index: index,
            rule: rules[index],
        })
    }

    #[test]
    fn missing_resource_is_unknown_whoever_asks() {
        for peer in [
            PeerRelation::Unknown,
            PeerRelation::Unlinked(A),
            PeerRelation::Linked(A),
        ] {
            for action in Action::ALL {
                assert_eq!(decide(&peer, None, action), Decision::Deny(DenyReason::UnknownResource));
            }
        }
    }

    #[test]
    fn no_rules_means_private() {
        let cases = [
            (PeerRelation::Unknown, DenyReason::UnknownPeer),
            (PeerRelation::Unlinked(A), DenyReason::NoRuleForPeer),
            (PeerRelation::Linked(A), DenyReason::NoRuleForPeer),
        ];
        for (peer, reason) in cases {
            for action in Action::ALL {
                assert_eq!(decide(&peer, Some(&[]), action), Decision::Deny(reason));
            }
        }
    }

    /// One rule at a time, every peer relation, every action.
    #[test]
    fn single_rule_table() {
        use Action as A;
        use DenyReason::*;
        let unknown = PeerRelation::Unknown;
        let unlinked = PeerRelation::Unlinked(A);
        let linked = PeerRelation::Linked(A);
        let forbids = |mode, action| ModeForbids { mode, action };
        // (rule, peer, action, Some(deny reason) or None for granted)
        let table: Vec<(ShareRule, PeerRelation, Action, Option<DenyReason>)> = vec![
            // Public: unknown endpoints see and pull, nothing more.
            (rule(Audience::Public, Bidirectional, false), unknown, A::See, None),
            (rule(Audience::Public, Bidirectional, false), unknown, A::Pull, None),
            (
                rule(Audience::Public, Bidirectional, false),
                unknown,
                A::PushTo,
                Some(PublicViewOnly { action: A::PushTo }),
            ),
            (
                rule(Audience::Public, Bidirectional, false),
                unknown,
                A::WriteBack,
                Some(PublicViewOnly { action: A::WriteBack }),
            ),
            // Public covers every verified cluster, linked or not.
            (rule(Audience::Public, Pull, false), unlinked, A::Pull, None),
            (rule(Audience::Public, Push, false), unlinked, A::PushTo, None),
            // ... except for write-back: anyone can make a cluster key.
            (
                rule(Audience::Public, Bidirectional, false),
                unlinked,
                A::WriteBack,
                Some(ReadOnly),
            ),
            (rule(Audience::Public, Pull, false), linked, A::See, None),
            (
                rule(Audience::Public, Pull, false),
                linked,
                A::PushTo,
                Some(forbids(Pull, A::PushTo)),
            ),
            // Linked: only clusters we link to.
            (rule(Audience::Linked, Pull, false), unknown, A::See, Some(UnknownPeer)),
            (
                rule(Audience::Linked, Pull, false),
                unlinked,
                A::See,
                Some(NotLinked { cluster: A }),
            ),
            (rule(Audience::Linked, Pull, false), linked, A::See, None),
            (rule(Audience::Linked, Pull, false), linked, A::Pull, None),
            (
                rule(Audience::Linked, Pull, false),
                linked,
                A::PushTo,
                Some(forbids(Pull, A::PushTo)),
            ),
            (
                rule(Audience::Linked, Pull, false),
                linked,
                A::WriteBack,
                Some(forbids(Pull, A::WriteBack)),
            ),
            (rule(Audience::Linked, Push, false), linked, A::PushTo, None),
            (
                rule(Audience::Linked, Push, false),
                linked,
                A::WriteBack,
                Some(forbids(Push, A::WriteBack)),
            ),
            (rule(Audience::Linked, Bidirectional, false), linked, A::WriteBack, None),
            (
                rule(Audience::Linked, Bidirectional, true),
                linked,
                A::WriteBack,
                Some(ReadOnly),
            ),
            (rule(Audience::Linked, Bidirectional, true), linked, A::PushTo, None),
            // Cluster: only that cluster, and only while we link to it.
            (rule(Audience::Cluster(A), Pull, false), linked, A::Pull, None),
            (
                rule(Audience::Cluster(A), Pull, false),
                unlinked,
                A::Pull,
                Some(NotLinked { cluster: A }),
            ),
            (
                rule(Audience::Cluster(B), Pull, false),
                linked,
                A::See,
                Some(NoRuleForPeer),
            ),
            (
                rule(Audience::Cluster(B), Pull, false),
                unlinked,
                A::See,
                Some(NoRuleForPeer),
            ),
            (
                rule(Audience::Cluster(A), Pull, false),
                unknown,
                A::See,
                Some(UnknownPeer),
            ),
            // A hidden resource gets the hidden reason whatever is asked.
            (
                rule(Audience::Cluster(B), Bidirectional, false),
                linked,
                A::WriteBack,
                Some(NoRuleForPeer),
            ),
        ];
        for (rule, peer, action, expected) in table {
            let rules = [rule];
            let decision = decide(&peer, Some(&rules), action);
            let expected = match expected {
                None => granted_by(0, &rules),
                Some(reason) => Decision::Deny(reason),
            };
            assert_eq!(decision, expected, "rule `{rule}`, {peer}, {action}");
        }
    }

    #[test]
    fn most_specific_rule_wins_then_lowest_index() {
        let rules = [
            rule(Audience::Public, Bidirectional, false),
            rule(Audience::Linked, Pull, false),
            rule(Audience::Cluster(A), Pull, true),
            rule(Audience::Cluster(A), Push, false),
        ];
        let linked = PeerRelation::Linked(A);
        assert_eq!(decide(&linked, Some(&rules), Action::See), granted_by(2, &rules));
        assert_eq!(decide(&linked, Some(&rules), Action::Pull), granted_by(2, &rules));
        // Only some rules permit the action: the most specific of those.
        assert_eq!(decide(&linked, Some(&rules), Action::PushTo), granted_by(3, &rules));
        // A public rule never grants write-back, even a writable one stored by an older version.
        assert_eq!(
            decide(&linked, Some(&rules), Action::WriteBack),
            Decision::Deny(DenyReason::ReadOnly)
        );
        // A cluster the specific rules do not name falls back to linked, then public.
        let other = PeerRelation::Linked(B);
        assert_eq!(decide(&other, Some(&rules), Action::Pull), granted_by(1, &rules));
        assert_eq!(decide(&other, Some(&rules), Action::PushTo), granted_by(0, &rules));
        let unlinked = PeerRelation::Unlinked(A);
        assert_eq!(decide(&unlinked, Some(&rules), Action::Pull), granted_by(0, &rules));
    }

    #[test]
    fn write_back_reasons() {
        let linked = PeerRelation::Linked(A);
        let read_only_bidi = [
            rule(Audience::Linked, Push, false),
            rule(Audience::Cluster(A), Bidirectional, true),
        ];
        assert_eq!(
            decide(&linked, Some(&read_only_bidi), Action::WriteBack),
            Decision::Deny(DenyReason::ReadOnly)
        );
        let writable_elsewhere = [
            rule(Audience::Cluster(A), Bidirectional, true),
            rule(Audience::Linked, Bidirectional, false),
        ];
        assert_eq!(
            decide(&linked, Some(&writable_elsewhere), Action::WriteBack),
            granted_by(1, &writable_elsewhere)
        );
        let push_only = [rule(Audience::Linked, Pull, false), rule(Audience::Public, Push, false)];
        assert_eq!(
            decide(&linked, Some(&push_only), Action::WriteBack),
            Decision::Deny(DenyReason::ModeForbids {
                mode: Push,
                action: Action::WriteBack
            })
        );
    }

    #[test]
    fn unlinked_cluster_named_by_a_rule_still_sees_public_shares() {
        let rules = [
            rule(Audience::Cluster(A), Bidirectional, false),
            rule(Audience::Public, Pull, false),
        ];
        let unlinked = PeerRelation::Unlinked(A);
        assert_eq!(decide(&unlinked, Some(&rules), Action::Pull), granted_by(1, &rules));
        assert_eq!(
            decide(&unlinked, Some(&rules), Action::WriteBack),
            Decision::Deny(DenyReason::ModeForbids {
                mode: Pull,
                action: Action::WriteBack
            })
        );
    }

    #[test]
    fn decisions_print_for_sync_status() {
        let rules = [rule(Audience::Linked, Pull, true)];
        let decision = decide(&PeerRelation::Linked(A), Some(&rules), Action::Pull);
        assert_eq!(decision.to_string(), "granted by rule #0 (linked pull read-only)");
        let decision = decide(&PeerRelation::Linked(A), None, Action::Pull);
        assert_eq!(decision.to_string(), "denied: no such resource");
        assert_eq!(decision.into_result(), Err(DenyReason::UnknownResource));
    }
}
