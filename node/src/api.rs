//! The shapes the control API and `--json` output use. Field names and values follow the CLI
//! contract in the design brief; IDs are strings as iroh prints them.

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
}

impl From<causeway_catalog::Resource> for ResourceView {
    fn from(r: causeway_catalog::Resource) -> Self {
        Self {
            name: r.name,
            kind: r.kind,
            owner: r.owner,
            version: r.version,
            content: None,
            shares: Vec::new(),
            mirror_of: None,
            path: r.path,
        }
    }
}

/// A request to register a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResource {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub path: Option<String>,
}

/// What `cluster join` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedView {
    pub endpoint_id: String,
    pub cluster_id: String,
    pub cluster_name: String,
    pub data_dir: String,
}
