//! The modelled federation: clusters of 1-3 members, each cluster's replicated state (its own
//! resources and share rules, its links, what its peers let it see, its mirrors), the
//! in-memory state of the member that leads it, and leadership and quorum.
//!
//! Replication is modelled simply but honestly: a write commits only through a leader whose
//! partition holds a majority of the cluster's members that are up, and reaches exactly the
//! members in that partition at once. Every other member keeps the replica it last had (disks
//! survive crashes), and catches up when it is back in the majority. So a committed write is
//! never lost (any later majority overlaps the one that committed it), and a member cut off
//! from its cluster holds an old replica for as long as the partition lasts.
//!
//! A git repository is modelled as refs, each ref the list of its commit ids from the root, so
//! "fast-forward" is exactly "the old list is a prefix of the new one".

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    rc::Rc,
};

use causeway::federation::health::LinkHealth;
use causeway_catalog::resources::{Change, ChangeKind, ResourceSummary};
use causeway_policy::{PeerRelation, ShareRule};
use causeway_proto::{ClusterId, fed::CatalogEntry};
use causeway_sync::status::{Direction, Transfer};

/// A cluster's index in the run.
pub type Cid = u8;

/// The cluster key the policy sees for cluster `c`.
pub fn cluster_id(c: Cid) -> ClusterId {
    ClusterId([c + 1; 32])
}

/// Ref name → commit ids from the root.
pub type Refs = BTreeMap<String, Vec<u32>>;

/// Whether moving a ref from `old` to `new` is a fast-forward.
pub fn fast_forward(old: &[u32], new: &[u32]) -> bool {
    new.starts_with(old)
}

/// Changes kept in the replicated feed (the node keeps 100 000; the notifier never falls this
/// far behind in a run).
const MAX_CHANGES: usize = 64;

/// A resource this cluster owns.
#[derive(Clone, Debug)]
pub struct Resource {
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub content: Option<String>,
    pub shares: Vec<ShareRule>,
    /// The origin is read-only: every share rule is read-only while this is set.
    pub read_only: bool,
    pub refs: Refs,
}

/// A peer's resource replicated here.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    pub version: u64,
    pub content: Option<String>,
    /// The mirror repository: the origin's refs fast-forwarded, plus local commits.
    pub refs: Refs,
}

/// One cluster's replicated state (what its Raft log holds).
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub resources: BTreeMap<String, Resource>,
    /// Outbound links ("this cluster federates with"), pinned at once in the model.
    pub links: BTreeSet<Cid>,
    /// What each linked peer lets this cluster see, as last notified or resynced.
    pub views: BTreeMap<Cid, BTreeMap<String, CatalogEntry>>,
    /// Mirrors by (origin, name).
    pub mirrors: BTreeMap<(Cid, String), Mirror>,
    /// The change feed, newest last.
    pub changes: VecDeque<Change>,
    pub change_seq: u64,
}

impl ClusterState {
    /// How this cluster sees a verified peer: linked only through its own link.
    pub fn relation(&self, peer: Cid) -> PeerRelation {
        if self.links.contains(&peer) {
            PeerRelation::Linked(cluster_id(peer))
        } else {
            PeerRelation::Unlinked(cluster_id(peer))
        }
    }

    /// Appends the feed entry for a change to `name`, whose rules before were `shares_before`.
    pub fn record_change(&mut self, name: &str, kind: ChangeKind, shares_before: Vec<ShareRule>, now: u64) {
        self.change_seq += 1;
        let after = self.resources.get(name).map(|r| ResourceSummary {
            kind: r.kind.clone(),
            owner: r.owner.clone(),
            version: r.version,
            content: r.content.clone(),
            shares: r.shares.clone(),
        });
        self.changes.push_back(Change {
            seq: self.change_seq,
            name: name.to_string(),
            kind,
            version: after.as_ref().map_or(0, |a| a.version),
            at_ms: now,
            shares_before,
            after,
        });
        while self.changes.len() > MAX_CHANGES {
            self.changes.pop_front();
        }
    }
}

/// One link's heartbeat state on the leader, and what the checker needs to judge it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub link: LinkHealth,
    /// When an acknowledgement last reached this link's health (any sequence number).
    pub last_ack_ms: Option<u64>,
    /// When the last heartbeat event (ack, failure, poll that sent) happened.
    pub last_event_ms: u64,
    /// The heartbeat awaiting its answer and when it times out. As the node's supervisor
    /// (its `busy` set), no other heartbeat is polled on the link meanwhile.
    pub busy: Option<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingKind {
    Resync { peer: Cid },
    Pull { origin: Cid, name: String },
    WriteBack { origin: Cid, name: String },
}

#[derive(Clone, Debug)]
pub struct Pending {
    pub kind: PendingKind,
    pub deadline: u64,
}

/// The leader's in-memory state: lost when it crashes or leadership moves.
#[derive(Clone, Debug)]
pub struct Live {
    /// Distinguishes this leadership term's heartbeats from an earlier one's.
    pub instance: u64,
    pub health: BTreeMap<Cid, Health>,
    /// The change feed is notified up to here.
    pub notified_upto: u64,
    pub next_resync_ms: u64,
    /// Requests awaiting an answer, by request id.
    pub pending: BTreeMap<u64, Pending>,
    /// `sync status` rows: (peer, resource, direction).
    pub transfers: BTreeMap<(Cid, String, Direction), Transfer>,
}

impl Live {
    /// The `sync status` row, created on first use; `synced` seeds a new row with the version
    /// the replicated state already records (see `Quirk::FreshRows`).
    pub fn transfer(
        &mut self,
        peer: Cid,
        name: &str,
        direction: Direction,
        now: u64,
        synced: Option<u64>,
    ) -> &mut Transfer {
        self.transfers
            .entry((peer, name.to_string(), direction))
            .or_insert_with(|| {
                let mut t = Transfer::new(name.to_string(), format!("c{peer}"), direction, now);
                if let Some(v) = synced {
                    t.synced(v, now);
                }
                t
            })
    }

    pub fn pulling(&self, origin: Cid, name: &str) -> bool {
        self.pending
            .values()
            .any(|p| matches!(&p.kind, PendingKind::Pull { origin: o, name: n } if *o == origin && n == name))
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub up: bool,
    pub incarnation: u32,
    /// Members in the same group reach each other; all are in group 0 unless partitioned.
    pub group: u8,
    /// This member's replica.
    pub state: Rc<ClusterState>,
    /// Present only on the leader.
    pub live: Option<Live>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub leader: Option<u8>,
    /// The latest committed state.
    pub committed: Rc<ClusterState>,
    /// Whether this cluster's links take push offers (`link set PEER --accept-pushes`), the
    /// same for all of its links.
    pub accept_pushes: bool,
}

impl Cluster {
    pub fn new(size: u8, state: ClusterState, accept_pushes: bool) -> Self {
        let state = Rc::new(state);
        Self {
            members: (0..size)
                .map(|_| Member {
                    up: true,
                    incarnation: 0,
                    group: 0,
                    state: state.clone(),
                    live: None,
                })
                .collect(),
            leader: None,
            committed: state,
            accept_pushes,
        }
    }

    /// The partition group holding a majority of all members that are up, if any.
    pub fn majority_group(&self) -> Option<u8> {
        let n = self.members.len();
        let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
        for m in self.members.iter().filter(|m| m.up) {
            *counts.entry(m.group).or_default() += 1;
        }
        counts.into_iter().find(|&(_, k)| 2 * k > n).map(|(g, _)| g)
    }

    /// Whether member `m` is up and in the majority (so its replica is the committed state).
    pub fn in_majority(&self, m: u8) -> bool {
        let member = &self.members[m as usize];
        member.up && self.majority_group() == Some(member.group)
    }

    /// Re-elects after a crash, restart or partition change: the leader stays while it is in the
    /// majority, else the lowest member there takes over with fresh in-memory state. Members in
    /// the majority catch up to the committed state. Returns the new leader if it changed.
    pub fn elect(&mut self, now: u64, next_instance: &mut u64, resync_ms: u64) -> Option<Option<u8>> {
        let group = self.majority_group();
        let keep = self
            .leader
            .filter(|&l| group.is_some_and(|g| self.members[l as usize].up && self.members[l as usize].group == g));
        let leader = keep.or_else(|| {
            group.and_then(|g| {
                (0..self.members.len() as u8).find(|&i| {
                    let m = &self.members[i as usize];
                    m.up && m.group == g
                })
            })
        });
        if let Some(g) = group {
            for m in self.members.iter_mut().filter(|m| m.up && m.group == g) {
                m.state = self.committed.clone();
            }
        }
        if leader == self.leader {
            return None;
        }
        if let Some(old) = self.leader {
            self.members[old as usize].live = None;
        }
        if let Some(new) = leader {
            *next_instance += 1;
            self.members[new as usize].live = Some(Live {
                instance: *next_instance,
                health: BTreeMap::new(),
                // A new leader notifies from the current change, as the node does; anything
                // between is repaired by the resync.
                notified_upto: self.committed.change_seq,
                next_resync_ms: now + resync_ms,
                pending: BTreeMap::new(),
                transfers: BTreeMap::new(),
            });
        }
        self.leader = leader;
        Some(leader)
    }

    /// Commits a write taken by member `via`: it must be up and reach the leader (the node
    /// forwards writes to the leader). Every member in the majority gets the new state.
    pub fn write<R>(&mut self, via: u8, f: impl FnOnce(&mut ClusterState) -> R) -> Option<R> {
        let leader = self.leader?;
        let group = self.members[leader as usize].group;
        let m = &self.members[via as usize];
        if !m.up || m.group != group {
            return None;
        }
        let mut next = (*self.committed).clone();
        let result = f(&mut next);
        self.committed = Rc::new(next);
        for m in self.members.iter_mut().filter(|m| m.up && m.group == group) {
            m.state = self.committed.clone();
        }
        Some(result)
    }

    pub fn leader_live(&mut self) -> Option<(u8, &mut Live)> {
        let l = self.leader?;
        self.members[l as usize].live.as_mut().map(|live| (l, live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_and_leadership() {
        let mut c = Cluster::new(3, ClusterState::default(), true);
        let mut inst = 0;
        assert_eq!(c.elect(0, &mut inst, 10), Some(Some(0)));
        // The leader is cut off alone: the other two elect member 1.
        c.members[0].group = 1;
        assert_eq!(c.elect(1, &mut inst, 10), Some(Some(1)));
        assert!(c.members[0].live.is_none());
        // A write through the isolated member fails; through the majority it commits and
        // leaves the isolated replica behind.
        assert!(c.write(0, |s| s.change_seq = 7).is_none());
        assert!(c.write(2, |s| s.change_seq = 7).is_some());
        assert_eq!(c.members[0].state.change_seq, 0);
        assert_eq!(c.members[2].state.change_seq, 7);
        // One of the majority crashes: no majority, no leader, no writes.
        c.members[2].up = false;
        assert_eq!(c.elect(2, &mut inst, 10), Some(None));
        assert!(c.write(1, |_| ()).is_none());
        // Healing catches the stale member up.
        c.members[0].group = 0;
        assert_eq!(c.elect(3, &mut inst, 10), Some(Some(0)));
        assert_eq!(c.members[0].state.change_seq, 7);
    }

    #[test]
    fn fast_forward_is_prefix() {
        assert!(fast_forward(&[1, 2], &[1, 2, 3]));
        assert!(fast_forward(&[1, 2], &[1, 2]));
        assert!(!fast_forward(&[1, 2], &[1, 3]));
        assert!(!fast_forward(&[1, 2], &[1]));
    }
}
