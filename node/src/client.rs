//! `Client`: the Rust API a subsystem (a forge, CI, monitoring) uses to talk to its local node
//! over the control socket.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use std::collections::BTreeMap;

use crate::api::{
    CatalogEntryView, ChangesView, ClusterStatusView, IdInfo, InviteView, PreviewView, RegisterResource, ResourceView,
};
use crate::config::Config;
use crate::control::{ControlRequest, ControlResponse, read_line};
use crate::datadir;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the causeway daemon at {path}: {reason} (is `causeway run` running for this data dir?)")]
    NotRunning { path: PathBuf, reason: String },
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon closed the control connection")]
    Closed,
    #[error("bad response from daemon: {0}")]
    BadResponse(String),
    /// The daemon refused or failed the request; `kind` is machine-readable.
    #[error("{message}")]
    Remote { kind: String, message: String },
}

/// How often [`Client::wait_link_up`] reads the link's state.
pub const LINK_POLL: Duration = Duration::from_millis(100);

pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the daemon of the node in `data_dir` (finding its socket from the config).
    pub async fn connect(data_dir: &Path) -> Result<Self, ClientError> {
        let socket = Config::load(&data_dir.join(datadir::CONFIG_FILE))
            .map(|c| c.socket_path(data_dir))
            .unwrap_or_else(|_| data_dir.join("control.sock"));
        Self::connect_socket(&socket).await
    }

    pub async fn connect_socket(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).await.map_err(|e| ClientError::NotRunning {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (r, w) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends one request and returns the daemon's result.
    pub async fn request(&mut self, req: &ControlRequest) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        let resp = read_line(&mut self.reader).await?.ok_or(ClientError::Closed)?;
        match serde_json::from_slice::<ControlResponse>(&resp).map_err(|e| ClientError::BadResponse(e.to_string()))? {
            ControlResponse::Ok { result } => Ok(result),
            ControlResponse::Error { kind, message } => Err(ClientError::Remote { kind, message }),
        }
    }

    async fn typed<T: DeserializeOwned>(&mut self, req: ControlRequest) -> Result<T, ClientError> {
        let v = self.request(&req).await?;
        serde_json::from_value(v).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    pub async fn id(&mut self) -> Result<IdInfo, ClientError> {
        self.typed(ControlRequest::Id).await
    }

    pub async fn cluster_status(&mut self) -> Result<ClusterStatusView, ClientError> {
        self.typed(ControlRequest::ClusterStatus).await
    }

    pub async fn invite(&mut self, ttl: Option<Duration>) -> Result<InviteView, ClientError> {
        self.typed(ControlRequest::Invite {
            ttl_secs: ttl.map(|d| d.as_secs()),
        })
        .await
    }

    pub async fn remove_member(&mut self, node: &str) -> Result<(), ClientError> {
        self.request(&ControlRequest::RemoveMember { node: node.into() })
            .await
            .map(|_| ())
    }

    /// `cluster rotate-key`: the cluster adopts a new key, signed by its members.
    pub async fn rotate_key(&mut self) -> Result<crate::federation::rotation::RotationView, ClientError> {
        self.typed(ControlRequest::RotateKey).await
    }

    pub async fn register_resource(&mut self, req: RegisterResource) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::RegisterResource(req)).await
    }

    /// One page of resources after `after` (exclusive), in name order.
    pub async fn list_resources(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResourceView>, ClientError> {
        self.typed(ControlRequest::ListResources {
            after: after.map(Into::into),
            limit: Some(limit),
        })
        .await
    }

    /// Every resource, fetched page by page so the catalog is never loaded whole at once.
    pub async fn all_resources(&mut self, page: usize, mut each: impl FnMut(ResourceView)) -> Result<(), ClientError> {
        // The daemon never returns more than its page limit; asking for more must not look
        // like the end of the list.
        let page = page.clamp(1, crate::node::MAX_LIST_PAGE);
        let mut after: Option<String> = None;
        loop {
            let rows = self.list_resources(after.as_deref(), page).await?;
            let done = rows.len() < page;
            after = rows.last().map(|r| r.name.clone());
            rows.into_iter().for_each(&mut each);
            if done || after.is_none() {
                return Ok(());
            }
        }
    }

    pub async fn link_add(
        &mut self,
        endpoint: &str,
        addrs: Vec<std::net::SocketAddr>,
        name: Option<String>,
        accept_pushes: bool,
    ) -> Result<crate::federation::LinkView, ClientError> {
        self.typed(ControlRequest::LinkAdd {
            endpoint: endpoint.into(),
            addrs,
            name,
            accept_pushes,
        })
        .await
    }

    /// Polls the link named `name` until it is up ([`LinkView::is_up`]: pinned and active) or
    /// `timeout` has passed, and returns how it reads last. The caller tells up from not by
    /// [`LinkView::is_up`]; a link that is not up carries the state and reason the leader's
    /// supervisor recorded.
    ///
    /// [`LinkView::is_up`]: crate::federation::LinkView::is_up
    pub async fn wait_link_up(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<crate::federation::LinkView>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self
                .link_list()
                .await?
                .into_iter()
                .find(|l| l.name == name && l.direction == "outbound");
            if view.as_ref().is_none_or(|v| v.is_up()) || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            tokio::time::sleep(LINK_POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        }
    }

    /// `link set PEER --accept-pushes on|off`.
    pub async fn link_set_pushes(
        &mut self,
        peer: &str,
        accept_pushes: bool,
    ) -> Result<crate::federation::LinkView, ClientError> {
        self.typed(ControlRequest::LinkSet {
            peer: peer.into(),
            accept_pushes,
        })
        .await
    }

    pub async fn link_list(&mut self) -> Result<Vec<crate::federation::LinkView>, ClientError> {
        self.typed(ControlRequest::LinkList).await
    }

    pub async fn link_remove(&mut self, peer: &str) -> Result<(), ClientError> {
        self.request(&ControlRequest::LinkRemove { peer: peer.into() })
            .await
            .map(|_| ())
    }

    pub async fn update_metadata(
        &mut self,
        name: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::UpdateMetadata {
            name: name.into(),
            set,
            remove,
        })
        .await
    }

    /// Records a new version (version + 1), optionally pointing at a content root.
    pub async fn publish(&mut self, name: &str, content: Option<String>) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::Publish {
            name: name.into(),
            content,
        })
        .await
    }

    pub async fn remove_resource(&mut self, name: &str) -> Result<(), ClientError> {
        self.request(&ControlRequest::RemoveResource { name: name.into() })
            .await
            .map(|_| ())
    }

    /// Shares `name` with a peer (link name, cluster ID or endpoint ID), `linked` or `public`.
    pub async fn share(
        &mut self,
        name: &str,
        with: &str,
        mode: &str,
        read_only: bool,
    ) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::Share {
            name: name.into(),
            with: with.into(),
            mode: mode.into(),
            read_only,
        })
        .await
    }

    pub async fn unshare(&mut self, name: &str, with: &str) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::Unshare {
            name: name.into(),
            with: with.into(),
        })
        .await
    }

    pub async fn share_preview(&mut self, peer: &str) -> Result<Vec<PreviewView>, ClientError> {
        self.typed(ControlRequest::SharePreview { peer: peer.into() }).await
    }

    pub async fn peer_catalog(&mut self, peer: &str, cached: bool) -> Result<Vec<CatalogEntryView>, ClientError> {
        self.typed(ControlRequest::PeerCatalog {
            peer: peer.into(),
            cached,
        })
        .await
    }

    /// Changes of the local catalog after `after`, waiting up to `wait` for the first one.
    /// Call again with the returned `last_seq` to follow the feed.
    pub async fn changes(&mut self, after: u64, wait: Duration) -> Result<ChangesView, ClientError> {
        self.typed(ControlRequest::Changes {
            after,
            limit: None,
            wait_ms: wait.as_millis() as u64,
        })
        .await
    }

    /// Pulls PEER's current version of `name` into a mirror (runs on the leader).
    pub async fn sync_pull(&mut self, name: &str, peer: &str) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::SyncPull {
            name: name.into(),
            peer: peer.into(),
        })
        .await
    }

    /// Offers a bidirectional mirror's new commits back to its origin (runs on the leader).
    pub async fn sync_push(&mut self, name: &str, peer: &str) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::SyncPush {
            name: name.into(),
            peer: peer.into(),
        })
        .await
    }

    pub async fn sync_status(&mut self) -> Result<Vec<causeway_sync::status::TransferStatus>, ClientError> {
        self.typed(ControlRequest::SyncStatus).await
    }

    /// The import running for resource `name` on this node (a publish or registration reading
    /// its file or directory into the store), if any: bytes done and total.
    pub async fn import_status(
        &mut self,
        name: &str,
    ) -> Result<Option<crate::content::imports::ImportView>, ClientError> {
        self.typed(ControlRequest::ImportStatus { name: name.into() }).await
    }

    /// The newest change sequence number: follow the feed "from now" by passing it to `changes`.
    pub async fn newest_change_seq(&mut self) -> Result<u64, ClientError> {
        let v: ChangesView = self
            .typed(ControlRequest::Changes {
                after: u64::MAX,
                limit: Some(1),
                wait_ms: 0,
            })
            .await?;
        Ok(v.newest_seq)
    }

    pub async fn show_resource(&mut self, name: &str) -> Result<ResourceView, ClientError> {
        self.typed(ControlRequest::ShowResource { name: name.into() }).await
    }
}
