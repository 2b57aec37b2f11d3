//! One member's view of its cluster: the Raft node, its storage and network, and the operations
//! the rest of the node needs (writes routed to the leader, linearizable read barriers,
//! membership changes, status), plus the leader's task that promotes caught-up learners.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use causeway_catalog::{Command, CommandResult};
use causeway_proto::EndpointKey;
use iroh::Endpoint;
use openraft::{
    ChangeMembers, Config, Instant as _, ReadPolicy, ServerState, SnapshotPolicy,
    async_runtime::watch::WatchReceiver as _, error::ForwardToLeader,
};
use redb::{Database, ReadableDatabase};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::admission::{JoinPeers, Standing, standing_under};
use crate::network::{CallError, NetworkFactory, PeerClient};
use crate::proposer::{Proposed, Proposer};
use crate::status::{ClusterStatus, MemberStatus, Role};
use crate::store;
use crate::types::{LogCommand, MemberNode, Raft, TypeConfig};
use crate::wire::{ForwardRequest, ForwardResponse};

/// Tunables of the Raft layer; each one is a config key of the node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after at least this many entries since the last one (more once the
    /// catalog is large: see [`SNAPSHOT_ROWS_PER_ENTRY`]).
    pub snapshot_logs: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub keep_logs: u64,
    /// A learner within this many entries of the leader is promoted to voter.
    pub promote_lag: u64,
    /// A member is reported reachable if it acknowledged a heartbeat this recently.
    pub reachable_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 750,
            election_max_ms: 1500,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            promote_lag: 100,
            reachable_ms: 3_000,
        }
    }
}

/// How long a routed request keeps retrying while no leader is known.
pub const ROUTE_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between routing attempts when there is no leader yet.
const ROUTE_RETRY: Duration = Duration::from_millis(100);
/// How long shutdown waits for the Raft tasks to release the database.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How often shutdown checks whether they did.
const SHUTDOWN_POLL: Duration = Duration::from_millis(2);
/// How often the leader looks for learners to promote.
const PROMOTE_EVERY: Duration = Duration::from_millis(300);
/// A snapshot is due once the entries applied since the last one reach the catalog's rows
/// divided by this (and at least `snapshot_logs`). Building one is cheap (a view of the state
/// machine), but it lets the log be purged, and a follower behind by more than the log holds
/// must be sent the whole catalog: keeping a log in proportion to the catalog lets a follower
/// that lags by less catch up from entries, which cost less to send than the rows.
pub const SNAPSHOT_ROWS_PER_ENTRY: u64 = 4;
/// Least time between two looks at whether a snapshot is due.
const SNAPSHOT_CHECK_GAP: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no leader reachable within {0:?} (is a majority of the cluster up?)")]
    NoLeader(Duration),
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("unexpected response from leader: {0}")]
    Unexpected(String),
}

/// The leader a "forward to leader" refusal names, when it names one with its addresses.
pub(crate) fn leader_named(f: &ForwardToLeader<TypeConfig>) -> Option<(EndpointKey, MemberNode)> {
    match (f.leader_id, f.leader_node.clone()) {
        (Some(id), Some(node)) => Some((id, node)),
        _ => None,
    }
}

/// Handles `ForwardRequest::App` on the leader: requests the node layer routes to whichever
/// member leads (for state that only the leader keeps, such as live link health).
pub trait AppHandler: Send + Sync + 'static {
    fn handle(&self, request: Vec<u8>) -> futures::future::BoxFuture<'static, Vec<u8>>;

    /// Whether answering `request` reads the leader's tables, and so must first wait for the
    /// commit of every write the leader answered ([`ClusterNode::settle`]). A request that only
    /// reads state kept in memory says no, so it still answers on a node whose storage failed.
    fn reads_tables(&self, _request: &[u8]) -> bool {
        true
    }
}

struct Inner {
    app: std::sync::RwLock<Option<Arc<dyn AppHandler>>>,
    id: EndpointKey,
    raft: Raft,
    endpoint: Endpoint,
    db: Arc<Database>,
    writer: store::StorageWriter,
    /// The log's entry encodings, which append streams send and keep.
    encodings: store::EntryEncodings,
    /// Index of the newest applied entry the database shows.
    applied: tokio::sync::watch::Receiver<Option<u64>>,
    apply_progress: store::ApplyProgress,
    settings: RaftSettings,
    /// Voters a freshly joined node accepts appends from before it knows the membership.
    join_peers: JoinPeers,
    /// Batches the writes this node proposes while it leads.
    proposer: Proposer,
    /// Cached connection to the leader, for forwarding.
    leader_client: tokio::sync::Mutex<Option<PeerClient>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A cheap, clonable handle on this member's Raft node.
#[derive(Clone)]
pub struct ClusterNode(Arc<Inner>);

impl ClusterNode {
    /// Opens the node's database and starts its Raft node (initialized or not).
    pub async fn start(
        id: EndpointKey,
        endpoint: Endpoint,
        db_path: &Path,
        settings: RaftSettings,
        bootstrap_peers: BTreeSet<EndpointKey>,
    ) -> Result<Self, ClusterError> {
        let (log, sm) = store::open(db_path)?;
        let db = sm.database();
        let writer = log.writer();
        let applied = sm.applied_watch();
        let apply_progress = sm.apply_progress();
        let config = Config {
            cluster_name: "causeway".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_min_ms,
            election_timeout_max: settings.election_max_ms,
            // Built by `build_snapshots_when_due`, whose threshold grows with the catalog.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: settings.keep_logs,
            install_snapshot_timeout: 60_000,
            // A leader replicates entries before its own fsync of them (the log flush is
            // asynchronous), so its followers can commit an entry the leader loses in a crash.
            // Restored as leader in the same term after a restart, it would write different
            // entries under log ids its followers already hold, and they would keep theirs (same
            // log id, same entry, by Raft's log matching): the replicas diverge. A restarted
            // leader therefore waits for an election, which a node missing committed entries
            // cannot win.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let encodings = log.entry_encodings();
        let net = NetworkFactory {
            endpoint: endpoint.clone(),
            encodings: encodings.clone(),
        };
        let raft = Raft::new(id, Arc::new(config), net, log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let join_peers = JoinPeers::new(bootstrap_peers);
        // The metrics show no membership until the Raft core first reports them: ask the core
        // itself, so a restarted member never accepts its old join peers in that moment.
        if !join_peers.is_empty() && membership_known(&raft).await? {
            join_peers.forget();
        }
        let (proposer, proposing) = Proposer::start(raft.clone());
        let node = ClusterNode(Arc::new(Inner {
            app: std::sync::RwLock::new(None),
            id,
            raft,
            endpoint,
            db,
            writer,
            encodings,
            applied,
            apply_progress,
            settings,
            join_peers,
            proposer,
            leader_client: tokio::sync::Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        }));
        let promoter = tokio::spawn(promote_learners(Arc::downgrade(&node.0)));
        let snapshots = tokio::spawn(build_snapshots_when_due(Arc::downgrade(&node.0)));
        node.0
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([promoter, snapshots, proposing]);
        Ok(node)
    }

    pub fn id(&self) -> EndpointKey {
        self.0.id
    }

    pub fn set_app_handler(&self, handler: Arc<dyn AppHandler>) {
        *self.0.app.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    pub fn is_leader(&self) -> bool {
        self.0.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Runs an app request on the leader and returns its answer.
    pub async fn submit_app(&self, request: Vec<u8>) -> Result<Vec<u8>, ClusterError> {
        match self.submit(ForwardRequest::App(request)).await? {
            ForwardResponse::App(r) => Ok(r),
            ForwardResponse::Failed(e) => Err(ClusterError::Raft(e)),
            other => Err(ClusterError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.0.raft
    }

    pub(crate) fn entry_encodings(&self) -> &store::EntryEncodings {
        &self.0.encodings
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// The node's database, for reading catalog tables after a [`Self::read_barrier`].
    pub fn database(&self) -> Arc<Database> {
        self.0.db.clone()
    }

    pub async fn is_initialized(&self) -> bool {
        self.0.raft.is_initialized().await.unwrap_or(false)
    }

    /// Makes this node the only voter of a new cluster.
    pub async fn initialize_single(&self, node: MemberNode) -> Result<(), ClusterError> {
        let members = std::collections::BTreeMap::from([(self.0.id, node)]);
        self.0
            .raft
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// What `peer` is to this node now (see [`Standing`]): decided on the current membership
    /// every time, so a removed member loses its standing as soon as this node learns that its
    /// removal committed.
    pub fn standing(&self, peer: &EndpointKey) -> Standing {
        let metrics = self.0.raft.server_metrics();
        let m = metrics.borrow_watched();
        let memberships = [
            m.membership_config.membership(),
            m.committed_membership_config.membership(),
        ];
        standing_under(&memberships, &self.0.join_peers, peer)
    }

    /// Whether `peer` may use the Raft protocol with this node at all.
    pub fn may_connect(&self, peer: &EndpointKey) -> bool {
        self.standing(peer).may_connect()
    }

    /// Whether `peer` is in the current (possibly joint) membership, voter or learner. What was
    /// stored about it before (a join peer, a former member) does not count.
    pub fn is_member(&self, peer: &EndpointKey) -> bool {
        self.standing(peer) == Standing::Member
    }

    /// Returns true once this node knows a membership, and forgets its join peers from then on
    /// (the node layer then removes them from its data dir); false if Raft stopped before.
    pub async fn wait_membership_known(&self) -> bool {
        let mut server = self.0.raft.server_metrics();
        while server
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_none()
        {
            if server.changed().await.is_err() {
                return false;
            }
        }
        self.0.join_peers.forget();
        true
    }

    /// Runs a request on this node, which must be the leader, for member `from` (this node's
    /// own ID for its own requests).
    pub async fn execute_local(&self, from: EndpointKey, req: ForwardRequest) -> ForwardResponse {
        let raft = &self.0.raft;
        macro_rules! not_leader_or_failed {
            ($e:expr) => {{
                let e = $e;
                match e.forward_to_leader() {
                    Some(f) => ForwardResponse::NotLeader(leader_named(f)),
                    None => ForwardResponse::Failed(e.to_string()),
                }
            }};
        }
        match req {
            ForwardRequest::Write(cmd) => {
                if let Err(reason) = forwardable(&cmd, from, self.0.id) {
                    return ForwardResponse::Failed(reason);
                }
                tracing::debug!(command = cmd.label(), "proposing");
                match self.0.proposer.propose(cmd.into()).await {
                    Proposed::Applied(r) => ForwardResponse::Written(r),
                    Proposed::NotLeader(leader) => ForwardResponse::NotLeader(leader),
                    Proposed::Failed(e) => ForwardResponse::Failed(e),
                }
            }
            ForwardRequest::ReadIndex => match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                Ok(read) => ForwardResponse::ReadIndex(read.index()),
                Err(e) => not_leader_or_failed!(e),
            },
            ForwardRequest::AddLearner { id, node } => match raft.add_learner(id, node, false).await {
                Ok(_) => ForwardResponse::Done,
                Err(e) => not_leader_or_failed!(e),
            },
            ForwardRequest::UpdateAddrs { id, node } => {
                // Only a member itself says where it listens: another could otherwise point the
                // cluster (and the next tickets) at addresses it controls, or cut the member off.
                if id != from {
                    return ForwardResponse::Failed(format!("only {id} itself may change its addresses"));
                }
                let metrics = raft.metrics().borrow_watched().clone();
                match metrics.membership_config.membership().get_node(&id) {
                    None => return ForwardResponse::Failed(format!("{id} is not a member of this cluster")),
                    Some(known) if *known == node => return ForwardResponse::Done,
                    Some(_) => {}
                }
                // The node ID is the member's verified endpoint key, so replacing its addresses
                // cannot make another process stand in for it.
                match raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
                    .await
                {
                    Ok(_) => ForwardResponse::Done,
                    Err(e) => not_leader_or_failed!(e),
                }
            }
            ForwardRequest::RemoveMember { id } => {
                let metrics = raft.metrics().borrow_watched().clone();
                let membership = metrics.membership_config.membership().clone();
                if membership.get_node(&id).is_none() {
                    return ForwardResponse::Failed(format!("{id} is not a member of this cluster"));
                }
                let voters: BTreeSet<_> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return ForwardResponse::Failed("cannot remove the last voter of a cluster".into());
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                match raft.change_membership(change, false).await {
                    Ok(_) => ForwardResponse::Done,
                    Err(e) => not_leader_or_failed!(e),
                }
            }
            ForwardRequest::App(bytes) => {
                if !self.is_leader() {
                    let m = raft.metrics().borrow_watched().clone();
                    return ForwardResponse::NotLeader(
                        m.current_leader
                            .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| (l, n.clone()))),
                    );
                }
                let handler = self.0.app.read().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(handler) = handler else {
                    return ForwardResponse::Failed("node is still starting".into());
                };
                // App requests that read the leader's catalog directly must see every write
                // answered before them, on whichever member the caller's write went in.
                if handler.reads_tables(&bytes)
                    && let Err(e) = self.settle().await
                {
                    return ForwardResponse::Failed(e.to_string());
                }
                ForwardResponse::App(handler.handle(bytes).await)
            }
            ForwardRequest::Status => {
                if raft.metrics().borrow_watched().state == ServerState::Leader {
                    ForwardResponse::Status(self.local_status())
                } else {
                    let m = raft.metrics().borrow_watched().clone();
                    ForwardResponse::NotLeader(
                        m.current_leader
                            .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| (l, n.clone()))),
                    )
                }
            }
        }
    }

    /// Routes a request to the leader (this node or another) and retries while leadership is
    /// moving, up to [`ROUTE_DEADLINE`].
    pub async fn submit(&self, req: ForwardRequest) -> Result<ForwardResponse, ClusterError> {
        let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
        let mut last_err: Option<ClusterError> = None;
        loop {
            let leader = self.known_leader();
            let resp = match leader {
                Some((id, _)) if id == self.0.id => Ok(self.execute_local(self.0.id, req.clone()).await),
                Some((id, node)) => self.forward_to(id, node, req.clone()).await,
                None => Ok(ForwardResponse::NotLeader(None)),
            };
            match resp {
                Ok(ForwardResponse::NotLeader(_)) => {}
                Ok(other) => return Ok(other),
                // The leader no longer counts this node as a member: retrying cannot help.
                Err(e @ ClusterError::Call(CallError::NotMember(_))) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "forward to leader failed; retrying");
                    last_err = Some(e);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_err.unwrap_or(ClusterError::NoLeader(ROUTE_DEADLINE)));
            }
            tokio::time::sleep(ROUTE_RETRY).await;
        }
    }

    fn known_leader(&self) -> Option<(EndpointKey, MemberNode)> {
        // Read under the borrow: every routed write asks, and cloning the whole metrics (maps of
        // replication progress and heartbeats) would cost more than the answer.
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned()?;
        Some((leader, node))
    }

    async fn forward_to(
        &self,
        id: EndpointKey,
        node: MemberNode,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ClusterError> {
        let mut guard = self.0.leader_client.lock().await;
        let stale = guard.as_ref().is_none_or(|c| c.target() != id);
        if stale {
            *guard = Some(PeerClient::new(
                self.0.endpoint.clone(),
                id,
                node,
                self.0.encodings.clone(),
            ));
        }
        let client = guard
            .as_mut()
            .ok_or_else(|| ClusterError::Unexpected("no client".into()))?;
        Ok(client.forward(req).await?)
    }

    /// Commits a command through Raft (via the leader) and returns what applying it produced.
    /// The answer can come a moment before the database shows the write: read it back through
    /// [`Self::read_barrier`] or after [`Self::settle`].
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ClusterError> {
        // Proposed here while this node leads; otherwise, or when leadership just moved, routed
        // like any other request.
        let cmd = LogCommand::from(cmd);
        if self.is_leader() {
            match self.0.proposer.propose(cmd.clone()).await {
                Proposed::Applied(r) => return Ok(r),
                Proposed::Failed(e) => return Err(ClusterError::Raft(e)),
                Proposed::NotLeader(_) => {}
            }
        }
        let cmd = cmd.into_command();
        // Boxed: the routing future is several kilobytes, which every write's future would
        // otherwise carry (and copy) for a path that the leader's writes take only rarely.
        match Box::pin(self.submit(ForwardRequest::Write(cmd))).await? {
            ForwardResponse::Written(r) => Ok(r),
            ForwardResponse::Failed(e) => Err(ClusterError::Raft(e)),
            other => Err(ClusterError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Returns once this node's state machine reflects every write committed before the call
    /// (the leader confirms its leadership with a quorum, then this node applies up to it).
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        let index = match self.submit(ForwardRequest::ReadIndex).await? {
            ForwardResponse::ReadIndex(i) => i,
            ForwardResponse::Failed(e) => return Err(ClusterError::Raft(e)),
            other => return Err(ClusterError::Unexpected(format!("{other:?}"))),
        };
        self.wait_applied(index, ROUTE_DEADLINE).await
    }

    /// Returns once this node's database shows every write this node has answered so far.
    ///
    /// A write is answered as soon as its committed entry is applied, a moment before the
    /// transaction holding the apply commits. [`Self::read_barrier`] already waits for that; a
    /// local read that skips the barrier but must see the caller's own earlier writes (an
    /// operator's request after their last command) calls this first. It waits for at most the
    /// storage round under way.
    pub async fn settle(&self) -> Result<(), ClusterError> {
        self.0.apply_progress.failure().map_err(ClusterError::Storage)?;
        match self.0.apply_progress.handed() {
            Some(index) => self.wait_applied(index, ROUTE_DEADLINE).await,
            None => Ok(()),
        }
    }

    /// Index of the newest applied entry whose effects the database shows; it changes whenever
    /// this node applies entries, so a reader of the catalog can wait on it for news.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.0.applied.clone()
    }

    /// Returns once the database shows every entry up to `index` applied, or with the storage's
    /// failure once the storage has failed short of it.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        let mut applied = self.applied_watch();
        let published = applied.borrow().is_some_and(|a| a >= index);
        if !published {
            self.0.apply_progress.want(index);
        }
        if !published && self.0.apply_progress.handed().is_some_and(|h| h >= index) {
            // Handed over, but possibly held back or held in a round that waits for a log flush
            // to commit with.
            self.0.apply_progress.publish();
        }
        // A failed storage never applies `index`: the writer wakes the watch when it fails. A
        // client of the failed apply can see its error and ask before the failure is recorded.
        let progress = &self.0.apply_progress;
        let done = |a: &Option<u64>| a.is_some_and(|a| a >= index) || progress.failure().is_err();
        let waited = tokio::time::timeout(timeout, applied.wait_for(done))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => match progress.failure() {
                Err(e) if !applied.borrow().is_some_and(|a| a >= index) => Err(ClusterError::Storage(e)),
                _ => Ok(()),
            },
            Ok(false) => Err(ClusterError::Raft("raft storage stopped".into())),
            Err(_) => Err(ClusterError::Raft(format!(
                "entry {index} not applied within {timeout:?} (applied: {:?})",
                *applied.borrow()
            ))),
        }
    }

    pub async fn add_learner(&self, id: EndpointKey, node: MemberNode) -> Result<(), ClusterError> {
        self.expect_done(ForwardRequest::AddLearner { id, node }).await
    }

    pub async fn remove_member(&self, id: EndpointKey) -> Result<(), ClusterError> {
        self.expect_done(ForwardRequest::RemoveMember { id }).await
    }

    /// Runs a membership change, waiting out one already in progress (a learner being
    /// promoted, another node joining): Raft allows one change at a time.
    /// Records this member's current addresses in the membership when they differ from the
    /// ones recorded (it restarted bound elsewhere), so the others dial it where it is.
    pub async fn update_own_addrs(&self, node: MemberNode) -> Result<bool, ClusterError> {
        let recorded = {
            let m = self.0.raft.metrics().borrow_watched().clone();
            m.membership_config.membership().get_node(&self.0.id).cloned()
        };
        match recorded {
            Some(r) if r != node => {
                self.expect_done(ForwardRequest::UpdateAddrs { id: self.0.id, node })
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn expect_done(&self, req: ForwardRequest) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
        loop {
            match self.submit(req.clone()).await? {
                ForwardResponse::Done => return Ok(()),
                ForwardResponse::Failed(e)
                    if e.contains("undergoing a configuration change") && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!("membership change in progress; retrying");
                    tokio::time::sleep(ROUTE_RETRY).await;
                }
                ForwardResponse::Failed(e) => return Err(ClusterError::Raft(e)),
                other => return Err(ClusterError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// The leader's view of the cluster when a leader answers, else this node's own view.
    pub async fn status(&self) -> ClusterStatus {
        let leader = self.known_leader();
        match leader {
            Some((id, node)) if id != self.0.id => {
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    self.forward_to(id, node, ForwardRequest::Status),
                )
                .await
                {
                    Ok(Ok(ForwardResponse::Status(s))) => s,
                    _ => self.local_status(),
                }
            }
            _ => self.local_status(),
        }
    }

    /// This node's own view; reachability is only known on the leader.
    pub fn local_status(&self) -> ClusterStatus {
        let m = self.0.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        let is_leader = m.state == ServerState::Leader;
        let reach = Duration::from_millis(self.0.settings.reachable_ms);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let reachable = if *id == self.0.id {
                    true
                } else if is_leader {
                    m.heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id).cloned().flatten())
                        .is_some_and(|at| at.elapsed() < reach)
                } else {
                    // A follower hears from the leader only; it vouches for nobody else.
                    Some(*id) == m.current_leader
                };
                MemberStatus {
                    endpoint_id: *id,
                    role: if voters.contains(id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    },
                    reachable,
                    addrs: node.addrs.clone(),
                    matched_index: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index()),
                }
            })
            .collect();
        ClusterStatus {
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0),
            applied_index: self.0.applied.borrow().unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()).unwrap_or(0),
            purged_index: m.purged.as_ref().map(|l| l.index()).unwrap_or(0),
            reported_by: self.0.id,
            members,
        }
    }

    /// Stops background tasks, the Raft node and the storage writer, and waits until nothing but
    /// this handle holds the database: once the last `ClusterNode` handle is dropped the redb
    /// file is closed, so the same data dir can be opened again at once.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.0.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        if let Err(e) = self.0.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let writer = self.0.writer.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || writer.stop()).await {
            tracing::warn!(error = %e, "stopping the raft storage writer");
        }
        // The state machine worker, replication tasks and blocking storage calls that the Raft
        // core started end on their own shortly after it; each holds the database until then.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        while Arc::strong_count(&self.0.db) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    holders = Arc::strong_count(&self.0.db) - 1,
                    "raft storage still in use after shutdown"
                );
                break;
            }
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
    }
}

/// Whether the Raft core holds a membership (the log or a snapshot gave it one).
async fn membership_known(raft: &Raft) -> Result<bool, ClusterError> {
    raft.with_raft_state(|st| st.membership_state.effective().membership().nodes().next().is_some())
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))
}

/// On the leader: promotes every learner whose log is within `promote_lag` of the leader's.
async fn promote_learners(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(PROMOTE_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let m = inner.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        let ready: BTreeSet<EndpointKey> = membership
            .learner_ids()
            .filter(|id| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index());
                matched.is_some_and(|i| i + inner.settings.promote_lag >= last)
            })
            .collect();
        if ready.is_empty() {
            continue;
        }
        tracing::info!(learners = ?ready, "promoting caught-up learners to voters");
        if let Err(e) = inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(ready), false)
            .await
        {
            tracing::warn!(error = %e, "promotion failed; will retry");
        }
    }
}

/// On every member: asks openraft for a snapshot whenever one is due (see
/// [`SNAPSHOT_ROWS_PER_ENTRY`]); openraft ignores the request while one is being built.
async fn build_snapshots_when_due(inner: std::sync::Weak<Inner>) {
    let Some(mut applied) = inner.upgrade().map(|i| i.applied.clone()) else {
        return;
    };
    loop {
        if applied.changed().await.is_err() {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        match snapshot_due(&inner) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = inner.raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "could not start a snapshot");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not tell whether a snapshot is due"),
        }
        drop(inner);
        tokio::time::sleep(SNAPSHOT_CHECK_GAP).await;
    }
}

fn snapshot_due(inner: &Inner) -> Result<bool, ClusterError> {
    let applied = inner.applied.borrow().unwrap_or(0);
    let snapshot = {
        let metrics = inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.snapshot.as_ref().map(|l| l.index()).unwrap_or(0)
    };
    let since = applied.saturating_sub(snapshot);
    // Below the minimum the catalog's size cannot make it due: no need to read it.
    if since < inner.settings.snapshot_logs {
        return Ok(false);
    }
    let storage = |e: &dyn std::fmt::Display| ClusterError::Storage(std::io::Error::other(e.to_string()));
    let txn = inner.db.begin_read().map_err(|e| storage(&e))?;
    let rows = causeway_catalog::state::snapshot_rows(&txn).map_err(|e| storage(&e))?;
    Ok(due_by_size(since, inner.settings.snapshot_logs, rows))
}

/// Whether `since` entries after the last snapshot call for a new one, with at least
/// `min_entries` between snapshots and a catalog of `rows` rows.
fn due_by_size(since: u64, min_entries: u64, rows: u64) -> bool {
    since >= min_entries.max(rows / SNAPSHOT_ROWS_PER_ENTRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_wait_longer_as_the_catalog_grows() {
        // A small catalog: the configured minimum decides.
        assert!(!due_by_size(9, 10, 20));
        assert!(due_by_size(10, 10, 20));
        // A large one: a quarter of its rows, so the log kept grows with the catalog.
        assert!(!due_by_size(10_000, 10_000, 1_000_000));
        assert!(due_by_size(250_000, 10_000, 1_000_000));
        // Entries that add rows still reach the threshold: each adds one, the threshold a quarter.
        let (mut entries, mut rows) = (0u64, 0u64);
        while !due_by_size(entries, 10, rows) {
            entries += 1;
            rows += 2;
        }
        assert!(entries <= 20, "never due while the catalog grows: {entries}");
    }
}

/// Whether a member may have the leader propose `cmd` for it. A command that names its author
/// names the member that sent it, no other; the cluster's own key and card, and batches, are
/// proposed by the leader for itself only: a member forwarding a rotation request could
/// otherwise gather the others' signatures for a key of its own choosing before its removal.
fn forwardable(cmd: &Command, from: EndpointKey, own: EndpointKey) -> Result<(), String> {
    match cmd {
        Command::CreateInvite { created_by, .. } if *created_by != from => {
            Err(format!("an invite made by {from} cannot name {created_by}"))
        }
        Command::RotationRequest { .. }
        | Command::RotateOwnKey { .. }
        | Command::SetOwnCard { .. }
        | Command::Batch(_)
            if from != own =>
        {
            Err(format!("{} is proposed by the leader only", cmd.label()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod forwarding_tests {
    use super::*;

    #[test]
    fn members_cannot_forward_the_clusters_own_key_or_card_or_a_batch() {
        let (me, other) = (EndpointKey([1; 32]), EndpointKey([2; 32]));
        let invite = |by| Command::CreateInvite {
            invite_id: [0; 16],
            secret_hash: [0; 32],
            expires_at_ms: 0,
            created_by: by,
        };
        assert!(forwardable(&invite(other), other, me).is_ok());
        assert!(forwardable(&invite(me), other, me).is_err());
        let batch = Command::Batch(vec![invite(me)]);
        assert!(forwardable(&batch, other, me).is_err());
        assert!(forwardable(&batch, me, me).is_ok());
    }
}
