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
