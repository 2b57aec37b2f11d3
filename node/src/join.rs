//! Joining a cluster with an invite ticket: the serving side on `causeway/join/1` (throttle,
//! check the ticket locally, redeem it through Raft, add the node as a learner) and the joining
//! side that creates a new data dir for the node once the cluster has accepted it.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use causeway_catalog::{Command, CommandResult};
use causeway_proto::{
    ClusterId, EndpointKey, InviteTicket, alpn,
    join::{JoinRequest, JoinResponse, MAX_JOIN_ADDRS, MAX_JOIN_FRAME},
    ticket::{MAX_TICKET_MEMBERS, TicketMember},
};
use causeway_raft::{ClusterNode, MemberNode, Role, wire};
use iroh::{
    EndpointAddr, EndpointId,
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};

use crate::api::JoinedView;
use crate::config::{Config, Discovery};
use crate::datadir::{self, NodeState};
use crate::endpoint;
use crate::error::NodeError;
use crate::join_guard::{JoinGuard, check_ticket};
use crate::node::{endpoint_key, now_ms};

/// How long one join exchange may take on either side.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connected joiner has to open its stream and send its request: a source that sends
/// nothing must not hold one of the few join slots for the whole exchange time.
pub const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the answer is left for the joiner to read before the connection is dropped.
const JOIN_LINGER: Duration = Duration::from_secs(5);

/// Serves join requests for this node's cluster.
#[derive(Clone)]
pub struct JoinService {
    cluster: ClusterNode,
    cluster_id: ClusterId,
    cluster_name: String,
    guard: Arc<JoinGuard>,
}

impl std::fmt::Debug for JoinService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinService")
            .field("cluster", &self.cluster_id)
            .finish()
    }
}

impl JoinService {
    pub fn new(cluster: ClusterNode, cluster_id: ClusterId, cluster_name: String) -> Self {
        Self {
            cluster,
            cluster_id,
            cluster_name,
            guard: Arc::new(JoinGuard::default()),
        }
    }

    /// Logs a refusal that anyone can provoke, at most once per interval.
    fn log_refusal(&self, joiner: &EndpointKey, reason: &dyn std::fmt::Display) {
        if let Some(skipped) = self.guard.log.allow() {
            tracing::warn!(%joiner, %reason, skipped, "join refused");
        }
    }

    /// The ticket checked against this member's state, then (only if unknown here) against the
    /// cluster's current state after a read barrier: a ticket made a moment ago may not have
    /// reached this member yet. Nothing is written.
    async fn precheck(&self, invite_id: &[u8; 16], secret_hash: &[u8; 32]) -> Result<(), String> {
        let read = |cluster: &ClusterNode| -> Result<Option<causeway_catalog::Invite>, String> {
            let txn = redb::ReadableDatabase::begin_read(&*cluster.database()).map_err(|e| e.to_string())?;
            causeway_catalog::state::get_invite(&txn, invite_id).map_err(|e| e.to_string())
        };
        let invite = read(&self.cluster)?;
        let invite = match invite {
            Some(i) => Some(i),
            None => {
                self.cluster
                    .read_barrier()
                    .await
                    .map_err(|e| format!("cluster unavailable: {e}"))?;
                read(&self.cluster)?
            }
        };
        check_ticket(invite.as_ref(), secret_hash, now_ms()).map_err(|r| r.to_string())?;
        // The maker of a ticket must still be a member: a removed member knows the secrets of
        // the invites it made, and their revocation is a second write that a crash can lose.
        match invite {
            Some(i) if !self.cluster.is_member(&i.created_by) => {
                Err(causeway_catalog::Rejection::InviteRevoked.to_string())
            }
            _ => Ok(()),
        }
    }

    async fn handle(&self, joiner: EndpointKey, req: JoinRequest) -> JoinResponse {
        if req.addrs.len() > MAX_JOIN_ADDRS {
            return JoinResponse::Refused(format!("at most {MAX_JOIN_ADDRS} addresses may be announced"));
        }
        let secret_hash = *blake3::hash(&req.secret).as_bytes();
        // A forged ticket must not cost the cluster a committed entry: refuse it here.
        if let Err(reason) = self.precheck(&req.invite_id, &secret_hash).await {
            self.log_refusal(&joiner, &reason);
            return JoinResponse::Refused(reason);
        }
        let redeem = Command::RedeemInvite {
            invite_id: req.invite_id,
            secret_hash,
            joiner,
            now_ms: now_ms(),
        };
        // Raft stays the authority: two joiners racing with one ticket pass the check above,
        // and only the first redeem applied wins.
        match self.cluster.write(redeem).await {
            Ok(CommandResult::InviteRedeemed) => {}
            Ok(CommandResult::Rejected(r)) => {
                self.log_refusal(&joiner, &r);
                return JoinResponse::Refused(r.to_string());
            }
            Ok(other) => return JoinResponse::Refused(format!("unexpected result {other:?}")),
            Err(e) => return JoinResponse::Refused(format!("cluster unavailable: {e}")),
        }
        if let Err(e) = self.cluster.add_learner(joiner, MemberNode { addrs: req.addrs }).await {
            return JoinResponse::Refused(format!("ticket accepted but adding the node failed: {e}"));
        }
        tracing::info!(joiner = %joiner, "node joined as learner");
        let status = self.cluster.status().await;
        let members = status
            .members
            .into_iter()
            .filter(|m| m.role == Role::Voter)
            .take(MAX_TICKET_MEMBERS)
            .map(|m| TicketMember {
                endpoint: m.endpoint_id,
                addrs: m.addrs,
            })
            .collect();
        JoinResponse::Accepted {
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name.clone(),
            members,
        }
    }
}

impl ProtocolHandler for JoinService {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let joiner = endpoint_key(&conn.remote_id());
        let admitted = self.guard.admit(joiner, remote_ip(&conn));
        let exchange = async {
            let (mut send, mut recv) = tokio::time::timeout(JOIN_REQUEST_TIMEOUT, conn.accept_bi())
                .await
                .map_err(|_| "no join request in time".to_string())?
                .map_err(|e| e.to_string())?;
            let response = match &admitted {
                // Refused without reading the request: a throttled source costs nothing more.
                Err(throttled) => {
                    self.log_refusal(&joiner, throttled);
                    JoinResponse::Refused(throttled.to_string())
                }
                Ok(_) => {
                    let read = wire::read_frame::<JoinRequest>(&mut recv, MAX_JOIN_FRAME);
                    match tokio::time::timeout(JOIN_REQUEST_TIMEOUT, read).await {
                        Ok(Ok(req)) => self.handle(joiner, req).await,
                        Ok(Err(e)) => {
                            self.log_refusal(&joiner, &format!("bad join request: {e}"));
                            JoinResponse::Refused(format!("bad join request: {e}"))
                        }
                        Err(_) => return Err("no join request in time".to_string()),
                    }
                }
            };
            wire::write_frame(&mut send, &response, MAX_JOIN_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let done = tokio::time::timeout(JOIN_TIMEOUT, exchange).await;
        // The join slot is free once the answer is written.
        drop(admitted);
        match done {
            Ok(Ok(())) => {
                // Let the joiner read the answer before the connection goes away.
                let _ = tokio::time::timeout(JOIN_LINGER, conn.closed()).await;
            }
            Ok(Err(e)) => tracing::debug!(peer = %joiner, error = %e, "join exchange failed"),
            Err(_) => self.log_refusal(&joiner, &"join exchange timed out"),
        }
        Ok(())
    }
}

/// The IP address the connection currently uses, for the per-address budget; None when it goes
/// through a relay.
fn remote_ip(conn: &Connection) -> Option<std::net::IpAddr> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected()).or_else(|| paths.iter().next())?;
    match path.remote_addr() {
        iroh::TransportAddr::Ip(a) => Some(a.ip()),
        _ => None,
    }
}

async fn ask(endpoint: &iroh::Endpoint, member: &TicketMember, req: &JoinRequest) -> Result<JoinResponse, String> {
    let id = EndpointId::from_bytes(member.endpoint.as_bytes()).map_err(|e| e.to_string())?;
    let mut addr = EndpointAddr::new(id);
    for a in &member.addrs {
        addr = addr.with_ip_addr(*a);
    }
    let conn = endpoint.connect(addr, alpn::JOIN).await.map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame(&mut send, req, MAX_JOIN_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let resp = wire::read_frame(&mut recv, MAX_JOIN_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"done");
    Ok(resp)
}

/// Creates a node in `data_dir` (which must not hold one) that is a member of the ticket's
/// cluster. The node starts as a learner and is promoted to voter once `causeway run` has let
/// it catch up.
pub async fn join_cluster(
    data_dir: &Path,
    ticket: &InviteTicket,
    bind: SocketAddr,
    discovery: Discovery,
) -> Result<JoinedView, NodeError> {
    if ticket.expires_at_ms < now_ms() {
        return Err(NodeError::Refused("invite ticket has expired".into()));
    }
    let staging = datadir::stage_new(data_dir)?;
    let result = async {
        let key = iroh::SecretKey::generate();
        // The ticket carries the members' addresses. The DHT is left to `run`: its bootstrap
        // list is in the config written below, and it takes longer to join than a join lasts.
        let ep = endpoint::bind(key.clone(), bind, discovery.without_dht(), vec![]).await?;
        let req = JoinRequest {
            invite_id: ticket.invite_id,
            secret: ticket.secret,
            addrs: endpoint::advertised_addrs(&ep),
        };
        let mut last_error = String::from("ticket lists no member");
        let mut accepted = None;
        for member in &ticket.members {
            match tokio::time::timeout(JOIN_TIMEOUT, ask(&ep, member, &req)).await {
                Ok(Ok(JoinResponse::Accepted {
                    cluster_id,
                    cluster_name,
                    members,
                })) => {
                    accepted = Some((cluster_id, cluster_name, members));
                    break;
                }
                Ok(Ok(JoinResponse::Refused(reason))) => {
                    ep.close().await;
                    return Err(NodeError::Refused(format!("the cluster refused to join: {reason}")));
                }
                Ok(Err(e)) => last_error = format!("member {}: {e}", member.endpoint.short()),
                Err(_) => last_error = format!("member {}: timed out", member.endpoint.short()),
            }
        }
        let id = endpoint_key(&ep.id());
        ep.close().await;
        let Some((cluster_id, cluster_name, members)) = accepted else {
            return Err(NodeError::Refused(format!(
                "no member of the cluster could be reached: {last_error}"
            )));
        };
        if cluster_id != ticket.cluster {
            return Err(NodeError::Refused(format!(
                "the member answered for cluster {cluster_id}, but the ticket names {}",
                ticket.cluster
            )));
        }
        // The voters named in the answer: the leader's first appends come from one of them (see
        // causeway_raft's `JoinPeers`). Trusted only until the membership is known, then pruned.
        let state = NodeState {
            cluster_id,
            cluster_name: cluster_name.clone(),
            bootstrap_peers: members.iter().map(|m| m.endpoint).filter(|m| *m != id).collect(),
        };
        datadir::write_key(&staging, &key)?;
        datadir::write_atomic(
            &staging.join(datadir::CONFIG_FILE),
            Config::new(bind, discovery).to_toml().as_bytes(),
            0o600,
        )?;
        datadir::write_state(&staging, &state)?;
        Ok(JoinedView {
            endpoint_id: id.to_string(),
            cluster_id: cluster_id.to_string(),
            cluster_name,
            data_dir: data_dir.display().to_string(),
        })
    }
    .await;
    match result {
        Ok(view) => {
            datadir::commit_staged(&staging, data_dir)?;
            Ok(view)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
