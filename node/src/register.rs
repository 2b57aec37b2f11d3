//! Registering a resource: the request checked, the path's current content imported into this
//! node's store (an artifact's file or directory, a repository's refs as its first bundle) and
//! the resource recorded with it as version 1, in one Raft entry; then a repository's push hook.
//!
//! What a failure leaves: the content is imported first and held by a tag of this attempt
//! (`register/<time>/<name>`); only then is the registration proposed, as one entry. An import
//! that fails, a rejected proposal or a crash before the commit leave no resource in the
//! catalog, so running the same registration again succeeds (the bytes are content-addressed:
//! importing them again costs no new space). A crash after the commit (or a write whose answer
//! was lost) leaves the resource registered and published, complete, and running the command
//! again says it already exists; its content may then stay held by the attempt's tag rather
//! than `res/<name>`, which only changes which tag keeps it. A repository's push hook is
//! installed after the commit (before it, a rejected registration would leave a hook that
//! publishes whichever resource holds the name); a node that stops in between leaves the
//! repository without it, and its pushes are then published by `resource publish NAME`.

use std::path::Path;

use causeway_catalog::{Command, CommandResult, Rejection};
use iroh_blobs::HashAndFormat;

use crate::api::{OnRegister, RegisterResource, ResourceView};
use crate::error::NodeError;
use crate::node::{Node, now_ms};

/// Longest local path stored with a resource.
pub const MAX_PATH_LEN: usize = 4096;

/// The kind whose path is a bare git repository, published as bundles.
const REPO_KIND: &str = "forge/repo";

/// The tag that holds a registration's content until the resource's own tag does.
fn attempt_tag(registered_at_ms: u64, name: &str) -> String {
    format!("{ATTEMPT_TAG_PREFIX}{registered_at_ms}/{name}")
}

/// The resource name a registration attempt's tag was made for.
pub fn attempt_tag_names(tag: &str) -> Option<&str> {
    let rest = tag.strip_prefix(ATTEMPT_TAG_PREFIX)?;
    rest.split_once('/').map(|(_, name)| name)
}

/// Where registration attempts' tags start.
const ATTEMPT_TAG_PREFIX: &str = "register/";

/// The same error, its message prefixed with what was being done.
fn context(e: NodeError, what: &str) -> NodeError {
    match e {
        NodeError::Invalid(m) => NodeError::Invalid(format!("{what}: {m}")),
        NodeError::NotFound(m) => NodeError::NotFound(format!("{what}: {m}")),
        NodeError::Conflict(m) => NodeError::Conflict(format!("{what}: {m}")),
        NodeError::Refused(m) => NodeError::Refused(format!("{what}: {m}")),
        NodeError::Storage(m) => NodeError::Storage(format!("{what}: {m}")),
        other => other,
    }
}

impl Node {
    /// Registers a resource. With a path and [`OnRegister::Publish`] (the default), the path's
    /// current content is imported and recorded as version 1 in the same step, so a peer it is
    /// shared with can fetch it at once; an import that fails fails the registration, and the
    /// catalog then holds nothing of it. See the module documentation for what a crash leaves.
    pub async fn register_resource(&self, req: RegisterResource) -> Result<ResourceView, NodeError> {
        causeway_catalog::validate::resource_name(&req.name)
            .and_then(|_| causeway_catalog::validate::kind(&req.kind))
            .and_then(|_| causeway_catalog::validate::owner(&req.owner))
            .and_then(|_| causeway_catalog::validate::metadata(&req.metadata))
            .map_err(NodeError::Invalid)?;
        let path = match &req.path {
            None => None,
            Some(p) => {
                let canonical = std::fs::canonicalize(p)
                    .map_err(|e| NodeError::Invalid(format!("path {p:?} cannot be used: {e}")))?;
                let s = canonical.to_string_lossy().into_owned();
                if s.len() > MAX_PATH_LEN {
                    return Err(NodeError::Invalid(format!("path is longer than {MAX_PATH_LEN} bytes")));
                }
                Some(s)
            }
        };
        let publish = path.is_some() && req.on_register == OnRegister::Publish;
        let registered_at_ms = now_ms();
        let attempt_tag = attempt_tag(registered_at_ms, &req.name);
        let first = match &path {
            Some(path) if publish => {
                self.refuse_taken_name(&req.name).await?;
                self.import_first_version(&req.kind, Path::new(path), &attempt_tag)
                    .await
                    .map_err(|e| context(e, &format!("registering {:?}: importing {path}", req.name)))?
            }
            _ => None,
        };
        let (name, kind, owner) = (req.name.clone(), req.kind.clone(), req.owner.clone());
        let cmd = match first {
            Some(root) => Command::RegisterPublished {
                name: req.name,
                kind: req.kind,
                owner: req.owner,
                path,
                metadata: req.metadata,
                registered_at_ms,
                content: root.to_string(),
            },
            None => Command::RegisterResource {
                name: req.name,
                kind: req.kind,
                owner: req.owner,
                path,
                metadata: req.metadata,
                registered_at_ms,
            },
        };
        // A write whose outcome is unknown (an error here) may still commit: the attempt's tag
        // then keeps holding the content it points at. Only a decided rejection drops it.
        let result = self.cluster().write(cmd).await?;
        let result = self
            .recognize_own_retry(result, &name, &kind, &owner, registered_at_ms)
            .await?;
        let registered = match result {
            CommandResult::ResourceRegistered(r) => r,
            refused => {
                if first.is_some() {
                    self.drop_attempt_tag(&attempt_tag).await;
                }
                return Err(match refused {
                    CommandResult::Rejected(Rejection::ResourceExists(n)) => {
                        NodeError::Conflict(format!("a resource named {n:?} already exists"))
                    }
                    CommandResult::Rejected(r) => NodeError::Invalid(r.to_string()),
                    other => NodeError::Refused(format!("unexpected result {other:?}")),
                });
            }
        };
        if let Some(root) = first {
            // From now on the resource's own tag keeps its content, as for every publish.
            match self.content().tag(&format!("res/{name}"), root).await {
                Ok(()) => self.drop_attempt_tag(&attempt_tag).await,
                Err(e) => tracing::warn!(resource = %name, error = %e, "content stays held by the registration's tag"),
            }
        }
        if registered.kind == REPO_KIND
            && let Some(path) = &registered.path
        {
            self.install_repo_hook(&registered.name, Path::new(path));
            if publish {
                return self.catch_up(registered.into()).await;
            }
        }
        Ok(registered.into())
    }

    /// Refuses, before any import, a name a local resource already holds (a mirror gives way
    /// to a local registration, so it does not count). The proposal checks again.
    async fn refuse_taken_name(&self, name: &str) -> Result<(), NodeError> {
        self.cluster().read_barrier().await?;
        match self
            .federation()
            .read(|t| causeway_catalog::state::get_resource(t, name))?
        {
            Some(r) if r.mirror_of.is_none() => {
                Err(NodeError::Conflict(format!("a resource named {name:?} already exists")))
            }
            _ => Ok(()),
        }
    }

    /// Imports the content at `path` as a first version, held by `tag`. `None`: nothing to
    /// publish (a repository without refs yet).
    async fn import_first_version(
        &self,
        kind: &str,
        path: &Path,
        tag: &str,
    ) -> Result<Option<HashAndFormat>, NodeError> {
        if kind == REPO_KIND {
            self.content().publish_repo(path, None, tag).await
        } else {
            self.content().import_file(path, tag).await.map(Some)
        }
    }

    async fn drop_attempt_tag(&self, tag: &str) {
        if let Err(e) = self.content().untag(tag).await {
            tracing::warn!(tag, error = %e, "could not drop a registration's tag");
        }
    }

    /// A forward that failed after the leader committed is retried; the retry then finds our
    /// own registration. Recognize it by its timestamp and report success, once.
    async fn recognize_own_retry(
        &self,
        result: CommandResult,
        name: &str,
        kind: &str,
        owner: &str,
        registered_at_ms: u64,
    ) -> Result<CommandResult, NodeError> {
        let CommandResult::Rejected(Rejection::ResourceExists(_)) = result else {
            return Ok(result);
        };
        self.cluster().read_barrier().await?;
        let existing = self
            .federation()
            .read(|t| causeway_catalog::state::get_resource(t, name))?;
        Ok(match existing {
            Some(r) if r.registered_at_ms == registered_at_ms && r.kind == kind && r.owner == owner => {
                CommandResult::ResourceRegistered(r)
            }
            _ => CommandResult::Rejected(Rejection::ResourceExists(name.to_string())),
        })
    }

    /// A push that landed between the import and the hook's installation fired no hook:
    /// publish what it brought now (nothing when the refs did not move).
    async fn catch_up(&self, registered: ResourceView) -> Result<ResourceView, NodeError> {
        match self.publish(&registered.name, None).await {
            Ok(now) => Ok(now),
            Err(e) => {
                // Registered and published as imported; the next push publishes the rest.
                tracing::warn!(resource = %registered.name, error = %e, "publishing pushes made during the registration failed");
                Ok(registered)
            }
        }
    }

    /// Makes a `git push` into a registered repository publish a new version by itself: the
    /// repository's post-receive hook calls this node's CLI in the background.
    pub fn install_repo_hook(&self, name: &str, repo: &Path) {
        let Ok(exe) = std::env::current_exe() else { return };
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let command = format!(
            "{} --data-dir {} resource publish {} >/dev/null 2>&1 &",
            quote(&exe.to_string_lossy()),
            quote(&self.data_dir().to_string_lossy()),
            quote(name)
        );
        match causeway_sync::git::install_notify_hook(repo, &command) {
            Ok(()) => tracing::info!(resource = name, "installed the publish hook"),
            Err(e) => tracing::warn!(resource = name, error = %e, "could not install the publish hook"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_tag_names_its_resource_even_with_slashes() {
        assert_eq!(attempt_tag_names(&attempt_tag(17, "model")), Some("model"));
        assert_eq!(attempt_tag_names(&attempt_tag(17, "team/a/b")), Some("team/a/b"));
        assert_eq!(attempt_tag_names("res/model"), None);
    }
}
