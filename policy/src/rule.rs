//! Share rules: who a rule grants (`Audience`), which way content may move (`ShareMode`), and
//! whether a rule covers a given peer for a given action. Parsing and printing use the CLI's words.

use std::{fmt, str::FromStr};

use causeway_proto::ClusterId;
use serde::{Deserialize, Serialize};

use crate::peer::{Action, PeerRelation};

/// Who a share rule grants.
///
/// Serialized as its CLI word (`"public"`, `"linked"`, or the cluster id's 64 hex characters), so
/// the `shares[].with` field of `resource list --json` is the same string an admin typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Audience {
    /// One cluster, and only while this cluster links to it (see the crate docs).
    Cluster(ClusterId),
    /// Every cluster this cluster links to.
    Linked,
    /// Every verified cluster; unknown endpoints get see and pull only.
    Public,
}

impl Audience {
    /// How narrowly the audience names its grantee; when several rules grant, the narrowest wins,
    /// because it is the one the admin wrote with this peer in mind.
    pub(crate) fn specificity(&self) -> u8 {
        match self {
            Audience::Cluster(_) => 2,
            Audience::Linked => 1,
            Audience::Public => 0,
        }
    }

    /// Whether this audience includes `peer` when it asks for `action`.
    pub fn covers(&self, peer: &PeerRelation, action: Action) -> bool {
        match (self, peer) {
            // An unverified endpoint is nobody in particular: it may read what is public, and
            // must never be trusted to receive pushes or to write.
            (Audience::Public, PeerRelation::Unknown) => {
                matches!(action, Action::See | Action::Pull)
            }
            (Audience::Public, PeerRelation::Unlinked(_) | PeerRelation::Linked(_)) => true,
            (Audience::Linked, PeerRelation::Linked(_)) => true,
            // A named cluster is covered only through our own link to it: removing the link
            // withdraws every share that names it, without having to edit the shares.
            (Audience::Cluster(id), PeerRelation::Linked(peer_id)) => id == peer_id,
            (Audience::Linked | Audience::Cluster(_), _) => false,
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Audience::Cluster(id) => fmt::Display::fmt(id, f),
            Audience::Linked => f.write_str("linked"),
            Audience::Public => f.write_str("public"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid share audience {input:?}: expected \"public\", \"linked\" or a cluster id (64 hex characters)")]
pub struct AudienceParseError {
    pub input: String,
}

impl FromStr for Audience {
    type Err = AudienceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        if word.eq_ignore_ascii_case("public") {
            Ok(Audience::Public)
        } else if word.eq_ignore_ascii_case("linked") {
            Ok(Audience::Linked)
        } else {
            word.parse::<ClusterId>()
                .map(Audience::Cluster)
                .map_err(|_| AudienceParseError {
                    // Bounded so a pasted blob cannot flood the error message.
                    input: s.chars().take(80).collect(),
                })
        }
    }
}

impl From<Audience> for String {
    fn from(audience: Audience) -> String {
        audience.to_string()
    }
}

impl TryFrom<String> for Audience {
    type Error = AudienceParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Which way content may move between the owner and the grantee.
///
/// Variants are declared from least to most permissive, and each includes the one before:
/// every mode lets the grantee pull, `Push` also lets the owner push to it, `Bidirectional`
/// also lets it write back. The derived `Ord` follows that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareMode {
    Pull,
    Push,
    Bidirectional,
}

impl ShareMode {
    pub const ALL: [ShareMode; 3] = [ShareMode::Pull, ShareMode::Push, ShareMode::Bidirectional];

    pub fn as_str(&self) -> &'static str {
        match self {
            ShareMode::Pull => "pull",
            ShareMode::Push => "push",
            ShareMode::Bidirectional => "bidirectional",
        }
    }

    /// Whether the mode lets `action` happen, before `read_only` is considered.
    pub fn allows(&self, action: Action) -> bool {
        match action {
            Action::See | Action::Pull => true,
            Action::PushTo => matches!(self, ShareMode::Push | ShareMode::Bidirectional),
            Action::WriteBack => matches!(self, ShareMode::Bidirectional),
        }
    }
}

impl fmt::Display for ShareMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid share mode {input:?}: expected \"pull\", \"push\" or \"bidirectional\"")]
pub struct ShareModeParseError {
    pub input: String,
}

impl FromStr for ShareMode {
    type Err = ShareModeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        ShareMode::ALL
            .into_iter()
            .find(|mode| word.eq_ignore_ascii_case(mode.as_str()))
            .ok_or_else(|| ShareModeParseError {
                input: s.chars().take(80).collect(),
            })
    }
}

/// Why a share rule may not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ShareRuleError {
    #[error(
        "a public share cannot allow write-back: any cluster can make a key and write into this \
         resource; add --read-only, or share bidirectionally with a linked cluster or `linked`"
    )]
    PublicWriteBack,
}

/// One share rule on a resource: `share NAME --with AUDIENCE --mode MODE [--read-only]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShareRule {
    pub audience: Audience,
    pub mode: ShareMode,
    /// Forbids write-back even under a bidirectional mode; the other modes never allow it anyway.
    pub read_only: bool,
}

impl ShareRule {
    pub fn new(audience: Audience, mode: ShareMode, read_only: bool) -> Self {
        Self {
            audience,
            mode,
            read_only,
        }
    }

    /// Whether the rule's audience includes `peer` for `action` (see [`Audience::covers`]).
    pub fn covers(&self, peer: &PeerRelation, action: Action) -> bool {
        self.audience.covers(peer, action)
    }

    /// Whether the rule's mode and read-only flag let `action` happen, whoever asks.
    pub fn permits(&self, action: Action) -> bool {
        self.mode.allows(action) && !(action == Action::WriteBack && self.read_only_in_effect())
    }

    /// Whether the rule is read-only in effect: it says `read-only`, or it is a public
    /// bidirectional rule. Anyone can make a cluster key, so a public rule never lets a peer
    /// write into this cluster, even one stored before [`ShareRule::check`] refused such rules.
    pub fn read_only_in_effect(&self) -> bool {
        self.read_only || (self.audience == Audience::Public && self.mode == ShareMode::Bidirectional)
    }

    /// Whether the rule may be stored: a public bidirectional rule must be read-only.
    pub fn check(&self) -> Result<(), ShareRuleError> {
        if self.audience == Audience::Public && self.mode == ShareMode::Bidirectional && !self.read_only {
            return Err(ShareRuleError::PublicWriteBack);
        }
        Ok(())
    }

    /// Whether this one rule, on its own, grants `action` to `peer`.
    pub fn grants(&self, peer: &PeerRelation, action: Action) -> bool {
        self.covers(peer, action) && self.permits(action)
    }
}

impl fmt::Display for ShareRule {
    /// `linked pull`, `public bidirectional read-only`, `<hex> push`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.audience, self.mode)?;
        if self.read_only {
            f.write_str(" read-only")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "abababababababababababababababababababababababababababababababab";

    #[test]
    fn audience_words_round_trip() {
        let cluster = Audience::Cluster(ClusterId([0xab; 32]));
        for (text, audience) in [
            ("public", Audience::Public),
            ("linked", Audience::Linked),
            (HEX, cluster),
        ] {
            assert_eq!(text.parse::<Audience>(), Ok(audience));
            assert_eq!(audience.to_string(), text);
        }
        assert_eq!(" Public ".parse::<Audience>(), Ok(Audience::Public));
        assert_eq!(HEX.to_uppercase().parse::<Audience>(), Ok(cluster));
    }

    #[test]
    fn audience_errors_name_the_choices() {
        for bad in ["", "everyone", "abab", &format!("{HEX}00")] {
            let err = bad.parse::<Audience>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains("\"public\""), "{message}");
            assert!(message.contains("64 hex"), "{message}");
        }
        let long = "x".repeat(500);
        assert_eq!(long.parse::<Audience>().unwrap_err().input.len(), 80);
    }

    #[test]
    fn mode_words_round_trip() {
        for mode in ShareMode::ALL {
            assert_eq!(mode.to_string().parse::<ShareMode>(), Ok(mode));
        }
        assert_eq!("BIDIRECTIONAL".parse::<ShareMode>(), Ok(ShareMode::Bidirectional));
        let err = "bidi".parse::<ShareMode>().unwrap_err().to_string();
        assert!(err.contains("\"bidi\"") && err.contains("\"bidirectional\""), "{err}");
    }

    #[test]
    fn modes_are_ordered_by_permissiveness() {
        assert!(ShareMode::Pull < ShareMode::Push);
        assert!(ShareMode::Push < ShareMode::Bidirectional);
    }

    #[test]
    fn rule_display_reads_like_the_cli() {
        let rule = ShareRule::new(Audience::Public, ShareMode::Bidirectional, true);
        assert_eq!(rule.to_string(), "public bidirectional read-only");
        let rule = ShareRule::new(Audience::Linked, ShareMode::Pull, false);
        assert_eq!(rule.to_string(), "linked pull");
    }

    #[test]
    fn permits_table() {
        use Action as A;
        use ShareMode as M;
        // (mode, read_only, action, permitted)
        let table = [
            (M::Pull, false, A::See, true),
            (M::Pull, false, A::Pull, true),
            (M::Pull, false, A::PushTo, false),
            (M::Pull, false, A::WriteBack, false),
            (M::Push, false, A::Pull, true),
            (M::Push, false, A::PushTo, true),
            (M::Push, false, A::WriteBack, false),
            (M::Bidirectional, false, A::PushTo, true),
            (M::Bidirectional, false, A::WriteBack, true),
            (M::Bidirectional, true, A::See, true),
            (M::Bidirectional, true, A::Pull, true),
            (M::Bidirectional, true, A::PushTo, true),
            (M::Bidirectional, true, A::WriteBack, false),
        ];
        for (mode, read_only, action, permitted) in table {
            let rule = ShareRule::new(Audience::Linked, mode, read_only);
            assert_eq!(rule.permits(action), permitted, "{rule} {action}");
        }
    }

    #[test]
    fn public_rules_never_permit_write_back() {
        let public = ShareRule::new(Audience::Public, ShareMode::Bidirectional, false);
        assert_eq!(public.check(), Err(ShareRuleError::PublicWriteBack));
        assert!(!public.permits(Action::WriteBack), "a stored one still never grants it");
        assert!(public.permits(Action::PushTo));
        assert!(
            ShareRule::new(Audience::Public, ShareMode::Bidirectional, true)
                .check()
                .is_ok()
        );
        assert!(
            ShareRule::new(Audience::Linked, ShareMode::Bidirectional, false)
                .check()
                .is_ok()
        );
    }

    #[test]
    fn covers_table() {
        let a = ClusterId([1; 32]);
        let b = ClusterId([2; 32]);
        let unknown = PeerRelation::Unknown;
        let unlinked_a = PeerRelation::Unlinked(a);
        let linked_a = PeerRelation::Linked(a);
        // (audience, peer, actions covered, actions not covered)
        let table: [(Audience, &PeerRelation, &[Action], &[Action]); 9] = [
            (
                Audience::Public,
                &unknown,
                &[Action::See, Action::Pull],
                &[Action::PushTo, Action::WriteBack],
            ),
            (Audience::Public, &unlinked_a, &Action::ALL, &[]),
            (Audience::Public, &linked_a, &Action::ALL, &[]),
            (Audience::Linked, &unknown, &[], &Action::ALL),
            (Audience::Linked, &unlinked_a, &[], &Action::ALL),
            (Audience::Linked, &linked_a, &Action::ALL, &[]),
            (Audience::Cluster(a), &unlinked_a, &[], &Action::ALL),
            (Audience::Cluster(a), &linked_a, &Action::ALL, &[]),
            (Audience::Cluster(b), &linked_a, &[], &Action::ALL),
        ];
        for (audience, peer, covered, not_covered) in table {
            for &action in covered {
                assert!(
                    audience.covers(peer, action),
                    "{audience} should cover {peer} for {action}"
                );
            }
            for &action in not_covered {
                assert!(
                    !audience.covers(peer, action),
                    "{audience} should not cover {peer} for {action}"
                );
            }
        }
    }
}
