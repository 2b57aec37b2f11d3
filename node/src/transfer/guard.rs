//! Bounds on transfers a peer starts or keeps running here: pushed pulls (per-peer caps on
//! mirrors, bytes, concurrency and duration) and the stop of any transfer whose grounds went
//! away meanwhile (the link removed, pushes turned off, a write-back's share revoked).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use causeway_catalog::Resource;
use causeway_proto::ClusterId;
use iroh_blobs::HashAndFormat;

use super::Mirroring;
use crate::content::store::parse_root;
use crate::error::NodeError;

/// Pushed pulls of one peer running at once on the member that took the offers.
pub const MAX_PUSHED_PULLS_PER_PEER: usize = 4;
/// Longest a pushed pull may run (dial, transfer, apply, record), wherever it waits.
pub const PUSHED_PULL_DEADLINE: Duration = Duration::from_secs(300);
/// Largest write-back bundle a peer may make this cluster fetch.
pub const MAX_WRITE_BACK_BYTES: u64 = 1 << 30;
/// Write-backs of one peer being fetched and applied at once on one member.
pub const MAX_WRITE_BACKS_PER_PEER: usize = 4;
/// How often a running transfer checks that its grounds still hold.
const RECHECK: Duration = Duration::from_millis(100);

/// Transfers of one kind running per peer on this member (pushed pulls, write-backs), at most
/// `max` each.
pub struct PushSlots {
    running: Mutex<HashMap<ClusterId, usize>>,
    max: usize,
}

/// One pushed pull's place; freed when dropped.
pub struct PushSlot {
    slots: Arc<PushSlots>,
    peer: ClusterId,
}

impl PushSlots {
    pub fn new(max: usize) -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// A place for one more transfer of `peer`, if it has fewer than the most running.
    pub fn take(self: &Arc<Self>, peer: ClusterId) -> Option<PushSlot> {
        let mut map = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PushSlot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for PushSlot {
    fn drop(&mut self) {
        let mut map = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// What a pull checks while it runs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PullGuard {
    /// Started by the peer's push offer: stops when the link stops taking pushes.
    pub pushed: bool,
    /// Most bytes the pull may fetch.
    pub max_bytes: Option<u64>,
}

/// What a peer's mirrors here hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerUsage {
    pub mirrors: u64,
    pub bytes: u64,
}

/// Runs `work` until `stop` yields a reason, then drops it (a fetch in progress ends with it).
pub(crate) async fn stop_when<T>(
    stop: impl Future<Output = String>,
    work: impl Future<Output = Result<T, NodeError>>,
) -> Result<T, NodeError> {
    tokio::select! {
        r = work => r,
        reason = stop => Err(NodeError::Refused(reason)),
    }
}

impl Mirroring {
    /// Mirrors of `origin` here and the bytes of their content on this node, leaving out `except`
    /// (the mirror a new version replaces).
    pub async fn peer_usage(&self, origin: ClusterId, except: Option<&str>) -> Result<PeerUsage, NodeError> {
        let mut usage = PeerUsage::default();
        let mut roots: Vec<HashAndFormat> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page: Vec<Resource> = self.fed.read(|t| {
                causeway_catalog::mirror_index::list_mirrors(t, after.as_deref(), causeway_catalog::state::MAX_PAGE)
            })?;
            let done = page.len() < causeway_catalog::state::MAX_PAGE;
            after = page.last().map(|m| m.name.clone());
            for m in page.into_iter().filter(|m| m.mirror_of == Some(origin)) {
                usage.mirrors += 1;
                if Some(m.name.as_str()) != except
                    && let Some(root) = m.content.as_deref().and_then(|c| parse_root(c).ok())
                {
                    roots.push(root);
                }
            }
            if done {
                break;
            }
        }
        for root in roots {
            usage.bytes = usage.bytes.saturating_add(self.content.local_bytes(root).await);
        }
        Ok(usage)
    }

    /// Whether one more pushed version of `name` from `origin` fits the config caps; the
    /// bytes left for it if so, the reason (for the peer) if not.
    pub async fn push_budget(&self, origin: ClusterId, name: &str) -> Result<Result<u64, String>, NodeError> {
        let cfg = self.fed.config();
        let existing = self.local_resource(name)?;
        let known = existing.as_ref().is_some_and(|r| r.mirror_of == Some(origin));
        let usage = self.peer_usage(origin, Some(name)).await?;
        if !known && usage.mirrors >= cfg.max_pushed_resources_per_peer {
            return Ok(Err(format!(
                "this cluster keeps at most {} mirrors of your resources (federation.max_pushed_resources_per_peer)",
                cfg.max_pushed_resources_per_peer
            )));
        }
        if usage.bytes >= cfg.max_pushed_bytes_per_peer {
            return Ok(Err(format!(
                "your mirrors here hold {} bytes, the most this cluster keeps (federation.max_pushed_bytes_per_peer)",
                usage.bytes
            )));
        }
        Ok(Ok(cfg.max_pushed_bytes_per_peer - usage.bytes))
    }

    /// The leader's side of an accepted push offer: checks the caps again on its own state,
    /// then pulls within the bytes left, stopping at [`PUSHED_PULL_DEADLINE`].
    pub async fn pull_pushed(self: &Arc<Self>, name: &str, origin: ClusterId) -> Result<Resource, NodeError> {
        let budget = self.push_budget(origin, name).await?.map_err(NodeError::Refused)?;
        let guard = PullGuard {
            pushed: true,
            max_bytes: Some(budget),
        };
        match tokio::time::timeout(
            PUSHED_PULL_DEADLINE,
            self.pull_guarded(name, &origin.to_string(), guard),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(NodeError::Refused(format!(
                "pushed transfer of {name:?} took longer than {} s",
                PUSHED_PULL_DEADLINE.as_secs()
            ))),
        }
    }

    /// Resolves with the reason once the pull of `name` from `origin` must stop: the link is
    /// gone, it no longer takes pushes (for a pushed pull), or the pull went past its bytes.
    pub(crate) async fn pull_stopped(&self, name: &str, origin: ClusterId, guard: PullGuard) -> String {
        let label = origin.to_string();
        loop {
            tokio::time::sleep(RECHECK).await;
            if self.committing.lock().unwrap_or_else(|e| e.into_inner()).contains(name) {
                continue;
            }
            let link = self
                .fed
                .links()
                .ok()
                .and_then(|ls| ls.into_iter().find(|l| !l.is_removed() && l.pinned == Some(origin)));
            match link {
                None => return format!("transfer of {name:?} stopped: the link to its origin was removed"),
                Some(l) if guard.pushed && !l.accept_pushes => {
                    return format!(
                        "pushed transfer of {name:?} stopped: link {:?} no longer accepts pushes",
                        l.name
                    );
                }
                Some(_) => {}
            }
            if let Some(max) = guard.max_bytes {
                let done = self.transfer_bytes(name, &label);
                if done > max {
                    return format!(
                        "pushed transfer of {name:?} stopped after {done} bytes: beyond the peer's cap \
                         (federation.max_pushed_bytes_per_peer)"
                    );
                }
            }
        }
    }

    /// Once the content is here, before it is written out and recorded: checks its bytes (a
    /// transfer faster than [`RECHECK`] is not seen going past them while it runs), then marks
    /// the pull as committing, so that a stop no longer cuts a mirror's write midway.
    pub(crate) async fn fetched(&self, name: &str, root: HashAndFormat, guard: PullGuard) -> Result<(), NodeError> {
        let Some(max) = guard.max_bytes else {
            self.committing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string());
            return Ok(());
        };
        let bytes = self.content.local_bytes(root).await;
        if bytes > max {
            return Err(NodeError::Refused(format!(
                "pushed version of {name:?} has {bytes} bytes, beyond the {max} left under the peer's cap \
                 (federation.max_pushed_bytes_per_peer); not recorded"
            )));
        }
        self.committing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Ok(())
    }

    fn transfer_bytes(&self, name: &str, peer: &str) -> u64 {
        let map = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), peer.to_string(), "pull");
        map.get(&key)
            .map(|t| t.status(crate::node::now_ms(), &self.status_cfg).bytes_done)
            .unwrap_or(0)
    }

    /// Resolves with the reason once a write-back from `from` into `name` must stop: policy no
    /// longer grants it (the share was revoked or the link removed), or the bundle being
    /// fetched went past [`MAX_WRITE_BACK_BYTES`].
    pub(crate) async fn write_back_stopped(&self, from: ClusterId, name: &str, bundle: HashAndFormat) -> String {
        loop {
            tokio::time::sleep(RECHECK).await;
            let relation = self.fed.relation(from);
            let resource = self.local_resource(name).ok().flatten();
            let rules = resource.as_ref().map(|r| r.shares.as_slice());
            if let causeway_policy::Decision::Deny(reason) =
                causeway_policy::decide(&relation, rules, causeway_policy::Action::WriteBack)
            {
                tracing::info!(resource = name, peer = %from, %reason, "write-back stopped: no longer granted");
                return reason.peer_visible().to_string();
            }
            if self.content.local_bytes(bundle).await > MAX_WRITE_BACK_BYTES {
                return format!("write-back bundle is larger than {MAX_WRITE_BACK_BYTES} bytes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_peer_and_freed_when_dropped() {
        let slots = Arc::new(PushSlots::new(2));
        let (a, b) = (ClusterId([1; 32]), ClusterId([2; 32]));
        let first = slots.take(a).expect("first");
        let _second = slots.take(a).expect("second");
        assert!(slots.take(a).is_none(), "a third of the same peer waits");
        assert!(slots.take(b).is_some(), "another peer has its own");
        drop(first);
        assert!(slots.take(a).is_some());
    }
}
