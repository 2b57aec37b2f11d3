//! Git repositories as content: a `forge/repo` version's root is a hash sequence of git
//! bundles, each the objects new since the previous version (long chains are compacted into
//! one full bundle). Publishing appends a bundle; materializing a mirror verifies and applies
//! the bundles, moving refs atomically and only by fast-forward.

use std::path::{Path, PathBuf};

use causeway_sync::git::{self, ApplyOutcome, RefMap};
use iroh_blobs::{Hash, HashAndFormat, api::blobs::BlobStatus, hashseq::HashSeq};
use tokio::io::AsyncReadExt;

use super::ContentStore;
use crate::error::NodeError;

/// Bundles in a chain before publishing compacts it into one full bundle.
pub const MAX_CHAIN: usize = 32;
/// Bytes read at a time from a bundle blob until its header is complete (headers are usually
/// a few hundred bytes; the pack after it is not read).
const HEADER_READ_CHUNK: usize = 16 << 10;
/// Longest chain accepted in a version's root. Publishing compacts at [`MAX_CHAIN`]; the margin
/// is for a publisher with another setting. A peer chooses the chain, so it is bounded.
pub const MAX_RECEIVED_CHAIN: usize = 4 * MAX_CHAIN;
/// Most header bytes (refs and prerequisites) a whole chain may carry: every header is parsed
/// and kept in memory while a version is applied, and a peer chooses them.
pub const MAX_CHAIN_HEADER_BYTES: usize = 32 << 20;

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("git: {e}"))
}

fn git_err(e: git::GitError) -> NodeError {
    match e {
        git::GitError::NotARepository(p) => NodeError::Invalid(format!("{} is not a git repository", p.display())),
        other => NodeError::Refused(format!("git: {other}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(err)?
}

/// A chain is refused if it is longer than [`MAX_RECEIVED_CHAIN`] or names a bundle twice
/// (which no publisher makes, and which would make one blob's header count many times).
fn check_chain(chain: &[Hash]) -> Result<(), NodeError> {
    if chain.len() > MAX_RECEIVED_CHAIN {
        return Err(NodeError::Refused(format!(
            "a repository version of {} bundles; at most {MAX_RECEIVED_CHAIN} are accepted",
            chain.len()
        )));
    }
    let distinct: std::collections::HashSet<&Hash> = chain.iter().collect();
    if distinct.len() != chain.len() {
        return Err(NodeError::Refused("a repository version names one bundle twice".into()));
    }
    Ok(())
}

impl ContentStore {
    /// The bundle hashes of a repository version's root, in order.
    pub async fn bundle_chain(&self, root: HashAndFormat) -> Result<Vec<Hash>, NodeError> {
        if root.format != iroh_blobs::BlobFormat::HashSeq {
            return Err(NodeError::Invalid(
                "a repository version's root must be a hash sequence".into(),
            ));
        }
        // Sized before it is read: the root is the peer's, and so is its length.
        match self.store().blobs().status(root.hash).await.map_err(err)? {
            BlobStatus::Complete { size } if size <= (MAX_RECEIVED_CHAIN * 32) as u64 => {}
            BlobStatus::Complete { size } => {
                return Err(NodeError::Refused(format!(
                    "a repository version of {} bundles; at most {MAX_RECEIVED_CHAIN} are accepted",
                    size / 32
                )));
            }
            _ => return Err(err(format!("repository root {} is not complete here", root.hash))),
        }
        let bytes = self.store().blobs().get_bytes(root.hash).await.map_err(err)?;
        let seq = HashSeq::new(bytes).ok_or_else(|| err("malformed hash sequence"))?;
        let chain: Vec<Hash> = seq.iter().collect();
        check_chain(&chain)?;
        Ok(chain)
    }

    /// The header of each bundle of the chain, read from the first bytes of its blob (the
    /// packs are not copied), at most [`MAX_CHAIN_HEADER_BYTES`] of them in all.
    pub async fn chain_headers(&self, chain: &[Hash]) -> Result<Vec<git::BundleInfo>, NodeError> {
        check_chain(chain)?;
        let mut out = Vec::with_capacity(chain.len());
        let mut budget = MAX_CHAIN_HEADER_BYTES;
        for h in chain {
            let (info, used) = self.bundle_header(*h, budget).await?;
            budget -= used;
            out.push(info);
        }
        Ok(out)
    }

    /// One bundle's header and the bytes it took, refused past `budget` bytes.
    async fn bundle_header(&self, hash: Hash, budget: usize) -> Result<(git::BundleInfo, usize), NodeError> {
        let total = match self.store().blobs().status(hash).await.map_err(err)? {
            BlobStatus::Complete { size } => size,
            _ => return Err(err(format!("bundle {hash} is not complete here"))),
        };
        let mut reader = self.store().blobs().reader(hash);
        let mut prefix = Vec::new();
        let mut chunk = vec![0u8; HEADER_READ_CHUNK];
        loop {
            let n = reader.read(&mut chunk).await.map_err(err)?;
            // Only the new bytes (and the one before them) are searched for the header's end:
            // searching the whole prefix on every read made a large header cost its square.
            let searched_to = prefix.len().saturating_sub(1);
            prefix.extend_from_slice(&chunk[..n]);
            let at_end = n == 0 || prefix.len() as u64 >= total;
            let complete = prefix[searched_to..].windows(2).any(|w| w == b"\n\n");
            if prefix.len() > budget {
                return Err(NodeError::Refused(format!(
                    "bundle headers of a repository version exceed {MAX_CHAIN_HEADER_BYTES} bytes"
                )));
            }
            if !(complete || at_end) {
                continue;
            }
            let used = prefix.len();
            let parsed = tokio::task::spawn_blocking(move || git::bundle_info_from_prefix(&prefix, at_end, total))
                .await
                .map_err(err)?;
            return match parsed.map_err(git_err)? {
                Some(info) => Ok((info, used)),
                None => Err(err(format!("bundle {hash}: truncated header"))),
            };
        }
    }

    /// The refs a chain's bundles carry, later bundles overriding earlier ones: the refs of
    /// the version the chain makes.
    async fn chain_refs(&self, chain: &[Hash]) -> Result<RefMap, NodeError> {
        let mut refs = RefMap::new();
        for info in self.chain_headers(chain).await? {
            refs.extend(info.refs);
        }
        Ok(refs)
    }

    /// Publishes what is new in the bare repository at `repo` since the version rooted at
    /// `previous`. Returns the new root, or `None` when nothing changed.
    pub async fn publish_repo(
        &self,
        repo: &Path,
        previous: Option<HashAndFormat>,
        tag: &str,
    ) -> Result<Option<HashAndFormat>, NodeError> {
        let repo = repo.to_path_buf();
        if !git::is_bare_repo(&repo) {
            return Err(NodeError::Invalid(format!(
                "{} is not a bare git repository",
                repo.display()
            )));
        }
        let scratch = tempfile::Builder::new()
            .prefix("causeway-publish-")
            .tempdir()
            .map_err(err)?;
        let prev_chain = match previous {
            Some(r) => self.bundle_chain(r).await?,
            None => Vec::new(),
        };
        let since = self.chain_refs(&prev_chain).await?;
        let next = scratch.path().join("next.bundle");
        let full = scratch.path().join("full.bundle");
        let compact = prev_chain.len() + 1 > MAX_CHAIN;
        let (repo2, next2, full2) = (repo.clone(), next.clone(), full.clone());
        let made = blocking(move || {
            let now = git::refs(&repo2).map_err(git_err)?;
            if now == since {
                return Ok(None);
            }
            if compact {
                git::compact(&repo2, &full2).map_err(git_err)?;
                return Ok(Some(true));
            }
            Ok(git::create_bundle_at(&repo2, &since, &now, &next2)
                .map_err(git_err)?
                .map(|_| false))
        })
        .await?;
        let chain = match made {
            None => return Ok(None),
            Some(true) => vec![self.store().blobs().add_path(&full).await.map_err(err)?.hash],
            Some(false) => {
                let mut c = prev_chain;
                c.push(self.store().blobs().add_path(&next).await.map_err(err)?.hash);
                c
            }
        };
        let seq: HashSeq = chain.iter().copied().collect();
        let tt = self.store().blobs().add_bytes(seq.into_inner()).await.map_err(err)?;
        let root = HashAndFormat::hash_seq(tt.hash);
        self.tag(tag, root).await?;
        Ok(Some(root))
    }

    /// Brings the bare mirror at `mirror` up to the version rooted at `root` (complete here):
    /// every bundle the mirror lacks verified, refs moved atomically, divergent refs refused and
    /// reported. Only the bundles the mirror does not have yet are taken out of the store
    /// (hard-linked when it can) and read: a new version of a chain it has applied costs its
    /// new bundles only.
    pub async fn apply_repo(&self, root: HashAndFormat, mirror: &Path) -> Result<ApplyOutcome, NodeError> {
        let chain = self.bundle_chain(root).await?;
        let headers = self.chain_headers(&chain).await?;
        // Next to the mirror, so on the store's file system as a rule: the bundles are then
        // hard links to the store's files, not copies.
        let parent = match mirror.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(err)?;
        let scratch = tempfile::Builder::new()
            .prefix(".causeway-apply-")
            .tempdir_in(&parent)
            .map_err(err)?;
        let mirror = mirror.to_path_buf();
        let store = self.clone();
        let runtime = tokio::runtime::Handle::current();
        blocking(move || {
            if !git::is_bare_repo(&mirror) {
                let format = match headers.first() {
                    Some(h) => h.object_format,
                    None => return Err(NodeError::Invalid("empty bundle chain".into())),
                };
                git::init_bare_with(&mirror, format).map_err(git_err)?;
            }
            // Called on this blocking thread, for the bundles the mirror lacks only.
            let open = |i: usize| {
                let path = scratch.path().join(format!("{i:04}.bundle"));
                runtime
                    .block_on(store.export_blob(HashAndFormat::raw(chain[i]), &path))
                    .map_err(|e| {
                        git::GitError::Io(format!("exporting bundle {}", chain[i]), std::io::Error::other(e))
                    })?;
                Ok(path)
            };
            git::apply_chain(&mirror, &headers, git::ApplyMode::BestEffort, open).map_err(git_err)
        })
        .await
    }
}

impl ContentStore {
    /// A bundle of what the repository at `repo` has beyond the refs of the version rooted at
    /// `base`, imported as a blob; `None` when there is nothing new.
    pub async fn bundle_since(
        &self,
        repo: &Path,
        base: Option<HashAndFormat>,
    ) -> Result<Option<HashAndFormat>, NodeError> {
        let scratch = tempfile::Builder::new()
            .prefix("causeway-writeback-")
            .tempdir()
            .map_err(err)?;
        let chain = match base {
            Some(r) => self.bundle_chain(r).await?,
            None => Vec::new(),
        };
        let since = self.chain_refs(&chain).await?;
        let out = scratch.path().join("back.bundle");
        let (repo, out2) = (repo.to_path_buf(), out.clone());
        let made = blocking(move || {
            let now = git::refs(&repo).map_err(git_err)?;
            if now == since {
                return Ok(None);
            }
            Ok(git::create_bundle_at(&repo, &since, &now, &out2)
                .map_err(git_err)?
                .map(|_| ()))
        })
        .await?;
        if made.is_none() {
            return Ok(None);
        }
        let tt = self.store().blobs().add_path(&out).await.map_err(err)?;
        let root = HashAndFormat::raw(tt.hash);
        self.tag(&format!("writeback/{}", tt.hash), root).await?;
        Ok(Some(root))
    }

    /// Applies one bundle blob (complete here) to the bare repository at `repo`, by
    /// fast-forward only.
    pub async fn apply_bundle_blob(&self, root: HashAndFormat, repo: &Path) -> Result<ApplyOutcome, NodeError> {
        let scratch = tempfile::Builder::new()
            .prefix("causeway-apply-")
            .tempdir()
            .map_err(err)?;
        let file = scratch.path().join("in.bundle");
        self.store().blobs().export(root.hash, &file).await.map_err(err)?;
        let repo = repo.to_path_buf();
        blocking(move || git::apply_bundles(&repo, &[file]).map_err(git_err)).await
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs git for the test's own setup with a clean environment.
    fn run(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.org")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.org")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn commit_and_push(work: &Path, n: usize) {
        std::fs::write(work.join("f.txt"), format!("version {n}\n")).expect("write");
        run(work, &["add", "f.txt"]);
        run(work, &["commit", "-q", "-m", &format!("v{n}")]);
        run(work, &["push", "-q", "origin", "main"]);
    }

    /// A peer's version root is refused before its bundles are read when it repeats a bundle,
    /// is too long, or carries more header bytes than a chain may: each such root once cost
    /// the receiver a quadratic scan of every header and memory for every copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_chains_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(&tmp.path().join("blobs")).await.expect("store");
        let blobs = store.store().blobs();
        let root_of = |hashes: Vec<Hash>| async {
            let seq: HashSeq = hashes.into_iter().collect();
            let tt = blobs.add_bytes(seq.into_inner()).await.expect("add");
            HashAndFormat::hash_seq(tt.hash)
        };
        // One header far over the whole chain's budget, with no end line.
        let mut big = b"# v2 git bundle\n".to_vec();
        while big.len() <= MAX_CHAIN_HEADER_BYTES {
            big.extend_from_slice(format!("{:040x} refs/heads/b{}\n", big.len(), big.len()).as_bytes());
        }
        let big = blobs.add_bytes(big).await.expect("add").hash;
        let small = blobs.add_bytes(b"x".to_vec()).await.expect("add").hash;

        let repeated = root_of(vec![small, small]).await;
        assert!(matches!(store.bundle_chain(repeated).await, Err(NodeError::Refused(_))));
        let long: Vec<Hash> = (0..=MAX_RECEIVED_CHAIN as u32)
            .map(|i| Hash::new(i.to_le_bytes()))
            .collect();
        let long = root_of(long).await;
        assert!(matches!(store.bundle_chain(long).await, Err(NodeError::Refused(_))));
        assert!(matches!(store.chain_headers(&[big]).await, Err(NodeError::Refused(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_version_applies_only_its_new_bundle() {
        if !git::git_available() {
            eprintln!("skipping: the git program is not available");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let (origin, work, mirror) = (
            tmp.path().join("origin.git"),
            tmp.path().join("work"),
            tmp.path().join("mirror.git"),
        );
        git::init_bare(&origin).expect("init");
        std::fs::create_dir_all(&work).expect("mkdir");
        run(&work, &["init", "-q", "-b", "main"]);
        run(&work, &["remote", "add", "origin", origin.to_str().expect("utf8")]);
        commit_and_push(&work, 1);
        let store = ContentStore::open(&tmp.path().join("blobs")).await.expect("store");

        let v1 = store
            .publish_repo(&origin, None, "res/r")
            .await
            .expect("publish")
            .expect("v1");
        let outcome = store.apply_repo(v1, &mirror).await.expect("apply v1");
        assert_eq!(outcome.bundles_read, 1);
        // Nothing new: no version.
        assert_eq!(
            store.publish_repo(&origin, Some(v1), "res/r").await.expect("publish"),
            None
        );

        commit_and_push(&work, 2);
        let v2 = store
            .publish_repo(&origin, Some(v1), "res/r")
            .await
            .expect("publish")
            .expect("v2");
        assert_eq!(store.bundle_chain(v2).await.expect("chain").len(), 2);
        let outcome = store.apply_repo(v2, &mirror).await.expect("apply v2");
        assert_eq!(outcome.bundles_read, 1, "the first bundle was read again");
        assert_eq!(git::refs(&mirror).expect("refs"), git::refs(&origin).expect("refs"));
        git::fsck(&mirror).expect("fsck");

        // A fresh mirror reads the whole chain and ends the same.
        let fresh = tmp.path().join("fresh.git");
        let outcome = store.apply_repo(v2, &fresh).await.expect("apply to fresh");
        assert_eq!(outcome.bundles_read, 2);
        assert_eq!(git::refs(&fresh).expect("refs"), git::refs(&origin).expect("refs"));
        store.shutdown().await;
    }
}
