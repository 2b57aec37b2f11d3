//! The openraft type configuration: node IDs are endpoint keys, a member's node data is where to
//! reach it, and log entries carry catalog commands.

use std::{net::SocketAddr, ops::Deref, sync::Arc};

use causeway_catalog::{Command, CommandResult};
use causeway_proto::EndpointKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// A command as the Raft log carries it. Shared, because openraft copies an entry for every
/// reader (each replication stream, the state machine): a deep copy of every string and map in
/// it cost a busy leader a twentieth of its CPU. Encoded exactly as the command itself.
#[derive(Clone, Debug, PartialEq)]
pub struct LogCommand(Arc<Command>);

impl From<Command> for LogCommand {
    fn from(cmd: Command) -> Self {
        LogCommand(Arc::new(cmd))
    }
}

impl LogCommand {
    /// The command itself, copied only if the log still shares it.
    pub fn into_command(self) -> Command {
        Arc::unwrap_or_clone(self.0)
    }
}

impl Deref for LogCommand {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.0
    }
}

impl std::fmt::Display for LogCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for LogCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Command::deserialize(d).map(LogCommand::from)
    }
}

/// Causeway's Raft types. Written out rather than declared with openraft's macro, whose type
/// list cannot name a generic responder.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = LogCommand;
    type R = CommandResult;
    type NodeId = EndpointKey;
    type Node = MemberNode;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<Self::Term, Self::NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Self::D, Self::NodeId, Self::Node>;
    type Entry = openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = crate::proposer::WriteReply<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub use crate::store::SnapshotData;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_command_is_encoded_exactly_as_its_command() {
        // Logs and peers of earlier versions hold plain commands: the shared form must read them
        // and write the same bytes.
        let cmd = Command::RegisterResource {
            name: "team/tools".into(),
            kind: "repo".into(),
            owner: "forge".into(),
            path: Some("/srv/git/tools".into()),
            metadata: [("lang".to_string(), "rust".to_string())].into(),
            registered_at_ms: 42,
        };
        let plain = postcard::to_stdvec(&cmd).unwrap();
        let shared = LogCommand::from(cmd.clone());
        assert_eq!(postcard::to_stdvec(&shared).unwrap(), plain);
        let back: LogCommand = postcard::from_bytes(&plain).unwrap();
        assert_eq!(*back, cmd);
        assert_eq!(back.to_string(), cmd.to_string());
    }
}
