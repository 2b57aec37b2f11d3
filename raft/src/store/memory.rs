//! The in-memory part of the Raft log: every entry appended but not yet written to redb, and
//! written ones until the state machine has applied them, so that replication and apply read
//! fresh entries without a trip to redb.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use openraft::entry::RaftEntry;

use crate::types::{Entry, LogId};

/// Most written entries kept in memory for readers; beyond it the oldest are dropped (they are
/// in redb). Unwritten entries are never dropped: they exist nowhere else.
pub(super) const MAX_WRITTEN_IN_MEMORY: usize = 16_384;

struct Slot {
    entry: Arc<Entry>,
    /// The entry as the log table stores it and the append stream sends it: encoded once, by
    /// the appender or the leader that sent it, so that the storage writer (which every write
    /// waits on) and the replication streams only copy bytes.
    encoded: Bytes,
    /// Written to redb by a committed, fsynced transaction.
    written: bool,
}

/// An appended entry with its encoding for the log table.
pub(super) struct EncodedEntry {
    pub entry: Entry,
    pub encoded: Bytes,
}

/// The entries, keyed by index. Written entries always form a prefix of the map: the writer
/// writes everything unwritten at once, and truncation only removes a suffix, so what is left
/// after dropping written entries from the front is contiguous.
#[derive(Default)]
pub(super) struct MemoryLog {
    slots: BTreeMap<u64, Slot>,
    /// Sequence number of the newest append, so the writer knows which appends a write covers.
    appended_seq: u64,
}

/// Unwritten entries picked for one write, and the newest append they cover.
pub(super) struct Unwritten {
    pub entries: Vec<Arc<Entry>>,
    /// Each entry's encoding, in the same order.
    pub encoded: Vec<Bytes>,
    pub appended_seq: u64,
}

impl MemoryLog {
    /// Adds appended entries (replacing any at the same index) and returns the append's
    /// sequence number.
    pub fn append(&mut self, entries: impl IntoIterator<Item = EncodedEntry>) -> u64 {
        for e in entries {
            self.slots.insert(
                e.entry.index(),
                Slot {
                    entry: Arc::new(e.entry),
                    encoded: e.encoded,
                    written: false,
                },
            );
        }
        self.appended_seq += 1;
        self.appended_seq
    }

    pub fn unwritten(&self) -> Unwritten {
        // Written entries are a prefix: walk back from the newest to the first written one.
        let mut slots: Vec<&Slot> = self.slots.values().rev().take_while(|s| !s.written).collect();
        slots.reverse();
        Unwritten {
            entries: slots.iter().map(|s| s.entry.clone()).collect(),
            encoded: slots.iter().map(|s| s.encoded.clone()).collect(),
            appended_seq: self.appended_seq,
        }
    }

    /// Marks `entries` written, each only if it is still the very entry at its index (a
    /// truncation may have replaced it since it was picked).
    pub fn mark_written(&mut self, entries: &[Arc<Entry>]) {
        for e in entries {
            if let Some(slot) = self.slots.get_mut(&e.index())
                && Arc::ptr_eq(&slot.entry, e)
            {
                slot.written = true;
            }
        }
    }

    /// Drops written entries the state machine has applied, and the oldest written ones beyond
    /// [`MAX_WRITTEN_IN_MEMORY`].
    pub fn trim(&mut self, applied: Option<u64>) {
        // Counting the written prefix walks it, so only when memory could be over its bound.
        let mut excess = if self.slots.len() > MAX_WRITTEN_IN_MEMORY {
            let written = self.slots.values().take_while(|s| s.written).count();
            written.saturating_sub(MAX_WRITTEN_IN_MEMORY)
        } else {
            0
        };
        while let Some(entry) = self.slots.first_entry() {
            let slot = entry.get();
            let applied_here = applied.is_some_and(|a| *entry.key() <= a);
            if !slot.written || (!applied_here && excess == 0) {
                break;
            }
            entry.remove();
            excess = excess.saturating_sub(1);
        }
    }

    /// Removes every entry from index `from` on.
    pub fn truncate_from(&mut self, from: u64) {
        self.slots.split_off(&from);
    }

    /// Removes every entry up to and including index `upto`.
    pub fn purge_upto(&mut self, upto: u64) {
        self.slots = match upto.checked_add(1) {
            Some(next) => self.slots.split_off(&next),
            None => BTreeMap::new(),
        };
    }

    pub fn range(&self, range: (Bound<u64>, Bound<u64>)) -> Vec<Arc<Entry>> {
        self.slots.range(range).map(|(_, s)| s.entry.clone()).collect()
    }

    /// The entries of `range` if memory holds all of them (the range starts at or after the
    /// first entry in memory).
    pub fn covering(&self, range: (Bound<u64>, Bound<u64>)) -> Option<Vec<Entry>> {
        let start = match range.0 {
            Bound::Included(s) => s,
            Bound::Excluded(s) => s.checked_add(1)?,
            Bound::Unbounded => return None,
        };
        let first = *self.slots.keys().next()?;
        if start < first {
            return None;
        }
        Some(self.slots.range(range).map(|(_, s)| Entry::clone(&s.entry)).collect())
    }

    /// The encoding of each of `entries` that memory holds, if it holds that very entry.
    pub fn encodings_of(&self, entries: &[Entry]) -> Vec<Option<Bytes>> {
        entries
            .iter()
            .map(|e| {
                let slot = self.slots.get(&e.index())?;
                // Raft's log matching: the same log id at the same index is the same entry.
                (slot.entry.log_id() == e.log_id()).then(|| slot.encoded.clone())
            })
            .collect()
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.slots.values().next_back().map(|s| s.entry.log_id())
    }

    #[cfg(test)]
    fn indexes(&self) -> Vec<(u64, bool)> {
        self.slots.iter().map(|(i, s)| (*i, s.written)).collect()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TypeConfig;
    use openraft::testing::blank_ent;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<EncodedEntry> {
        range
            .map(|i| EncodedEntry {
                entry: blank_ent::<TypeConfig>(1, 1u64.into(), i),
                encoded: Bytes::new(),
            })
            .collect()
    }

    #[test]
    fn written_entries_stay_until_applied() {
        let mut m = MemoryLog::default();
        m.append(entries(1..=3));
        let picked = m.unwritten();
        assert_eq!(picked.entries.len(), 3);
        m.append(entries(4..=4));
        m.mark_written(&picked.entries);
        assert_eq!(m.unwritten().entries.len(), 1);
        m.trim(Some(2));
        assert_eq!(m.indexes(), vec![(3, true), (4, false)]);
        // Applied but unwritten entries stay: memory is their only copy.
        m.trim(Some(4));
        assert_eq!(m.indexes(), vec![(4, false)]);
    }

    #[test]
    fn an_entry_replaced_by_a_truncation_is_not_marked_written() {
        let mut m = MemoryLog::default();
        m.append(entries(1..=2));
        let picked = m.unwritten();
        m.truncate_from(2);
        m.append(entries(2..=2));
        m.mark_written(&picked.entries);
        assert_eq!(m.indexes(), vec![(1, true), (2, false)]);
    }

    #[test]
    fn memory_answers_only_ranges_it_covers_and_is_bounded() {
        let mut m = MemoryLog::default();
        let n = MAX_WRITTEN_IN_MEMORY as u64 + 10;
        m.append(entries(1..=n));
        let picked = m.unwritten();
        m.mark_written(&picked.entries);
        m.trim(None);
        assert_eq!(m.indexes().len(), MAX_WRITTEN_IN_MEMORY);
        assert!(m.covering((Bound::Included(1), Bound::Unbounded)).is_none());
        let tail = m.covering((Bound::Included(n - 1), Bound::Unbounded)).unwrap();
        assert_eq!(tail.iter().map(|e| e.index()).collect::<Vec<_>>(), vec![n - 1, n]);
        m.purge_upto(n - 1);
        assert_eq!(m.indexes(), vec![(n, true)]);
        m.purge_upto(u64::MAX);
        assert!(m.last_log_id().is_none());
    }
}
