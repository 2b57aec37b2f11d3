//! The node's iroh-blobs store (`DATA_DIR/blobs`): import a file as a content root, check
//! whether a root is complete here, fetch it from another endpoint with progress, export it.
//! Every root a resource version points at is held by a named tag, so it is never collected.

use std::path::Path;

use iroh::endpoint::Connection;
use iroh_blobs::{
    HashAndFormat,
    api::{
        TempTag,
        proto::{AddProgressItem, BlobStatus},
        remote::GetProgressItem,
    },
    format::collection::Collection,
    store::fs::{FsStore, options::PathOptions},
};

use super::imports::{ImportGuard, Imports};
use n0_future::StreamExt;

use crate::error::NodeError;

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("blob store: {e}"))
}

/// Where `target` is written before it is moved into place: beside it, named after all of
/// its file name (two mirrors `x.bin` and `x.txt` must not share one), starting with `.` (so
/// never another mirror's path).
fn partial_path(target: &Path) -> std::path::PathBuf {
    super::layout::sibling(target, super::layout::PARTIAL_SUFFIX)
}

/// Most files in a directory artifact.
pub const MAX_DIR_FILES: usize = 100_000;

#[derive(Clone, Debug)]
pub struct ContentStore {
    store: FsStore,
    /// Where the store keeps complete blobs as files of its own.
    paths: PathOptions,
    /// Imports running now, for the CLI's progress display.
    imports: Imports,
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
        Ok(Self {
            store,
            paths: PathOptions::new(dir),
            imports: Imports::default(),
        })
    }

    pub fn store(&self) -> &FsStore {
        &self.store
    }

    /// The imports running on this node, by tag.
    pub fn imports(&self) -> &Imports {
        &self.imports
    }

    /// Adds one file to the store, reporting its copy and hashing to `guard`. The temp tag
    /// keeps the blob until the caller's named tag does.
    async fn add_tracked(&self, path: &Path, guard: &mut ImportGuard) -> Result<TempTag, NodeError> {
        let abs = std::path::absolute(path).map_err(err)?;
        let mut stream = self.store.blobs().add_path(abs).stream().await;
        let mut size = 0;
        while let Some(item) = stream.next().await {
            match item {
                AddProgressItem::Size(s) => size = s,
                AddProgressItem::CopyProgress(offset) => guard.copied(offset),
                AddProgressItem::CopyDone => guard.copied(size),
                AddProgressItem::OutboardProgress(offset) => guard.hashed(offset),
                AddProgressItem::Done(tt) => {
                    guard.file_done(size);
                    return Ok(tt);
                }
                AddProgressItem::Error(e) => return Err(err(e)),
            }
        }
        Err(err(format!("import of {} ended without completing", path.display())))
    }

    /// Imports a file (verifying nothing: it is ours) and tags it under `tag`.
    pub async fn import_file(&self, path: &Path, tag: &str) -> Result<HashAndFormat, NodeError> {
        if path.is_dir() {
            return self.import_dir(path, tag).await;
        }
        if !path.is_file() {
            return Err(NodeError::Invalid(format!(
                "{} is not a regular file or a directory",
                path.display()
            )));
        }
        let size = std::fs::metadata(path).map_err(err)?.len();
        let mut guard = self.imports.begin(tag, size, 1);
        let tt = self.add_tracked(path, &mut guard).await?;
        let root = HashAndFormat::raw(tt.hash());
        self.tag(tag, root).await?;
        Ok(root)
    }

    /// Imports a directory (every regular file below it, symlinks skipped) as a collection:
    /// a hash sequence of the file blobs plus their relative paths.
    pub async fn import_dir(&self, dir: &Path, tag: &str) -> Result<HashAndFormat, NodeError> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).map_err(err)? {
                let entry = entry.map_err(err)?;
                let kind = entry.file_type().map_err(err)?;
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file() {
                    files.push(entry.path());
                    if files.len() > MAX_DIR_FILES {
                        return Err(NodeError::Invalid(format!(
                            "{} has more than {MAX_DIR_FILES} files",
                            dir.display()
                        )));
                    }
                }
            }
        }
        files.sort();
        let mut total: u64 = 0;
        for f in &files {
            total = total.saturating_add(std::fs::metadata(f).map_err(err)?.len());
        }
        let mut guard = self.imports.begin(tag, total, files.len() as u64);
        let mut collection = Collection::default();
        // Each file's temp tag holds it until the collection's tag does.
        let mut held = Vec::with_capacity(files.len());
        for f in &files {
            let rel = f.strip_prefix(dir).map_err(err)?;
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let tt = self.add_tracked(f, &mut guard).await?;
            collection.push(name, tt.hash());
            held.push(tt);
        }
        let tt = collection.store(&self.store).await.map_err(err)?;
        let root = HashAndFormat::hash_seq(tt.hash());
        self.tag(tag, root).await?;
        drop(held);
        Ok(root)
    }

    /// Writes a complete collection into the directory `target`, replacing what was there only
    /// once every file is written (see [`super::layout::swap_into_place`]). A collection whose
    /// entry names could escape `target`, repeat, or clash is refused before anything is
    /// written.
    pub async fn export_collection(&self, root: HashAndFormat, target: &Path) -> Result<(), NodeError> {
        let collection = Collection::load(root.hash, &*self.store).await.map_err(err)?;
        super::layout::check_entry_names(collection.iter().map(|(n, _)| n.as_str()), MAX_DIR_FILES)?;
        let partial = partial_path(target);
        super::layout::remove_any(&partial).map_err(err)?;
        std::fs::create_dir(&partial).map_err(err)?;
        for (name, hash) in collection.iter() {
            let dest = partial.join(name);
            if let Some(parent) = dest.parent() {
                // Only directories this loop made are below `partial`: no symlink to follow.
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            self.place(*hash, &dest).await?;
        }
        super::layout::swap_into_place(&partial, target)
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
        let mut pace = Pace::new(std::time::Instant::now());
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
                GetProgressItem::Progress(n) => {
                    pace.observe(n, std::time::Instant::now())?;
                    progress(n)
                }
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

    /// Drops the tag `tag` (the content stays until nothing holds it).
    pub async fn untag(&self, tag: &str) -> Result<(), NodeError> {
        self.store.tags().delete(tag).await.map_err(err).map(|_| ())
    }

    /// Writes a complete blob to `target` (atomically: temp file, then rename).
    pub async fn export_blob(&self, root: HashAndFormat, target: &Path) -> Result<(), NodeError> {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = partial_path(target);
        super::layout::remove_any(&tmp).map_err(err)?;
        self.place(root.hash, &tmp).await?;
        super::layout::swap_into_place(&tmp, target)
    }

    /// Puts the complete blob `hash` at `path`, which must not exist yet: an existing file (a
    /// store file linked there by an earlier entry, or a symlink) is never opened for writing.
    /// When the store holds the blob as a file of its own, `path` becomes a hard link to it:
    /// no copy, which is about half the time of a large pull. A complete blob's file is never
    /// written again, and the link is made read-only so that editing a mirror cannot corrupt
    /// the store; removing either name leaves the other intact. Otherwise (small blobs kept
    /// inline, another file system) the bytes are copied into a file created here.
    async fn place(&self, hash: iroh_blobs::Hash, path: &Path) -> Result<(), NodeError> {
        let path = std::path::absolute(path).map_err(err)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(NodeError::Refused(format!(
                "{} already exists: not overwriting it",
                path.display()
            )));
        }
        if let Ok(BlobStatus::Complete { size }) = self.store.blobs().status(hash).await {
            match std::fs::hard_link(self.paths.data_path(&hash), &path) {
                Ok(()) => {
                    let linked = std::fs::metadata(&path).map_err(err)?;
                    if linked.len() == size {
                        let mut perms = linked.permissions();
                        perms.set_readonly(true);
                        std::fs::set_permissions(&path, perms).map_err(err)?;
                        return Ok(());
                    }
                    // Not the layout we expect: never hand out a file of the wrong size.
                    tracing::debug!(%hash, "store file has an unexpected size; copying");
                    std::fs::remove_file(&path).map_err(err)?;
                }
                Err(e) => tracing::debug!(%hash, error = %e, "no store file to link; copying"),
            }
        }
        // `create_new` fails on anything already there, a symlink included.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mut reader = self.store.blobs().reader(hash);
        tokio::io::copy(&mut reader, &mut file).await.map_err(err)?;
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(err)?;
        Ok(())
    }

    pub async fn shutdown(&self) {
        let _ = self.store.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn export_links_large_blobs_read_only_and_copies_small_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(&dir.path().join("blobs")).await.expect("store");
        let big: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (src_big, src_small) = (dir.path().join("big"), dir.path().join("small"));
        std::fs::write(&src_big, &big).expect("write");
        std::fs::write(&src_small, b"tiny").expect("write");
        let big_root = store.import_file(&src_big, "t/big").await.expect("import");
        let small_root = store.import_file(&src_small, "t/small").await.expect("import");

        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("mkdir");
        store.export_blob(big_root, &out.join("big")).await.expect("export");
        store.export_blob(small_root, &out.join("small")).await.expect("export");
        assert_eq!(std::fs::read(out.join("big")).expect("read"), big);
        assert_eq!(std::fs::read(out.join("small")).expect("read"), b"tiny");

        // The large blob is the store's own file under a second name, read-only.
        let linked = std::fs::metadata(out.join("big")).expect("meta");
        let stored = std::fs::metadata(store.paths.data_path(&big_root.hash)).expect("store file");
        assert_eq!(linked.ino(), stored.ino());
        assert!(linked.permissions().readonly());

        assert_ne!(partial_path(&out.join("x.bin")), partial_path(&out.join("x.txt")));
        // Exporting again over a previous version replaces it without touching the store.
        store
            .export_blob(big_root, &out.join("big"))
            .await
            .expect("export again");
        std::fs::remove_file(out.join("big")).expect("remove mirror");
        assert!(store.is_complete(big_root).await);
        store.shutdown().await;
    }
}

/// Least a transfer must move in every [`PROGRESS_WINDOW`]: about 4 KiB/s, far below any real
/// link, so only a peer that trickles on purpose (to hold a transfer slot) falls under it.
pub const MIN_PROGRESS_PER_WINDOW: u64 = 256 << 10;
/// The span over which a transfer's progress is judged.
pub const PROGRESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Judges a transfer's pace window by window from its cumulative byte count.
struct Pace {
    window_start: std::time::Instant,
    bytes_at_start: u64,
}

impl Pace {
    fn new(now: std::time::Instant) -> Self {
        Self {
            window_start: now,
            bytes_at_start: 0,
        }
    }

    /// `bytes`: the transfer's bytes so far. Refuses a window that moved too little.
    fn observe(&mut self, bytes: u64, now: std::time::Instant) -> Result<(), NodeError> {
        if now.duration_since(self.window_start) < PROGRESS_WINDOW {
            return Ok(());
        }
        let moved = bytes.saturating_sub(self.bytes_at_start);
        if moved < MIN_PROGRESS_PER_WINDOW {
            return Err(NodeError::Refused(format!(
                "transfer too slow: {moved} bytes in {} s (at least {MIN_PROGRESS_PER_WINDOW} needed)",
                PROGRESS_WINDOW.as_secs()
            )));
        }
        self.window_start = now;
        self.bytes_at_start = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn a_trickle_is_given_up_and_a_real_pace_is_not() {
        let t0 = std::time::Instant::now();
        let mut pace = Pace::new(t0);
        assert!(pace.observe(10, t0 + PROGRESS_WINDOW / 2).is_ok());
        assert!(pace.observe(10 + MIN_PROGRESS_PER_WINDOW, t0 + PROGRESS_WINDOW).is_ok());
        // The next window starts where this one ended: a trickle in it is refused.
        let t1 = t0 + PROGRESS_WINDOW;
        assert!(
            pace.observe(20 + MIN_PROGRESS_PER_WINDOW, t1 + PROGRESS_WINDOW)
                .is_err()
        );
    }
}
