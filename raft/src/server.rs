//! The serving side of `causeway/raft/1`: refuses endpoints that are not members (and closes a
//! member's connections once it is removed), decodes each request with size limits, answers a
//! bad one with an error and a closed stream, and hands good ones to the local Raft node.

use std::time::Duration;

use causeway_proto::EndpointKey;
use iroh::{
    endpoint::{Connection, RecvStream, SendStream},
    protocol::{AcceptError, ProtocolHandler},
};
use openraft::async_runtime::watch::WatchReceiver as _;

use crate::admission::LogLimit;
use crate::append_stream;
use crate::cluster::ClusterNode;
use crate::types::{Snapshot, SnapshotData};
use crate::wire::{self, RaftRequest, RaftResponse, StreamKind};

/// QUIC application close code for a refused peer.
pub const CLOSE_NOT_MEMBER: u32 = 403;
/// Least time between two log lines about refused peers (a removed member keeps dialling).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

static REFUSALS_LOGGED: LogLimit = LogLimit::new(REFUSAL_LOG_EVERY);

fn log_refusal(peer: &EndpointKey, what: &str) {
    if let Some(skipped) = REFUSALS_LOGGED.allow() {
        tracing::warn!(%peer, skipped, "refused {what}: not a member of this cluster");
    }
}

#[derive(Clone)]
pub struct RaftService {
    node: ClusterNode,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").field("id", &self.node.id()).finish()
    }
}

impl RaftService {
    pub fn new(node: ClusterNode) -> Self {
        Self { node }
    }
}

impl ProtocolHandler for RaftService {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = EndpointKey(*conn.remote_id().as_bytes());
        if !self.node.may_connect(&remote) {
            log_refusal(&remote, "raft connection");
            conn.close(CLOSE_NOT_MEMBER.into(), b"not a member of this cluster");
            return Ok(());
        }
        // Membership changes (not replication progress) wake this: a member removed while
        // connected loses the connection, not only each later request.
        let mut changes = self.node.raft().server_metrics();
        let mut watching = true;
        loop {
            tokio::select! {
                accepted = conn.accept_bi() => {
                    let Ok((send, recv)) = accepted else { break };
                    let node = self.node.clone();
                    tokio::spawn(async move { handle_stream(node, remote, send, recv).await });
                }
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The Raft node stopped; the router closes the connection.
                        watching = false;
                    } else if !self.node.may_connect(&remote) {
                        tracing::info!(peer = %remote, "closing the raft connection of a node that left the membership");
                        conn.close(CLOSE_NOT_MEMBER.into(), b"not a member of this cluster");
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

async fn handle_stream(node: ClusterNode, remote: EndpointKey, mut send: SendStream, mut recv: RecvStream) {
    let response = match read_request(&node, &remote, &mut recv).await {
        Ok(Incoming::AppendStream) => return append_stream::serve(&node, remote, send, recv).await,
        Ok(Incoming::Request(req)) => dispatch(&node, remote, *req).await,
        Err(msg) => {
            tracing::warn!(peer = %remote, error = %msg, "bad raft request");
            RaftResponse::Error(msg)
        }
    };
    if let Err(e) = wire::write_frame(&mut send, &response, wire::MAX_RPC_FRAME).await {
        tracing::debug!(peer = %remote, error = %e, "could not answer raft request");
    }
    let _ = send.finish();
    // Whatever the peer still sends on this stream is not read.
    let _ = recv.stop(0u32.into());
}

/// What a new stream carries.
enum Incoming {
    /// One request, answered by one response.
    Request(Box<RaftRequest>),
    /// A replication session's appends, answered in order.
    AppendStream,
}

async fn read_request(node: &ClusterNode, remote: &EndpointKey, recv: &mut RecvStream) -> Result<Incoming, String> {
    // Membership can change while a connection stays open: check every request.
    let standing = node.standing(remote);
    if !standing.may_connect() {
        log_refusal(remote, "raft request");
        return Err(NOT_MEMBER.into());
    }
    let kind = wire::read_kind(recv).await.map_err(|e| e.to_string())?;
    if kind == StreamKind::Append {
        return Ok(Incoming::AppendStream);
    }
    let request = wire::read_frame(recv, kind.limit()).await.map_err(|e| e.to_string())?;
    Ok(Incoming::Request(Box::new(request)))
}

/// The refusal a non-member's request gets.
const NOT_MEMBER: &str = "not a member of this cluster";

async fn dispatch(node: &ClusterNode, remote: EndpointKey, req: RaftRequest) -> RaftResponse {
    // Decided again on the request itself: the standing may have changed while it was read,
    // and a join peer may only replicate to this node.
    if !node.standing(&remote).may_ask(&req) {
        log_refusal(&remote, "raft request");
        return RaftResponse::Error(NOT_MEMBER.into());
    }
    let raft = node.raft();
    match req {
        RaftRequest::Append(r) => match raft.append_entries(r).await {
            Ok(r) => RaftResponse::Append(r),
            Err(e) => RaftResponse::Error(e.to_string()),
        },
        RaftRequest::Vote(r) => match raft.vote(r).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => RaftResponse::Error(e.to_string()),
        },
        RaftRequest::PreVote(r) => match raft.pre_vote(r).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => RaftResponse::Error(e.to_string()),
        },
        RaftRequest::Snapshot { vote, meta, data } => {
            match raft
                .install_full_snapshot(
                    vote,
                    Snapshot {
                        meta,
                        snapshot: SnapshotData::Encoded(data),
                    },
                )
                .await
            {
                Ok(r) => RaftResponse::Snapshot(r),
                Err(e) => RaftResponse::Error(e.to_string()),
            }
        }
        RaftRequest::Forward(f) => RaftResponse::Forward(node.execute_local(remote, f).await),
    }
}
