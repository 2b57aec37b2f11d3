//! The listening side of `causeway/fed/2`, served by every member: handshake (prove who we are,
//! verify who they are, and only then show our full card), then heartbeats, card updates and
//! goodbyes on their own streams. Refusals are answered with the reason and logged; the node
//! keeps serving.

use std::sync::Arc;

use causeway_catalog::{Command, CommandResult, Rejection};
use causeway_proto::{
    EndpointKey,
    fed::{
        Auth, FedRequest, FedResponse, HandshakeError, Hello, HelloReply, MAX_FED_FRAME, Welcome, check_peer, prove,
    },
    rotation::{HeldKey, KeyError, KeyVerdict, KeyedCard, judge},
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
    card: KeyedCard,
}

impl Federation {
    /// Our answer to whether we link to `cluster`.
    fn links_back(&self, card: &KeyedCard, remote: &EndpointKey) -> bool {
        self.links()
            .map(|links| {
                links.iter().filter(|l| !l.is_removed()).any(|l| match l.pinned {
                    Some(p) => p == card.cluster_id(),
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
        let Ok(Some((secret, own))) = self.own_keyed_card() else {
            let r = HelloReply::Refused("this cluster has no card yet; try again shortly".into());
            let _ = wire::write_frame(&mut send, &r, MAX_FED_FRAME).await;
            let _ = send.finish();
            return Err("no own card yet".into());
        };
        // Who we are and a proof, but not our members and addresses: those go only to a dialer
        // that proved its own cluster key.
        let challenge: [u8; 32] = rand::random();
        let reply = HelloReply::Card {
            cluster_id: own.cluster_id(),
            key: own.key,
            proof: prove(
                &secret,
                &hello.challenge,
                &self.local,
                &remote,
                &own.cluster_id(),
                &own.key,
            ),
            challenge,
        };
        wire::write_frame(&mut send, &reply, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let auth: Auth = wire::read_frame(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;

        // What we know: the link that owns this verified endpoint, or one pinned to the
        // claimed cluster.
        let claimed = auth.card.cluster_id();
        let by_endpoint = self.link_owning(&remote).map_err(|e| e.to_string())?;
        let by_cluster = self.link_pinned_to(&claimed).map_err(|e| e.to_string())?;
        let known = by_endpoint
            .clone()
            .filter(|l| l.pinned.is_some())
            .or(by_cluster.clone());
        let expect = self.expectation(known.as_ref()).map_err(|e| e.to_string())?;
        let verdict = match check_peer(&auth.card, &auth.proof, &challenge, &remote, &self.local, &expect) {
            Ok(v) => v,
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(peer = %remote, %reason, "refused federation handshake");
                if let Some(l) = by_endpoint.as_ref().or(by_cluster.as_ref()) {
                    self.record_refusal(
                        &l.name,
                        format!("refused inbound handshake from {}: {reason}", remote.short()),
                    );
                    if let (HandshakeError::Key(KeyError::Conflict(_)), Some(k)) = (&e, &known) {
                        // Recorded through Raft, so every member refuses both keys from now on.
                        self.record_peer_card(&k.name, auth.card.clone());
                    }
                }
                let _ = wire::write_frame(&mut send, &Welcome::Refused(reason.clone()), MAX_FED_FRAME).await;
                let _ = send.finish();
                return Err(reason);
            }
        };
        // The links this dialer may speak for: the one it is known as, and a link not pinned yet
        // that the admin added with this very endpoint.
        let speaks_for: Vec<&str> = known
            .iter()
            .chain(by_endpoint.iter().filter(|l| l.pinned.is_none()))
            .map(|l| l.name.as_str())
            .collect();
        if let Some(reason) = self.claims_elsewhere(&auth.card, &speaks_for) {
            tracing::warn!(peer = %remote, %reason, "refused federation handshake");
            if let Some(l) = &known {
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
        let welcome = Welcome::Accepted {
            links_back,
            card: Box::new(own),
        };
        wire::write_frame(&mut send, &welcome, MAX_FED_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        if let Some(l) = &known
            && (verdict != KeyVerdict::Same || auth.card.epoch() > expect.known_epoch)
        {
            tracing::info!(link = %l.name, epoch = auth.card.epoch(), generation = auth.card.key.generation, "newer card from peer");
            self.record_peer_card(&l.name, auth.card.clone());
        }
        if !links_back {
            self.record_inbound(&auth.card.signed, remote);
        }
        Ok(PeerSession { card: auth.card })
    }

    /// Why `card` may not speak for the links named `links` (none: a cluster we do not link):
    /// it lists an endpoint that another link owns.
    pub(super) fn claims_elsewhere(&self, card: &KeyedCard, links: &[&str]) -> Option<String> {
        card.signed
            .card
            .members
            .iter()
            .find_map(|m| match self.link_owning(&m.endpoint) {
                Ok(Some(owner)) if !links.contains(&owner.name.as_str()) => Some(format!(
                    "card claims endpoint {}, which belongs to {}",
                    m.endpoint, owner.name
                )),
                _ => None,
            })
    }

    /// Records a peer's card through Raft in the background (the state machine decides).
    pub(super) fn record_peer_card(&self, link: &str, card: KeyedCard) {
        let cmd = Command::PeerCard {
            link: link.to_string(),
            card: Box::new(card),
        };
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.write(cmd).await {
                tracing::debug!(error = %e, "recording newer peer card");
            }
        });
    }

    /// A card update on an established session: the peer's newer epoch or new key.
    async fn accept_card_update(&self, peer: &PeerSession, card: KeyedCard) -> FedResponse {
        if card.verify().is_err() || card.cluster_id() != peer.card.cluster_id() {
            return FedResponse::Error("card update is not a valid card of your cluster".into());
        }
        let link = match self.link_pinned_to(&card.cluster_id()) {
            Ok(Some(l)) => l,
            Ok(None) => return FedResponse::Ok,
            Err(e) => return FedResponse::Error(format!("could not read links: {e}")),
        };
        // Decided here first, so a peer repeating cards costs no Raft write; the state machine
        // decides again when it applies the write.
        if let Some(reason) = self.claims_elsewhere(&card, &[link.name.as_str()]) {
            self.record_refusal(&link.name, format!("refused card update: {reason}"));
            return FedResponse::Denied(reason);
        }
        let expect = match self.expectation(Some(&link)) {
            Ok(e) => e,
            Err(e) => return FedResponse::Error(format!("could not read links: {e}")),
        };
        let held = expect.held.clone().unwrap_or_else(|| HeldKey::first(card.cluster_id()));
        match judge(&card, &held, &expect.held_members) {
            Ok(KeyVerdict::Same) if card.epoch() <= expect.known_epoch => return FedResponse::Ok,
            Err(e) if !matches!(e, KeyError::Conflict(_)) => {
                self.record_refusal(&link.name, format!("refused card update: {e}"));
                return FedResponse::Denied(e.to_string());
            }
            _ => {}
        }
        let cmd = Command::PeerCard {
            link: link.name.clone(),
            card: Box::new(card),
        };
        match self.cluster.write(cmd).await {
            Ok(CommandResult::Link(_)) | Ok(CommandResult::Rejected(Rejection::StaleCard { .. })) => FedResponse::Ok,
            Ok(CommandResult::Rejected(r)) => {
                let reason = r.to_string();
                tracing::warn!(link = %link.name, %reason, "refused a card update");
                self.record_refusal(&link.name, format!("refused card update: {reason}"));
                FedResponse::Denied(reason)
            }
            Ok(other) => FedResponse::Error(format!("unexpected result {other:?}")),
            Err(e) => FedResponse::Error(format!("could not record the card: {e}")),
        }
    }

    /// The key generation held for `link`'s peer (cards order by generation, then epoch).
    fn held_generation(&self, link: &causeway_catalog::links::LinkRecord) -> u64 {
        self.expectation(Some(link))
            .ok()
            .and_then(|e| e.held)
            .map(|h| h.key.generation)
            .unwrap_or(0)
    }

    async fn serve_request(
        &self,
        peer: &PeerSession,
        remote: &EndpointKey,
        req: FedRequest,
        conn: &Connection,
    ) -> FedResponse {
        // A session speaks for its cluster only while that cluster's newest card we hold still
        // lists its endpoint: a member its own cluster removed keeps no authority here through a
        // connection it holds open. (A card no newer than the session's listed it at the
        // handshake; one being recorded just now is newer only once applied.)
        if let Ok(Some(link)) = self.link_pinned_to(&peer.card.cluster_id())
            && let Some(held) = &link.card
            && !held.card.lists(remote)
            && (self.held_generation(&link), held.card.epoch) > (peer.card.key.generation, peer.card.epoch())
        {
            tracing::info!(peer = %remote, "session of an endpoint its cluster no longer lists; closed");
            conn.close(CLOSE_REFUSED.into(), b"no longer listed by its cluster");
            return FedResponse::Error("this endpoint is no longer listed in its cluster's card".into());
        }
        match req {
            FedRequest::Heartbeat { seq, .. } => {
                let card_epoch = self.own_card().ok().flatten().map(|c| c.card.epoch).unwrap_or(0);
                let links_back = self.links_back(&peer.card, remote);
                if !links_back {
                    self.record_inbound(&peer.card.signed, *remote);
                }
                FedResponse::HeartbeatAck {
                    seq,
                    card_epoch,
                    links_back,
                }
            }
            FedRequest::CardUpdate(card) => self.accept_card_update(peer, *card).await,
            FedRequest::CatalogQuery { after, limit } => {
                if let Err(reason) = self.confirm_current().await {
                    return FedResponse::Error(reason);
                }
                self.serve_catalog_query(peer.card.cluster_id(), after, limit)
            }
            FedRequest::CatalogLookup { name } => {
                if let Err(reason) = self.confirm_current().await {
                    return FedResponse::Error(reason);
                }
                self.serve_catalog_lookup(peer.card.cluster_id(), &name)
            }
            FedRequest::CatalogChanged { changes } => {
                self.accept_catalog_changes(peer.card.cluster_id(), changes).await
            }
            FedRequest::PushOffer { name, version } => {
                self.accept_push_offer(peer.card.cluster_id(), name, version).await
            }
            FedRequest::WriteBack { name, bundle } => {
                let mirroring = self.mirroring.get().and_then(|w| w.upgrade());
                match mirroring {
                    Some(m) => {
                        m.accept_write_back(peer.card.cluster_id(), *remote, &name, &bundle)
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
        // A link that takes no pushes gets one answer whatever the name, so that its offers
        // cannot tell it which names exist here.
        let subscription = match &local {
            Some(r) if r.mirror_of != Some(origin) && link_takes_pushes => None,
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
                let cluster = peer.card.cluster_id();
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
