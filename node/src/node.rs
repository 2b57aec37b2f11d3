//! A running node: endpoint, router, Raft member and the operations subsystems and the CLI use.
//! `Node` is the embedded API: a program can start one in-process and call it directly; the
//! control socket exposes the same operations to other processes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use causeway_catalog::{Command, CommandResult};
use causeway_proto::{
    EndpointKey, InviteTicket, alpn,
    ticket::{MAX_TICKET_MEMBERS, TicketMember},
};
use causeway_raft::{ClusterNode, MemberNode, RaftService, Role};
use iroh::{Endpoint, protocol::Router};

use crate::api::{ClusterStatusView, IdInfo, InviteView, MemberView, ResourceView};
use crate::config::Config;
use crate::content::{ContentStore, access::guarded_events};
use crate::datadir::{self, NodeState};
use crate::endpoint;
use crate::error::{NodeError, storage};
use crate::federation::{Federation, LinkView, server::FedService};
use crate::join::JoinService;
use crate::transfer::Mirroring;

/// Longest invite lifetime an admin may ask for.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Invite lifetime when none is given.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(3600);
/// Largest page of a list call.
pub const MAX_LIST_PAGE: usize = causeway_catalog::state::MAX_PAGE;
pub use crate::register::MAX_PATH_LEN;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn endpoint_key(id: &iroh::EndpointId) -> EndpointKey {
    EndpointKey(*id.as_bytes())
}

struct Inner {
    data_dir: PathBuf,
    config: Config,
    state: NodeState,
    endpoint: Endpoint,
    router: Router,
    cluster: ClusterNode,
    federation: Arc<Federation>,
    content: ContentStore,
    mirroring: Arc<Mirroring>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A started node. Cloning gives another handle on the same node.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

impl Node {
    /// Starts the node stored in `data_dir`: binds its endpoint, starts its Raft member and
    /// serves the Raft and join protocols.
    pub async fn start(data_dir: &Path, config: Config) -> Result<Node, NodeError> {
        let state = datadir::require_node(data_dir)?;
        let key = datadir::read_key(data_dir)?;
        let alpns = vec![
            alpn::RAFT.to_vec(),
            alpn::JOIN.to_vec(),
            alpn::FED.to_vec(),
            iroh_blobs::ALPN.to_vec(),
        ];
        let endpoint = endpoint::bind(key.clone(), config.bind, config.discovery_options(), alpns).await?;
        let id = endpoint_key(&endpoint.id());
        let cluster = ClusterNode::start(
            id,
            endpoint.clone(),
            &data_dir.join(datadir::DB_FILE),
            config.raft.clone(),
            state.bootstrap_peers.clone(),
        )
        .await?;
        let join = JoinService::new(cluster.clone(), state.cluster_id, state.cluster_name.clone());
        let federation = Federation::new(cluster.clone(), endpoint.clone(), config.federation);
        let content = ContentStore::open(&data_dir.join(datadir::BLOBS_DIR)).await?;
        let mirroring = Mirroring::new(
            cluster.clone(),
            federation.clone(),
            content.clone(),
            endpoint.clone(),
            data_dir.to_path_buf(),
            config.sync,
        );
        crate::app::install(&cluster, &federation, &mirroring);
        let _ = federation.mirroring.set(Arc::downgrade(&mirroring));
        let access = Arc::new(crate::content::access::CatalogAccess {
            cluster: cluster.clone(),
            fed: federation.clone(),
        });
        let blobs = iroh_blobs::BlobsProtocol::new(content.store(), Some(guarded_events(access)));
        let router = Router::builder(endpoint.clone())
            .accept(alpn::RAFT, RaftService::new(cluster.clone()))
            .accept(alpn::JOIN, join)
            .accept(alpn::FED, FedService(federation.clone()))
            .accept(iroh_blobs::ALPN, blobs)
            .spawn();
        let tasks = vec![
            tokio::spawn(federation.clone().supervise()),
            tokio::spawn(crate::transfer::run_loops(
                cluster.clone(),
                mirroring.clone(),
                config.sync,
            )),
            tokio::spawn(record_own_addrs(
                cluster.clone(),
                crate::endpoint::advertised_addrs(&endpoint),
            )),
        ];
        let mut tasks = tasks;
        if !state.bootstrap_peers.is_empty() {
            tasks.push(tokio::spawn(forget_bootstrap_peers(
                cluster.clone(),
                data_dir.to_path_buf(),
            )));
        }
        tracing::info!(endpoint = %id, cluster = %state.cluster_id, bind = %config.bind, "node started");
        Ok(Node(Arc::new(Inner {
            data_dir: data_dir.to_path_buf(),
            config,
            state,
            endpoint,
            router,
            cluster,
            federation,
            content,
            mirroring,
            tasks,
        })))
    }

    pub fn data_dir(&self) -> &Path {
        &self.0.data_dir
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn endpoint_id(&self) -> EndpointKey {
        self.0.cluster.id()
    }

    pub fn cluster(&self) -> &ClusterNode {
        &self.0.cluster
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        endpoint::advertised_addrs(&self.0.endpoint)
    }

    pub fn id_info(&self) -> IdInfo {
        IdInfo {
            endpoint_id: self.endpoint_id().to_string(),
            cluster_id: self.0.state.cluster_id.to_string(),
            cluster_name: self.0.state.cluster_name.clone(),
            addrs: self.addrs().iter().map(ToString::to_string).collect(),
        }
    }

    pub async fn cluster_status(&self) -> ClusterStatusView {
        let s = self.0.cluster.status().await;
        ClusterStatusView {
            cluster_id: self.0.state.cluster_id.to_string(),
            leader: s.leader.map(|l| l.to_string()),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            reported_by: s.reported_by.to_string(),
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            members: s
                .members
                .into_iter()
                .map(|m| MemberView {
                    endpoint_id: m.endpoint_id.to_string(),
                    role: match m.role {
                        Role::Voter => "voter".into(),
                        Role::Learner => "learner".into(),
                    },
                    reachable: m.reachable,
                    addrs: m.addrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }
    }

    /// Makes a one-time invite ticket valid for `ttl`, recorded through Raft so any member can
    /// redeem it exactly once.
    pub async fn invite(&self, ttl: Duration) -> Result<InviteView, NodeError> {
        if ttl.is_zero() || ttl > MAX_INVITE_TTL {
            return Err(NodeError::Invalid(format!(
                "invite lifetime must be between 1 s and {} s",
                MAX_INVITE_TTL.as_secs()
            )));
        }
        let invite_id: [u8; 16] = rand::random();
        let secret: [u8; 32] = rand::random();
        let expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let result = self
            .0
            .cluster
            .write(Command::CreateInvite {
                invite_id,
                secret_hash: *blake3::hash(&secret).as_bytes(),
                expires_at_ms,
                created_by: self.endpoint_id(),
            })
            .await?;
        if result != CommandResult::InviteCreated {
            return Err(NodeError::Refused(format!("invite not created: {result:?}")));
        }
        let status = self.0.cluster.status().await;
        let mut members: Vec<TicketMember> = status
            .members
            .iter()
            .filter(|m| m.role == Role::Voter)
            .map(|m| TicketMember {
                endpoint: m.endpoint_id,
                addrs: m.addrs.clone(),
            })
            .collect();
        // The inviting node first: it is known to be up.
        members.sort_by_key(|m| m.endpoint != self.endpoint_id());
        members.truncate(MAX_TICKET_MEMBERS);
        let ticket = InviteTicket {
            cluster: self.0.state.cluster_id,
            members,
            invite_id,
            secret,
            expires_at_ms,
        };
        Ok(InviteView {
            ticket: ticket.to_string(),
            expires_at_ms,
        })
    }

    /// Takes `node` out of the membership, then revokes the invites it made that nobody used:
    /// it knows their secrets, and a ticket it kept must not let it join again. (The join
    /// handler also refuses a ticket whose maker is no longer a member, in case this second
    /// write is lost with a crash.)
    pub async fn remove_member(&self, node: EndpointKey) -> Result<(), NodeError> {
        self.0.cluster.remove_member(node).await?;
        match self
            .0
            .cluster
            .write(Command::RevokeInvitesOf {
                member: node,
                now_ms: now_ms(),
            })
            .await?
        {
            CommandResult::InvitesRevoked(n) if n > 0 => {
                tracing::info!(member = %node, revoked = n, "revoked the removed member's open invites");
            }
            _ => {}
        }
        Ok(())
    }

    /// A page of resources in name order, after `after`, read linearizably.
    pub async fn list_resources(&self, after: Option<String>, limit: usize) -> Result<Vec<ResourceView>, NodeError> {
        self.0.cluster.read_barrier().await?;
        let db = self.0.cluster.database();
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let rows = tokio::task::spawn_blocking(move || {
            let txn = redb::ReadableDatabase::begin_read(&*db).map_err(storage)?;
            causeway_catalog::state::list_resources(&txn, after.as_deref(), limit).map_err(storage)
        })
        .await
        .map_err(storage)??;
        Ok(rows.into_iter().map(|r| self.view(r)).collect())
    }

    /// A resource as the API shows it; a mirror's `path` is where this node keeps it.
    fn view(&self, mut r: causeway_catalog::Resource) -> ResourceView {
        if let Some(origin) = r.mirror_of {
            let path = crate::transfer::mirror_path(&self.0.data_dir, &origin, &r.name, &r.kind);
            r.path = Some(path.to_string_lossy().into_owned());
        }
        r.into()
    }

    pub async fn show_resource(&self, name: &str) -> Result<ResourceView, NodeError> {
        self.0.cluster.read_barrier().await?;
        let db = self.0.cluster.database();
        let key = name.to_string();
        let row = tokio::task::spawn_blocking(move || {
            let txn = redb::ReadableDatabase::begin_read(&*db).map_err(storage)?;
            causeway_catalog::state::get_resource(&txn, &key).map_err(storage)
        })
        .await
        .map_err(storage)??;
        row.map(|r| self.view(r))
            .ok_or_else(|| NodeError::NotFound(format!("no resource named {name:?}")))
    }

    pub fn federation(&self) -> &Arc<Federation> {
        &self.0.federation
    }

    /// `link add`: this cluster federates with the cluster behind `endpoint` (taking no
    /// pushes from it; see [`Node::link_add_with`]).
    pub async fn link_add(
        &self,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
        name: Option<String>,
    ) -> Result<LinkView, NodeError> {
        self.link_add_with(endpoint, addrs, name, false).await
    }

    /// `link add [--accept-pushes]`: `accept_pushes` lets the peer's push offers create and
    /// advance mirrors here.
    pub async fn link_add_with(
        &self,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
        name: Option<String>,
        accept_pushes: bool,
    ) -> Result<LinkView, NodeError> {
        let record = self.0.federation.add_link(endpoint, addrs, name, accept_pushes).await?;
        let views = crate::app::link_list(&self.0.cluster).await.unwrap_or_default();
        Ok(views
            .into_iter()
            .find(|v| v.name == record.name && v.direction == "outbound")
            .unwrap_or(LinkView {
                peer: None,
                name: record.name,
                endpoints: vec![endpoint.to_string()],
                state: crate::federation::health::LinkState::Pending,
                mutual: false,
                last_heartbeat_ms_ago: None,
                rtt_ms: None,
                direction: "outbound".into(),
                card_epoch: None,
                key_generation: None,
                reason: None,
                accept_pushes: record.accept_pushes,
                cluster_name: None,
            }))
    }

    /// `link set PEER --accept-pushes on|off`.
    pub async fn link_set_pushes(&self, peer: &str, accept_pushes: bool) -> Result<LinkView, NodeError> {
        let record = self.0.federation.set_link_pushes(peer, accept_pushes).await?;
        let views = crate::app::link_list(&self.0.cluster).await?;
        views
            .into_iter()
            .find(|v| v.name == record.name && v.direction == "outbound")
            .ok_or_else(|| NodeError::NotFound(format!("link {:?} vanished", record.name)))
    }

    pub async fn link_list(&self) -> Result<Vec<LinkView>, NodeError> {
        crate::app::link_list(&self.0.cluster).await
    }

    /// The import running for resource `name` on this node (its content is imported under the
    /// tag `res/NAME`), if any.
    pub fn import_status(&self, name: &str) -> Option<crate::content::imports::ImportView> {
        // A publish imports under the resource's tag, a registration under a tag of its attempt.
        let imports = self.content().imports();
        imports
            .get(&format!("res/{name}"))
            .or_else(|| imports.find(|tag| crate::register::attempt_tag_names(tag).is_some_and(|n| n == name)))
    }

    pub fn content(&self) -> &ContentStore {
        &self.0.content
    }

    pub(crate) async fn publish_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.mirroring.publishing.lock().await
    }

    pub fn mirroring(&self) -> &Arc<Mirroring> {
        &self.0.mirroring
    }

    /// `sync NAME --from PEER`: the leader pulls the peer's current version and records the
    /// mirror; it stays subscribed afterwards. A resource the peer has published no version of
    /// yet comes back at version 0 without content ([`ResourceView::has_version`] is false):
    /// the mirror follows it, and its transfer reads `pending` with the reason
    /// [`causeway_sync::status::NOTHING_PUBLISHED`] until the first version arrives.
    pub async fn sync_pull(&self, name: &str, peer: &str) -> Result<ResourceView, NodeError> {
        let mut v = crate::app::pull(&self.0.cluster, name, peer).await?;
        // The leader pulled; the path is where this node keeps the mirror.
        if let Some(origin) = v.mirror_of.as_deref().and_then(|o| o.parse().ok()) {
            let path = crate::transfer::mirror_path(&self.0.data_dir, &origin, &v.name, &v.kind);
            v.path = Some(path.to_string_lossy().into_owned());
        }
        Ok(v)
    }

    /// `sync NAME --to PEER`: offers a bidirectional mirror's new commits back to its origin.
    pub async fn sync_push(&self, name: &str, peer: &str) -> Result<ResourceView, NodeError> {
        crate::app::write_back(&self.0.cluster, name, peer).await
    }

    /// `sync status`, as the leader (which runs the transfers) knows it.
    pub async fn sync_status(&self) -> Result<Vec<causeway_sync::status::TransferStatus>, NodeError> {
        crate::app::sync_status(&self.0.cluster).await
    }

    pub async fn link_remove(&self, peer: &str) -> Result<(), NodeError> {
        self.0.federation.remove_link(peer).await.map(|_| ())
    }

    /// Stops serving, stops Raft and closes the endpoint.
    pub async fn shutdown(&self) {
        for t in &self.0.tasks {
            t.abort();
        }
        if let Err(e) = self.0.router.shutdown().await {
            tracing::debug!(error = %e, "router shutdown");
        }
        self.0.cluster.shutdown().await;
        self.0.endpoint.close().await;
        tracing::info!("node stopped");
    }
}

/// A joined node trusts the voters named at its join only until it learns the membership; then
/// it drops them from `node.json`, so they never outlive a later removal.
async fn forget_bootstrap_peers(cluster: ClusterNode, data_dir: PathBuf) {
    if !cluster.wait_membership_known().await {
        return;
    }
    let forgotten = tokio::task::spawn_blocking(move || datadir::forget_bootstrap_peers(&data_dir)).await;
    match forgotten {
        Ok(Ok(true)) => tracing::info!("membership known: forgot the peers named at join"),
        Ok(Ok(false)) => {}
        // The Raft layer already ignores them once a membership is known; the file is rewritten
        // at the next start.
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the join peers from the data dir"),
        Err(e) => tracing::warn!(error = %e, "could not remove the join peers from the data dir"),
    }
}

/// How often a member retries recording its addresses until the cluster accepts them.
const ADDRS_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// A member that restarted bound to other addresses than the membership records tells the
/// leader, so the others (and joiners' tickets) dial it where it is now. Retries until done.
async fn record_own_addrs(cluster: ClusterNode, addrs: Vec<std::net::SocketAddr>) {
    if addrs.is_empty() {
        return;
    }
    loop {
        match cluster.update_own_addrs(MemberNode { addrs: addrs.clone() }).await {
            Ok(true) => {
                tracing::info!(?addrs, "recorded this member's new addresses");
                return;
            }
            Ok(false) => return,
            Err(e) => tracing::debug!(error = %e, "recording this member's addresses; will retry"),
        }
        tokio::time::sleep(ADDRS_RETRY).await;
    }
}
