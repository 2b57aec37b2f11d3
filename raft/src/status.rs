//! What `cluster status` reports: leader, term, indexes and each member's role and reachability.

use std::net::SocketAddr;

use causeway_proto::EndpointKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub endpoint_id: EndpointKey,
    pub role: Role,
    pub reachable: bool,
    pub addrs: Vec<SocketAddr>,
    /// Last log index the leader knows this member holds (leader's view only).
    pub matched_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub leader: Option<EndpointKey>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// Last log index covered by the reporting member's latest snapshot.
    pub snapshot_index: u64,
    /// Last log index the reporting member has purged from its log.
    pub purged_index: u64,
    /// Which member produced this view (the leader when it could be reached).
    pub reported_by: EndpointKey,
    pub members: Vec<MemberStatus>,
}
