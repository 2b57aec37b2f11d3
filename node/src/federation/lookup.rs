//! One entry of a peer's catalog by name (`CatalogLookup`), both sides: a pull asks for the one
//! resource it wants instead of paging through everything the peer shares with us, and the
//! answer for a name that is not shared is the answer for a name that does not exist.

use causeway_proto::{
    ClusterId,
    fed::{CatalogEntry, FedRequest, FedResponse},
};

use super::{
    Federation,
    catalog::{entry, to_peer_entry},
    session,
};
use crate::error::NodeError;

impl Federation {
    /// Serves a peer's lookup (on the listening side), after `confirm_current`.
    pub(crate) fn serve_catalog_lookup(&self, cluster: ClusterId, name: &str) -> FedResponse {
        if causeway_catalog::validate::resource_name(name).is_err() {
            return FedResponse::Error("bad resource name".into());
        }
        let relation = self.relation(cluster);
        let found = match self.read(|t| causeway_catalog::state::get_resource(t, name)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "catalog lookup failed");
                return FedResponse::Error("catalog unavailable".into());
            }
        };
        let entries = found
            .and_then(|r| {
                let (mode, read_only) = causeway_policy::visible_mode(&relation, &r.shares)?;
                Some(entry(
                    &r.name, &r.kind, &r.owner, r.version, &r.content, mode, read_only,
                ))
            })
            .into_iter()
            .collect();
        FedResponse::Catalog { entries, more: false }
    }

    /// What the linked peer `peer` shares with us as `name` now (`None`: nothing, whether it
    /// does not exist or is not shared). A peer that does not know the lookup yet is asked for
    /// its whole catalog instead.
    pub async fn lookup_peer_entry(&self, peer: &str, name: &str) -> Result<Option<CatalogEntry>, NodeError> {
        let link = self.resolve(peer)?;
        let conn = self
            .connect_peer(&link)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot reach {}: {e}", link.name)))?;
        let req = FedRequest::CatalogLookup { name: name.to_string() };
        let answer = session::request(&conn, &req).await;
        conn.close(0u32.into(), b"done");
        let refused = |e: String| NodeError::Refused(format!("catalog of {}: {e}", link.name));
        match answer.map_err(refused)? {
            FedResponse::Catalog { entries, .. } => {
                if entries.len() > 1 {
                    return Err(refused("peer answered a lookup with several entries".into()));
                }
                let Some(entry) = entries.into_iter().next() else {
                    return Ok(None);
                };
                // The receiver checks what it is given: well-formed, and what it asked for.
                if entry.name != name {
                    return Err(refused(format!("peer answered {:?} for {name:?}", entry.name)));
                }
                to_peer_entry(&entry).map_err(|e| refused(format!("invalid entry: {e}")))?;
                Ok(Some(entry))
            }
            FedResponse::Error(e) if e.starts_with("bad request") => {
                tracing::debug!(peer = %link.name, "peer has no catalog lookup; reading its whole catalog");
                let all = self.query_peer_catalog(peer).await?;
                Ok(all.into_iter().find(|e| e.name == name))
            }
            FedResponse::Error(e) => Err(refused(format!("peer refused: {e}"))),
            other => Err(refused(format!("unexpected answer {other:?}"))),
        }
    }
}
