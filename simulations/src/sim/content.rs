//! Content between clusters: pulls (the leader's reconcile loop pulls every mirror whose
//! origin's view differs from it; the owner asks `decide(.., Pull)` when the request
//! arrives and fails closed), push offers (the receiver asks `accept_push`, then pulls like any
//! other version), and write-backs from bidirectional mirrors (the owner asks
//! `decide(.., WriteBack)`, then moves its refs all-or-nothing by fast-forward and publishes).
//! A mirror moves each ref only by fast-forward and refuses divergent ones, as the node's git
//! apply does; every transfer is tracked with the real `Transfer` status.

use causeway_catalog::resources::ChangeKind;
use causeway_policy::{Action, Decision, Subscription, accept_push, decide};
use causeway_sync::status::Direction;

use super::{
    config::Quirk,
    engine::{Engine, note},
    invariants::{Effect, Item, Verdict, oracle},
    msg::{Body, Pulled},
    net::Addr,
    world::{Cid, ClusterState, PendingKind, Refs, cluster_id, fast_forward},
};

/// What recording a pulled version did to the mirror.
enum Recorded {
    Moved { version: u64, refused: Vec<String> },
    NotNewer { version: u64 },
}

/// `RecordMirror`: a newer or different version replaces the mirror's; each ref moves only by fast-forward
/// (local commits ahead of the origin stay; a ref the origin rewrote is refused) unless the
/// `force_mirror_refs` fault overwrites it.
fn record_mirror(s: &mut ClusterState, origin: Cid, p: &Pulled, force: bool) -> Recorded {
    let m = s.mirrors.entry((origin, p.name.clone())).or_default();
    // As the node's `RecordMirror`: refused only when neither newer nor different.
    if m.version >= p.version && m.content == p.content {
        return Recorded::NotNewer { version: m.version };
    }
    let mut refused = Vec::new();
    for (r, offered) in &p.refs {
        match m.refs.get(r) {
            Some(cur) if fast_forward(offered, cur) && !fast_forward(cur, offered) => {}
            Some(cur) if !fast_forward(cur, offered) && !force => refused.push(r.clone()),
            _ => {
                m.refs.insert(r.clone(), offered.clone());
            }
        }
    }
    m.version = p.version;
    m.content = p.content.clone();
    Recorded::Moved {
        version: p.version,
        refused,
    }
}

/// The refs an origin would have after accepting `offered`: all or nothing, by fast-forward.
fn merge_write_back(current: &Refs, offered: &Refs) -> Result<Refs, Vec<String>> {
    let mut merged = current.clone();
    let mut divergent = Vec::new();
    for (r, new) in offered {
        match current.get(r) {
            Some(cur) if fast_forward(cur, new) => {
                merged.insert(r.clone(), new.clone());
            }
            // The offer is behind the origin on this ref: nothing to move.
            Some(cur) if fast_forward(new, cur) => {}
            Some(_) => divergent.push(r.clone()),
            None => {
                merged.insert(r.clone(), new.clone());
            }
        }
    }
    if divergent.is_empty() {
        Ok(merged)
    } else {
        Err(divergent)
    }
}

/// Whether a refusal is a policy denial (the peer-visible words of `PeerVisibleDenial`).
fn is_denial(reason: &str) -> bool {
    matches!(reason, "not found" | "forbidden" | "read-only")
}

impl Engine {
    /// Reconcile: pull every mirror whose origin's view shows another version.
    pub(super) fn reconcile(&mut self, c: Cid, leader: u8) {
        let state = self.clusters[c as usize].committed.clone();
        for ((origin, name), m) in &state.mirrors {
            let Some(e) = state.views.get(origin).and_then(|v| v.get(name)) else {
                continue;
            };
            let behind = if self.cfg.has(Quirk::VersionRestart) {
                e.version > m.version || (e.version == m.version && e.content != m.content)
            } else {
                // Any difference: the origin may have removed and registered the name again.
                e.version != m.version || e.content != m.content
            };
            let pulling = self.clusters[c as usize]
                .leader_live()
                .is_none_or(|(_, live)| live.pulling(*origin, name));
            if behind && !pulling {
                self.start_pull(c, leader, *origin, name.clone(), Some(e.version));
            }
        }
    }

    /// The leader of `c` asks `origin` for `name` (a new mirror when it has none yet).
    pub(super) fn start_pull(&mut self, c: Cid, leader: u8, origin: Cid, name: String, version: Option<u64>) {
        let (now, timeout) = (self.now, self.cfg.request_timeout_ms);
        let req = self.next_req();
        let sent = self.send(
            (c, leader),
            origin,
            Body::PullRequest {
                req,
                name: name.clone(),
            },
        );
        if sent {
            self.add_pending(
                c,
                req,
                PendingKind::Pull {
                    origin,
                    name: name.clone(),
                },
                now + timeout,
            );
        }
        // As the node's `pull_inner`, a transfer starts only for a version newer than the
        // mirror's (a late or duplicated offer of an older one starts nothing).
        let held = self.clusters[c as usize]
            .committed
            .mirrors
            .get(&(origin, name.clone()))
            .map(|m| m.version);
        let version = version.filter(|v| held.is_none_or(|h| *v > h));
        let Some(t) = self.transfer(c, origin, &name, Direction::Pull) else {
            return;
        };
        match (sent, version) {
            (true, Some(v)) => t.start(v, None, now),
            (true, None) => {}
            (false, _) => t.failed(format!("cannot reach c{origin}"), now),
        }
    }

    /// The owner serves a pull: policy first, on this member's replica; fail closed.
    pub(super) fn on_pull_request(&mut self, from: Addr, to: Addr, req: u64, name: String) {
        let peer = from.cluster;
        if !self.can_serve(to) {
            self.count("read refused: not in the majority");
            let answer = Err("unavailable: not in the majority".to_string());
            return self.reply(from, to, Body::PullReply { req, answer });
        }
        let owner = &self.clusters[to.cluster as usize];
        let (replica, committed) = (owner.members[to.member as usize].state.clone(), owner.committed.clone());
        let resource = replica.resources.get(&name);
        let rules = resource.map(|r| r.shares.as_slice());
        let decision = decide(&replica.relation(peer), rules, Action::Pull);
        self.audit_policy(&replica.relation(peer), rules);
        let answer = match (decision, resource) {
            (Decision::Grant(_), Some(r)) => Ok(r),
            (_, Some(r)) if self.cfg.faults.skip_pull_policy => Ok(r),
            (Decision::Deny(reason), _) => Err(reason),
            (Decision::Grant(_), None) => Err(causeway_policy::DenyReason::UnknownResource),
        };
        let answer = match answer {
            Ok(r) => {
                self.count("pull: served");
                Ok(Pulled {
                    name: name.clone(),
                    version: r.version,
                    content: r.content.clone(),
                    // The content is what its id names, wherever it is read.
                    refs: r
                        .content
                        .as_ref()
                        .and_then(|c| self.blobs.get(c))
                        .cloned()
                        .unwrap_or_default(),
                    verdict: oracle::pull_verdict(&committed, peer, &name),
                })
            }
            Err(reason) => {
                self.count("pull: denied by policy");
                note!(self, "c{} denies c{peer} pull of {name}: {reason}", to.cluster);
                Err(reason.peer_visible().to_string())
            }
        };
        self.reply(from, to, Body::PullReply { req, answer });
    }

    pub(super) fn on_pull_reply(&mut self, from: Addr, to: Addr, req: u64, answer: Result<Pulled, String>) {
        let origin = from.cluster;
        let Some(PendingKind::Pull { origin: o, name }) = self.take_pending(to, req) else {
            return;
        };
        if o != origin {
            return;
        }
        let (now, force) = (self.now, self.cfg.faults.force_mirror_refs);
        let p = match answer {
            Ok(p) => p,
            Err(reason) => {
                if let Some(t) = self.transfer(to.cluster, origin, &name, Direction::Pull) {
                    if is_denial(&reason) {
                        t.denied(reason, now)
                    } else {
                        t.failed(reason, now)
                    }
                }
                return;
            }
        };
        self.effects.push(Effect::Received {
            at: to.cluster,
            from: origin,
            name: name.clone(),
            item: Item::Content,
            verdict_at_send: p.verdict.clone(),
        });
        // The row is looked up before recording, so a new one starts from the version held so far.
        if self.transfer(to.cluster, origin, &name, Direction::Pull).is_none() {
            return;
        }
        self.restart_row_below(to.cluster, origin, &name, p.version);
        let recorded = self.clusters[to.cluster as usize].write(to.member, |s| record_mirror(s, origin, &p, force));
        match &recorded {
            Some(Recorded::Moved { refused, .. }) if refused.is_empty() => self.count("mirror: new version recorded"),
            Some(Recorded::Moved { .. }) => self.count("mirror: divergent refs refused"),
            _ => {}
        }
        let Some(t) = self.transfer(to.cluster, origin, &name, Direction::Pull) else {
            return;
        };
        match recorded {
            None => t.failed("mirror not recorded: no quorum".into(), now),
            Some(Recorded::NotNewer { version }) => t.synced(version, now),
            Some(Recorded::Moved { version, refused }) if refused.is_empty() => {
                t.synced(version, now);
            }
            Some(Recorded::Moved { version, refused }) => {
                t.synced(version, now);
                t.failed(
                    format!("divergent refs refused, not overwritten: {}", refused.join(", ")),
                    now,
                );
            }
        }
    }

    /// `version` is what the origin held when it answered. Within one registration versions
    /// only grow, so a row that synced or wanted more belongs to a resource the origin removed
    /// before registering the name again: it starts over (unless `Quirk::VersionRestart`).
    fn restart_row_below(&mut self, c: Cid, origin: Cid, name: &str, version: u64) {
        if self.cfg.has(Quirk::VersionRestart) {
            return;
        }
        let Some((_, live)) = self.clusters[c as usize].leader_live() else {
            return;
        };
        let key = (origin, name.to_string(), Direction::Pull);
        let newest = live
            .transfers
            .get(&key)
            .and_then(|t| t.synced_version().max(t.wanted_version()));
        if newest.is_some_and(|v| v > version) {
            live.transfers.remove(&key);
            self.count("mirror: origin versions restarted");
        }
    }

    /// The receiving side of a push: `accept_push`, then the version is pulled like any other.
    pub(super) fn on_push_offer(&mut self, from: Addr, to: Addr, name: String, version: u64, verdict: Verdict) {
        let origin = from.cluster;
        self.effects.push(Effect::Received {
            at: to.cluster,
            from: origin,
            name: name.clone(),
            item: Item::Offer,
            verdict_at_send: verdict,
        });
        let cluster = &self.clusters[to.cluster as usize];
        let replica = &cluster.members[to.member as usize].state;
        let subscription = Subscription {
            origin: cluster_id(origin),
            // The link's `accept_pushes` (modelled per cluster: all of its links alike) decides
            // for a mirror already held and a new one alike.
            accept_push: cluster.accept_pushes,
        };
        let decision = accept_push(&replica.relation(origin), Some(&subscription));
        note!(
            self,
            "c{} push offer of c{origin}/{name} v{version}: {decision}",
            to.cluster
        );
        if !decision.is_accepted() {
            self.count("push offer: refused by receiver");
            return;
        }
        self.count("push offer: accepted");
        // The node routes the pull to its leader; it must be reachable from this member.
        let cluster = &mut self.clusters[to.cluster as usize];
        let Some(leader) = cluster.leader else { return };
        if cluster.members[leader as usize].group != cluster.members[to.member as usize].group {
            return;
        }
        if cluster
            .leader_live()
            .is_some_and(|(_, live)| !live.pulling(origin, &name))
        {
            self.start_pull(to.cluster, leader, origin, name, Some(version));
        }
    }

    /// The leader of `c` offers its mirror's refs back to the origin.
    pub(super) fn start_write_back(&mut self, c: Cid, origin: Cid, name: String) {
        let (now, timeout) = (self.now, self.cfg.request_timeout_ms);
        let Some(leader) = self.clusters[c as usize].leader else {
            return;
        };
        let Some(m) = self.clusters[c as usize]
            .committed
            .mirrors
            .get(&(origin, name.clone()))
            .cloned()
        else {
            return;
        };
        let req = self.next_req();
        let body = Body::WriteBack {
            req,
            name: name.clone(),
            refs: m.refs,
        };
        let sent = self.send((c, leader), origin, body);
        if sent {
            self.add_pending(
                c,
                req,
                PendingKind::WriteBack {
                    origin,
                    name: name.clone(),
                },
                now + timeout,
            );
        }
        let Some(t) = self.transfer(c, origin, &name, Direction::Push) else {
            return;
        };
        if sent {
            t.start(m.version + 1, None, now);
        } else {
            t.failed(format!("cannot reach c{origin}"), now);
        }
    }

    /// The origin's side of a write-back: policy on this member's replica (fail closed, a
    /// read-only share refuses), then all-or-nothing fast-forward, then a new version.
    pub(super) fn on_write_back(&mut self, from: Addr, to: Addr, req: u64, name: String, refs: Refs) {
        let (peer, now) = (from.cluster, self.now);
        if !self.can_serve(to) {
            self.count("read refused: not in the majority");
            let answer = Err("unavailable: not in the majority".to_string());
            return self.reply(from, to, Body::WriteBackAnswer { req, answer });
        }
        let owner = &self.clusters[to.cluster as usize];
        let (replica, committed) = (owner.members[to.member as usize].state.clone(), owner.committed.clone());
        let resource = replica.resources.get(&name);
        let rules = resource.map(|r| r.shares.as_slice());
        let decision = decide(&replica.relation(peer), rules, Action::WriteBack);
        self.audit_policy(&replica.relation(peer), rules);
        let skip = self.cfg.faults.skip_write_back_policy && resource.is_some();
        if let (Decision::Deny(reason), false) = (decision, skip) {
            self.count(if reason == causeway_policy::DenyReason::ReadOnly {
                "write-back: refused read-only"
            } else {
                "write-back: refused by policy"
            });
            note!(self, "c{} refuses c{peer}'s write-back of {name}: {reason}", to.cluster);
            let answer = Err(reason.peer_visible().to_string());
            return self.reply(from, to, Body::WriteBackAnswer { req, answer });
        }
        // The repository moves on the committed state (through the leader).
        let Some(current) = committed.resources.get(&name) else {
            let answer = Err("not found".to_string());
            return self.reply(from, to, Body::WriteBackAnswer { req, answer });
        };
        let merged = match merge_write_back(&current.refs, &refs) {
            Ok(m) if m == current.refs => return self.reply(from, to, Body::WriteBackAnswer { req, answer: Ok(()) }),
            Ok(m) => m,
            Err(divergent) => {
                self.count("write-back: refused divergent");
                let answer = Err(format!(
                    "divergent refs refused, not overwritten: {}",
                    divergent.join(", ")
                ));
                return self.reply(from, to, Body::WriteBackAnswer { req, answer });
            }
        };
        let allowed = oracle::write_back_allowed(&committed, peer, &name);
        let content = self.store(&merged);
        let written = self.clusters[to.cluster as usize].write(to.member, |s| {
            let r = s.resources.get_mut(&name)?;
            let before = r.shares.clone();
            r.refs = merged;
            r.version += 1;
            r.content = Some(content);
            s.record_change(&name, ChangeKind::Published, before, now);
            Some(())
        });
        let answer = match written {
            Some(Some(())) => {
                self.count("write-back: applied");
                self.effects.push(Effect::WrittenBack {
                    origin: to.cluster,
                    name,
                    by: peer,
                    allowed,
                });
                Ok(())
            }
            _ => Err("new version not recorded".to_string()),
        };
        self.reply(from, to, Body::WriteBackAnswer { req, answer });
    }

    pub(super) fn on_write_back_answer(&mut self, to: Addr, req: u64, answer: Result<(), String>) {
        let now = self.now;
        let Some(PendingKind::WriteBack { origin, name }) = self.take_pending(to, req) else {
            return;
        };
        let Some(t) = self.transfer(to.cluster, origin, &name, Direction::Push) else {
            return;
        };
        match answer {
            Ok(()) => {
                let v = t.wanted_version().unwrap_or(0);
                t.synced(v, now);
            }
            Err(reason) if is_denial(&reason) => t.denied(reason, now),
            Err(reason) => t.failed(reason, now),
        }
    }
}
