//! The shapes the control API and `--json` output use. Field names and values follow the CLI
//! contract in the design brief; IDs are strings as iroh prints them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdInfo {
    pub endpoint_id: String,
    pub cluster_id: String,
    pub cluster_name: String,
    pub addrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub endpoint_id: String,
    /// "voter" or "learner".
    pub role: String,
    pub reachable: bool,
    pub addrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusView {
    pub cluster_id: String,
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Which member's view this is (the leader's when it could be reached).
    pub reported_by: String,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteView {
    pub ticket: String,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    pub with: String,
    pub mode: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub content: Option<String>,
    pub shares: Vec<ShareView>,
    pub mirror_of: Option<String>,
    pub path: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub updated_at_ms: u64,
}

impl ResourceView {
    /// Whether a version was published: false for a resource registered without content (and
    /// for the mirror of one), which has nothing to fetch yet.
    pub fn has_version(&self) -> bool {
        self.version > 0
    }
}

impl From<causeway_catalog::Resource> for ResourceView {
    fn from(r: causeway_catalog::Resource) -> Self {
        Self {
            name: r.name,
            kind: r.kind,
            owner: r.owner,
            version: r.version,
            content: r.content,
            shares: r
                .shares
                .iter()
                .map(|s| ShareView {
                    with: s.audience.to_string(),
                    mode: s.mode.to_string(),
                    read_only: s.read_only,
                })
                .collect(),
            mirror_of: r.mirror_of.map(|c| c.to_string()),
            path: r.path,
            metadata: r.metadata,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// One row of `causeway catalog PEER`: a resource the peer lets this cluster see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntryView {
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub mode: String,
    pub read_only: bool,
    pub content: Option<String>,
}

/// One row of `causeway share preview PEER`: what that peer would see and may do, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewView {
    pub name: String,
    pub kind: String,
    pub mode: String,
    pub read_only: bool,
    /// Actions granted: "see", "pull", "push", "write back".
    pub may: Vec<String>,
    /// The rule that grants it, as `with mode [read-only]`.
    pub rule: String,
}

/// One change of the local catalog, for watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeView {
    pub seq: u64,
    pub name: String,
    pub kind: String,
    pub version: u64,
    pub at_ms: u64,
}

/// A batch of changes after a sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesView {
    pub changes: Vec<ChangeView>,
    /// The sequence number to ask after next time.
    pub last_seq: u64,
    /// The newest change in the catalog (to start following from "now").
    pub newest_seq: u64,
    /// False when changes were pruned since the watcher's position: re-list, then continue.
    pub complete: bool,
}

/// A request to register a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResource {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub owner: String,
    /// The content on the node that serves the request: a file or directory (an artifact), a
    /// bare repository (`forge/repo`). Absolute, or relative to the daemon's working directory.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What registering does with `path`'s content (nothing without a path).
    #[serde(default)]
    pub on_register: OnRegister,
}

/// Whether a registration with a path publishes the path's current content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRegister {
    /// Import the path's current content and record it as version 1 with the registration, so
    /// a peer it is shared with can fetch it at once (a repository: its current refs as the
    /// first bundle; one without refs stays at version 0 until its first push).
    #[default]
    Publish,
    /// Record the resource at version 0 without content; the subsystem publishes later
    /// (`resource publish`, or a push into a registered repository).
    RecordOnly,
}

/// What `cluster join` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedView {
    pub endpoint_id: String,
    pub cluster_id: String,
    pub cluster_name: String,
    pub data_dir: String,
}
