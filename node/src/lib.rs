//! The Causeway node: configuration, data directory, endpoint, daemon lifecycle, the local
//! control API, the CLI, and the public Rust API for subsystems (`Client` over the control
//! socket, or `Node` embedded in-process).

pub mod allocator;
pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod content;
pub mod control;
pub mod daemon;
pub mod datadir;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod federation;
pub mod init;
pub mod join;
pub mod join_guard;
pub mod node;
pub mod progress;
pub mod register;
pub mod sharing;
pub mod transfer;

pub use api::OnRegister;
pub use causeway_policy::ShareMode;
pub use client::{Client, ClientError};
pub use config::{Config, Discovery};
pub use error::NodeError;
pub use node::Node;
