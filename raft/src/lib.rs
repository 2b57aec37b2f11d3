//! Causeway's Raft layer: openraft types, the redb log and state machine, the Raft network over
//! iroh (`causeway/raft/1`), and the cluster handle the node uses for writes and reads.

mod admission;
pub mod append_frame;
mod append_stream;
pub mod cluster;
pub mod network;
mod proposer;
pub mod server;
pub mod status;
pub mod store;
pub mod types;
pub mod wire;

pub use admission::{LogLimit, Standing};
pub use cluster::{AppHandler, ClusterError, ClusterNode, RaftSettings};
pub use server::RaftService;
pub use status::{ClusterStatus, MemberStatus, Role};
pub use types::{LogCommand, MemberNode, TypeConfig};
