//! Two single-node clusters on loopback that link to each other, for the benches that move
//! content between clusters: at `a` the link to `b` is named [`TO_B`], at `b` the link to `a`
//! is named [`TO_A`].

use std::{path::Path, time::Duration};

use anyhow::{Result, anyhow};
use causeway::{Node, federation::health::LinkState};

use super::cluster::LocalCluster;
use super::common::poll_until;

/// The name `a` gives its link to `b`, and the other way round.
pub const TO_B: &str = "b";
pub const TO_A: &str = "a";
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
            match LocalCluster::start(root, &format!("{label}-{side}"), 1).await {
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
