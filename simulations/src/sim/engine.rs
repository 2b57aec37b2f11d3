//! One seeded run: builds the world from the seed, then processes events in time order
//! (deliveries, the leaders' periodic loops, workload actions and faults), checking the
//! invariants after every step. After `steps` events the workload stops and the network heals
//! (partitions end, crashed members restart, nothing is lost any more); the run continues for
//! `settle_ms` of simulated time and the eventual invariants are checked.
//!
//! Every event and decision is written to the trace, whose digest identifies the run bit for
//! bit (all randomness comes from the run's one `Rng`; all maps are ordered).

use std::{collections::BTreeMap, fmt::Write as _};

use causeway_policy::{Audience, PeerRelation, ShareMode, ShareRule};
use causeway_sync::status::{Direction, Transfer};

use super::{
    config::{Quirk, SimConfig},
    invariants::{Checker, Effect, Violation},
    msg::Body,
    net::{Addr, Envelope, Event, Network, Queue},
    rng::Rng,
    world::{Cid, Cluster, ClusterState, PendingKind, Refs, Resource},
};

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub end_ms: u64,
    /// FNV-1a of the whole trace.
    pub digest: u64,
    pub violations: Vec<Violation>,
    /// How often each interesting path ran (to show that runs exercise what they check).
    pub counts: BTreeMap<&'static str, u64>,
}

/// The event trace: hashed always, printed when asked.
pub struct Trace {
    hash: u64,
    print: bool,
    buf: String,
}

impl Trace {
    fn new(print: bool) -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            print,
            buf: String::new(),
        }
    }

    pub fn record(&mut self, now: u64, what: std::fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = write!(self.buf, "{now:>7} {what}");
        for b in self.buf.bytes().chain([b'\n']) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.print {
            println!("{}", self.buf);
        }
    }
}

pub struct Engine {
    pub(super) seed: u64,
    pub(super) cfg: SimConfig,
    pub(super) now: u64,
    pub(super) rng: Rng,
    pub(super) queue: Queue,
    pub(super) net: Network,
    pub(super) clusters: Vec<Cluster>,
    /// Content by id, as every cluster would read it (content addressing: an id names the same
    /// repository everywhere; a cluster *has* it only once it received it).
    pub(super) blobs: BTreeMap<String, Refs>,
    pub(super) next_commit: u32,
    pub(super) next_req: u64,
    pub(super) next_instance: u64,
    /// What the current step did that the checker judges.
    pub(super) effects: Vec<Effect>,
    pub(super) trace: Trace,
    pub(super) workload_on: bool,
    pub(super) counts: BTreeMap<&'static str, u64>,
}

/// Writes a line to the trace.
macro_rules! note {
    ($engine:expr, $($arg:tt)*) => {
        $engine.trace.record($engine.now, format_args!($($arg)*))
    };
}
pub(super) use note;

impl Engine {
    pub fn new(seed: u64, cfg: SimConfig, print: bool) -> Self {
        let net = Network::new(cfg.net);
        let mut e = Self {
            seed,
            now: 0,
            rng: Rng::new(seed),
            queue: Queue::default(),
            net,
            clusters: Vec::new(),
            blobs: BTreeMap::new(),
            next_commit: 0,
            next_req: 0,
            next_instance: 0,
            effects: Vec::new(),
            trace: Trace::new(print),
            workload_on: true,
            counts: BTreeMap::new(),
            cfg,
        };
        e.build();
        e
    }

    /// The initial federation: every cluster with 1-3 members and 1-3 published resources under
    /// random shares, links between random pairs.
    fn build(&mut self) {
        let n = self.cfg.clusters;
        for c in 0..n {
            // Policy messages print cluster keys; this maps them to the trace's names.
            note!(self, "c{c} is cluster {}", super::world::cluster_id(c));
        }
        for c in 0..n {
            let size = self.rng.range(1, 3) as u8;
            let mut state = ClusterState::default();
            for k in 0..self.rng.range(1, 3) {
                let read_only = self.rng.chance(200);
                let refs = Refs::from([("main".to_string(), vec![self.commit()])]);
                let content = self.store(&refs);
                let shares = (0..self.rng.range(0, 2))
                    .map(|_| self.random_rule(c, read_only))
                    .collect();
                let resource = Resource {
                    kind: "forge/repo".into(),
                    owner: "forge".into(),
                    version: 1,
                    content: Some(content),
                    shares,
                    read_only,
                    refs,
                };
                state.resources.insert(format!("c{c}r{k}"), resource);
            }
            for p in (0..n).filter(|&p| p != c) {
                if self.rng.chance(600) {
                    state.links.insert(p);
                }
            }
            let accept_pushes = self.rng.chance(700);
            note!(
                self,
                "build c{c}: {size} members, accept_pushes {accept_pushes}, {state:?}"
            );
            self.clusters.push(Cluster::new(size, state, accept_pushes));
        }
        for c in 0..n {
            self.elect(c);
            let offset = self.rng.below(self.cfg.tick_ms);
            self.queue.push(offset, Event::Tick(c));
        }
        self.queue.push(0, Event::Workload);
    }

    /// Counts one run of an interesting path.
    pub(super) fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    /// Cross-checks a policy decision the node is about to act on (invariant 7).
    pub(super) fn audit_policy(&mut self, relation: &PeerRelation, rules: Option<&[ShareRule]>) {
        if let Some(detail) = super::invariants::oracle::disagreement(relation, rules) {
            self.effects.push(Effect::PolicyDisagrees(detail));
        }
    }

    /// A fresh commit id.
    pub(super) fn commit(&mut self) -> u32 {
        self.next_commit += 1;
        self.next_commit
    }

    /// Stores a repository state as content; returns its id.
    pub(super) fn store(&mut self, refs: &Refs) -> String {
        let id = format!("blob{}", self.blobs.len() + 1);
        self.blobs.insert(id.clone(), refs.clone());
        id
    }

    pub(super) fn random_rule(&mut self, owner: Cid, read_only_origin: bool) -> ShareRule {
        let others: Vec<Cid> = (0..self.cfg.clusters).filter(|&p| p != owner).collect();
        let audience = match self.rng.weighted(&[4, 3, 2]) {
            0 => Audience::Cluster(super::world::cluster_id(*self.rng.pick(&others).unwrap_or(&owner))),
            1 => Audience::Linked,
            _ => Audience::Public,
        };
        let mode = *self.rng.pick(&ShareMode::ALL).unwrap_or(&ShareMode::Pull);
        let read_only = read_only_origin || self.rng.chance(300);
        ShareRule::new(audience, mode, read_only)
    }

    pub(super) fn next_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Re-elects in cluster `c` and notes a change of leader.
    pub(super) fn elect(&mut self, c: Cid) {
        let (now, resync) = (self.now, self.cfg.health.catalog_resync_ms);
        if let Some(leader) = self.clusters[c as usize].elect(now, &mut self.next_instance, resync) {
            self.count("leader changes");
            note!(self, "c{c} leader -> {leader:?}");
        }
    }

    pub(super) fn addr(&self, c: Cid, m: u8) -> Addr {
        Addr {
            cluster: c,
            member: m,
            incarnation: self.clusters[c as usize].members[m as usize].incarnation,
        }
    }

    pub(super) fn alive(&self, a: Addr) -> bool {
        let m = &self.clusters[a.cluster as usize].members[a.member as usize];
        m.up && m.incarnation == a.incarnation
    }

    /// Sends from member `from` to cluster `to`, dialing its members in order as a peer tries
    /// the endpoints of a card; false when none can be reached (the dial fails).
    pub(super) fn send(&mut self, from: (Cid, u8), to: Cid, body: Body) -> bool {
        if self.net.cut(from.0, to) {
            note!(self, "c{}.{} -> c{to}: unreachable (partition)", from.0, from.1);
            return false;
        }
        let Some(m) = self.clusters[to as usize].members.iter().position(|m| m.up) else {
            note!(self, "c{}.{} -> c{to}: unreachable (all down)", from.0, from.1);
            return false;
        };
        let env = Envelope {
            from: self.addr(from.0, from.1),
            to: self.addr(to, m as u8),
            body,
        };
        self.transmit(env);
        true
    }

    /// Answers a request on its connection.
    pub(super) fn reply(&mut self, request_from: Addr, request_to: Addr, body: Body) {
        self.transmit(Envelope {
            from: request_to,
            to: request_from,
            body,
        });
    }

    fn transmit(&mut self, env: Envelope) {
        let delays = self.net.transit(&mut self.rng);
        self.count("net: sent");
        match delays.len() {
            0 => {
                self.count("net: lost");
                note!(self, "lost {:?}", env.body);
            }
            1 => {}
            _ => self.count("net: duplicated"),
        }
        for d in delays {
            self.queue.push(self.now + d, Event::Deliver(env.clone()));
        }
    }

    /// Whether the member at `at` may answer a peer's read (see `Quirk::LocalReads`).
    pub(super) fn can_serve(&self, at: Addr) -> bool {
        self.cfg.has(Quirk::LocalReads) || self.clusters[at.cluster as usize].in_majority(at.member)
    }

    /// The leader's `sync status` row for (`peer`, `name`, `direction`) in cluster `c`.
    pub(super) fn transfer(&mut self, c: Cid, peer: Cid, name: &str, direction: Direction) -> Option<&mut Transfer> {
        let now = self.now;
        let cluster = &mut self.clusters[c as usize];
        let synced = match (direction, self.cfg.has(Quirk::FreshRows)) {
            (Direction::Pull, false) => cluster
                .committed
                .mirrors
                .get(&(peer, name.to_string()))
                .map(|m| m.version),
            _ => None,
        };
        let (_, live) = cluster.leader_live()?;
        Some(live.transfer(peer, name, direction, now, synced))
    }

    /// Takes the request `req` pending on the leader at `at`. An answer that reaches a member
    /// which is no longer that leader (or a later incarnation of it) finds nothing.
    pub(super) fn take_pending(&mut self, at: Addr, req: u64) -> Option<PendingKind> {
        if !self.alive(at) || self.clusters[at.cluster as usize].leader != Some(at.member) {
            return None;
        }
        let live = self.clusters[at.cluster as usize].members[at.member as usize]
            .live
            .as_mut()?;
        live.pending.remove(&req).map(|p| p.kind)
    }

    /// Runs to the end and checks.
    pub fn run(mut self) -> Outcome {
        let mut checker = Checker::new(&self.clusters);
        let mut step = 0u64;
        let mut settle_until: Option<u64> = None;
        loop {
            if settle_until.is_none() && step >= self.cfg.steps {
                self.heal_everything();
                settle_until = Some(self.now + self.cfg.settle_ms);
            }
            let Some(t) = self.queue.peek_time() else { break };
            if settle_until.is_some_and(|u| t > u) {
                break;
            }
            let Some((t, event)) = self.queue.pop() else { break };
            self.now = t;
            step += 1;
            self.dispatch(event);
            let effects = std::mem::take(&mut self.effects);
            checker.after_step(step, self.now, &self.cfg, &self.clusters, &effects);
            if !checker.violations.is_empty() {
                break;
            }
        }
        if checker.violations.is_empty() {
            let checked = checker.at_end(step, self.now, &self.cfg, &self.clusters);
            *self.counts.entry("end: mirrors checked current").or_default() += checked;
            let active = self.active_links();
            *self.counts.entry("end: links active").or_default() += active;
        }
        for v in &checker.violations {
            note!(self, "VIOLATION {v}");
        }
        Outcome {
            seed: self.seed,
            steps: step,
            end_ms: self.now,
            digest: self.trace.hash,
            violations: checker.violations,
            counts: self.counts,
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver(env) => self.deliver(env),
            Event::Tick(c) => {
                self.queue.push(self.now + self.cfg.tick_ms, Event::Tick(c));
                self.tick(c);
            }
            Event::Workload => {
                if self.workload_on {
                    self.workload();
                    let (lo, hi) = self.cfg.workload_gap_ms;
                    let gap = self.rng.range(lo, hi);
                    self.queue.push(self.now + gap, Event::Workload);
                }
            }
            Event::DialFailed {
                at,
                instance,
                peer,
                seq,
            } => self.on_dial_failed(at, instance, peer, seq),
            Event::Restart(c, m) => self.restart(c, m),
            Event::HealClusters(a, b) => {
                note!(self, "heal c{a} <-> c{b}");
                self.net.heal(a, b);
            }
            Event::HealMembers(c) => {
                note!(self, "heal inside c{c}");
                for m in &mut self.clusters[c as usize].members {
                    m.group = 0;
                }
                self.elect(c);
            }
        }
    }

    fn deliver(&mut self, env: Envelope) {
        let Envelope { from, to, body } = env;
        if !self.alive(from) || !self.alive(to) || self.net.cut(from.cluster, to.cluster) {
            self.count("net: dropped in flight");
            note!(self, "dropped {from:?} -> {to:?} {body:?}");
            return;
        }
        note!(self, "deliver {from:?} -> {to:?} {body:?}");
        match body {
            Body::Heartbeat { instance, seq } => self.on_heartbeat(from, to, instance, seq),
            Body::HeartbeatAck {
                instance,
                seq,
                links_back,
            } => self.on_heartbeat_ack(to, from.cluster, instance, seq, links_back),
            Body::CatalogChanged { changes, verdicts } => self.on_catalog_changed(from, to, changes, verdicts),
            Body::CatalogQuery { req } => self.on_catalog_query(from, to, req),
            Body::Catalog { req, answer } => self.on_catalog(from, to, req, answer),
            Body::PullRequest { req, name } => self.on_pull_request(from, to, req, name),
            Body::PullReply { req, answer } => self.on_pull_reply(from, to, req, answer),
            Body::PushOffer { name, version, verdict } => self.on_push_offer(from, to, name, version, verdict),
            Body::WriteBack { req, name, refs } => self.on_write_back(from, to, req, name, refs),
            Body::WriteBackAnswer { req, answer } => self.on_write_back_answer(to, req, answer),
        }
    }

    /// The leader's periodic loops.
    fn tick(&mut self, c: Cid) {
        let Some(leader) = self.clusters[c as usize].leader else {
            return;
        };
        self.expire_requests(c);
        self.heartbeats(c, leader);
        self.notify_changes(c, leader);
        self.resync(c, leader);
        self.reconcile(c, leader);
    }

    /// Gives up requests that were not answered in time.
    fn expire_requests(&mut self, c: Cid) {
        let now = self.now;
        let Some((_, live)) = self.clusters[c as usize].leader_live() else {
            return;
        };
        let expired: Vec<(u64, PendingKind)> = live
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, p)| (*r, p.kind.clone()))
            .collect();
        for (req, _) in &expired {
            live.pending.remove(req);
        }
        for (req, kind) in expired {
            note!(self, "c{c} request {req} timed out: {kind:?}");
            let row = match &kind {
                PendingKind::Pull { origin, name } => self.transfer(c, *origin, name, Direction::Pull),
                PendingKind::WriteBack { origin, name } => self.transfer(c, *origin, name, Direction::Push),
                PendingKind::Resync { .. } => None,
            };
            if let Some(t) = row {
                t.failed("timed out".into(), now);
            }
        }
    }

    /// Links that read `active` on their cluster's leader now.
    fn active_links(&self) -> u64 {
        let cfg = &self.cfg;
        self.clusters
            .iter()
            .filter_map(|c| c.leader.and_then(|l| c.members[l as usize].live.as_ref()))
            .flat_map(|live| live.health.values())
            .filter(|h| {
                super::link::reported_state(h, self.now, cfg) == causeway::federation::health::LinkState::Active
            })
            .count() as u64
    }

    /// The workload is over: partitions end, crashed members restart, nothing is lost.
    fn heal_everything(&mut self) {
        note!(self, "HEAL: workload stops, network heals");
        self.workload_on = false;
        self.net.heal_all();
        self.net.cfg.loss_permille = 0;
        // Healed links have ordinary delays (still random, so still reordering) but no more
        // multi-second stalls.
        self.net.cfg.tail_permille = 0;
        for c in 0..self.clusters.len() {
            for m in &mut self.clusters[c].members {
                m.up = true;
                m.group = 0;
            }
            self.elect(c as Cid);
        }
    }
}
