//! Messages on `causeway/join/1`: a new node presents its invite, the cluster answers with who
//! it is or why it refuses. One request and one response per connection.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::ClusterId;
use crate::ticket::TicketMember;

/// Largest join message in either direction.
pub const MAX_JOIN_FRAME: usize = 16 * 1024;
/// Most addresses a joining node may announce.
pub const MAX_JOIN_ADDRS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub invite_id: [u8; 16],
    pub secret: [u8; 32],
    /// Where the new node listens; its endpoint ID is the connection's verified remote ID.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    Accepted {
        cluster_id: ClusterId,
        cluster_name: String,
        members: Vec<TicketMember>,
    },
    Refused(String),
}
