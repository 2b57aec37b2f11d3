//! The node's catalog and policy operations beyond registration: metadata, publishing,
//! removal, share rules, the share preview, a peer's catalog, and the change feed watchers use.

use std::{collections::BTreeMap, time::Duration};

use causeway_catalog::{Command, CommandResult, Rejection, resources::ChangeKind};
use causeway_policy::{Action, Audience, PeerRelation, ShareMode, ShareRule, decide, preview};
use causeway_proto::{ClusterId, EndpointKey};

use crate::api::{CatalogEntryView, ChangeView, ChangesView, PreviewView, ResourceView};
use crate::error::NodeError;
use crate::node::{Node, now_ms};

/// Longest a watcher's request waits for a change.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(30);
/// Most changes returned at once.
pub const MAX_CHANGES_BATCH: usize = 1000;

fn resource_result(r: CommandResult) -> Result<ResourceView, NodeError> {
    match r {
        CommandResult::Resource(r) | CommandResult::ResourceRegistered(r) => Ok(r.into()),
        CommandResult::Rejected(Rejection::NoSuchResource(n)) => {
            Err(NodeError::NotFound(format!("no resource named {n:?}")))
        }
        CommandResult::Rejected(r @ Rejection::NoSuchShare(_)) => Err(NodeError::NotFound(r.to_string())),
        CommandResult::Rejected(r) => Err(NodeError::Invalid(r.to_string())),
        other => Err(NodeError::Refused(format!("unexpected result {other:?}"))),
    }
}

fn kind_word(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Registered => "registered",
        ChangeKind::MetadataUpdated => "metadata_updated",
        ChangeKind::Published => "published",
        ChangeKind::Removed => "removed",
        ChangeKind::SharesChanged => "shares_changed",
    }
}

impl Node {
    pub async fn update_metadata(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<ResourceView, NodeError> {
        let cmd = Command::UpdateMetadata {
            name: name.into(),
            set,
            remove,
            now_ms: now_ms(),
        };
        resource_result(self.cluster().write(cmd).await?)
    }

    /// Records a new version of the resource (version + 1). Without an explicit content root,
    /// an artifact registered with `--path` imports the file's current content as the root.
    pub async fn publish(&self, name: &str, content: Option<String>) -> Result<ResourceView, NodeError> {
        let _one_at_a_time = self.publish_lock().await;
        self.cluster().read_barrier().await?;
        let current = self
            .federation()
            .read(|t| causeway_catalog::state::get_resource(t, name))?
            .ok_or_else(|| NodeError::NotFound(format!("no resource named {name:?}")))?;
        if let Some(origin) = current.mirror_of {
            return Err(NodeError::Refused(format!(
                "{name:?} is a mirror of cluster {origin}; its versions come from there"
            )));
        }
        let content = match (content, &current.path) {
            (Some(c), _) => Some(crate::content::store::parse_root(&c)?.to_string()),
            (None, Some(path)) if current.kind == "forge/repo" => {
                let previous = current
                    .content
                    .as_deref()
                    .map(crate::content::store::parse_root)
                    .transpose()?;
                match self
                    .content()
                    .publish_repo(std::path::Path::new(path), previous, &format!("res/{name}"))
                    .await?
                {
                    Some(root) => Some(root.to_string()),
                    // Nothing new since the last version (e.g. a hook fired twice): no new version.
                    None => return Ok(current.into()),
                }
            }
            (None, Some(path)) if current.kind != "forge/repo" => {
                let root = self
                    .content()
                    .import_file(std::path::Path::new(path), &format!("res/{name}"))
                    .await?;
                Some(root.to_string())
            }
            (None, _) => None,
        };
        let cmd = Command::PublishResource {
            name: name.into(),
            content: content.clone(),
            base_version: Some(current.version),
            now_ms: now_ms(),
        };
        match self.cluster().write(cmd).await? {
            // A forwarded write whose answer was lost is retried; if the first attempt
            // committed, the retry finds the version moved, and that version is ours.
            CommandResult::Rejected(Rejection::VersionMoved { .. }) => {
                self.cluster().read_barrier().await?;
                let now = self
                    .federation()
                    .read(|t| causeway_catalog::state::get_resource(t, name))?
                    .ok_or_else(|| NodeError::NotFound(format!("no resource named {name:?}")))?;
                if now.version == current.version + 1 && now.content == content {
                    Ok(now.into())
                } else {
                    Err(NodeError::Conflict(format!(
                        "{name:?} changed while it was being published (now version {}); publish again",
                        now.version
                    )))
                }
            }
            other => resource_result(other),
        }
    }

    pub async fn remove_resource(&self, name: &str) -> Result<(), NodeError> {
        let cmd = Command::RemoveResource {
            name: name.into(),
            now_ms: now_ms(),
        };
        match self.cluster().write(cmd).await? {
            CommandResult::ResourceRemoved(_) => Ok(()),
            other => resource_result(other).map(|_| ()),
        }
    }

    /// Turns `--with PEER|linked|public` into an audience; a PEER must be a pinned link (or a
    /// cluster ID, to prepare a share before linking).
    pub fn audience(&self, with: &str) -> Result<Audience, NodeError> {
        match with.trim() {
            w if w.eq_ignore_ascii_case("public") => Ok(Audience::Public),
            w if w.eq_ignore_ascii_case("linked") => Ok(Audience::Linked),
            w => match self.federation().resolve(w) {
                Ok(link) => link
                    .pinned
                    .map(Audience::Cluster)
                    .ok_or_else(|| crate::federation::pending_error(w, &link.name)),
                Err(_) => w.parse::<ClusterId>().map(Audience::Cluster).map_err(|_| {
                    NodeError::Invalid(format!("{w:?} is not \"public\", \"linked\", a link, or a cluster ID"))
                }),
            },
        }
    }

    pub async fn share(
        &self,
        name: &str,
        with: &str,
        mode: ShareMode,
        read_only: bool,
    ) -> Result<ResourceView, NodeError> {
        let rule = ShareRule::new(self.audience(with)?, mode, read_only);
        // Refused before it costs a Raft entry; the catalog refuses it too, for any other path.
        rule.check().map_err(|e| NodeError::Invalid(e.to_string()))?;
        let cmd = Command::SetShare {
            name: name.into(),
            rule,
            now_ms: now_ms(),
        };
        resource_result(self.cluster().write(cmd).await?)
    }

    pub async fn unshare(&self, name: &str, with: &str) -> Result<ResourceView, NodeError> {
        let cmd = Command::RemoveShare {
            name: name.into(),
            audience: self.audience(with)?,
            now_ms: now_ms(),
        };
        resource_result(self.cluster().write(cmd).await?)
    }

    /// How this cluster would see `peer`: a pinned link is linked; a bare cluster ID is an
    /// unlinked cluster; "public" or "unknown" is an unverified endpoint.
    pub fn relation_of(&self, peer: &str) -> Result<PeerRelation, NodeError> {
        let p = peer.trim();
        if p.eq_ignore_ascii_case("public") || p.eq_ignore_ascii_case("unknown") {
            return Ok(PeerRelation::Unknown);
        }
        match self.federation().resolve(p) {
            Ok(link) => link
                .pinned
                .map(PeerRelation::Linked)
                .ok_or_else(|| crate::federation::pending_error(p, &link.name)),
            Err(_) => match p.parse::<EndpointKey>() {
                Ok(k) => Ok(PeerRelation::Unlinked(ClusterId(k.0))),
                Err(_) => Err(NodeError::NotFound(format!(
                    "no link matches {p:?}, and it is not a cluster ID"
                ))),
            },
        }
    }

    /// `share preview PEER`: exactly what that peer would see and may do, with the granting rule.
    pub async fn share_preview(&self, peer: &str) -> Result<Vec<PreviewView>, NodeError> {
        let relation = self.relation_of(peer)?;
        self.cluster().read_barrier().await?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.federation().read(|t| {
                causeway_catalog::state::list_resources(t, after.as_deref(), causeway_catalog::state::MAX_PAGE)
            })?;
            let done = page.len() < causeway_catalog::state::MAX_PAGE;
            after = page.last().map(|r| r.name.clone());
            let kinds: BTreeMap<&str, &str> = page.iter().map(|r| (r.name.as_str(), r.kind.as_str())).collect();
            for e in preview(&relation, page.iter().map(|r| (r.name.as_str(), r.shares.as_slice()))) {
                let rules = page
                    .iter()
                    .find(|r| r.name == e.name)
                    .map(|r| r.shares.as_slice())
                    .unwrap_or(&[]);
                let may = Action::ALL
                    .iter()
                    .filter(|a| decide(&relation, Some(rules), **a).is_granted())
                    .map(|a| a.to_string())
                    .collect();
                let g = e.grant.rule;
                out.push(PreviewView {
                    name: e.name.to_string(),
                    kind: kinds.get(e.name).copied().unwrap_or_default().to_string(),
                    mode: e.mode.to_string(),
                    read_only: e.read_only,
                    may,
                    rule: format!(
                        "{} {}{}",
                        g.audience,
                        g.mode,
                        if g.read_only { " read-only" } else { "" }
                    ),
                });
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// `catalog PEER`: asks the peer now (or, with `cached`, reads the replicated view that its
    /// change notifications keep current).
    pub async fn peer_catalog(&self, peer: &str, cached: bool) -> Result<Vec<CatalogEntryView>, NodeError> {
        if cached {
            self.cluster().read_barrier().await?;
            let rows = self.federation().cached_peer_catalog(peer)?;
            return Ok(rows
                .into_iter()
                .map(|e| CatalogEntryView {
                    name: e.name,
                    kind: e.kind,
                    owner: e.owner,
                    version: e.version,
                    mode: e.mode.to_string(),
                    read_only: e.read_only,
                    content: e.content,
                })
                .collect());
        }
        let rows = self.federation().query_peer_catalog(peer).await?;
        Ok(rows
            .into_iter()
            .map(|e| CatalogEntryView {
                name: e.name,
                kind: e.kind,
                owner: e.owner,
                version: e.version,
                mode: e.mode,
                read_only: e.read_only,
                content: e.content,
            })
            .collect())
    }

    /// Changes after `after`, waiting up to `wait` for one to arrive when there is none yet.
    pub async fn changes(&self, after: u64, limit: usize, wait: Duration) -> Result<ChangesView, NodeError> {
        self.cluster().read_barrier().await?;
        let limit = limit.clamp(1, MAX_CHANGES_BATCH);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WATCH_WAIT);
        let mut applied = self.cluster().applied_watch();
        loop {
            let (changes, complete) = self
                .federation()
                .read(|t| causeway_catalog::resources::changes_after(t, after, limit))?;
            if !changes.is_empty() || tokio::time::Instant::now() >= deadline {
                let last_seq = changes.last().map(|c| c.seq).unwrap_or(after);
                let newest_seq = self.federation().read(causeway_catalog::resources::last_change_seq)?;
                return Ok(ChangesView {
                    changes: changes
                        .into_iter()
                        .map(|c| ChangeView {
                            seq: c.seq,
                            name: c.name,
                            kind: kind_word(c.kind).into(),
                            version: c.version,
                            at_ms: c.at_ms,
                        })
                        .collect(),
                    last_seq,
                    newest_seq,
                    complete,
                });
            }
            // Wake when this node applies something new (or at the deadline).
            let _ = tokio::time::timeout_at(deadline, applied.changed()).await;
            applied.borrow_and_update();
        }
    }
}
