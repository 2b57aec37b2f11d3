//! The node's iroh-blobs store (`DATA_DIR/blobs`): import a file as a content root, check
//! whether a root is complete here, fetch it from another endpoint with progress, export it.
//! Every root a resource version points at is held by a named tag, so it is never collected.

use std::path::Path;

use iroh::endpoint::Connection;
use iroh_blobs::{HashAndFormat, api::remote::GetProgressItem, store::fs::FsStore};
use n0_future::StreamExt;

use crate::error::NodeError;

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("blob store: {e}"))
}

#[derive(Clone, Debug)]
pub struct ContentStore {
    store: FsStore,
}

/// Parses a content root as printed in the catalog (64 hex for a blob, `s` + 64 hex for a
/// hash sequence).
pub fn parse_root(text: &str) -> Result<HashAndFormat, NodeError> {
    text.parse()
        .map_err(|_| NodeError::Invalid(format!("invalid content root {text:?}")))
}

impl ContentStore {
    pub async fn open(dir: &Path) -> Result<Self, NodeError> {
        let store = FsStore::load(dir).await.map_err(err)?;
        Ok(Self { store })
    }

    pub fn store(&self) -> &FsStore {
        &self.store
    }

    /// Imports a file (verifying nothing: it is ours) and tags it under `tag`.
    pub async fn import_file(&self, path: &Path, tag: &str) -> Result<HashAndFormat, NodeError> {
        if !path.is_file() {
            return Err(NodeError::Invalid(format!(
                "{} is not a regular file (artifact content must be a file)",
                path.display()
            )));
        }
        let abs = std::path::absolute(path).map_err(err)?;
        let tt = self.store.blobs().add_path(abs).await.map_err(err)?;
        let root = HashAndFormat::raw(tt.hash);
        self.tag(tag, root).await?;
        Ok(root)
    }

    /// Whether every byte of `root` is present and verified here.
    pub async fn is_complete(&self, root: HashAndFormat) -> bool {
        match self.store.remote().local(root).await {
            Ok(info) => info.is_complete(),
            Err(_) => false,
        }
    }

    /// Bytes of `root` present locally.
    pub async fn local_bytes(&self, root: HashAndFormat) -> u64 {
        self.store
            .remote()
            .local(root)
            .await
            .map(|i| i.local_bytes())
            .unwrap_or(0)
    }

    /// Fetches `root` over `conn`, resuming from whatever verified ranges are already here,
    /// reporting payload bytes received so far through `progress`.
    pub async fn fetch(
        &self,
        conn: Connection,
        root: HashAndFormat,
        mut progress: impl FnMut(u64),
        stall_after: std::time::Duration,
    ) -> Result<u64, NodeError> {
        let mut stream = std::pin::pin!(self.store.remote().fetch(conn, root).stream());
        loop {
            // A peer that stops sending (killed, partitioned) must not hold the transfer forever.
            let item = match tokio::time::timeout(stall_after, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    return Err(NodeError::Refused(format!(
                        "transfer stalled: no data for {} ms",
                        stall_after.as_millis()
                    )));
                }
            };
            match item {
                GetProgressItem::Progress(n) => progress(n),
                GetProgressItem::Done(stats) => return Ok(stats.payload_bytes_read),
                GetProgressItem::Error(e) => return Err(NodeError::Refused(format!("transfer failed: {e}"))),
            }
        }
        Err(NodeError::Refused("transfer ended without completing".into()))
    }

    /// Tags `root` and makes the store's metadata durable: a version is recorded in the catalog
    /// only after its content (and the tag that keeps it) would survive a crash.
    pub async fn tag(&self, tag: &str, root: HashAndFormat) -> Result<(), NodeError> {
        self.store.tags().set(tag, root).await.map_err(err)?;
        self.store.sync_db().await.map_err(err)
    }

    /// Writes a complete blob to `target` (atomically: temp file, then rename).
    pub async fn export_blob(&self, root: HashAndFormat, target: &Path) -> Result<(), NodeError> {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = target.with_extension("causeway-partial");
        let _ = std::fs::remove_file(&tmp);
        self.store
            .blobs()
            .export(root.hash, std::path::absolute(&tmp).map_err(err)?)
            .await
            .map_err(err)?;
        std::fs::rename(&tmp, target).map_err(err)?;
        Ok(())
    }

    pub async fn shutdown(&self) {
        let _ = self.store.shutdown().await;
    }
}
