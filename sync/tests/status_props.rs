//! Properties of the transfer status machine under random event sequences and simulated time.

use causeway_sync::status::{Direction, NOTHING_PUBLISHED, StatusConfig, Transfer, TransferState};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Want(u64),
    Start(u64, Option<u64>),
    Progress(u64, Option<u64>),
    Synced(u64),
    Failed,
    Denied,
    NothingPublished,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..6_000).prop_map(Op::Advance),
        2 => (0u64..8).prop_map(Op::Want),
        1 => (0u64..8, proptest::option::of(0u64..1_000)).prop_map(|(v, t)| Op::Start(v, t)),
        3 => (0u64..1_000, proptest::option::of(0u64..1_000)).prop_map(|(b, t)| Op::Progress(b, t)),
        1 => (0u64..8).prop_map(Op::Synced),
        1 => Just(Op::Failed),
        1 => Just(Op::Denied),
        1 => Just(Op::NothingPublished),
    ]
}

/// What the test knows independently of the implementation.
#[derive(Default)]
struct Model {
    /// Latest time the stall clock may have restarted (start, or progress that could count).
    last_activity: u64,
    /// Largest bytes_done reported since the last start.
    max_bytes: u64,
    /// Every (version, time) passed to want or start.
    wants: Vec<(u64, u64)>,
    /// Largest version passed to synced.
    max_synced: Option<u64>,
}

impl Model {
    fn expected_lag(&self, now: u64) -> u64 {
        self.wants
            .iter()
            .filter(|(v, _)| self.max_synced.is_none_or(|s| *v > s))
            .map(|(_, t)| now - t)
            .max()
            .unwrap_or(0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn status_invariants(
        stall in 1u64..8_000,
        ops in proptest::collection::vec(op(), 0..40),
        probes in proptest::collection::vec(0u64..20_000, 1..4),
    ) {
        let cfg = StatusConfig { stall_after_ms: stall };
        let mut now = 0u64;
        let mut t = Transfer::new("r".into(), "p".into(), Direction::Pull, now);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Advance(dt) => now += dt,
                Op::Want(v) => {
                    t.want(v, now);
                    m.wants.push((v, now));
                }
                Op::Start(v, total) => {
                    t.start(v, total, now);
                    m.wants.push((v, now));
                    m.last_activity = now;
                    m.max_bytes = 0;
                }
                Op::Progress(b, total) => {
                    t.progress(b, total, now);
                    if b > m.max_bytes {
                        m.max_bytes = b;
                        m.last_activity = now;
                    }
                }
                Op::Synced(v) => {
                    t.synced(v, now);
                    m.max_synced = Some(m.max_synced.map_or(v, |s| s.max(v)));
                }
                Op::Failed => t.failed("boom".into(), now),
                Op::Denied => t.denied("no".into(), now),
                Op::NothingPublished => {
                    t.nothing_published(now);
                    // The origin has nothing: nothing it had before is wanted any more.
                    m.wants.clear();
                }
            }
            for extra in probes.iter().copied().chain([0]) {
                let at = now + extra;
                let s = t.status(at, &cfg);
                // Never `transferring` once stall_after_ms passed without progress.
                if s.state == TransferState::Transferring {
                    prop_assert!(at - m.last_activity < stall, "transferring after {} ms idle", at - m.last_activity);
                }
                if s.state == TransferState::Stalled {
                    prop_assert!(s.reason.as_deref().is_some_and(|r| r.starts_with("no progress for ")));
                }
                // Never `synced` while a newer version is wanted.
                if s.state == TransferState::Synced {
                    prop_assert!(m.wants.iter().all(|(v, _)| *v <= s.version), "synced {} while wanting {:?}", s.version, m.wants);
                    prop_assert_eq!(s.lag_ms, 0);
                    prop_assert_eq!(s.bytes_done, s.bytes_total);
                    prop_assert_eq!(Some(s.version), m.max_synced);
                } else {
                    // Lag counts from the first moment a still-unsynced version was known.
                    prop_assert_eq!(s.lag_ms, m.expected_lag(at));
                }
                if s.bytes_total > 0 {
                    prop_assert!(s.bytes_done <= s.bytes_total);
                }
                if matches!(s.state, TransferState::Failed | TransferState::Denied | TransferState::Stalled) {
                    prop_assert!(s.reason.is_some());
                }
                if matches!(s.state, TransferState::Synced | TransferState::Transferring) {
                    prop_assert!(s.reason.is_none());
                }
                // A pending transfer gives a reason only when the origin has published nothing.
                if s.state == TransferState::Pending && s.reason.is_some() {
                    prop_assert_eq!(s.reason.as_deref(), Some(NOTHING_PUBLISHED));
                    prop_assert_eq!(s.lag_ms, 0);
                }
            }
        }
    }
}
