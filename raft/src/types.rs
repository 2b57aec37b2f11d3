//! The openraft type configuration: node IDs are endpoint keys, a member's node data is where to
//! reach it, and log entries carry catalog commands.

use std::net::SocketAddr;

use causeway_catalog::{Command, CommandResult};
use causeway_proto::EndpointKey;
use serde::{Deserialize, Serialize};

/// What the cluster records about a member: the addresses it listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.addrs)
    }
}

openraft::declare_raft_types!(
    /// Causeway's Raft types.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = EndpointKey,
        Node = MemberNode,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub use crate::store::SnapshotData;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
