//! Commands that travel through Raft, and their outcomes.

use std::{collections::BTreeMap, net::SocketAddr};

use causeway_policy::{Audience, ShareRule};

use causeway_proto::{ClusterId, EndpointKey, card::SignedCard};
use serde::{Deserialize, Serialize};

/// One change to the catalog. Everything a command needs is inside it (including "now" for
/// time-dependent checks, chosen by the proposer), so applying it is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First command of a cluster: its key and name, shared with every member through Raft.
    InitCluster {
        cluster_id: ClusterId,
        cluster_secret: [u8; 32],
        name: String,
    },
    RegisterResource {
        name: String,
        kind: String,
        owner: String,
        /// Local path of the resource's content on the registering node, if any.
        path: Option<String>,
        metadata: BTreeMap<String, String>,
        registered_at_ms: u64,
    },
    /// Sets and removes metadata keys; the version does not change.
    UpdateMetadata {
        name: String,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        now_ms: u64,
    },
    /// A new version: version + 1, with the content root it points at (if any).
    PublishResource {
        name: String,
        content: Option<String>,
        /// The version this publish was made from: refused once the resource has moved past
        /// it, so a publish retried after a lost answer (or raced by another) never makes a
        /// second version. `None`: from whatever is current.
        base_version: Option<u64>,
        now_ms: u64,
    },
    RemoveResource {
        name: String,
        now_ms: u64,
    },
    /// Adds a share rule, replacing any rule for the same audience.
    SetShare {
        name: String,
        rule: ShareRule,
        now_ms: u64,
    },
    RemoveShare {
        name: String,
        audience: Audience,
        now_ms: u64,
    },
    /// A peer's resource replicated here: creates or advances the mirror named `name`. Its
    /// content is complete on at least one member before this is proposed.
    RecordMirror {
        name: String,
        origin: ClusterId,
        kind: String,
        owner: String,
        version: u64,
        content: Option<String>,
        now_ms: u64,
    },
    /// A linked peer notified changes to what it shares with us: upserts, and removals (`None`).
    PeerCatalogUpdate {
        cluster: ClusterId,
        changes: Vec<(String, Option<crate::peer_views::PeerEntry>)>,
    },
    /// One page of a full resync of a peer's view: replaces every entry named in
    /// `(after, upto]` (`upto: None` = to the end) with `entries`.
    PeerCatalogSync {
        cluster: ClusterId,
        after: Option<String>,
        upto: Option<String>,
        entries: Vec<crate::peer_views::PeerEntry>,
    },
    CreateInvite {
        invite_id: [u8; 16],
        secret_hash: [u8; 32],
        expires_at_ms: u64,
        created_by: EndpointKey,
    },
    RedeemInvite {
        invite_id: [u8; 16],
        secret_hash: [u8; 32],
        joiner: EndpointKey,
        now_ms: u64,
    },
    /// A new card of this cluster (higher epoch), signed by the cluster key.
    SetOwnCard {
        card: SignedCard,
    },
    /// "This cluster federates with the cluster behind `endpoint`."
    AddLink {
        name: String,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
        now_ms: u64,
    },
    /// The first successful handshake of a link: pin the peer's cluster ID.
    PinLink {
        name: String,
        card: SignedCard,
    },
    /// A newer card from a pinned peer cluster.
    UpdatePeerCard {
        cluster: ClusterId,
        card: SignedCard,
    },
    /// Tombstone the link; adding it again later starts afresh.
    RemoveLink {
        name: String,
        now_ms: u64,
    },
    /// Several commands in one log entry, applied in order, each with its own result (see
    /// [`CommandResult::Batch`]): a busy leader proposes the writes queued on it this way, so
    /// that the log, replication and apply handle one entry for all of them. Holds single
    /// commands only: a batch inside a batch is refused when decoded, and rejected when applied.
    Batch(#[serde(deserialize_with = "single_commands")] Vec<Command>),
    /// A member was removed: every invite it made and nobody used is revoked, so a ticket it
    /// kept cannot bring it (or anyone it gave the ticket to) back in.
    RevokeInvitesOf {
        member: EndpointKey,
        now_ms: u64,
    },
    /// [`Command::AddLink`] with the link's options (what this version proposes; `AddLink`,
    /// still applied from logs written earlier, adds a link that takes no pushes).
    AddLinkV2 {
        name: String,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
        now_ms: u64,
        accept_pushes: bool,
    },
    /// `link set PEER --accept-pushes on|off`: whether the peer's push offers are taken.
    SetLinkPushes {
        name: String,
        accept_pushes: bool,
    },
    /// The leader starts rotating the cluster key: members sign `body` with their node keys.
    /// (Key commands are appended after `Batch`: the variant order is the log's format.)
    RotationRequest {
        body: Box<causeway_proto::rotation::RotationBody>,
    },
    /// A member's node-key signature of the rotation being signed.
    RotationSign {
        signature: Box<causeway_proto::rotation::NodeSignature>,
    },
    /// Adopts a new cluster key; the statement is signed by the current key and the members
    /// who signed in time.
    RotateOwnKey {
        secret: crate::keys::KeySecret,
        statement: Box<causeway_proto::rotation::RotationStatement>,
    },
    /// A peer's card under its key, from a handshake or a card update: pins the link at the
    /// first one, then takes newer epochs and rotations the peer's previous key and members
    /// signed.
    PeerCard {
        link: String,
        card: Box<causeway_proto::rotation::KeyedCard>,
    },
    /// The admin confirms a linked peer again (`link add` of it): the next card it presents is
    /// taken under whatever key signed it, and a key conflict is cleared.
    ConfirmPeerKey {
        link: String,
        endpoint: EndpointKey,
        addrs: Vec<SocketAddr>,
    },
    /// [`Command::RegisterResource`] with its first version: the resource is recorded at
    /// version 1 pointing at `content`, whose bytes the proposer imported before proposing. One
    /// entry, so a registration is either absent or complete, never registered without the
    /// version it was meant to have.
    RegisterPublished {
        name: String,
        kind: String,
        owner: String,
        path: Option<String>,
        metadata: BTreeMap<String, String>,
        registered_at_ms: u64,
        content: String,
    },
}

/// Decodes a batch's commands, refusing a batch among them. The type allows any depth, and
/// decoding recurses once per level, so a few bytes per level (from a member's append, or a
/// forwarded write) could otherwise overflow the decoding thread's stack.
fn single_commands<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    thread_local!(static IN_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    /// Leaves the batch however its decoding ends.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_BATCH.set(false);
        }
    }
    if IN_BATCH.replace(true) {
        return Err(serde::de::Error::custom(Rejection::NestedBatch));
    }
    let _leave = Leave;
    Vec::<Command>::deserialize(d)
}

impl Command {
    /// Short name for logs; never includes secrets.
    pub fn label(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init-cluster",
            Command::RegisterResource { .. } => "register-resource",
            Command::UpdateMetadata { .. } => "update-metadata",
            Command::PublishResource { .. } => "publish-resource",
            Command::RemoveResource { .. } => "remove-resource",
            Command::SetShare { .. } => "set-share",
            Command::RemoveShare { .. } => "remove-share",
            Command::RecordMirror { .. } => "record-mirror",
            Command::PeerCatalogUpdate { .. } => "peer-catalog-update",
            Command::PeerCatalogSync { .. } => "peer-catalog-sync",
            Command::CreateInvite { .. } => "create-invite",
            Command::RedeemInvite { .. } => "redeem-invite",
            Command::SetOwnCard { .. } => "set-own-card",
            Command::AddLink { .. } => "add-link",
            Command::PinLink { .. } => "pin-link",
            Command::UpdatePeerCard { .. } => "update-peer-card",
            Command::RemoveLink { .. } => "remove-link",
            Command::Batch(_) => "batch",
            Command::RevokeInvitesOf { .. } => "revoke-invites-of",
            Command::AddLinkV2 { .. } => "add-link",
            Command::SetLinkPushes { .. } => "set-link-pushes",
            Command::RotationRequest { .. } => "rotation-request",
            Command::RotationSign { .. } => "rotation-sign",
            Command::RotateOwnKey { .. } => "rotate-own-key",
            Command::PeerCard { .. } => "peer-card",
            Command::ConfirmPeerKey { .. } => "confirm-peer-key",
            Command::RegisterPublished { .. } => "register-published",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What applying a command produced. A rejection is a committed, deterministic outcome (every
/// member agrees the command changed nothing), not a storage failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    /// Membership changes and blank entries.
    #[default]
    Applied,
    ClusterInitialized,
    ResourceRegistered(Resource),
    /// The resource after a metadata update, publish or share change.
    Resource(Resource),
    ResourceRemoved(String),
    InviteCreated,
    InviteRedeemed,
    Link(crate::links::LinkRecord),
    Rejected(Rejection),
    /// The results of a [`Command::Batch`], one per command, in its order.
    Batch(Vec<CommandResult>),
    /// How many open invites a [`Command::RevokeInvitesOf`] revoked.
    InvitesRevoked(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("cluster is already initialized")]
    AlreadyInitialized,
    #[error("a resource named {0:?} already exists")]
    ResourceExists(String),
    #[error("invalid resource: {0}")]
    Invalid(String),
    #[error("invite ticket is unknown to this cluster (forged, or made by another cluster)")]
    InviteUnknown,
    #[error("invite ticket was already used")]
    InviteUsed,
    #[error("invite ticket has expired")]
    InviteExpired,
    #[error("invite ticket secret does not match (forged ticket)")]
    InviteForged,
    #[error("invite id already exists")]
    InviteExists,
    #[error("no resource named {0:?}")]
    NoSuchResource(String),
    #[error("resource {0:?} has no share for that audience")]
    NoSuchShare(String),
    #[error("{0:?} is a local resource or a mirror of another cluster; a mirror cannot replace it")]
    MirrorNameTaken(String),
    #[error("{name:?} is at version {have} now, not {base}; publish again")]
    VersionMoved { name: String, base: u64, have: u64 },
    #[error("mirror {name:?} already records version {version} with this content")]
    MirrorUnchanged { name: String, version: u64 },
    #[error("stale card: epoch {presented} is not newer than {known}")]
    StaleCard { presented: u64, known: u64 },
    #[error("a link named {0:?} already exists")]
    LinkNameTaken(String),
    #[error("endpoint {endpoint} is already linked as {name:?}")]
    AlreadyLinked { endpoint: EndpointKey, name: String },
    #[error("cluster {cluster} is already linked as {name:?}")]
    ClusterAlreadyLinked { cluster: ClusterId, name: String },
    #[error("no link named {0:?}")]
    NoSuchLink(String),
    #[error("no link is pinned to cluster {0}")]
    NoLinkForCluster(ClusterId),
    #[error("link {name:?} is pinned to cluster {pinned}, but the peer presented cluster {presented}")]
    PinnedMismatch {
        name: String,
        pinned: ClusterId,
        presented: ClusterId,
    },
    #[error("card is not valid: {0}")]
    BadCard(String),
    #[error("a batch of commands cannot hold another batch")]
    NestedBatch,
    #[error("invite ticket was revoked: the member that made it was removed from the cluster")]
    InviteRevoked,
    /// A share rule that may not be stored (e.g. public with write-back).
    #[error("{0}")]
    BadShare(causeway_policy::ShareRuleError),
    #[error("card claims endpoint {endpoint}, which belongs to {owner}")]
    EndpointClaimed { endpoint: EndpointKey, owner: String },
    #[error("conflicting key rotation for generation {0}; confirm the peer with link add")]
    KeyConflict(u64),
    #[error("{0}")]
    PeerKey(String),
}

/// A resource registered for federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub kind: String,
    pub owner: String,
    /// Starts at 0 at registration; each publish adds one.
    pub version: u64,
    /// The content root of the current version (an iroh-blobs hash), if it has content.
    pub content: Option<String>,
    pub path: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Who may see and move this resource; empty means private.
    pub shares: Vec<ShareRule>,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
    /// Set when this resource is a mirror of a peer cluster's resource.
    pub mirror_of: Option<ClusterId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::register;

    #[test]
    fn a_batch_decodes_as_it_was_encoded() {
        let batch = Command::Batch(vec![register("a"), register("b")]);
        let bytes = postcard::to_stdvec(&batch).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), batch);
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), batch);
        // A later batch decodes too: the first one left no mark behind.
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), batch);
    }

    #[test]
    fn a_batch_inside_a_batch_is_refused_when_decoded() {
        let nested = Command::Batch(vec![register("a"), Command::Batch(vec![register("b")])]);
        let bytes = postcard::to_stdvec(&nested).unwrap();
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
        // Nor does the refusal leave a mark: a flat batch still decodes afterwards.
        let flat = Command::Batch(vec![register("a")]);
        let bytes = postcard::to_stdvec(&flat).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), flat);
    }

    #[test]
    fn deeply_nested_batches_are_refused_without_recursing() {
        // `Batch([Batch([...])])` a million levels deep: the variant's tag and a length of one,
        // repeated, as a member could send it.
        let tag = postcard::to_stdvec(&Command::Batch(Vec::new())).unwrap()[0];
        let bytes: Vec<u8> = std::iter::repeat_n([tag, 1], 1_000_000).flatten().collect();
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
    }
}
