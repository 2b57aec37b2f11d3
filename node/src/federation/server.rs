//! The listening side of `causeway/fed/1`, served by every member: handshake (prove who we are,
//! verify who they are), then heartbeats, card updates and goodbyes on their own streams.
//! Refusals are answered with the reason and logged; the node keeps serving.

use std::sync::Arc;

use causeway_catalog::Command;
use causeway_proto::{
    EndpointKey,
    card::SignedCard,
    fed::{Auth, Expectation, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, check_peer, prove},
};
use causeway_raft::wire;
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};

use super::Federation;
use super::limits;
use super::session::HANDSHAKE_TIMEOUT;

/// QUIC close code after a refused handshake.
pub const CLOSE_REFUSED: u32 = 401;
/// QUIC close code after a goodbye.
pub const CLOSE_GOODBYE: u32 = 0;

#[derive(Clone)]
pub struct FedService(pub Arc<Federation>);

impl std::fmt::Debug for FedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FedService")
    }
}

/// Who a verified peer is to us.
struct PeerSession {
    card: SignedCard,
}

impl Federation {
    /// Our answer to whether we link to `cluster`.
    fn links_back(&self, card: &SignedCard, remote: &EndpointKey) -> bool {
        self.links()
            .map(|links| {
                links.iter().filter(|l| !l.is_removed()).any(|l| match l.pinned {
                    Some(p) => p == card.card.cluster_id,
                    None => l.endpoint == *remote,
                })
            })
            .unwrap_or(false)
    }

    async fn accept_handshake(&self, conn: &Connection) -> Result<PeerSession, String> {
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let hello: Hello = wire::read_frame(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let (identity, own) = match (self.identity(), self.own_card()) {
            (Ok(Some(i)), Ok(Some(c))) => (i, c),
            _ => {
                let r = HelloReply::Refused("this cluster has no card yet; try again shortly".into());
                let _ = wire::write_frame(&mut send, &r, MAX_FED_FRAME).await;
                let _ = send.finish();
                return Err("no own card yet".into());
            }
        };
        let challenge: [u8; 32] = rand::random();
        let reply = HelloReply::Card {
            proof: prove(
                &identity.cluster_secret,
                &hello.challenge,
                &self.local,
                &remote,
                &own.card,
            ),
            card: Box::new(own),
            challenge,
        };
        wire::write_frame(&mut send, &reply, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let auth: Auth = wire::read_frame(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;

        // What we know: a link that recognizes this endpoint, or one pinned to the claimed cluster.
        let links = self.links().map_err(|e| e.to_string())?;
        let active: Vec<_> = links.iter().filter(|l| !l.is_removed()).collect();
        let claimed = auth.card.card.cluster_id;
        let by_endpoint = active.iter().find(|l| l.recognizes(&remote));
        let by_cluster = active.iter().find(|l| l.pinned == Some(claimed));
        let known = by_endpoint.filter(|l| l.pinned.is_some()).or(by_cluster);
        let expect = Expectation {
            pinned: known.and_then(|l| l.pinned),
            known_epoch: known.and_then(|l| l.card.as_ref()).map(|c| c.card.epoch).unwrap_or(0),
        };
        if let Err(e) = check_peer(&auth.card, &auth.proof, &challenge, &remote, &self.local, &expect) {
            let reason = e.to_string();
            tracing::warn!(peer = %remote, %reason, "refused federation handshake");
            if let Some(l) = by_endpoint.or(by_cluster) {
                self.record_refusal(
                    &l.name,
                    format!("refused inbound handshake from {}: {reason}", remote.short()),
                );
            }
            let _ = wire::write_frame(&mut send, &Welcome::Refused(reason.clone()), MAX_FED_FRAME).await;
            let _ = send.finish();
            return Err(reason);
        }
        let links_back = self.links_back(&auth.card, &remote);
        wire::write_frame(&mut send, &Welcome::Accepted { links_back }, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        if let Some(l) = known
            && auth.card.card.epoch > expect.known_epoch
        {
            let cmd = Command::UpdatePeerCard {
                cluster: claimed,
                card: auth.card.clone(),
            };
            tracing::info!(link = %l.name, epoch = auth.card.card.epoch, "newer card from peer");
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster.write(cmd).await {
                    tracing::debug!(error = %e, "recording newer peer card");
                }
            });
        }
        if !links_back {
            self.record_inbound(&auth.card, remote);
        }
        Ok(PeerSession { card: auth.card })
    }

    async fn serve_request(
        &self,
        peer: &PeerSession,
        remote: &EndpointKey,
        req: FedRequest,
        conn: &Connection,
    ) -> FedResponse {
        match req {
            FedRequest::Heartbeat { seq, .. } => {
                let card_epoch = self.own_card().ok().flatten().map(|c| c.card.epoch).unwrap_or(0);
                let links_back = self.links_back(&peer.card, remote);
                if !links_back {
                    self.record_inbound(&peer.card, *remote);
                }
                FedResponse::HeartbeatAck {
                    seq,
                    card_epoch,
                    links_back,
                }
            }
            FedRequest::CardUpdate(card) => {
                let ok = card.verify().is_ok() && card.card.cluster_id == peer.card.card.cluster_id;
                if !ok {
                    return FedResponse::Error("card update is not a valid card of your cluster".into());
                }
                let pinned = self
                    .links()
                    .map(|ls| {
                        ls.iter()
                            .any(|l| !l.is_removed() && l.pinned == Some(card.card.cluster_id))
                    })
                    .unwrap_or(false);
                if pinned {
                    let cmd = Command::UpdatePeerCard {
                        cluster: card.card.cluster_id,
                        card,
                    };
                    if let Err(e) = self.cluster.write(cmd).await {
                        return FedResponse::Error(format!("could not record the card: {e}"));
                    }
                }
                FedResponse::Ok
            }
            FedRequest::CatalogQuery { after, limit } => {
                if let Err(reason) = self.confirm_current().await {
                    return FedResponse::Error(reason);
                }
                self.serve_catalog_query(peer.card.card.cluster_id, after, limit)
            }
            FedRequest::CatalogLookup { name } => {
                if let Err(reason) = self.confirm_current().await {
                    return FedResponse::Error(reason);
                }
                self.serve_catalog_lookup(peer.card.card.cluster_id, &name)
            }
            FedRequest::CatalogChanged { changes } => {
                self.accept_catalog_changes(peer.card.card.cluster_id, changes).await
            }
            FedRequest::PushOffer { name, version } => {
                self.accept_push_offer(peer.card.card.cluster_id, name, version).await
            }
            FedRequest::WriteBack { name, bundle } => {
                let mirroring = self.mirroring.get().and_then(|w| w.upgrade());
                match mirroring {
                    Some(m) => {
                        m.accept_write_back(peer.card.card.cluster_id, *remote, &name, &bundle)
                            .await
                    }
                    None => FedResponse::Error("node is starting".into()),
                }
            }
            FedRequest::Goodbye { reason } => {
                tracing::info!(peer = %remote, %reason, "peer said goodbye");
                conn.close(CLOSE_GOODBYE.into(), b"goodbye");
                FedResponse::Ok
            }
        }
    }
}

impl Federation {
    /// The receiving side of a push: accepted only from a cluster we link to, through a link
    /// that takes pushes (`link set PEER --accept-pushes on`), for a name that is free here or
    /// already a mirror of that peer, within the per-peer caps (mirrors, bytes, pushed pulls
    /// running at once); the version is then pulled on the leader within what is left.
    async fn accept_push_offer(&self, origin: causeway_proto::ClusterId, name: String, version: u64) -> FedResponse {
        use causeway_policy::{PushDecision, Subscription, accept_push};
        if causeway_catalog::validate::resource_name(&name).is_err() {
            return FedResponse::Error("bad resource name".into());
        }
        let relation = self.relation(origin);
        let link_takes_pushes = self
            .links()
            .ok()
            .and_then(|ls| ls.into_iter().find(|l| !l.is_removed() && l.pinned == Some(origin)))
            .is_some_and(|l| l.accept_pushes);
        let local = self
            .read(|t| causeway_catalog::state::get_resource(t, &name))
            .ok()
            .flatten();
        // A name held here by anything but a mirror of the sender is not the sender's to fill.
        let subscription = match &local {
            Some(r) if r.mirror_of != Some(origin) => None,
            _ => Some(Subscription {
                origin,
                accept_push: link_takes_pushes,
            }),
        };
        if let PushDecision::Refuse(r) = accept_push(&relation, subscription.as_ref()) {
            return FedResponse::Denied(r.to_string());
        }
        let Some(mirroring) = self.mirroring.get().and_then(|w| w.upgrade()) else {
            return FedResponse::Error("node is starting".into());
        };
        match mirroring.push_budget(origin, &name).await {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => return FedResponse::Denied(reason),
            Err(e) => return FedResponse::Error(format!("cannot check the push caps: {e}")),
        }
        let Some(slot) = mirroring.push_slots.take(origin) else {
            return FedResponse::Denied(format!(
                "{} pushed transfers of yours are running here already; offer again later",
                crate::transfer::MAX_PUSHED_PULLS_PER_PEER
            ));
        };
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let pull = crate::app::pull_pushed(&cluster, &name, origin);
            match tokio::time::timeout(crate::transfer::PUSHED_PULL_DEADLINE, pull).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(resource = %name, version, error = %e, "pushed version not pulled"),
                Err(_) => tracing::warn!(resource = %name, version, "pushed version not pulled in time"),
            }
        });
        FedResponse::Ok
    }
}

impl ProtocolHandler for FedService {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let fed = self.0.clone();
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        // Counted from the start (a handshake holds resources too) until this returns.
        let Some(_slot) = fed.limits.connection(remote) else {
            tracing::debug!(peer = %remote, "too many federation connections; refused");
            conn.close(limits::CLOSE_BUSY.into(), b"too many connections");
            return Ok(());
        };
        let peer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, fed.accept_handshake(&conn)).await {
            Ok(Ok(p)) => p,
            Ok(Err(reason)) => {
                tracing::debug!(peer = %remote, %reason, "federation handshake failed");
                // Give the peer a moment to read our reason before the connection goes away.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
                conn.close(CLOSE_REFUSED.into(), b"handshake refused");
                return Ok(());
            }
            Err(_) => {
                conn.close(CLOSE_REFUSED.into(), b"handshake timed out");
                return Ok(());
            }
        };
        let peer = Arc::new(peer);
        let streams = Arc::new(tokio::sync::Semaphore::new(limits::MAX_STREAMS_PER_CONNECTION));
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok(permit) = streams.clone().try_acquire_owned() else {
                // Refused at once, so streams over the cap cost nothing while the peer holds them.
                let _ = recv.stop(limits::STREAM_REFUSED.into());
                let _ = send.reset(limits::STREAM_REFUSED.into());
                continue;
            };
            let fed = fed.clone();
            let peer = peer.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let cluster = peer.card.card.cluster_id;
                let linked = matches!(fed.relation(cluster), causeway_policy::PeerRelation::Linked(_));
                let resp = match fed.limits.read_request(&mut recv, limits::request_limit(linked)).await {
                    Ok(request) => {
                        // Answers to control requests must not queue behind catalog pages.
                        let _ = send.set_priority(super::session::priority(&request.req));
                        fed.serve_request(&peer, &remote, request.req, &conn).await
                    }
                    Err(e) => {
                        tracing::warn!(peer = %remote, error = %e, "bad federation request");
                        FedResponse::Error(e.to_string())
                    }
                };
                // Whatever the peer still sends on this stream is not read.
                let _ = recv.stop(0u32.into());
                let write = wire::write_frame(&mut send, &resp, MAX_FED_FRAME);
                if tokio::time::timeout(limits::RESPONSE_WRITE_TIMEOUT, write)
                    .await
                    .is_err()
                {
                    let _ = send.reset(limits::STREAM_REFUSED.into());
                    return;
                }
                let _ = send.finish();
            });
        }
        Ok(())
    }
}
