//! The receiving side of a push: may the cluster offering new versions of a resource we mirror
//! write them into our mirror? Push is checked here as well as at the owner, so neither side alone
//! can force content onto the other.

use std::fmt;

use causeway_proto::ClusterId;
use serde::{Deserialize, Serialize};

use crate::peer::PeerRelation;

/// "We mirror this resource from `origin`", as far as receiving pushes is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subscription {
    /// The cluster that owns the resource we mirror.
    pub origin: ClusterId,
    /// Whether we take pushed versions, or only the ones we pull ourselves: the setting of our
    /// link to `origin` (`link set PEER --accept-pushes on|off`, off by default).
    pub accept_push: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushDecision {
    Accept,
    Refuse(PushRefusal),
}

impl PushDecision {
    pub fn is_accepted(&self) -> bool {
        matches!(self, PushDecision::Accept)
    }
}

impl fmt::Display for PushDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushDecision::Accept => f.write_str("accepted"),
            PushDecision::Refuse(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// Why a pushed offer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum PushRefusal {
    #[error("the sender belongs to no known cluster")]
    UnknownSender,
    #[error("this cluster has no link to the sending cluster {cluster}")]
    SenderNotLinked { cluster: ClusterId },
    #[error("this cluster takes no pushes of that name")]
    NotSubscribed,
    #[error("the resource is mirrored from {origin}, not from the sender {sender}")]
    WrongOrigin { origin: ClusterId, sender: ClusterId },
    #[error(
        "this cluster does not accept pushes from you (its admin can allow them with `causeway link set PEER --accept-pushes on`)"
    )]
    PushNotAccepted,
}

/// Whether to accept versions pushed by `from` for the mirror described by `subscription`
/// (`None`: we mirror no such resource). Accepted only from the mirror's origin, through a link
/// of ours, and when the mirror takes pushes.
pub fn accept_push(from: &PeerRelation, subscription: Option<&Subscription>) -> PushDecision {
    let refuse = PushDecision::Refuse;
    let sender = match from {
        PeerRelation::Unknown => return refuse(PushRefusal::UnknownSender),
        // An inbound-only peer is not one we chose to trust with writes into our state.
        PeerRelation::Unlinked(cluster) => {
            return refuse(PushRefusal::SenderNotLinked { cluster: *cluster });
        }
        PeerRelation::Linked(cluster) => *cluster,
    };
    let Some(subscription) = subscription else {
        return refuse(PushRefusal::NotSubscribed);
    };
    if subscription.origin != sender {
        return refuse(PushRefusal::WrongOrigin {
            origin: subscription.origin,
            sender,
        });
    }
    if !subscription.accept_push {
        return refuse(PushRefusal::PushNotAccepted);
    }
    PushDecision::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: ClusterId = ClusterId([1; 32]);
    const OTHER: ClusterId = ClusterId([2; 32]);

    #[test]
    fn accept_push_table() {
        let takes_push = Subscription {
            origin: ORIGIN,
            accept_push: true,
        };
        let pull_only = Subscription {
            accept_push: false,
            ..takes_push
        };
        let table = [
            (PeerRelation::Linked(ORIGIN), Some(takes_push), PushDecision::Accept),
            (
                PeerRelation::Linked(ORIGIN),
                Some(pull_only),
                PushDecision::Refuse(PushRefusal::PushNotAccepted),
            ),
            (
                PeerRelation::Linked(ORIGIN),
                None,
                PushDecision::Refuse(PushRefusal::NotSubscribed),
            ),
            (
                PeerRelation::Linked(OTHER),
                Some(takes_push),
                PushDecision::Refuse(PushRefusal::WrongOrigin {
                    origin: ORIGIN,
                    sender: OTHER,
                }),
            ),
            (
                PeerRelation::Unlinked(ORIGIN),
                Some(takes_push),
                PushDecision::Refuse(PushRefusal::SenderNotLinked { cluster: ORIGIN }),
            ),
            (
                PeerRelation::Unknown,
                Some(takes_push),
                PushDecision::Refuse(PushRefusal::UnknownSender),
            ),
        ];
        for (from, subscription, expected) in table {
            assert_eq!(accept_push(&from, subscription.as_ref()), expected, "{from}");
        }
    }
}
