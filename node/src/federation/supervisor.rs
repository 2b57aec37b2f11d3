//! The leader's outbound link work, done once per cluster: keep this cluster's card current
//! ([`super::own_card`]); heartbeat every link, dialling and handshaking as needed; pin a peer
//! at its first handshake and take its newer cards and keys; say goodbye to removed links. When leadership moves, the new leader takes over from a clean slate. The
//! change notifier runs beside it ([`super::notify`]), woken by commits rather than this tick.

use std::{sync::Arc, time::Duration};

use causeway_catalog::{Command, CommandResult, Rejection, links::LinkRecord};
use causeway_proto::{
    EndpointKey,
    fed::{Expectation, FedRequest, FedResponse},
    rotation::{KeyError, KeyVerdict},
};
use iroh::{EndpointAddr, EndpointId, endpoint::Connection};

use super::Federation;
use super::session::{self, Dialed, OwnSide};
use crate::node::now_ms;

/// Shortest supervisor tick.
const MIN_TICK: Duration = Duration::from_millis(50);
/// How long dialling one endpoint of a peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

impl Federation {
    /// Runs until the federation is dropped: the heartbeat loop on its tick, and the change
    /// notifier woken by applied entries (see [`super::notify`]).
    pub async fn supervise(self: Arc<Self>) {
        tokio::join!(self.clone().link_loop(), self.notify_loop());
    }

    /// Cards, heartbeats, goodbyes and the periodic resync, on a fixed tick.
    async fn link_loop(self: Arc<Self>) {
        let tick = Duration::from_millis(self.cfg.heartbeat_ms / 4).max(MIN_TICK);
        let mut was_leader = false;
        let resync_every = Duration::from_millis(self.cfg.catalog_resync_ms.max(1000));
        let mut next_resync = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            // Every member signs a key rotation the leader started.
            self.sign_pending_rotation().await;
            let leader = self.cluster.is_leader();
            if !leader {
                if was_leader {
                    self.step_down();
                }
                was_leader = false;
                continue;
            }
            if !was_leader {
                next_resync = tokio::time::Instant::now();
            }
            was_leader = true;
            if let Err(e) = self.refresh_own_card().await {
                tracing::debug!(error = %e, "card refresh");
            }
            let links = match self.links() {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "reading links");
                    continue;
                }
            };
            self.heartbeat_due(&links);
            self.farewell_removed(&links);
            if tokio::time::Instant::now() >= next_resync {
                next_resync = tokio::time::Instant::now() + resync_every;
                let fed = self.clone();
                tokio::spawn(async move { fed.resync_peer_views().await });
            }
        }
    }

    /// Leadership moved away: forget live state and close our outbound sessions.
    fn step_down(&self) {
        let mut live = self.live();
        for (_, conn) in live.sessions.drain() {
            conn.close(0u32.into(), b"leadership moved");
        }
        live.health.clear();
    }

    fn heartbeat_due(self: &Arc<Self>, links: &[LinkRecord]) {
        let now = now_ms();
        for link in links.iter().filter(|l| !l.is_removed()) {
            let seq = {
                let mut live = self.live();
                if live.busy.contains(&link.name) {
                    continue;
                }
                let h = live.health.entry(link.name.clone()).or_default();
                let seq = h.poll(now, &self.cfg);
                if seq.is_some() {
                    live.busy.insert(link.name.clone());
                }
                seq
            };
            if let Some(seq) = seq {
                let fed = self.clone();
                let link = link.clone();
                tokio::spawn(async move { fed.heartbeat(link, seq).await });
            }
        }
    }

    async fn heartbeat(self: Arc<Self>, link: LinkRecord, seq: u64) {
        let outcome = async {
            if self.awaits_confirmation(&link) {
                // The admin confirmed the peer: handshake again to take its card.
                self.drop_session(&link.name);
            }
            let conn = self.session(&link).await?;
            let own_epoch = self.own_card().ok().flatten().map(|c| c.card.epoch).unwrap_or(0);
            match session::request(
                &conn,
                &FedRequest::Heartbeat {
                    seq,
                    card_epoch: own_epoch,
                },
            )
            .await
            {
                Ok(FedResponse::HeartbeatAck {
                    seq,
                    card_epoch,
                    links_back,
                }) => Ok((seq, card_epoch, links_back)),
                Ok(FedResponse::Error(e)) => Err(format!("peer answered: {e}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => {
                    self.drop_session(&link.name);
                    Err(e)
                }
            }
        }
        .await;
        let now = now_ms();
        self.live().busy.remove(&link.name);
        match outcome {
            Ok((acked, card_epoch, links_back)) => {
                let known = link.card.as_ref().map(|c| c.card.epoch).unwrap_or(0);
                if card_epoch > known {
                    // Re-handshake next time to fetch the newer card.
                    self.drop_session(&link.name);
                }
                if let Some(h) = self.live().health.get_mut(&link.name) {
                    h.on_ack(now, acked, links_back);
                }
            }
            Err(reason) => {
                tracing::debug!(link = %link.name, %reason, "heartbeat failed");
                if let Some(h) = self.live().health.get_mut(&link.name) {
                    h.on_failure(seq, &reason);
                }
            }
        }
    }

    pub(super) fn drop_session(&self, name: &str) {
        if let Some(c) = self.live().sessions.remove(name) {
            c.close(0u32.into(), b"reconnecting");
        }
    }

    /// An open, handshaken connection to the link's peer: the live session if there is one,
    /// else a new one, dialling its endpoints in turn (one dial per link at a time).
    pub(crate) async fn session(&self, link: &LinkRecord) -> Result<Connection, String> {
        if let Some(c) = self.live_session(&link.name) {
            // A session to an endpoint the peer's card no longer lists (a member it removed,
            // which may still run and answer under the old key) is not the peer any more.
            let remote = EndpointKey(*c.remote_id().as_bytes());
            if link.card.as_ref().is_none_or(|card| card.card.lists(&remote)) {
                return Ok(c);
            }
            self.drop_session(&link.name);
        }
        let gate = self.dialing().entry(link.name.clone()).or_default().clone();
        let _dialing = gate.lock().await;
        // Whoever held the gate may have just opened it.
        if let Some(c) = self.live_session(&link.name) {
            return Ok(c);
        }
        let (conn, dialed) = self.dial_link(link).await?;
        if let Err(reason) = self.after_handshake(link, &dialed).await {
            conn.close(super::server::CLOSE_REFUSED.into(), b"card refused");
            return Err(reason);
        }
        self.live().sessions.insert(link.name.clone(), conn.clone());
        Ok(conn)
    }

    fn live_session(&self, name: &str) -> Option<Connection> {
        self.live()
            .sessions
            .get(name)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn dialing(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the admin confirmed this link's peer and its next card is awaited.
    fn awaits_confirmation(&self, link: &LinkRecord) -> bool {
        link.pinned.is_some_and(|c| {
            self.read(|t| causeway_catalog::keys::held_key(t, &c))
                .is_ok_and(|k| k.confirm)
        })
    }

    /// Dials the link's peer endpoints in turn and handshakes with the first that answers
    /// (first the endpoint an admin confirmed, if any).
    pub(crate) async fn dial_link(&self, link: &LinkRecord) -> Result<(Connection, Dialed), String> {
        let (secret, card) = self
            .own_keyed_card()
            .map_err(|e| e.to_string())?
            .ok_or("cluster has no card yet")?;
        let own = OwnSide {
            endpoint: self.local,
            card,
            secret,
        };
        let expect = self.expectation(Some(link)).map_err(|e| e.to_string())?;
        let mut targets = link.dial_targets();
        if expect.held.as_ref().is_some_and(|h| h.confirm) {
            targets.retain(|(e, _)| *e != link.endpoint);
            targets.insert(0, (link.endpoint, link.addrs.clone()));
        }
        let mut last_error = String::from("no endpoint to dial");
        for (endpoint, addrs) in targets {
            match self.dial(&endpoint, &addrs, &own, &expect).await {
                Ok(found) => return Ok(found),
                Err(e) => last_error = format!("{}: {e}", endpoint.short()),
            }
        }
        Err(last_error)
    }

    pub(crate) async fn dial(
        &self,
        endpoint: &EndpointKey,
        addrs: &[std::net::SocketAddr],
        own: &OwnSide,
        expect: &Expectation,
    ) -> Result<(Connection, Dialed), String> {
        let id = EndpointId::from_bytes(endpoint.as_bytes()).map_err(|e| e.to_string())?;
        let mut addr = EndpointAddr::new(id);
        for a in addrs {
            addr = addr.with_ip_addr(*a);
        }
        let conn = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, causeway_proto::alpn::FED))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(session::HANDSHAKE_TIMEOUT, session::dial_handshake(&conn, own, expect)).await {
            Ok(Ok(d)) => Ok((conn, d)),
            Ok(Err(e)) => {
                conn.close(super::server::CLOSE_REFUSED.into(), b"handshake refused");
                if let session::DialError::RefusedCard(
                    causeway_proto::fed::HandshakeError::Key(KeyError::Conflict(_)),
                    card,
                ) = &e
                    && let Ok(Some(link)) = self.link_pinned_to(&card.cluster_id())
                {
                    // Recorded through Raft, so every member refuses both keys from now on.
                    self.record_peer_card(&link.name, (**card).clone());
                }
                Err(e.to_string())
            }
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Pins the peer at the first handshake, or records a newer card or key; the state
    /// machine decides, and a card it refuses (say, one claiming another peer's endpoint) ends
    /// the session.
    async fn after_handshake(&self, link: &LinkRecord, dialed: &Dialed) -> Result<(), String> {
        let known = link.card.as_ref().map(|c| c.card.epoch).unwrap_or(0);
        let newer = link.pinned.is_none() || dialed.verdict != KeyVerdict::Same || dialed.card.epoch() > known;
        if !newer {
            return Ok(());
        }
        let cmd = Command::PeerCard {
            link: link.name.clone(),
            card: Box::new(dialed.card.clone()),
        };
        match self.cluster.write(cmd).await {
            Ok(CommandResult::Link(l)) => {
                tracing::info!(link = %l.name, cluster = ?l.pinned, epoch = ?l.card.as_ref().map(|c| c.card.epoch), generation = dialed.card.key.generation, "peer card recorded");
                Ok(())
            }
            Ok(CommandResult::Rejected(Rejection::StaleCard { .. })) => Ok(()),
            Ok(CommandResult::Rejected(r)) => {
                let reason = format!("peer card refused: {r}");
                tracing::warn!(link = %link.name, %reason, "peer card not recorded");
                self.record_refusal(&link.name, reason.clone());
                Err(reason)
            }
            Ok(other) => Err(format!("peer card not recorded: {other:?}")),
            Err(e) => {
                tracing::warn!(link = %link.name, error = %e, "peer card not recorded");
                Ok(())
            }
        }
    }

    /// Tells peers of removed links goodbye and closes their connections.
    fn farewell_removed(&self, links: &[LinkRecord]) {
        for link in links.iter().filter(|l| l.is_removed()) {
            self.dialing().remove(&link.name);
            self.forget_outbox(&link.name);
            let conn = {
                let mut live = self.live();
                live.health.remove(&link.name);
                live.refusals.remove(&link.name);
                live.sessions.remove(&link.name)
            };
            if let Some(conn) = conn {
                tokio::spawn(async move {
                    let bye = FedRequest::Goodbye {
                        reason: "link removed".into(),
                    };
                    let _ = session::request(&conn, &bye).await;
                    conn.close(0u32.into(), b"link removed");
                });
            }
        }
    }
}
