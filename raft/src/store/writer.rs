//! The storage writer: one thread that makes every routine write to the node's redb file, so
//! log flushes and state-machine applies share transactions instead of contending for redb's
//! single write lock. Each round takes whatever is queued, and whatever arrives while it
//! works: it applies the committed entries handed over, then writes the log entries appended so
//! far, in one transaction that is fsynced when it carries log entries (group commit) and not
//! otherwise. A round that has only applies to commit first waits a moment for a log flush to
//! commit with (see [`APPLY_HOLD`]).
//!
//! Openraft hands over committed entries one apply at a time and waits for each; the writer
//! takes them without making openraft wait for the round, so the applies queued behind one
//! fsync all go into the next round instead of one round each. A client is answered as soon as
//! its entry is applied (see [`apply_entries`]); the applied index that readers of the database
//! wait on is published only once the round is committed. Applies no client on this node waits
//! for (a follower's) are held back while the log is being flushed, for at most
//! [`super::deferred::MAX_APPLY_DELAY`] or until a reader asks (see [`DeferredApplies`]).

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

use super::deferred::{DeferredApplies, Release};
use super::memory::{MemoryLog, Unwritten, lock};
use super::received::ReceivedEncodings;
use super::{KEY_COMMITTED, KEY_MEMBERSHIP, META, SM_META, enc, io_err, log_runs, put, write_txn};
use crate::types::{LogId, StoredMembership, TypeConfig};

/// Most queued requests taken into one round.
const MAX_JOBS_PER_ROUND: usize = 4096;
/// How long the writer polls for the next request after a round of at most [`FEW_ENTRIES`] (or
/// while a round holds for a flush) before it sleeps. On a 3-node cluster with one client the
/// next request comes a few hundred microseconds after a round: a follower's next append follows
/// the leader's round trip, and the leader's apply follows a follower's fsync. At 100 µs the
/// writer was asleep by then more often than not.
const IDLE_POLL: Duration = Duration::from_micros(400);
/// How long the writer polls after a round of more than [`FEW_ENTRIES`]. Under load the next request
/// comes sooner, or not before the other threads (on a small machine, the ones polling compete
/// with) have done their share; polling as long as after a small round cost about a tenth more
/// CPU per write at three nodes × 256 writers.
const BUSY_POLL: Duration = Duration::from_micros(100);
/// The most entries written and applied in a round that still counts as a lightly loaded
/// node's (one client: the apply of its last write and the flush of its next).
const FEW_ENTRIES: u64 = 4;
/// Longest an apply-only round keeps its transaction open for a log flush to join it. A
/// commit of its own costs an apply a second transaction, whose pages and allocation records the
/// next fsync then carries as well (15 pages per fsync at one client instead of 12); with one
/// client the next flush comes a few hundred microseconds after the apply. Readers that wait
/// for the applied index cut the wait short (see [`Job::Publish`]).
pub(super) const APPLY_HOLD: Duration = Duration::from_millis(1);
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
    /// A reader waits for an entry already applied: commit the round under way now instead of
    /// holding it open for a flush.
    Publish,
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
    /// How long an apply-only round waits for a flush to share its commit: [`APPLY_HOLD`].
    pub apply_hold: Duration,
    /// The newest index a reader waits to see applied (0: none); held applies up to it are
    /// applied at once (see [`DeferredApplies`]).
    pub wanted: Arc<std::sync::atomic::AtomicU64>,
    /// Longest an apply no client waits for is held back: [`super::deferred::MAX_APPLY_DELAY`].
    pub apply_delay: Duration,
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
    /// Applies held back while the writer flushes the log.
    deferred: DeferredApplies,
}

/// The jobs one round has taken, besides its applies (which it does as it takes them).
#[derive(Default)]
struct Taken {
    flushes: Vec<(u64, IOFlushed<TypeConfig>)>,
    barriers: Vec<tokio::sync::oneshot::Sender<io::Result<()>>>,
    /// Jobs taken so far, against [`MAX_JOBS_PER_ROUND`].
    jobs: usize,
    /// A reader asked for the round's applies to be published.
    publish: bool,
    /// Entries the round wrote and applied.
    entries: u64,
    stop: bool,
}

impl Taken {
    /// Whether the round may take another job.
    fn open(&self) -> bool {
        !self.stop && self.jobs < MAX_JOBS_PER_ROUND
    }

    /// Whether the round, having found the queue empty, waits for a flush to share its commit:
    /// only when it has nothing to commit but applies and nobody waits for it.
    fn holds_for_a_flush(&self) -> bool {
        self.flushes.is_empty() && self.barriers.is_empty() && !self.publish && self.open()
    }

    /// Keeps `job` for the round; an apply is handed back, to be done at once.
    fn take(&mut self, job: Job) -> Option<Vec<EntryResponder<TypeConfig>>> {
        self.jobs += 1;
        match job {
            Job::Flush(seq, done) => self.flushes.push((seq, done)),
            Job::Apply(entries) => return Some(entries),
            Job::Barrier(done) => self.barriers.push(done),
            Job::Publish => self.publish = true,
            Job::Stop => self.stop = true,
        }
        None
    }
}

/// Runs rounds until told to stop or every sender is gone.
pub(super) fn run(shared: &Shared, rx: mpsc::Receiver<Job>) {
    let mut progress = Progress::default();
    let mut poll_for = IDLE_POLL;
    loop {
        let first = match progress.deferred.deadline(shared.apply_delay) {
            // Held applies are due then even if nothing else comes: a publish applies them (and
            // if every sender is gone, the wait after that round ends the loop).
            Some(due) => next_job_before(&rx, poll_for, due).unwrap_or(Job::Publish),
            None => match next_job(&rx, poll_for) {
                Some(job) => job,
                None => break,
            },
        };
        let taken = round(shared, &mut progress, &rx, first);
        poll_for = poll_after(taken.entries);
        if taken.stop {
            write_committed_on_stop(shared);
        }
        for done in taken.barriers {
            // The receiver is gone only when its caller stopped waiting.
            let _ = done.send(shared.failure());
        }
        if taken.stop {
            break;
        }
    }
}

/// How long to poll for the next request after a round of `entries` written and applied.
fn poll_after(entries: u64) -> Duration {
    if entries <= FEW_ENTRIES { IDLE_POLL } else { BUSY_POLL }
}

/// Waits for the next request: first by polling for `poll_for`, giving the CPU away between
/// polls, then asleep. The next request usually comes within a few hundred microseconds of a
/// round (the apply of the entries just flushed, the client's next write), and waking a
/// sleeping thread costs tens of microseconds on every round of a lightly loaded node.
fn next_job(rx: &mpsc::Receiver<Job>, poll_for: Duration) -> Option<Job> {
    match poll(rx, Instant::now() + poll_for) {
        Polled::Job(job) => Some(job),
        Polled::Gone => None,
        Polled::Nothing => rx.recv().ok(),
    }
}

/// Like [`next_job`], but gives up at `until`.
fn next_job_before(rx: &mpsc::Receiver<Job>, poll_for: Duration, until: Instant) -> Option<Job> {
    match poll(rx, (Instant::now() + poll_for).min(until)) {
        Polled::Job(job) => Some(job),
        Polled::Gone => None,
        Polled::Nothing => rx.recv_timeout(until.saturating_duration_since(Instant::now())).ok(),
    }
}

enum Polled {
    Job(Job),
    Nothing,
    Gone,
}

fn poll(rx: &mpsc::Receiver<Job>, until: Instant) -> Polled {
    while Instant::now() < until {
        match rx.try_recv() {
            Ok(job) => return Polled::Job(job),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return Polled::Gone,
        }
    }
    Polled::Nothing
}

/// One transaction, starting with `first`, for everything queued until the round picks its log
/// entries: the applies in the order openraft handed them over, then the entries appended so
/// far (when an append is not yet durable). Returns what it took besides the applies.
fn round(shared: &Shared, progress: &mut Progress, rx: &mpsc::Receiver<Job>, first: Job) -> Taken {
    let mut taken = Taken::default();
    let written_before = progress.entries_written;
    let mut counts = RoundCounts::default();
    // Taken before anything can fail, so that a failed round still answers the job's flush,
    // barrier or stop (an apply's clients learn of the failure from their dropped responders).
    let first_apply = taken.take(first);
    let result = shared
        .failure()
        .and_then(|()| write_round(shared, progress, rx, first_apply, &mut taken, &mut counts));
    let entries_written = progress.entries_written - written_before;
    taken.entries = entries_written + counts.entries_applied as u64;
    tracing::debug!(
        appends = taken.flushes.len(),
        entries_written,
        applies = counts.applies,
        entries_applied = counts.entries_applied,
        fsync = counts.fsync,
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
            // The failed apply's clients already saw their dropped responders; readers waiting
            // for the applied index learn of the failure here (see `ClusterNode::wait_applied`).
            shared.applied.send_modify(|_| {});
            Err(e.to_string())
        }
    };
    for (_, done) in std::mem::take(&mut taken.flushes) {
        done.io_completed(outcome.clone().map_err(io_err));
    }
    taken
}

/// What a round did, for the debug log.
#[derive(Default)]
struct RoundCounts {
    applies: usize,
    entries_applied: usize,
    fsync: bool,
}

/// Writes one round, answering each applied entry's client as soon as its result is known.
///
/// Jobs that arrive while the round works join it, until the round finds the queue empty or
/// has taken [`MAX_JOBS_PER_ROUND`]; a round that has found the queue empty with nothing but
/// applies taken waits up to `apply_hold` for a flush to join it, unless a reader asks for the
/// applies to be published. Under load that is what keeps a write to two rounds: the
/// apply of the entries the last round made durable arrives just after that round, while this
/// one is writing, and would otherwise wait out this round's fsync too; and the writes of
/// clients answered early in this round are made durable with it.
/// The log entries are picked last, after the write lock is taken and after every job the round
/// took, so every entry an apply refers to (appended before its apply was handed over) is
/// written no later than in this transaction, and a truncation that removes picked entries from
/// memory waits for this commit and then deletes them from redb too.
fn write_round(
    shared: &Shared,
    progress: &mut Progress,
    rx: &mpsc::Receiver<Job>,
    first_apply: Option<Vec<EntryResponder<TypeConfig>>>,
    taken: &mut Taken,
    counts: &mut RoundCounts,
) -> io::Result<()> {
    let mut txn = write_txn(&shared.db, Durability::None)?;
    // The newest entry this round applies; written once, with the log entries.
    let mut applied_id: Option<LogId> = None;
    let mut catalog = StateWriter::new(&txn);
    let mut apply = first_apply;
    // When an apply-only round stops waiting for a flush to share its commit.
    let mut hold_until = None;
    loop {
        if let Some(entries) = apply.take() {
            if DeferredApplies::may_hold(&entries) {
                progress.deferred.hold(entries, Instant::now());
            } else {
                // Held entries come first: the state machine applies in log order.
                for entries in [progress.deferred.take(), entries] {
                    if let Some(last) = apply_counted(&txn, &mut catalog, entries, counts)? {
                        applied_id = Some(last);
                    }
                }
            }
        }
        if !taken.open() {
            break;
        }
        let next = match rx.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::TryRecvError::Empty) if taken.holds_for_a_flush() => {
                let until = *hold_until.get_or_insert_with(|| Instant::now() + shared.apply_hold);
                next_job_before(rx, IDLE_POLL, until)
            }
            Err(_) => None,
        };
        match next {
            Some(job) => apply = taken.take(job),
            None => break,
        }
    }
    // Any flush, even of entries an earlier round wrote, says appends are streaming in: under
    // load most rounds take one of those, and releasing on them would keep the holds short.
    let busy = !taken.flushes.is_empty() && !taken.publish && taken.barriers.is_empty() && !taken.stop;
    let wanted = shared.wanted.load(std::sync::atomic::Ordering::SeqCst);
    let release = progress
        .deferred
        .release(busy, wanted, Instant::now(), shared.apply_delay);
    if release == Release::Now
        && let Some(last) = apply_counted(&txn, &mut catalog, progress.deferred.take(), counts)?
    {
        applied_id = Some(last);
    }
    catalog.finish().map_err(io_err)?;
    if counts.applies == 0 && taken.flushes.is_empty() {
        // Only barriers, publishes or a stop: nothing to commit.
        return Ok(());
    }
    // An append an earlier round already wrote (a round takes every unwritten entry, not only
    // those of its own requests) needs no fsync of its own.
    counts.fsync = taken.flushes.iter().any(|(seq, _)| *seq > progress.durable_seq);
    let applied = applied_id.map(|id| enc(&Some(id))).transpose()?;
    let unwritten = if counts.fsync {
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        let due = progress
            .committed_written_at
            .is_none_or(|at| at.elapsed() >= COMMITTED_WRITE_INTERVAL);
        if due && write_committed(&txn, shared)? {
            progress.committed_written_at = Some(Instant::now());
        }
        let unwritten = lock(&shared.memory).unwritten();
        progress.entries_written += unwritten.entries.len() as u64;
        Some(unwritten)
    } else {
        None
    };
    write_log(&txn, unwritten.as_ref(), applied.as_deref())?;
    txn.commit().map_err(io_err)?;
    if let Some(last) = applied_id {
        progress.applied = Some(last.index());
    }
    let mut memory = lock(&shared.memory);
    if let Some(unwritten) = unwritten {
        memory.mark_written(&unwritten.entries);
        progress.durable_seq = progress.durable_seq.max(unwritten.appended_seq);
    }
    memory.trim(progress.applied);
    Ok(())
}

/// Writes the round's unwritten log entries, if it flushes, and its applied log id, if it applied
/// any, in one visit of the log's table.
fn write_log(txn: &WriteTransaction, unwritten: Option<&Unwritten>, applied: Option<&[u8]>) -> io::Result<()> {
    let entries: Vec<_> = unwritten
        .into_iter()
        .flat_map(|u| {
            u.entries
                .iter()
                .map(|e| e.index())
                .zip(u.encoded.iter().map(|b| b.as_ref()))
        })
        .collect();
    log_runs::write(txn, &entries, applied)
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

/// [`apply_entries`], counted for the debug log; nothing to apply is no apply.
fn apply_counted(
    txn: &WriteTransaction,
    catalog: &mut StateWriter<'_>,
    entries: Vec<EntryResponder<TypeConfig>>,
    counts: &mut RoundCounts,
) -> io::Result<Option<LogId>> {
    if entries.is_empty() {
        return Ok(None);
    }
    counts.applies += 1;
    counts.entries_applied += entries.len();
    apply_entries(txn, catalog, entries)
}

/// Applies committed entries to the catalog, recording a new membership in the same
/// transaction; returns the newest applied log id, which the round writes with its log entries.
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
) -> io::Result<Option<LogId>> {
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
    if let Some(m) = membership {
        put(txn, SM_META, KEY_MEMBERSHIP, &enc(&m)?)?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use openraft::{testing::blank_ent, type_config::TypeConfigExt};
    use redb::ReadableDatabase;

    use super::super::memory::EncodedEntry;
    use super::*;
    use crate::types::Entry;

    #[test]
    fn a_lightly_loaded_writer_polls_longer_than_a_busy_one() {
        // One client: the apply of its last write and the flush of its next.
        assert_eq!(poll_after(2), IDLE_POLL);
        assert_eq!(poll_after(FEW_ENTRIES), IDLE_POLL);
        assert_eq!(poll_after(FEW_ENTRIES + 1), BUSY_POLL);
        assert!(BUSY_POLL < IDLE_POLL);
    }

    fn shared(dir: &std::path::Path) -> Shared {
        let db = Arc::new(Database::create(dir.join("node.redb")).unwrap());
        super::super::create_tables(&db).unwrap();
        Shared {
            db,
            memory: Mutex::new(MemoryLog::default()),
            received: Mutex::new(Default::default()),
            committed: Mutex::new(None),
            applied: tokio::sync::watch::channel(None).0,
            handed: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(Mutex::new(None)),
            apply_hold: APPLY_HOLD,
            wanted: Arc::new(AtomicU64::new(0)),
            apply_delay: super::super::deferred::MAX_APPLY_DELAY,
        }
    }

    /// A round that holds an apply-only transaction for a minute, so that a test sees whether it
    /// waited without depending on how fast its helper thread runs. Its applies are never held
    /// back past their round, as a leader's (whose clients wait) are not: openraft's responders
    /// cannot be made outside it, so the tests' entries have none.
    fn holding(dir: &std::path::Path) -> Shared {
        Shared {
            apply_hold: Duration::from_secs(60),
            apply_delay: Duration::ZERO,
            ..shared(dir)
        }
    }

    /// A follower's writer: applies are held back for up to a minute.
    fn following(dir: &std::path::Path) -> Shared {
        Shared {
            apply_delay: Duration::from_secs(60),
            ..shared(dir)
        }
    }

    /// Appends `range`, hands over its apply, and runs one round that takes both.
    fn flush_and_apply(shared: &Shared, progress: &mut Progress, range: std::ops::RangeInclusive<u64>) {
        let (tx, rx) = mpsc::channel();
        let flushed = append(shared, &tx, &entries(range.clone()));
        apply(&tx, entries(range));
        let job = rx.recv().unwrap();
        round(shared, progress, &rx, job);
        flushed.blocking_recv().unwrap().unwrap();
    }

    /// The applied index the database holds.
    fn applied_in_redb(shared: &Shared) -> Option<u64> {
        let read = shared.db.begin_read().unwrap();
        let (applied, _) = super::super::applied_state_in(&read).unwrap();
        applied.map(|l| l.index())
    }

    /// Runs one round of `job` alone.
    fn round_of(shared: &Shared, progress: &mut Progress, job: Job) -> Taken {
        let (_tx, rx) = mpsc::channel();
        round(shared, progress, &rx, job)
    }

    /// Writes entries `range` and applies none of them, in a round of their own.
    fn written(shared: &Shared, progress: &mut Progress, range: std::ops::RangeInclusive<u64>) {
        let (tx, rx) = mpsc::channel();
        let flushed = append(shared, &tx, &entries(range));
        let job = rx.recv().unwrap();
        round(shared, progress, &rx, job);
        flushed.blocking_recv().unwrap().unwrap();
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| blank_ent::<TypeConfig>(1, 1u64.into(), i)).collect()
    }

    /// Appends `entries` to memory the way the log store does and queues their flush.
    fn append(
        shared: &Shared,
        tx: &mpsc::Sender<Job>,
        entries: &[Entry],
    ) -> tokio::sync::oneshot::Receiver<io::Result<()>> {
        let encoded = entries.iter().map(|e| EncodedEntry {
            entry: e.clone(),
            encoded: enc(e).unwrap().into(),
        });
        let seq = lock(&shared.memory).append(encoded);
        let (done, flushed) = TypeConfig::oneshot();
        tx.send(Job::Flush(seq, IOFlushed::signal(done))).unwrap();
        flushed
    }

    fn apply(tx: &mpsc::Sender<Job>, entries: Vec<Entry>) {
        tx.send(Job::Apply(entries.into_iter().map(|e| (e, None)).collect()))
            .unwrap();
    }

    /// Everything queued goes into one transaction, and the log entries are picked after the
    /// applies: an apply handed over after a later append still finds every entry it refers to
    /// written with it, and every flush and barrier is answered once that transaction commits.
    #[test]
    fn a_round_applies_what_it_takes_and_writes_every_entry_appended_before_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (tx, rx) = mpsc::channel();
        let first = append(&shared, &tx, &entries(1..=3));
        apply(&tx, entries(1..=3));
        let second = append(&shared, &tx, &entries(4..=5));
        apply(&tx, entries(4..=5));
        let (done, barrier) = tokio::sync::oneshot::channel();
        tx.send(Job::Barrier(done)).unwrap();
        tx.send(Job::Stop).unwrap();

        let mut progress = Progress::default();
        let job = rx.recv().unwrap();
        let taken = round(&shared, &mut progress, &rx, job);
        assert!(taken.stop, "the round took every queued job, the stop too");
        assert_eq!(taken.barriers.len(), 1);
        assert_eq!(progress.entries_written, 5);
        assert_eq!(progress.durable_seq, 2);
        assert_eq!(*shared.applied.borrow(), Some(5));
        for done in taken.barriers {
            done.send(shared.failure()).unwrap();
        }
        for flushed in [first, second, barrier] {
            flushed.blocking_recv().unwrap().unwrap();
        }
        // Applied and written entries leave memory; the log and the applied index are in redb.
        assert!(lock(&shared.memory).last_log_id().is_none());
        let read = shared.db.begin_read().unwrap();
        let log = log_runs::read(
            &read,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            u64::MAX,
        )
        .unwrap();
        assert_eq!(log.iter().map(|e| e.index()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(applied_in_redb(&shared), Some(5));
    }

    /// A round writes every unwritten entry, so the flush of a later append is answered by an
    /// earlier round; a round that only applies entries written already writes no log.
    #[test]
    fn a_round_writes_each_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (tx, rx) = mpsc::channel();
        let mut progress = Progress::default();
        let first = append(&shared, &tx, &entries(1..=2));
        let second = append(&shared, &tx, &entries(3..=3));
        // Both appends' entries are written by the round of the first flush.
        let job = rx.recv().unwrap();
        round(&shared, &mut progress, &rx, job);
        assert_eq!((progress.entries_written, progress.durable_seq), (3, 2));
        first.blocking_recv().unwrap().unwrap();
        second.blocking_recv().unwrap().unwrap();

        apply(&tx, entries(1..=3));
        let job = rx.recv().unwrap();
        round(&shared, &mut progress, &rx, job);
        assert_eq!(progress.entries_written, 3, "an apply-only round writes no log");
        assert_eq!(*shared.applied.borrow(), Some(3));
    }

    /// Writes entry 1 on a [`holding`] writer, then runs the round of its apply while
    /// `meanwhile` sends the next job, 20 ms in: meant to arrive after the round found its queue
    /// empty (arriving earlier only makes a test pass without showing the wait). Returns the
    /// entries written, the applied index published and how long the round took.
    fn held_apply_round(meanwhile: impl FnOnce(&Shared, &mpsc::Sender<Job>) + Send) -> (u64, Option<u64>, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let shared = holding(dir.path());
        let mut progress = Progress::default();
        written(&shared, &mut progress, 1..=1);
        let (tx, rx) = mpsc::channel();
        apply(&tx, entries(1..=1));
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                meanwhile(&shared, &tx);
            });
            let job = rx.recv().unwrap();
            round(&shared, &mut progress, &rx, job);
        });
        let applied = *shared.applied.borrow();
        (progress.entries_written, applied, started.elapsed())
    }

    /// With one client the next write's flush comes a moment after the apply of the last one:
    /// the apply's round waits for it and commits both in one transaction (one fsync) instead of
    /// committing on its own first.
    #[test]
    fn an_apply_only_round_waits_for_the_next_flush_and_commits_with_it() {
        let (written, applied, took) = held_apply_round(|shared, tx| {
            append(shared, tx, &entries(2..=2));
        });
        assert_eq!(written, 2, "the apply's round wrote the next entry too");
        assert_eq!(applied, Some(1));
        assert!(took < Duration::from_secs(30), "the flush ended the wait");
    }

    /// A reader waiting for an applied entry does not wait out the hold.
    #[test]
    fn a_publish_request_ends_the_wait_for_a_flush() {
        let (written, applied, took) = held_apply_round(|_, tx| tx.send(Job::Publish).unwrap());
        assert_eq!(applied, Some(1));
        assert_eq!(written, 1);
        assert!(took < Duration::from_secs(30), "the publish request ended the wait");
    }

    /// A follower's rounds flush the log and hold the applies no client waits for, until a
    /// reader asks for them; they are then applied in log order, in one transaction.
    #[test]
    fn applies_no_client_waits_for_are_held_while_the_log_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let shared = following(dir.path());
        let mut progress = Progress::default();
        flush_and_apply(&shared, &mut progress, 1..=2);
        flush_and_apply(&shared, &mut progress, 3..=3);
        assert_eq!(progress.entries_written, 3, "the log is written at once");
        assert_eq!(*shared.applied.borrow(), None, "the applies are held");

        let taken = round_of(&shared, &mut progress, Job::Publish);
        assert_eq!(taken.entries, 3, "all three applied in the reader's round");
        assert_eq!(*shared.applied.borrow(), Some(3));
        assert_eq!(applied_in_redb(&shared), Some(3));
    }

    /// A barrier (a snapshot, a stop) and a round with no flush to make apply what is held.
    #[test]
    fn a_barrier_or_an_idle_round_applies_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let shared = following(dir.path());
        let mut progress = Progress::default();
        flush_and_apply(&shared, &mut progress, 1..=1);
        let (done, _barrier) = tokio::sync::oneshot::channel();
        round_of(&shared, &mut progress, Job::Barrier(done));
        assert_eq!(*shared.applied.borrow(), Some(1), "the barrier's round applied it");

        flush_and_apply(&shared, &mut progress, 2..=2);
        written(&shared, &mut progress, 3..=3);
        assert_eq!(*shared.applied.borrow(), Some(1), "2 is held through a flush");
        // The apply of 3 comes alone: a round without a flush applies everything held.
        let (tx, rx) = mpsc::channel();
        apply(&tx, entries(3..=3));
        drop(tx);
        let job = rx.recv().unwrap();
        round(&shared, &mut progress, &rx, job);
        assert_eq!(*shared.applied.borrow(), Some(3), "an idle round applied 2 and 3");
    }

    /// A reader that announced the index it waits for has it applied in the next round, even
    /// one that flushes (it may have looked before the entry was handed over, and sent no
    /// publish).
    #[test]
    fn a_wanted_entry_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let shared = following(dir.path());
        let mut progress = Progress::default();
        shared.wanted.store(2, std::sync::atomic::Ordering::SeqCst);
        flush_and_apply(&shared, &mut progress, 1..=1);
        assert_eq!(*shared.applied.borrow(), Some(1), "1 is at or below the wanted index");
        flush_and_apply(&shared, &mut progress, 2..=3);
        assert_eq!(
            *shared.applied.borrow(),
            Some(3),
            "the hold started at 2, which is wanted"
        );
        flush_and_apply(&shared, &mut progress, 4..=4);
        assert_eq!(*shared.applied.borrow(), Some(3), "nobody waits for 4");
    }

    /// With nothing else to do, the writer applies held entries once they are due.
    #[test]
    fn held_applies_are_applied_when_due_with_nothing_else_queued() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared {
            apply_delay: Duration::from_millis(20),
            ..shared(dir.path())
        };
        let (tx, rx) = mpsc::channel();
        let flushed = append(&shared, &tx, &entries(1..=1));
        apply(&tx, entries(1..=1));
        let mut applied = shared.applied.subscribe();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let in_time = std::thread::scope(|s| {
            s.spawn(|| run(&shared, rx));
            let in_time = runtime.block_on(async {
                flushed.await.unwrap().unwrap();
                // The watch's borrow must end here: the writer's next publish waits for it.
                let waited = tokio::time::timeout(Duration::from_secs(30), applied.wait_for(|a| *a == Some(1)));
                waited.await.is_ok_and(|r| r.is_ok())
            });
            // Stops the writer before the scope waits for it, whatever the outcome.
            tx.send(Job::Stop).unwrap();
            in_time
        });
        assert!(in_time, "applied within the deadline with no other request");
    }

    /// After a failure every job is still answered, each with the failure: openraft waits for
    /// a flush's report, `settle` for a barrier's, and a stop must end the writer.
    #[test]
    fn after_a_failure_every_job_is_answered_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        *lock(&shared.failed) = Some("the disk is gone".into());
        let (tx, rx) = mpsc::channel();
        let flushed = append(&shared, &tx, &entries(1..=1));
        let (done, barrier) = tokio::sync::oneshot::channel();
        tx.send(Job::Barrier(done)).unwrap();
        let (done, second_barrier) = tokio::sync::oneshot::channel();
        tx.send(Job::Barrier(done)).unwrap();
        tx.send(Job::Stop).unwrap();
        let flushed_after_stop = append(&shared, &tx, &entries(2..=2));
        drop(tx);
        run(&shared, rx);

        for answer in [flushed, barrier, second_barrier] {
            let e = answer.blocking_recv().expect("answered").expect_err("with the failure");
            assert!(e.to_string().contains("the disk is gone"), "{e}");
        }
        assert!(
            flushed_after_stop.blocking_recv().is_err(),
            "the writer ended at the stop"
        );
    }
}
