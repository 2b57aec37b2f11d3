//! The Mainline DHT address lookup (`discovery = "dht"` / `"n0+dht"`): its bootstrap nodes and
//! what it publishes, a pkarr record of the node's addresses signed by its endpoint key.

use iroh::{SecretKey, address_lookup::AddrFilter};
use iroh_mainline_address_lookup::DhtAddressLookup;

/// Builds the lookup for the endpoint whose key is `secret`. It publishes every address the
/// endpoint has: the crate's default filter publishes relay URLs only, and without relays
/// (`dht` alone) that would publish nothing; a node reached over the DHT is reached at its
/// direct addresses.
pub(super) async fn lookup(secret: SecretKey, bootstrap: Option<Vec<String>>) -> Result<DhtAddressLookup, String> {
    // The DHT client resolves its bootstrap host names while it is built, with the blocking
    // system resolver: keep that off the async workers. It binds its own UDP socket (IPv4,
    // port 6881 when free, else any) and must be built inside the runtime, which the
    // blocking pool's threads are.
    match &bootstrap {
        Some(nodes) => tracing::info!(?nodes, "Mainline DHT discovery on; publishing this node's addresses"),
        None => tracing::info!(
            "Mainline DHT discovery on, default public bootstrap nodes; publishing this node's addresses"
        ),
    }
    tokio::task::spawn_blocking(move || {
        let mut dht = n0_mainline::DhtBuilder::default();
        dht.server_settings(client_only_settings());
        if let Some(nodes) = &bootstrap {
            dht.bootstrap(nodes);
        }
        DhtAddressLookup::builder()
            .secret_key(secret)
            .dht_builder(dht)
            .addr_filter(AddrFilter::unfiltered())
            .build()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("DHT client setup stopped: {e}"))?
}

/// The DHT client's server side, should it ever switch to it (the library turns adaptive nodes
/// into servers once their address looks publicly reachable, which a peer's answers can make it
/// believe): refuse every request and store nothing. A node needs the DHT only as a client, and
/// serving it would let strangers fill its memory and use it as a reflector.
fn client_only_settings() -> n0_mainline::ServerSettings {
    n0_mainline::ServerSettings {
        max_info_hashes: 1,
        max_peers_per_info_hash: 1,
        max_immutable_values: 1,
        max_mutable_values: 1,
        filter: Box::new(RefuseAll),
    }
}

/// Answers no DHT request.
#[derive(Clone, Debug)]
struct RefuseAll;

impl n0_mainline::RequestFilter for RefuseAll {
    fn allow_request(&self, _request: &n0_mainline::RequestSpecific, _from: std::net::SocketAddrV4) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_side_stores_next_to_nothing() {
        let s = client_only_settings();
        assert_eq!(
            (
                s.max_info_hashes,
                s.max_peers_per_info_hash,
                s.max_immutable_values,
                s.max_mutable_values
            ),
            (1, 1, 1, 1)
        );
    }
}
