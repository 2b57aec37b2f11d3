//! Messages on `causeway/raft/1` and their framing: a one-byte stream kind, then one
//! length-prefixed postcard request per stream, answered by one response frame; or, on an
//! append stream, any number of requests answered in order (see `append_stream`).

use causeway_catalog::{Command, CommandResult};
use std::time::Duration;

use bytes::Bytes;
use causeway_proto::{
    EndpointKey, FrameError,
    frame::{self, BodyBuf},
};
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
    #[error("no whole frame within {0:?}")]
    TimedOut(Duration),
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

/// Reads one frame like `read_frame`, failing with [`WireError::TimedOut`] unless the whole frame
/// arrived within `deadline`: what a peer's request gets, so a held stream is let go.
pub async fn read_frame_within<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
    deadline: Duration,
) -> Result<T, WireError> {
    tokio::time::timeout(deadline, read_frame(recv, limit))
        .await
        .map_err(|_| WireError::TimedOut(deadline))?
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
    let Some(len) = read_len_or_end(recv, limit).await? else {
        return Ok(None);
    };
    let mut body = BodyBuf::new(len, limit);
    read_body(recv, &mut body).await?;
    Ok(Some(body.into_inner()))
}

/// Reads a frame's length prefix and checks it against `limit`, or `None` when the sender
/// finished the stream before it.
pub async fn read_len_or_end(recv: &mut RecvStream, limit: usize) -> Result<Option<usize>, WireError> {
    let mut prefix = [0u8; frame::PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(stream_err(e)),
    }
    Ok(Some(frame::body_len(prefix, limit)?))
}

/// Reads the rest of a body into `body`, which grows only as bytes arrive (never by the
/// announced length at once): a peer that announces a large frame and sends nothing costs
/// little. The caller puts the deadline around it.
pub async fn read_body(recv: &mut RecvStream, body: &mut BodyBuf) -> Result<(), WireError> {
    read_body_from(recv, body).await
}

/// Where a body's bytes come from (a QUIC stream; a scripted source in tests).
trait ChunkSource {
    /// The next bytes, at most `max`, or `None` at the end of the stream.
    fn chunk(&mut self, max: usize) -> impl Future<Output = Result<Option<Bytes>, WireError>> + Send;
}

impl ChunkSource for RecvStream {
    async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, WireError> {
        self.read_chunk(max).await.map_err(stream_err)
    }
}

async fn read_body_from(src: &mut impl ChunkSource, body: &mut BodyBuf) -> Result<(), WireError> {
    while !body.is_complete() {
        match src.chunk(body.remaining()).await? {
            Some(chunk) => body.push(&chunk)?,
            None => {
                return Err(WireError::Stream(format!(
                    "the stream ended {} bytes into a frame, {} bytes short",
                    body.received(),
                    body.remaining()
                )));
            }
        }
    }
    Ok(())
}

pub async fn read_kind(recv: &mut RecvStream) -> Result<StreamKind, WireError> {
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await.map_err(stream_err)?;
    StreamKind::from_byte(b[0]).ok_or(WireError::UnknownKind(b[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_proto::fed::MAX_FED_FRAME;

    /// Sends its chunks, then nothing more (a peer holding its stream open).
    struct Scripted(Vec<Bytes>);

    impl ChunkSource for Scripted {
        async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, WireError> {
            if self.0.is_empty() {
                return std::future::pending().await;
            }
            let mut c = self.0.remove(0);
            if c.len() > max {
                let rest = c.split_off(max);
                self.0.insert(0, rest);
            }
            Ok(Some(c))
        }
    }

    #[tokio::test]
    async fn an_announced_megabyte_with_ten_bytes_sent_allocates_little_and_times_out() {
        let mut body = BodyBuf::new(MAX_FED_FRAME, MAX_FED_FRAME);
        let mut src = Scripted(vec![Bytes::from_static(&[1; 10])]);
        let read = tokio::time::timeout(Duration::from_millis(50), read_body_from(&mut src, &mut body)).await;
        assert!(read.is_err(), "a stalled body times out");
        assert_eq!(body.received(), 10);
        assert!(
            body.capacity() <= MAX_FED_FRAME / 64,
            "{} bytes allocated",
            body.capacity()
        );
    }

    #[tokio::test]
    async fn a_body_in_many_chunks_arrives_whole_and_an_early_end_is_an_error() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let chunks = data.chunks(1200).map(Bytes::copy_from_slice).collect();
        let mut body = BodyBuf::new(data.len(), MAX_RPC_FRAME);
        read_body_from(&mut Scripted(chunks), &mut body).await.unwrap();
        assert_eq!(body.into_inner(), data);

        struct Ends(Option<Bytes>);
        impl ChunkSource for Ends {
            async fn chunk(&mut self, _max: usize) -> Result<Option<Bytes>, WireError> {
                Ok(self.0.take())
            }
        }
        let mut body = BodyBuf::new(100, MAX_FED_FRAME);
        let r = read_body_from(&mut Ends(Some(Bytes::from_static(&[0; 10]))), &mut body).await;
        assert!(matches!(r, Err(WireError::Stream(_))), "{r:?}");
    }
}
