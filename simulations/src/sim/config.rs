//! The knobs of one run: sizes, timings and network faults; the node behaviours that this
//! simulator found to break an invariant, since fixed (`Quirk`: the model does the fix unless
//! asked with `--node-today`); and the fault switches that deliberately break the modelled node (for
//! the tests that prove the checker catches real bugs: off by default, not on the CLI).

use causeway::federation::health::HealthConfig;
use causeway_sync::status::StatusConfig;

/// Where the node's glue code (around the sans-IO cores) did something that this simulator
/// found to break an invariant. The model behaves as the fix does by default; each quirk
/// restores the old behaviour, so the finding replays (`sim --node-today QUIRK`) and the
/// checker keeps proving it would catch the bug again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Quirk {
    /// Every member answered a peer's catalog query, pull or write-back from its own replica,
    /// however stale. Fixed in the node: `Federation::confirm_current` (a read barrier through
    /// the leader) runs before the catalog query, the blob gate and `accept_write_back`; a
    /// member that cannot confirm refuses.
    LocalReads,
    /// A leader's `sync status` rows started empty, so after a restart or a change of leader a
    /// failed attempt made a current mirror read as lagging. Fixed in the node
    /// (`Mirroring::new_row`): a new row starts from the mirror version the replicated state
    /// records.
    FreshRows,
    /// The notifier kept a push offer from an earlier change of a round even when a later
    /// change in the same round revoked the push share (`notify_changes` inserted offers and
    /// never removed them), telling a peer of a resource it may no longer see. Fixed in the
    /// node (`federation::notify`): a later change without push withdraws the offer, and each
    /// offer is decided again against the committed shares when it is sent.
    StaleOffers,
    /// The node assumed a resource's versions only grow, but removing a resource and
    /// registering the name again starts them from 0: reconcile pulled only a higher version,
    /// so a pull-only mirror never followed the new resource. Fixed in the node: reconcile
    /// pulls whenever the view differs from the mirror, `RecordMirror` refuses only an exact
    /// repeat, and a version below the row's starts a new `sync status` row.
    VersionRestart,
}

/// Message delay, loss and duplication, and how often the workload injects faults.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// Share of messages that take a slow path (up to `tail_max_ms`), which reorders them.
    pub tail_permille: u32,
    pub tail_max_ms: u64,
    pub loss_permille: u32,
    pub dup_permille: u32,
}

/// Deliberate bugs in the modelled node. Tests switch one on and expect a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The owner serves a pull without asking `decide(.., Pull)`.
    pub skip_pull_policy: bool,
    /// The owner applies write-backs without asking `decide(.., WriteBack)` (ignores read-only).
    pub skip_write_back_policy: bool,
    /// A mirror overwrites refs that its origin rewrote, instead of refusing them.
    pub force_mirror_refs: bool,
    /// The leader never re-reads its peers' catalogs, so a lost revocation is never repaired.
    pub no_resync: bool,
    /// `link list` reports a link's state as of its last heartbeat event instead of now.
    pub stale_link_state: bool,
}

/// Everything one run depends on besides its seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub clusters: u8,
    /// Events processed while the workload and faults run; then the network heals.
    pub steps: u64,
    /// Simulated time after healing in which everything must converge.
    pub settle_ms: u64,
    pub health: HealthConfig,
    pub status: StatusConfig,
    /// How often each cluster's leader runs its loops (heartbeats, notifier, reconcile).
    pub tick_ms: u64,
    /// A request without an answer this long is given up.
    pub request_timeout_ms: u64,
    /// How long a dial to an unreachable peer takes to fail.
    pub dial_timeout_ms: u64,
    /// Gap between workload actions.
    pub workload_gap_ms: (u64, u64),
    /// How long crashes and partitions last.
    pub fault_ms: (u64, u64),
    pub net: NetConfig,
    /// The node's behaviours of today to model instead of their fixes.
    pub quirks: Vec<Quirk>,
    pub faults: Faults,
}

impl SimConfig {
    pub fn has(&self, quirk: Quirk) -> bool {
        self.quirks.contains(&quirk)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        let health = HealthConfig {
            heartbeat_ms: 300,
            failure_threshold: 3,
            catalog_resync_ms: 3_000,
            ..HealthConfig::default()
        };
        Self {
            clusters: 4,
            steps: 3_000,
            // Long enough for two full resync rounds after every delayed message has landed.
            settle_ms: 3 * health.catalog_resync_ms + 3_000,
            health,
            status: StatusConfig { stall_after_ms: 5_000 },
            tick_ms: 100,
            request_timeout_ms: 2_500,
            dial_timeout_ms: 150,
            workload_gap_ms: (20, 200),
            fault_ms: (300, 4_000),
            net: NetConfig {
                delay_min_ms: 2,
                delay_max_ms: 120,
                tail_permille: 50,
                tail_max_ms: 1_500,
                loss_permille: 50,
                dup_permille: 30,
            },
            quirks: Vec::new(),
            faults: Faults::default(),
        }
    }
}
