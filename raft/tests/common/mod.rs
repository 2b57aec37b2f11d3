//! Helpers the in-process cluster tests share: an endpoint that never tries the internet and a
//! resource command to write.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use causeway_catalog::Command;
use causeway_proto::EndpointKey;
use causeway_raft::{ClusterNode, MemberNode, RaftSettings};
use iroh::{Endpoint, SecretKey, endpoint::presets};
use openraft::ServerState;

/// How long a single-node cluster may take to elect itself.
const ELECTION_DEADLINE: Duration = Duration::from_secs(20);

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

/// A single-node cluster with its database under `dir`, once it leads.
#[allow(dead_code)] // not every test binary that shares this module starts one
pub async fn single_node_leader(dir: &Path) -> (ClusterNode, Endpoint) {
    let secret = SecretKey::generate();
    let id = EndpointKey(*secret.public().as_bytes());
    let ep = endpoint(secret).await;
    let cluster = ClusterNode::start(
        id,
        ep.clone(),
        &dir.join("raft.redb"),
        RaftSettings::default(),
        BTreeSet::new(),
    )
    .await
    .expect("start");
    cluster
        .initialize_single(MemberNode {
            addrs: ep.bound_sockets(),
        })
        .await
        .expect("initialize");
    wait_until_leader(&cluster).await;
    (cluster, ep)
}

/// Returns once `cluster` leads.
pub async fn wait_until_leader(cluster: &ClusterNode) {
    cluster
        .raft()
        .wait(Some(ELECTION_DEADLINE))
        .state(ServerState::Leader, "leads")
        .await
        .expect("elected");
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
