//! `causeway init`: a new node that is the only voter of a new single-node cluster, with a
//! fresh node key and cluster key. Everything is built in a staging directory and moved into
//! place at the end, so a failed or interrupted init leaves no node behind.

use std::{net::SocketAddr, path::Path, time::Duration};

use causeway_catalog::{Command, CommandResult};
use causeway_proto::{
    ClusterId,
    card::{CardMember, ClusterCard, SignedCard},
};
use causeway_raft::{ClusterNode, MemberNode};
use openraft::ServerState;

use crate::api::IdInfo;
use crate::config::{Config, Discovery};
use crate::datadir::{self, NodeState};
use crate::endpoint;
use crate::error::NodeError;
use crate::node::endpoint_key;

/// How long a new single-node cluster may take to elect itself.
const INIT_ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn init(
    data_dir: &Path,
    name: Option<String>,
    bind: SocketAddr,
    discovery: Discovery,
) -> Result<IdInfo, NodeError> {
    if let Some(n) = &name {
        causeway_catalog::validate::cluster_name(n).map_err(NodeError::Invalid)?;
    }
    let staging = datadir::stage_new(data_dir)?;
    let result = build(&staging, data_dir, name, bind, discovery).await;
    match result {
        Ok(info) => {
            datadir::commit_staged(&staging, data_dir)?;
            Ok(info)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

async fn build(
    staging: &Path,
    data_dir: &Path,
    name: Option<String>,
    bind: SocketAddr,
    discovery: Discovery,
) -> Result<IdInfo, NodeError> {
    let key = iroh::SecretKey::generate();
    let cluster_key = iroh::SecretKey::generate();
    let cluster_id = ClusterId(*cluster_key.public().as_bytes());
    // Binding the real address now surfaces a bad or busy --bind at init, not at first run.
    // The DHT is left to `run`: this endpoint dials no one, and lives too briefly to
    // bootstrap into the DHT; `run` publishes with the key and addresses it has here.
    let ep = endpoint::bind(key.clone(), bind, discovery.without_dht(), vec![]).await?;
    let id = endpoint_key(&ep.id());
    let addrs = endpoint::advertised_addrs(&ep);
    let name = name.unwrap_or_else(|| format!("cluster-{}", &cluster_id.to_string()[..8]));
    let config = Config::new(bind, discovery);
    let cluster = ClusterNode::start(
        id,
        ep.clone(),
        &staging.join(datadir::DB_FILE),
        config.raft.clone(),
        Default::default(),
    )
    .await?;
    let outcome = async {
        cluster.initialize_single(MemberNode { addrs: addrs.clone() }).await?;
        cluster
            .raft()
            .wait(Some(INIT_ELECTION_TIMEOUT))
            .state(ServerState::Leader, "init")
            .await
            .map_err(|e| NodeError::Refused(format!("new cluster did not elect itself: {e}")))?;
        let r = cluster
            .write(Command::InitCluster {
                cluster_id,
                cluster_secret: cluster_key.to_bytes(),
                name: name.clone(),
            })
            .await?;
        if r != CommandResult::ClusterInitialized {
            return Err(NodeError::Refused(format!("cluster identity not recorded: {r:?}")));
        }
        // The first card, so peers can handshake from the daemon's first moment.
        let card = SignedCard::sign(
            ClusterCard {
                cluster_id,
                name: name.clone(),
                members: vec![CardMember {
                    endpoint: id,
                    addrs: addrs.clone(),
                }],
                epoch: 1,
                issued_at_ms: crate::node::now_ms(),
            },
            &cluster_key.to_bytes(),
        );
        let r = cluster.write(Command::SetOwnCard { card }).await?;
        if r != CommandResult::Applied {
            return Err(NodeError::Refused(format!("cluster card not recorded: {r:?}")));
        }
        Ok(())
    }
    .await;
    cluster.shutdown().await;
    drop(cluster);
    ep.close().await;
    outcome?;
    datadir::write_key(staging, &key)?;
    datadir::write_atomic(&staging.join(datadir::CONFIG_FILE), config.to_toml().as_bytes(), 0o600)?;
    datadir::write_state(
        staging,
        &NodeState {
            cluster_id,
            cluster_name: name.clone(),
            bootstrap_peers: Default::default(),
        },
    )?;
    tracing::info!(data_dir = %data_dir.display(), cluster = %cluster_id, "initialized node");
    Ok(IdInfo {
        endpoint_id: id.to_string(),
        cluster_id: cluster_id.to_string(),
        cluster_name: name,
        addrs: addrs.iter().map(ToString::to_string).collect(),
    })
}
