//! The node library's error type: every failure names what went wrong in one line.

use causeway_raft::ClusterError;

use crate::datadir::DataDirError;
use crate::endpoint::EndpointError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    /// The named peer's link exists but has not completed its first handshake, so its cluster
    /// is not pinned yet (kind `link_pending`: a caller waits and tries again).
    #[error("{0}")]
    LinkPending(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl NodeError {
    /// A stable, machine-readable kind for the control protocol.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::DataDir(_) => "data_dir",
            NodeError::Endpoint(_) => "endpoint",
            NodeError::Cluster(_) => "cluster",
            NodeError::Invalid(_) => "invalid",
            NodeError::NotFound(_) => "not_found",
            NodeError::Conflict(_) => "conflict",
            NodeError::Refused(_) => "refused",
            NodeError::LinkPending(_) => "link_pending",
            NodeError::Storage(_) => "storage",
        }
    }
}

pub fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(e.to_string())
}
