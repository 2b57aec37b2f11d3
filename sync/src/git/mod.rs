//! Git repositories as chains of incremental bundles, through the `git` program.
//!
//! A `forge/repo` resource points at a bare repository. Each new version is the previous one
//! plus one bundle ([`create_bundle`]): the refs that were added or moved since the previous
//! version's refs, and a pack of the objects new since then. A receiver verifies bundles
//! ([`verify_bundle`]) and applies a chain of them to its bare mirror ([`apply_bundles`]), which
//! moves the mirror's refs in one atomic transaction, only by fast-forward, only after every
//! object has arrived and been checked. [`compact`] makes one full bundle that can replace a
//! long chain.
//!
//! # Rules
//!
//! * **Which refs.** Branches and tags only (`refs/heads/*`, `refs/tags/*`). `HEAD` in a bundle
//!   is ignored; any other ref in a bundle is refused.
//! * **Fast-forward only.** A branch moves only when its current value is an ancestor of the
//!   incoming one. A tag never moves once it exists (as `git fetch` does without `--force`). A
//!   ref that cannot move is *refused*: left as it is and reported in [`ApplyOutcome::refused`].
//!   With [`ApplyMode::BestEffort`] (what [`apply_bundles`] uses) the other refs still move, the
//!   way a non-atomic `git push` treats independent branches; with [`ApplyMode::AllOrNothing`]
//!   no branch or tag moves and the call fails with [`GitError::Divergent`].
//! * **Refused tips stay reachable.** The objects of a refused tip are kept under
//!   `refs/causeway/refused/<heads|tags>/<name>` (outside the branch and tag namespaces, so
//!   clones do not see them), because later bundles from the origin build on that history and
//!   need it as a prerequisite. The pin is updated by later refusals and removed once the ref is
//!   accepted again or the origin returns to the mirror's value.
//! * **Deletions are not propagated.** A bundle cannot express "this ref is gone", and removing
//!   a branch loses history just like a non-fast-forward move; a mirror keeps refs its origin
//!   deleted. [`create_bundle`] returns `None` when refs were only deleted. A new ref whose name
//!   collides with a kept one (`a` versus `a/b`) is refused.
//! * **Paths.** Every `repo` / `mirror` argument is a git directory (a bare repository, or a
//!   `.git` directory); a working tree's top directory is not one.
//! * **Environment.** Every `git` runs with a cleared environment (`PATH` kept,
//!   `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`, `HOME` = the repository,
//!   `GIT_TERMINAL_PROMPT=0`, `LC_ALL=C`), `--git-dir` given explicitly (never discovered from
//!   the working directory), no automatic gc, `core.fsync=committed`, stdin closed unless we
//!   feed it. Its stderr is captured (up to 64 KiB) into [`GitError::Command`]; stdout we read is
//!   capped at 64 MiB unless streamed line by line.
//! * **Concurrency.** [`apply_bundles`] and [`gc`] hold an exclusive advisory lock on
//!   `<mirror>/causeway.lock` for their whole run, so they serialize on one mirror; the ref
//!   transaction also checks each ref's old value, so a ref moved by anyone else meanwhile fails
//!   the transaction instead of being overwritten.

mod bundle;
mod cmd;
mod hook;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use bundle::ObjectFormat;
pub use hook::{HOOK_MARKER, install_notify_hook};

use bundle::{Header, is_hex_oid, read_header, write_header};
use cmd::{GitCmd, absolute};

/// Full ref name -> 40/64-hex object id.
pub type RefMap = BTreeMap<String, String>;

/// Where [`apply_bundles`] holds incoming refs before deciding on them.
pub const QUARANTINE_PREFIX: &str = "refs/causeway/incoming/";
/// Where the tips of refused refs are kept reachable.
pub const REFUSED_PREFIX: &str = "refs/causeway/refused/";

/// Everything that can go wrong with a repository or a bundle.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("the git program cannot be run: {0}")]
    GitUnavailable(String),
    #[error("{}: not a git repository", .0.display())]
    NotARepository(PathBuf),
    #[error("git {args} failed (exit {}): {stderr}", status.map_or_else(|| "by signal".to_string(), |c| c.to_string()))]
    Command {
        args: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error("git {args}: output larger than {limit} bytes")]
    OutputTooLarge { args: String, limit: usize },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("refused (divergent or not allowed to move): {}", list(.0))]
    Divergent(Vec<String>),
    #[error("invalid bundle: {0}")]
    InvalidBundle(String),
    #[error("the repository lacks the bundle's prerequisite commits: {}", list(.0))]
    MissingPrerequisites(Vec<String>),
    #[error("objects missing from the repository: {}", list(.0))]
    MissingObjects(Vec<String>),
    #[error("invalid ref {name:?}: {reason}")]
    InvalidRef { name: String, reason: String },
    #[error("object format mismatch: repository uses {repo}, bundle uses {bundle}")]
    ObjectFormatMismatch { repo: String, bundle: String },
    #[error("nothing to bundle: {0}")]
    NothingToBundle(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unexpected output from git {args}: {output}")]
    UnexpectedOutput { args: String, output: String },
}

fn list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// What a bundle carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleInfo {
    /// The refs in the bundle's header. For [`create_bundle`]: only the refs added or moved
    /// since the previous version (an unchanged ref is not repeated).
    pub refs: RefMap,
    /// Commits the receiver must already have (empty for a full bundle).
    pub prerequisites: Vec<String>,
    /// Size of the bundle file.
    pub bytes: u64,
    /// The hash algorithm of the bundle's object ids (a mirror must use the same).
    pub object_format: ObjectFormat,
}

/// A ref [`apply_bundles`] did not move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedRef {
    pub name: String,
    /// The mirror's value (unchanged); `None` when the mirror has no such ref.
    pub current: Option<String>,
    /// What the bundle chain wanted it to be.
    pub incoming: String,
    pub reason: String,
}

/// What [`apply_bundles`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Refs created or fast-forwarded, with their new values.
    pub updated: RefMap,
    /// Refs left as they were, with the reason.
    pub refused: Vec<RefusedRef>,
}

impl ApplyOutcome {
    /// `Err(Divergent)` naming the refused refs, if any.
    pub fn into_result(self) -> Result<RefMap, GitError> {
        if self.refused.is_empty() {
            Ok(self.updated)
        } else {
            Err(GitError::Divergent(self.refused.into_iter().map(|r| r.name).collect()))
        }
    }
}

/// What to do when some refs cannot move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApplyMode {
    /// Move every ref that can move; report the others.
    #[default]
    BestEffort,
    /// Move nothing if any ref is refused; fail with [`GitError::Divergent`].
    AllOrNothing,
}

/// Whether the `git` program can be run.
pub fn git_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| GitCmd::new(None).arg("--version").run().is_ok())
}

/// The `git --version` line.
pub fn git_version() -> Result<String, GitError> {
    let out = GitCmd::new(None).arg("--version").run()?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Whether `path` is a bare git repository.
pub fn is_bare_repo(path: &Path) -> bool {
    path.is_dir()
        && GitCmd::new(Some(path))
            .args(["rev-parse", "--is-bare-repository"])
            .run()
            .is_ok_and(|out| out.trim_ascii() == b"true")
}

fn ensure_repo(path: &Path) -> Result<(), GitError> {
    if !path.is_dir() {
        return Err(GitError::NotARepository(path.to_path_buf()));
    }
    match GitCmd::new(Some(path)).args(["rev-parse", "--git-dir"]).run() {
        Ok(_) => Ok(()),
        Err(GitError::Command { stderr, .. }) if stderr.contains("not a git repository") => {
            Err(GitError::NotARepository(path.to_path_buf()))
        }
        Err(e) => Err(e),
    }
}

/// Creates a bare repository at `path` (and its parent directories); initial branch `main`,
/// SHA-1 object ids. Re-running it on an existing repository is harmless.
pub fn init_bare(path: &Path) -> Result<(), GitError> {
    init_bare_with(path, ObjectFormat::Sha1)
}

/// [`init_bare`] with a given hash algorithm (a mirror must use its origin's:
/// [`BundleInfo::object_format`]).
pub fn init_bare_with(path: &Path, format: ObjectFormat) -> Result<(), GitError> {
    fs::create_dir_all(path).map_err(|e| GitError::Io(format!("creating {}", path.display()), e))?;
    GitCmd::new(None)
        .config("init.defaultBranch=main")
        .args(["init", "--bare", "--quiet"])
        .arg(format!("--object-format={}", format.name()))
        .arg(absolute(path))
        .run()?;
    Ok(())
}

/// The repository's hash algorithm.
pub fn object_format(repo: &Path) -> Result<ObjectFormat, GitError> {
    ensure_repo(repo)?;
    let out = GitCmd::new(Some(repo))
        .args(["rev-parse", "--show-object-format"])
        .run()?;
    let text = String::from_utf8_lossy(&out).trim().to_string();
    ObjectFormat::parse(&text).ok_or(GitError::UnexpectedOutput {
        args: "rev-parse --show-object-format".into(),
        output: text,
    })
}

/// Branches and tags (`refs/heads/*`, `refs/tags/*`) with the objects they point at (a tag ref
/// to an annotated tag gives the tag object). `HEAD` is not included.
pub fn refs(repo: &Path) -> Result<RefMap, GitError> {
    refs_under(repo, &["refs/heads/", "refs/tags/"])
}

fn refs_under(repo: &Path, prefixes: &[&str]) -> Result<RefMap, GitError> {
    ensure_repo(repo)?;
    let out = GitCmd::new(Some(repo))
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .args(prefixes)
        .run()?;
    let text = String::from_utf8(out).map_err(|_| GitError::UnexpectedOutput {
        args: "for-each-ref".into(),
        output: "non-UTF-8 ref names".into(),
    })?;
    let mut map = RefMap::new();
    for line in text.lines() {
        let (oid, name) = line.split_once(' ').ok_or_else(|| GitError::UnexpectedOutput {
            args: "for-each-ref".into(),
            output: line.to_string(),
        })?;
        map.insert(name.to_string(), oid.to_string());
    }
    Ok(map)
}

/// The branch `HEAD` points at (e.g. `refs/heads/main`), if it is symbolic.
pub fn head(repo: &Path) -> Result<Option<String>, GitError> {
    ensure_repo(repo)?;
    let out = GitCmd::new(Some(repo)).args(["symbolic-ref", "-q", "HEAD"]).output()?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_string())),
        Some(1) => Ok(None),
        _ => Err(cmd::command_error(
            "symbolic-ref -q HEAD".into(),
            out.status,
            out.stderr,
        )),
    }
}

/// Points `HEAD` at `branch` (a full `refs/heads/...` name), e.g. to follow the origin's
/// default branch on a mirror.
pub fn set_head(repo: &Path, branch: &str) -> Result<(), GitError> {
    if !branch.starts_with("refs/heads/") {
        return Err(GitError::InvalidRef {
            name: branch.into(),
            reason: "HEAD must point at a branch (refs/heads/...)".into(),
        });
    }
    ensure_repo(repo)?;
    GitCmd::new(Some(repo)).args(["symbolic-ref", "HEAD", branch]).run()?;
    Ok(())
}

/// Fast-forward check helper: is `ancestor` an ancestor of `descendant` in `repo`? (A commit is
/// its own ancestor.) Both are object ids or full ref names; tags are peeled.
pub fn is_ancestor(repo: &Path, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
    for rev in [ancestor, descendant] {
        let hex = rev.len() >= 40 && rev.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex || rev.starts_with("refs/")) {
            return Err(GitError::InvalidArgument(format!(
                "{rev:?} is neither an object id nor a full ref name"
            )));
        }
    }
    let out = GitCmd::new(Some(repo))
        .args(["merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant])
        .output()?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => {
            if out.stderr.contains("not a git repository") {
                return Err(GitError::NotARepository(repo.to_path_buf()));
            }
            Err(cmd::command_error(
                format!("merge-base --is-ancestor {ancestor} {descendant}"),
                out.status,
                out.stderr,
            ))
        }
    }
}

/// `git fsck` (full, without listing dangling objects): every object present and intact.
pub fn fsck(repo: &Path) -> Result<(), GitError> {
    ensure_repo(repo)?;
    GitCmd::new(Some(repo))
        .args(["fsck", "--no-progress", "--no-dangling"])
        .run()?;
    Ok(())
}

/// `git gc` with its default grace period for unreachable objects. Our own commands never run
/// gc automatically; the node decides when. Waits for a running [`apply_bundles`] to finish.
pub fn gc(repo: &Path) -> Result<(), GitError> {
    ensure_repo(repo)?;
    let _lock = RepoLock::acquire(repo)?;
    GitCmd::new(Some(repo)).args(["gc", "--quiet"]).run()?;
    Ok(())
}

/// Tips of refs the mirror refused, kept reachable (`refs/causeway/refused/...` -> oid).
pub fn refused_pins(mirror: &Path) -> Result<RefMap, GitError> {
    refs_under(mirror, &[REFUSED_PREFIX])
}

fn check_ref_map(map: &RefMap, format: ObjectFormat, what: &str) -> Result<(), GitError> {
    for (name, oid) in map {
        if !is_hex_oid(oid, format) {
            return Err(GitError::InvalidRef {
                name: name.clone(),
                reason: format!("{what}: {oid:?} is not a {} object id", format.name()),
            });
        }
    }
    Ok(())
}

/// For each input (an object name or expression), its `(object id, type)`, or `None` if missing.
fn batch_check(repo: &Path, inputs: &[String]) -> Result<Vec<Option<(String, String)>>, GitError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let mut stdin = Vec::new();
    for i in inputs {
        if i.contains(['\n', '\0']) {
            return Err(GitError::InvalidArgument(format!("bad object name {i:?}")));
        }
        stdin.extend_from_slice(i.as_bytes());
        stdin.push(b'\n');
    }
    let mut results = Vec::with_capacity(inputs.len());
    GitCmd::new(Some(repo))
        .args(["cat-file", "--batch-check=%(objectname) %(objecttype)"])
        .stdin_bytes(stdin)
        .run_lines(|line| {
            let line = String::from_utf8_lossy(line);
            results.push(match line.rsplit_once(' ') {
                Some((_, "missing" | "ambiguous")) | None => None,
                Some((oid, ty)) => Some((oid.to_string(), ty.to_string())),
            });
        })?;
    if results.len() != inputs.len() {
        return Err(GitError::UnexpectedOutput {
            args: "cat-file --batch-check".into(),
            output: format!("{} answers for {} questions", results.len(), inputs.len()),
        });
    }
    Ok(results)
}

/// The ids in `oids` that `repo` does not have.
fn missing_objects(repo: &Path, oids: &[String]) -> Result<Vec<String>, GitError> {
    let found = batch_check(repo, oids)?;
    Ok(oids
        .iter()
        .zip(found)
        .filter(|(_, f)| f.is_none())
        .map(|(o, _)| o.clone())
        .collect())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The bundle of everything reachable from `repo`'s refs that is not reachable from `since`
/// (the refs of the previous version; empty = full bundle). None when nothing changed (same
/// refs, or refs only deleted).
///
/// The refs are read when the call starts; a caller that records "the refs of this version"
/// for the next call should take them with [`refs`] and use [`create_bundle_at`], so a push
/// racing with the call cannot slip between the two.
pub fn create_bundle(repo: &Path, since: &RefMap, out: &Path) -> Result<Option<BundleInfo>, GitError> {
    let at = refs(repo)?;
    create_bundle_at(repo, since, &at, out)
}

/// A full bundle of the current refs, to replace a long chain.
pub fn compact(repo: &Path, out: &Path) -> Result<BundleInfo, GitError> {
    let at = refs(repo)?;
    create_bundle_at(repo, &RefMap::new(), &at, out)?
        .ok_or_else(|| GitError::NothingToBundle(format!("{} has no branches or tags", repo.display())))
}

/// [`create_bundle`] for a given snapshot `at` of the repository's branches and tags (as
/// returned by [`refs`]): carries the refs of `at` that are new or differ from `since`, and the
/// objects they reach that `since` does not.
///
/// Unlike `git bundle create`, a ref whose commit the receiver already has (a new branch or
/// a lightweight tag on an old commit, a branch moved back) is still carried: its commit is
/// listed as a prerequisite and the pack holds no new objects for it. The header is written
/// here; the pack comes from `git pack-objects`. Ids in `since` the repository no longer has
/// (history rewritten and pruned) are skipped, which only makes the bundle bigger.
pub fn create_bundle_at(repo: &Path, since: &RefMap, at: &RefMap, out: &Path) -> Result<Option<BundleInfo>, GitError> {
    let format = object_format(repo)?;
    for name in at.keys() {
        if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) {
            return Err(GitError::InvalidRef {
                name: name.clone(),
                reason: "only branches and tags are bundled".into(),
            });
        }
    }
    check_ref_map(at, format, "snapshot")?;
    check_ref_map(since, format, "since")?;
    let changed: RefMap = at
        .iter()
        .filter(|(name, oid)| since.get(*name) != Some(*oid))
        .map(|(n, o)| (n.clone(), o.clone()))
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }

    // What the new tips are (peeled through tags).
    let tips: Vec<String> = changed.values().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let peel_queries: Vec<String> = tips.iter().map(|t| format!("{t}^{{}}")).collect();
    let peeled = batch_check(repo, &peel_queries)?;
    let missing: Vec<String> = tips
        .iter()
        .zip(&peeled)
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    if !missing.is_empty() {
        return Err(GitError::MissingObjects(missing));
    }
    let tip_commits: BTreeSet<String> = peeled
        .into_iter()
        .flatten()
        .filter(|(_, ty)| ty == "commit")
        .map(|(oid, _)| oid)
        .collect();

    // What the receiver has: the previous version's tips we still have.
    let since_oids: Vec<String> = since.values().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let present = batch_check(repo, &since_oids)?;
    let negatives: Vec<String> = since_oids
        .into_iter()
        .zip(present)
        .filter(|(_, p)| p.is_some())
        .map(|(o, _)| o)
        .collect();

    // Prerequisites: the boundary commits, plus new tips the receiver already has.
    let mut prerequisites = BTreeSet::new();
    if !tip_commits.is_empty() {
        let mut stdin = String::new();
        for c in &tip_commits {
            stdin.push_str(c);
            stdin.push('\n');
        }
        for n in &negatives {
            stdin.push('^');
            stdin.push_str(n);
            stdin.push('\n');
        }
        let mut listed = BTreeSet::new();
        GitCmd::new(Some(repo))
            .args(["rev-list", "--boundary", "--stdin"])
            .stdin_bytes(stdin.into_bytes())
            .run_lines(|line| {
                let line = String::from_utf8_lossy(line);
                if let Some(b) = line.strip_prefix('-') {
                    prerequisites.insert(b.to_string());
                } else if tip_commits.contains(line.as_ref()) {
                    listed.insert(line.into_owned());
                }
            })?;
        for c in tip_commits.difference(&listed) {
            prerequisites.insert(c.clone());
        }
    }
    let prerequisites: Vec<String> = prerequisites.into_iter().collect();

    // Header, then the pack, into a temporary file renamed into place when complete.
    let out = absolute(out);
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(|e| GitError::Io(format!("creating {}", parent.display()), e))?;
    }
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{file_name}.tmp-{}", unique_suffix()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| GitError::Io(format!("creating {}", tmp.display()), e))?;
        let mut w = BufWriter::new(file);
        write_header(&mut w, format, &prerequisites, &changed)
            .map_err(|e| GitError::Io(format!("writing {}", tmp.display()), e))?;
        let file = w
            .into_inner()
            .map_err(|e| GitError::Io(format!("writing {}", tmp.display()), e.into_error()))?;
        let mut revs = String::new();
        for t in &tips {
            revs.push_str(t);
            revs.push('\n');
        }
        for n in &negatives {
            revs.push('^');
            revs.push_str(n);
            revs.push('\n');
        }
        let pack_out = file
            .try_clone()
            .map_err(|e| GitError::Io(format!("writing {}", tmp.display()), e))?;
        GitCmd::new(Some(repo))
            .args([
                "pack-objects",
                "--stdout",
                "--thin",
                "--delta-base-offset",
                "--revs",
                "-q",
            ])
            .stdin_bytes(revs.into_bytes())
            .run_to_file(pack_out)?;
        file.sync_all()
            .map_err(|e| GitError::Io(format!("syncing {}", tmp.display()), e))?;
        fs::rename(&tmp, &out).map_err(|e| GitError::Io(format!("renaming to {}", out.display()), e))?;
        fs::metadata(&out)
            .map(|m| m.len())
            .map_err(|e| GitError::Io(format!("reading {}", out.display()), e))
    })();
    match result {
        Ok(bytes) => Ok(Some(BundleInfo {
            refs: changed,
            prerequisites,
            bytes,
            object_format: format,
        })),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Reads a bundle's header (refs, prerequisites) without any repository.
pub fn bundle_info(bundle: &Path) -> Result<BundleInfo, GitError> {
    let header = read_header(bundle)?;
    info_from(&header, bundle)
}

fn info_from(header: &Header, bundle: &Path) -> Result<BundleInfo, GitError> {
    let bytes = fs::metadata(bundle)
        .map_err(|e| GitError::Io(format!("reading {}", bundle.display()), e))?
        .len();
    Ok(BundleInfo {
        refs: header.ref_map(),
        prerequisites: header.prerequisites.clone(),
        bytes,
        object_format: header.object_format,
    })
}

fn check_format(repo_format: ObjectFormat, header: &Header) -> Result<(), GitError> {
    if header.object_format != repo_format {
        return Err(GitError::ObjectFormatMismatch {
            repo: repo_format.name().into(),
            bundle: header.object_format.name().into(),
        });
    }
    Ok(())
}

/// Verifies `bundle` against `repo` without changing `repo`'s refs: the header parses, the
/// prerequisites are present ([`GitError::MissingPrerequisites`] otherwise), `git bundle verify`
/// accepts it, and the pack is intact and complete: it is indexed by `git index-pack
/// --fix-thin --fsck-objects` into a scratch object directory (with `repo`'s objects as an
/// alternate; removed afterwards) and every object reachable from the bundle's refs must be
/// found there or in `repo`. A damaged bundle gives [`GitError::InvalidBundle`].
///
/// This reads the whole pack; [`apply_bundles`] makes the same checks while storing the
/// objects, so calling this first is only needed to vet a bundle without applying it.
pub fn verify_bundle(repo: &Path, bundle: &Path) -> Result<BundleInfo, GitError> {
    let bundle = absolute(bundle);
    let header = read_header(&bundle)?;
    check_format(object_format(repo)?, &header)?;
    let scratch = tempfile::Builder::new()
        .prefix("causeway-verify-")
        .tempdir_in(absolute(repo))
        .map_err(|e| GitError::Io(format!("creating a scratch directory in {}", repo.display()), e))?;
    let objects = scratch.path().join("objects");
    fs::create_dir_all(objects.join("pack")).map_err(|e| GitError::Io(format!("creating {}", objects.display()), e))?;
    ingest(repo, &bundle, &header, Some(&objects))?;
    drop(scratch);
    info_from(&header, &bundle)
}

/// `git` on `repo`, writing new objects to `scratch` (with `repo`'s objects as an alternate)
/// when given.
fn git_objects(repo: &Path, scratch: Option<&Path>) -> GitCmd {
    let cmd = GitCmd::new(Some(repo));
    match scratch {
        Some(objects) => cmd
            .env("GIT_OBJECT_DIRECTORY", objects)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", absolute(repo).join("objects")),
        None => cmd,
    }
}

/// Checks a bundle and stores its objects (in `repo`, or in `scratch`): prerequisites present,
/// `git bundle verify`, the whole pack indexed by `git index-pack --fix-thin --fsck-objects`
/// (checksum, every object's hash and well-formedness, thin deltas resolved), then every object
/// reachable from the bundle's refs present (`git rev-list --objects <tips> --not --all`, as
/// git's own connectivity check after a fetch). Unlike `git fetch`, the pack is always read,
/// even when its objects are already here, so a damaged bundle never passes.
fn ingest(repo: &Path, bundle: &Path, header: &Header, scratch: Option<&Path>) -> Result<(), GitError> {
    let missing = missing_objects(repo, &header.prerequisites)?;
    if !missing.is_empty() {
        return Err(GitError::MissingPrerequisites(missing));
    }
    GitCmd::new(Some(repo))
        .args(["bundle", "verify", "-q"])
        .arg(bundle)
        .run()
        .map_err(|e| invalid_from(bundle, e))?;
    let mut file = File::open(bundle).map_err(|e| GitError::Io(format!("opening {}", bundle.display()), e))?;
    file.seek(SeekFrom::Start(header.pack_offset))
        .map_err(|e| GitError::Io(format!("reading {}", bundle.display()), e))?;
    git_objects(repo, scratch)
        .args(["index-pack", "--stdin", "--fix-thin", "--fsck-objects"])
        .stdin_file(file)
        .run()
        .map_err(|e| invalid_from(bundle, e))?;
    let tips: BTreeSet<&String> = header.refs.iter().map(|(_, oid)| oid).collect();
    if !tips.is_empty() {
        let stdin: String = tips.iter().map(|t| format!("{t}\n")).collect();
        git_objects(repo, scratch)
            .args(["rev-list", "--objects", "--quiet", "--stdin", "--not", "--all"])
            .stdin_bytes(stdin.into_bytes())
            .run()
            .map_err(|e| match e {
                GitError::Command { stderr, .. } => GitError::InvalidBundle(format!(
                    "{}: objects reachable from its refs are missing: {stderr}",
                    bundle.display()
                )),
                other => other,
            })?;
    }
    Ok(())
}

fn invalid_from(bundle: &Path, e: GitError) -> GitError {
    match e {
        GitError::Command { stderr, .. } => GitError::InvalidBundle(format!("{}: {stderr}", bundle.display())),
        other => other,
    }
}

/// An exclusive advisory lock on `<repo>/causeway.lock`, released on drop (or process exit).
struct RepoLock(File);

impl RepoLock {
    fn acquire(repo: &Path) -> Result<Self, GitError> {
        let path = repo.join("causeway.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| GitError::Io(format!("opening {}", path.display()), e))?;
        file.lock()
            .map_err(|e| GitError::Io(format!("locking {}", path.display()), e))?;
        Ok(Self(file))
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Runs `git update-ref --stdin` with `lines` in one transaction.
fn ref_transaction(repo: &Path, lines: &[String]) -> Result<(), GitError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut stdin = String::from("start\n");
    for l in lines {
        stdin.push_str(l);
        stdin.push('\n');
    }
    stdin.push_str("prepare\ncommit\n");
    GitCmd::new(Some(repo))
        .args(["update-ref", "--stdin"])
        .stdin_bytes(stdin.into_bytes())
        .run()?;
    Ok(())
}

/// Deletes every quarantine ref (ours from this run, or left by a crashed one).
fn clear_quarantine(mirror: &Path) -> Result<(), GitError> {
    let q = refs_under(mirror, &[QUARANTINE_PREFIX])?;
    let lines: Vec<String> = q.keys().map(|name| format!("delete {name}")).collect();
    ref_transaction(mirror, &lines)
}

/// Clears the quarantine when an apply ends, however it ends.
struct QuarantineGuard<'a>(&'a Path);

impl Drop for QuarantineGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = clear_quarantine(self.0) {
            tracing::warn!(mirror = %self.0.display(), error = %e, "could not clear quarantine refs");
        }
    }
}

/// Which existing name makes `name` impossible to create (`a` blocks `a/b` and vice versa).
fn name_conflict(name: &str, names: &BTreeSet<String>) -> Option<String> {
    let mut end = 0;
    while let Some(i) = name[end..].find('/') {
        end += i;
        let prefix = &name[..end];
        if names.contains(prefix) {
            return Some(prefix.to_string());
        }
        end += 1;
    }
    let below = format!("{name}/");
    names
        .range(below.clone()..)
        .next()
        .filter(|n| n.starts_with(&below))
        .cloned()
}

fn pin_name(name: &str) -> String {
    format!("{REFUSED_PREFIX}{}", name.strip_prefix("refs/").unwrap_or(name))
}

/// Applies bundles in order to a bare mirror (see the module rules); refused refs are reported
/// and the others move ([`ApplyMode::BestEffort`]).
///
/// Steps: lock the mirror; for each bundle in order: check its header and that its
/// prerequisites are present, `git bundle verify` it, store its pack with `git index-pack
/// --fix-thin --fsck-objects` (the whole pack is always read and checked), check that every
/// object reachable from its refs is present, and point quarantine refs
/// `refs/causeway/incoming/<i>/<heads|tags>/...` at its tips. Then decide each ref against the
/// mirror's current value (the last bundle naming a ref gives its incoming value), move every
/// accepted ref in ONE `git update-ref --stdin` transaction (start/update|create/prepare/commit,
/// each update checking the old value), pin refused tips, and delete the quarantine refs. If
/// any bundle fails, no branch or tag moves (its objects may stay, unreachable, until gc).
pub fn apply_bundles(mirror: &Path, bundles: &[PathBuf]) -> Result<ApplyOutcome, GitError> {
    apply_bundles_with(mirror, bundles, ApplyMode::BestEffort)
}

/// [`apply_bundles`] with a choice of what to do when some refs are refused.
pub fn apply_bundles_with(mirror: &Path, bundles: &[PathBuf], mode: ApplyMode) -> Result<ApplyOutcome, GitError> {
    if !is_bare_repo(mirror) {
        ensure_repo(mirror)?;
        return Err(GitError::NotARepository(mirror.to_path_buf()));
    }
    if bundles.is_empty() {
        return Ok(ApplyOutcome::default());
    }
    let mirror_abs = absolute(mirror);
    let mirror = mirror_abs.as_path();
    let _lock = RepoLock::acquire(mirror)?;
    let format = object_format(mirror)?;
    clear_quarantine(mirror)?;
    let _guard = QuarantineGuard(mirror);

    let mut incoming = RefMap::new();
    let mut outside = RefMap::new();
    for (i, bundle) in bundles.iter().enumerate() {
        let bundle = absolute(bundle);
        let header = read_header(&bundle)?;
        check_format(format, &header)?;
        ingest(mirror, &bundle, &header, None)?;
        let mut quarantine = Vec::new();
        for (name, oid) in &header.refs {
            if name == "HEAD" {
                continue;
            }
            match name.strip_prefix("refs/") {
                Some(rest) if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") => {
                    let q = format!("{QUARANTINE_PREFIX}{i}/{rest}");
                    quarantine.push(format!("update {q} {oid}"));
                    incoming.insert(name.clone(), oid.clone());
                }
                _ => {
                    outside.insert(name.clone(), oid.clone());
                }
            }
        }
        // Quarantine refs keep this bundle's objects reachable for the next one's checks.
        ref_transaction(mirror, &quarantine).map_err(|e| invalid_from(&bundle, e))?;
    }
    // Everything the chain brings is now present, checked and connected.

    let current = refs(mirror)?;
    let pins = refs_under(mirror, &[REFUSED_PREFIX])?;
    let mut names: BTreeSet<String> = current.keys().cloned().collect();
    let mut updated = RefMap::new();
    let mut moves = Vec::new();
    let mut refused = Vec::new();
    for (name, new) in &incoming {
        let cur = current.get(name);
        let verdict = match cur {
            Some(c) if c == new => Ok(None),
            Some(_) if name.starts_with("refs/tags/") => {
                Err("tag already exists with a different target (tags never move on a mirror)".to_string())
            }
            Some(c) => match is_ancestor(mirror, c, new) {
                Ok(true) => Ok(Some(format!("update {name} {new} {c}"))),
                Ok(false) => Err(format!("not a fast-forward: {c} is not an ancestor of {new}")),
                Err(e) => Err(format!("cannot check for a fast-forward: {e}")),
            },
            None => match name_conflict(name, &names) {
                Some(other) => Err(format!("conflicts with the existing ref {other}")),
                None => Ok(Some(format!("create {name} {new}"))),
            },
        };
        match verdict {
            Ok(step) => {
                if let Some(step) = step {
                    moves.push(step);
                    updated.insert(name.clone(), new.clone());
                    names.insert(name.clone());
                }
            }
            Err(reason) => refused.push(RefusedRef {
                name: name.clone(),
                current: cur.cloned(),
                incoming: new.clone(),
                reason,
            }),
        }
    }

    // Pin refused tips first: they keep that history reachable whatever happens next.
    let pin_steps: Vec<String> = refused
        .iter()
        .map(|r| format!("update {} {}", pin_name(&r.name), r.incoming))
        .collect();
    if let Err(e) = ref_transaction(mirror, &pin_steps) {
        tracing::warn!(mirror = %mirror.display(), error = %e, "could not pin the tips of refused refs");
    }
    for (name, oid) in &outside {
        refused.push(RefusedRef {
            name: name.clone(),
            current: None,
            incoming: oid.clone(),
            reason: "only branches and tags are mirrored".into(),
        });
    }
    if mode == ApplyMode::AllOrNothing && !refused.is_empty() {
        return Err(GitError::Divergent(refused.into_iter().map(|r| r.name).collect()));
    }

    // The one transaction that moves the mirror's branches and tags.
    ref_transaction(mirror, &moves)?;

    // Refs that are no longer refused do not need their pin any more.
    let unpin: Vec<String> = incoming
        .keys()
        .filter(|n| !refused.iter().any(|r| &r.name == *n))
        .filter_map(|n| {
            let pin = pin_name(n);
            pins.get(&pin).map(|old| format!("delete {pin} {old}"))
        })
        .collect();
    if let Err(e) = ref_transaction(mirror, &unpin) {
        tracing::warn!(mirror = %mirror.display(), error = %e, "could not drop pins of refs accepted again");
    }
    for r in &refused {
        tracing::warn!(mirror = %mirror.display(), r#ref = %r.name, reason = %r.reason, "ref refused");
    }
    Ok(ApplyOutcome { updated, refused })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_conflicts() {
        let names: BTreeSet<String> = ["refs/heads/a", "refs/heads/b/c", "refs/tags/v1"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(name_conflict("refs/heads/a/x", &names).as_deref(), Some("refs/heads/a"));
        assert_eq!(name_conflict("refs/heads/b", &names).as_deref(), Some("refs/heads/b/c"));
        assert_eq!(name_conflict("refs/heads/ab", &names), None);
        assert_eq!(name_conflict("refs/heads/b/d", &names), None);
        assert_eq!(name_conflict("refs/heads/b.c", &names), None);
        assert_eq!(name_conflict("refs/tags/v1.1", &names), None);
    }

    #[test]
    fn pins_live_outside_branches_and_tags() {
        assert_eq!(pin_name("refs/heads/main"), "refs/causeway/refused/heads/main");
        assert_eq!(pin_name("refs/tags/v1"), "refs/causeway/refused/tags/v1");
    }

    #[test]
    fn error_lists_are_bounded() {
        let many: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let msg = GitError::Divergent(many).to_string();
        assert!(msg.ends_with("and 15 more"), "{msg}");
    }
}
