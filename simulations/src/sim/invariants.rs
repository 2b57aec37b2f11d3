//! What must hold, checked after every step of every run, and once more after the network has
//! healed and the run has settled:
//!
//! 1. **Policy at the moment of sending.** Every catalog entry, content or push offer a cluster
//!    receives was allowed, when the owner sent it, by the owner's *committed* policy
//!    (`visible_mode` for the receiver; every mode lets a peer see and pull, push needs push or
//!    bidirectional). Handlers record the oracle's verdict when they send; receiving anything
//!    sent without it is a violation. A share revoked while a message is in flight is fine,
//!    but after settling every cluster's view of each peer must be exactly what that peer's
//!    policy lets it see now (revocations eventually reach it).
//! 2. **Read-only origins.** A resource changes because of a peer's write-back only when its
//!    origin is not read-only and a writable bidirectional rule covers that peer.
//! 3. **Eventual delivery.** After settling, every mirror whose origin still lets the mirroring
//!    cluster pull it (and which that cluster still links to, so it hears of new versions)
//!    holds the origin's current version and content.
//! 4. **Fast-forward only.** A mirror's refs (and an origin's) only ever fast-forward.
//! 5. **Link health.** A link never reads `active` when no acknowledgement has reached its
//!    health for longer than `HealthConfig::active_window_ms`; and after settling every link
//!    reads `active`, and `mutual` exactly when the peer links back.
//! 6. **Sync status agrees.** After settling, a delivered mirror's pull row (the real
//!    `Transfer`) shows the mirror's version with no lag, and is not `stalled`, `pending` or
//!    `transferring` (the last attempt may read `failed` or `denied`: the rows keep the outcome
//!    of the latest attempt).
//! 7. **Policy agrees with itself.** Every `decide` the node makes agrees with `visible_mode`
//!    (the catalog view) and with a plain scan of the rules, for every action.
//!
//! The oracles below deliberately re-derive each answer from the committed state with as little
//! of the modelled node's code as possible.

use std::{fmt, rc::Rc};

use causeway::federation::health::LinkState;
use causeway_policy::{Action, PeerRelation, ShareMode, ShareRule, decide, visible_mode};
use causeway_proto::fed::CatalogEntry;
use causeway_sync::status::{Direction, TransferState};

use super::{
    config::SimConfig,
    world::{Cid, Cluster, ClusterState, Refs, fast_forward},
};

/// The oracle's verdict on a send, taken when it was sent: why not, if not granted.
pub type Verdict = Result<(), String>;

/// What a cluster got from an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Entry,
    Content,
    Offer,
}

/// Something a step did that an invariant judges.
#[derive(Clone, Debug)]
pub enum Effect {
    /// `at` took in `item` about `from`'s resource `name`.
    Received {
        at: Cid,
        from: Cid,
        name: String,
        item: Item,
        verdict_at_send: Verdict,
    },
    /// `decide` disagreed with the view or with a plain scan of the rules.
    PolicyDisagrees(String),
    /// `origin`'s resource `name` changed because `by` wrote back.
    WrittenBack {
        origin: Cid,
        name: String,
        by: Cid,
        allowed: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub step: u64,
    pub at_ms: u64,
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} t={}ms [{}] {}",
            self.step, self.at_ms, self.invariant, self.detail
        )
    }
}

/// The oracles: the owner's committed policy, asked directly.
pub mod oracle {
    use super::*;

    /// The mode and read-only flag `peer` may see for `name` under `owner`'s committed policy.
    pub fn visible(owner: &ClusterState, peer: Cid, name: &str) -> Option<(ShareMode, bool)> {
        let r = owner.resources.get(name)?;
        visible_mode(&owner.relation(peer), &r.shares)
    }

    fn shown(v: Option<(ShareMode, bool)>) -> String {
        match v {
            None => "nothing".into(),
            Some((mode, ro)) => format!("{mode}{}", if ro { " read-only" } else { "" }),
        }
    }

    /// Sending `entry` to `peer` is allowed when it may see the resource, with that mode.
    pub fn entry_verdict(owner: &ClusterState, peer: Cid, entry: &CatalogEntry) -> Verdict {
        let sent = entry.mode.parse::<ShareMode>().ok().map(|m| (m, entry.read_only));
        let policy = visible(owner, peer, &entry.name);
        if sent.is_some() && sent == policy {
            return Ok(());
        }
        Err(format!(
            "sent as {}, the committed policy shows c{peer} {}",
            shown(sent),
            shown(policy)
        ))
    }

    /// Whether `peer` may pull `name` (every mode lets a peer that sees it pull).
    pub fn pull_granted(owner: &ClusterState, peer: Cid, name: &str) -> bool {
        visible(owner, peer, name).is_some()
    }

    pub fn pull_verdict(owner: &ClusterState, peer: Cid, name: &str) -> Verdict {
        match visible(owner, peer, name) {
            Some(_) => Ok(()),
            None => Err(format!("content served, the committed policy shows c{peer} nothing")),
        }
    }

    /// The owner may offer `name` to `peer` under a push or bidirectional share.
    pub fn push_verdict(owner: &ClusterState, peer: Cid, name: &str) -> Verdict {
        match visible(owner, peer, name) {
            Some((ShareMode::Push | ShareMode::Bidirectional, _)) => Ok(()),
            other => Err(format!("offered, the committed policy shows c{peer} {}", shown(other))),
        }
    }

    /// Whether a rule lets its audience write back: not read-only, and not public (anyone can
    /// make a cluster key).
    pub fn writable(rule: &ShareRule) -> bool {
        !rule.read_only && rule.audience != causeway_policy::Audience::Public
    }

    /// Whether `peer` may change `name` by writing back: the origin is not read-only and some
    /// writable bidirectional rule covers the peer. Written without `decide`, on purpose.
    pub fn write_back_allowed(owner: &ClusterState, peer: Cid, name: &str) -> bool {
        let Some(r) = owner.resources.get(name) else {
            return false;
        };
        let relation = owner.relation(peer);
        !r.read_only
            && r.shares.iter().any(|rule| {
                rule.mode == ShareMode::Bidirectional && writable(rule) && rule.covers(&relation, Action::WriteBack)
            })
    }

    /// Where `decide` disagrees, for any action, with the catalog view (`visible_mode`: every
    /// mode lets a peer that sees the resource pull it, push and bidirectional let the owner
    /// push, only writable bidirectional lets it write back) or with a plain scan of the rules.
    pub fn disagreement(relation: &PeerRelation, rules: Option<&[ShareRule]>) -> Option<String> {
        let view = rules.and_then(|r| visible_mode(relation, r));
        let scan = |action: Action, modes: &[ShareMode], writable: bool| {
            rules.is_some_and(|rules| {
                rules.iter().any(|rule| {
                    rule.covers(relation, action) && modes.contains(&rule.mode) && (!writable || self::writable(rule))
                })
            })
        };
        let verified = *relation != PeerRelation::Unknown;
        let all = [ShareMode::Pull, ShareMode::Push, ShareMode::Bidirectional];
        let pushing = [ShareMode::Push, ShareMode::Bidirectional];
        let expected = [
            (Action::See, view.is_some(), scan(Action::See, &all, false)),
            (Action::Pull, view.is_some(), scan(Action::Pull, &all, false)),
            (
                Action::PushTo,
                verified && matches!(view, Some((ShareMode::Push | ShareMode::Bidirectional, _))),
                verified && scan(Action::PushTo, &pushing, false),
            ),
            (
                Action::WriteBack,
                verified && view == Some((ShareMode::Bidirectional, false)),
                verified && scan(Action::WriteBack, &[ShareMode::Bidirectional], true),
            ),
        ];
        expected.into_iter().find_map(|(action, by_view, by_scan)| {
            let decided = decide(relation, rules, action);
            (decided.is_granted() != by_view || decided.is_granted() != by_scan).then(|| {
                format!("{relation}, rules {rules:?}: decide({action}) = {decided}, view {view:?}, scan {by_scan}")
            })
        })
    }

    /// The whole view `peer` should hold of `owner` once everything has settled.
    pub fn expected_view(owner: &ClusterState, peer: Cid) -> Vec<CatalogEntry> {
        let relation: PeerRelation = owner.relation(peer);
        owner
            .resources
            .iter()
            .filter_map(|(name, r)| {
                visible_mode(&relation, &r.shares).map(|(mode, read_only)| CatalogEntry {
                    name: name.clone(),
                    kind: r.kind.clone(),
                    owner: r.owner.clone(),
                    version: r.version,
                    content: r.content.clone(),
                    mode: mode.to_string(),
                    read_only,
                })
            })
            .collect()
    }
}

/// The per-run checker: keeps what it needs from the previous step.
pub struct Checker {
    /// Each cluster's committed state as of the previous step.
    last: Vec<Rc<ClusterState>>,
    pub violations: Vec<Violation>,
    step: u64,
    now: u64,
}

impl Checker {
    pub fn new(clusters: &[Cluster]) -> Self {
        Self {
            last: clusters.iter().map(|c| c.committed.clone()).collect(),
            violations: Vec::new(),
            step: 0,
            now: 0,
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        self.violations.push(Violation {
            step: self.step,
            at_ms: self.now,
            invariant,
            detail,
        });
    }

    /// After every step: the step's effects, refs, link health.
    pub fn after_step(&mut self, step: u64, now: u64, cfg: &SimConfig, clusters: &[Cluster], effects: &[Effect]) {
        self.step = step;
        self.now = now;
        for e in effects {
            self.effect(e);
        }
        for (c, cluster) in clusters.iter().enumerate() {
            // Only a cluster whose committed state changed can have moved a ref.
            if !Rc::ptr_eq(&self.last[c], &cluster.committed) {
                let old = std::mem::replace(&mut self.last[c], cluster.committed.clone());
                self.refs_forward(c as Cid, &old, &cluster.committed);
            }
            self.link_health(c as Cid, cluster, cfg, now);
        }
    }

    fn effect(&mut self, e: &Effect) {
        match e {
            Effect::Received {
                at,
                from,
                name,
                item,
                verdict_at_send: Err(why),
            } => self.fail(
                "1 policy",
                format!(
                    "c{at} received {item:?} of c{from}/{name}, which c{from}'s policy did not grant when sent: {why}"
                ),
            ),
            Effect::WrittenBack {
                origin,
                name,
                by,
                allowed: false,
            } => self.fail(
                "2 read-only",
                format!("c{origin}/{name} changed by a write-back from c{by} that its policy does not allow"),
            ),
            Effect::PolicyDisagrees(detail) => self.fail("7 policy agreement", detail.clone()),
            _ => {}
        }
    }

    fn refs_forward(&mut self, c: Cid, old: &ClusterState, new: &ClusterState) {
        let mut bad = Vec::new();
        let mut compare = |what: String, before: &Refs, after: &Refs| {
            for (r, hist) in before {
                match after.get(r) {
                    Some(now) if fast_forward(hist, now) => {}
                    now => bad.push(format!("{what} ref {r}: {hist:?} -> {now:?}")),
                }
            }
        };
        for ((origin, name), m) in &old.mirrors {
            if let Some(n) = new.mirrors.get(&(*origin, name.clone())) {
                compare(format!("mirror c{c}:c{origin}/{name}"), &m.refs, &n.refs);
            }
        }
        for (name, r) in &old.resources {
            if let Some(n) = new.resources.get(name) {
                compare(format!("origin c{c}/{name}"), &r.refs, &n.refs);
            }
        }
        for b in bad {
            self.fail("4 fast-forward", b);
        }
    }

    fn link_health(&mut self, c: Cid, cluster: &Cluster, cfg: &SimConfig, now: u64) {
        let Some(live) = cluster.leader.and_then(|l| cluster.members[l as usize].live.as_ref()) else {
            return;
        };
        let window = cfg.health.active_window_ms();
        let mut bad = Vec::new();
        for (peer, h) in &live.health {
            if super::link::reported_state(h, now, cfg) != LinkState::Active {
                continue;
            }
            let silent = h.last_ack_ms.map(|t| now.saturating_sub(t));
            if silent.is_none_or(|s| s > window) {
                bad.push(format!(
                    "link c{c}->c{peer} reads active but no ack for {silent:?} ms (window {window} ms)"
                ));
            }
        }
        for b in bad {
            self.fail("5 link health", b);
        }
    }

    /// After the network healed and the run settled.
    /// Returns how many mirrors were expected to be current (and so checked).
    pub fn at_end(&mut self, step: u64, now: u64, cfg: &SimConfig, clusters: &[Cluster]) -> u64 {
        self.step = step;
        self.now = now;
        let mut checked = 0;
        for (b, cluster) in clusters.iter().enumerate() {
            let b = b as Cid;
            let state = &cluster.committed;
            // 1, eventually: each view is exactly what the peer's policy allows now.
            for (a, owner) in clusters.iter().enumerate() {
                let a = a as Cid;
                if a == b {
                    continue;
                }
                let held: Vec<&CatalogEntry> = state.views.get(&a).map(|v| v.values().collect()).unwrap_or_default();
                let expected = if state.links.contains(&a) {
                    oracle::expected_view(&owner.committed, b)
                } else {
                    Vec::new()
                };
                if held.iter().copied().ne(expected.iter()) {
                    let names = |v: &mut dyn Iterator<Item = &CatalogEntry>| {
                        v.map(|e| {
                            format!(
                                "{}@{}:{}{}",
                                e.name,
                                e.version,
                                e.mode,
                                if e.read_only { ":ro" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                    };
                    self.fail(
                        "1 policy (eventual)",
                        format!(
                            "c{b}'s view of c{a} is {:?}, c{a}'s policy now shows {:?}",
                            names(&mut held.iter().copied()),
                            names(&mut expected.iter())
                        ),
                    );
                }
            }
            // 3 and 6: delivered mirrors.
            let live = cluster.leader.and_then(|l| cluster.members[l as usize].live.as_ref());
            for ((a, name), m) in &state.mirrors {
                let owner = &clusters[*a as usize].committed;
                let Some(origin) = owner.resources.get(name) else {
                    continue;
                };
                if !state.links.contains(a) || !oracle::pull_granted(owner, b, name) {
                    continue;
                }
                checked += 1;
                if (m.version, &m.content) != (origin.version, &origin.content) {
                    self.fail(
                        "3 eventual delivery",
                        format!(
                            "mirror c{b}:c{a}/{name} holds v{} {:?}, origin has v{} {:?}",
                            m.version, m.content, origin.version, origin.content
                        ),
                    );
                    continue;
                }
                let row = live.and_then(|l| l.transfers.get(&(*a, name.clone(), Direction::Pull)));
                if let Some(t) = row {
                    let s = t.status(now, &cfg.status);
                    // The last attempt may have failed (or been denied while the share was
                    // revoked), but a current mirror must not read as behind or still moving.
                    let ok = s.lag_ms == 0
                        && s.version == m.version
                        && matches!(
                            s.state,
                            TransferState::Synced | TransferState::Failed | TransferState::Denied
                        );
                    if !ok {
                        self.fail(
                            "6 sync status",
                            format!(
                                "mirror c{b}:c{a}/{name} at v{} but sync status reads {} v{} lag {} ({:?})",
                                m.version, s.state, s.version, s.lag_ms, s.reason
                            ),
                        );
                    }
                }
            }
        }
        self.links_settled(now, cfg, clusters);
        checked
    }

    /// 5b: after settling every link is active and knows whether the peer links back.
    fn links_settled(&mut self, now: u64, cfg: &SimConfig, clusters: &[Cluster]) {
        let mut bad = Vec::new();
        for (c, cluster) in clusters.iter().enumerate() {
            let Some(live) = cluster.leader.and_then(|l| cluster.members[l as usize].live.as_ref()) else {
                bad.push(format!("c{c} has no leader after healing"));
                continue;
            };
            for &peer in &cluster.committed.links {
                let Some(h) = live.health.get(&peer) else {
                    bad.push(format!("link c{c}->c{peer} has no health"));
                    continue;
                };
                let state = super::link::reported_state(h, now, cfg);
                let links_back = clusters[peer as usize].committed.links.contains(&(c as Cid));
                let mutual = h.link.mutual(now, &cfg.health);
                if state != LinkState::Active || mutual != links_back {
                    bad.push(format!(
                        "link c{c}->c{peer} reads {state}, mutual {mutual}, but the peer is up and links back: {links_back}"
                    ));
                }
            }
        }
        for b in bad {
            self.fail("5 link health (settled)", b);
        }
    }
}
