//! Applies no client on this node waits for (a follower's, mostly), held back while the storage
//! writer is busy flushing the log. A follower's flush rounds then carry only log pages, so
//! its answer to the leader (which every write waits on) comes sooner, and its applies go in
//! large batches that touch each catalog page once instead of once per round.

use std::time::{Duration, Instant};

use openraft::{entry::RaftEntry, storage::EntryResponder};

use crate::types::TypeConfig;

/// Most entries held back; the round that reaches it applies them all. An entry is usually a
/// leader's batch of writes (dozens under load), so this bounds the memory held rather than
/// the batch size, which [`MAX_APPLY_DELAY`] sets at any load a node sustains.
pub(super) const MAX_DEFERRED_ENTRIES: usize = 1_024;
/// Longest an entry is held back: a follower's catalog lags its log by at most about this much
/// for readers that do not ask for a current view (those that do end the hold at once, see
/// `ApplyProgress::want`). At three nodes × 256 writers 200 ms gained no more than 50 ms.
pub(super) const MAX_APPLY_DELAY: Duration = Duration::from_millis(50);

/// Why held entries must be applied in the round under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Release {
    /// Keep holding.
    Hold,
    /// The round flushes nothing, so applying costs no flush any waiting; or a reader, a
    /// barrier or a stop needs the state machine current; or the hold is full or old enough.
    Now,
}

/// Entries handed over for applying and not applied yet, in log order.
#[derive(Default)]
pub(super) struct DeferredApplies {
    entries: Vec<EntryResponder<TypeConfig>>,
    since: Option<Instant>,
}

impl DeferredApplies {
    /// Whether an apply of `entries` may be held back: no client on this node waits for any of
    /// them (a leader's entries carry their clients' responders, a follower's none).
    pub fn may_hold(entries: &[EntryResponder<TypeConfig>]) -> bool {
        entries.iter().all(|(_, responder)| responder.is_none())
    }

    /// Holds `entries` behind those held already.
    pub fn hold(&mut self, entries: Vec<EntryResponder<TypeConfig>>, now: Instant) {
        if entries.is_empty() {
            return;
        }
        self.since.get_or_insert(now);
        self.entries.extend(entries);
    }

    /// Everything held, in log order, leaving the hold empty.
    pub fn take(&mut self) -> Vec<EntryResponder<TypeConfig>> {
        self.since = None;
        std::mem::take(&mut self.entries)
    }

    /// When the oldest held entry must be applied at the latest.
    pub fn deadline(&self, max_delay: Duration) -> Option<Instant> {
        self.since.map(|at| at + max_delay)
    }

    /// Whether the round under way applies what is held. `busy` says the round flushes log
    /// entries, `wanted` is the newest index a reader waits for.
    pub fn release(&self, busy: bool, wanted: u64, now: Instant, max_delay: Duration) -> Release {
        let Some((first, _)) = self.entries.first() else {
            return Release::Hold;
        };
        let due = self.deadline(max_delay).is_some_and(|at| now >= at);
        if !busy || due || self.entries.len() >= MAX_DEFERRED_ENTRIES || wanted >= first.index() {
            Release::Now
        } else {
            Release::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;

    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<EntryResponder<TypeConfig>> {
        range
            .map(|i| (blank_ent::<TypeConfig>(1, 1u64.into(), i), None))
            .collect()
    }

    /// Openraft's responders cannot be made outside it, so the other half (an entry with a
    /// client is never held) is covered where clients write: `tests/` and the writer's tests.
    #[test]
    fn entries_no_client_waits_for_may_be_held() {
        assert!(DeferredApplies::may_hold(&entries(1..=3)));
    }

    #[test]
    fn a_busy_round_holds_until_full_due_or_wanted() {
        let start = Instant::now();
        let delay = Duration::from_millis(50);
        let mut held = DeferredApplies::default();
        assert_eq!(held.release(false, 0, start, delay), Release::Hold, "nothing held");
        held.hold(entries(10..=12), start);
        held.hold(entries(13..=13), start + Duration::from_millis(10));
        assert_eq!(held.deadline(delay), Some(start + delay), "the oldest entry sets it");

        assert_eq!(held.release(true, 9, start, delay), Release::Hold);
        assert_eq!(
            held.release(false, 0, start, delay),
            Release::Now,
            "an idle round applies"
        );
        assert_eq!(
            held.release(true, 10, start, delay),
            Release::Now,
            "a reader waits for 10"
        );
        assert_eq!(
            held.release(true, 0, start + delay, delay),
            Release::Now,
            "held long enough"
        );

        let taken = held.take();
        assert_eq!(
            taken.iter().map(|(e, _)| e.index()).collect::<Vec<_>>(),
            vec![10, 11, 12, 13]
        );
        assert_eq!(held.deadline(delay), None);

        held.hold(entries(1..=MAX_DEFERRED_ENTRIES as u64), start);
        assert_eq!(held.release(true, 0, start, delay), Release::Now, "full");
    }
}
