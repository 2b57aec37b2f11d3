//! Builds the node's iroh endpoint for the configured discovery mode.

mod dht;

use std::net::SocketAddr;

use iroh::{
    Endpoint, SecretKey,
    endpoint::{PortmapperConfig, presets},
};

use crate::config::Discovery;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid bind address {0}: {1}")]
    BadBind(SocketAddr, String),
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("cannot start the Mainline DHT client: {0}")]
    Dht(String),
}

/// What the endpoint needs to know about discovery: the mode, and for the DHT its bootstrap
/// nodes (`None`: the DHT client's default public ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOptions {
    pub mode: Discovery,
    pub dht_bootstrap: Option<Vec<String>>,
}

impl From<Discovery> for DiscoveryOptions {
    fn from(mode: Discovery) -> Self {
        Self {
            mode,
            dht_bootstrap: None,
        }
    }
}

/// Binds an endpoint on exactly `bind`. Without `n0`, relays and port mapping are off, so
/// the node is reached only at its bound addresses; `Static` also has no address lookup,
/// so it only ever dials addresses it was given.
pub async fn bind(
    secret: SecretKey,
    bind: SocketAddr,
    discovery: impl Into<DiscoveryOptions>,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    let discovery = discovery.into();
    // A socket closed a moment ago (a restart in the same process) can take a few tens of
    // milliseconds to be released: retry a busy address briefly before reporting it.
    let deadline = std::time::Instant::now() + BIND_RETRY_FOR;
    loop {
        match bind_once(secret.clone(), bind, &discovery, alpns.clone()).await {
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
    discovery: &DiscoveryOptions,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    let mut builder = if discovery.mode.uses_n0() {
        Endpoint::builder(presets::N0)
    } else {
        // Port mapping would probe the local gateway; without relays nothing else leaves
        // the host but what the node dials (and, with `dht`, its DHT traffic).
        Endpoint::builder(presets::Minimal).portmapper_config(PortmapperConfig::Disabled)
    };
    if discovery.mode.uses_dht() {
        let lookup = dht::lookup(secret.clone(), discovery.dht_bootstrap.clone())
            .await
            .map_err(EndpointError::Dht)?;
        builder = builder.address_lookup(lookup);
    }
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
