//! Requests the node routes to its cluster's leader through Raft's app channel: state only the
//! leader keeps in memory (live link health, transfer status) and work only the leader does
//! (pulling a mirror), asked from whichever member the CLI talks to.

use std::sync::{Arc, Weak};

use causeway_raft::{AppHandler, ClusterNode};
use causeway_sync::status::TransferStatus;
use serde::{Deserialize, Serialize};

use crate::api::ResourceView;
use crate::error::{NodeError, storage};
use crate::federation::{Federation, LinkView};
use crate::transfer::Mirroring;

/// Largest app message.
const MAX_APP_FRAME: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum AppRequest {
    LinkList,
    SyncStatus,
    Pull {
        name: String,
        peer: String,
    },
    WriteBack {
        name: String,
        peer: String,
    },
    /// A pull started by an accepted push offer of `peer` (a cluster ID), within its caps.
    PullPushed {
        name: String,
        peer: causeway_proto::ClusterId,
    },
    RotateKey,
}

#[derive(Debug, Serialize, Deserialize)]
enum AppResponse {
    Links(Vec<LinkView>),
    Transfers(Vec<TransferStatus>),
    Mirror(ResourceView),
    Error { kind: String, message: String },
    Rotation(crate::federation::rotation::RotationView),
}

fn error(e: NodeError) -> AppResponse {
    AppResponse::Error {
        kind: e.kind().to_string(),
        message: e.to_string(),
    }
}

fn remote(kind: String, message: String) -> NodeError {
    match kind.as_str() {
        "not_found" => NodeError::NotFound(message),
        "conflict" => NodeError::Conflict(message),
        "invalid" => NodeError::Invalid(message),
        "link_pending" => NodeError::LinkPending(message),
        _ => NodeError::Refused(message),
    }
}

pub struct LeaderApp {
    pub fed: Weak<Federation>,
    pub mirroring: Weak<Mirroring>,
}

impl AppHandler for LeaderApp {
    fn handle(&self, request: Vec<u8>) -> futures::future::BoxFuture<'static, Vec<u8>> {
        let fed = self.fed.upgrade();
        let mirroring = self.mirroring.upgrade();
        Box::pin(async move {
            let resp = match (
                fed,
                mirroring,
                causeway_proto::decode::<AppRequest>(&request, MAX_APP_FRAME),
            ) {
                (_, _, Err(e)) => error(NodeError::Invalid(format!("bad app request: {e}"))),
                (Some(fed), _, Ok(AppRequest::LinkList)) => match fed.local_link_views() {
                    Ok(v) => AppResponse::Links(v),
                    Err(e) => error(e),
                },
                (_, Some(m), Ok(AppRequest::SyncStatus)) => AppResponse::Transfers(m.statuses()),
                (_, Some(m), Ok(AppRequest::Pull { name, peer })) => match m.pull(&name, &peer).await {
                    Ok(r) => AppResponse::Mirror(r.into()),
                    Err(e) => error(e),
                },
                (_, Some(m), Ok(AppRequest::PullPushed { name, peer })) => match m.pull_pushed(&name, peer).await {
                    Ok(r) => AppResponse::Mirror(r.into()),
                    Err(e) => error(e),
                },
                (_, Some(m), Ok(AppRequest::WriteBack { name, peer })) => match m.write_back(&name, &peer).await {
                    Ok(r) => AppResponse::Mirror(r.into()),
                    Err(e) => error(e),
                },
                (Some(fed), _, Ok(AppRequest::RotateKey)) => match fed.rotate_key().await {
                    Ok(v) => AppResponse::Rotation(v),
                    Err(e) => error(e),
                },
                _ => error(NodeError::Refused("node is shutting down".into())),
            };
            causeway_proto::encode(&resp, MAX_APP_FRAME).unwrap_or_default()
        })
    }

    fn reads_tables(&self, request: &[u8]) -> bool {
        // Transfer status lives in memory: it answers even on a node whose storage failed.
        !matches!(
            causeway_proto::decode::<AppRequest>(request, MAX_APP_FRAME),
            Ok(AppRequest::SyncStatus)
        )
    }
}

async fn ask(cluster: &ClusterNode, req: AppRequest) -> Result<AppResponse, NodeError> {
    let bytes = causeway_proto::encode(&req, MAX_APP_FRAME).map_err(storage)?;
    let resp = cluster.submit_app(bytes).await?;
    match causeway_proto::decode::<AppResponse>(&resp, MAX_APP_FRAME).map_err(storage)? {
        AppResponse::Error { kind, message } => Err(remote(kind, message)),
        other => Ok(other),
    }
}

pub async fn link_list(cluster: &ClusterNode) -> Result<Vec<LinkView>, NodeError> {
    match ask(cluster, AppRequest::LinkList).await? {
        AppResponse::Links(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

pub async fn sync_status(cluster: &ClusterNode) -> Result<Vec<TransferStatus>, NodeError> {
    match ask(cluster, AppRequest::SyncStatus).await? {
        AppResponse::Transfers(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

pub async fn pull(cluster: &ClusterNode, name: &str, peer: &str) -> Result<ResourceView, NodeError> {
    let req = AppRequest::Pull {
        name: name.into(),
        peer: peer.into(),
    };
    match ask(cluster, req).await? {
        AppResponse::Mirror(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// Pulls `name` from `peer` on the leader after an accepted push offer, within the caps.
pub async fn pull_pushed(
    cluster: &ClusterNode,
    name: &str,
    peer: causeway_proto::ClusterId,
) -> Result<ResourceView, NodeError> {
    let req = AppRequest::PullPushed {
        name: name.into(),
        peer,
    };
    match ask(cluster, req).await? {
        AppResponse::Mirror(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

pub async fn write_back(cluster: &ClusterNode, name: &str, peer: &str) -> Result<ResourceView, NodeError> {
    let req = AppRequest::WriteBack {
        name: name.into(),
        peer: peer.into(),
    };
    match ask(cluster, req).await? {
        AppResponse::Mirror(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// `cluster rotate-key`, run by the leader.
pub async fn rotate_key(cluster: &ClusterNode) -> Result<crate::federation::rotation::RotationView, NodeError> {
    match ask(cluster, AppRequest::RotateKey).await? {
        AppResponse::Rotation(v) => Ok(v),
        other => Err(NodeError::Refused(format!("unexpected answer {other:?}"))),
    }
}

pub fn install(cluster: &ClusterNode, fed: &Arc<Federation>, mirroring: &Arc<Mirroring>) {
    cluster.set_app_handler(Arc::new(LeaderApp {
        fed: Arc::downgrade(fed),
        mirroring: Arc::downgrade(mirroring),
    }));
}
