//! Snapshots of the catalog state machine. The state machine already lives in redb, so this
//! node's own snapshot is a view of it (a read transaction, with the applied log id and
//! membership read in that same transaction) and its bytes are made only when a follower needs
//! them. Building a snapshot therefore costs a read, not a copy of the whole catalog written
//! back into the database; a snapshot received from the leader arrives encoded.

use std::io;

use redb::ReadTransaction;

use super::{applied_state_in, io_err};
use crate::types::{Snapshot, SnapshotMeta};

/// The contents of a snapshot.
pub enum SnapshotData {
    /// This node's state machine as of one committed round of the storage writer.
    View(ReadTransaction),
    /// A postcard-encoded `CatalogSnapshot`, as snapshots travel.
    Encoded(Vec<u8>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::View(_) => f.write_str("SnapshotData::View"),
            Self::Encoded(b) => write!(f, "SnapshotData::Encoded({} bytes)", b.len()),
        }
    }
}

impl SnapshotData {
    /// The encoded catalog. For a view this reads every catalog row, so it runs on a blocking
    /// thread.
    pub async fn into_encoded(self) -> io::Result<Vec<u8>> {
        match self {
            Self::Encoded(bytes) => Ok(bytes),
            Self::View(txn) => tokio::task::spawn_blocking(move || encode_view(&txn))
                .await
                .map_err(io_err)?,
        }
    }
}

fn encode_view(txn: &ReadTransaction) -> io::Result<Vec<u8>> {
    let bytes = causeway_catalog::state::export_encoded(txn).map_err(io_err)?;
    tracing::info!(bytes = bytes.len(), "encoded a snapshot for a follower");
    Ok(bytes)
}

/// A view of the state machine as the database shows it now. Blocking.
pub(super) fn view(db: &redb::Database) -> io::Result<Snapshot> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(io_err)?;
    let (last_log_id, last_membership) = applied_state_in(&txn)?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
        },
        snapshot: SnapshotData::View(txn),
    })
}
