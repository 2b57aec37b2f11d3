//! Link health as a sans-IO state machine: when to send the next heartbeat, and what state a
//! link is in given the acknowledgements and failures seen so far and the current time. Time is
//! an input (milliseconds), so the simulator and unit tests drive it without clocks.

use serde::{Deserialize, Serialize};

/// Heartbeat timing; both values are config keys (`[federation]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Interval between heartbeats on a link.
    pub heartbeat_ms: u64,
    /// Heartbeat intervals without an acknowledgement before a link reads `failing`.
    pub failure_threshold: u32,
    /// How often the leader re-reads each linked peer's whole catalog, repairing anything a
    /// lost change notification missed.
    pub catalog_resync_ms: u64,
    /// Most mirrors a peer's pushes may create or keep here; an offer of another name beyond it
    /// is refused. Counts every mirror of that peer (an admin's `sync` too).
    pub max_pushed_resources_per_peer: u64,
    /// Most bytes of mirrored content from one peer that pushes may bring here: an offer is
    /// refused once the peer's mirrors hold this much, and a pushed transfer stops when it
    /// would go beyond it.
    pub max_pushed_bytes_per_peer: u64,
    /// Removed: pushes are taken per link (`causeway link set PEER --accept-pushes on|off`).
    /// Still read so an older config loads; [`HealthConfig::warnings`] names the new command.
    #[serde(rename = "accept_pushes", skip_serializing)]
    pub legacy_accept_pushes: Option<bool>,
}

/// Default of `federation.max_pushed_resources_per_peer`.
pub const DEFAULT_MAX_PUSHED_RESOURCES_PER_PEER: u64 = 1000;
/// Default of `federation.max_pushed_bytes_per_peer`: 10 GiB.
pub const DEFAULT_MAX_PUSHED_BYTES_PER_PEER: u64 = 10 << 30;

impl Default for HealthConfig {
    fn default() -> Self {
        // Detects a dead peer within about 3 s on loopback (the bound is 10 s).
        Self {
            heartbeat_ms: 1000,
            failure_threshold: 3,
            catalog_resync_ms: 60_000,
            max_pushed_resources_per_peer: DEFAULT_MAX_PUSHED_RESOURCES_PER_PEER,
            max_pushed_bytes_per_peer: DEFAULT_MAX_PUSHED_BYTES_PER_PEER,
            legacy_accept_pushes: None,
        }
    }
}

impl HealthConfig {
    /// What an operator should change in this section (keys that no longer act).
    pub fn warnings(&self) -> Vec<String> {
        match self.legacy_accept_pushes {
            Some(_) => vec![
                "federation.accept_pushes is no longer used and is ignored: pushes are taken per link, \
                 off by default; allow them with `causeway link set PEER --accept-pushes on` \
                 (or `link add ... --accept-pushes`)"
                    .into(),
            ],
            None => Vec::new(),
        }
    }

    /// How long after the last acknowledgement a link still reads `active`.
    pub fn active_window_ms(&self) -> u64 {
        self.heartbeat_ms
            .saturating_mul(u64::from(self.failure_threshold.max(1)))
    }
}

/// The states of the CLI contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Pending,
    Active,
    Failing,
    Removed,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::Pending => "pending",
            LinkState::Active => "active",
            LinkState::Failing => "failing",
            LinkState::Removed => "removed",
        })
    }
}

/// One outbound link's heartbeat bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkHealth {
    next_seq: u64,
    in_flight: Option<(u64, u64)>,
    last_sent_ms: Option<u64>,
    last_ack_ms: Option<u64>,
    rtt_ms: Option<u64>,
    consecutive_failures: u32,
    mutual: bool,
    last_error: Option<String>,
}

impl LinkHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// The heartbeat to send now, if one is due and none is outstanding. An outstanding one
    /// older than an interval counts as missed.
    pub fn poll(&mut self, now_ms: u64, cfg: &HealthConfig) -> Option<u64> {
        if let Some((seq, sent)) = self.in_flight {
            if now_ms.saturating_sub(sent) < cfg.heartbeat_ms {
                return None;
            }
            self.on_failure(seq, "heartbeat not acknowledged in time");
        }
        let due = self
            .last_sent_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= cfg.heartbeat_ms);
        if !due {
            return None;
        }
        self.next_seq += 1;
        self.in_flight = Some((self.next_seq, now_ms));
        self.last_sent_ms = Some(now_ms);
        Some(self.next_seq)
    }

    /// The peer acknowledged heartbeat `seq`. Late or duplicate acknowledgements are ignored.
    pub fn on_ack(&mut self, now_ms: u64, seq: u64, links_back: bool) {
        let Some((expected, sent)) = self.in_flight else { return };
        if seq != expected {
            return;
        }
        self.in_flight = None;
        self.last_ack_ms = Some(now_ms);
        self.rtt_ms = Some(now_ms.saturating_sub(sent));
        self.consecutive_failures = 0;
        self.mutual = links_back;
        self.last_error = None;
    }

    /// Heartbeat `seq` failed (no connection, refused handshake, error answer).
    pub fn on_failure(&mut self, seq: u64, reason: &str) {
        if let Some((expected, _)) = self.in_flight
            && expected == seq
        {
            self.in_flight = None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(printable_reason(reason));
    }

    /// Active only while acknowledgements keep arriving; so a dead peer reads `failing` at most
    /// `active_window_ms` after its last acknowledgement, whatever else happens.
    pub fn state(&self, now_ms: u64, cfg: &HealthConfig) -> LinkState {
        match self.last_ack_ms {
            Some(t) if now_ms.saturating_sub(t) <= cfg.active_window_ms() => LinkState::Active,
            Some(_) => LinkState::Failing,
            None if self.consecutive_failures >= cfg.failure_threshold.max(1) => LinkState::Failing,
            None => LinkState::Pending,
        }
    }

    /// `mutual` as last reported by the peer, and only while the link is active.
    pub fn mutual(&self, now_ms: u64, cfg: &HealthConfig) -> bool {
        self.mutual && self.state(now_ms, cfg) == LinkState::Active
    }

    pub fn last_heartbeat_ms_ago(&self, now_ms: u64) -> Option<u64> {
        self.last_ack_ms.map(|t| now_ms.saturating_sub(t))
    }

    pub fn rtt_ms(&self) -> Option<u64> {
        self.rtt_ms
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// Longest failure reason kept for a link (a peer's refusal text comes from the peer).
pub const MAX_REASON_LEN: usize = 512;

/// A reason as it may be shown on an admin's terminal: control characters escaped (a peer
/// chooses its refusal text, and escape sequences could forge output), cut to
/// [`MAX_REASON_LEN`] bytes.
pub fn printable_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.into()
        };
        if out.len() + piece.len() > MAX_REASON_LEN {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: HealthConfig = HealthConfig {
        heartbeat_ms: 100,
        failure_threshold: 3,
        catalog_resync_ms: 1000,
        max_pushed_resources_per_peer: 10,
        max_pushed_bytes_per_peer: 1 << 20,
        legacy_accept_pushes: None,
    };

    #[test]
    fn pending_then_active_then_failing_then_active() {
        let mut h = LinkHealth::new();
        assert_eq!(h.state(0, &CFG), LinkState::Pending);
        let s = h.poll(0, &CFG).unwrap();
        assert_eq!(h.poll(50, &CFG), None, "one heartbeat in flight at a time");
        h.on_ack(10, s, true);
        assert_eq!(h.state(10, &CFG), LinkState::Active);
        assert!(h.mutual(10, &CFG));
        assert_eq!(h.rtt_ms(), Some(10));
        // The peer dies: heartbeats go unanswered.
        let mut now = 10;
        while now < 1000 {
            now += 10;
            let _ = h.poll(now, &CFG);
            if h.state(now, &CFG) == LinkState::Failing {
                break;
            }
        }
        assert_eq!(h.state(now, &CFG), LinkState::Failing);
        assert!(
            now <= 10 + CFG.active_window_ms() + 10,
            "failing within the bound, at {now}"
        );
        assert!(!h.mutual(now, &CFG));
        // It comes back.
        let s = loop {
            now += 10;
            if let Some(s) = h.poll(now, &CFG) {
                break s;
            }
        };
        h.on_ack(now + 1, s, false);
        assert_eq!(h.state(now + 1, &CFG), LinkState::Active);
        assert!(!h.mutual(now + 1, &CFG));
    }

    #[test]
    fn never_reached_peer_turns_failing_after_threshold() {
        let mut h = LinkHealth::new();
        for i in 0..3 {
            let s = h.poll(i * 100, &CFG).unwrap();
            assert_eq!(h.state(i * 100, &CFG), LinkState::Pending);
            h.on_failure(s, "connection refused");
        }
        assert_eq!(h.state(300, &CFG), LinkState::Failing);
        assert_eq!(h.last_error(), Some("connection refused"));
    }

    #[test]
    fn a_reason_from_a_peer_cannot_drive_the_terminal_nor_grow_without_bound() {
        let r = printable_reason(&format!("\x1b[2K\rlinked{}", "x".repeat(100_000)));
        assert!(!r.chars().any(char::is_control), "{r}");
        assert!(r.len() <= MAX_REASON_LEN + '…'.len_utf8());
        assert!(r.starts_with("\\u{1b}[2K\\r"), "{r}");
    }

    #[test]
    fn stale_and_duplicate_acks_are_ignored() {
        let mut h = LinkHealth::new();
        let s = h.poll(0, &CFG).unwrap();
        h.on_ack(5, s + 7, true);
        assert_eq!(h.state(5, &CFG), LinkState::Pending);
        h.on_ack(5, s, true);
        h.on_ack(6, s, false);
        assert!(h.mutual(6, &CFG), "a duplicate ack changes nothing");
    }

    #[test]
    fn active_never_outlives_the_window() {
        // Whatever the sequence of polls, a link with no ack for longer than the window is not
        // active.
        let mut h = LinkHealth::new();
        let s = h.poll(0, &CFG).unwrap();
        h.on_ack(1, s, true);
        for now in (1..2000).step_by(7) {
            let _ = h.poll(now, &CFG);
            if now > 1 + CFG.active_window_ms() {
                assert_ne!(h.state(now, &CFG), LinkState::Active, "at {now}");
            }
        }
    }
}
