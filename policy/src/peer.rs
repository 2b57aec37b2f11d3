//! The question's other two inputs: who is asking (`PeerRelation`, as the owner sees it) and what
//! they ask to do (`Action`).

use std::fmt;

use causeway_proto::ClusterId;
use serde::{Deserialize, Serialize};

/// This cluster's relation to the asking peer, as the owner sees it.
///
/// The caller derives it from the connection's verified endpoint id and this cluster's own link
/// table; policy trusts it as given and never upgrades it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRelation {
    /// The connection's endpoint maps to no known cluster.
    Unknown,
    /// A verified cluster this cluster has no link to (it may link to us: an "inbound" peer).
    Unlinked(ClusterId),
    /// A verified cluster this cluster links to (our outbound link exists and is not removed).
    Linked(ClusterId),
}

impl PeerRelation {
    /// The verified cluster id, if any.
    pub fn cluster(&self) -> Option<ClusterId> {
        match self {
            PeerRelation::Unknown => None,
            PeerRelation::Unlinked(id) | PeerRelation::Linked(id) => Some(*id),
        }
    }
}

impl fmt::Display for PeerRelation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRelation::Unknown => f.write_str("unknown endpoint"),
            PeerRelation::Unlinked(id) => write!(f, "unlinked cluster {id}"),
            PeerRelation::Linked(id) => write!(f, "linked cluster {id}"),
        }
    }
}

/// What the peer asks to do with a resource owned by this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Learn that the resource exists (catalog listing, change notifications).
    See,
    /// Fetch the resource's content (blobs) from the owner.
    Pull,
    /// The owner offers/sends new versions to the peer.
    PushTo,
    /// The peer writes its changes back into the owner's resource.
    WriteBack,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::See, Action::Pull, Action::PushTo, Action::WriteBack];

    pub fn as_str(&self) -> &'static str {
        match self {
            Action::See => "see",
            Action::Pull => "pull",
            Action::PushTo => "push",
            Action::WriteBack => "write back",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
