//! The size of a content root on another endpoint, asked before fetching it, so a transfer's
//! total is known from its start (progress bars, `sync status`). Each size is verified (the
//! last chunk of each blob, with its proof); a probe that fails or takes too long leaves the
//! total unknown and the fetch goes on without it.

use std::time::Duration;

use iroh::endpoint::Connection;
use iroh_blobs::{BlobFormat, HashAndFormat, get::request};

/// How long the probe may take before the fetch starts without it.
pub const SIZE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most children of a hash sequence whose sizes are probed: each costs its last chunk (up to
/// 1 KiB and its proof), so a collection of many more small files is fetched with its total
/// unknown rather than fetched twice.
pub const MAX_PROBED_CHILDREN: u64 = 4096;
/// Bytes per entry of a hash sequence.
const HASH_LEN: u64 = 32;

/// The total bytes of `root` (a hash sequence: its own bytes and every child's) as the endpoint
/// behind `conn` holds it, or `None` when it cannot be told in time.
pub async fn remote_size(conn: &Connection, root: HashAndFormat) -> Option<u64> {
    let probe = async {
        match root.format {
            BlobFormat::Raw => request::get_verified_size(conn, &root.hash)
                .await
                .ok()
                .map(|(size, _)| size),
            BlobFormat::HashSeq => {
                let (seq, sizes) =
                    request::get_hash_seq_and_sizes(conn, &root.hash, MAX_PROBED_CHILDREN * HASH_LEN, None)
                        .await
                        .ok()?;
                Some(hash_seq_total(seq.len() as u64, &sizes))
            }
        }
    };
    match tokio::time::timeout(SIZE_PROBE_TIMEOUT, probe).await {
        Ok(size) => size,
        Err(_) => {
            tracing::debug!(%root, "size probe timed out; the total stays unknown");
            None
        }
    }
}

/// A hash sequence's own bytes plus its children's.
fn hash_seq_total(children: u64, sizes: &[u64]) -> u64 {
    sizes
        .iter()
        .fold(children.saturating_mul(HASH_LEN), |sum, s| sum.saturating_add(*s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_seq_counts_its_own_bytes_and_never_overflows() {
        assert_eq!(hash_seq_total(2, &[10, 20]), 64 + 30);
        assert_eq!(hash_seq_total(0, &[]), 0);
        assert_eq!(hash_seq_total(1, &[u64::MAX]), u64::MAX);
    }
}
