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
use iroh::{Endpoint, EndpointAddr, EndpointId};
use iroh_blobs::HashAndFormat;
use openraft::async_runtime::watch::WatchReceiver as _;

use crate::content::{ContentStore, store::parse_root};
use crate::error::NodeError;
use crate::federation::Federation;
use crate::node::now_ms;

mod guard;
pub use guard::{
    MAX_PUSHED_PULLS_PER_PEER, MAX_WRITE_BACK_BYTES, MAX_WRITE_BACKS_PER_PEER, PUSHED_PULL_DEADLINE, PeerUsage,
    PushSlot, PushSlots,
};
use guard::{PullGuard, stop_when};

/// How long dialling a peer's blob endpoint may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pull waits for another transfer of the same resource to finish.
const PULL_WAIT: Duration = Duration::from_secs(600);
/// Pulls running at once on the leader.
pub const MAX_CONCURRENT_PULLS: usize = 8;
/// Of those, pulls from one origin at once: a peer that serves slowly (or trickles on
/// purpose) holds at most these slots, never every one.
pub const MAX_PULLS_PER_ORIGIN: usize = 2;

pub use crate::content::layout::mirror_path;

/// Every mirror the catalog records, as the layout migration needs them.
fn recorded_mirrors(fed: &Federation) -> Vec<crate::content::migrate::MirrorRecord> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let Ok(page) = fed.read(|t| {
            causeway_catalog::mirror_index::list_mirrors(t, after.as_deref(), causeway_catalog::state::MAX_PAGE)
        }) else {
            return out;
        };
        let done = page.len() < causeway_catalog::state::MAX_PAGE;
        after = page.last().map(|m| m.name.clone());
        out.extend(
            page.into_iter()
                .filter_map(|m| m.mirror_of.map(|o| (o, m.name, m.kind))),
        );
        if done {
            return out;
        }
    }
}

type TransferKey = (String, String, &'static str);

/// Most transfer rows kept: a peer's offers and pulls of names it does not share each leave
/// one, so the table is bounded like everything a peer can make us hold.
const MAX_TRANSFER_ROWS: usize = 4096;

/// Frees a row when the table is full: the longest-idle row that never synced (a refusal, a
/// failure), else the longest-idle one. A mirror's evicted row is made again from the catalog
/// the next time it is asked for.
fn make_room(map: &mut BTreeMap<TransferKey, Transfer>) {
    if map.len() < MAX_TRANSFER_ROWS {
        return;
    }
    let victim = map
        .iter()
        .min_by_key(|(_, t)| (t.synced_version().is_some(), t.updated_ms()))
        .map(|(k, _)| k.clone());
    if let Some(k) = victim {
        map.remove(&k);
    }
}

pub struct Mirroring {
    cluster: ClusterNode,
    fed: Arc<Federation>,
    content: ContentStore,
    endpoint: Endpoint,
    data_dir: PathBuf,
    status_cfg: StatusConfig,
    stall_after: Duration,
    transfers: Mutex<BTreeMap<TransferKey, Transfer>>,
    running: tokio::sync::Semaphore,
    /// Per origin, its share of `running` (an entry per origin ever pulled from: links only).
    per_origin: Mutex<BTreeMap<ClusterId, Arc<tokio::sync::Semaphore>>>,
    in_flight: Mutex<std::collections::BTreeSet<String>>,
    /// Write-back bundles offered to origins: (root, origin cluster).
    offers: Mutex<Vec<(HashAndFormat, ClusterId)>>,
    /// Where member replication resumes its walk of the catalog.
    replicate_cursor: Mutex<Option<String>>,
    /// Publishes on this node run one at a time (an admin's, a hook's, a write-back's), so two
    /// of them together make one version, not two with the same commits.
    pub(crate) publishing: tokio::sync::Mutex<()>,
    /// Pushed pulls running per peer on this member.
    pub push_slots: Arc<PushSlots>,
    /// Write-backs running per peer on this member.
    write_back_slots: Arc<PushSlots>,
    /// Pulls past their transfer, writing the mirror and recording it: no longer stopped.
    committing: Mutex<std::collections::BTreeSet<String>>,
}

/// A pull found the mirror at the origin's `version`: synced, unless the origin has published
/// nothing yet (version 0), which the mirror follows but must not read as synced.
fn arrived(t: &mut Transfer, version: u64, now_ms: u64) {
    if version == 0 {
        t.nothing_published(now_ms);
    } else {
        t.synced(version, now_ms);
    }
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
        sync: SyncConfig,
    ) -> Arc<Self> {
        crate::content::layout::recover(&data_dir);
        crate::content::migrate::from_old_layout(&data_dir, &recorded_mirrors(&fed));
        Arc::new(Self {
            cluster,
            fed,
            content,
            endpoint,
            data_dir,
            status_cfg: StatusConfig {
                stall_after_ms: sync.stall_after_ms,
            },
            stall_after: Duration::from_millis(sync.stall_after_ms.max(100)),
            transfers: Mutex::new(BTreeMap::new()),
            running: tokio::sync::Semaphore::new(MAX_CONCURRENT_PULLS),
            per_origin: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(Default::default()),
            offers: Mutex::new(Vec::new()),
            replicate_cursor: Mutex::new(None),
            publishing: tokio::sync::Mutex::new(()),
            push_slots: Arc::new(PushSlots::new(MAX_PUSHED_PULLS_PER_PEER)),
            write_back_slots: Arc::new(PushSlots::new(MAX_WRITE_BACKS_PER_PEER)),
            committing: Mutex::new(Default::default()),
        })
    }

    fn with_transfer<T>(&self, name: &str, peer: &str, dir: Direction, f: impl FnOnce(&mut Transfer) -> T) -> T {
        let mut map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), peer.to_string(), direction_word(dir));
        if !map.contains_key(&key) {
            make_room(&mut map);
        }
        let t = map.entry(key).or_insert_with(|| self.new_row(name, peer, dir));
        f(t)
    }

    /// A row starts from what the replicated state records: after a restart or a change of
    /// leader, a current mirror must not read as lagging or unsynced.
    fn new_row(&self, name: &str, peer: &str, dir: Direction) -> Transfer {
        let now = now_ms();
        let mut t = Transfer::new(name.to_string(), peer.to_string(), dir, now);
        if dir == Direction::Pull
            && let Ok(Some(r)) = self.local_resource(name)
            && r.mirror_of.is_some_and(|o| o.to_string() == peer)
        {
            arrived(&mut t, r.version, now);
        }
        t
    }

    /// Within one registration an origin's versions only grow, so a row that synced or wanted
    /// more than `version` belongs to a resource the origin removed and registered again: it
    /// starts over rather than ignoring the new versions as stale reports.
    fn restart_row_below(&self, name: &str, peer: &str, version: u64) {
        let mut map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), peer.to_string(), direction_word(Direction::Pull));
        if map
            .get(&key)
            .is_some_and(|t| t.synced_version().max(t.wanted_version()).is_some_and(|v| v > version))
        {
            tracing::info!(resource = name, peer, version, "origin's versions restarted");
            map.insert(
                key,
                Transfer::new(name.to_string(), peer.to_string(), Direction::Pull, now_ms()),
            );
        }
    }

    /// Every transfer this node knows, as `sync status` shows it.
    pub fn statuses(&self) -> Vec<TransferStatus> {
        let now = now_ms();
        let map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|t| t.status(now, &self.status_cfg)).collect()
    }

    fn local_resource(&self, name: &str) -> Result<Option<Resource>, NodeError> {
        self.fed.read(|t| causeway_catalog::state::get_resource(t, name))
    }

    /// Pulls the peer's current version of `name` now and records the mirror. Runs on the
    /// leader (the CLI's request is routed there).
    pub async fn pull(self: &Arc<Self>, name: &str, peer: &str) -> Result<Resource, NodeError> {
        self.pull_guarded(name, peer, PullGuard::default()).await
    }

    /// [`Mirroring::pull`], stopped as soon as `guard` or the link's removal says so.
    async fn pull_guarded(self: &Arc<Self>, name: &str, peer: &str, guard: PullGuard) -> Result<Resource, NodeError> {
        let (link, origin) = self.fed.resolve_pinned(peer)?;
        let peer_label = origin.to_string();
        // One transfer per resource at a time: a second request (a push offer racing an admin's
        // `sync`) waits for the first and then finds the mirror already current.
        let deadline = tokio::time::Instant::now() + PULL_WAIT;
        while !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Conflict(format!("a transfer of {name:?} is still running")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let result = stop_when(
            self.pull_stopped(name, origin, guard),
            self.pull_inner(name, &link, origin, &peer_label, guard),
        )
        .await;
        self.committing.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
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
        guard: PullGuard,
    ) -> Result<Resource, NodeError> {
        let origin_slots = self
            .per_origin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(origin)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_PULLS_PER_ORIGIN)))
            .clone();
        let _origin_permit = origin_slots
            .acquire_owned()
            .await
            .map_err(|_| NodeError::Refused("shutting down".into()))?;
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
        let Some(entry) = self.fed.lookup_peer_entry(&link.name, name).await? else {
            return Err(NodeError::NotFound(format!(
                "{} does not share {name:?} with this cluster (or it does not exist)",
                link.name
            )));
        };
        let root = entry.content.as_deref().map(parse_root).transpose()?;
        self.restart_row_below(name, peer_label, entry.version);
        if let Some(local) = self.local_resource(name)?
            && local.version == entry.version
            && local.content == entry.content
            && !(local.content.is_some() && self.mirror_missing(&origin, name, &local.kind))
        {
            self.with_transfer(name, peer_label, Direction::Pull, |t| {
                arrived(t, local.version, now_ms())
            });
            return Ok(local);
        }
        if entry.version > 0 {
            self.with_transfer(name, peer_label, Direction::Pull, |t| t.want(entry.version, now_ms()));
        }
        let mut refused: Option<String> = None;
        if let Some(root) = root {
            self.fetch_root(name, link, peer_label, entry.version, root).await?;
            self.fetched(name, root, guard).await?;
            self.content.tag(&format!("mirror/{origin}/{name}"), root).await?;
            if let Some(problem) = self.materialize(&origin, name, &entry.kind, root).await? {
                refused = Some(problem);
            }
            if entry.kind == "forge/repo" && entry.mode == "bidirectional" && !entry.read_only {
                self.install_write_back_hook(&origin, name);
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
            CommandResult::Rejected(Rejection::MirrorUnchanged { .. }) => self
                .local_resource(name)?
                .ok_or_else(|| NodeError::NotFound(format!("mirror {name:?} vanished")))?,
            CommandResult::Rejected(r) => return Err(NodeError::Conflict(r.to_string())),
            other => return Err(NodeError::Refused(format!("unexpected result {other:?}"))),
        };
        self.with_transfer(name, peer_label, Direction::Pull, |t| match refused {
            // Recorded (every other ref moved), but the divergent refs are reported, and stay so
            // when another pull finds the mirror already at this version.
            Some(problem) => t.refused(resource.version, problem, now_ms()),
            None => arrived(t, resource.version, now_ms()),
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
        if already > 0 {
            // iroh-blobs asks only for the ranges not yet verified here.
            tracing::info!(
                resource = name,
                bytes = already,
                "resuming transfer from verified bytes"
            );
        }
        self.with_transfer(name, peer_label, Direction::Pull, |t| {
            t.start(version, None, now_ms());
            t.progress(already, None, now_ms());
        });
        // Any member of the origin may serve it; one that has not replicated this version yet
        // fails the request, so the next member is tried (verified ranges are kept).
        let mut last = String::from("no endpoint to fetch from");
        let mut done = false;
        let mut total: Option<u64> = None;
        for (endpoint, addrs) in link.dial_targets() {
            let Ok(id) = EndpointId::from_bytes(endpoint.as_bytes()) else {
                continue;
            };
            let mut addr = EndpointAddr::new(id);
            for a in &addrs {
                addr = addr.with_ip_addr(*a);
            }
            let conn = match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, iroh_blobs::ALPN)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    last = format!("{}: {e}", endpoint.short());
                    continue;
                }
                Err(_) => {
                    last = format!("{}: connect timed out", endpoint.short());
                    continue;
                }
            };
            // The total is known before the first byte moves (a progress bar, not "/ 0").
            if total.is_none() {
                total = crate::content::probe::remote_size(&conn, root).await;
            }
            let base = self.content.local_bytes(root).await;
            self.with_transfer(name, peer_label, Direction::Pull, |t| t.progress(base, total, now_ms()));
            let result = self
                .content
                .fetch(
                    conn.clone(),
                    root,
                    |bytes| {
                        self.with_transfer(name, peer_label, Direction::Pull, |t| {
                            t.progress(base + bytes, None, now_ms())
                        })
                    },
                    self.stall_after,
                )
                .await;
            conn.close(0u32.into(), b"done");
            match result {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(e) => last = format!("{}: {e}", endpoint.short()),
            }
        }
        if !done {
            return Err(if last.contains("ermission") {
                NodeError::NotFound(format!("{} refused the content of {name:?}: {last}", link.name))
            } else {
                NodeError::Refused(format!("transfer of {name:?} failed: {last}"))
            });
        }
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
        let target = crate::content::layout::prepare(&self.data_dir, origin, name, kind)?;
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
        if root.format == iroh_blobs::BlobFormat::HashSeq {
            return self.content.export_collection(root, &target).await.map(|_| None);
        }
        self.content.export_blob(root, &target).await.map(|_| None)
    }

    /// Whether this node's copy of a mirror is gone from disk (deleted, or lost to a crash).
    fn mirror_missing(&self, origin: &ClusterId, name: &str, kind: &str) -> bool {
        crate::content::layout::is_missing(&mirror_path(&self.data_dir, origin, name, kind), kind)
    }

    /// Writes a mirror whose files are missing here again, from this node's store, unless a
    /// transfer of it is running; a leader whose store lacks the content pulls it again.
    async fn restore_missing(self: &Arc<Self>, r: &Resource, root: HashAndFormat) {
        let Some(origin) = r.mirror_of else { return };
        if !self.mirror_missing(&origin, &r.name, &r.kind) {
            return;
        }
        if !self.content.is_complete(root).await {
            if self.cluster.is_leader()
                && !self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&r.name)
            {
                let (this, name, peer) = (self.clone(), r.name.clone(), origin.to_string());
                tokio::spawn(async move {
                    if let Err(e) = this.pull(&name, &peer).await {
                        tracing::warn!(resource = %name, error = %e, "pulling a missing mirror again failed");
                    }
                });
            }
            return;
        }
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.name.clone())
        {
            return;
        }
        let result = self.materialize(&origin, &r.name, &r.kind, root).await;
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.name);
        // A bidirectional repository mirror's push hook went with its files.
        let writable = self
            .fed
            .read(|t| causeway_catalog::peer_views::get(t, &origin, &r.name))
            .ok()
            .flatten()
            .is_some_and(|e| e.mode == causeway_policy::ShareMode::Bidirectional && !e.read_only);
        if result.is_ok() && r.kind == "forge/repo" && writable {
            self.install_write_back_hook(&origin, &r.name);
        }
        match result {
            Ok(_) => tracing::info!(resource = %r.name, "mirror files were missing; written again"),
            Err(e) => tracing::warn!(resource = %r.name, error = %e, "cannot write a missing mirror again"),
        }
    }

    /// A `git push` into a bidirectional mirror offers the commits back to the origin by itself.
    fn install_write_back_hook(&self, origin: &ClusterId, name: &str) {
        let Ok(exe) = std::env::current_exe() else { return };
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        // The name comes last, after `--`: a peer's resource name such as `-h` or `status`
        // must reach the CLI as the name, not as an option or a subcommand.
        let command = format!(
            "{} --data-dir {} sync --to {} -- {} >/dev/null 2>&1 &",
            quote(&exe.to_string_lossy()),
            quote(&self.data_dir.to_string_lossy()),
            origin,
            quote(name)
        );
        let path = mirror_path(&self.data_dir, origin, name, "forge/repo");
        if let Err(e) = causeway_sync::git::install_notify_hook(&path, &command) {
            tracing::warn!(resource = name, error = %e, "could not install the write-back hook");
        }
    }

    /// On the leader: pulls every mirror whose origin's view shows another version.
    pub async fn reconcile(self: &Arc<Self>) {
        let mut after: Option<String> = None;
        loop {
            let Ok(page) = self.fed.read(|t| {
                causeway_catalog::mirror_index::list_mirrors(t, after.as_deref(), causeway_catalog::state::MAX_PAGE)
            }) else {
                return;
            };
            let done = page.len() < causeway_catalog::state::MAX_PAGE;
            after = page.last().map(|m| m.name.clone());
            self.reconcile_page(page);
            if done {
                return;
            }
        }
    }

    fn reconcile_page(self: &Arc<Self>, mirrors: Vec<Resource>) {
        for m in mirrors {
            let Some(origin) = m.mirror_of else { continue };
            let Ok(view) = self
                .fed
                .read(|t| causeway_catalog::peer_views::get(t, &origin, &m.name))
            else {
                continue;
            };
            // Any difference, not only a higher version: the origin may have removed the
            // resource and registered the name again, which starts its versions over.
            let differs = view.is_some_and(|e| e.version != m.version || e.content != m.content);
            if !differs {
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
    pub async fn replicate_from_members(self: &Arc<Self>) {
        // One page per round, resuming where the last round stopped, so a large catalog is
        // covered over several rounds at a bounded cost each.
        let cursor = self.replicate_cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Ok(rows) = self
            .fed
            .read(|t| causeway_catalog::state::list_resources(t, cursor.as_deref(), causeway_catalog::state::MAX_PAGE))
        else {
            return;
        };
        *self.replicate_cursor.lock().unwrap_or_else(|e| e.into_inner()) =
            if rows.len() < causeway_catalog::state::MAX_PAGE {
                None
            } else {
                rows.last().map(|r| r.name.clone())
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
                self.restore_missing(&r, root).await;
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
                let ok = self
                    .content
                    .fetch(conn.clone(), root, |_| {}, self.stall_after)
                    .await
                    .is_ok();
                conn.close(0u32.into(), b"done");
                if ok && self.content.is_complete(root).await {
                    let tag = match r.mirror_of {
                        Some(o) => format!("mirror/{o}/{}", r.name),
                        None => format!("res/{}", r.name),
                    };
                    let _ = self.content.tag(&tag, root).await;
                    // Not while a pull of it runs here (a leader): that pull writes it.
                    if let Some(o) = r.mirror_of
                        && self
                            .in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(r.name.clone())
                    {
                        let _ = self.materialize(&o, &r.name, &r.kind, root).await;
                        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.name);
                    }
                    tracing::info!(resource = %r.name, "content replicated from a member");
                    break;
                }
            }
            // Written from the store now, or pulled again from the origin by the leader.
            self.restore_missing(&r, root).await;
        }
    }
}

/// Sync tunables (`[sync]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// A transfer with no data for this long is abandoned as stalled (resumed by the next sync).
    pub stall_after_ms: u64,
    /// How often the leader checks every mirror against its origin's view.
    pub reconcile_ms: u64,
    /// How often every member looks for content it misses and fetches it from the others.
    pub member_replication_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            stall_after_ms: 10_000,
            reconcile_ms: 100,
            member_replication_ms: 2000,
        }
    }
}

/// Shortest gap between two reconciles woken by applied entries, so a burst of writes costs
/// one pass per gap rather than one per entry.
const RECONCILE_MIN_GAP: Duration = Duration::from_millis(5);

/// The mirroring loops: reconcile on the leader, replicate from members everywhere. A
/// reconcile runs as soon as this node applies new entries (a peer's change notification is
/// recorded through Raft, so the pull starts right after it), and on the interval as well.
pub async fn run_loops(cluster: ClusterNode, mirroring: Arc<Mirroring>, cfg: SyncConfig) {
    let mut reconcile = tokio::time::interval(Duration::from_millis(cfg.reconcile_ms.max(20)));
    let mut replicate = tokio::time::interval(Duration::from_millis(cfg.member_replication_ms.max(100)));
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    replicate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut applied_watch = cluster.applied_watch();
    let mut applied = *applied_watch.borrow_and_update();
    loop {
        tokio::select! {
            _ = reconcile.tick() => {
                if cluster.is_leader() {
                    mirroring.reconcile().await;
                }
            }
            changed = applied_watch.changed() => {
                if changed.is_err() {
                    // Raft storage stopped: the node is shutting down.
                    return;
                }
                let now = *applied_watch.borrow_and_update();
                if now != applied && cluster.is_leader() {
                    applied = now;
                    mirroring.reconcile().await;
                    tokio::time::sleep(RECONCILE_MIN_GAP).await;
                }
            }
            _ = replicate.tick() => mirroring.replicate_from_members().await,
        }
    }
}

/// Most write-back bundles offered to peers at once.
const MAX_OFFERS: usize = 256;

impl Mirroring {
    /// Whether `root` is a write-back bundle this node offered to `cluster`.
    pub fn offered_to(&self, cluster: &ClusterId, root: &HashAndFormat) -> bool {
        self.offers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(h, c)| h == root && c == cluster)
    }

    /// `sync NAME --to PEER`: offers the mirror's new local commits back to the origin. The
    /// origin decides by its own policy (a read-only share refuses) and moves refs only by
    /// fast-forward.
    pub async fn write_back(self: &Arc<Self>, name: &str, peer: &str) -> Result<Resource, NodeError> {
        let (link, origin) = self.fed.resolve_pinned(peer)?;
        let label = origin.to_string();
        let result = self.write_back_inner(name, &link, origin, &label).await;
        if let Err(e) = &result {
            let reason = e.to_string();
            self.with_transfer(name, &label, Direction::Push, |t| match e {
                NodeError::Refused(_) if reason.contains("denied") => t.denied(reason, now_ms()),
                _ => t.failed(reason, now_ms()),
            });
        }
        result
    }

    async fn write_back_inner(
        &self,
        name: &str,
        link: &LinkRecord,
        origin: ClusterId,
        label: &str,
    ) -> Result<Resource, NodeError> {
        let mirror = self
            .local_resource(name)?
            .filter(|r| r.mirror_of == Some(origin))
            .ok_or_else(|| NodeError::NotFound(format!("{name:?} is not a mirror of {}", link.name)))?;
        if mirror.kind != "forge/repo" {
            return Err(NodeError::Invalid("only forge/repo mirrors can write back".into()));
        }
        let root = mirror.content.as_deref().map(parse_root).transpose()?;
        let path = mirror_path(&self.data_dir, &origin, name, &mirror.kind);
        self.with_transfer(name, label, Direction::Push, |t| t.want(mirror.version + 1, now_ms()));
        let Some(bundle) = self.content.bundle_since(&path, root).await? else {
            self.with_transfer(name, label, Direction::Push, |t| t.synced(mirror.version, now_ms()));
            return Ok(mirror);
        };
        {
            let mut offers = self.offers.lock().unwrap_or_else(|e| e.into_inner());
            if offers.len() >= MAX_OFFERS {
                offers.remove(0);
            }
            offers.push((bundle, origin));
        }
        self.with_transfer(name, label, Direction::Push, |t| {
            t.start(mirror.version + 1, None, now_ms())
        });
        let conn = self
            .fed
            .connect_peer(link)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot reach {}: {e}", link.name)))?;
        let req = causeway_proto::fed::FedRequest::WriteBack {
            name: name.to_string(),
            bundle: bundle.to_string(),
        };
        let answer = crate::federation::session::request(&conn, &req).await;
        conn.close(0u32.into(), b"done");
        match answer.map_err(NodeError::Refused)? {
            causeway_proto::fed::FedResponse::Ok => {
                self.with_transfer(name, label, Direction::Push, |t| t.synced(mirror.version + 1, now_ms()));
                Ok(mirror)
            }
            causeway_proto::fed::FedResponse::Denied(r) => {
                Err(NodeError::Refused(format!("denied by {}: {r}", link.name)))
            }
            other => Err(NodeError::Refused(format!("{} answered {other:?}", link.name))),
        }
    }

    /// The origin's side of a write-back: policy first (fail closed, a read-only share refuses),
    /// then fetch the offered bundle from the requesting endpoint, apply it to the origin
    /// repository by fast-forward only, and publish the result as a new version.
    pub async fn accept_write_back(
        &self,
        from: ClusterId,
        endpoint: EndpointKey,
        name: &str,
        bundle: &str,
    ) -> causeway_proto::fed::FedResponse {
        use causeway_proto::fed::FedResponse;
        if let Err(reason) = self.fed.confirm_current().await {
            return FedResponse::Error(reason);
        }
        let relation = self.fed.relation(from);
        let resource = self.local_resource(name).ok().flatten();
        let rules = resource.as_ref().map(|r| r.shares.as_slice());
        if let causeway_policy::Decision::Deny(reason) =
            causeway_policy::decide(&relation, rules, causeway_policy::Action::WriteBack)
        {
            tracing::info!(resource = name, peer = %from, %reason, "write-back refused by policy");
            return FedResponse::Denied(reason.peer_visible().to_string());
        }
        let Some(resource) = resource else {
            return FedResponse::Denied("not found".into());
        };
        let Some(_slot) = self.write_back_slots.take(from) else {
            return FedResponse::Error(format!(
                "{MAX_WRITE_BACKS_PER_PEER} write-backs of yours are running here already; try again later"
            ));
        };
        let (Some(path), "forge/repo") = (resource.path.clone(), resource.kind.as_str()) else {
            return FedResponse::Error("resource has no repository to write back into".into());
        };
        let Ok(root) = parse_root(bundle) else {
            return FedResponse::Error("bad bundle root".into());
        };
        if root.format != iroh_blobs::BlobFormat::Raw {
            return FedResponse::Error("a write-back bundle is a single blob".into());
        }
        let Ok(id) = EndpointId::from_bytes(endpoint.as_bytes()) else {
            return FedResponse::Error("bad endpoint".into());
        };
        let addrs = self
            .fed
            .links()
            .ok()
            .and_then(|ls| {
                ls.into_iter().find(|l| l.pinned == Some(from)).and_then(|l| {
                    l.dial_targets()
                        .into_iter()
                        .find(|(e, _)| *e == endpoint)
                        .map(|(_, a)| a)
                })
            })
            .unwrap_or_default();
        let mut addr = EndpointAddr::new(id);
        for a in addrs {
            addr = addr.with_ip_addr(a);
        }
        let conn = match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, iroh_blobs::ALPN)).await {
            Ok(Ok(c)) => c,
            _ => return FedResponse::Error("cannot fetch the bundle from you".into()),
        };
        let fetched = stop_when(
            self.write_back_stopped(from, name, root),
            self.content.fetch(conn.clone(), root, |_| {}, self.stall_after),
        )
        .await;
        conn.close(0u32.into(), b"done");
        if let Err(e) = fetched {
            return FedResponse::Error(format!("bundle transfer failed: {e}"));
        }
        if self.content.local_bytes(root).await > MAX_WRITE_BACK_BYTES {
            return FedResponse::Error(format!("write-back bundle is larger than {MAX_WRITE_BACK_BYTES} bytes"));
        }
        let _one_at_a_time = self.publishing.lock().await;
        // Decided again on current state right before the refs move: the fetch may have taken
        // long enough for the share or the link to go.
        let still = match self.fed.confirm_current().await {
            Ok(()) => {
                let rules = self.local_resource(name).ok().flatten().map(|r| r.shares);
                causeway_policy::decide(
                    &self.fed.relation(from),
                    rules.as_deref(),
                    causeway_policy::Action::WriteBack,
                )
            }
            Err(reason) => return FedResponse::Error(reason),
        };
        if let causeway_policy::Decision::Deny(reason) = still {
            tracing::info!(resource = name, peer = %from, %reason, "write-back refused by policy after its fetch");
            return FedResponse::Denied(reason.peer_visible().to_string());
        }
        match self.content.apply_bundle_blob(root, std::path::Path::new(&path)).await {
            Ok(outcome) if !outcome.refused.is_empty() => {
                let names: Vec<String> = outcome.refused.iter().map(|r| r.name.clone()).collect();
                FedResponse::Denied(format!("divergent refs refused, not overwritten: {}", names.join(", ")))
            }
            Ok(_) => {
                // Publish the new commits as a version, so every peer (the writer too) follows;
                // from the version current now (another publish may have run meanwhile).
                let resource = match self.local_resource(name) {
                    Ok(Some(r)) => r,
                    _ => return FedResponse::Error("resource vanished during the write-back".into()),
                };
                let previous = resource.content.as_deref().and_then(|c| parse_root(c).ok());
                match self
                    .content
                    .publish_repo(std::path::Path::new(&path), previous, &format!("res/{name}"))
                    .await
                {
                    Ok(Some(new_root)) => {
                        let cmd = Command::PublishResource {
                            name: name.to_string(),
                            content: Some(new_root.to_string()),
                            base_version: Some(resource.version),
                            now_ms: now_ms(),
                        };
                        match self.cluster.write(cmd).await {
                            Ok(CommandResult::Resource(_)) => FedResponse::Ok,
                            other => write_back_failed(name, format!("new version not recorded: {other:?}")),
                        }
                    }
                    Ok(None) => FedResponse::Ok,
                    Err(e) => write_back_failed(name, e),
                }
            }
            Err(e) => write_back_failed(name, e),
        }
    }
}

/// A write-back that failed here: the peer learns that it failed, the log learns why. The
/// details name local paths and carry git's own messages, which are not the peer's to read.
fn write_back_failed(name: &str, detail: impl std::fmt::Display) -> causeway_proto::fed::FedResponse {
    tracing::warn!(resource = name, error = %detail, "write-back failed");
    causeway_proto::fed::FedResponse::Error(
        "the write-back could not be applied here; the origin's log says why".into(),
    )
}

#[cfg(test)]
mod row_tests {
    use super::*;

    #[test]
    fn a_full_table_gives_up_an_idle_row_that_never_synced_first() {
        let mut map = BTreeMap::new();
        for i in 0..MAX_TRANSFER_ROWS {
            let mut t = Transfer::new(format!("r{i}"), "p".into(), Direction::Pull, 10 + i as u64);
            if i != 7 {
                t.synced(1, 10 + i as u64);
            }
            map.insert((format!("r{i}"), "p".to_string(), "pull"), t);
        }
        make_room(&mut map);
        assert_eq!(map.len(), MAX_TRANSFER_ROWS - 1);
        assert!(!map.contains_key(&("r7".to_string(), "p".to_string(), "pull")));
        // With none left that never synced, the longest idle goes.
        map.insert(
            ("x".into(), "p".into(), "pull"),
            Transfer::new("x".into(), "p".into(), Direction::Pull, 1),
        );
        map.get_mut(&("x".to_string(), "p".to_string(), "pull"))
            .unwrap()
            .synced(1, 1);
        make_room(&mut map);
        assert!(!map.contains_key(&("x".to_string(), "p".to_string(), "pull")));
        assert_eq!(map.len(), MAX_TRANSFER_ROWS - 1);
    }
}
