//! The local control protocol: newline-delimited JSON over a Unix socket in the data dir (mode
//! 0600). The CLI and local subsystems send one request per line and get one response per line.

use std::{path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use crate::api::RegisterResource;
use crate::error::NodeError;
use crate::node::{DEFAULT_INVITE_TTL, Node};

/// Longest request or response line.
pub const MAX_LINE: usize = 4 << 20;
/// Most control connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Page size when a list request does not say.
pub const DEFAULT_PAGE: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Id,
    ClusterStatus,
    Invite {
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
    RemoveMember {
        node: String,
    },
    RegisterResource(RegisterResource),
    ListResources {
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    ShowResource {
        name: String,
    },
    LinkAdd {
        endpoint: String,
        #[serde(default)]
        addrs: Vec<std::net::SocketAddr>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        accept_pushes: bool,
    },
    LinkList,
    LinkRemove {
        peer: String,
    },
    UpdateMetadata {
        name: String,
        #[serde(default)]
        set: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        remove: Vec<String>,
    },
    Publish {
        name: String,
        #[serde(default)]
        content: Option<String>,
    },
    RemoveResource {
        name: String,
    },
    Share {
        name: String,
        with: String,
        mode: String,
        #[serde(default)]
        read_only: bool,
    },
    Unshare {
        name: String,
        with: String,
    },
    SharePreview {
        peer: String,
    },
    PeerCatalog {
        peer: String,
        #[serde(default)]
        cached: bool,
    },
    SyncPull {
        name: String,
        peer: String,
    },
    SyncPush {
        name: String,
        peer: String,
    },
    SyncStatus,
    /// Changes after `after`; waits up to `wait_ms` when there are none yet (long poll).
    Changes {
        #[serde(default)]
        after: u64,
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        wait_ms: u64,
    },
    /// `link set PEER --accept-pushes on|off`.
    LinkSet {
        peer: String,
        accept_pushes: bool,
    },
    RotateKey,
    /// The import running for resource `name` on this node (a publish or registration reading
    /// a large file or directory), or null.
    ImportStatus {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ControlResponse {
    Ok { result: serde_json::Value },
    Error { kind: String, message: String },
}

impl ControlResponse {
    fn error(kind: &str, message: impl Into<String>) -> Self {
        ControlResponse::Error {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Reads one line of at most `MAX_LINE` bytes; `None` at end of stream.
pub async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        line.extend_from_slice(chunk);
        let consumed = done.unwrap_or(buf.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Some(line));
        }
    }
}

async fn dispatch(node: &Node, req: ControlRequest) -> Result<serde_json::Value, NodeError> {
    fn json<T: Serialize>(v: T) -> Result<serde_json::Value, NodeError> {
        serde_json::to_value(v).map_err(|e| NodeError::Storage(e.to_string()))
    }
    // Each request that reads the catalog sees every write this node answered before it
    // (read-your-writes for the CLI and subsystems, whose next request may read it without a
    // barrier). The status requests skip it: they must answer on a node whose storage failed.
    if !matches!(
        req,
        ControlRequest::Id
            | ControlRequest::ClusterStatus
            | ControlRequest::SyncStatus
            | ControlRequest::ImportStatus { .. }
    ) {
        node.cluster().settle().await?;
    }
    match req {
        ControlRequest::Id => json(node.id_info()),
        ControlRequest::ClusterStatus => json(node.cluster_status().await),
        ControlRequest::Invite { ttl_secs } => {
            let ttl = ttl_secs.map(Duration::from_secs).unwrap_or(DEFAULT_INVITE_TTL);
            json(node.invite(ttl).await?)
        }
        ControlRequest::RemoveMember { node: who } => {
            let id = who.parse().map_err(|e| NodeError::Invalid(format!("{e}")))?;
            node.remove_member(id).await?;
            json(serde_json::json!({ "removed": who }))
        }
        ControlRequest::RegisterResource(r) => json(node.register_resource(r).await?),
        ControlRequest::ListResources { after, limit } => {
            json(node.list_resources(after, limit.unwrap_or(DEFAULT_PAGE)).await?)
        }
        ControlRequest::ShowResource { name } => json(node.show_resource(&name).await?),
        ControlRequest::LinkAdd {
            endpoint,
            addrs,
            name,
            accept_pushes,
        } => {
            let id = endpoint.parse().map_err(|e| NodeError::Invalid(format!("{e}")))?;
            json(node.link_add_with(id, addrs, name, accept_pushes).await?)
        }
        ControlRequest::LinkSet { peer, accept_pushes } => json(node.link_set_pushes(&peer, accept_pushes).await?),
        ControlRequest::LinkList => json(node.link_list().await?),
        ControlRequest::RotateKey => json(crate::app::rotate_key(node.cluster()).await?),
        ControlRequest::UpdateMetadata { name, set, remove } => json(node.update_metadata(&name, set, remove).await?),
        ControlRequest::Publish { name, content } => json(node.publish(&name, content).await?),
        ControlRequest::RemoveResource { name } => {
            node.remove_resource(&name).await?;
            json(serde_json::json!({ "removed": name }))
        }
        ControlRequest::Share {
            name,
            with,
            mode,
            read_only,
        } => {
            let mode = mode.parse().map_err(|e| NodeError::Invalid(format!("{e}")))?;
            json(node.share(&name, &with, mode, read_only).await?)
        }
        ControlRequest::Unshare { name, with } => json(node.unshare(&name, &with).await?),
        ControlRequest::SharePreview { peer } => json(node.share_preview(&peer).await?),
        ControlRequest::SyncPull { name, peer } => json(node.sync_pull(&name, &peer).await?),
        ControlRequest::SyncPush { name, peer } => json(node.sync_push(&name, &peer).await?),
        ControlRequest::SyncStatus => json(node.sync_status().await?),
        ControlRequest::ImportStatus { name } => json(node.import_status(&name)),
        ControlRequest::PeerCatalog { peer, cached } => json(node.peer_catalog(&peer, cached).await?),
        ControlRequest::Changes { after, limit, wait_ms } => json(
            node.changes(
                after,
                limit.unwrap_or(crate::sharing::MAX_CHANGES_BATCH),
                Duration::from_millis(wait_ms),
            )
            .await?,
        ),
        ControlRequest::LinkRemove { peer } => {
            node.link_remove(&peer).await?;
            json(serde_json::json!({ "removed": peer }))
        }
    }
}

async fn serve_connection(node: Node, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let response = match read_line(&mut reader).await {
            Ok(None) => return,
            Ok(Some(line)) => match serde_json::from_slice::<ControlRequest>(&line) {
                Ok(req) => match dispatch(&node, req).await {
                    Ok(result) => ControlResponse::Ok { result },
                    Err(e) => ControlResponse::error(e.kind(), e.to_string()),
                },
                Err(e) => ControlResponse::error("bad_request", format!("bad control request: {e}")),
            },
            Err(e) => {
                let r = ControlResponse::error("bad_request", e.to_string());
                let _ = write_response(&mut write, &r).await;
                return;
            }
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn write_response(write: &mut tokio::net::unix::OwnedWriteHalf, r: &ControlResponse) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// A bound control socket; removed from disk when dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: std::path::PathBuf,
}

impl ControlServer {
    /// Binds the socket. A leftover socket from a crashed daemon is replaced; a live one means
    /// another daemon runs on this data dir, which is refused.
    pub async fn bind(path: &Path) -> Result<Self, NodeError> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(NodeError::Refused(format!(
                    "another causeway daemon is already serving {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(|e| NodeError::Storage(format!("remove stale {}: {e}", path.display())))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| NodeError::Storage(format!("bind control socket {}: {e}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| NodeError::Storage(format!("chmod {}: {e}", path.display())))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves until the task is dropped.
    pub async fn serve(&self, node: Node) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let node = node.clone();
            tokio::spawn(async move {
                serve_connection(node, stream).await;
                drop(permit);
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
