//! The storage writer: one thread that makes every routine write to the node's redb file, so
//! log flushes and state-machine applies share transactions instead of contending for redb's
//! single write lock. Each round takes whatever is queued: it writes the unwritten log entries
//! and applies the committed entries handed over since the last round, in one transaction that
//! is fsynced when it carries log entries (group commit) and not otherwise.
//!
//! Openraft hands over committed entries one apply at a time and waits for each; the writer
//! takes them without making openraft wait for the round, so the applies queued behind one
//! fsync all go into the next round instead of one round each. A client is answered as soon as
//! its entry is applied (see [`apply_entries`]); the applied index that readers of the database
//! wait on is published only once the round is committed.

use std::{
    io,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use causeway_catalog::{CommandResult, StateWriter};
use openraft::{
    EntryPayload,
    entry::RaftEntry,
    storage::{EntryResponder, IOFlushed},
};
use redb::{Database, Durability, WriteTransaction};

use super::memory::{MemoryLog, Unwritten, lock};
use super::received::ReceivedEncodings;
use super::{KEY_APPLIED, KEY_COMMITTED, KEY_MEMBERSHIP, META, SM_META, enc, io_err, log_runs, put, write_txn};
use crate::types::{StoredMembership, TypeConfig};

/// Most queued requests taken into one round.
const MAX_JOBS_PER_ROUND: usize = 4096;
/// How long the writer polls for the next request after a round before it sleeps.
const IDLE_POLL: Duration = Duration::from_micros(100);
/// Least time between two writes of the committed index. Each write touches one more table,
/// which costs every fsync that carries it a few more pages; a committed index that lags a
/// little is still correct (it only grows), and the stop writes the newest one.
const COMMITTED_WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// What the writer is asked to do.
pub(super) enum Job {
    /// Make every append up to this sequence number durable, then report.
    Flush(u64, IOFlushed<TypeConfig>),
    /// Apply these committed entries and answer their clients.
    Apply(Vec<EntryResponder<TypeConfig>>),
    /// Report once everything queued before it is committed (or has failed).
    Barrier(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// Finish the requests queued before this one and exit, releasing the database.
    Stop,
}

/// What the writer shares with the log store and its readers.
pub(super) struct Shared {
    pub db: Arc<Database>,
    pub memory: Mutex<MemoryLog>,
    /// Encodings of entries received from the leader, for the appends that store them.
    pub received: Mutex<ReceivedEncodings>,
    /// The newest committed log id not yet written, encoded; a durable round persists it once
    /// `COMMITTED_WRITE_INTERVAL` has passed since the last write, and so does the stop.
    pub committed: Mutex<Option<Vec<u8>>>,
    /// Index of the newest applied entry whose effects readers of the database can see.
    pub applied: tokio::sync::watch::Sender<Option<u64>>,
    /// Index of the newest entry handed to the writer for applying (0: none yet).
    pub handed: Arc<std::sync::atomic::AtomicU64>,
    /// Why a round failed: every later request fails with it, as the state machine cannot skip
    /// an entry.
    pub failed: Arc<Mutex<Option<String>>>,
}

impl Shared {
    /// Publishes `index` as applied unless a newer index already is.
    pub fn publish_applied(&self, index: Option<u64>) {
        self.applied.send_if_modified(|current| {
            let newer = index > *current;
            if newer {
                *current = index;
            }
            newer
        });
    }

    /// The error a failed round left, if any.
    pub fn failure(&self) -> io::Result<()> {
        failure_of(&self.failed)
    }
}

/// The error a failed round left in `failed`, if any.
pub(super) fn failure_of(failed: &Mutex<Option<String>>) -> io::Result<()> {
    match &*lock(failed) {
        Some(e) => Err(io_err(format!("raft storage failed earlier: {e}"))),
        None => Ok(()),
    }
}

/// The writer's own bookkeeping across rounds.
#[derive(Default)]
struct Progress {
    /// When the committed index was last written.
    committed_written_at: Option<Instant>,
    /// Appends up to this sequence number are durable.
    durable_seq: u64,
    /// Index of the newest applied entry, for dropping applied entries from memory.
    applied: Option<u64>,
    /// Log entries written so far, for the debug log.
    entries_written: u64,
}

/// Runs rounds until told to stop or every sender is gone.
pub(super) fn run(shared: &Shared, rx: mpsc::Receiver<Job>) {
    let mut progress = Progress::default();
    let mut stop = false;
    while !stop {
        let Some(first) = next_job(&rx) else { break };
        let mut flushes = Vec::new();
        let mut applies = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            match job {
                Job::Flush(seq, done) => flushes.push((seq, done)),
                Job::Apply(entries) => applies.push(entries),
                Job::Barrier(done) => barriers.push(done),
                Job::Stop => {
                    stop = true;
                    break;
                }
            }
            taken += 1;
            if taken < MAX_JOBS_PER_ROUND {
                next = rx.try_recv().ok();
            }
        }
        round(shared, &mut progress, flushes, applies);
        if stop {
            write_committed_on_stop(shared);
        }
        for done in barriers {
            // The receiver is gone only when its caller stopped waiting.
            let _ = done.send(shared.failure());
        }
    }
}

/// Waits for the next request: first by polling for `IDLE_POLL`, giving the CPU away between
/// polls, then asleep. The next request usually comes within tens of microseconds of a round
/// (the apply of the entries just flushed, the client's next write), and waking a sleeping
/// thread costs about that much again on every round of a lightly loaded node.
fn next_job(rx: &mpsc::Receiver<Job>) -> Option<Job> {
    let until = Instant::now() + IDLE_POLL;
    while Instant::now() < until {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    rx.recv().ok()
}

/// One transaction for everything taken: the log entries (when an append is not yet durable)
/// and the applies, in the order openraft handed them over.
fn round(
    shared: &Shared,
    progress: &mut Progress,
    flushes: Vec<(u64, IOFlushed<TypeConfig>)>,
    applies: Vec<Vec<EntryResponder<TypeConfig>>>,
) {
    if flushes.is_empty() && applies.is_empty() {
        return;
    }
    // An append an earlier round already wrote (a round takes every unwritten entry, not only
    // those of its own requests) needs no fsync of its own.
    let durable = flushes.iter().any(|(seq, _)| *seq > progress.durable_seq);
    let written_before = progress.entries_written;
    let applies_taken = applies.len();
    let entries_applied = applies.iter().map(Vec::len).sum::<usize>();
    let result = shared
        .failure()
        .and_then(|()| write_round(shared, progress, durable, applies));
    tracing::debug!(
        appends = flushes.len(),
        entries_written = progress.entries_written - written_before,
        applies = applies_taken,
        entries_applied,
        fsync = durable,
        ok = result.is_ok(),
        "raft storage round"
    );
    let outcome = match result {
        Ok(()) => {
            shared.publish_applied(progress.applied);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "raft storage round failed; this node's storage stops here");
            lock(&shared.failed).get_or_insert_with(|| e.to_string());
            Err(e.to_string())
        }
    };
    for (_, done) in flushes {
        done.io_completed(outcome.clone().map_err(io_err));
    }
}

/// Writes one round, answering each applied entry's client as soon as its result is known.
fn write_round(
    shared: &Shared,
    progress: &mut Progress,
    durable: bool,
    applies: Vec<Vec<EntryResponder<TypeConfig>>>,
) -> io::Result<()> {
    let txn = write_txn(
        &shared.db,
        if durable {
            Durability::Immediate
        } else {
            Durability::None
        },
    )?;
    // Picked after the write lock is taken: a truncation that removes entries from memory after
    // this point waits for this commit and then deletes them from redb too.
    let unwritten = durable.then(|| lock(&shared.memory).unwritten());
    if let Some(unwritten) = &unwritten {
        write_log(&txn, unwritten)?;
        let due = progress
            .committed_written_at
            .is_none_or(|at| at.elapsed() >= COMMITTED_WRITE_INTERVAL);
        if due && write_committed(&txn, shared)? {
            progress.committed_written_at = Some(Instant::now());
        }
        progress.entries_written += unwritten.entries.len() as u64;
    }
    let mut applied = progress.applied;
    let mut catalog = StateWriter::new(&txn);
    for entries in applies {
        if let Some(last) = apply_entries(&txn, &mut catalog, entries)? {
            applied = Some(last);
        }
    }
    drop(catalog);
    txn.commit().map_err(io_err)?;
    progress.applied = applied;
    let mut memory = lock(&shared.memory);
    if let Some(unwritten) = unwritten {
        memory.mark_written(&unwritten.entries);
        progress.durable_seq = progress.durable_seq.max(unwritten.appended_seq);
    }
    memory.trim(progress.applied);
    Ok(())
}

fn write_log(txn: &WriteTransaction, unwritten: &Unwritten) -> io::Result<()> {
    let entries: Vec<_> = unwritten
        .entries
        .iter()
        .map(|e| e.index())
        .zip(unwritten.encoded.iter().map(|b| b.as_ref()))
        .collect();
    log_runs::write(txn, &entries)
}

/// Writes the pending committed index, if there is one; says whether there was. It rides along
/// with a durable round instead of costing a commit of its own.
fn write_committed(txn: &WriteTransaction, shared: &Shared) -> io::Result<bool> {
    let Some(bytes) = lock(&shared.committed).take() else {
        return Ok(false);
    };
    put(txn, META, KEY_COMMITTED, &bytes)?;
    Ok(true)
}

/// A clean stop leaves the newest committed index on disk, so a restart re-applies up to it at
/// once instead of waiting for the cluster to confirm it again.
fn write_committed_on_stop(shared: &Shared) {
    if shared.failure().is_err() || lock(&shared.committed).is_none() {
        return;
    }
    let result = write_txn(&shared.db, Durability::Immediate).and_then(|txn| {
        write_committed(&txn, shared)?;
        txn.commit().map_err(io_err)
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not write the committed index on stop");
    }
}

/// Applies committed entries to the catalog and records the newest applied log id (and
/// membership) in the same transaction; returns the newest applied index.
///
/// Each client is answered as soon as its entry is applied, before the transaction commits, so
/// the first clients of a large round write again while the rest is applied. That is safe: the
/// entry is committed (durable on a quorum) and applying is deterministic, so the answer is what
/// any replay gives, even if this transaction never commits; and a reader that must see the
/// write waits for the applied index, which is published only after the commit. Clients whose
/// entries were not reached when a round fails get a dropped responder, which tells them the
/// write failed.
fn apply_entries(
    txn: &WriteTransaction,
    catalog: &mut StateWriter<'_>,
    entries: Vec<EntryResponder<TypeConfig>>,
) -> io::Result<Option<u64>> {
    let mut last = None;
    let mut membership = None;
    for (entry, responder) in entries {
        let result = match &entry.payload {
            EntryPayload::Blank => CommandResult::Applied,
            EntryPayload::Normal(cmd) => catalog.apply(cmd).map_err(io_err)?,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id()), m.clone()));
                CommandResult::Applied
            }
        };
        last = Some(entry.log_id());
        if let Some(r) = responder {
            r.send(result);
        }
    }
    if last.is_some() {
        put(txn, SM_META, KEY_APPLIED, &enc(&last)?)?;
    }
    if let Some(m) = membership {
        put(txn, SM_META, KEY_MEMBERSHIP, &enc(&m)?)?;
    }
    Ok(last.map(|l| l.index()))
}
