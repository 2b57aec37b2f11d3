//! Two single-node clusters on loopback that link to each other, for the benches that move
//! content between clusters: at `a` the link to `b` is named [`TO_B`], at `b` the link to `a`
//! is named [`TO_A`].

use std::{path::Path, time::Duration};

use anyhow::{Result, anyhow};
use causeway::{Node, NodeError, endpoint::EndpointError, federation::health::LinkState};

use super::cluster::LocalCluster;
use super::common::poll_until;

/// The name `a` gives its link to `b`, and the other way round.
pub const TO_B: &str = "b";
pub const TO_A: &str = "a";
/// Attempts at forming one cluster (see [`start_cluster`]).
const FORM_ATTEMPTS: usize = 3;
/// How long the links may take to become active (handshake, first heartbeats).
const LINK_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

pub struct Pair {
    clusters: Vec<LocalCluster>,
    pub a: Node,
    pub b: Node,
}

impl Pair {
    /// Forms both clusters (data dirs `root/<label>-a-0`, `root/<label>-b-0`) and links them.
    pub async fn start(root: &Path, label: &str) -> Result<Self> {
        let mut clusters = Vec::new();
        let mut nodes = Vec::new();
        for side in ["a", "b"] {
            match start_cluster(root, &format!("{label}-{side}")).await {
                Ok(c) => {
                    nodes.push(c.leader()?.clone());
                    clusters.push(c);
                }
                Err(e) => {
                    for mut c in clusters {
                        c.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let b = nodes.pop().ok_or_else(|| anyhow!("no node b"))?;
        let a = nodes.pop().ok_or_else(|| anyhow!("no node a"))?;
        let pair = Pair { clusters, a, b };
        match pair.link().await {
            Ok(()) => Ok(pair),
            Err(e) => {
                pair.shutdown().await;
                Err(e)
            }
        }
    }

    async fn link(&self) -> Result<()> {
        self.a
            .link_add(self.b.endpoint_id(), self.b.addrs(), Some(TO_B.into()))
            .await?;
        self.b
            .link_add(self.a.endpoint_id(), self.a.addrs(), Some(TO_A.into()))
            .await?;
        for (node, link) in [(&self.a, TO_B), (&self.b, TO_A)] {
            poll_until(
                &format!("link {link:?} to become active"),
                POLL,
                LINK_DEADLINE,
                || async move {
                    let links = node.link_list().await.ok()?;
                    links
                        .iter()
                        .any(|l| {
                            l.name == link
                                && l.direction == "outbound"
                                && l.state == LinkState::Active
                                && l.peer.is_some()
                        })
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    pub async fn shutdown(self) {
        for mut c in self.clusters {
            c.shutdown().await;
        }
    }
}

/// Forms a single-node cluster named `name`. Two races of forming one in a busy process can
/// leave a data dir that cannot start, and then a new one is formed (see [`FormAgain`]).
pub(super) async fn start_cluster(root: &Path, name: &str) -> Result<LocalCluster> {
    let mut attempt = 1;
    loop {
        let label = if attempt == 1 {
            name.to_string()
        } else {
            format!("{name}-{attempt}")
        };
        match LocalCluster::start(root, &label, 1).await {
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

/// Why a cluster that failed to form is worth forming again in a new data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormAgain {
    /// `init` returned while its Raft store still held the database (its writer thread lets go
    /// a moment later), and starting the node failed to lock the file.
    DatabaseHeld,
    /// The port `init` picked and recorded was taken by another socket before the node bound
    /// it, and stayed taken (another test's endpoint may hold it for its whole run).
    PortTaken,
}

impl FormAgain {
    fn after(e: &anyhow::Error) -> Option<Self> {
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
            FormAgain::DatabaseHeld => "the database was still held after init",
            FormAgain::PortTaken => "the port recorded at init was taken before the node bound it",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

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
