//! The leader's change notifier: it wakes as soon as this member applies a committed entry (a
//! slow fallback tick covers a missed wake), folds the catalog changes each linked peer may see
//! into that peer's outbox, and delivers the outboxes concurrently: one delivery at a time per
//! peer (so a peer records its changes in order), at most [`NOTIFY_CONCURRENCY`] peers at once,
//! each over the peer's live session and under its own deadline, so a slow or dead peer holds up
//! nobody else. Push offers are decided against the newest committed policy, never against the
//! state of an earlier change.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use causeway_catalog::{
    links::LinkRecord,
    resources::{Change, ChangeKind, changes_after, last_change_seq},
};
use causeway_policy::{Action, PeerRelation, decide};
use causeway_proto::fed::{CatalogEntry, FedRequest, FedResponse, MAX_CATALOG_PAGE};
use tokio::sync::Semaphore;

use super::Federation;
use super::session;

/// Peers a leader delivers notifications to at the same time. A delivery mostly waits for the
/// peer to commit the changes through its own Raft, so many can overlap; the bound keeps a
/// cluster with thousands of links from opening thousands of streams at once.
pub const NOTIFY_CONCURRENCY: usize = 64;
/// Names pending for one peer at most. A peer that falls this far behind gets nothing more
/// until the next resync re-reads our catalog whole; memory stays bounded whatever it does.
pub const MAX_PENDING_PER_PEER: usize = 10_000;
/// Changes read from the feed at once.
const NOTIFY_BATCH: usize = 1000;
/// How long one delivery to one peer (session, notifications, offers) may take in all.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the notifier looks at the change feed when no applied entry woke it (a missed
/// wake, or leadership gained without a new entry).
const FALLBACK_TICK: Duration = Duration::from_secs(1);

/// What one peer is still to be told: its new view of each changed name (later changes of a name
/// supersede earlier ones) and the versions offered to it under a push share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerNotice {
    pub deltas: BTreeMap<String, Option<CatalogEntry>>,
    pub offers: BTreeMap<String, u64>,
}

impl PeerNotice {
    /// Folds in the next change of the feed. A new version (or a new push share) of a resource
    /// with content is offered while push is granted; any later change of that name that leaves
    /// push not granted withdraws the offer, so an offer never outlives its share.
    pub fn add(&mut self, relation: &PeerRelation, c: &Change) {
        if let Some((name, e)) = Federation::delta_for(relation, c) {
            self.deltas.insert(name, e);
        }
        let pushable = c.after.as_ref().filter(|a| {
            a.content.is_some() && decide(relation, Some(a.shares.as_slice()), Action::PushTo).is_granted()
        });
        match pushable {
            Some(a) if matches!(c.kind, ChangeKind::Published | ChangeKind::SharesChanged) => {
                self.offers.insert(c.name.clone(), a.version);
            }
            // Still granted (a metadata update, say): an earlier offer stands.
            Some(_) => {}
            None => {
                self.offers.remove(&c.name);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.offers.is_empty()
    }

    fn len(&self) -> usize {
        self.deltas.len() + self.offers.len()
    }
}

/// Whether a resource as committed now may be pushed to `relation`.
pub fn push_granted(relation: &PeerRelation, resource: Option<&causeway_catalog::Resource>) -> bool {
    resource.is_some_and(|r| {
        r.content.is_some() && decide(relation, Some(r.shares.as_slice()), Action::PushTo).is_granted()
    })
}

struct Outbox {
    link: LinkRecord,
    notice: PeerNotice,
}

/// The notifier's live state on the leader: an outbox per peer with a delivery under way (its
/// worker drains it, then removes it), and the slots bounding concurrent deliveries.
pub(crate) struct Notifier {
    outboxes: Mutex<HashMap<String, Outbox>>,
    slots: Semaphore,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            outboxes: Mutex::new(HashMap::new()),
            slots: Semaphore::new(NOTIFY_CONCURRENCY),
        }
    }
}

impl Notifier {
    fn outboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outbox>> {
        self.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Federation {
    /// Runs until the federation is dropped: notifies peers while this member leads.
    pub(crate) async fn notify_loop(self: Arc<Self>) {
        let mut applied = self.cluster.applied_watch();
        let mut notified: Option<u64> = None;
        loop {
            // Read before the feed: an entry applied from here on wakes the wait below.
            let seen = *applied.borrow_and_update();
            if self.cluster.is_leader() {
                // A new leader notifies from now on; the resync covers anything in between.
                let from = notified.unwrap_or_else(|| self.current_change_seq());
                notified = Some(self.notify_changes(from));
            } else {
                notified = None;
            }
            let next_entry = async {
                loop {
                    if applied.changed().await.is_err() {
                        // Raft storage has stopped; only the fallback tick is left.
                        std::future::pending::<()>().await;
                    }
                    if *applied.borrow_and_update() != seen {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(FALLBACK_TICK, next_entry).await;
        }
    }

    /// The newest change sequence number, where a new leader starts notifying from.
    pub(crate) fn current_change_seq(&self) -> u64 {
        self.read(last_change_seq).unwrap_or(0)
    }

    /// On the leader: folds the changes after `from` into the outbox of every linked peer that
    /// may see them and starts a delivery where none is under way; returns the sequence number
    /// processed up to.
    pub(crate) fn notify_changes(self: &Arc<Self>, mut from: u64) -> u64 {
        let links: Vec<LinkRecord> = self
            .links()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.is_removed() && l.pinned.is_some())
            .collect();
        if links.is_empty() {
            // No peer to tell: skip decoding the feed (every applied round would pay for it).
            return self.read(last_change_seq).unwrap_or(from).max(from);
        }
        loop {
            let Ok((changes, _)) = self.read(|t| changes_after(t, from, NOTIFY_BATCH)) else {
                return from;
            };
            let Some(last) = changes.last().map(|c| c.seq) else {
                return from;
            };
            for link in links.iter() {
                self.enqueue(link, &changes);
            }
            from = last;
            if changes.len() < NOTIFY_BATCH {
                return from;
            }
        }
    }

    fn enqueue(self: &Arc<Self>, link: &LinkRecord, changes: &[Change]) {
        let Some(cluster) = link.pinned else { return };
        let relation = PeerRelation::Linked(cluster);
        let mut boxes = self.notifier.outboxes();
        let start = !boxes.contains_key(&link.name);
        let outbox = boxes.entry(link.name.clone()).or_insert_with(|| Outbox {
            link: link.clone(),
            notice: PeerNotice::default(),
        });
        outbox.link = link.clone();
        for c in changes {
            outbox.notice.add(&relation, c);
        }
        if outbox.notice.len() > MAX_PENDING_PER_PEER {
            tracing::warn!(link = %link.name, "too many changes pending for the peer; the next resync repairs its view");
            outbox.notice = PeerNotice::default();
        }
        if start && !outbox.notice.is_empty() {
            let fed = self.clone();
            let name = link.name.clone();
            tokio::spawn(async move { fed.drain_outbox(name).await });
        } else if start {
            boxes.remove(&link.name);
        }
    }

    /// Drops what is still to be told to a removed link's peer (its worker stops after the
    /// delivery under way, if any).
    pub(super) fn forget_outbox(&self, link: &str) {
        self.notifier.outboxes().remove(link);
    }

    /// Delivers one peer's outbox until it is empty, then removes it.
    async fn drain_outbox(self: Arc<Self>, name: String) {
        loop {
            let (link, notice) = {
                let mut boxes = self.notifier.outboxes();
                let Some(outbox) = boxes.get_mut(&name) else { return };
                if outbox.notice.is_empty() || !self.cluster.is_leader() {
                    boxes.remove(&name);
                    return;
                }
                (outbox.link.clone(), std::mem::take(&mut outbox.notice))
            };
            match tokio::time::timeout(DELIVERY_TIMEOUT, self.deliver(&link, notice)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(link = %link.name, error = %e, "change notification failed; resync will repair")
                }
                Err(_) => {
                    self.drop_session(&link.name);
                    tracing::debug!(link = %link.name, "change notification timed out; resync will repair");
                }
            }
        }
    }

    /// Sends one peer its changes, then its push offers, over its live session.
    async fn deliver(&self, link: &LinkRecord, notice: PeerNotice) -> Result<(), String> {
        let cluster = link.pinned.ok_or("link not pinned")?;
        let conn = self.session(link).await?;
        let _slot = self.notifier.slots.acquire().await.map_err(|e| e.to_string())?;
        let deltas: Vec<_> = notice.deltas.into_iter().collect();
        for chunk in deltas.chunks(MAX_CATALOG_PAGE) {
            let req = FedRequest::CatalogChanged {
                changes: chunk.to_vec(),
            };
            match session::request(&conn, &req).await {
                Ok(FedResponse::Ok) => {}
                Ok(other) => return Err(format!("peer answered {other:?}")),
                Err(e) => {
                    self.drop_session(&link.name);
                    return Err(e);
                }
            }
        }
        let relation = PeerRelation::Linked(cluster);
        for (name, version) in notice.offers {
            // Decided again against the policy as committed now: a share revoked since the
            // change was folded in must not be acted on.
            let current = self
                .read(|t| causeway_catalog::state::get_resource(t, &name))
                .map_err(|e| e.to_string())?;
            if !push_granted(&relation, current.as_ref()) {
                tracing::debug!(link = %link.name, resource = %name, "push no longer granted; offer dropped");
                continue;
            }
            let offer = FedRequest::PushOffer {
                name: name.clone(),
                version,
            };
            match session::request(&conn, &offer).await {
                Ok(FedResponse::Ok) => {
                    tracing::info!(link = %link.name, resource = %name, version, "push offer accepted")
                }
                Ok(other) => tracing::info!(link = %link.name, resource = %name, answer = ?other, "push offer refused"),
                Err(e) => {
                    self.drop_session(&link.name);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use causeway_catalog::resources::ResourceSummary;
    use causeway_policy::{Audience, ShareMode, ShareRule};
    use causeway_proto::ClusterId;

    use super::*;

    const PEER: ClusterId = ClusterId([7; 32]);

    fn linked() -> PeerRelation {
        PeerRelation::Linked(PEER)
    }

    fn rule(mode: ShareMode) -> ShareRule {
        ShareRule::new(Audience::Linked, mode, false)
    }

    fn change(seq: u64, kind: ChangeKind, version: u64, before: &[ShareRule], after: Option<&[ShareRule]>) -> Change {
        Change {
            seq,
            name: "r".into(),
            kind,
            version,
            at_ms: seq,
            shares_before: before.to_vec(),
            after: after.map(|shares| ResourceSummary {
                kind: "artifact".into(),
                owner: "o".into(),
                version,
                content: Some(format!("root{version}")),
                shares: shares.to_vec(),
            }),
        }
    }

    fn fold(changes: &[Change]) -> PeerNotice {
        let mut n = PeerNotice::default();
        for c in changes {
            n.add(&linked(), c);
        }
        n
    }

    #[test]
    fn a_version_under_a_push_share_is_offered() {
        let push = [rule(ShareMode::Push)];
        let n = fold(&[change(1, ChangeKind::Published, 2, &push, Some(&push))]);
        assert_eq!(n.offers, BTreeMap::from([("r".to_string(), 2)]));
        assert_eq!(n.deltas.get("r").and_then(|e| e.as_ref()).map(|e| e.version), Some(2));
    }

    /// The simulator's `stale-offers` finding (seed 19): a later change of the batch revokes the
    /// push share, so the earlier version must not be offered.
    #[test]
    fn a_later_revocation_in_the_batch_withdraws_the_offer() {
        let (push, pull) = ([rule(ShareMode::Push)], [rule(ShareMode::Pull)]);
        let n = fold(&[
            change(1, ChangeKind::Published, 2, &push, Some(&push)),
            change(2, ChangeKind::SharesChanged, 2, &push, Some(&pull)),
        ]);
        assert!(n.offers.is_empty(), "{n:?}");
        let seen = n.deltas.get("r").and_then(|e| e.as_ref()).map(|e| e.mode.clone());
        assert_eq!(seen.as_deref(), Some("pull"));

        let n = fold(&[
            change(1, ChangeKind::Published, 2, &push, Some(&push)),
            change(2, ChangeKind::SharesChanged, 2, &push, Some(&[])),
        ]);
        assert!(n.offers.is_empty(), "{n:?}");
        assert_eq!(n.deltas.get("r"), Some(&None), "the peer is told the resource is gone");

        let n = fold(&[
            change(1, ChangeKind::Published, 2, &push, Some(&push)),
            change(2, ChangeKind::Removed, 2, &push, None),
        ]);
        assert!(n.offers.is_empty() && n.deltas.get("r") == Some(&None), "{n:?}");
    }

    /// An outbox still waiting for delivery keeps folding later rounds in the same way.
    #[test]
    fn a_revocation_in_a_later_round_withdraws_a_pending_offer() {
        let (push, pull) = ([rule(ShareMode::Push)], [rule(ShareMode::Pull)]);
        let mut n = fold(&[change(1, ChangeKind::Published, 2, &push, Some(&push))]);
        n.add(&linked(), &change(2, ChangeKind::SharesChanged, 2, &push, Some(&pull)));
        assert!(n.offers.is_empty(), "{n:?}");
    }

    #[test]
    fn an_offer_stands_while_push_stays_granted() {
        let push = [rule(ShareMode::Push)];
        let n = fold(&[
            change(1, ChangeKind::Published, 2, &push, Some(&push)),
            change(2, ChangeKind::MetadataUpdated, 2, &push, Some(&push)),
        ]);
        assert_eq!(n.offers, BTreeMap::from([("r".to_string(), 2)]));
        let n = fold(&[
            change(1, ChangeKind::Published, 2, &push, Some(&push)),
            change(2, ChangeKind::Published, 3, &push, Some(&push)),
        ]);
        assert_eq!(n.offers, BTreeMap::from([("r".to_string(), 3)]));
    }

    #[test]
    fn pull_shares_notify_without_offering() {
        let pull = [rule(ShareMode::Pull)];
        let n = fold(&[change(1, ChangeKind::Published, 1, &pull, Some(&pull))]);
        assert!(n.offers.is_empty() && n.deltas.contains_key("r"), "{n:?}");
        let n = fold(&[change(1, ChangeKind::Published, 1, &[], Some(&[]))]);
        assert!(n.is_empty(), "a private resource tells the peer nothing: {n:?}");
    }

    #[test]
    fn the_send_time_check_reads_the_committed_shares() {
        let resource = |shares: Vec<ShareRule>, content: Option<&str>| causeway_catalog::Resource {
            name: "r".into(),
            kind: "artifact".into(),
            owner: "o".into(),
            version: 2,
            content: content.map(String::from),
            shares,
            mirror_of: None,
            path: None,
            metadata: BTreeMap::new(),
            registered_at_ms: 0,
            updated_at_ms: 0,
        };
        assert!(push_granted(
            &linked(),
            Some(&resource(vec![rule(ShareMode::Push)], Some("x")))
        ));
        assert!(!push_granted(
            &linked(),
            Some(&resource(vec![rule(ShareMode::Pull)], Some("x")))
        ));
        assert!(!push_granted(
            &linked(),
            Some(&resource(vec![rule(ShareMode::Push)], None))
        ));
        assert!(!push_granted(&linked(), None));
        assert!(!push_granted(
            &PeerRelation::Unlinked(PEER),
            Some(&resource(vec![rule(ShareMode::Push)], Some("x")))
        ));
    }
}
