//! Who may speak `causeway/raft/1` with this node, and what each may ask: the current Raft
//! membership only, plus, while a freshly joined node has not yet learned any membership, the
//! voters it was told about at its join, for the leader's first appends and nothing else.

use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use causeway_proto::EndpointKey;

use crate::types::MemberNode;
use crate::wire::RaftRequest;

/// What a remote endpoint is to this node right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// In the current (possibly joint) membership, voter or learner.
    Member,
    /// One of the voters this node was given when it joined, while it knows no membership yet.
    /// Only a leader's appends and snapshots are accepted from it.
    JoinPeer,
    /// Anyone else, a removed member included.
    Stranger,
}

impl Standing {
    /// Whether this standing may open or keep a `causeway/raft/1` connection.
    pub fn may_connect(self) -> bool {
        self != Standing::Stranger
    }

    /// Whether this standing may make `request`. A join peer may only replicate to this node:
    /// no votes (a learner does not vote) and no forwarded writes or membership changes.
    pub fn may_ask(self, request: &RaftRequest) -> bool {
        match self {
            Standing::Member => true,
            Standing::JoinPeer => matches!(request, RaftRequest::Append(_) | RaftRequest::Snapshot { .. }),
            Standing::Stranger => false,
        }
    }
}

/// The join peers of a node that joined and has not yet learned the membership.
///
/// The smallest set that lets a joiner start: its first appends come from whichever member
/// leads when the learner is added, which may not be the member that redeemed the ticket, and
/// leadership may move before the first append arrives. Only voters can lead, so the voters
/// named in the join answer are that set. It is consulted only while no membership is known, and
/// emptied for good once one is.
#[derive(Debug, Default)]
pub(crate) struct JoinPeers(Mutex<BTreeSet<EndpointKey>>);

impl JoinPeers {
    pub(crate) fn new(peers: BTreeSet<EndpointKey>) -> Self {
        Self(Mutex::new(peers))
    }

    pub(crate) fn contains(&self, peer: &EndpointKey) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(peer)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Forgets every join peer: the membership is known and alone decides from now on.
    pub(crate) fn forget(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The standing of `peer` under the node's current memberships, given its join peers.
///
/// Both the effective membership (the newest, maybe not yet committed) and the last committed
/// one count: a member being removed stays one until its removal commits, so that a leader
/// removing itself can still have the change acknowledged and committed, and a node being added
/// counts from the moment it is appended.
pub(crate) fn standing_under(
    memberships: &[&openraft::Membership<EndpointKey, MemberNode>],
    join_peers: &JoinPeers,
    peer: &EndpointKey,
) -> Standing {
    if memberships.iter().any(|m| m.get_node(peer).is_some()) {
        return Standing::Member;
    }
    let none_known = memberships.iter().all(|m| m.nodes().next().is_none());
    if none_known && join_peers.contains(peer) {
        return Standing::JoinPeer;
    }
    Standing::Stranger
}

/// A log line that an outsider can provoke at will, written at most once per `every`, with the
/// count of the ones left out since: refusals must not let anyone flood the log.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left out before it.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, skipped) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_writes_one_line_per_interval_and_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..10 {
            assert_eq!(limit.allow(), None);
        }
        let limit = LogLimit::new(Duration::ZERO);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), Some(0));
    }

    #[test]
    fn join_peers_count_only_while_no_membership_is_known() {
        let (a, b, x) = (EndpointKey([1; 32]), EndpointKey([2; 32]), EndpointKey([3; 32]));
        let peers = JoinPeers::new(BTreeSet::from([a, x]));
        let none = openraft::Membership::<EndpointKey, MemberNode>::default();
        assert_eq!(standing_under(&[&none, &none], &peers, &x), Standing::JoinPeer);
        assert_eq!(standing_under(&[&none, &none], &peers, &b), Standing::Stranger);
        // Once a membership is known, a join peer outside it is a stranger.
        let known = openraft::Membership::<EndpointKey, MemberNode>::new_with_defaults(
            vec![BTreeSet::from([a, b])],
            Vec::<EndpointKey>::new(),
        );
        assert_eq!(standing_under(&[&known, &none], &peers, &a), Standing::Member);
        assert_eq!(standing_under(&[&known, &none], &peers, &x), Standing::Stranger);
        // Being removed: still in the committed membership, not in the newest.
        let without_a = openraft::Membership::<EndpointKey, MemberNode>::new_with_defaults(
            vec![BTreeSet::from([b])],
            Vec::<EndpointKey>::new(),
        );
        assert_eq!(standing_under(&[&without_a, &known], &peers, &a), Standing::Member);
        assert_eq!(
            standing_under(&[&without_a, &without_a], &peers, &a),
            Standing::Stranger
        );
        assert!(Standing::JoinPeer.may_connect());
        // A join peer replicates; it does not forward writes or membership changes.
        let forward = RaftRequest::Forward(crate::wire::ForwardRequest::RemoveMember { id: b });
        assert!(!Standing::JoinPeer.may_ask(&forward));
        assert!(Standing::Member.may_ask(&forward));
        assert!(!Standing::Stranger.may_ask(&forward));
        assert!(!Standing::Stranger.may_connect());
    }
}
