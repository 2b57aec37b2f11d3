//! The client side of `causeway/raft/1`: how this member sends Raft RPCs and forwarded requests
//! to another member over iroh. One cached QUIC connection per peer, one stream per request.

use std::time::Duration;

use causeway_proto::EndpointKey;
use futures::Stream;
use iroh::{Endpoint, EndpointAddr, EndpointId, endpoint::Connection};
use openraft::{
    OptionalSend, RaftNetworkFactory, RaftNetworkV2, StorageError,
    base::{BoxFuture, BoxStream},
    errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
    },
    type_config::TypeConfigExt,
};

use crate::append_stream;
use crate::store::EntryEncodings;

use crate::types::{MemberNode, Snapshot, SnapshotData, TypeConfig, Vote};
use crate::wire::{self, ForwardRequest, ForwardResponse, RaftRequest, RaftResponse, StreamKind, WireError};

/// One answer on an append stream, as openraft consumes it.
type AppendReply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// How long a forwarded request may take before the caller gives up on that leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling a member may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("member {0} unreachable: {1}")]
    Unreachable(EndpointKey, String),
    #[error("rpc to {0} failed: {1}")]
    Network(EndpointKey, String),
    #[error("member {0} refused the request: {1}")]
    Remote(EndpointKey, String),
    #[error("rpc to {0} timed out")]
    Timeout(EndpointKey),
    #[error("member {0} refused this node: it is not a member of the cluster (removed?)")]
    NotMember(EndpointKey),
}

/// Whether the peer closed `conn` because this node is not a member of its cluster.
fn closed_as_not_member(conn: &Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(iroh::endpoint::ConnectionError::ApplicationClosed(c))
            if c.error_code == crate::server::CLOSE_NOT_MEMBER.into()
    )
}

/// Turns a stored member key into an iroh endpoint address.
pub fn endpoint_addr(id: &EndpointKey, node: &MemberNode) -> Result<EndpointAddr, CallError> {
    let eid = EndpointId::from_bytes(id.as_bytes())
        .map_err(|e| CallError::Unreachable(*id, format!("invalid endpoint key: {e}")))?;
    let mut addr = EndpointAddr::new(eid);
    for a in &node.addrs {
        addr = addr.with_ip_addr(*a);
    }
    Ok(addr)
}

/// A connection to one member, redialled when it breaks.
pub struct PeerClient {
    endpoint: Endpoint,
    target: EndpointKey,
    node: MemberNode,
    /// This node's entries' log encodings, which append streams send.
    encodings: EntryEncodings,
    conn: Option<Connection>,
    /// A dial under way. It runs as a task of its own so that a caller's timeout (openraft
    /// gives heartbeats a fraction of a second) cannot cancel it: the next call picks it up.
    dialing: Option<tokio::task::JoinHandle<Result<Connection, CallError>>>,
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(d) = self.dialing.take() {
            d.abort();
        }
    }
}

impl PeerClient {
    pub fn new(endpoint: Endpoint, target: EndpointKey, node: MemberNode, encodings: EntryEncodings) -> Self {
        Self {
            endpoint,
            target,
            node,
            encodings,
            conn: None,
            dialing: None,
        }
    }

    pub fn target(&self) -> EndpointKey {
        self.target
    }

    async fn connection(&mut self) -> Result<Connection, CallError> {
        if let Some(c) = &self.conn
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        self.conn = None;
        let target = self.target;
        let dial = match &mut self.dialing {
            Some(d) => d,
            None => {
                let addr = endpoint_addr(&target, &self.node)?;
                let endpoint = self.endpoint.clone();
                self.dialing.insert(tokio::spawn(async move {
                    tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(addr, causeway_proto::alpn::RAFT))
                        .await
                        .map_err(|_| CallError::Unreachable(target, "connect timed out".into()))?
                        .map_err(|e| CallError::Unreachable(target, e.to_string()))
                }))
            }
        };
        // Awaited by reference: if this caller gives up, the dial goes on for the next one.
        let dialled = dial.await;
        self.dialing = None;
        let conn = dialled.map_err(|e| CallError::Unreachable(target, format!("dial task: {e}")))??;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one request on a new stream and reads its response.
    pub async fn call(
        &mut self,
        kind: StreamKind,
        req: &RaftRequest,
        timeout: Duration,
    ) -> Result<RaftResponse, CallError> {
        let target = self.target;
        let mut used: Option<Connection> = None;
        let result = tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            used = Some(conn.clone());
            // Until the answer is in, the connection is suspect: if it does not come (or the
            // caller gives up: openraft's own timeouts drop this future), it is closed so the
            // next call dials afresh instead of writing into a connection the peer forgot.
            let suspect = Suspect(Some(conn.clone()));
            let net = |e: WireError| CallError::Network(target, e.to_string());
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| CallError::Network(target, e.to_string()))?;
            wire::write_frame_after(&mut send, &[kind as u8], req, kind.limit())
                .await
                .map_err(net)?;
            send.finish().map_err(|e| CallError::Network(target, e.to_string()))?;
            let resp: RaftResponse = wire::read_frame(&mut recv, wire::MAX_RPC_FRAME).await.map_err(net)?;
            suspect.clear();
            Ok(resp)
        })
        .await
        .unwrap_or(Err(CallError::Timeout(target)));
        if result.is_err() && used.as_ref().is_some_and(closed_as_not_member) {
            return Err(CallError::NotMember(target));
        }
        match result? {
            RaftResponse::Error(msg) => Err(CallError::Remote(target, msg)),
            other => Ok(other),
        }
    }

    pub async fn forward(&mut self, req: ForwardRequest) -> Result<ForwardResponse, CallError> {
        match self
            .call(StreamKind::Rpc, &RaftRequest::Forward(req), FORWARD_TIMEOUT)
            .await?
        {
            RaftResponse::Forward(r) => Ok(r),
            other => Err(CallError::Remote(self.target, format!("unexpected response {other:?}"))),
        }
    }
}

/// A connection that a request is waiting on; dropped before [`Suspect::clear`], it closes the
/// connection (a member that restarted behind the same address never answers on the old one).
struct Suspect(Option<Connection>);

impl Suspect {
    fn clear(mut self) {
        self.0 = None;
    }
}

impl Drop for Suspect {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.close(0u32.into(), b"request unanswered");
        }
    }
}

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(target: EndpointKey, resp: RaftResponse) -> CallError {
    CallError::Remote(target, format!("unexpected response {resp:?}"))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Pipelined: see `append_stream`. Opening the stream waits at most the soft TTL; each
    /// answer may then take up to the hard TTL from the moment its request was written.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendReply>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let target = self.target;
            let opened = tokio::time::timeout(option.soft_ttl(), async {
                let conn = self.connection().await?;
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| CallError::Network(target, e.to_string()))?;
                Ok((conn, send, recv))
            })
            .await
            .unwrap_or(Err(CallError::Timeout(target)));
            match opened {
                Ok((conn, send, recv)) => Ok(append_stream::send_requests(
                    target,
                    conn,
                    (send, recv),
                    input,
                    self.encodings.clone(),
                    option.hard_ttl(),
                )),
                Err(e) => {
                    // Redial next time: the connection may be half-dead.
                    self.conn = None;
                    Err(rpc_err(e))
                }
            }
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(StreamKind::Rpc, &RaftRequest::Append(rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            RaftResponse::Append(r) => Ok(r),
            other => Err(rpc_err(unexpected(self.target, other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(StreamKind::Rpc, &RaftRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(rpc_err(unexpected(self.target, other))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(StreamKind::Rpc, &RaftRequest::PreVote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(rpc_err(unexpected(self.target, other))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let signature = snapshot.meta.signature();
        let data = snapshot
            .snapshot
            .into_encoded()
            .await
            .map_err(|e| StorageError::read_snapshot(Some(signature), TypeConfig::err_from_error(&e)))?;
        let req = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        // Snapshots can be large: allow well beyond the per-RPC budget.
        let timeout = option.hard_ttl().max(Duration::from_secs(120));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(StreamKind::Snapshot, &req, timeout) => match r {
                Ok(RaftResponse::Snapshot(r)) => Ok(r),
                Ok(other) => Err(StreamingError::Network(NetworkError::new(&unexpected(self.target, other)))),
                Err(e @ CallError::Unreachable(..)) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
                Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
            }
        }
    }
}

/// Creates a `PeerClient` per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub endpoint: Endpoint,
    pub encodings: EntryEncodings,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: EndpointKey, node: &MemberNode) -> Self::Network {
        PeerClient::new(self.endpoint.clone(), target, node.clone(), self.encodings.clone())
    }
}
