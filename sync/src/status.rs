//! Transfer status, sans-IO: the bookkeeping behind `causeway sync status`.
//!
//! One [`Transfer`] tracks one `(resource, peer, direction)`. The caller feeds it events
//! ([`Transfer::want`], [`Transfer::start`], [`Transfer::progress`], [`Transfer::synced`],
//! [`Transfer::nothing_published`], [`Transfer::refused`], [`Transfer::failed`],
//! [`Transfer::denied`]) with the current time in
//! milliseconds, and reads a [`TransferStatus`] for any time with [`Transfer::status`]. Nothing here reads a clock, so the
//! simulator can drive it with simulated time.
//!
//! # Rules
//!
//! * **States.** A new transfer is `pending`. `start` makes it `transferring`; `synced` makes it
//!   `synced` (or `pending` when a newer version is still wanted); `failed` / `denied` make it
//!   `failed` / `denied` with the reason. `stalled` is never stored: it is how a `transferring`
//!   transfer *reads* once `stall_after_ms` have passed without progress (elapsed time
//!   `>= stall_after_ms`), with the reason `"no progress for N ms"`. Progress revives it.
//! * **Progress.** The stall clock restarts on `start` and on a `progress` whose `bytes_done` is
//!   larger than any seen since that `start`; a repeated or smaller `bytes_done` does not count.
//!   `progress` is ignored unless the transfer is `transferring` (a late report after `synced`,
//!   `failed` or `denied` changes nothing). A `bytes_total` of `None` keeps the last known total;
//!   a known total smaller than `bytes_done` is raised to `bytes_done`.
//! * **Wanted versions and lag.** `want(v)` records that the origin has version `v` and we do not.
//!   A version at or below the last synced one is ignored; so is a version at or below a newer one
//!   already wanted (that one was known earlier). `start(v)` implies `want(v)`. The lag is the time
//!   since the *first moment we knew of a version newer than the last synced one*: wanting `v3`
//!   while `v2` is still wanted does not reset the lag, and syncing `v2` afterwards makes the lag
//!   count from when `v3` became known. With nothing wanted the lag is 0, and it is always 0 while
//!   `synced`. Lag keeps counting while `failed`, `denied` or `stalled`.
//! * **Synced.** `synced(v)` for a version older than the last synced one is ignored (stale
//!   report). Otherwise it records `v` as synced, forgets the wanted versions up to `v` and
//!   completes the byte counters (`bytes_done = bytes_total`; an unknown total becomes
//!   `bytes_done`). The transfer reads `synced` only when no newer version is wanted; otherwise it
//!   reads `pending` and the lag keeps counting. A `synced(v)` that arrives while a transfer of a
//!   newer version is running records `v` but leaves that transfer `transferring`.
//! * **Nothing published.** `nothing_published` says the origin has no version of the resource
//!   yet (it registered it without content): the transfer reads `pending` with the reason
//!   [`NOTHING_PUBLISHED`], never `synced`, with nothing wanted (lag 0). It is taken in any
//!   state, like `failed`; a `want`, `start` or `synced` of a version ends it.
//! * **Failures.** `failed` and `denied` are taken in any state (an explicit outcome of the latest
//!   attempt); they stay until the next `start` or `synced`. A `want` does not hide them.
//! * **Refused.** `refused(v)` is a version recorded with part of it refused (a git mirror that
//!   moved every ref but the divergent ones): `v` counts as synced for the wanted versions and
//!   the lag, but the transfer reads `failed` with the reason. A later `synced` of `v` or an older
//!   version (a pull that finds the mirror already at `v`) leaves it `failed`: only a `start` or
//!   the `synced` of a newer version clears it, so the refusal stays reported until something
//!   newer arrives.
//! * **Version shown.** `transferring` / `stalled`: the version being transferred. `synced` and
//!   `pending`: the last synced version (0 before the first). `failed` / `denied`: the version of
//!   the attempt that failed, else the newest wanted version, else the last synced one.
//! * **Bytes.** `bytes_total` reads 0 while the total is unknown, and `bytes_total_known` says
//!   which (a display must not show an unknown total as 0).
//! * **Time.** Times may repeat; a time earlier than a previous one is treated as no time passing
//!   (all differences saturate at 0).

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The reason a transfer reads `pending` while its origin has published no version yet.
pub const NOTHING_PUBLISHED: &str = "nothing published yet";

/// Which way content moves, seen from this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We fetch a peer's resource (we hold the mirror).
    Pull,
    /// We send our resource to a peer.
    Push,
}

impl Direction {
    /// The contract's word: `pull` or `push`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `sync status` shows for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Nothing running; either nothing synced yet or a newer version is wanted.
    Pending,
    /// Content is moving.
    Transferring,
    /// Up to date with every version we know of.
    Synced,
    /// A transfer is running but made no progress for `stall_after_ms`.
    Stalled,
    /// The last attempt failed (see `reason`).
    Failed,
    /// Policy refused the transfer (see `reason`).
    Denied,
}

impl TransferState {
    /// The contract's word, e.g. `transferring`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Pending => "pending",
            TransferState::Transferring => "transferring",
            TransferState::Synced => "synced",
            TransferState::Stalled => "stalled",
            TransferState::Failed => "failed",
            TransferState::Denied => "denied",
        }
    }
}

impl fmt::Display for TransferState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tunables for reading a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// A transfer without progress for this long reads `stalled`.
    pub stall_after_ms: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self { stall_after_ms: 10_000 }
    }
}

/// One row of `causeway sync status --json`. The field names are the CLI contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    pub resource: String,
    pub peer: String,
    pub direction: Direction,
    pub state: TransferState,
    /// The version being synced (transferring, stalled) or last synced; see the module rules.
    pub version: u64,
    /// How long a version newer than the last synced one has been known, in ms.
    pub lag_ms: u64,
    pub bytes_done: u64,
    /// 0 while unknown.
    pub bytes_total: u64,
    pub reason: Option<String>,
    /// Whether `bytes_total` is known (false: it reads 0 and means "unknown").
    #[serde(default)]
    pub bytes_total_known: bool,
}

/// The stored phase; `stalled` is derived when reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    /// The origin has no version yet: reads `pending`, with [`NOTHING_PUBLISHED`].
    NothingPublished,
    Transferring,
    Synced,
    Failed,
    Denied,
}

/// Most distinct wanted versions remembered; beyond it the two oldest merge (keeping the earlier
/// time, so the lag can only be over-, never under-reported).
const MAX_WANTED: usize = 64;

/// One (resource, peer, direction) transfer's bookkeeping; time is an input in ms.
#[derive(Clone, Debug)]
pub struct Transfer {
    resource: String,
    peer: String,
    direction: Direction,
    phase: Phase,
    /// Last synced version.
    synced: Option<u64>,
    /// Wanted versions newer than `synced`, strictly increasing, each with the time it became
    /// known.
    wanted: VecDeque<(u64, u64)>,
    /// Version of the current (or last failed) attempt.
    attempt: Option<u64>,
    bytes_done: u64,
    bytes_total: Option<u64>,
    /// When the stall clock last restarted.
    last_progress_ms: u64,
    reason: Option<String>,
    /// A version recorded with part of it refused: it reads failed until something newer.
    refused: Option<u64>,
    /// Time of the last event (for callers that expire old rows).
    updated_ms: u64,
}

impl Transfer {
    /// A new transfer, `pending`, nothing wanted.
    pub fn new(resource: String, peer: String, direction: Direction, now_ms: u64) -> Self {
        Self {
            resource,
            peer,
            direction,
            phase: Phase::Pending,
            synced: None,
            wanted: VecDeque::new(),
            attempt: None,
            bytes_done: 0,
            bytes_total: None,
            last_progress_ms: now_ms,
            reason: None,
            refused: None,
            updated_ms: now_ms,
        }
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The last synced version, if any.
    pub fn synced_version(&self) -> Option<u64> {
        self.synced
    }

    /// The newest version known at the origin that is not synced yet.
    pub fn wanted_version(&self) -> Option<u64> {
        self.wanted.back().map(|&(v, _)| v)
    }

    /// Time of the last event fed in.
    pub fn updated_ms(&self) -> u64 {
        self.updated_ms
    }

    fn touch(&mut self, now_ms: u64) {
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// A newer version is known at the origin (e.g. via notification) that we do not have yet;
    /// lag counts from the first moment we knew of an unsynced version.
    pub fn want(&mut self, version: u64, now_ms: u64) {
        self.touch(now_ms);
        if self.synced.is_some_and(|s| version <= s) {
            return;
        }
        if self.wanted.back().is_some_and(|&(w, _)| version <= w) {
            return;
        }
        self.wanted.push_back((version, now_ms));
        if self.wanted.len() > MAX_WANTED
            && let (Some((_, t0)), Some((v1, t1))) = (self.wanted.pop_front(), self.wanted.pop_front())
        {
            self.wanted.push_front((v1, t0.min(t1)));
        }
        if matches!(self.phase, Phase::Synced | Phase::NothingPublished) {
            self.phase = Phase::Pending;
        }
    }

    /// A transfer of `version` begins (or restarts): `transferring`, bytes from 0.
    pub fn start(&mut self, version: u64, bytes_total: Option<u64>, now_ms: u64) {
        self.want(version, now_ms);
        self.phase = Phase::Transferring;
        self.attempt = Some(version);
        self.bytes_done = 0;
        self.bytes_total = bytes_total;
        self.last_progress_ms = now_ms;
        self.reason = None;
        self.refused = None;
    }

    /// Bytes moved so far in the running transfer. Restarts the stall clock only when
    /// `bytes_done` grows; ignored unless `transferring`.
    pub fn progress(&mut self, bytes_done: u64, bytes_total: Option<u64>, now_ms: u64) {
        if self.phase != Phase::Transferring {
            return;
        }
        self.touch(now_ms);
        if bytes_total.is_some() {
            self.bytes_total = bytes_total;
        }
        if bytes_done > self.bytes_done {
            self.bytes_done = bytes_done;
            self.last_progress_ms = now_ms;
        }
        if let Some(total) = self.bytes_total
            && total < self.bytes_done
        {
            self.bytes_total = Some(self.bytes_done);
        }
    }

    /// `version` is now complete here. Reads `synced` (lag 0, all bytes done) unless a newer
    /// version is still wanted.
    pub fn synced(&mut self, version: u64, now_ms: u64) {
        self.touch(now_ms);
        if self.synced.is_some_and(|s| version < s) {
            return;
        }
        self.synced = Some(version);
        self.wanted.retain(|&(w, _)| w > version);
        if self.refused.is_some_and(|r| version <= r) {
            return;
        }
        self.refused = None;
        if self.phase == Phase::Transferring && self.attempt.is_some_and(|a| a > version) {
            return;
        }
        let total = self.bytes_total.unwrap_or(self.bytes_done).max(self.bytes_done);
        self.bytes_total = Some(total);
        self.bytes_done = total;
        self.attempt = None;
        self.reason = None;
        self.phase = if self.wanted.is_empty() {
            Phase::Synced
        } else {
            Phase::Pending
        };
    }

    /// The origin has no version of the resource yet: nothing to fetch, and nothing synced.
    pub fn nothing_published(&mut self, now_ms: u64) {
        self.touch(now_ms);
        // The origin has nothing we lack, so nothing is wanted and nothing lags.
        self.wanted.clear();
        self.phase = Phase::NothingPublished;
        self.attempt = None;
        self.reason = None;
    }

    /// The latest attempt failed.
    pub fn failed(&mut self, reason: String, now_ms: u64) {
        self.touch(now_ms);
        self.phase = Phase::Failed;
        self.reason = Some(reason);
    }

    /// `version` is recorded here, but part of it was refused (`reason` says which).
    pub fn refused(&mut self, version: u64, reason: String, now_ms: u64) {
        self.touch(now_ms);
        if self.synced.is_none_or(|s| s < version) {
            self.synced = Some(version);
        }
        self.wanted.retain(|&(w, _)| w > version);
        self.attempt = Some(version);
        self.refused = Some(version);
        self.phase = Phase::Failed;
        self.reason = Some(reason);
    }

    /// Policy refused the transfer.
    pub fn denied(&mut self, reason: String, now_ms: u64) {
        self.touch(now_ms);
        self.phase = Phase::Denied;
        self.reason = Some(reason);
    }

    /// The lag at `now_ms`.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.wanted
            .iter()
            .map(|&(_, since)| since)
            .min()
            .map_or(0, |since| now_ms.saturating_sub(since))
    }

    /// How the transfer reads at `now_ms`.
    pub fn status(&self, now_ms: u64, cfg: &StatusConfig) -> TransferStatus {
        let synced = self.synced.unwrap_or(0);
        let (state, version, reason) = match self.phase {
            Phase::Pending => (TransferState::Pending, synced, None),
            Phase::NothingPublished => (TransferState::Pending, synced, Some(NOTHING_PUBLISHED.to_string())),
            Phase::Synced => (TransferState::Synced, synced, None),
            Phase::Transferring => {
                let version = self.attempt.unwrap_or(synced);
                let idle = now_ms.saturating_sub(self.last_progress_ms);
                if idle >= cfg.stall_after_ms {
                    (
                        TransferState::Stalled,
                        version,
                        Some(format!("no progress for {idle} ms")),
                    )
                } else {
                    (TransferState::Transferring, version, None)
                }
            }
            Phase::Failed | Phase::Denied => {
                let state = if self.phase == Phase::Failed {
                    TransferState::Failed
                } else {
                    TransferState::Denied
                };
                let version = self.attempt.or(self.wanted_version()).unwrap_or(synced);
                (state, version, self.reason.clone())
            }
        };
        TransferStatus {
            resource: self.resource.clone(),
            peer: self.peer.clone(),
            direction: self.direction,
            state,
            version,
            lag_ms: if state == TransferState::Synced {
                0
            } else {
                self.lag_ms(now_ms)
            },
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total.unwrap_or(0),
            reason,
            bytes_total_known: self.bytes_total.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Transfer {
        Transfer::new("repo".into(), "peer".into(), Direction::Pull, 1_000)
    }

    const CFG: StatusConfig = StatusConfig { stall_after_ms: 10_000 };

    #[test]
    fn new_is_pending() {
        let t = t0();
        let s = t.status(5_000, &CFG);
        assert_eq!(s.state, TransferState::Pending);
        assert_eq!((s.version, s.lag_ms, s.bytes_done, s.bytes_total), (0, 0, 0, 0));
        assert_eq!(s.reason, None);
    }

    #[test]
    fn happy_path() {
        let mut t = t0();
        t.want(3, 2_000);
        assert_eq!(t.status(2_500, &CFG).lag_ms, 500);
        t.start(3, Some(100), 3_000);
        let s = t.status(3_000, &CFG);
        assert_eq!(
            (s.state, s.version, s.bytes_total),
            (TransferState::Transferring, 3, 100)
        );
        t.progress(40, None, 4_000);
        let s = t.status(4_000, &CFG);
        assert_eq!((s.bytes_done, s.bytes_total, s.lag_ms), (40, 100, 2_000));
        t.synced(3, 5_000);
        let s = t.status(9_000, &CFG);
        assert_eq!(s.state, TransferState::Synced);
        assert_eq!((s.version, s.lag_ms, s.bytes_done, s.bytes_total), (3, 0, 100, 100));
    }

    #[test]
    fn stalls_without_progress_and_revives() {
        let mut t = t0();
        t.start(1, None, 0);
        assert_eq!(t.status(9_999, &CFG).state, TransferState::Transferring);
        let s = t.status(10_000, &CFG);
        assert_eq!(s.state, TransferState::Stalled);
        assert_eq!(s.reason.as_deref(), Some("no progress for 10000 ms"));
        t.progress(0, Some(10), 10_500); // no growth: does not reset the clock
        assert_eq!(t.status(10_500, &CFG).state, TransferState::Stalled);
        t.progress(5, None, 11_000);
        assert_eq!(t.status(11_000, &CFG).state, TransferState::Transferring);
        t.progress(5, None, 20_000); // same bytes again
        assert_eq!(t.status(21_000, &CFG).state, TransferState::Stalled);
        t.progress(4, None, 21_000); // going backwards is not progress either
        assert_eq!(t.status(21_000, &CFG).state, TransferState::Stalled);
        assert_eq!(t.status(21_000, &CFG).bytes_done, 5);
    }

    #[test]
    fn lag_counts_from_first_unsynced_version() {
        let mut t = t0();
        t.want(2, 1_000);
        t.want(3, 4_000);
        assert_eq!(t.status(5_000, &CFG).lag_ms, 4_000);
        // An older want arriving late does not change anything.
        t.want(1, 4_500);
        assert_eq!(t.status(5_000, &CFG).lag_ms, 4_000);
        // Synced an older version than wanted: pending, lag from when v3 was known.
        t.synced(2, 6_000);
        let s = t.status(7_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Pending, 2, 3_000));
        t.synced(3, 8_000);
        let s = t.status(9_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Synced, 3, 0));
        // Wanting an already synced version changes nothing.
        t.want(3, 9_000);
        assert_eq!(t.status(9_500, &CFG).state, TransferState::Synced);
        // A newer version makes a synced transfer pending again.
        t.want(4, 10_000);
        let s = t.status(10_100, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Pending, 3, 100));
    }

    #[test]
    fn late_events_are_ignored() {
        let mut t = t0();
        t.start(2, Some(50), 1_000);
        t.progress(20, None, 1_500);
        t.synced(2, 2_000);
        t.progress(30, Some(70), 2_500);
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.bytes_done, s.bytes_total), (TransferState::Synced, 50, 50));
        // A stale synced for an older version changes nothing.
        t.synced(1, 3_000);
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.version), (TransferState::Synced, 2));
        // A long time later: synced never reads stalled.
        assert_eq!(t.status(1_000_000, &CFG).state, TransferState::Synced);
    }

    #[test]
    fn synced_older_while_transferring_newer_keeps_transferring() {
        let mut t = t0();
        t.want(5, 1_000);
        t.start(5, Some(10), 2_000);
        t.synced(4, 3_000);
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Transferring, 5, 2_000));
        t.synced(5, 4_000);
        assert_eq!(t.status(4_000, &CFG).state, TransferState::Synced);
    }

    #[test]
    fn failed_and_denied() {
        let mut t = t0();
        t.want(2, 1_000);
        t.failed("peer unreachable".into(), 2_000);
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Failed, 2, 2_000));
        assert_eq!(s.reason.as_deref(), Some("peer unreachable"));
        // A newer want does not hide the failure; the failure never reads stalled.
        t.want(3, 4_000);
        assert_eq!(t.status(100_000, &CFG).state, TransferState::Failed);
        t.start(3, None, 5_000);
        let s = t.status(5_000, &CFG);
        assert_eq!((s.state, s.reason), (TransferState::Transferring, None));
        t.progress(7, None, 5_500);
        t.denied("not shared with this cluster".into(), 6_000);
        let s = t.status(6_000, &CFG);
        assert_eq!((s.state, s.version, s.bytes_done), (TransferState::Denied, 3, 7));
        // Late progress after a denial is ignored.
        t.progress(9, None, 6_100);
        assert_eq!(t.status(6_100, &CFG).bytes_done, 7);
        t.synced(3, 7_000);
        let s = t.status(7_000, &CFG);
        assert_eq!((s.state, s.reason, s.lag_ms), (TransferState::Synced, None, 0));
    }

    #[test]
    fn a_refused_version_stays_failed_until_something_newer() {
        let mut t = t0();
        t.synced(2, 1_000);
        t.want(3, 2_000);
        t.start(3, Some(10), 2_000);
        t.refused(
            3,
            "divergent refs refused, not overwritten: refs/heads/main".into(),
            3_000,
        );
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Failed, 3, 0));
        assert!(s.reason.as_deref().is_some_and(|r| r.contains("divergent")));
        // A second pull that finds the mirror already at 3 (or a stale report) hides nothing.
        t.synced(3, 4_000);
        t.synced(2, 4_100);
        let s = t.status(4_200, &CFG);
        assert_eq!((s.state, s.version), (TransferState::Failed, 3));
        assert!(s.reason.is_some());
        // Version 4 wanted: still failed, the lag counts from 4's arrival.
        t.want(4, 5_000);
        let s = t.status(6_000, &CFG);
        assert_eq!((s.state, s.lag_ms), (TransferState::Failed, 1_000));
        // Version 4 synced cleanly clears it.
        t.synced(4, 7_000);
        let s = t.status(7_000, &CFG);
        assert_eq!((s.state, s.version, s.reason), (TransferState::Synced, 4, None));
        // A new attempt clears a refusal too.
        t.refused(5, "divergent".into(), 8_000);
        t.start(6, None, 9_000);
        t.synced(6, 9_500);
        assert_eq!(t.status(9_500, &CFG).state, TransferState::Synced);
    }

    #[test]
    fn nothing_published_reads_pending_with_the_reason_until_a_version_comes() {
        let mut t = t0();
        t.want(2, 1_000);
        t.nothing_published(2_000);
        let s = t.status(3_000, &CFG);
        assert_eq!((s.state, s.version, s.lag_ms), (TransferState::Pending, 0, 0));
        assert_eq!(s.reason.as_deref(), Some(NOTHING_PUBLISHED));
        // It replaces an earlier outcome, as the latest attempt's.
        t.failed("unreachable".into(), 3_000);
        t.nothing_published(4_000);
        assert_eq!(t.status(4_000, &CFG).reason.as_deref(), Some(NOTHING_PUBLISHED));
        // The origin publishes version 1: pending for it, without the reason, then synced.
        t.want(1, 5_000);
        let s = t.status(5_500, &CFG);
        assert_eq!((s.state, s.reason, s.lag_ms), (TransferState::Pending, None, 500));
        t.start(1, Some(10), 6_000);
        t.synced(1, 7_000);
        assert_eq!(t.status(7_000, &CFG).state, TransferState::Synced);
    }

    #[test]
    fn unknown_total_reads_zero_then_completes() {
        let mut t = t0();
        t.start(1, None, 0);
        t.progress(300, None, 10);
        assert_eq!(t.status(10, &CFG).bytes_total, 0);
        assert!(!t.status(10, &CFG).bytes_total_known);
        t.progress(400, Some(350), 20); // a total smaller than what moved is raised
        assert_eq!(t.status(20, &CFG).bytes_total, 400);
        assert!(t.status(20, &CFG).bytes_total_known);
        t.synced(1, 30);
        let s = t.status(30, &CFG);
        assert_eq!((s.bytes_done, s.bytes_total), (400, 400));
    }

    #[test]
    fn time_going_backwards_saturates() {
        let mut t = t0();
        t.want(1, 5_000);
        t.start(1, None, 5_000);
        let s = t.status(1_000, &CFG);
        assert_eq!((s.state, s.lag_ms), (TransferState::Transferring, 0));
    }

    #[test]
    fn many_wanted_versions_merge_without_underreporting_lag() {
        let mut t = t0();
        for v in 1..=200u64 {
            t.want(v, v * 10);
        }
        assert!(t.wanted.len() <= MAX_WANTED);
        assert_eq!(t.status(5_000, &CFG).lag_ms, 5_000 - 10);
        t.synced(100, 6_000);
        // The exact answer is from when v101 was known (1010); merged history may only report
        // more.
        assert!(t.status(6_000, &CFG).lag_ms >= 6_000 - 1_010);
        assert_eq!(t.wanted_version(), Some(200));
    }

    #[test]
    fn json_shape_is_the_contract() {
        let mut t = Transfer::new("infra-tools".into(), "CLUSTER".into(), Direction::Push, 0);
        t.start(7, Some(10), 0);
        let v = serde_json::to_value(t.status(20_000, &CFG)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "resource": "infra-tools", "peer": "CLUSTER", "direction": "push", "state": "stalled",
                "version": 7, "lag_ms": 20_000, "bytes_done": 0, "bytes_total": 10,
                "reason": "no progress for 20000 ms", "bytes_total_known": true
            })
        );
        let back: TransferStatus = serde_json::from_value(v).expect("back");
        assert_eq!(back, t.status(20_000, &CFG));
        let synced = serde_json::to_value(Transfer::new("a".into(), "b".into(), Direction::Pull, 0).status(0, &CFG))
            .expect("json");
        assert_eq!(synced["reason"], serde_json::Value::Null);
        assert_eq!(synced["direction"], "pull");
        assert_eq!(synced["state"], "pending");
        assert_eq!(TransferState::Transferring.to_string(), "transferring");
        assert_eq!(Direction::Pull.to_string(), "pull");
    }

    #[test]
    fn postcard_roundtrip() {
        let mut t = t0();
        t.failed("x".into(), 3);
        let s = t.status(4, &CFG);
        let bytes = postcard::to_allocvec(&s).expect("encode");
        let back: TransferStatus = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, s);
    }
}
