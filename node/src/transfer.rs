//! Replicating peers' resources into this cluster (mirrors): pulling a version's content from
//! the origin over iroh-blobs (verified and resumable), recording it through Raft only once it
//! is complete here, keeping mirrors subscribed (the leader reconciles them against the peer
//! views that notifications and resyncs keep current), transfer status for `sync status`, and
//! members fetching content they miss from each other.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use causeway_catalog::{Command, CommandResult, Rejection, Resource, links::LinkRecord};
use causeway_proto::{ClusterId, EndpointKey};
use causeway_raft::ClusterNode;
use causeway_sync::status::{Direction, StatusConfig, Transfer, TransferStatus};
use iroh::{Endpoint, EndpointAddr, EndpointId, endpoint::Connection};
use iroh_blobs::HashAndFormat;
use openraft::async_runtime::watch::WatchReceiver as _;

use crate::content::{ContentStore, store::parse_root};
use crate::error::NodeError;
use crate::federation::Federation;
use crate::node::now_ms;

/// How long dialling a peer's blob endpoint may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pulls running at once on the leader.
pub const MAX_CONCURRENT_PULLS: usize = 8;

/// Where a mirror of `name` from `origin` is materialized.
pub fn mirror_path(data_dir: &std::path::Path, origin: &ClusterId, name: &str, kind: &str) -> PathBuf {
    let base = data_dir.join("mirrors").join(origin.to_string());
    if kind == "forge/repo" {
        base.join(format!("{name}.git"))
    } else {
        base.join(name)
    }
}

type TransferKey = (String, String, &'static str);

pub struct Mirroring {
    cluster: ClusterNode,
    fed: Arc<Federation>,
    content: ContentStore,
    endpoint: Endpoint,
    data_dir: PathBuf,
    status_cfg: StatusConfig,
    transfers: Mutex<BTreeMap<TransferKey, Transfer>>,
    running: tokio::sync::Semaphore,
    in_flight: Mutex<std::collections::BTreeSet<String>>,
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Pull => "pull",
        Direction::Push => "push",
    }
}

impl Mirroring {
    pub fn new(
        cluster: ClusterNode,
        fed: Arc<Federation>,
        content: ContentStore,
        endpoint: Endpoint,
        data_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            fed,
            content,
            endpoint,
            data_dir,
            status_cfg: StatusConfig::default(),
            transfers: Mutex::new(BTreeMap::new()),
            running: tokio::sync::Semaphore::new(MAX_CONCURRENT_PULLS),
            in_flight: Mutex::new(Default::default()),
        })
    }

    fn with_transfer<T>(&self, name: &str, peer: &str, dir: Direction, f: impl FnOnce(&mut Transfer) -> T) -> T {
        let mut map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), peer.to_string(), direction_word(dir));
        let t = map
            .entry(key)
            .or_insert_with(|| Transfer::new(name.to_string(), peer.to_string(), dir, now_ms()));
        f(t)
    }

    /// Every transfer this node knows, as `sync status` shows it.
    pub fn statuses(&self) -> Vec<TransferStatus> {
        let now = now_ms();
        let map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|t| t.status(now, &self.status_cfg)).collect()
    }

    async fn blob_connection(&self, link: &LinkRecord) -> Result<Connection, String> {
        let mut last = String::from("no endpoint to dial");
        for (endpoint, addrs) in link.dial_targets() {
            let Ok(id) = EndpointId::from_bytes(endpoint.as_bytes()) else {
                continue;
            };
            let mut addr = EndpointAddr::new(id);
            for a in &addrs {
                addr = addr.with_ip_addr(*a);
            }
            match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, iroh_blobs::ALPN)).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => last = format!("{}: {e}", endpoint.short()),
                Err(_) => last = format!("{}: connect timed out", endpoint.short()),
            }
        }
        Err(last)
    }

    fn local_resource(&self, name: &str) -> Result<Option<Resource>, NodeError> {
        self.fed.read(|t| causeway_catalog::state::get_resource(t, name))
    }

    /// Pulls the peer's current version of `name` now and records the mirror. Runs on the
    /// leader (the CLI's request is routed there).
    pub async fn pull(self: &Arc<Self>, name: &str, peer: &str) -> Result<Resource, NodeError> {
        let link = self.fed.resolve(peer)?;
        let Some(origin) = link.pinned else {
            return Err(NodeError::Refused(format!(
                "link {:?} has not completed a handshake yet",
                link.name
            )));
        };
        let peer_label = origin.to_string();
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
        {
            return Err(NodeError::Conflict(format!(
                "a transfer of {name:?} is already running"
            )));
        }
        let result = self.pull_inner(name, &link, origin, &peer_label).await;
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        if let Err(e) = &result {
            let reason = e.to_string();
            self.with_transfer(name, &peer_label, Direction::Pull, |t| match e {
                NodeError::NotFound(_) => t.denied(reason, now_ms()),
                _ => t.failed(reason, now_ms()),
            });
        }
        result
    }

    async fn pull_inner(
        &self,
        name: &str,
        link: &LinkRecord,
        origin: ClusterId,
        peer_label: &str,
    ) -> Result<Resource, NodeError> {
        let _permit = self
            .running
            .acquire()
            .await
            .map_err(|_| NodeError::Refused("shutting down".into()))?;
        self.with_transfer(name, peer_label, Direction::Pull, |_| ());
        if let Some(local) = self.local_resource(name)?
            && local.mirror_of != Some(origin)
        {
            return Err(NodeError::Conflict(format!(
                "{name:?} already exists here and is not a mirror of {}",
                link.name
            )));
        }
        // Ask the origin what it shares with us now: the entry names the version and root.
        let entries = self.fed.query_peer_catalog(&link.name).await?;
        let Some(entry) = entries.into_iter().find(|e| e.name == name) else {
            return Err(NodeError::NotFound(format!(
                "{} does not share {name:?} with this cluster (or it does not exist)",
                link.name
            )));
        };
        let root = entry.content.as_deref().map(parse_root).transpose()?;
        if let Some(local) = self.local_resource(name)?
            && local.version >= entry.version
            && local.content == entry.content
        {
            self.with_transfer(name, peer_label, Direction::Pull, |t| t.synced(local.version, now_ms()));
            return Ok(local);
        }
        self.with_transfer(name, peer_label, Direction::Pull, |t| t.want(entry.version, now_ms()));
        let mut refused: Option<String> = None;
        if let Some(root) = root {
            self.fetch_root(name, link, peer_label, entry.version, root).await?;
            self.content.tag(&format!("mirror/{origin}/{name}"), root).await?;
            if let Some(problem) = self.materialize(&origin, name, &entry.kind, root).await? {
                refused = Some(problem);
            }
        }
        let cmd = Command::RecordMirror {
            name: name.to_string(),
            origin,
            kind: entry.kind.clone(),
            owner: entry.owner.clone(),
            version: entry.version,
            content: entry.content.clone(),
            now_ms: now_ms(),
        };
        let resource = match self.cluster.write(cmd).await? {
            CommandResult::Resource(r) => r,
            CommandResult::Rejected(Rejection::MirrorNotNewer { .. }) => self
                .local_resource(name)?
                .ok_or_else(|| NodeError::NotFound(format!("mirror {name:?} vanished")))?,
            CommandResult::Rejected(r) => return Err(NodeError::Conflict(r.to_string())),
            other => return Err(NodeError::Refused(format!("unexpected result {other:?}"))),
        };
        self.with_transfer(name, peer_label, Direction::Pull, |t| match refused {
            // Recorded (every other ref moved), but the divergent refs are reported.
            Some(problem) => t.failed(problem, now_ms()),
            None => t.synced(resource.version, now_ms()),
        });
        tracing::info!(resource = name, version = resource.version, origin = %origin, "mirror synced");
        Ok(resource)
    }

    async fn fetch_root(
        &self,
        name: &str,
        link: &LinkRecord,
        peer_label: &str,
        version: u64,
        root: HashAndFormat,
    ) -> Result<(), NodeError> {
        if self.content.is_complete(root).await {
            return Ok(());
        }
        let already = self.content.local_bytes(root).await;
        self.with_transfer(name, peer_label, Direction::Pull, |t| t.start(version, None, now_ms()));
        let conn = self
            .blob_connection(link)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot reach {} for content: {e}", link.name)))?;
        let result = self
            .content
            .fetch(conn.clone(), root, |bytes| {
                self.with_transfer(name, peer_label, Direction::Pull, |t| {
                    t.progress(already + bytes, None, now_ms())
                })
            })
            .await;
        conn.close(0u32.into(), b"done");
        result.map_err(|e| match e {
            NodeError::Refused(msg) if msg.contains("ermission") || msg.contains("closed") => {
                NodeError::NotFound(format!("{} refused the content of {name:?}: {msg}", link.name))
            }
            other => other,
        })?;
        if !self.content.is_complete(root).await {
            return Err(NodeError::Refused(format!(
                "content of {name:?} is incomplete after the transfer"
            )));
        }
        Ok(())
    }

    /// Makes a mirror usable on this node's disk: an artifact as a file, a repository as a bare
    /// git mirror. Returns a description of refused (divergent) refs, if any.
    async fn materialize(
        &self,
        origin: &ClusterId,
        name: &str,
        kind: &str,
        root: HashAndFormat,
    ) -> Result<Option<String>, NodeError> {
        let target = mirror_path(&self.data_dir, origin, name, kind);
        if kind == "forge/repo" {
            let outcome = self.content.apply_repo(root, &target).await?;
            if outcome.refused.is_empty() {
                return Ok(None);
            }
            let names: Vec<String> = outcome.refused.iter().map(|r| r.name.clone()).collect();
            tracing::warn!(resource = name, refs = ?names, "divergent refs refused");
            return Ok(Some(format!(
                "divergent refs refused, not overwritten: {}",
                names.join(", ")
            )));
        }
        if root.format != iroh_blobs::BlobFormat::Raw {
            return Ok(None);
        }
        self.content.export_blob(root, &target).await.map(|_| None)
    }

    /// On the leader: pulls every mirror whose origin's view shows a newer version.
    pub async fn reconcile(self: &Arc<Self>) {
        let Ok(mirrors) = self
            .fed
            .read(|t| causeway_catalog::state::list_resources(t, None, causeway_catalog::state::MAX_PAGE))
        else {
            return;
        };
        for m in mirrors {
            let Some(origin) = m.mirror_of else { continue };
            let Ok(view) = self
                .fed
                .read(|t| causeway_catalog::peer_views::get(t, &origin, &m.name))
            else {
                continue;
            };
            let newer =
                view.is_some_and(|e| e.version > m.version || (e.version == m.version && e.content != m.content));
            if !newer {
                continue;
            }
            if self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&m.name)
            {
                continue;
            }
            let this = self.clone();
            let peer = origin.to_string();
            let name = m.name.clone();
            tokio::spawn(async move {
                if let Err(e) = this.pull(&name, &peer).await {
                    tracing::warn!(resource = %name, error = %e, "mirror sync failed");
                }
            });
        }
    }

    /// On every member: fetches content of catalog versions that is not complete here from
    /// the other members, so losing one node loses no data.
    pub async fn replicate_from_members(&self) {
        let Ok(rows) = self
            .fed
            .read(|t| causeway_catalog::state::list_resources(t, None, causeway_catalog::state::MAX_PAGE))
        else {
            return;
        };
        let me = self.cluster.id();
        let members: Vec<(EndpointKey, Vec<std::net::SocketAddr>)> = {
            let m = self.cluster.raft().metrics().borrow_watched().clone();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, n)| (*id, n.addrs.clone()))
                .collect()
        };
        for r in rows {
            let Some(root) = r.content.as_deref().and_then(|c| parse_root(c).ok()) else {
                continue;
            };
            if self.content.is_complete(root).await {
                continue;
            }
            for (id, addrs) in &members {
                let Ok(eid) = EndpointId::from_bytes(id.as_bytes()) else {
                    continue;
                };
                let mut addr = EndpointAddr::new(eid);
                for a in addrs {
                    addr = addr.with_ip_addr(*a);
                }
                let Ok(Ok(conn)) =
                    tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, iroh_blobs::ALPN)).await
                else {
                    continue;
                };
                let ok = self.content.fetch(conn.clone(), root, |_| {}).await.is_ok();
                conn.close(0u32.into(), b"done");
                if ok && self.content.is_complete(root).await {
                    let tag = match r.mirror_of {
                        Some(o) => format!("mirror/{o}/{}", r.name),
                        None => format!("res/{}", r.name),
                    };
                    let _ = self.content.tag(&tag, root).await;
                    if let Some(o) = r.mirror_of {
                        let _ = self.materialize(&o, &r.name, &r.kind, root).await;
                    }
                    tracing::info!(resource = %r.name, "content replicated from a member");
                    break;
                }
            }
        }
    }
}

/// Sync tunables (`[sync]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// How often the leader checks every mirror against its origin's view.
    pub reconcile_ms: u64,
    /// How often every member looks for content it misses and fetches it from the others.
    pub member_replication_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            reconcile_ms: 100,
            member_replication_ms: 2000,
        }
    }
}

/// The mirroring loops: reconcile on the leader, replicate from members everywhere.
pub async fn run_loops(cluster: ClusterNode, mirroring: Arc<Mirroring>, cfg: SyncConfig) {
    let mut reconcile = tokio::time::interval(Duration::from_millis(cfg.reconcile_ms.max(20)));
    let mut replicate = tokio::time::interval(Duration::from_millis(cfg.member_replication_ms.max(100)));
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    replicate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = reconcile.tick() => {
                if cluster.is_leader() {
                    mirroring.reconcile().await;
                }
            }
            _ = replicate.tick() => mirroring.replicate_from_members().await,
        }
    }
}
