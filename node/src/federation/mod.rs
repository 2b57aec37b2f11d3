//! Federation between clusters on `causeway/fed/2`: the links this cluster keeps (replicated
//! records), their live health (kept by the leader, in memory), peers that connect to us without
//! being linked (inbound), and the operations the CLI uses on links.

pub mod catalog;
pub mod health;
pub mod limits;
mod lookup;
pub mod notify;
mod own_card;
pub mod rotation;
pub mod server;
pub mod session;
pub mod supervisor;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use causeway_catalog::{ClusterIdentity, Command, CommandResult, links::LinkRecord};
use causeway_proto::{ClusterId, EndpointKey, card::SignedCard, fed::Expectation, rotation::KeyedCard};
use causeway_raft::ClusterNode;
use iroh::{Endpoint, endpoint::Connection};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, storage};
use crate::node::now_ms;
use health::{HealthConfig, LinkHealth, LinkState};

/// Most inbound (unlinked) peers remembered for `link list`.
pub const MAX_INBOUND_PEERS: usize = 256;
/// How long a member may take to confirm it holds the cluster's committed state before it
/// refuses a peer's read (a member cut off from its majority cannot, and must not answer).
pub const CURRENT_STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A row of `link list` (the CLI contract plus direction, RTT and the reason for a failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    pub peer: Option<String>,
    pub name: String,
    pub endpoints: Vec<String>,
    pub state: LinkState,
    pub mutual: bool,
    pub last_heartbeat_ms_ago: Option<u64>,
    pub rtt_ms: Option<u64>,
    /// "outbound" (we link to them) or "inbound" (they connect to us; we do not link to them).
    pub direction: String,
    pub card_epoch: Option<u64>,
    /// Generation of the peer's key held (0: its first key, the cluster ID).
    pub key_generation: Option<u64>,
    pub reason: Option<String>,
    /// Whether the peer's push offers are taken (`link set PEER --accept-pushes on|off`).
    pub accept_pushes: bool,
    /// The name the peer's card gives its cluster (none before the first handshake).
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// Most pending link names one error lists.
const MAX_PENDING_NAMED: usize = 3;

/// `peer` names a link that has not completed its first handshake.
pub(crate) fn pending_error(peer: &str, link: &str) -> NodeError {
    let named = if peer == link {
        String::new()
    } else {
        format!(" (link {link:?})")
    };
    NodeError::LinkPending(format!(
        "link to {peer}{named} is pending: waiting for its first handshake (see `causeway link list`)"
    ))
}

/// `peer` is a key that names no link, while `pending` links are not pinned yet: it may be the
/// cluster ID one of them will pin.
fn unpinned_key_error(peer: &str, pending: &[&str]) -> NodeError {
    let mut names: Vec<String> = pending
        .iter()
        .take(MAX_PENDING_NAMED)
        .map(|n| format!("{n:?}"))
        .collect();
    if pending.len() > MAX_PENDING_NAMED {
        names.push(format!("{} more", pending.len() - MAX_PENDING_NAMED));
    }
    let (which, its) = if pending.len() == 1 {
        ("link", "its")
    } else {
        ("links", "their")
    };
    NodeError::LinkPending(format!(
        "no link is pinned to {peer} yet; {which} {} {} pending: waiting for {its} first handshake (see `causeway link list`)",
        names.join(", "),
        if pending.len() == 1 { "is" } else { "are" },
    ))
}

impl LinkView {
    /// Whether the link works: our outbound link, pinned to its peer's cluster, and active.
    pub fn is_up(&self) -> bool {
        self.direction == "outbound" && self.peer.is_some() && self.state == LinkState::Active
    }
}

/// A cluster that completed a handshake with us without our linking to it.
#[derive(Clone, Debug)]
struct InboundPeer {
    name: String,
    endpoints: BTreeSet<EndpointKey>,
    last_seen_ms: u64,
    card_epoch: u64,
}

#[derive(Default)]
struct LiveState {
    health: HashMap<String, LinkHealth>,
    sessions: HashMap<String, Connection>,
    inbound: BTreeMap<ClusterId, InboundPeer>,
    /// Why the last inbound handshake from a linked peer's endpoint was refused, by link name.
    refusals: HashMap<String, String>,
    /// Links with a heartbeat task still running (dialling can outlast an interval).
    busy: BTreeSet<String>,
}

pub struct Federation {
    /// Set once the node has built its mirroring (they refer to each other).
    pub(crate) mirroring: std::sync::OnceLock<std::sync::Weak<crate::transfer::Mirroring>>,
    cluster: ClusterNode,
    endpoint: Endpoint,
    local: EndpointKey,
    cfg: HealthConfig,
    live: Mutex<LiveState>,
    notifier: notify::Notifier,
    /// One dial at a time per link, so the heartbeat and the notifier share one new session.
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Caps on what peers can make this node hold (connections, streams, request bytes,
    /// notification writes) and the one resync at a time.
    limits: limits::FedLimits,
    /// One key rotation at a time (an admin's and the one after a member removal).
    rotating: tokio::sync::Mutex<()>,
    /// When the leader may try again an automatic rotation that failed (no Raft entry per tick).
    rotation_retry_at: Mutex<Option<std::time::Instant>>,
}

impl Federation {
    /// Waits until this member's state machine holds every write committed before the call
    /// (a linearizable read barrier through the leader). Peers' reads (catalog queries, blob
    /// requests, write-backs) are decided only after it: a member cut off from its majority
    /// could otherwise serve a share that was revoked after it lost contact.
    pub(crate) async fn confirm_current(&self) -> Result<(), String> {
        match tokio::time::timeout(CURRENT_STATE_TIMEOUT, self.cluster.read_barrier()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot confirm current state");
                Err("this member cannot confirm the cluster's current state; ask another member".into())
            }
            Err(_) => Err("this member cannot confirm the cluster's current state in time; ask another member".into()),
        }
    }

    pub fn new(cluster: ClusterNode, endpoint: Endpoint, cfg: HealthConfig) -> Arc<Self> {
        let local = cluster.id();
        Arc::new(Self {
            mirroring: std::sync::OnceLock::new(),
            cluster: cluster.clone(),
            endpoint,
            local,
            cfg,
            live: Mutex::new(LiveState::default()),
            notifier: notify::Notifier::default(),
            dialing: Mutex::new(HashMap::new()),
            limits: limits::FedLimits::default(),
            rotating: tokio::sync::Mutex::new(()),
            rotation_retry_at: Mutex::new(None),
        })
    }

    /// The `[federation]` config this node runs with.
    pub(crate) fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    fn live(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, causeway_catalog::CatalogError>,
    ) -> Result<T, NodeError> {
        let db = self.cluster.database();
        let txn = db.begin_read().map_err(storage)?;
        f(&txn).map_err(storage)
    }

    pub(crate) fn links(&self) -> Result<Vec<LinkRecord>, NodeError> {
        self.read(causeway_catalog::links::list)
    }

    pub(crate) fn identity(&self) -> Result<Option<ClusterIdentity>, NodeError> {
        self.read(causeway_catalog::state::cluster_identity)
    }

    pub(crate) fn own_card(&self) -> Result<Option<SignedCard>, NodeError> {
        self.read(causeway_catalog::state::own_card)
    }

    pub(crate) fn own_key(&self) -> Result<Option<causeway_catalog::keys::OwnKey>, NodeError> {
        self.read(causeway_catalog::keys::own_key)
    }

    /// Our card as peers get it, under the current key, with that key's secret. Right after a
    /// rotation the stored card may still carry the previous key's signature until the leader
    /// publishes the next epoch: it is signed again under the current key meanwhile.
    pub(crate) fn own_keyed_card(&self) -> Result<Option<([u8; 32], KeyedCard)>, NodeError> {
        let (Some(key), Some(card)) = (self.own_key()?, self.own_card()?) else {
            return Ok(None);
        };
        let signed = if card.verify_as(&key.key).is_ok() {
            card
        } else {
            SignedCard::sign_as(card.card, &key.key, &key.secret.0)
        };
        let keyed = KeyedCard {
            signed,
            key: key.key,
            rotation: key.statement,
        };
        Ok(Some((key.secret.0, keyed)))
    }

    /// The active link that owns `endpoint` (the endpoint index: one owner per endpoint).
    pub(crate) fn link_owning(&self, endpoint: &EndpointKey) -> Result<Option<LinkRecord>, NodeError> {
        let Some(name) = self.read(|t| causeway_catalog::endpoint_index::owner(t, endpoint))? else {
            return Ok(None);
        };
        Ok(self.links()?.into_iter().find(|l| !l.is_removed() && l.name == name))
    }

    /// The active link pinned to `cluster`.
    pub(crate) fn link_pinned_to(&self, cluster: &ClusterId) -> Result<Option<LinkRecord>, NodeError> {
        Ok(self
            .links()?
            .into_iter()
            .find(|l| !l.is_removed() && l.pinned == Some(*cluster)))
    }

    /// What a handshake with the peer of `link` must match: its pinned cluster, the newest
    /// epoch, and the key held for it with the members a rotation is checked against.
    pub(crate) fn expectation(&self, link: Option<&LinkRecord>) -> Result<Expectation, NodeError> {
        let Some(link) = link else {
            return Ok(Expectation::default());
        };
        let held = match link.pinned {
            Some(c) => Some(self.read(|t| causeway_catalog::keys::held_key(t, &c))?),
            None => None,
        };
        Ok(Expectation {
            pinned: link.pinned,
            known_epoch: link.card.as_ref().map(|c| c.card.epoch).unwrap_or(0),
            held,
            held_members: link.card.as_ref().map(|c| c.card.endpoints()).unwrap_or_default(),
        })
    }

    fn record_inbound(&self, card: &SignedCard, endpoint: EndpointKey) {
        let mut live = self.live();
        let c = &card.card;
        if !live.inbound.contains_key(&c.cluster_id) && live.inbound.len() >= MAX_INBOUND_PEERS {
            // Forget the peer seen longest ago: the list is advisory.
            if let Some(oldest) = live.inbound.iter().min_by_key(|(_, p)| p.last_seen_ms).map(|(k, _)| *k) {
                live.inbound.remove(&oldest);
            }
        }
        let entry = live.inbound.entry(c.cluster_id).or_insert_with(|| InboundPeer {
            name: c.name.clone(),
            endpoints: BTreeSet::new(),
            last_seen_ms: 0,
            card_epoch: c.epoch,
        });
        // Only endpoints the newest card lists (the handshake checked it lists this one): one
        // cluster key signing card after card of made-up endpoints would otherwise grow the
        // set without bound. A card lists at most `MAX_CARD_MEMBERS`.
        entry.endpoints.retain(|e| c.lists(e));
        entry.endpoints.insert(endpoint);
        debug_assert!(entry.endpoints.len() <= causeway_proto::card::MAX_CARD_MEMBERS);
        entry.last_seen_ms = now_ms();
        entry.card_epoch = entry.card_epoch.max(c.epoch);
        entry.name = c.name.clone();
    }

    /// How policy sees the cluster behind `endpoint`: linked if it belongs to a pinned link
    /// (found through the endpoint index, so no other link's card can claim it), unlinked if it
    /// handshook with us as a cluster we do not link, otherwise unknown.
    pub fn relation_of_endpoint(&self, endpoint: &EndpointKey) -> causeway_policy::PeerRelation {
        if let Ok(Some(link)) = self.link_owning(endpoint)
            && let Some(cluster) = link.pinned
        {
            return causeway_policy::PeerRelation::Linked(cluster);
        }
        let live = self.live();
        for (cluster, p) in &live.inbound {
            if p.endpoints.contains(endpoint) {
                return causeway_policy::PeerRelation::Unlinked(*cluster);
            }
        }
        causeway_policy::PeerRelation::Unknown
    }

    fn record_refusal(&self, link: &str, reason: String) {
        self.live().refusals.insert(link.to_string(), reason);
    }

    /// `link add`: through Raft. For a peer already linked, it is the admin's confirmation of
    /// the peer: the next card the named endpoint presents is taken under whatever key signed
    /// it (after a rotation without a majority, missed rotations, or a key conflict).
    pub async fn add_link(
        &self,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
        name: Option<String>,
        accept_pushes: bool,
    ) -> Result<LinkRecord, NodeError> {
        if let Some(link) = self.link_owning(&endpoint)?
            && link.pinned.is_some()
        {
            let cmd = Command::ConfirmPeerKey {
                link: link.name.clone(),
                endpoint,
                addrs,
            };
            return match self.cluster.write(cmd).await? {
                CommandResult::Link(l) => {
                    tracing::info!(link = %l.name, "admin confirmed the peer; its next card is taken as presented");
                    Ok(l)
                }
                CommandResult::Rejected(r) => Err(NodeError::Conflict(r.to_string())),
                other => Err(NodeError::Refused(format!("unexpected result {other:?}"))),
            };
        }
        let name = name.unwrap_or_else(|| format!("peer-{}", endpoint.short()));
        match self
            .cluster
            .write(Command::AddLinkV2 {
                name,
                endpoint,
                addrs,
                now_ms: now_ms(),
                accept_pushes,
            })
            .await?
        {
            CommandResult::Link(l) => Ok(l),
            CommandResult::Rejected(r) => Err(NodeError::Conflict(r.to_string())),
            other => Err(NodeError::Refused(format!("unexpected result {other:?}"))),
        }
    }

    /// Finds the active link a PEER argument names: link name, pinned cluster ID, or any
    /// endpoint of the peer. A key that names no link while some link still waits for its
    /// first handshake may be that link's cluster ID (unknown until the handshake pins it):
    /// the error says the link is pending ([`NodeError::LinkPending`]) rather than unknown.
    pub fn resolve(&self, peer: &str) -> Result<LinkRecord, NodeError> {
        let links = self.links()?;
        let active = links.iter().filter(|l| !l.is_removed());
        if let Some(l) = active.clone().find(|l| l.name == peer) {
            return Ok(l.clone());
        }
        if let Ok(key) = peer.parse::<EndpointKey>() {
            let as_cluster = ClusterId(key.0);
            if let Some(l) = active.clone().find(|l| l.pinned == Some(as_cluster)) {
                return Ok(l.clone());
            }
            if let Some(l) = self.link_owning(&key)? {
                return Ok(l);
            }
            let pending: Vec<&str> = active
                .clone()
                .filter(|l| l.pinned.is_none())
                .map(|l| l.name.as_str())
                .collect();
            if !pending.is_empty() {
                return Err(unpinned_key_error(peer, &pending));
            }
        }
        Err(NodeError::NotFound(format!(
            "no link matches {peer:?} (give a link name, cluster ID or endpoint ID)"
        )))
    }

    /// The link a PEER argument names and the cluster it is pinned to; a link still waiting
    /// for its first handshake is [`NodeError::LinkPending`].
    pub fn resolve_pinned(&self, peer: &str) -> Result<(LinkRecord, ClusterId), NodeError> {
        let link = self.resolve(peer)?;
        match link.pinned {
            Some(cluster) => Ok((link, cluster)),
            None => Err(pending_error(peer, &link.name)),
        }
    }

    /// `link set PEER --accept-pushes on|off`: through Raft.
    pub async fn set_link_pushes(&self, peer: &str, accept_pushes: bool) -> Result<LinkRecord, NodeError> {
        let link = self.resolve(peer)?;
        let cmd = Command::SetLinkPushes {
            name: link.name.clone(),
            accept_pushes,
        };
        match self.cluster.write(cmd).await? {
            CommandResult::Link(l) => Ok(l),
            CommandResult::Rejected(r) => Err(NodeError::Conflict(r.to_string())),
            other => Err(NodeError::Refused(format!("unexpected result {other:?}"))),
        }
    }

    /// `link remove`: tombstone through Raft; the leader's supervisor then says goodbye to the
    /// peer and closes its connections.
    pub async fn remove_link(&self, peer: &str) -> Result<LinkRecord, NodeError> {
        let link = self.resolve(peer)?;
        match self
            .cluster
            .write(Command::RemoveLink {
                name: link.name.clone(),
                now_ms: now_ms(),
            })
            .await?
        {
            CommandResult::Link(l) => Ok(l),
            CommandResult::Rejected(r) => Err(NodeError::Conflict(r.to_string())),
            other => Err(NodeError::Refused(format!("unexpected result {other:?}"))),
        }
    }

    /// The leader's view of every link, including inbound peers we do not link to.
    pub fn local_link_views(&self) -> Result<Vec<LinkView>, NodeError> {
        let links = self.links()?;
        let now = now_ms();
        let live = self.live();
        let mut out = Vec::new();
        let mut linked: BTreeSet<ClusterId> = BTreeSet::new();
        for l in &links {
            if let (Some(p), false) = (l.pinned, l.is_removed()) {
                linked.insert(p);
            }
        }
        for l in links {
            let h = live.health.get(&l.name);
            // A key conflict holds the link failing until an admin confirms the peer.
            let held = match (l.pinned, l.is_removed()) {
                (Some(c), false) => self.read(|t| causeway_catalog::keys::held_key(t, &c)).ok(),
                _ => None,
            };
            let conflict = held.as_ref().and_then(|k| k.conflict.then_some(k.key.generation));
            let state = if l.is_removed() {
                LinkState::Removed
            } else if conflict.is_some() {
                LinkState::Failing
            } else {
                h.map(|h| h.state(now, &self.cfg)).unwrap_or(LinkState::Pending)
            };
            let reason = if l.is_removed() {
                None
            } else {
                h.and_then(|h| h.last_error().map(String::from))
                    .or_else(|| live.refusals.get(&l.name).cloned())
            };
            out.push(LinkView {
                peer: l.pinned.map(|p| p.to_string()),
                name: l.name.clone(),
                endpoints: l.dial_targets().iter().map(|(e, _)| e.to_string()).collect(),
                state,
                mutual: !l.is_removed() && h.is_some_and(|h| h.mutual(now, &self.cfg)),
                last_heartbeat_ms_ago: if l.is_removed() {
                    None
                } else {
                    h.and_then(|h| h.last_heartbeat_ms_ago(now))
                },
                rtt_ms: h.and_then(|h| h.rtt_ms()),
                direction: "outbound".into(),
                card_epoch: l.card.as_ref().map(|c| c.card.epoch),
                accept_pushes: l.accept_pushes && !l.is_removed(),
                key_generation: held.as_ref().map(|k| k.key.generation),
                reason: match state {
                    LinkState::Failing if conflict.is_some() => Some(format!(
                        "conflicting key rotation (generation {}); confirm the peer with link add",
                        conflict.unwrap_or_default()
                    )),
                    LinkState::Active | LinkState::Removed => None,
                    LinkState::Failing => reason.or_else(|| {
                        h.and_then(|h| h.last_heartbeat_ms_ago(now))
                            .map(|ago| format!("no heartbeat acknowledged for {ago} ms"))
                    }),
                    LinkState::Pending => reason,
                },
                cluster_name: l.card.as_ref().map(|c| c.card.name.clone()),
            });
        }
        for (cluster, p) in &live.inbound {
            if linked.contains(cluster) {
                continue;
            }
            out.push(LinkView {
                peer: Some(cluster.to_string()),
                name: p.name.clone(),
                endpoints: p.endpoints.iter().map(ToString::to_string).collect(),
                state: LinkState::Pending,
                mutual: false,
                last_heartbeat_ms_ago: Some(now.saturating_sub(p.last_seen_ms)),
                rtt_ms: None,
                direction: "inbound".into(),
                card_epoch: Some(p.card_epoch),
                key_generation: None,
                reason: Some("this cluster does not link to the peer".into()),
                accept_pushes: false,
                cluster_name: Some(p.name.clone()),
            });
        }
        Ok(out)
    }
}
