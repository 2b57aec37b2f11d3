//! Property tests over random rule sets, peers and actions. The checks use a small oracle written
//! straight from the brief's semantics, not the crate's own helpers, so a shared mistake cannot
//! hide.

use causeway_policy::{
    Action, Audience, Decision, DenyReason, PeerRelation, PeerVisibleDenial, ShareMode, ShareRule, decide, preview,
    visible_mode,
};
use causeway_proto::ClusterId;
use proptest::prelude::*;

// A pool of three clusters so that rules and peers often name the same one.
fn cluster_id() -> impl Strategy<Value = ClusterId> {
    (1u8..=3).prop_map(|n| ClusterId([n; 32]))
}

fn peer() -> impl Strategy<Value = PeerRelation> {
    prop_oneof![
        Just(PeerRelation::Unknown),
        cluster_id().prop_map(PeerRelation::Unlinked),
        cluster_id().prop_map(PeerRelation::Linked),
    ]
}

fn audience() -> impl Strategy<Value = Audience> {
    prop_oneof![
        Just(Audience::Public),
        Just(Audience::Linked),
        cluster_id().prop_map(Audience::Cluster),
    ]
}

fn mode() -> impl Strategy<Value = ShareMode> {
    prop::sample::select(ShareMode::ALL.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn rule() -> impl Strategy<Value = ShareRule> {
    (audience(), mode(), any::<bool>()).prop_map(|(a, m, ro)| ShareRule::new(a, m, ro))
}

fn rules() -> impl Strategy<Value = Vec<ShareRule>> {
    prop::collection::vec(rule(), 0..6)
}

// ---- The oracle: the brief's semantics, spelled out case by case. ----

fn oracle_covers(rule: &ShareRule, peer: &PeerRelation, action: Action) -> bool {
    match (rule.audience, *peer) {
        (Audience::Public, PeerRelation::Unknown) => action == Action::See || action == Action::Pull,
        (Audience::Public, _) => true,
        (Audience::Linked, PeerRelation::Linked(_)) => true,
        (Audience::Cluster(id), PeerRelation::Linked(peer_id)) => id == peer_id,
        _ => false,
    }
}

fn oracle_permits(rule: &ShareRule, action: Action) -> bool {
    match action {
        Action::See | Action::Pull => true,
        Action::PushTo => rule.mode == ShareMode::Push || rule.mode == ShareMode::Bidirectional,
        // A public rule never lets anyone write back: anyone can make a cluster key.
        Action::WriteBack => {
            rule.mode == ShareMode::Bidirectional && !rule.read_only && rule.audience != Audience::Public
        }
    }
}

fn oracle_grants(rules: &[ShareRule], peer: &PeerRelation, action: Action) -> bool {
    rules
        .iter()
        .any(|r| oracle_covers(r, peer, action) && oracle_permits(r, action))
}

fn specificity(audience: Audience) -> u8 {
    match audience {
        Audience::Cluster(_) => 2,
        Audience::Linked => 1,
        Audience::Public => 0,
    }
}

fn has_public(rules: &[ShareRule]) -> bool {
    rules.iter().any(|r| r.audience == Audience::Public)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// (0) The decision agrees with the oracle on grant versus deny.
    #[test]
    fn grant_matches_oracle(rules in rules(), peer in peer(), action in action()) {
        let decision = decide(&peer, Some(&rules), action);
        prop_assert_eq!(decision.is_granted(), oracle_grants(&rules, &peer, action));
    }

    /// (1) Adding a rule never turns a grant into a denial; removing one never turns a denial
    /// into a grant.
    #[test]
    fn monotonic(
        rules in rules(),
        extra in rule(),
        position in any::<prop::sample::Index>(),
        peer in peer(),
        action in action(),
    ) {
        let before = decide(&peer, Some(&rules), action);

        let mut widened = rules.clone();
        widened.insert(position.index(rules.len() + 1), extra);
        let after_adding = decide(&peer, Some(&widened), action);
        if before.is_granted() {
            prop_assert!(after_adding.is_granted(), "adding {} revoked: {}", extra, after_adding);
        }

        if !rules.is_empty() {
            let mut narrowed = rules.clone();
            narrowed.remove(position.index(rules.len()));
            let after_removing = decide(&peer, Some(&narrowed), action);
            if !before.is_granted() {
                prop_assert!(!after_removing.is_granted(), "removing granted: {}", after_removing);
            }
        }
    }

    /// (2) An unknown endpoint never gets push or write-back, and nothing without a public rule.
    #[test]
    fn unknown_endpoint_gets_public_view_only(rules in rules(), action in action()) {
        let decision = decide(&PeerRelation::Unknown, Some(&rules), action);
        if matches!(action, Action::PushTo | Action::WriteBack) || !has_public(&rules) {
            prop_assert!(!decision.is_granted(), "{}", decision);
        }
        if let Decision::Grant(grant) = decision {
            prop_assert_eq!(grant.rule.audience, Audience::Public);
        }
    }

    /// (3) An unlinked cluster gets nothing without a public rule.
    #[test]
    fn unlinked_cluster_gets_public_shares_only(
        rules in rules(),
        cluster in cluster_id(),
        action in action(),
    ) {
        let decision = decide(&PeerRelation::Unlinked(cluster), Some(&rules), action);
        if !has_public(&rules) {
            prop_assert!(!decision.is_granted(), "{}", decision);
        }
        if let Decision::Grant(grant) = decision {
            prop_assert_eq!(grant.rule.audience, Audience::Public);
        }
    }

    /// (4) A write-back grant implies a covering, writable, bidirectional rule.
    #[test]
    fn write_back_needs_writable_bidirectional(rules in rules(), peer in peer()) {
        if decide(&peer, Some(&rules), Action::WriteBack).is_granted() {
            let writable_bidirectional = rules.iter().any(|r| {
                oracle_covers(r, &peer, Action::WriteBack)
                    && r.mode == ShareMode::Bidirectional
                    && !r.read_only
                    && r.audience != Audience::Public
            });
            prop_assert!(writable_bidirectional);
        }
    }

    /// (5) A peer that may not see the resource is told the same thing whether or not it exists,
    /// whatever it asks; a peer that may see it is never told `NotFound`.
    #[test]
    fn hidden_resources_are_indistinguishable_from_missing(
        rules in rules(),
        peer in peer(),
        action in action(),
    ) {
        let can_see = decide(&peer, Some(&rules), Action::See).is_granted();
        let existing = decide(&peer, Some(&rules), action);
        let missing = decide(&peer, None, action);
        let told = |d: Decision| match d {
            Decision::Grant(_) => None,
            Decision::Deny(reason) => Some(reason.peer_visible()),
        };
        prop_assert_eq!(told(missing), Some(PeerVisibleDenial::NotFound));
        if can_see {
            prop_assert_ne!(told(existing), Some(PeerVisibleDenial::NotFound));
        } else {
            prop_assert_eq!(told(existing), told(missing));
        }
    }

    /// (6) The decision is deterministic, and a grant names a rule of the list that covers the peer
    /// and permits the action, the most specific such rule, ties to the lowest index.
    #[test]
    fn grant_names_the_right_rule(rules in rules(), peer in peer(), action in action()) {
        let decision = decide(&peer, Some(&rules), action);
        prop_assert_eq!(decision, decide(&peer, Some(&rules), action));
        if let Decision::Grant(grant) = decision {
            prop_assert_eq!(rules.get(grant.rule_index), Some(&grant.rule));
            prop_assert!(oracle_covers(&grant.rule, &peer, action));
            prop_assert!(oracle_permits(&grant.rule, action));
            for (index, other) in rules.iter().enumerate() {
                if oracle_covers(other, &peer, action) && oracle_permits(other, action) {
                    let (mine, theirs) = (specificity(grant.rule.audience), specificity(other.audience));
                    prop_assert!(
                        mine > theirs || (mine == theirs && grant.rule_index <= index),
                        "rule #{} {} should have won", index, other
                    );
                }
            }
        }
    }

    /// (7) Denial reasons fit the situation: write-back under read-only bidirectional rules only
    /// reports `ReadOnly`, and `ModeForbids` only names a mode that really forbids the action.
    #[test]
    fn deny_reasons_are_accurate(rules in rules(), peer in peer(), action in action()) {
        match decide(&peer, Some(&rules), action) {
            Decision::Deny(DenyReason::ReadOnly) => {
                prop_assert_eq!(action, Action::WriteBack);
                prop_assert!(rules.iter().any(|r| oracle_covers(r, &peer, action)
                    && r.mode == ShareMode::Bidirectional && (r.read_only || r.audience == Audience::Public)));
            }
            Decision::Deny(DenyReason::ModeForbids { mode, action: denied }) => {
                prop_assert_eq!(denied, action);
                prop_assert!(!mode.allows(action));
            }
            Decision::Deny(DenyReason::PublicViewOnly { .. }) | Decision::Deny(DenyReason::UnknownPeer) => {
                prop_assert_eq!(peer, PeerRelation::Unknown);
            }
            Decision::Deny(DenyReason::NotLinked { cluster }) => {
                prop_assert_eq!(peer, PeerRelation::Unlinked(cluster));
            }
            _ => {}
        }
    }

    /// (8) The catalog view agrees with `decide`: listed exactly when the peer may see, pushes
    /// offered exactly for push or bidirectional, write-back exactly for writable bidirectional.
    #[test]
    fn visible_mode_agrees_with_decide(rules in rules(), peer in peer()) {
        let granted = |action| decide(&peer, Some(&rules), action).is_granted();
        match visible_mode(&peer, &rules) {
            None => prop_assert!(!granted(Action::See) && !granted(Action::Pull)),
            Some((mode, read_only)) => {
                prop_assert!(granted(Action::See) && granted(Action::Pull));
                prop_assert_eq!(granted(Action::PushTo), mode != ShareMode::Pull);
                prop_assert_eq!(
                    granted(Action::WriteBack),
                    mode == ShareMode::Bidirectional && !read_only
                );
            }
        }
    }

    /// (9) The preview lists exactly the resources the peer may see, with their catalog view.
    #[test]
    fn preview_matches_visible_mode(resources in prop::collection::vec(rules(), 0..5), peer in peer()) {
        let named: Vec<(usize, &[ShareRule])> =
            resources.iter().enumerate().map(|(i, r)| (i, r.as_slice())).collect();
        let entries = preview(&peer, named.iter().copied());
        let expected: Vec<(usize, (ShareMode, bool))> = named
            .iter()
            .filter_map(|(i, rules)| visible_mode(&peer, rules).map(|view| (*i, view)))
            .collect();
        let got: Vec<(usize, (ShareMode, bool))> =
            entries.iter().map(|e| (e.name, (e.mode, e.read_only))).collect();
        prop_assert_eq!(got, expected);
        for entry in entries {
            prop_assert_eq!(resources[entry.name].get(entry.grant.rule_index), Some(&entry.grant.rule));
            prop_assert!(oracle_covers(&entry.grant.rule, &peer, Action::See));
        }
    }

    /// Audiences and modes print and parse back to themselves, and serialize to the same words.
    #[test]
    fn words_round_trip(rule in rule()) {
        prop_assert_eq!(rule.audience.to_string().parse::<Audience>(), Ok(rule.audience));
        prop_assert_eq!(rule.mode.to_string().parse::<ShareMode>(), Ok(rule.mode));
        let json = serde_json::to_value(rule).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&json["audience"], &serde_json::Value::String(rule.audience.to_string()));
        prop_assert_eq!(&json["mode"], &serde_json::Value::String(rule.mode.to_string()));
        let bytes = postcard::to_stdvec(&rule).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: ShareRule = postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, rule);
    }
}
