//! How the Raft log lies in redb: in runs. Each row holds consecutive entries (the ones a
//! storage round flushes together), keyed by the index of its first one, so a round adds one
//! row instead of one per entry and a purge removes whole rows. A B-tree insert per entry was
//! most of what writing the log cost the storage writer, which every write passes through.
//!
//! A run is each entry's postcard encoding behind its length (4 bytes, little endian); the
//! entry at position `p` of the row keyed `k` has index `k + p`.
//!
//! The table's last key, after every index, holds the state machine's applied log id instead of
//! a run (see [`APPLIED_KEY`]).

use std::io;
use std::ops::{Bound, RangeTo};

use openraft::entry::RaftEntry;
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{MAX_RECORD, dec, io_err};
use crate::types::{Entry, LogId};

pub(super) const LOG_RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log_runs");
/// Where earlier versions kept one entry per row; moved into runs when the database is opened.
const ONE_ENTRY_ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

/// Most entries in one run: a truncation rewrites the part of a run it keeps, so runs stay
/// small enough for that to be cheap.
const MAX_RUN_ENTRIES: usize = 1024;
/// Most bytes in one run, for the same reason (a single larger entry still gets a run alone).
const MAX_RUN_BYTES: usize = 1 << 20;
/// Bytes before each entry in a run.
const LEN_PREFIX: usize = 4;
/// The row of the applied log id. Most storage rounds both write log entries and apply earlier
/// ones; with the applied log id in a table of its own they changed two B-trees, and every such
/// fsync carried one page more (a 3-node write with one client took about 4% longer). Its key
/// sorts after every log index, so it shares the leaf the newest entries go to.
const APPLIED_KEY: u64 = u64::MAX;
/// The keys of runs: every key but [`APPLIED_KEY`].
const RUN_KEYS: RangeTo<u64> = ..APPLIED_KEY;

type RunTable<'txn> = Table<'txn, u64, &'static [u8]>;

/// The encoded entries of one run, in order.
fn entries_of(run: &[u8]) -> io::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = run;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<LEN_PREFIX>()
            .ok_or_else(|| io_err("raft log run: truncated length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_RECORD || len > tail.len() {
            return Err(io_err("raft log run: entry longer than the run"));
        }
        let (entry, tail) = tail.split_at(len);
        out.push(entry);
        rest = tail;
    }
    Ok(out)
}

fn encode_run<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Vec<u8>> {
    let mut run = Vec::new();
    for e in entries {
        let len = u32::try_from(e.len()).map_err(|_| io_err("raft log entry too large"))?;
        run.extend_from_slice(&len.to_le_bytes());
        run.extend_from_slice(e);
    }
    Ok(run)
}

fn decode_at(first: u64, position: usize, bytes: &[u8]) -> io::Result<Entry> {
    let entry: Entry = dec(bytes, MAX_RECORD)?;
    let expected = first + position as u64;
    if entry.index() != expected {
        return Err(io_err(format!(
            "raft log run at {first}: entry {position} has index {}, not {expected}",
            entry.index()
        )));
    }
    Ok(entry)
}

/// Writes `entries` (each with its encoding), replacing whatever the log held from the first of
/// them on, and `applied` (the encoded applied log id), if given. Consecutive entries share a
/// run, up to the run limits.
pub(super) fn write(txn: &WriteTransaction, entries: &[(u64, &[u8])], applied: Option<&[u8]>) -> io::Result<()> {
    if entries.is_empty() && applied.is_none() {
        return Ok(());
    }
    let mut t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    if let Some(applied) = applied {
        t.insert(APPLIED_KEY, applied).map_err(io_err)?;
    }
    let Some(&(first, _)) = entries.first() else {
        return Ok(());
    };
    // Normally nothing: a truncation has already removed what these entries replace.
    cut_from(&mut t, first)?;
    let mut start = 0;
    while start < entries.len() {
        let (run_first, _) = entries[start];
        let mut end = start;
        let mut bytes = 0;
        while end < entries.len()
            && entries[end].0 == run_first + (end - start) as u64
            && end - start < MAX_RUN_ENTRIES
            && (end == start || bytes + entries[end].1.len() <= MAX_RUN_BYTES)
        {
            bytes += entries[end].1.len() + LEN_PREFIX;
            end += 1;
        }
        let run = encode_run(entries[start..end].iter().map(|(_, e)| *e))?;
        t.insert(run_first, run.as_slice()).map_err(io_err)?;
        start = end;
    }
    Ok(())
}

/// Removes every entry from index `from` on: the runs that start there or later, and the tail
/// of the run that holds `from`.
fn cut_from(t: &mut RunTable<'_>, from: u64) -> io::Result<()> {
    t.retain_in(from..APPLIED_KEY, |_, _| false).map_err(io_err)?;
    let Some(before) = t.range(..from).map_err(io_err)?.next_back() else {
        return Ok(());
    };
    let (key, run) = before.map_err(io_err)?;
    let first = key.value();
    let entries = entries_of(run.value())?;
    let keep = (from - first) as usize;
    if keep >= entries.len() {
        return Ok(());
    }
    let kept = encode_run(entries[..keep].iter().copied())?;
    drop(run);
    drop(key);
    t.insert(first, kept.as_slice()).map_err(io_err)?;
    Ok(())
}

/// Removes every entry from index `from` on.
pub(super) fn truncate_from(txn: &WriteTransaction, from: u64) -> io::Result<()> {
    cut_from(&mut txn.open_table(LOG_RUNS).map_err(io_err)?, from)
}

/// Removes the runs that hold only entries up to `upto`. The run that holds both `upto` and
/// later entries stays whole; its purged entries are never read again (openraft reads only
/// after the purged index).
pub(super) fn purge_upto(txn: &WriteTransaction, upto: u64) -> io::Result<()> {
    let mut t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    // The first index kept; the ranges below end before it, so never reach `APPLIED_KEY`.
    let next = upto.saturating_add(1);
    // The run holding the first entry kept, if any: every run before it goes.
    let holder = match t.range(..next).map_err(io_err)?.next_back() {
        Some(row) => {
            let (key, run) = row.map_err(io_err)?;
            let first = key.value();
            let count = entries_of(run.value())?.len() as u64;
            if first + count > next { Some(first) } else { None }
        }
        None => return Ok(()),
    };
    t.retain_in(..holder.unwrap_or(next), |_, _| false).map_err(io_err)
}

/// The entries of `range` below index `stop` (where memory takes over), in order.
pub(super) fn read(txn: &ReadTransaction, range: (Bound<u64>, Bound<u64>), stop: u64) -> io::Result<Vec<Entry>> {
    let t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    let start = match range.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.1 {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => e,
        Bound::Unbounded => u64::MAX,
    }
    .min(stop);
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    // The run holding `start` begins at or before it.
    let from = match t.range(..=start).map_err(io_err)?.next_back() {
        Some(row) => row.map_err(io_err)?.0.value(),
        None => start,
    };
    for row in t.range(from..end).map_err(io_err)? {
        let (key, run) = row.map_err(io_err)?;
        let first = key.value();
        for (position, bytes) in entries_of(run.value())?.into_iter().enumerate() {
            let index = first + position as u64;
            if index >= end {
                break;
            }
            if index >= start {
                out.push(decode_at(first, position, bytes)?);
            }
        }
    }
    Ok(out)
}

/// The log id of the newest entry in redb.
pub(super) fn last_log_id(txn: &ReadTransaction) -> io::Result<Option<LogId>> {
    let t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    let Some(row) = t.range(RUN_KEYS).map_err(io_err)?.next_back() else {
        return Ok(None);
    };
    let (key, run) = row.map_err(io_err)?;
    let entries = entries_of(run.value())?;
    match entries.last() {
        Some(bytes) => Ok(Some(decode_at(key.value(), entries.len() - 1, bytes)?.log_id())),
        None => Err(io_err(format!("raft log run at {} is empty", key.value()))),
    }
}

/// The applied log id last written with [`write`]: `None` if none was, `Some(None)` if the
/// state machine had applied nothing.
pub(super) fn applied(txn: &ReadTransaction) -> io::Result<Option<Option<LogId>>> {
    let t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    t.get(APPLIED_KEY)
        .map_err(io_err)?
        .map(|v| dec(v.value(), MAX_RECORD))
        .transpose()
}

/// Whether the applied log id has a row yet; databases of earlier versions kept it elsewhere.
pub(super) fn has_applied(txn: &WriteTransaction) -> io::Result<bool> {
    let t = txn.open_table(LOG_RUNS).map_err(io_err)?;
    Ok(t.get(APPLIED_KEY).map_err(io_err)?.is_some())
}

/// Creates the table, moving the entries of an earlier version's one-entry rows into runs.
pub(super) fn create(txn: &WriteTransaction) -> io::Result<()> {
    let mut runs = txn.open_table(LOG_RUNS).map_err(io_err)?;
    let legacy = match txn.open_table(ONE_ENTRY_ROWS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    let mut moved = 0u64;
    for row in legacy.iter().map_err(io_err)? {
        let (key, entry) = row.map_err(io_err)?;
        runs.insert(key.value(), encode_run([entry.value()])?.as_slice())
            .map_err(io_err)?;
        moved += 1;
    }
    drop(legacy);
    txn.delete_table(ONE_ENTRY_ROWS).map_err(io_err)?;
    tracing::info!(entries = moved, "moved the raft log into runs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TypeConfig;
    use openraft::testing::blank_ent;
    use redb::{Database, ReadableDatabase};
    use std::sync::Arc;

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("log.redb")).expect("db");
        (dir, db)
    }

    fn encoded(indexes: impl IntoIterator<Item = u64>) -> Vec<(u64, Arc<[u8]>)> {
        indexes
            .into_iter()
            .map(|i| {
                let e = blank_ent::<TypeConfig>(1, 1u64.into(), i);
                (i, Arc::from(postcard::to_stdvec(&e).expect("encode")))
            })
            .collect()
    }

    fn write_all(db: &Database, entries: &[(u64, Arc<[u8]>)]) {
        let txn = db.begin_write().expect("txn");
        let refs: Vec<_> = entries.iter().map(|(i, e)| (*i, &**e)).collect();
        write(&txn, &refs, None).expect("write");
        txn.commit().expect("commit");
    }

    fn change(db: &Database, f: impl FnOnce(&WriteTransaction) -> io::Result<()>) {
        let txn = db.begin_write().expect("txn");
        f(&txn).expect("change");
        txn.commit().expect("commit");
    }

    fn indexes(db: &Database, range: (Bound<u64>, Bound<u64>)) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        read(&txn, range, u64::MAX)
            .expect("read")
            .iter()
            .map(|e| e.index())
            .collect()
    }

    fn rows(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        let t = txn.open_table(LOG_RUNS).expect("table");
        t.iter().expect("iter").map(|r| r.expect("row").0.value()).collect()
    }

    const ALL: (Bound<u64>, Bound<u64>) = (Bound::Unbounded, Bound::Unbounded);

    #[test]
    fn entries_read_back_by_any_range_across_runs() {
        let (_d, db) = db();
        write_all(&db, &encoded(1..=5));
        write_all(&db, &encoded(6..=9));
        assert_eq!(rows(&db), [1, 6]);
        assert_eq!(indexes(&db, ALL), (1..=9).collect::<Vec<_>>());
        assert_eq!(indexes(&db, (Bound::Included(4), Bound::Excluded(7))), [4, 5, 6]);
        assert_eq!(indexes(&db, (Bound::Excluded(5), Bound::Included(6))), [6]);
        let txn = db.begin_read().expect("read");
        assert_eq!(
            read(&txn, ALL, 3).expect("read").len(),
            2,
            "stops where memory takes over"
        );
        assert_eq!(last_log_id(&txn).expect("last").map(|l| l.index()), Some(9));
    }

    #[test]
    fn a_gap_or_a_full_run_starts_a_new_row() {
        let (_d, db) = db();
        let mut entries = encoded(1..=3);
        entries.extend(encoded(10..=11));
        write_all(&db, &entries);
        assert_eq!(rows(&db), [1, 10]);
        let (_d2, db2) = super::tests::db();
        write_all(&db2, &encoded(1..=(MAX_RUN_ENTRIES as u64 + 1)));
        assert_eq!(rows(&db2), [1, MAX_RUN_ENTRIES as u64 + 1]);
    }

    #[test]
    fn truncation_cuts_inside_a_run_and_new_entries_replace_the_rest() {
        let (_d, db) = db();
        write_all(&db, &encoded(1..=5));
        write_all(&db, &encoded(6..=9));
        change(&db, |txn| truncate_from(txn, 4));
        assert_eq!(indexes(&db, ALL), [1, 2, 3]);
        assert_eq!(rows(&db), [1]);
        // Written over without a truncation first: the overlap is replaced too.
        write_all(&db, &encoded(3..=4));
        assert_eq!(indexes(&db, ALL), [1, 2, 3, 4]);
        assert_eq!(rows(&db), [1, 3]);
        let txn = db.begin_read().expect("read");
        assert_eq!(last_log_id(&txn).expect("last").map(|l| l.index()), Some(4));
    }

    #[test]
    fn a_purge_drops_whole_runs_only() {
        let (_d, db) = db();
        write_all(&db, &encoded(1..=5));
        write_all(&db, &encoded(6..=9));
        change(&db, |txn| purge_upto(txn, 3));
        assert_eq!(rows(&db), [1, 6], "the run holding 4 and 5 stays");
        assert_eq!(indexes(&db, (Bound::Included(4), Bound::Unbounded)), [4, 5, 6, 7, 8, 9]);
        change(&db, |txn| purge_upto(txn, 5));
        assert_eq!(rows(&db), [6]);
        change(&db, |txn| purge_upto(txn, 9));
        assert!(rows(&db).is_empty());
        change(&db, |txn| purge_upto(txn, u64::MAX));
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let (_d, db) = db();
        change(&db, |txn| {
            let mut t = txn.open_table(LOG_RUNS).map_err(io_err)?;
            t.insert(1, [9u8, 0, 0, 0, 1].as_slice()).map_err(io_err)?;
            Ok(())
        });
        let txn = db.begin_read().expect("read");
        assert!(read(&txn, ALL, u64::MAX).is_err());
        assert!(last_log_id(&txn).is_err());
    }

    #[test]
    fn one_entry_rows_of_an_earlier_version_move_into_runs() {
        let (_d, db) = db();
        change(&db, |txn| {
            let mut t = txn.open_table(ONE_ENTRY_ROWS).map_err(io_err)?;
            for (i, e) in encoded(3..=5) {
                t.insert(i, &*e).map_err(io_err)?;
            }
            Ok(())
        });
        change(&db, create);
        assert_eq!(indexes(&db, ALL), [3, 4, 5]);
        let txn = db.begin_read().expect("read");
        assert!(matches!(
            txn.open_table(ONE_ENTRY_ROWS),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
    }

    #[test]
    fn the_applied_row_outlives_truncations_and_purges_and_is_never_read_as_entries() {
        let (_dir, db) = db();
        let applied_id = Some(blank_ent::<TypeConfig>(1, 1u64.into(), 7).log_id());
        let bytes = super::super::enc(&applied_id).expect("encode");
        let entries = encoded(0..10);
        change(&db, |txn| {
            let refs: Vec<_> = entries.iter().map(|(i, e)| (*i, &**e)).collect();
            write(txn, &refs, Some(&bytes))
        });
        let seen = |db: &Database| {
            let txn = db.begin_read().expect("read");
            (
                applied(&txn).expect("applied"),
                last_log_id(&txn).expect("last").map(|l| l.index()),
                read(&txn, ALL, u64::MAX).expect("read").len(),
            )
        };
        assert_eq!(seen(&db), (Some(applied_id), Some(9), 10));
        change(&db, |txn| truncate_from(txn, 5));
        assert_eq!(seen(&db), (Some(applied_id), Some(4), 5));
        change(&db, |txn| purge_upto(txn, 2));
        assert_eq!(seen(&db).0, Some(applied_id));
        change(&db, |txn| purge_upto(txn, u64::MAX));
        assert_eq!(seen(&db), (Some(applied_id), None, 0));
        // A round with applies and no entries rewrites the row alone.
        change(&db, |txn| write(txn, &[], Some(&super::super::enc(&None::<LogId>)?)));
        assert_eq!(seen(&db), (Some(None), None, 0));
    }
}
