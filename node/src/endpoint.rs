//! Builds the node's iroh endpoint for the configured discovery mode.

use std::net::SocketAddr;

use iroh::{
    Endpoint, SecretKey,
    endpoint::{PortmapperConfig, presets},
};

use crate::config::Discovery;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "mainline DHT discovery is not available in this build (iroh 1.x ships no DHT lookup); use discovery = \"static\" or \"n0\""
    )]
    DhtUnavailable,
    #[error("invalid bind address {0}: {1}")]
    BadBind(SocketAddr, String),
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, String),
}

/// Binds an endpoint on exactly `bind`. `Static` disables relays, address lookup and port
/// mapping, so the node only ever dials addresses it was given.
pub async fn bind(
    secret: SecretKey,
    bind: SocketAddr,
    discovery: Discovery,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    // A socket closed a moment ago (a restart in the same process) can take a few tens of
    // milliseconds to be released: retry a busy address briefly before reporting it.
    let deadline = std::time::Instant::now() + BIND_RETRY_FOR;
    loop {
        match bind_once(secret.clone(), bind, discovery, alpns.clone()).await {
            Err(EndpointError::Bind(..)) if bind.port() != 0 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// How long a busy bind address is retried.
const BIND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(2);

async fn bind_once(
    secret: SecretKey,
    bind: SocketAddr,
    discovery: Discovery,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    let builder = match discovery {
        Discovery::Static => Endpoint::builder(presets::Minimal).portmapper_config(PortmapperConfig::Disabled),
        Discovery::N0 => Endpoint::builder(presets::N0),
        Discovery::Dht => return Err(EndpointError::DhtUnavailable),
    };
    builder
        .clear_ip_transports()
        .bind_addr(bind)
        .map_err(|e| EndpointError::BadBind(bind, e.to_string()))?
        .secret_key(secret)
        .alpns(alpns)
        .bind()
        .await
        .map_err(|e| EndpointError::Bind(bind, e.to_string()))
}

/// The addresses to advertise to other members: the bound socket, or, for a wildcard bind,
/// the interface addresses iroh found.
pub fn advertised_addrs(endpoint: &Endpoint) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = endpoint
        .bound_sockets()
        .into_iter()
        .filter(|a| !a.ip().is_unspecified())
        .collect();
    if addrs.is_empty() {
        addrs = endpoint.addr().ip_addrs().copied().collect();
    }
    addrs.sort();
    addrs.dedup();
    addrs
}
