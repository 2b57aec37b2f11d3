//! This cluster's own card, kept by the leader: the card the Raft membership calls for, a new
//! epoch when members or addresses change (after rotating the key when a member left), and
//! sending it to peers at once.

use std::sync::Arc;

use causeway_catalog::{Command, CommandResult};
use causeway_proto::{
    card::{CardMember, ClusterCard, SignedCard},
    fed::{FedRequest, FedResponse},
    rotation::KeyedCard,
};
use iroh::endpoint::Connection;
use openraft::async_runtime::watch::WatchReceiver as _;

use super::{Federation, session};
use crate::node::now_ms;

impl Federation {
    /// The card this cluster should publish now, from the Raft membership.
    pub(super) fn desired_card(&self) -> Option<ClusterCard> {
        let identity = self.identity().ok().flatten()?;
        let m = self.cluster.raft().metrics().borrow_watched().clone();
        let mut members: Vec<CardMember> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| CardMember {
                endpoint: *id,
                addrs: node.addrs.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.endpoint);
        members.truncate(causeway_proto::card::MAX_CARD_MEMBERS);
        Some(ClusterCard {
            cluster_id: identity.cluster_id,
            name: identity.name,
            members,
            epoch: 0,
            issued_at_ms: now_ms(),
        })
    }

    /// Publishes a new card when the membership changed. A member that left makes the key
    /// rotate first (the rotation publishes the card); a card still under the previous key
    /// (a rotation whose card was not published) is replaced and sent to every linked peer.
    pub(super) async fn refresh_own_card(self: &Arc<Self>) -> Result<(), String> {
        let Some(desired) = self.desired_card() else {
            return Ok(());
        };
        let key = self.own_key().map_err(|e| e.to_string())?.ok_or("no identity")?;
        let current = self.own_card().map_err(|e| e.to_string())?;
        let Some(c) = &current else {
            return self.publish_card(desired, false).await;
        };
        if c.verify_as(&key.key).is_err() {
            return self.publish_card(desired, true).await;
        }
        if c.card.members.iter().any(|m| !desired.lists(&m.endpoint)) {
            // The departed member knows the current key: replace it before anything else.
            let due = {
                let now = std::time::Instant::now();
                let mut retry = self.rotation_retry_at.lock().unwrap_or_else(|e| e.into_inner());
                let due = retry.is_none_or(|at| now >= at);
                if due {
                    *retry = Some(now + super::rotation::ROTATION_SIGN_TIMEOUT);
                }
                due
            };
            if !due {
                return Ok(());
            }
            let view = self.rotate_key().await.map_err(|e| e.to_string())?;
            *self.rotation_retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(
                generation = view.generation,
                signers = view.signers,
                "rotated the cluster key after a member left"
            );
            return Ok(());
        }
        if c.card.members == desired.members && c.card.name == desired.name {
            return Ok(());
        }
        self.publish_card(desired, false).await
    }

    /// Signs `desired` as the next epoch under the current key, records it, and tells peers:
    /// those with a live session, or (`all_links`, after a rotation) every linked peer.
    pub(super) async fn publish_card(
        self: &Arc<Self>,
        mut desired: ClusterCard,
        all_links: bool,
    ) -> Result<(), String> {
        let key = self.own_key().map_err(|e| e.to_string())?.ok_or("no identity")?;
        let current = self.own_card().map_err(|e| e.to_string())?;
        desired.epoch = current.map(|c| c.card.epoch).unwrap_or(0) + 1;
        let card = SignedCard::sign_as(desired, &key.key, &key.secret.0);
        let epoch = card.card.epoch;
        match self.cluster.write(Command::SetOwnCard { card: card.clone() }).await {
            Ok(CommandResult::Applied) => {
                tracing::info!(epoch, generation = key.key.generation, "published a new cluster card");
                let keyed = KeyedCard {
                    signed: card,
                    key: key.key,
                    rotation: key.statement,
                };
                self.announce_card(keyed, all_links);
                Ok(())
            }
            Ok(other) => Err(format!("card not recorded: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends `card` to peers at once, on their live sessions, or to every linked peer (dialling
    /// those without one: the handshake itself then carries the card).
    fn announce_card(self: &Arc<Self>, card: KeyedCard, all_links: bool) {
        if !all_links {
            let sessions: Vec<Connection> = self.live().sessions.values().cloned().collect();
            for conn in sessions {
                let card = card.clone();
                tokio::spawn(async move {
                    let _ = session::request(&conn, &FedRequest::CardUpdate(Box::new(card))).await;
                });
            }
            return;
        }
        let links = self.links().unwrap_or_default();
        for link in links.into_iter().filter(|l| !l.is_removed() && l.pinned.is_some()) {
            let fed = self.clone();
            let card = card.clone();
            tokio::spawn(async move {
                match fed.session(&link).await {
                    Ok(conn) => match session::request(&conn, &FedRequest::CardUpdate(Box::new(card))).await {
                        Ok(FedResponse::Ok) => {}
                        other => tracing::warn!(link = %link.name, answer = ?other, "peer did not take our new card"),
                    },
                    Err(e) => tracing::warn!(link = %link.name, error = %e, "could not send our new card"),
                }
            });
        }
    }
}
