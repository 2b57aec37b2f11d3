//! Proposes the writes this node leads to openraft in batches: concurrent writers queue their
//! commands here, and one task proposes everything queued as one log entry, a
//! `Command::Batch` of up to [`MAX_BATCH_BYTES`], whose responder answers each writer with its
//! own command's result. One entry per command cost every node per-entry work in openraft, the
//! log, replication and apply: a sixth of the CPU per write at three nodes × 256 writers.
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

use causeway_catalog::{Command, CommandResult};
use openraft::OptionalSend;
use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResult;
use openraft::raft::responder::Responder;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::leader_named;
use crate::types::{LogCommand, MemberNode, Raft, TypeConfig};
use causeway_proto::EndpointKey;

/// Most commands waiting to be proposed; a writer beyond it waits for room.
pub const MAX_QUEUED_PROPOSALS: usize = 4096;
/// Most commands the proposing task takes from the queue at a time.
pub const MAX_PROPOSAL_BATCH: usize = 512;
/// Most bytes of encoded commands put in one batch entry. Commands are limited to a few hundred
/// kilobytes each, so a full queue take fits a few entries; a log entry may be 64 MiB
/// (`store::MAX_RECORD`), and a large one would hold up the appends behind it.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How a proposal ended.
// Moved once, through a oneshot: boxing the large variant would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
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

    /// Answers each writer of a [`Command::Batch`] with its command's result.
    fn to_each(replies: Vec<Reply>) -> Self {
        WriteReply(Box::new(move |result: ClientWriteResult<TypeConfig>| {
            let answers: Vec<Proposed> = match result {
                Ok(response) => match response.data {
                    CommandResult::Batch(results) if results.len() == replies.len() => {
                        results.into_iter().map(Proposed::Applied).collect()
                    }
                    other => {
                        // Applying a batch yields one result per command; anything else is a bug.
                        let e = format!("a batch of {} commands was answered with {other:?}", replies.len());
                        vec![Proposed::Failed(e); replies.len()]
                    }
                },
                Err(e) => vec![not_leader_or_failed(RaftError::APIError(e)); replies.len()],
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A writer that stopped waiting no longer needs its answer.
                let _ = reply.send(answer);
            }
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

/// How many times the proposing task lets the other runnable tasks go first before it takes its
/// queue, in a group with other members. Each entry costs every member work (openraft's
/// bookkeeping, an append frame to each follower, its flush there), so there fewer, larger
/// entries pay: at three nodes × 256 writers 16 turns made entries of about 100 writes instead
/// of 37, and cut the CPU per write by about a tenth. A lone write never waits for them (it
/// skips the queue).
pub const GATHER_YIELDS_WITH_FOLLOWERS: usize = 16;

/// The same for a group of one, where an entry is only this node's work: one turn. Waiting
/// longer there only delays the storage writer, which sets a single node's pace (16 turns cost
/// a tenth of the throughput at one node × 256 writers).
pub const GATHER_YIELDS_ALONE: usize = 1;

fn gather_yields(raft: &Raft) -> usize {
    let members = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .nodes()
        .count();
    gather_yields_among(members)
}

/// The turns for a group of `members` (voters and learners, this node included).
fn gather_yields_among(members: usize) -> usize {
    if members > 1 {
        GATHER_YIELDS_WITH_FOLLOWERS
    } else {
        GATHER_YIELDS_ALONE
    }
}

async fn propose_queued(raft: Raft, mut rx: mpsc::Receiver<(LogCommand, Reply)>) {
    let mut queued = Vec::with_capacity(MAX_PROPOSAL_BATCH);
    loop {
        if rx.recv_many(&mut queued, MAX_PROPOSAL_BATCH).await == 0 {
            return;
        }
        // Writers are answered one by one as the storage writer applies their entries, and each
        // writes again at once: woken by the first, this task would propose about one command
        // per batch (1.25 on average at 256 writers). Letting the other woken tasks run first
        // gathers what they queue meanwhile. A lone writer does not come this way (see `Route`).
        for _ in 0..gather_yields(&raft) {
            tokio::task::yield_now().await;
        }
        while queued.len() < MAX_PROPOSAL_BATCH {
            match rx.try_recv() {
                Ok(item) => queued.push(item),
                Err(_) => break,
            }
        }
        let mut rest = queued.drain(..).peekable();
        while rest.peek().is_some() {
            let proposal = Proposal::take(&mut rest);
            tracing::debug!(commands = proposal.commands, "proposing");
            // Returns once the core has the entry; the answers come from the responder.
            if let Err(fatal) = raft.write(proposal.entry).responder(proposal.responder).await {
                tracing::warn!(error = %fatal, "raft stopped while proposing");
            }
        }
    }
}

/// One log entry's worth of queued writes: a single command, or a [`Command::Batch`] of several,
/// with the responder that answers each writer.
struct Proposal {
    entry: LogCommand,
    commands: usize,
    responder: WriteReply<ClientWriteResult<TypeConfig>>,
}

impl Proposal {
    /// Takes the next writes from `queued`, as many as fit one entry: up to
    /// [`MAX_BATCH_BYTES`] of commands. A command that is a batch already goes alone.
    fn take(queued: &mut std::iter::Peekable<impl Iterator<Item = (LogCommand, Reply)>>) -> Self {
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0usize;
        while let Some((cmd, _)) = queued.peek() {
            let size = encoded_len(cmd);
            let alone = matches!(**cmd, Command::Batch(_));
            if !commands.is_empty() && (alone || bytes.saturating_add(size) > MAX_BATCH_BYTES) {
                break;
            }
            let Some((cmd, reply)) = queued.next() else { break };
            commands.push(cmd);
            replies.push(reply);
            bytes = bytes.saturating_add(size);
            if alone {
                break;
            }
        }
        if commands.len() == 1
            && let (Some(entry), Some(reply)) = (commands.pop(), replies.pop())
        {
            return Proposal {
                entry,
                commands: 1,
                responder: WriteReply::to(reply),
            };
        }
        let batch = Command::Batch(commands.into_iter().map(LogCommand::into_command).collect());
        Proposal {
            entry: batch.into(),
            commands: replies.len(),
            responder: WriteReply::to_each(replies),
        }
    }
}

/// The encoded size of `cmd`; an unencodable command counts as too large to share an entry.
fn encoded_len(cmd: &Command) -> usize {
    postcard::experimental::serialized_size(cmd).unwrap_or(usize::MAX)
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

    #[test]
    fn only_a_group_with_followers_gathers_longer() {
        assert_eq!(gather_yields_among(1), GATHER_YIELDS_ALONE);
        assert_eq!(gather_yields_among(2), GATHER_YIELDS_WITH_FOLLOWERS);
        assert_eq!(gather_yields_among(3), GATHER_YIELDS_WITH_FOLLOWERS);
        // Woken writers must get at least one turn to queue, and more where entries cost others.
        const { assert!(GATHER_YIELDS_ALONE >= 1 && GATHER_YIELDS_WITH_FOLLOWERS > GATHER_YIELDS_ALONE) };
    }

    fn register(name: &str, metadata_bytes: usize) -> Command {
        let metadata = (0..metadata_bytes.div_ceil(4096))
            .map(|i| (format!("k{i}"), "v".repeat(4096)))
            .collect();
        Command::RegisterResource {
            name: name.into(),
            kind: "artifact".into(),
            owner: "test".into(),
            path: None,
            metadata,
            registered_at_ms: 1,
        }
    }

    /// Queues `commands` as writers would, returning what they wait on.
    fn queue(commands: Vec<Command>) -> (Vec<(LogCommand, Reply)>, Vec<oneshot::Receiver<Proposed>>) {
        commands
            .into_iter()
            .map(|cmd| {
                let (reply, answer) = oneshot::channel();
                ((LogCommand::from(cmd), reply), answer)
            })
            .unzip()
    }

    /// Splits `queued` into proposals, returning each one's entry.
    fn entries(queued: Vec<(LogCommand, Reply)>) -> Vec<Command> {
        let mut rest = queued.into_iter().peekable();
        std::iter::from_fn(|| {
            rest.peek()
                .is_some()
                .then(|| Proposal::take(&mut rest).entry.into_command())
        })
        .collect()
    }

    fn applied(data: CommandResult) -> ClientWriteResult<TypeConfig> {
        Ok(openraft::raft::ClientWriteResponse {
            log_id: openraft::testing::log_id::<TypeConfig>(1, EndpointKey([1; 32]), 1),
            data,
            membership: None,
        })
    }

    #[test]
    fn queued_writes_share_one_entry_and_each_gets_its_own_result() {
        let names = ["a", "b", "c"];
        let (queued, mut answers) = queue(names.iter().map(|n| register(n, 0)).collect());
        let mut rest = queued.into_iter().peekable();
        let proposal = Proposal::take(&mut rest);
        assert!(rest.next().is_none(), "all three fit one entry");
        assert_eq!(proposal.commands, 3);
        let Command::Batch(commands) = proposal.entry.into_command() else {
            panic!("not a batch")
        };
        assert_eq!(commands, names.iter().map(|n| register(n, 0)).collect::<Vec<_>>());

        let results = vec![
            CommandResult::ResourceRemoved("a".into()),
            CommandResult::Rejected(causeway_catalog::Rejection::ResourceExists("b".into())),
            CommandResult::ResourceRemoved("c".into()),
        ];
        proposal
            .responder
            .on_complete(applied(CommandResult::Batch(results.clone())));
        for (answer, expected) in answers.iter_mut().zip(results) {
            match answer.try_recv() {
                Ok(Proposed::Applied(r)) => assert_eq!(r, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_lone_write_is_its_own_entry_and_a_batch_from_a_client_is_not_wrapped() {
        let client_batch = Command::Batch(vec![register("x", 0), register("y", 0)]);
        let (queued, _answers) = queue(vec![register("a", 0), client_batch.clone(), register("b", 0)]);
        assert_eq!(entries(queued), vec![register("a", 0), client_batch, register("b", 0)]);
    }

    #[test]
    fn a_batch_entry_holds_at_most_max_batch_bytes_of_commands() {
        // Four of these exceed the bound, three do not.
        let large = |i: usize| register(&format!("r{i}"), MAX_BATCH_BYTES / 4 + 1);
        assert!(3 * encoded_len(&large(0)) <= MAX_BATCH_BYTES);
        let (queued, _answers) = queue((0..10).map(large).collect());
        let sizes: Vec<usize> = entries(queued)
            .iter()
            .map(|entry| match entry {
                Command::Batch(commands) => commands.len(),
                _ => 1,
            })
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }

    #[test]
    fn a_batch_that_fails_fails_every_writer_in_it() {
        let (queued, mut answers) = queue(vec![register("a", 0), register("b", 0)]);
        let proposal = Proposal::take(&mut queued.into_iter().peekable());
        // Anything but one result per command is a failure for each of them.
        proposal.responder.on_complete(applied(CommandResult::Applied));
        for answer in &mut answers {
            assert!(matches!(answer.try_recv(), Ok(Proposed::Failed(_))));
        }
    }
}
