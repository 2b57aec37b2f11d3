//! The data directory's layout and the small files that identify a node: its secret key (mode
//! 0600), its config, and `node.json`, which records the cluster it belongs to and is written
//! last, so a directory without it holds no cluster membership.

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use causeway_proto::{ClusterId, EndpointKey};
use serde::{Deserialize, Serialize};

pub const KEY_FILE: &str = "node.key";
pub const CONFIG_FILE: &str = "config.toml";
pub const STATE_FILE: &str = "node.json";
pub const DB_FILE: &str = "raft.redb";
pub const BLOBS_DIR: &str = "blobs";

/// What a node knows about its cluster membership outside Raft.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    pub cluster_id: ClusterId,
    pub cluster_name: String,
    /// Voters that may replicate to this node before it has learned the membership (the voters
    /// named when it joined). Emptied once the node knows a membership (see
    /// [`forget_bootstrap_peers`]); always empty for a cluster's founder.
    #[serde(default)]
    pub bootstrap_peers: BTreeSet<EndpointKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {0} does not exist (create a node with `causeway init --data-dir {0}`)")]
    Missing(PathBuf),
    #[error("data directory {0} holds no node (run `causeway init` or `causeway cluster join` first)")]
    NotInitialized(PathBuf),
    #[error("data directory {0} already holds a node of cluster {1}; refusing to change it")]
    AlreadyInitialized(PathBuf, ClusterId),
    #[error("data directory {0} is not empty and holds no complete node; move its contents away first")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<Option<NodeState>, DataDirError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataDirError::Corrupt {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub fn write_state(dir: &Path, state: &NodeState) -> Result<(), DataDirError> {
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    write_atomic(&dir.join(STATE_FILE), &bytes, 0o600)
}

/// Removes the bootstrap peers from `node.json` once the node knows its membership: from then on
/// only the membership decides who may speak Raft with it, and a peer removed later must not
/// regain trust from this file. Atomic like every write of the file; returns whether it changed.
pub fn forget_bootstrap_peers(dir: &Path) -> Result<bool, DataDirError> {
    let Some(mut state) = read_state(dir)? else {
        return Ok(false);
    };
    if state.bootstrap_peers.is_empty() {
        return Ok(false);
    }
    state.bootstrap_peers.clear();
    write_state(dir, &state)?;
    Ok(true)
}

pub fn read_key(dir: &Path) -> Result<iroh::SecretKey, DataDirError> {
    let path = dir.join(KEY_FILE);
    let bytes = fs::read(&path).map_err(io(&path))?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| DataDirError::Corrupt {
        path: path.clone(),
        reason: format!("expected 32 bytes, found {}", bytes.len()),
    })?;
    Ok(iroh::SecretKey::from_bytes(&arr))
}

pub fn write_key(dir: &Path, key: &iroh::SecretKey) -> Result<(), DataDirError> {
    write_atomic(&dir.join(KEY_FILE), &key.to_bytes(), 0o600)
}

/// Checks that `dir` exists and holds a complete node.
pub fn require_node(dir: &Path) -> Result<NodeState, DataDirError> {
    if !dir.is_dir() {
        return Err(DataDirError::Missing(dir.to_path_buf()));
    }
    read_state(dir)?.ok_or_else(|| DataDirError::NotInitialized(dir.to_path_buf()))
}

/// Prepares `dir` to receive a new node: it must not exist, or be empty. Returns a staging
/// directory next to it; [`commit_staged`] moves the finished node into place.
pub fn stage_new(dir: &Path) -> Result<PathBuf, DataDirError> {
    if dir.exists() {
        if let Some(state) = read_state(dir)? {
            return Err(DataDirError::AlreadyInitialized(dir.to_path_buf(), state.cluster_id));
        }
        let mut entries = fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(DataDirError::NotEmpty(dir.to_path_buf()));
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "causeway".into());
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir(&staging).map_err(io(&staging))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700)).map_err(io(&staging))?;
    Ok(staging)
}

/// Moves a staged node into `dir`. The state file moves last, so an interrupted move leaves a
/// directory that is refused as incomplete rather than a half node that looks whole.
pub fn commit_staged(staging: &Path, dir: &Path) -> Result<(), DataDirError> {
    if !dir.exists() && fs::rename(staging, dir).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let mut names: Vec<_> = fs::read_dir(staging)
        .map_err(io(staging))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort_by_key(|n| n == STATE_FILE);
    for name in names {
        fs::rename(staging.join(&name), dir.join(&name)).map_err(io(dir))?;
    }
    fs::remove_dir(staging).map_err(io(staging))?;
    Ok(())
}
