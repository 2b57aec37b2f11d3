//! The federation catalog: answering "what do you share with me?" through the policy decision
//! (a peer never learns of a resource it may not see), asking a peer the same, notifying linked
//! peers of changes to what they may see (the deltas; [`super::notify`] delivers them),
//! recording what peers notify us, and resyncing.

use std::{sync::Arc, time::Duration};

use causeway_catalog::{
    Command, CommandResult, links::LinkRecord, peer_views::PeerEntry, resources::Change, share_index::visible_page,
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

    /// Every entry `conn`'s peer shares with us, page by page.
    async fn fetch_catalog(&self, conn: &Connection) -> Result<Vec<CatalogEntry>, String> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let req = FedRequest::CatalogQuery {
                after: after.clone(),
                limit: MAX_CATALOG_PAGE as u32,
            };
            match session::request(conn, &req).await? {
                FedResponse::Catalog { entries, more } => {
                    if entries.len() > MAX_CATALOG_PAGE {
                        return Err("peer sent an oversized page".into());
                    }
                    // The receiver checks what it is offered too: well-formed, in order.
                    if let Some(bad) = entries.iter().find(|e| to_peer_entry(e).is_err()) {
                        return Err(format!("peer sent an invalid entry {:?}", bad.name));
                    }
                    if entries.windows(2).any(|w| w[0].name >= w[1].name)
                        || entries.first().zip(after.as_ref()).is_some_and(|(f, a)| f.name <= *a)
                    {
                        return Err("peer sent entries out of order".into());
                    }
                    after = entries.last().map(|e| e.name.clone());
                    all.extend(entries);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                FedResponse::Error(e) => return Err(format!("peer refused: {e}")),
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
    }

    /// `causeway catalog PEER`: ask the peer now.
    pub async fn query_peer_catalog(&self, peer: &str) -> Result<Vec<CatalogEntry>, NodeError> {
        let link = self.resolve(peer)?;
        let conn = self
            .connect_peer(&link)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot reach {}: {e}", link.name)))?;
        let result = self.fetch_catalog(&conn).await;
        conn.close(0u32.into(), b"done");
        result.map_err(|e| NodeError::Refused(format!("catalog of {}: {e}", link.name)))
    }

    /// The replicated view of what a linked peer shares with us (kept current by its
    /// notifications and the periodic resync).
    pub fn cached_peer_catalog(&self, peer: &str) -> Result<Vec<causeway_catalog::peer_views::PeerEntry>, NodeError> {
        let link = self.resolve(peer)?;
        let Some(cluster) = link.pinned else {
            return Ok(Vec::new());
        };
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
    /// full listing, page by page.
    pub(crate) async fn resync_peer_views(self: &Arc<Self>) {
        for link in self.links().unwrap_or_default().into_iter().filter(|l| !l.is_removed()) {
            let Some(cluster) = link.pinned else { continue };
            let Ok(conn) = self.session(&link).await else { continue };
            let entries = match tokio::time::timeout(Duration::from_secs(60), self.fetch_catalog(&conn)).await {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::debug!(link = %link.name, error = %e, "catalog resync failed");
                    continue;
                }
                Err(_) => continue,
            };
            let mut after: Option<String> = None;
            let pages: Vec<&[CatalogEntry]> = entries.chunks(MAX_CATALOG_PAGE).collect();
            let count = pages.len().max(1);
            for i in 0..count {
                let page = pages.get(i).copied().unwrap_or(&[]);
                let upto = if i + 1 == count {
                    None
                } else {
                    page.last().map(|e| e.name.clone())
                };
                let converted: Result<Vec<PeerEntry>, String> = page.iter().map(to_peer_entry).collect();
                let Ok(converted) = converted else { break };
                let cmd = Command::PeerCatalogSync {
                    cluster,
                    after: after.clone(),
                    upto: upto.clone(),
                    entries: converted,
                };
                if self.cluster.write(cmd).await.is_err() {
                    break;
                }
                after = upto;
            }
        }
    }
}
