//! Encodings of the entries a follower received from its leader, kept until its log store
//! appends those entries, so that the follower stores the leader's bytes instead of encoding
//! every entry a second time.

use std::collections::VecDeque;

use bytes::Bytes;
use openraft::entry::RaftEntry;

use crate::types::{Entry, LogId};

/// Most received encodings kept; beyond it the oldest are dropped (their entries get encoded).
pub(super) const MAX_RECEIVED_ENTRIES: usize = 16_384;
/// Most bytes of received encodings kept.
pub(super) const MAX_RECEIVED_BYTES: usize = 64 << 20;

/// Received encodings in the order they arrived, which is log order within one append stream.
#[derive(Default)]
pub(super) struct ReceivedEncodings {
    queue: VecDeque<(LogId, Bytes)>,
    bytes: usize,
}

impl ReceivedEncodings {
    pub fn add(&mut self, received: impl IntoIterator<Item = (LogId, Bytes)>) {
        for (id, encoded) in received {
            self.bytes += encoded.len();
            self.queue.push_back((id, encoded));
        }
        while self.queue.len() > MAX_RECEIVED_ENTRIES || self.bytes > MAX_RECEIVED_BYTES {
            let Some((_, dropped)) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= dropped.len();
        }
    }

    /// The encoding received for `entry`, if it is the next one kept; encodings kept for earlier
    /// indexes (entries openraft already had, or a stream that was given up) are dropped.
    pub fn take(&mut self, entry: &Entry) -> Option<Bytes> {
        let index = entry.index();
        while let Some((front, _)) = self.queue.front() {
            if front.index() > index {
                return None;
            }
            let at_index = front.index() == index;
            let (id, encoded) = self.queue.pop_front()?;
            self.bytes -= encoded.len();
            if at_index {
                // Raft's log matching: the same log id at the same index is the same entry.
                return (id == entry.log_id()).then_some(encoded);
            }
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TypeConfig;
    use openraft::testing::{blank_ent, log_id};

    fn received(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<(LogId, Bytes)> {
        indexes
            .map(|i| {
                (
                    log_id::<TypeConfig>(term, 1u64.into(), i),
                    Bytes::from(vec![i as u8; 3]),
                )
            })
            .collect()
    }

    #[test]
    fn an_entry_gets_the_bytes_received_for_its_own_log_id() {
        let mut r = ReceivedEncodings::default();
        r.add(received(1, 1..=4));
        // Entry 1 was already in the log: its encoding is skipped over.
        assert_eq!(
            r.take(&blank_ent::<TypeConfig>(1, 1u64.into(), 2)).unwrap(),
            vec![2u8; 3]
        );
        // Another term at index 3 is another entry: encoded afresh, not given these bytes.
        assert!(r.take(&blank_ent::<TypeConfig>(2, 1u64.into(), 3)).is_none());
        assert_eq!(r.len(), 1);
        // An index before everything kept takes nothing and drops nothing.
        assert!(r.take(&blank_ent::<TypeConfig>(1, 1u64.into(), 1)).is_none());
        assert_eq!(r.len(), 1);
        assert!(r.take(&blank_ent::<TypeConfig>(1, 1u64.into(), 9)).is_none());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn kept_encodings_are_bounded() {
        let mut r = ReceivedEncodings::default();
        r.add(received(1, 1..=(MAX_RECEIVED_ENTRIES as u64 + 5)));
        assert_eq!(r.len(), MAX_RECEIVED_ENTRIES);
        assert!(r.take(&blank_ent::<TypeConfig>(1, 1u64.into(), 5)).is_none());
        assert!(r.take(&blank_ent::<TypeConfig>(1, 1u64.into(), 6)).is_some());
        let mut big = ReceivedEncodings::default();
        let id = log_id::<TypeConfig>(1, 1u64.into(), 1);
        big.add([
            (id, Bytes::from(vec![0; MAX_RECEIVED_BYTES])),
            (id, Bytes::from(vec![0; 1])),
        ]);
        assert_eq!(big.len(), 1);
    }
}
