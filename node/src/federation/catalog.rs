//! The federation catalog: answering "what do you share with me?" through the policy decision
//! (a peer never learns of a resource it may not see), asking a peer the same, notifying linked
//! peers of changes to what they may see (the deltas; [`super::notify`] delivers them),
//! recording what peers notify us, and resyncing.

use std::{sync::Arc, time::Duration};

use causeway_catalog::{
    Command, CommandResult,
    links::LinkRecord,
    peer_views::{MAX_PEER_VIEW_BYTES, MAX_PEER_VIEW_ENTRIES, PeerEntry, ViewSize, entry_bytes},
    resources::Change,
    share_index::visible_page,
};
use causeway_policy::{PeerRelation, ShareMode, visible_mode};
use causeway_proto::{
    ClusterId,
    fed::{CatalogEntry, FedRequest, FedResponse, MAX_CATALOG_PAGE},
};
use iroh::endpoint::Connection;

use super::Federation;
use super::session;
use crate::error::{NodeError, storage};

/// How long `causeway catalog PEER` may take in all (connecting, then every page).
pub const CATALOG_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the resync of one peer's view may take in all.
pub const RESYNC_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn entry(
    name: &str,
    kind: &str,
    owner: &str,
    version: u64,
    content: &Option<String>,
    mode: ShareMode,
    read_only: bool,
) -> CatalogEntry {
    CatalogEntry {
        name: name.to_string(),
        kind: kind.to_string(),
        owner: owner.to_string(),
        version,
        content: content.clone(),
        mode: mode.to_string(),
        read_only,
    }
}

pub(crate) fn to_peer_entry(e: &CatalogEntry) -> Result<PeerEntry, String> {
    let p = PeerEntry {
        name: e.name.clone(),
        kind: e.kind.clone(),
        owner: e.owner.clone(),
        version: e.version,
        content: e.content.clone(),
        mode: e.mode.parse::<ShareMode>().map_err(|e| e.to_string())?,
        read_only: e.read_only,
    };
    p.validate()?;
    Ok(p)
}

impl Federation {
    /// How this cluster sees a verified peer cluster: linked only through our own active link.
    pub(crate) fn relation(&self, cluster: ClusterId) -> PeerRelation {
        let linked = self
            .links()
            .map(|ls| ls.iter().any(|l| !l.is_removed() && l.pinned == Some(cluster)))
            .unwrap_or(false);
        if linked {
            PeerRelation::Linked(cluster)
        } else {
            PeerRelation::Unlinked(cluster)
        }
    }

    /// A page of what `peer` may see, in name order after `after`.
    pub(crate) fn catalog_page(
        &self,
        peer: &PeerRelation,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<CatalogEntry>, bool), NodeError> {
        let limit = limit.clamp(1, MAX_CATALOG_PAGE);
        let db = self.cluster.database();
        let txn = redb::ReadableDatabase::begin_read(&*db).map_err(storage)?;
        let page = visible_page(&txn, peer, after, limit).map_err(storage)?;
        let entries = page
            .entries
            .iter()
            .map(|e| {
                let r = &e.resource;
                entry(&r.name, &r.kind, &r.owner, r.version, &r.content, e.mode, e.read_only)
            })
            .collect();
        Ok((entries, page.more))
    }

    /// Opens a fresh, handshaken connection to a linked peer (used by any member for queries).
    pub(crate) async fn connect_peer(&self, link: &LinkRecord) -> Result<Connection, String> {
        self.dial_link(link).await.map(|(conn, _)| conn)
    }

    /// `causeway catalog PEER`: ask the peer now, within [`CATALOG_QUERY_TIMEOUT`] in all. A
    /// peer sharing more than a view may hold (`MAX_PEER_VIEW_ENTRIES`, `MAX_PEER_VIEW_BYTES`)
    /// gets an error rather than a partial list.
    pub async fn query_peer_catalog(&self, peer: &str) -> Result<Vec<CatalogEntry>, NodeError> {
        let link = self.resolve(peer)?;
        let query = async {
            let conn = self
                .connect_peer(&link)
                .await
                .map_err(|e| format!("cannot reach it: {e}"))?;
            let mut walk = CatalogWalk::default();
            let mut all = Vec::new();
            let result = loop {
                match walk.next(&conn).await {
                    Ok(Some(_)) if walk.capped => {
                        break Err(format!(
                            "it shares more than {MAX_PEER_VIEW_ENTRIES} entries or {MAX_PEER_VIEW_BYTES} bytes \
                             (the most a peer's view may hold)"
                        ));
                    }
                    Ok(Some(page)) => all.extend(page.raw),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            conn.close(0u32.into(), b"done");
            result.map(|()| all)
        };
        match tokio::time::timeout(CATALOG_QUERY_TIMEOUT, query).await {
            Ok(Ok(all)) => Ok(all),
            Ok(Err(e)) => Err(NodeError::Refused(format!("catalog of {}: {e}", link.name))),
            Err(_) => Err(NodeError::Refused(format!(
                "catalog of {}: no whole answer within {CATALOG_QUERY_TIMEOUT:?}",
                link.name
            ))),
        }
    }

    /// The replicated view of what a linked peer shares with us (kept current by its
    /// notifications and the periodic resync).
    pub fn cached_peer_catalog(&self, peer: &str) -> Result<Vec<causeway_catalog::peer_views::PeerEntry>, NodeError> {
        let (_, cluster) = self.resolve_pinned(peer)?;
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.read(|t| causeway_catalog::peer_views::list(t, &cluster, after.as_deref(), 1000))?;
            let done = page.len() < 1000;
            after = page.last().map(|e| e.name.clone());
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Serves a peer's catalog request (on the listening side).
    pub(crate) fn serve_catalog_query(&self, cluster: ClusterId, after: Option<String>, limit: u32) -> FedResponse {
        if after
            .as_deref()
            .is_some_and(|a| causeway_catalog::validate::resource_name(a).is_err())
        {
            return FedResponse::Error("bad cursor".into());
        }
        let relation = self.relation(cluster);
        match self.catalog_page(&relation, after.as_deref(), limit as usize) {
            Ok((entries, more)) => FedResponse::Catalog { entries, more },
            Err(e) => {
                tracing::warn!(error = %e, "catalog query failed");
                FedResponse::Error("catalog unavailable".into())
            }
        }
    }

    /// Records a linked peer's change notification (on the receiving side).
    pub(crate) async fn accept_catalog_changes(
        &self,
        cluster: ClusterId,
        changes: Vec<(String, Option<CatalogEntry>)>,
    ) -> FedResponse {
        if !matches!(self.relation(cluster), PeerRelation::Linked(_)) {
            // We do not link to the sender: we keep nothing of it.
            return FedResponse::Ok;
        }
        if changes.len() > MAX_CATALOG_PAGE {
            return FedResponse::Error("too many changes".into());
        }
        let mut converted = Vec::with_capacity(changes.len());
        for (name, e) in changes {
            match e.as_ref().map(to_peer_entry).transpose() {
                Ok(p) => converted.push((name, p)),
                Err(reason) => return FedResponse::Error(format!("invalid entry {name:?}: {reason}")),
            }
        }
        // Each notification is a Raft write on every member: a peer gets a few per second.
        if !self.limits.notify_turn(cluster).await {
            return FedResponse::Error("too many change notifications; slow down (the resync repairs the view)".into());
        }
        match self
            .cluster
            .write(Command::PeerCatalogUpdate {
                cluster,
                changes: converted,
            })
            .await
        {
            Ok(CommandResult::Applied) => FedResponse::Ok,
            Ok(other) => FedResponse::Error(format!("not recorded: {other:?}")),
            Err(e) => FedResponse::Error(format!("not recorded: {e}")),
        }
    }

    /// What one change means for one peer: its new entry, its removal, or nothing (the peer
    /// could see the resource neither before nor after, so it is not told anything).
    pub fn delta_for(relation: &PeerRelation, c: &Change) -> Option<(String, Option<CatalogEntry>)> {
        let before = visible_mode(relation, &c.shares_before);
        let after = c
            .after
            .as_ref()
            .and_then(|a| visible_mode(relation, &a.shares).map(|v| (a, v)));
        match (before, after) {
            (None, None) => None,
            (_, Some((a, (mode, ro)))) => Some((
                c.name.clone(),
                Some(entry(&c.name, &a.kind, &a.owner, a.version, &a.content, mode, ro)),
            )),
            (Some(_), None) => Some((c.name.clone(), None)),
        }
    }

    /// On the leader: replaces our replicated view of each linked peer's catalog with a fresh
    /// listing, page by page as the pages come (one page in memory at a time), each peer within
    /// [`RESYNC_TIMEOUT`]. A peer sharing more than a view may hold is kept up to the cap. One
    /// resync runs at a time.
    pub(crate) async fn resync_peer_views(self: &Arc<Self>) {
        let Some(_running) = self.limits.resync() else {
            tracing::debug!("catalog resync still running; skipped");
            return;
        };
        for link in self.links().unwrap_or_default().into_iter().filter(|l| !l.is_removed()) {
            let Some(cluster) = link.pinned else { continue };
            match tokio::time::timeout(RESYNC_TIMEOUT, self.resync_one(&link, cluster)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(link = %link.name, error = %e, "catalog resync failed"),
                Err(_) => tracing::debug!(link = %link.name, "catalog resync timed out"),
            }
        }
    }

    async fn resync_one(&self, link: &LinkRecord, cluster: ClusterId) -> Result<(), String> {
        let conn = self.session(link).await?;
        let mut walk = CatalogWalk::default();
        let mut after: Option<String> = None;
        while let Some(page) = walk.next(&conn).await? {
            if walk.capped {
                tracing::warn!(
                    link = %link.name,
                    "peer shares more than a view may hold; kept up to {MAX_PEER_VIEW_ENTRIES} entries"
                );
            }
            let upto = if walk.done {
                None
            } else {
                page.entries.last().map(|e| e.name.clone())
            };
            let cmd = Command::PeerCatalogSync {
                cluster,
                after: after.clone(),
                upto: upto.clone(),
                entries: page.entries,
            };
            match self.cluster.write(cmd).await {
                Ok(CommandResult::Applied) => {}
                Ok(other) => return Err(format!("view not recorded: {other:?}")),
                Err(e) => return Err(format!("view not recorded: {e}")),
            }
            after = upto;
        }
        Ok(())
    }
}

/// One page of a peer's catalog, checked.
struct Page {
    raw: Vec<CatalogEntry>,
    entries: Vec<PeerEntry>,
}

/// A walk through a peer's catalog, page by page: each page is checked (at most a page, valid
/// entries in name order after the cursor, so the cursor always advances) and counted against
/// the caps of a peer's view; the page that reaches them is cut there and ends the walk.
#[derive(Default)]
struct CatalogWalk {
    after: Option<String>,
    size: ViewSize,
    /// No page follows.
    done: bool,
    /// The peer shares more than the caps; the walk stopped at them.
    capped: bool,
}

impl CatalogWalk {
    async fn next(&mut self, conn: &Connection) -> Result<Option<Page>, String> {
        if self.done {
            return Ok(None);
        }
        let req = FedRequest::CatalogQuery {
            after: self.after.clone(),
            limit: MAX_CATALOG_PAGE as u32,
        };
        let (mut raw, more) = match session::request(conn, &req).await? {
            FedResponse::Catalog { entries, more } => (entries, more),
            FedResponse::Error(e) => return Err(format!("peer refused: {e}")),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        if raw.len() > MAX_CATALOG_PAGE {
            return Err("peer sent an oversized page".into());
        }
        // The receiver checks what it is offered too: well-formed, in order.
        let mut entries = Vec::with_capacity(raw.len());
        for e in &raw {
            entries.push(to_peer_entry(e).map_err(|r| format!("peer sent an invalid entry {:?}: {r}", e.name))?);
        }
        if raw.windows(2).any(|w| w[0].name >= w[1].name)
            || raw.first().zip(self.after.as_ref()).is_some_and(|(f, a)| f.name <= *a)
        {
            return Err("peer sent entries out of order".into());
        }
        if more && raw.is_empty() {
            return Err("peer announced more entries but sent none (its cursor does not advance)".into());
        }
        let mut fits = entries.len();
        for (i, e) in entries.iter().enumerate() {
            self.size.add(entry_bytes(e));
            if self.size.over_cap() {
                fits = i;
                self.capped = true;
                break;
            }
        }
        raw.truncate(fits);
        entries.truncate(fits);
        self.done = !more || self.capped;
        self.after = raw.last().map(|e| e.name.clone()).or(self.after.take());
        Ok(Some(Page { raw, entries }))
    }
}
