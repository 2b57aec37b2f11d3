//! The replicated state of one cluster: its identity, resources and invites, as redb tables,
//! and the commands that change them. Applying a command is deterministic, so every member that
//! applies the same log reaches the same tables.

pub mod command;
pub mod endpoint_index;
pub mod keys;
pub mod links;
pub mod mirror_index;
pub mod peer_views;
pub mod resources;
pub mod share_index;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod validate;
pub mod writer;

pub use command::{Command, CommandResult, Rejection, Resource};
pub use state::{CatalogError, CatalogSnapshot, ClusterIdentity, Invite, InviteState};
pub use writer::StateWriter;
