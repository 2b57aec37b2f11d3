//! Raft log and state machine in one redb file per node.
//!
//! Appended entries wait in memory (readable at once) until the storage writer thread writes
//! them, with one fsync for everything appended since its last round (group commit); openraft is
//! told an entry is flushed only after that fsync. The same writer applies committed entries,
//! in the same transactions, so the log and the state machine never wait on each other for
//! redb's write lock. Votes and truncations are made durable before returning. Entries are
//! applied only when openraft hands them over as committed.

mod deferred;
mod log_runs;
mod memory;
mod received;
mod snapshot;
mod writer;

pub use snapshot::SnapshotData;

use std::{
    io,
    ops::{Bound, RangeBounds},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    sync::{Arc, Mutex, Weak, mpsc},
};

use bytes::Bytes;
use causeway_catalog::CatalogSnapshot;
use futures::StreamExt;
use openraft::{
    OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    entry::RaftEntry,
    storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine},
};
use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::{Serialize, de::DeserializeOwned};

use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use memory::{MemoryLog, lock};
use writer::{Job, Shared};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Where earlier versions stored an encoded copy of the catalog as their snapshot; emptied at
/// open, as a snapshot is now a view of the state machine itself (see [`snapshot`]).
const STORED_SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
/// Where earlier versions kept the applied log id; now in the log's table (see `log_runs`).
const KEY_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";

/// Largest single stored record (a log entry or metadata) decoded back.
pub const MAX_RECORD: usize = 64 << 20;
/// Largest snapshot accepted from storage or the network.
pub const MAX_SNAPSHOT: usize = 1 << 30;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn enc<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    causeway_proto::encode(v, MAX_RECORD).map_err(io_err)
}

fn dec<T: DeserializeOwned>(b: &[u8], limit: usize) -> io::Result<T> {
    causeway_proto::decode(b, limit).map_err(io_err)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

fn write_txn(db: &Database, durability: Durability) -> io::Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(durability).map_err(io_err)?;
    Ok(txn)
}

fn read_key<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    read_key_in(&db.begin_read().map_err(io_err)?, table, key)
}

fn read_key_in<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    t.get(key)
        .map_err(io_err)?
        .map(|v| dec(v.value(), MAX_RECORD))
        .transpose()
}

/// Creates the tables a node's database holds, moving older layouts into the current one.
fn create_tables(db: &Database) -> io::Result<()> {
    let txn = write_txn(db, Durability::Immediate)?;
    {
        log_runs::create(&txn)?;
        txn.open_table(META).map_err(io_err)?;
        txn.open_table(SM_META).map_err(io_err)?;
        move_applied_into_log(&txn)?;
        txn.delete_table(STORED_SNAPSHOT).map_err(io_err)?;
        causeway_catalog::state::create_tables(&txn).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)
}

/// Moves an applied log id an earlier version kept in `SM_META` to the log's table.
fn move_applied_into_log(txn: &WriteTransaction) -> io::Result<()> {
    if log_runs::has_applied(txn)? {
        return Ok(());
    }
    let mut t = txn.open_table(SM_META).map_err(io_err)?;
    let Some(bytes) = t.remove(KEY_APPLIED).map_err(io_err)?.map(|v| v.value().to_vec()) else {
        return Ok(());
    };
    drop(t);
    log_runs::write(txn, &[], Some(&bytes))
}

/// Opens (or creates) the node's database and returns its log store and state machine.
pub fn open(path: &Path) -> io::Result<(LogStore, StateMachineStore)> {
    let db = Arc::new(Database::create(path).map_err(|e| io_err(format!("open {}: {e}", path.display())))?);
    create_tables(&db)?;
    let (tx, rx) = mpsc::channel::<Job>();
    let (applied, _) = applied_state(&db)?;
    let log = Arc::new(Shared {
        db: db.clone(),
        memory: Mutex::new(MemoryLog::default()),
        received: Mutex::new(Default::default()),
        committed: Mutex::new(None),
        applied: tokio::sync::watch::channel(applied.map(|l| l.index())).0,
        handed: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(Mutex::new(None)),
        apply_hold: writer::APPLY_HOLD,
        wanted: Arc::new(AtomicU64::new(0)),
        apply_delay: deferred::MAX_APPLY_DELAY,
    });
    let writer_log = log.clone();
    let thread = std::thread::Builder::new()
        .name("raft-storage".into())
        .spawn(move || writer::run(&writer_log, rx))?;
    let writer = StorageWriter {
        tx: tx.clone(),
        thread: Arc::new(Mutex::new(Some(thread))),
    };
    Ok((
        LogStore {
            log: log.clone(),
            writer: writer.clone(),
        },
        StateMachineStore { log, writer },
    ))
}

impl Shared {
    /// Entries in memory within `range` plus a redb read transaction, taken together under the
    /// lock so that an entry the writer drops from memory is seen in one or the other.
    fn snapshot(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<(Vec<Arc<Entry>>, redb::ReadTransaction)> {
        let memory = lock(&self.memory);
        let entries = memory.range(range);
        let txn = self.db.begin_read().map_err(io_err)?;
        Ok((entries, txn))
    }

    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        if let Some(entries) = lock(&self.memory).covering(range) {
            return Ok(entries);
        }
        let (memory, txn) = self.snapshot(range)?;
        // From the first in-memory index on, memory is newer (redb may hold the same entries
        // once the writer committed them).
        let first_in_memory = memory.first().map(|e| e.index()).unwrap_or(u64::MAX);
        let mut out = log_runs::read(&txn, range, first_in_memory)?;
        out.extend(memory.iter().map(|e| Entry::clone(e)));
        Ok(out)
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let (newest_in_memory, txn) = {
            let memory = lock(&self.memory);
            (memory.last_log_id(), self.db.begin_read().map_err(io_err)?)
        };
        if newest_in_memory.is_some() {
            return Ok(newest_in_memory);
        }
        log_runs::last_log_id(&txn)
    }
}

/// Stops the storage writer thread and waits for it, so that it no longer holds the database.
#[derive(Clone)]
pub struct StorageWriter {
    tx: mpsc::Sender<Job>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl StorageWriter {
    /// Lets the writer finish what is queued, then waits for its thread to exit. Blocking.
    pub fn stop(&self) {
        // A send error means the thread already exited.
        let _ = self.tx.send(Job::Stop);
        if let Some(thread) = lock(&self.thread).take()
            && thread.join().is_err()
        {
            tracing::warn!("raft storage writer panicked");
        }
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.tx.send(job).map_err(|_| io_err("raft storage writer stopped"))
    }

    /// Returns once everything queued before the call is committed.
    async fn barrier(&self) -> io::Result<()> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.send(Job::Barrier(done))?;
        committed.await.map_err(|_| io_err("raft storage writer stopped"))?
    }
}

/// The Raft log and vote.
pub struct LogStore {
    log: Arc<Shared>,
    writer: StorageWriter,
}

impl LogStore {
    /// The handle the append streams use to send and keep entries' encodings.
    pub fn entry_encodings(&self) -> EntryEncodings {
        EntryEncodings(Arc::downgrade(&self.log))
    }
}

/// Entries' log encodings, shared with the append streams: a leader sends each entry as it
/// encoded it for its own log, and a follower keeps the bytes it received for its log, so that
/// an entry is encoded once in the whole cluster instead of once per node and per stream.
///
/// Weak, so that a stream still open does not keep a stopped node's database open: a node's
/// shutdown waits for every other holder of its database to let go.
#[derive(Clone)]
pub struct EntryEncodings(Weak<Shared>);

impl EntryEncodings {
    /// The encoding of each of `entries` that this node's log still holds in memory.
    pub fn for_sending(&self, entries: &[Entry]) -> Vec<Option<Bytes>> {
        match self.0.upgrade() {
            Some(log) if !entries.is_empty() => lock(&log.memory).encodings_of(entries),
            _ => Vec::new(),
        }
    }

    /// Keeps encodings received from the leader for the append that stores their entries.
    pub fn received(&self, received: Vec<(LogId, Bytes)>) {
        if let Some(log) = self.0.upgrade()
            && !received.is_empty()
        {
            lock(&log.received).add(received);
        }
    }
}

impl LogStore {
    pub fn database(&self) -> Arc<Database> {
        self.log.db.clone()
    }

    /// The handle that stops this store's writer thread.
    pub fn writer(&self) -> StorageWriter {
        self.writer.clone()
    }
}

/// Reads log entries for replication.
#[derive(Clone)]
pub struct LogReader {
    log: Arc<Shared>,
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = range_bounds(&range);
        // Entries still in memory are served without a trip to the blocking pool.
        let in_memory = lock(&self.log.memory).covering(bounds);
        if let Some(entries) = in_memory {
            return Ok(entries);
        }
        let log = self.log.clone();
        blocking(move || log.read_entries(bounds)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_key(&self.log.db, META, KEY_VOTE)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        LogReader { log: self.log.clone() }.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        LogReader { log: self.log.clone() }.read_vote().await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.log.clone();
        blocking(move || {
            let last_purged: Option<LogId> = read_key(&log.db, META, KEY_PURGED)?;
            let last = log.last_log_id()?.or(last_purged);
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { log: self.log.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let db = self.log.db.clone();
        let bytes = enc(vote)?;
        blocking(move || {
            let txn = write_txn(&db, Durability::Immediate)?;
            txn.open_table(META)
                .map_err(io_err)?
                .insert(KEY_VOTE, bytes.as_slice())
                .map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Written by the next flush. Losing the newest value in a crash only means re-applying
        // from an older committed index once the leader confirms it again.
        let bytes = enc(&committed)?;
        *lock(&self.log.committed) = Some(bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let pending = lock(&self.log.committed).clone();
        if let Some(bytes) = pending {
            return dec(&bytes, MAX_RECORD);
        }
        Ok(read_key::<Option<LogId>>(&self.log.db, META, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Kept in memory (readable at once) until the writer writes and fsyncs them together
        // with every other append queued meanwhile: an append costs no redb commit of its own.
        // The Raft core does not wait for the fsync under way, so the appends made during one
        // round all go into the next.
        // Encoded here, on the appender's thread, before the memory log is locked.
        // A follower stores the bytes its leader sent where it kept them.
        let entries = {
            let mut received = lock(&self.log.received);
            entries
                .into_iter()
                .map(|entry| {
                    let encoded = match received.take(&entry) {
                        Some(bytes) => bytes,
                        None => Bytes::from(enc(&entry)?),
                    };
                    Ok(memory::EncodedEntry { entry, encoded })
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        let seq = lock(&self.log.memory).append(entries);
        self.writer.send(Job::Flush(seq, callback))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let log = self.log.clone();
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        // Out of memory first, then out of redb: a flush that picked these entries before they
        // left memory holds the write lock, so the deletion below runs after its commit.
        lock(&log.memory).truncate_from(from);
        blocking(move || {
            let txn = write_txn(&log.db, Durability::Immediate)?;
            log_runs::truncate_from(&txn, from)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let log = self.log.clone();
        let bytes = enc(&log_id)?;
        let upto = log_id.index();
        lock(&log.memory).purge_upto(upto);
        blocking(move || {
            let txn = write_txn(&log.db, Durability::None)?;
            {
                txn.open_table(META)
                    .map_err(io_err)?
                    .insert(KEY_PURGED, bytes.as_slice())
                    .map_err(io_err)?;
                log_runs::purge_upto(&txn, upto)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }
}

/// The catalog state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    log: Arc<Shared>,
    writer: StorageWriter,
}

impl StateMachineStore {
    /// The database, for reading the catalog tables.
    pub fn database(&self) -> Arc<Database> {
        self.log.db.clone()
    }

    /// Index of the newest applied entry whose effects the database shows. Openraft's own
    /// applied index can run a little ahead of it (applies are handed to the writer without
    /// waiting for its commit), so anything that reads the catalog waits on this one.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.log.applied.subscribe()
    }

    /// How far the state machine has got, for waiting until the database shows every entry a
    /// client may already have been answered for.
    pub fn apply_progress(&self) -> ApplyProgress {
        ApplyProgress {
            handed: self.log.handed.clone(),
            wanted: self.log.wanted.clone(),
            failed: self.log.failed.clone(),
            writer: self.writer.tx.clone(),
        }
    }
}

/// The applies handed to the writer, and whether it has failed. It holds no part of the store,
/// so that it does not keep the database open after a shutdown (its sender to the writer does
/// not keep the writer running: the writer stops on `StorageWriter::stop`).
#[derive(Clone)]
pub struct ApplyProgress {
    handed: Arc<AtomicU64>,
    /// The newest index a reader waits for: the writer applies any entry it holds back up to it.
    wanted: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
    /// For asking the writer to publish what it has applied.
    writer: mpsc::Sender<Job>,
}

impl ApplyProgress {
    /// Index of the newest entry handed over for applying: its client may have been answered
    /// (see `writer::apply_entries`) although the database may not show it yet.
    pub fn handed(&self) -> Option<u64> {
        Some(self.handed.load(Ordering::SeqCst)).filter(|i| *i > 0)
    }

    /// Why the storage writer stopped applying, if it has: nothing handed over is applied after.
    pub fn failure(&self) -> io::Result<()> {
        writer::failure_of(&self.failed)
    }

    /// Tells the writer a reader waits for `index` to be applied. Call it before reading
    /// [`Self::handed`]: an entry handed over later is then applied at once, not held back (see
    /// `deferred`), and one handed over already is applied by the [`Self::publish`] that follows.
    pub fn want(&self, index: u64) {
        self.wanted.fetch_max(index, Ordering::SeqCst);
    }

    /// Asks the writer to commit its round now if the round is waiting for a log flush to
    /// share its commit: a reader waits for an entry it has applied.
    pub fn publish(&self) {
        // A send error means the writer stopped; the reader learns of it from the applied index.
        let _ = self.writer.send(Job::Publish);
    }
}

fn applied_state(db: &Database) -> io::Result<(Option<LogId>, StoredMembership)> {
    applied_state_in(&db.begin_read().map_err(io_err)?)
}

/// The applied log id and membership as `txn` shows them.
fn applied_state_in(txn: &redb::ReadTransaction) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = log_runs::applied(txn)?.flatten();
    let membership = read_key_in(txn, SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
    Ok((applied, membership))
}

fn put(txn: &WriteTransaction, table: TableDefinition<&str, &[u8]>, key: &str, bytes: &[u8]) -> io::Result<()> {
    txn.open_table(table)
        .map_err(io_err)?
        .insert(key, bytes)
        .map_err(io_err)?;
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.writer.barrier().await?;
        let db = self.log.db.clone();
        blocking(move || applied_state(&db)).await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        // The writer applies them in its next round, together with any log flush queued
        // meanwhile, answering each client as its entry is applied; openraft goes on meanwhile,
        // so the applies queued behind one fsync share the next round.
        self.log.failure()?;
        if let Some((last, _)) = batch.last() {
            // Before the send: the writer may answer a client as soon as it has the job.
            self.log.handed.fetch_max(last.index(), Ordering::SeqCst);
        }
        self.writer.send(Job::Apply(batch))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.log.db.clone(),
            writer: self.writer.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        // Applies handed over earlier must land before the snapshot replaces the state.
        self.writer.barrier().await?;
        let bytes = snapshot.into_encoded().await?;
        let db = self.log.db.clone();
        let meta = meta.clone();
        let index = meta.last_log_id.as_ref().map(|l| l.index());
        blocking(move || {
            let catalog: CatalogSnapshot = dec(&bytes, MAX_SNAPSHOT)?;
            let txn = write_txn(&db, Durability::Immediate)?;
            causeway_catalog::state::import(&txn, &catalog).map_err(io_err)?;
            log_runs::write(&txn, &[], Some(&enc(&meta.last_log_id)?))?;
            put(&txn, SM_META, KEY_MEMBERSHIP, &enc(&meta.last_membership)?)?;
            txn.commit().map_err(io_err)?;
            tracing::info!(last = ?meta.last_log_id, bytes = bytes.len(), "installed snapshot");
            Ok(())
        })
        .await?;
        self.log.publish_applied(index);
        Ok(())
    }

    /// A view of the state machine as it is now: at or past the last snapshot built, which is
    /// all openraft needs of it (a follower given it resumes from its log id).
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // No barrier: every committed round shows at least the last snapshot built, which
        // waited for the applies before it.
        let db = self.log.db.clone();
        let snapshot = blocking(move || snapshot::view(&db)).await?;
        Ok(snapshot.meta.last_log_id.is_some().then_some(snapshot))
    }
}

/// Builds a snapshot from a consistent read of the catalog.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    writer: StorageWriter,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    /// Records nothing and copies nothing: the state machine is its own snapshot, so building one
    /// only settles on the applied log id that lets openraft purge the log behind it.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // The snapshot covers every apply openraft handed over before asking for it.
        self.writer.barrier().await?;
        let db = self.db.clone();
        let snapshot = blocking(move || snapshot::view(&db)).await?;
        tracing::info!(last = ?snapshot.meta.last_log_id, "built snapshot");
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, membership_ent};
    use std::collections::BTreeSet;

    #[test]
    fn entries_round_trip_through_postcard() {
        let e: Entry = blank_ent::<TypeConfig>(1, 1u64.into(), 2);
        let b = enc(&e).unwrap();
        let d: Entry = dec(&b, MAX_RECORD).unwrap();
        assert_eq!(d.log_id(), e.log_id());
        let m: Entry = membership_ent::<TypeConfig>(1, 1u64.into(), 3, vec![BTreeSet::from([1u64.into()])]);
        let b = enc(&m).unwrap();
        let d: Entry = dec(&b, MAX_RECORD).unwrap();
        assert_eq!(d.log_id(), m.log_id());
    }

    #[test]
    fn an_applied_log_id_kept_by_an_earlier_version_moves_into_the_log_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("node.redb")).unwrap();
        let applied = Some(blank_ent::<TypeConfig>(2, 1u64.into(), 41).log_id());
        let txn = db.begin_write().unwrap();
        put(&txn, SM_META, KEY_APPLIED, &enc(&applied).unwrap()).unwrap();
        txn.commit().unwrap();

        create_tables(&db).unwrap();
        assert_eq!(applied_state(&db).unwrap().0, applied);
        assert!(read_key::<Option<LogId>>(&db, SM_META, KEY_APPLIED).unwrap().is_none());
        // Opening again finds it where it moved.
        create_tables(&db).unwrap();
        assert_eq!(applied_state(&db).unwrap().0, applied);
    }
}
