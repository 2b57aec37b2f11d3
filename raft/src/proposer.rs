//! Proposes the writes this node leads to openraft in batches: concurrent writers queue their
//! commands here, and one task hands everything queued to the Raft core as one message
//! (`client_write_many`), one log entry per command as before.
//!
//! Each writer then waits on a small channel instead of driving openraft's own write future,
//! several kilobytes that every caller's future had to carry and move; with hundreds of writers
//! that copying and one core message per write were a fifth of the node's CPU.
//!
//! A write made while no other is in flight on this node has nothing to batch with: it goes to
//! the Raft core itself, sparing it the wake-up and yield of the proposing task (see
//! [`Route`]).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use causeway_catalog::CommandResult;
use futures::StreamExt;
use openraft::OptionalSend;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResult;
use openraft::raft::responder::Responder;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::leader_named;
use crate::types::{LogCommand, MemberNode, Raft, TypeConfig};
use causeway_proto::EndpointKey;

/// Most commands waiting to be proposed; a writer beyond it waits for room.
pub const MAX_QUEUED_PROPOSALS: usize = 4096;
/// Most commands proposed in one message to the Raft core.
pub const MAX_PROPOSAL_BATCH: usize = 512;

/// How a proposal ended.
// Moved once, through a oneshot: boxing the large variant would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Proposed {
    /// Committed and applied, with what applying it produced.
    Applied(CommandResult),
    /// This node does not lead (any more); the leader if known. Nothing was written.
    NotLeader(Option<(EndpointKey, MemberNode)>),
    /// The write failed, or the Raft node stopped before it was known to be applied.
    Failed(String),
}

type Reply = oneshot::Sender<Proposed>;

/// Answers a write proposed on its own straight from where openraft completes it (the storage
/// writer, as it applies the entry), instead of through a task that forwards the answer.
pub struct WriteReply<T>(Box<dyn FnOnce(T) + Send>);

impl<T: OptionalSend + 'static> Responder<TypeConfig, T> for WriteReply<T> {
    fn on_complete(self, result: T) {
        (self.0)(result)
    }
}

impl WriteReply<ClientWriteResult<TypeConfig>> {
    fn to(reply: Reply) -> Self {
        WriteReply(Box::new(move |result: ClientWriteResult<TypeConfig>| {
            let answer = match result {
                Ok(response) => Proposed::Applied(response.data),
                Err(e) => not_leader_or_failed(RaftError::APIError(e)),
            };
            // A writer that stopped waiting no longer needs its answer.
            let _ = reply.send(answer);
        }))
    }
}

/// The queue writers put their commands on.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(LogCommand, Reply)>,
    raft: Raft,
    in_flight: InFlight,
}

impl Proposer {
    /// Starts the task that proposes queued commands to `raft`; it ends once every `Proposer`
    /// is dropped or the returned handle is aborted.
    pub fn start(raft: Raft) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(MAX_QUEUED_PROPOSALS);
        let task = tokio::spawn(propose_queued(raft.clone(), rx));
        let proposer = Proposer {
            queue,
            raft,
            in_flight: InFlight::default(),
        };
        (proposer, task)
    }

    /// Proposes `cmd` and waits until it is applied (or known not to be).
    pub async fn propose(&self, cmd: LogCommand) -> Proposed {
        let (reply, answer) = oneshot::channel();
        let (route, _in_flight) = self.in_flight.enter();
        match route {
            Route::Direct => {
                // Boxed: openraft's write future is several kilobytes, and most writers' futures
                // never take this path.
                let write = self.raft.write(cmd).responder(WriteReply::to(reply));
                if let Err(fatal) = Box::pin(std::future::IntoFuture::into_future(write)).await {
                    return Proposed::Failed(fatal.to_string());
                }
            }
            Route::Queued => {
                if self.queue.send((cmd, reply)).await.is_err() {
                    return Proposed::Failed("raft node stopped".into());
                }
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Proposed::Failed("raft node stopped before the write was applied".into()))
    }
}

/// How a write reaches the Raft core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Alone: straight from the writer's task.
    Direct,
    /// Others are in flight: through the queue, to be proposed in a batch with them.
    Queued,
}

/// Counts the writes between their proposal and their answer on this node.
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a write in until the guard drops, and picks its route. Writes that are answered
    /// write again at once under load, so "no other write in flight" is rare then; a writer that
    /// went direct while another came in only costs that one a batch of one.
    fn enter(&self) -> (Route, InFlightGuard) {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        let route = if before == 0 { Route::Direct } else { Route::Queued };
        (route, InFlightGuard(self.0.clone()))
    }
}

/// Counts its write out when dropped: answered, failed, or given up by its caller.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn propose_queued(raft: Raft, mut rx: mpsc::Receiver<(LogCommand, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_PROPOSAL_BATCH);
    loop {
        if rx.recv_many(&mut batch, MAX_PROPOSAL_BATCH).await == 0 {
            return;
        }
        // Writers are answered one by one as the storage writer applies their entries, and each
        // writes again at once: woken by the first, this task would propose about one command
        // per batch (1.25 on average at 256 writers). Letting the other woken tasks run first
        // gathers what they queue meanwhile (43 on average). A lone writer does not come this
        // way (see `Route`).
        tokio::task::yield_now().await;
        while batch.len() < MAX_PROPOSAL_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            if let Some((command, reply)) = batch.pop() {
                // Its answer needs no forwarding task; a dropped reply tells the writer the node
                // stopped.
                let _ = raft.write(command).responder(WriteReply::to(reply)).await;
            }
            continue;
        }
        let (commands, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        tracing::debug!(commands = commands.len(), "proposing");
        match raft.client_write_many(commands).await {
            // Results come in the order of the commands, each once applied; the next batch is
            // proposed meanwhile.
            Ok(results) => {
                tokio::spawn(answer_in_order(results, replies));
            }
            Err(fatal) => {
                for reply in replies {
                    let _ = reply.send(Proposed::Failed(fatal.to_string()));
                }
            }
        }
    }
}

type Results = futures::stream::BoxStream<
    'static,
    Result<openraft::raft::WriteResult<TypeConfig>, openraft::error::Fatal<TypeConfig>>,
>;

async fn answer_in_order(mut results: Results, replies: Vec<Reply>) {
    let mut replies = replies.into_iter();
    while let Some(result) = results.next().await {
        let Some(reply) = replies.next() else { return };
        let answer = match result {
            Ok(Ok(response)) => Proposed::Applied(response.response),
            Ok(Err(e)) => not_leader_or_failed(RaftError::APIError(e)),
            Err(fatal) => Proposed::Failed(fatal.to_string()),
        };
        // A writer that stopped waiting no longer needs its answer.
        let _ = reply.send(answer);
    }
    // The stream ends early only when the Raft node stopped; dropped replies say so.
}

fn not_leader_or_failed(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Proposed {
    match e.forward_to_leader() {
        Some(f) => Proposed::NotLeader(leader_named(f)),
        None => Proposed::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_goes_direct_only_while_no_other_is_in_flight() {
        let in_flight = InFlight::default();
        let (route, first) = in_flight.enter();
        assert_eq!(route, Route::Direct);
        let (route, second) = in_flight.enter();
        assert_eq!(
            route,
            Route::Queued,
            "a write made while another is in flight is batched"
        );
        drop(first);
        let (route, third) = in_flight.enter();
        assert_eq!(route, Route::Queued, "the second write is still in flight");
        drop((second, third));
        let (route, _fourth) = in_flight.enter();
        assert_eq!(route, Route::Direct, "every earlier write was counted out");
    }
}
