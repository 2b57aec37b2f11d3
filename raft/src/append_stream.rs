//! The pipelined append stream of `causeway/raft/1`: a leader sends a follower all the
//! AppendEntries requests of one replication session on a single QUIC stream, each as soon as
//! openraft produces it, and the follower answers them in order on the same stream.
//!
//! One request and answer per stream would make each request wait for the previous answer: a
//! new entry queued behind a commit-only request costs a whole extra round trip. QUIC keeps the
//! frames of one stream in order, so the answers need no sequence numbers.

use std::time::Duration;

use causeway_proto::EndpointKey;
use futures::{Stream, StreamExt};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use openraft::{
    base::BoxStream,
    entry::RaftEntry,
    errors::{NetworkError, RPCError},
    raft::{AppendEntriesRequest, StreamAppendResult},
};
use tokio::sync::{mpsc, oneshot};

use crate::append_frame;
use crate::cluster::ClusterNode;
use crate::network::CallError;
use crate::store::EntryEncodings;
use crate::types::{LogId, TypeConfig};
use crate::wire::{self, AppendReply, MAX_RPC_FRAME, StreamKind};

/// Most requests sent and not yet answered on one stream; the sender waits for answers beyond
/// it. The follower reads at most this many ahead of the ones openraft is processing.
pub const MAX_APPENDS_IN_FLIGHT: usize = 64;

type Reply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The leader's half: writes every request of `input` to `send` and returns the answers read
/// from `recv`, in order. The stream ends after an answer that does not cover its whole request
/// (a conflict, a higher vote or a partial append: openraft starts a new session then), after
/// any error, or once `input` ends and every request is answered.
pub(crate) fn send_requests<S>(
    target: EndpointKey,
    conn: Connection,
    (send, recv): (SendStream, RecvStream),
    input: S,
    encodings: EntryEncodings,
    reply_timeout: Duration,
) -> BoxStream<'static, Reply>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    // The last log id of each request written, or why writing failed, in request order.
    let (sent_tx, sent_rx) = mpsc::channel::<Result<Option<LogId>, String>>(MAX_APPENDS_IN_FLIGHT);
    tokio::spawn(write_requests(send, input, encodings, sent_tx));
    let replies = futures::stream::unfold(Some((recv, sent_rx)), move |state| {
        let conn = conn.clone();
        async move {
            let (mut recv, mut sent_rx) = state?;
            // None: the input ended and every request was answered.
            let last = match sent_rx.recv().await? {
                Ok(last) => last,
                Err(e) => return Some((Err(network_error(CallError::Network(target, e))), None)),
            };
            let reply =
                tokio::time::timeout(reply_timeout, wire::read_frame::<AppendReply>(&mut recv, MAX_RPC_FRAME)).await;
            let (item, go_on) = match reply {
                Err(_) => {
                    // The follower may have restarted behind the same address and will never answer
                    // on this connection: close it, so the next session dials afresh.
                    conn.close(0u32.into(), b"append unanswered");
                    (Err(network_error(CallError::Timeout(target))), false)
                }
                Ok(Err(e)) => (Err(network_error(CallError::Network(target, e.to_string()))), false),
                Ok(Ok(AppendReply::Refused(msg))) => (Err(network_error(CallError::Remote(target, msg))), false),
                Ok(Ok(AppendReply::Appended(result))) => {
                    let whole = result.as_ref().is_ok_and(|matched| *matched == last);
                    (Ok(result), whole)
                }
            };
            Some((item, go_on.then_some((recv, sent_rx))))
        }
    });
    // Once the answers stop being read, `sent_rx` is dropped and the writer stops too.
    Box::pin(replies)
}

/// Writes the stream kind, then each request as it comes, reporting each in `sent` once
/// written. Stops when the input ends, a write fails or the reading half is gone.
async fn write_requests<S>(
    mut send: SendStream,
    mut input: S,
    encodings: EntryEncodings,
    sent: mpsc::Sender<Result<Option<LogId>, String>>,
) where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    if let Err(e) = send.write_all(&[StreamKind::Append as u8]).await {
        let _ = sent.send(Err(e.to_string())).await;
        return;
    }
    loop {
        // A slot first: it bounds the requests in flight.
        let Ok(slot) = sent.reserve().await else { return };
        let request = tokio::select! {
            r = input.next() => r,
            () = sent.closed() => None,
        };
        let Some(request) = request else { break };
        let last = request.entries.last().map(|e| e.log_id()).or(request.prev_log_id);
        let frame = append_frame::encode(&request, &encodings.for_sending(&request.entries), MAX_RPC_FRAME);
        let written = match frame {
            Ok(frame) => send.write_all(&frame).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(()) => slot.send(Ok(last)),
            Err(e) => {
                slot.send(Err(e));
                return;
            }
        }
    }
    // Tells the follower no more requests come; the answers still in flight arrive regardless.
    let _ = send.finish();
}

fn network_error(e: CallError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

/// The follower's half, for a stream whose kind byte was `Append`: hands every request read to
/// openraft's pipelined append and writes each answer back in order. A request that cannot be
/// read (oversized, undecodable) or that arrives after the sender stopped being a member is
/// answered with `Refused` after the answers to the requests before it, and the stream closes.
pub(crate) async fn serve(node: &ClusterNode, remote: EndpointKey, mut send: SendStream, recv: RecvStream) {
    let (requests_tx, requests_rx) = mpsc::channel(MAX_APPENDS_IN_FLIGHT);
    let (bad_tx, mut bad_rx) = oneshot::channel();
    let reader = tokio::spawn(read_requests(node.clone(), remote, recv, requests_tx, bad_tx));
    let input = futures::stream::unfold(requests_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = std::pin::pin!(node.raft().stream_append(input));
    let mut ended_cleanly = true;
    while let Some(answer) = answers.next().await {
        let (reply, last) = match answer {
            Ok(result) => {
                let refused = result.is_err();
                (AppendReply::Appended(result), refused)
            }
            Err(fatal) => (AppendReply::Refused(fatal.to_string()), true),
        };
        if let Err(e) = wire::write_frame(&mut send, &reply, MAX_RPC_FRAME).await {
            tracing::debug!(peer = %remote, error = %e, "could not answer an append");
            ended_cleanly = false;
            break;
        }
        if last {
            ended_cleanly = false;
            break;
        }
    }
    if ended_cleanly {
        // The input ended after `read_requests` said why, if it was a bad request.
        if let Ok(msg) = bad_rx.try_recv() {
            tracing::warn!(peer = %remote, error = %msg, "bad raft append request");
            let _ = wire::write_frame(&mut send, &AppendReply::Refused(msg), MAX_RPC_FRAME).await;
        }
    }
    // Dropping the reader's receive stream tells the leader nothing more is read.
    reader.abort();
    let _ = send.finish();
}

/// Reads requests until the leader finishes the stream, one cannot be read, or the answering
/// half is gone; a reason for stopping early goes to `bad` before the requests channel closes.
async fn read_requests(
    node: ClusterNode,
    remote: EndpointKey,
    mut recv: RecvStream,
    requests: mpsc::Sender<AppendEntriesRequest<TypeConfig>>,
    bad: oneshot::Sender<String>,
) {
    loop {
        // Membership can change while a stream stays open: check every request.
        if !node.may_connect(&remote) {
            let _ = bad.send("not a member of this cluster".into());
            return;
        }
        let read = wire::read_body_or_end(&mut recv, MAX_RPC_FRAME).await.and_then(|body| {
            Ok(body
                .map(|b| append_frame::decode(b.into(), MAX_RPC_FRAME))
                .transpose()?)
        });
        match read {
            // Checked again once the frame is in: the wait for it can outlast a removal.
            Ok(Some(_)) if !node.may_connect(&remote) => {
                let _ = bad.send("not a member of this cluster".into());
                return;
            }
            Ok(Some((request, received))) => {
                node.entry_encodings().received(received);
                if requests.send(request).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = bad.send(e.to_string());
                return;
            }
        }
    }
}
