//! The catalog between clusters: the leader notifies each linked peer of changes with the real
//! `Federation::delta_for` (and offers new versions under push shares, as the node's notifier
//! does), re-reads each linked peer's whole catalog every `catalog_resync_ms`, and a member
//! answers a peer's catalog query with `visible_mode` from its replica.

use std::collections::BTreeMap;

use causeway::federation::Federation;
use causeway_catalog::resources::ChangeKind;
use causeway_policy::{Action, PeerRelation, ShareMode, decide, visible_mode};
use causeway_proto::fed::CatalogEntry;

use super::{
    config::Quirk,
    engine::{Engine, note},
    invariants::{Effect, Item, Verdict, oracle},
    msg::Body,
    net::Addr,
    world::{Cid, Pending, PendingKind, Resource, cluster_id},
};

/// The entry a peer is shown for `r` under `mode` and `read_only`.
pub fn entry(name: &str, r: &Resource, mode: ShareMode, read_only: bool) -> CatalogEntry {
    CatalogEntry {
        name: name.to_string(),
        kind: r.kind.clone(),
        owner: r.owner.clone(),
        version: r.version,
        content: r.content.clone(),
        mode: mode.to_string(),
        read_only,
    }
}

impl Engine {
    /// The notifier: sends each linked peer the changes it may see since the last round.
    pub(super) fn notify_changes(&mut self, c: Cid, _leader: u8) {
        let state = self.clusters[c as usize].committed.clone();
        let Some((leader, live)) = self.clusters[c as usize].leader_live() else {
            return;
        };
        let from = live.notified_upto;
        let changes: Vec<_> = state.changes.iter().filter(|ch| ch.seq > from).collect();
        let Some(last) = changes.last().map(|ch| ch.seq) else {
            return;
        };
        live.notified_upto = last;
        let stale_offers = self.cfg.has(Quirk::StaleOffers);
        for &peer in &state.links {
            let relation = PeerRelation::Linked(cluster_id(peer));
            // Later changes to a name supersede earlier ones within the round.
            let mut deltas: BTreeMap<String, Option<CatalogEntry>> = BTreeMap::new();
            let mut offers: BTreeMap<String, u64> = BTreeMap::new();
            for ch in &changes {
                if let Some((name, e)) = Federation::delta_for(&relation, ch) {
                    deltas.insert(name, e);
                }
                // A new version under a push share is offered as well, as the node's notifier
                // does; a later change of the round without push withdraws the offer.
                // Cross-check the policy for this peer whichever way it could be related.
                if let Some(after) = &ch.after {
                    let unlinked = PeerRelation::Unlinked(cluster_id(peer));
                    for r in [&relation, &unlinked, &PeerRelation::Unknown] {
                        if let Some(detail) = oracle::disagreement(r, Some(&after.shares)) {
                            self.effects.push(Effect::PolicyDisagrees(detail));
                        }
                    }
                }
                let push = ch.after.as_ref().filter(|after| {
                    after.content.is_some() && decide(&relation, Some(&after.shares), Action::PushTo).is_granted()
                });
                match push {
                    Some(after) if matches!(ch.kind, ChangeKind::Published | ChangeKind::SharesChanged) => {
                        offers.insert(ch.name.clone(), after.version);
                    }
                    Some(_) => {}
                    None if !stale_offers => {
                        offers.remove(&ch.name);
                    }
                    None => {}
                }
            }
            if !deltas.is_empty() {
                let verdicts = deltas
                    .values()
                    .map(|e| e.as_ref().map_or(Ok(()), |e| oracle::entry_verdict(&state, peer, e)))
                    .collect();
                let changes = deltas.into_iter().collect();
                self.send((c, leader), peer, Body::CatalogChanged { changes, verdicts });
            }
            for (name, version) in offers {
                let verdict = oracle::push_verdict(&state, peer, &name);
                self.send((c, leader), peer, Body::PushOffer { name, version, verdict });
            }
        }
    }

    /// Every `catalog_resync_ms`, the leader asks each linked peer for its whole view.
    pub(super) fn resync(&mut self, c: Cid, leader: u8) {
        if self.cfg.faults.no_resync {
            return;
        }
        let (now, every, timeout) = (self.now, self.cfg.health.catalog_resync_ms, self.cfg.request_timeout_ms);
        let links = self.clusters[c as usize].committed.links.clone();
        let Some((_, live)) = self.clusters[c as usize].leader_live() else {
            return;
        };
        if now < live.next_resync_ms {
            return;
        }
        live.next_resync_ms = now + every;
        for peer in links {
            let req = self.next_req();
            if self.send((c, leader), peer, Body::CatalogQuery { req }) {
                self.add_pending(c, req, PendingKind::Resync { peer }, now + timeout);
            }
        }
    }

    pub(super) fn add_pending(&mut self, c: Cid, req: u64, kind: PendingKind, deadline: u64) {
        if let Some((_, live)) = self.clusters[c as usize].leader_live() {
            live.pending.insert(req, Pending { kind, deadline });
        }
    }

    /// A member answers a catalog query from its replica.
    pub(super) fn on_catalog_query(&mut self, from: Addr, to: Addr, req: u64) {
        if !self.can_serve(to) {
            self.count("read refused: not in the majority");
            let answer = Err("unavailable: not in the majority".to_string());
            return self.reply(from, to, Body::Catalog { req, answer });
        }
        let owner = &self.clusters[to.cluster as usize];
        let replica = owner.members[to.member as usize].state.clone();
        let relation = replica.relation(from.cluster);
        let entries = replica
            .resources
            .iter()
            .filter_map(|(name, r)| {
                let (mode, read_only) = visible_mode(&relation, &r.shares)?;
                let e = entry(name, r, mode, read_only);
                let verdict = oracle::entry_verdict(&owner.committed, from.cluster, &e);
                Some((e, verdict))
            })
            .collect();
        self.reply(
            from,
            to,
            Body::Catalog {
                req,
                answer: Ok(entries),
            },
        );
    }

    /// The resync's answer replaces the whole view of that peer.
    pub(super) fn on_catalog(
        &mut self,
        from: Addr,
        to: Addr,
        req: u64,
        answer: Result<Vec<(CatalogEntry, Verdict)>, String>,
    ) {
        let peer = from.cluster;
        if self.take_pending(to, req) != Some(PendingKind::Resync { peer }) {
            return;
        }
        let entries = match answer {
            Ok(entries) => entries,
            Err(e) => return note!(self, "c{} resync of c{peer} failed: {e}", to.cluster),
        };
        let view: BTreeMap<String, CatalogEntry> = entries.iter().map(|(e, _)| (e.name.clone(), e.clone())).collect();
        let recorded = self.clusters[to.cluster as usize].write(to.member, |s| {
            // The node keeps views of linked peers only.
            if !s.links.contains(&peer) {
                return false;
            }
            s.views.insert(peer, view);
            true
        });
        if recorded == Some(true) {
            self.count("catalog: resync recorded");
            for (e, verdict) in entries {
                self.effects.push(Effect::Received {
                    at: to.cluster,
                    from: peer,
                    name: e.name,
                    item: Item::Entry,
                    verdict_at_send: verdict,
                });
            }
        }
    }

    /// A change notification: recorded only from a peer this cluster links to.
    pub(super) fn on_catalog_changed(
        &mut self,
        from: Addr,
        to: Addr,
        changes: Vec<(String, Option<CatalogEntry>)>,
        verdicts: Vec<Verdict>,
    ) {
        let peer = from.cluster;
        let cluster = &mut self.clusters[to.cluster as usize];
        if !cluster.members[to.member as usize].state.links.contains(&peer) {
            return;
        }
        let applied = changes.clone();
        let recorded = cluster.write(to.member, |s| {
            if !s.links.contains(&peer) {
                return false;
            }
            let view = s.views.entry(peer).or_default();
            for (name, e) in applied {
                match e {
                    Some(e) => view.insert(name, e),
                    None => view.remove(&name),
                };
            }
            true
        });
        match recorded {
            Some(true) => {
                self.count("catalog: notification recorded");
                for ((name, e), verdict) in changes.into_iter().zip(verdicts) {
                    if e.is_none() {
                        self.count("catalog: entry withdrawn by notification");
                    } else {
                        self.effects.push(Effect::Received {
                            at: to.cluster,
                            from: peer,
                            name,
                            item: Item::Entry,
                            verdict_at_send: verdict,
                        });
                    }
                }
            }
            Some(false) => {}
            None => note!(self, "c{} could not record c{peer}'s changes: no quorum", to.cluster),
        }
    }
}
