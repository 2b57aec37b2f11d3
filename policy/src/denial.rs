//! Why a request was denied: the precise reason for the owner's logs and `sync status`, and the
//! coarser answer a peer may be told without learning that an unshared resource exists.

use causeway_proto::ClusterId;
use serde::{Deserialize, Serialize};

use crate::{peer::Action, rule::ShareMode};

/// The precise reason for a denial, for the owner only.
///
/// The variants fall into two groups, and [`decide`](crate::decide) keeps them apart: the first
/// four mean the peer may not even see the resource; the last three mean it may see the
/// resource but not do this action. [`DenyReason::peer_visible`] relies on that split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The resource does not exist here.
    #[error("no such resource")]
    UnknownResource,
    /// The endpoint maps to no known cluster and the resource has no public share.
    #[error("the endpoint belongs to no known cluster, and the resource is not shared publicly")]
    UnknownPeer,
    /// No share rule covers this peer (a resource without shares is private).
    #[error("no share rule covers this peer")]
    NoRuleForPeer,
    /// A rule names this cluster or all linked clusters, but this cluster has no link to it;
    /// the usual cause of "I shared it but they can't see it" (the link was removed, or only
    /// the peer links to us).
    #[error("a share names cluster {cluster} or linked clusters, but this cluster has no link to it")]
    NotLinked { cluster: ClusterId },
    /// An unknown endpoint may see and pull public resources, nothing more.
    #[error("unknown endpoints may only see and pull public resources, not {action}")]
    PublicViewOnly { action: Action },
    /// The most permissive share with this peer has a mode that does not allow the action.
    #[error("the share with this peer is {mode}, which does not allow {action}")]
    ModeForbids { mode: ShareMode, action: Action },
    /// Write-back was asked and every bidirectional share with this peer is read-only.
    #[error("the bidirectional share with this peer is read-only")]
    ReadOnly,
}

/// What a peer may be told about a denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum PeerVisibleDenial {
    /// The resource does not exist, or exists and is not shared with the peer: the two are
    /// indistinguishable on purpose.
    #[error("not found")]
    NotFound,
    /// The peer may see the resource but not do this action.
    #[error("forbidden")]
    Forbidden,
    /// The peer may see the resource, but its share is read-only.
    #[error("read-only")]
    ReadOnly,
}

impl DenyReason {
    /// Whether the denial means the peer may not see the resource at all.
    pub fn hides_resource(&self) -> bool {
        match self {
            DenyReason::UnknownResource
            | DenyReason::UnknownPeer
            | DenyReason::NoRuleForPeer
            | DenyReason::NotLinked { .. } => true,
            DenyReason::PublicViewOnly { .. } | DenyReason::ModeForbids { .. } | DenyReason::ReadOnly => false,
        }
    }

    /// What the asking peer may be told. Every reason that a peer which may not see the
    /// resource can get collapses into one `NotFound`, so a peer never learns that an unshared
    /// resource exists (nor why it is hidden). A peer that may see the resource learns no more
    /// than its catalog view already shows.
    pub fn peer_visible(&self) -> PeerVisibleDenial {
        match self {
            _ if self.hides_resource() => PeerVisibleDenial::NotFound,
            DenyReason::ReadOnly => PeerVisibleDenial::ReadOnly,
            _ => PeerVisibleDenial::Forbidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_visible_table() {
        let cluster = ClusterId([7; 32]);
        let table = [
            (DenyReason::UnknownResource, PeerVisibleDenial::NotFound),
            (DenyReason::UnknownPeer, PeerVisibleDenial::NotFound),
            (DenyReason::NoRuleForPeer, PeerVisibleDenial::NotFound),
            (DenyReason::NotLinked { cluster }, PeerVisibleDenial::NotFound),
            (
                DenyReason::PublicViewOnly {
                    action: Action::WriteBack,
                },
                PeerVisibleDenial::Forbidden,
            ),
            (
                DenyReason::ModeForbids {
                    mode: ShareMode::Pull,
                    action: Action::PushTo,
                },
                PeerVisibleDenial::Forbidden,
            ),
            (DenyReason::ReadOnly, PeerVisibleDenial::ReadOnly),
        ];
        for (reason, visible) in table {
            assert_eq!(reason.peer_visible(), visible, "{reason}");
        }
    }

    #[test]
    fn reasons_read_well_in_logs() {
        let reason = DenyReason::ModeForbids {
            mode: ShareMode::Pull,
            action: Action::WriteBack,
        };
        assert_eq!(
            reason.to_string(),
            "the share with this peer is pull, which does not allow write back"
        );
        assert_eq!(
            DenyReason::PublicViewOnly { action: Action::PushTo }.to_string(),
            "unknown endpoints may only see and pull public resources, not push"
        );
    }
}
