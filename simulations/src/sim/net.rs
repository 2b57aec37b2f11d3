//! The simulated network and clock: a time-ordered event queue, per-message delay (with a slow
//! tail that reorders), loss and duplication, and partitions between clusters. Partitions
//! between members of one cluster and crashes live with the members (`world.rs`); whether a
//! message is delivered is decided when it arrives (`Engine::deliver`), so a partition or a
//! crash that happens while it is in flight drops it, as a dying connection would.

use std::{
    cmp::Ordering,
    collections::{BTreeSet, BinaryHeap},
};

use super::{config::NetConfig, msg::Body, rng::Rng, world::Cid};

/// One incarnation of one member: a restarted process is a different address, so answers to
/// requests its previous life sent are dropped like a closed connection's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr {
    pub cluster: Cid,
    pub member: u8,
    pub incarnation: u32,
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Addr,
    pub to: Addr,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub enum Event {
    Deliver(Envelope),
    /// The leader's periodic loops of one cluster.
    Tick(Cid),
    /// The next workload action.
    Workload,
    /// A heartbeat could not be sent (no member of the peer reachable).
    DialFailed {
        at: Addr,
        instance: u64,
        peer: Cid,
        seq: u64,
    },
    Restart(Cid, u8),
    HealClusters(Cid, Cid),
    HealMembers(Cid),
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Earliest first; ties in insertion order, so the run never depends on heap internals.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Events by simulated time (ms).
#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    pub fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|s| (s.at, s.event))
    }

    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.at)
    }
}

/// Links between clusters and what happens to a message on them.
pub struct Network {
    pub cfg: NetConfig,
    /// Cut cluster pairs, stored as (low, high).
    cuts: BTreeSet<(Cid, Cid)>,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Self {
        Self {
            cfg,
            cuts: BTreeSet::new(),
        }
    }

    fn pair(a: Cid, b: Cid) -> (Cid, Cid) {
        (a.min(b), a.max(b))
    }

    pub fn cut(&self, a: Cid, b: Cid) -> bool {
        a != b && self.cuts.contains(&Self::pair(a, b))
    }

    pub fn partition(&mut self, a: Cid, b: Cid) -> bool {
        self.cuts.insert(Self::pair(a, b))
    }

    pub fn heal(&mut self, a: Cid, b: Cid) {
        self.cuts.remove(&Self::pair(a, b));
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
    }

    /// The delays of the copies of one message that arrive: none when it is lost, two when it
    /// is duplicated.
    pub fn transit(&self, rng: &mut Rng) -> Vec<u64> {
        if rng.chance(self.cfg.loss_permille) {
            return Vec::new();
        }
        let copies = if rng.chance(self.cfg.dup_permille) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        if rng.chance(self.cfg.tail_permille) {
            rng.range(self.cfg.delay_max_ms, self.cfg.tail_max_ms.max(self.cfg.delay_max_ms))
        } else {
            rng.range(self.cfg.delay_min_ms, self.cfg.delay_max_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_by_time_then_insertion() {
        let mut q = Queue::default();
        q.push(5, Event::Tick(1));
        q.push(3, Event::Tick(2));
        q.push(5, Event::Tick(3));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|(t, _)| t).collect();
        assert_eq!(order, [3, 5, 5]);
        q.push(5, Event::Tick(1));
        q.push(5, Event::Tick(2));
        assert!(matches!(q.pop(), Some((5, Event::Tick(1)))));
    }

    #[test]
    fn partitions_are_symmetric() {
        let mut n = Network::new(crate::sim::config::SimConfig::default().net);
        assert!(n.partition(2, 1));
        assert!(n.cut(1, 2) && n.cut(2, 1) && !n.cut(1, 1));
        n.heal(1, 2);
        assert!(!n.cut(2, 1));
    }
}
