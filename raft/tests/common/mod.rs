//! Helpers the in-process cluster tests share: an endpoint that never tries the internet and a
//! resource command to write.

use std::net::SocketAddr;

use causeway_catalog::Command;
use iroh::{Endpoint, SecretKey, endpoint::presets};

/// An endpoint on 127.0.0.1 with no relay and no address lookup.
pub async fn endpoint(secret: SecretKey) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind addr")
        .secret_key(secret)
        .bind()
        .await
        .expect("bind endpoint")
}

pub fn register(name: String) -> Command {
    Command::RegisterResource {
        name,
        kind: "artifact".into(),
        owner: "test".into(),
        path: None,
        metadata: Default::default(),
        registered_at_ms: 1,
    }
}
