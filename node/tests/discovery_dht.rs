//! Discovery over the Mainline DHT, without the internet: the DHT is a UDP socket or a small
//! DHT of our own on 127.0.0.1, named by the bootstrap list.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use causeway::{Discovery, endpoint::DiscoveryOptions};
use common::{DEADLINE, Harness};
use iroh::{EndpointAddr, SecretKey, address_lookup::AddressLookup};
use n0_future::StreamExt;

const ALPN: &[u8] = b"causeway-test/dht/1";
/// Size of a receive buffer for one DHT datagram.
const DATAGRAM: usize = 2048;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn dht(mode: Discovery, bootstrap: &[String]) -> DiscoveryOptions {
    DiscoveryOptions {
        mode,
        dht_bootstrap: Some(bootstrap.to_vec()),
    }
}

/// A UDP socket standing in for a DHT bootstrap node: it only records what arrives.
fn fake_bootstrap() -> (UdpSocket, String) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind fake bootstrap");
    socket.set_nonblocking(true).expect("nonblocking");
    let addr = socket.local_addr().expect("addr").to_string();
    (socket, addr)
}

/// The next datagram on `socket`, polled until `DEADLINE`.
async fn next_datagram(socket: &UdpSocket) -> Vec<u8> {
    let start = Instant::now();
    let mut buf = [0u8; DATAGRAM];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => return buf[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("fake bootstrap: {e}"),
        }
        assert!(start.elapsed() < DEADLINE, "no DHT packet reached the bootstrap node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A KRPC query (bencoded dictionary with `y` = `q`), as a DHT client sends to bootstrap.
fn is_krpc_query(packet: &[u8]) -> bool {
    packet.first() == Some(&b'd') && packet.windows(6).any(|w| w == b"1:y1:q")
}

#[tokio::test]
async fn a_dht_endpoint_installs_the_lookup_and_contacts_the_configured_bootstrap() {
    let (socket, addr) = fake_bootstrap();
    let ep = causeway::endpoint::bind(SecretKey::generate(), loopback(), dht(Discovery::Dht, &[addr]), vec![])
        .await
        .expect("a dht endpoint starts");
    assert_eq!(ep.address_lookup().expect("open").len(), 1, "the DHT lookup alone");
    let packet = next_datagram(&socket).await;
    assert!(is_krpc_query(&packet), "{:?}", String::from_utf8_lossy(&packet));
    ep.close().await;
}

#[tokio::test]
async fn a_static_endpoint_has_no_lookup_and_sends_nothing_to_a_dht() {
    let (static_socket, static_addr) = fake_bootstrap();
    let (dht_socket, dht_addr) = fake_bootstrap();
    // A bootstrap list left in the config of a static node changes nothing.
    let quiet = causeway::endpoint::bind(
        SecretKey::generate(),
        loopback(),
        dht(Discovery::Static, &[static_addr]),
        vec![],
    )
    .await
    .expect("static endpoint");
    assert!(quiet.address_lookup().expect("open").is_empty());
    // A DHT node started after it reaches its bootstrap node: by then the static one would
    // have too, had it a DHT client.
    let _loud = causeway::endpoint::bind(
        SecretKey::generate(),
        loopback(),
        dht(Discovery::Dht, &[dht_addr]),
        vec![],
    )
    .await
    .expect("dht endpoint");
    next_datagram(&dht_socket).await;
    let mut buf = [0u8; DATAGRAM];
    assert!(
        static_socket.recv_from(&mut buf).is_err(),
        "a static node sent DHT traffic"
    );
}

/// The whole path on a DHT of three nodes on loopback: A publishes its direct address,
/// signed by its endpoint key; the record is found under A's endpoint ID; B dials A by
/// endpoint ID alone and reaches it.
#[tokio::test]
async fn a_peer_is_found_and_dialled_by_endpoint_id_through_a_local_dht() {
    let testnet = n0_mainline::Testnet::new(3).await.expect("local DHT");
    let options = dht(Discovery::Dht, &testnet.bootstrap);
    let a = causeway::endpoint::bind(SecretKey::generate(), loopback(), options.clone(), vec![ALPN.to_vec()])
        .await
        .expect("endpoint A");
    let a_addr = causeway::endpoint::advertised_addrs(&a)[0];
    let accept = tokio::spawn({
        let a = a.clone();
        async move {
            let conn = a.accept().await.expect("incoming").await.expect("handshake");
            conn.remote_id()
        }
    });

    // A resolver of our own (no key, publishes nothing) reads A's record from the DHT.
    let mut builder = n0_mainline::DhtBuilder::default();
    builder.bootstrap(&testnet.bootstrap);
    let reader = iroh_mainline_address_lookup::DhtAddressLookup::builder()
        .dht_builder(builder)
        .no_publish()
        .build()
        .expect("resolver");
    let start = Instant::now();
    let published = loop {
        let found: Vec<_> = reader
            .resolve(a.id())
            .expect("stream")
            .filter_map(Result::ok)
            .collect()
            .await;
        if let Some(item) = found.into_iter().find(|i| i.endpoint_id() == a.id()) {
            break item.to_endpoint_addr();
        }
        assert!(start.elapsed() < DEADLINE, "A's record never appeared in the DHT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        published.ip_addrs().any(|ip| *ip == a_addr),
        "A publishes its direct address {a_addr}: {published:?}"
    );

    let b = causeway::endpoint::bind(SecretKey::generate(), loopback(), options, vec![])
        .await
        .expect("endpoint B");
    let start = Instant::now();
    let conn = loop {
        match b.connect(EndpointAddr::new(a.id()), ALPN).await {
            Ok(conn) => break conn,
            Err(e) => assert!(start.elapsed() < DEADLINE, "B never reached A by its ID: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(conn.remote_id(), a.id());
    assert_eq!(accept.await.expect("accept task"), b.id());
}

#[test]
fn the_cli_accepts_every_discovery_mode() {
    use clap::Parser;
    for (arg, mode) in [
        ("static", Discovery::Static),
        ("n0", Discovery::N0),
        ("dht", Discovery::Dht),
        ("n0+dht", Discovery::N0Dht),
        ("dht+n0", Discovery::N0Dht),
    ] {
        let cli = causeway::cli::Cli::try_parse_from(["causeway", "init", "--discovery", arg]).expect(arg);
        let causeway::cli::Command::Init { discovery, .. } = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(Discovery::from(discovery), mode, "{arg}");
    }
}

/// The real binary: `init --discovery dht`, then `run` with the bootstrap list on loopback.
#[test]
fn init_with_dht_discovery_then_run_starts_a_node_that_contacts_its_bootstrap() {
    let h = Harness::new();
    let mut node = h.init_with_discovery("alpha", "dht");
    let (socket, addr) = fake_bootstrap();
    node.edit_config(|c| {
        assert_eq!(c.discovery, Discovery::Dht, "init writes the mode it was given");
        c.dht_bootstrap = Some(vec![addr]);
    });
    node.start();
    let id = node.json(&["id"]);
    assert!(id["endpoint_id"].is_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let packet = rt.block_on(next_datagram(&socket));
    assert!(is_krpc_query(&packet));
    assert!(!node.log().contains("dht_bootstrap is ignored"));
}

/// Two daemons on a DHT of three nodes on loopback: `link add` names the peer by endpoint ID
/// only, with no address, and the link becomes active through the DHT.
#[test]
fn two_daemons_link_by_endpoint_id_alone_through_a_local_dht() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let testnet = rt.block_on(n0_mainline::Testnet::new(3)).expect("local DHT");
    let h = Harness::new();
    let mut nodes: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let mut node = h.init_with_discovery(name, "dht");
            node.edit_config(|c| c.dht_bootstrap = Some(testnet.bootstrap.clone()));
            node.start();
            node
        })
        .collect();
    let beta = nodes.pop().expect("beta");
    let alpha = nodes.pop().expect("alpha");
    let out = alpha.cli(&["link", "add", &beta.endpoint_id(), "--name", "beta"]);
    assert!(out.status.success(), "link add: {}", common::stderr(&out));
    common::wait_pinned(&alpha, "beta");
    drop(testnet);
}
