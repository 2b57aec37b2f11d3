//! Throwaway Causeway clusters for the bench: nodes created with `init` and `join` in a scratch
//! directory, run in-process on loopback with static discovery, and stopped again.

use std::{
    future::Future,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use causeway::{Config, Discovery, Node, NodeError, endpoint::EndpointError, join::join_cluster};
use causeway_proto::InviteTicket;
use causeway_raft::{ClusterStatus, Role};

/// Attempts at forming one cluster (see [`LocalCluster::start`]).
const FORM_ATTEMPTS: usize = 3;
/// How long forming the cluster (election, join, promotion) may take before the bench gives up.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// Attempts at binding a port that was free a moment ago.
const BIND_ATTEMPTS: usize = 5;
/// How long a node's recorded port may stay busy after init or join released it.
const REBIND_DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Started nodes of one cluster. Stop it with [`LocalCluster::shutdown`]; dropping it leaves
/// the nodes' tasks running until the runtime ends.
pub struct LocalCluster {
    nodes: Vec<Node>,
}

impl LocalCluster {
    /// Forms a cluster of `size` voters whose data dirs are `root/<name>-<i>`. Two races of
    /// forming one in a busy process can leave data dirs that cannot start; the cluster is then
    /// formed again as `<name>-<attempt>` (see [`FormAgain`]).
    pub async fn start(root: &Path, name: &str, size: usize) -> Result<Self> {
        let mut attempt = 1;
        loop {
            let label = if attempt == 1 {
                name.to_string()
            } else {
                format!("{name}-{attempt}")
            };
            match Self::form(root, &label, size).await {
                Err(e)
                    if attempt < FORM_ATTEMPTS
                        && let Some(why) = FormAgain::after(&e) =>
                {
                    eprintln!("{label}: {why}; forming the cluster again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One attempt at [`Self::start`]; stops whatever it started if it fails.
    async fn form(root: &Path, name: &str, size: usize) -> Result<Self> {
        let mut cluster = LocalCluster { nodes: Vec::new() };
        match cluster.grow(root, name, size).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.shutdown().await;
                Err(e)
            }
        }
    }

    async fn grow(&mut self, root: &Path, name: &str, size: usize) -> Result<()> {
        let first = root.join(format!("{name}-0"));
        on_free_port(|bind| causeway::init::init(&first, Some(name.to_string()), bind, Discovery::Static))
            .await
            .with_context(|| format!("init {}", first.display()))?;
        self.nodes.push(start_node(&first).await?);
        self.wait_until("the first node leads", |s| s.leader.is_some()).await?;
        for i in 1..size {
            let invite = self.leader()?.invite(Duration::from_secs(600)).await?;
            let ticket: InviteTicket = invite.ticket.parse().map_err(|e| anyhow!("invite ticket: {e}"))?;
            let dir = root.join(format!("{name}-{i}"));
            on_free_port(|bind| join_cluster(&dir, &ticket, bind, Discovery::Static))
                .await
                .with_context(|| format!("join {}", dir.display()))?;
            self.nodes.push(start_node(&dir).await?);
            let want = i + 1;
            self.wait_until(&format!("{want} reachable voters"), |s| {
                s.members.len() == want && s.members.iter().all(|m| m.role == Role::Voter && m.reachable)
            })
            .await?;
        }
        Ok(())
    }

    /// The node that currently leads, as the nodes themselves report it.
    pub fn leader(&self) -> Result<&Node> {
        let id = self
            .nodes
            .iter()
            .find_map(|n| n.cluster().local_status().leader)
            .ok_or_else(|| anyhow!("the cluster has no leader"))?;
        self.nodes
            .iter()
            .find(|n| n.endpoint_id() == id)
            .ok_or_else(|| anyhow!("the leader {id} is not one of the bench's nodes"))
    }

    /// Polls the leader's own view (only the leader knows reachability) until `done` holds.
    async fn wait_until(&self, what: &str, done: impl Fn(&ClusterStatus) -> bool) -> Result<()> {
        let deadline = Instant::now() + SETUP_DEADLINE;
        loop {
            let status = self.leader().ok().map(|l| l.cluster().local_status());
            if status.as_ref().is_some_and(&done) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("waited {SETUP_DEADLINE:?} for {what}; last status: {status:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn shutdown(&mut self) {
        // Followers first, so they do not start elections while the leader goes away.
        let mut nodes = std::mem::take(&mut self.nodes);
        nodes.sort_by_key(|n| n.cluster().local_status().leader == Some(n.endpoint_id()));
        for node in nodes {
            node.shutdown().await;
        }
    }
}

async fn start_node(dir: &Path) -> Result<Node> {
    let config = Config::load(&dir.join("config.toml")).map_err(anyhow::Error::msg)?;
    // The endpoint `join` used on this port may release its socket a moment after it returned,
    // and the port cannot change now that the cluster has recorded it.
    let deadline = Instant::now() + REBIND_DEADLINE;
    loop {
        match Node::start(dir, config.clone()).await {
            Err(NodeError::Endpoint(_)) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            result => return result.with_context(|| format!("start node {}", dir.display())),
        }
    }
}

/// The bind port ends up in the cluster membership, so a port the OS picks at bind time (`:0`)
/// cannot be used: this asks the OS for a free port, releases it and hands it to `f`, retrying
/// with another port if someone took it in between.
async fn on_free_port<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, NodeError>>,
{
    let mut attempt = 1;
    loop {
        let port = UdpSocket::bind(("127.0.0.1", 0))?.local_addr()?.port();
        match f(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(v) => return Ok(v),
            Err(NodeError::Endpoint(_)) if attempt < BIND_ATTEMPTS => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why a cluster that failed to form is worth forming again in a new data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormAgain {
    /// `init` or `join` returned while its Raft store still held the database (its writer
    /// thread lets go a moment later), and starting the node failed to lock the file.
    DatabaseHeld,
    /// The port `init` or `join` picked and recorded was taken by another socket before the
    /// node bound it, and stayed taken (another test's endpoint may hold it for its whole run).
    PortTaken,
}

impl FormAgain {
    fn after(e: &anyhow::Error) -> Option<Self> {
        // `NodeError::Endpoint` is transparent: it does not name its `EndpointError` as a
        // source, so the chain holds one or the other, never both.
        let port_taken = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<NodeError>(),
                Some(NodeError::Endpoint(EndpointError::Bind(..)))
            ) || matches!(c.downcast_ref::<EndpointError>(), Some(EndpointError::Bind(..)))
        });
        if port_taken {
            Some(FormAgain::PortTaken)
        } else if format!("{e:#}").contains("Database already open") {
            Some(FormAgain::DatabaseHeld)
        } else {
            None
        }
    }
}

impl std::fmt::Display for FormAgain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FormAgain::DatabaseHeld => "the database was still held after init or join",
            FormAgain::PortTaken => "the port recorded at init or join was taken before the node bound it",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_races_of_forming_are_worth_forming_again() {
        let taken = NodeError::Endpoint(EndpointError::Bind(
            "127.0.0.1:40000".parse().unwrap(),
            "Address already in use".into(),
        ));
        let started = Err::<(), _>(taken).context("start node /tmp/c0-0").unwrap_err();
        assert_eq!(FormAgain::after(&started), Some(FormAgain::PortTaken));

        let held = anyhow!("Database already open. Cannot acquire lock.").context("start node /tmp/c0-0");
        assert_eq!(FormAgain::after(&held), Some(FormAgain::DatabaseHeld));

        let bad_bind = NodeError::Endpoint(EndpointError::BadBind("127.0.0.1:0".parse().unwrap(), "port 0".into()));
        assert_eq!(FormAgain::after(&anyhow::Error::from(bad_bind)), None);
        assert_eq!(FormAgain::after(&anyhow!("waited 60s for the first node leads")), None);
    }
}
