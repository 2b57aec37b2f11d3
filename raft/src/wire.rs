//! Messages on `causeway/raft/1` and their framing: a one-byte stream kind, then one
//! length-prefixed postcard request per stream, answered by one response frame; or, on an
//! append stream, any number of requests answered in order (see `append_stream`).

use causeway_catalog::{Command, CommandResult};
use causeway_proto::{EndpointKey, FrameError, frame};
use iroh::endpoint::{ReadExactError, RecvStream, SendStream};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::status::ClusterStatus;
use crate::types::{MemberNode, SnapshotMeta, TypeConfig, Vote};

/// Largest ordinary RPC frame (an append batch).
pub const MAX_RPC_FRAME: usize = 64 << 20;
/// Largest snapshot frame.
pub const MAX_SNAPSHOT_FRAME: usize = crate::store::MAX_SNAPSHOT;

/// First byte of a stream: which frame limit applies to the request that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamKind {
    Rpc = 1,
    Snapshot = 2,
    /// A replication session's AppendEntries requests, pipelined; its frames use the RPC limit.
    Append = 3,
}

impl StreamKind {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Rpc),
            2 => Some(Self::Snapshot),
            3 => Some(Self::Append),
            _ => None,
        }
    }
    pub fn limit(self) -> usize {
        match self {
            Self::Rpc | Self::Append => MAX_RPC_FRAME,
            Self::Snapshot => MAX_SNAPSHOT_FRAME,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// A request a member sends to the leader on behalf of its own client.
    Forward(ForwardRequest),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(Command),
    /// "Confirm you are leader and tell me the log index a linearizable read must wait for."
    ReadIndex,
    AddLearner {
        id: EndpointKey,
        node: MemberNode,
    },
    RemoveMember {
        id: EndpointKey,
    },
    Status,
    /// An opaque request for the node layer's handler on the leader.
    App(Vec<u8>),
    /// "Member `id` now listens at `node`'s addresses" (it restarted bound elsewhere). Appended
    /// last: the variant order is the wire format.
    UpdateAddrs {
        id: EndpointKey,
        node: MemberNode,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    Written(CommandResult),
    ReadIndex(u64),
    Done,
    Status(ClusterStatus),
    App(Vec<u8>),
    /// The receiver is not the leader; the leader it knows of, if any.
    NotLeader(Option<(EndpointKey, MemberNode)>),
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Forward(ForwardResponse),
    /// The request was refused or failed on the receiver.
    Error(String),
}

/// The answer to one request on an append stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum AppendReply {
    /// What openraft made of the request; an error (conflict, higher vote) ends the stream.
    Appended(StreamAppendResult<TypeConfig>),
    /// The request could not be read or processed; the stream ends.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("unknown stream kind {0}")]
    UnknownKind(u8),
}

fn stream_err(e: impl std::fmt::Display) -> WireError {
    WireError::Stream(e.to_string())
}

/// Writes one frame (length prefix + body) without finishing the stream.
pub async fn write_frame<T: Serialize>(send: &mut SendStream, value: &T, limit: usize) -> Result<(), WireError> {
    write_frame_after(send, &[], value, limit).await
}

/// Writes `lead` and then one frame as a single write, so a request or response leaves in as
/// few packets (and connection-driver wake-ups) as possible.
pub async fn write_frame_after<T: Serialize>(
    send: &mut SendStream,
    lead: &[u8],
    value: &T,
    limit: usize,
) -> Result<(), WireError> {
    let header = lead.len() + frame::PREFIX_LEN;
    let mut buf = Vec::with_capacity(header);
    buf.extend_from_slice(lead);
    buf.extend_from_slice(&[0; frame::PREFIX_LEN]);
    let mut buf = frame::encode_after(buf, value, limit)?;
    let len = buf.len() - header;
    buf[lead.len()..header].copy_from_slice(&frame::prefix(len));
    send.write_all(&buf).await.map_err(stream_err)?;
    Ok(())
}

/// Reads one frame, checking its announced length against `limit` before reading the body.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut RecvStream, limit: usize) -> Result<T, WireError> {
    read_frame_or_end(recv, limit)
        .await?
        .ok_or_else(|| WireError::Stream("the stream ended before a frame".into()))
}

/// Reads one frame like `read_frame`, or `None` when the sender finished the stream before it.
pub async fn read_frame_or_end<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<T>, WireError> {
    match read_body_or_end(recv, limit).await? {
        Some(body) => Ok(Some(frame::decode(&body, limit)?)),
        None => Ok(None),
    }
}

/// Reads one frame's body undecoded, or `None` when the sender finished the stream before it.
pub async fn read_body_or_end(recv: &mut RecvStream, limit: usize) -> Result<Option<Vec<u8>>, WireError> {
    let mut prefix = [0u8; frame::PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(stream_err(e)),
    }
    let len = frame::body_len(prefix, limit)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(stream_err)?;
    Ok(Some(body))
}

pub async fn read_kind(recv: &mut RecvStream) -> Result<StreamKind, WireError> {
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await.map_err(stream_err)?;
    StreamKind::from_byte(b[0]).ok_or(WireError::UnknownKind(b[0]))
}
