//! Who may fetch which blob: the iroh-blobs provider asks for every connection and request,
//! and this answers through the cluster's membership and the policy decision. A peer gets a
//! blob only if it is the content root of a resource version policy lets that peer pull, decided
//! on state at least as new as every committed write; current members of this cluster may fetch
//! anything (they replicate each other). Requests for many blobs at once, pushes and observing
//! which blobs exist are refused outright.

use std::{collections::HashMap, future::Future, sync::Arc};

use causeway_proto::EndpointKey;
use iroh_blobs::{
    HashAndFormat,
    provider::events::{AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode},
};

/// Queue of provider events awaiting a decision.
const EVENT_QUEUE: usize = 256;
/// Requests decided at once; further events wait in the queue (a decision may wait for the
/// cluster to confirm its current state).
const MAX_PENDING_DECISIONS: usize = 64;

/// The decision the provider needs.
pub trait BlobAccess: Send + Sync + 'static {
    /// Whether `requester` may fetch through any of `roots`.
    fn may_fetch(&self, requester: EndpointKey, roots: Vec<HashAndFormat>) -> impl Future<Output = bool> + Send;
    /// Whether `requester`'s requests skip the cap on decisions pending (this cluster's own
    /// members, whose replication must not queue behind strangers).
    fn exempt(&self, _requester: &EndpointKey) -> bool {
        false
    }
}

/// An event sender for `BlobsProtocol` that enforces `access` on every request.
pub fn guarded_events<A: BlobAccess>(access: Arc<A>) -> EventSender {
    let mask = EventMask {
        connected: ConnectMode::Intercept,
        get: RequestMode::Intercept,
        get_many: RequestMode::Disabled,
        push: RequestMode::Disabled,
        observe: ObserveMode::Intercept,
        ..EventMask::DEFAULT
    };
    let (tx, mut rx) = EventSender::channel(EVENT_QUEUE, mask);
    tokio::spawn(async move {
        let mut peers: HashMap<u64, EndpointKey> = HashMap::new();
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_DECISIONS));
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::ClientConnected(m) => {
                    let res = match m.endpoint_id {
                        Some(id) => {
                            peers.insert(m.connection_id, EndpointKey(*id.as_bytes()));
                            Ok(())
                        }
                        None => Err(AbortReason::Permission),
                    };
                    m.tx.send(res).await.ok();
                }
                ProviderMessage::ConnectionClosed(m) => {
                    peers.remove(&m.connection_id);
                }
                ProviderMessage::GetRequestReceived(m) => {
                    let Some(peer) = peers.get(&m.connection_id).copied() else {
                        m.tx.send(Err(AbortReason::Permission)).await.ok();
                        continue;
                    };
                    // Never wait here for a decision slot: this loop also admits members'
                    // connections, and a flood of requests must not hold them up. A request
                    // beyond the slots is refused; its fetcher retries.
                    let permit = match pending.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) if access.exempt(&peer) => None,
                        Err(tokio::sync::TryAcquireError::NoPermits) => {
                            tracing::debug!(%peer, "blob request refused: too many decisions pending");
                            m.tx.send(Err(AbortReason::Permission)).await.ok();
                            continue;
                        }
                        Err(tokio::sync::TryAcquireError::Closed) => break,
                    };
                    let access = access.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let hash = m.request.hash;
                        let root = HashAndFormat {
                            hash,
                            format: if m.request.ranges.is_blob() {
                                iroh_blobs::BlobFormat::Raw
                            } else {
                                iroh_blobs::BlobFormat::HashSeq
                            },
                        };
                        // A hash sequence request covers its children too; a plain blob request
                        // on a hash-sequence root only reads the root's own bytes.
                        let mut roots = vec![root];
                        if root.format == iroh_blobs::BlobFormat::Raw {
                            roots.push(HashAndFormat::hash_seq(hash));
                        }
                        let allowed = access.may_fetch(peer, roots).await;
                        if !allowed {
                            tracing::info!(%peer, %hash, "blob request refused by policy");
                        }
                        m.tx.send(if allowed { Ok(()) } else { Err(AbortReason::Permission) })
                            .await
                            .ok();
                    });
                }
                ProviderMessage::ObserveRequestReceived(m) => {
                    m.tx.send(Err(AbortReason::Permission)).await.ok();
                }
                _ => {}
            }
        }
    });
    tx
}

/// The node's access rule: members of this cluster may fetch anything; a peer may fetch a root
/// only if some resource's current version has that root and policy lets the peer pull it.
pub struct CatalogAccess {
    pub cluster: causeway_raft::ClusterNode,
    pub fed: Arc<crate::federation::Federation>,
}

impl BlobAccess for CatalogAccess {
    fn exempt(&self, requester: &EndpointKey) -> bool {
        self.cluster.may_connect(requester)
    }

    async fn may_fetch(&self, requester: EndpointKey, roots: Vec<HashAndFormat>) -> bool {
        // The current membership only: a node removed from it, or trusted at a join, is a
        // stranger here like any other and gets only what policy grants it.
        if self.cluster.is_member(&requester) {
            return true;
        }
        // Decided on local state first: a request this member would refuse is refused without
        // the read barrier, so a stranger's stream of made-up hashes costs the cluster no quorum
        // round. Only a grant is confirmed current, and decided again on the confirmed state.
        if !roots.iter().any(|root| self.granted(&requester, root)) {
            return false;
        }
        if let Err(reason) = self.fed.confirm_current().await {
            tracing::info!(peer = %requester, %reason, "blob request refused");
            return false;
        }
        roots.iter().any(|root| self.granted(&requester, root))
    }
}

impl CatalogAccess {
    /// The decision on this member's (confirmed current) state.
    fn granted(&self, requester: &EndpointKey, root: &HashAndFormat) -> bool {
        let relation = self.fed.relation_of_endpoint(requester);
        // A write-back bundle this node offered to the requester's cluster.
        if let causeway_policy::PeerRelation::Linked(cluster) = relation
            && let Some(m) = self.fed.mirroring.get().and_then(|w| w.upgrade())
            && m.offered_to(&cluster, root)
        {
            return true;
        }
        // Only resources the peer may see can grant it a pull: walk the share index's pages
        // for this peer, not the whole catalog.
        let wanted = root.to_string();
        let mut after: Option<String> = None;
        loop {
            let Ok(page) = self.fed.read(|t| {
                causeway_catalog::share_index::visible_page(
                    t,
                    &relation,
                    after.as_deref(),
                    causeway_catalog::state::MAX_PAGE,
                )
            }) else {
                return false;
            };
            for e in &page.entries {
                let r = &e.resource;
                if r.content.as_deref() == Some(wanted.as_str())
                    && causeway_policy::decide(&relation, Some(&r.shares), causeway_policy::Action::Pull).is_granted()
                {
                    return true;
                }
            }
            after = page.entries.last().map(|e| e.resource.name.clone());
            if !page.more || after.is_none() {
                return false;
            }
        }
    }
}
