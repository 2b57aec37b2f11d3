//! Rotating the cluster key, on the leader: a new key is proposed through Raft, every member
//! still listed in the current card signs it with its node key (through Raft as well, so no
//! extra member-to-member protocol is needed), the current key signs the statement, and the new
//! key is adopted and published to every linked peer at once. Only members the committed
//! membership still holds receive the new secret: the proposal is appended after the removal.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use causeway_catalog::{
    Command, CommandResult,
    keys::{KeySecret, pending_rotation},
};
use causeway_proto::{
    card::cluster_id_of,
    rotation::{NodeSignature, RotationBody, RotationStatement, majority},
};
use openraft::async_runtime::watch::WatchReceiver as _;
use serde::{Deserialize, Serialize};

use super::Federation;
use crate::error::NodeError;

/// How long the leader waits for members' signatures before it rotates with those it has.
pub const ROTATION_SIGN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader looks at the signatures gathered.
const SIGNATURE_POLL: Duration = Duration::from_millis(50);

/// The outcome of a rotation, as `cluster rotate-key` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationView {
    pub generation: u64,
    /// Members of the previous card who signed, and how many it listed.
    pub signers: usize,
    pub members: usize,
    /// Whether peers follow the new key by themselves (a majority signed); otherwise each
    /// peer's admin must confirm this cluster with `link add`.
    pub majority: bool,
}

impl Federation {
    /// Signs the rotation being gathered with this node's key, if this node is listed in the
    /// current card and has not signed it yet.
    pub(super) async fn sign_pending_rotation(&self) {
        let Ok(Some(pending)) = self.read(pending_rotation) else {
            return;
        };
        if pending.signatures.iter().any(|s| s.endpoint == self.local) {
            return;
        }
        let listed = self
            .own_card()
            .ok()
            .flatten()
            .is_some_and(|c| c.card.lists(&self.local));
        if !listed {
            return;
        }
        let signature = NodeSignature::sign(&self.endpoint.secret_key().to_bytes(), &pending.body);
        match self
            .cluster
            .write(Command::RotationSign {
                signature: Box::new(signature),
            })
            .await
        {
            Ok(CommandResult::Applied) => tracing::info!(generation = pending.body.generation, "signed a key rotation"),
            Ok(other) => tracing::debug!(result = ?other, "rotation signature not recorded"),
            Err(e) => tracing::debug!(error = %e, "rotation signature not recorded"),
        }
    }

    /// Rotates the cluster key now (on the leader).
    pub async fn rotate_key(self: &Arc<Self>) -> Result<RotationView, NodeError> {
        let _one = self.rotating.lock().await;
        if !self.cluster.is_leader() {
            return Err(NodeError::Refused("only the leader rotates the key; try again".into()));
        }
        let current = self
            .own_key()?
            .ok_or_else(|| NodeError::Refused("cluster has no identity yet".into()))?;
        let card = self
            .own_card()?
            .ok_or_else(|| NodeError::Refused("cluster has no card yet".into()))?;
        let universe = card.card.endpoints();
        let members: BTreeSet<_> = {
            let m = self.cluster.raft().metrics().borrow_watched().clone();
            m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
        };
        // Only those still members can sign; a departed one counts against the majority.
        let eligible: BTreeSet<_> = universe.iter().filter(|e| members.contains(e)).copied().collect();
        let secret: [u8; 32] = rand::random();
        let body = RotationBody {
            cluster_id: card.card.cluster_id,
            generation: current.key.generation + 1,
            new_key: cluster_id_of(&secret),
            previous_key: current.key.key,
        };
        match self
            .cluster
            .write(Command::RotationRequest {
                body: Box::new(body.clone()),
            })
            .await?
        {
            CommandResult::Applied => {}
            other => return Err(NodeError::Refused(format!("rotation not started: {other:?}"))),
        }
        self.cluster.settle().await?;
        self.sign_pending_rotation().await;
        let deadline = tokio::time::Instant::now() + ROTATION_SIGN_TIMEOUT;
        let signatures = loop {
            let pending = self.read(pending_rotation)?;
            if let Some(p) = &pending
                && p.body != body
            {
                return Err(NodeError::Conflict("another rotation replaced this one".into()));
            }
            let signed: Vec<NodeSignature> = pending
                .map(|p| p.signatures)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| eligible.contains(&s.endpoint))
                .collect();
            let enough = majority(signed.len(), universe.len()) || signed.len() >= eligible.len();
            if enough || tokio::time::Instant::now() >= deadline {
                break signed;
            }
            tokio::time::sleep(SIGNATURE_POLL).await;
        };
        let view = RotationView {
            generation: body.generation,
            signers: signatures.len(),
            members: universe.len(),
            majority: majority(signatures.len(), universe.len()),
        };
        let statement = RotationStatement::sign(body, &current.secret.0, signatures);
        let cmd = Command::RotateOwnKey {
            secret: KeySecret(secret),
            statement: Box::new(statement),
        };
        match self.cluster.write(cmd).await? {
            CommandResult::Applied => {}
            other => return Err(NodeError::Refused(format!("rotation not adopted: {other:?}"))),
        }
        self.cluster.settle().await?;
        if view.majority {
            tracing::info!(
                generation = view.generation,
                signers = view.signers,
                "rotated the cluster key"
            );
        } else {
            tracing::warn!(
                generation = view.generation,
                signers = view.signers,
                members = view.members,
                "rotated the cluster key without a majority of members: peers must confirm it with link add"
            );
        }
        let desired = self
            .desired_card()
            .ok_or_else(|| NodeError::Refused("cluster has no identity yet".into()))?;
        self.publish_card(desired, true).await.map_err(NodeError::Refused)?;
        Ok(view)
    }
}
