//! Git repositories as chains of incremental bundles, through the `git` program.
//!
//! A `forge/repo` resource points at a bare repository. Each new version is the previous one
//! plus one bundle ([`create_bundle`]): the refs that were added or moved since the previous
//! version's refs, and a pack of the objects new since then. A receiver verifies bundles
//! ([`verify_bundle`]) and applies a chain of them to its bare mirror ([`apply_bundles`], or
//! [`apply_chain`] from the headers alone, opening only the bundles the mirror lacks), which
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
//! * **Self-contained repositories only.** A repository with a `commondir` file (its refs
//!   live in another repository) or `objects/info/alternates` (its objects do) is never
//!   bundled from, applied to, gc'd or given a hook: [`GitError::SharedRepository`]. A mirror
//!   made to borrow another repository would otherwise hand that one's refs and objects to
//!   whoever the mirror is bundled for.
//! * **Ref names.** An incoming branch or tag whose name `git check-ref-format` would refuse
//!   is refused on its own, never passed to git.
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

/// Where earlier versions of [`apply_bundles`] held incoming refs before deciding on them;
/// any left there are deleted by the next apply.
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
    #[error("git {args} was stopped after running for {secs} s")]
    TimedOut { args: String, secs: u64 },
    #[error("{}: shares refs or objects with another repository ({reason}); not bundling from or writing to it", path.display())]
    SharedRepository { path: PathBuf, reason: String },
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
    /// Bundles whose packs were read; the others were already in the mirror.
    pub bundles_read: usize,
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

/// `e`, or [`GitError::NotARepository`] when git said `repo` is not one.
fn not_a_repository(repo: &Path, e: GitError) -> GitError {
    match e {
        GitError::Command { stderr, .. } if stderr.contains("not a git repository") => {
            GitError::NotARepository(repo.to_path_buf())
        }
        other => other,
    }
}

/// Whether `repo` is bare, and its hash algorithm, in one `git rev-parse`.
fn inspect_repo(repo: &Path) -> Result<(bool, ObjectFormat), GitError> {
    if !repo.is_dir() {
        return Err(GitError::NotARepository(repo.to_path_buf()));
    }
    let out = GitCmd::new(Some(repo))
        .args(["rev-parse", "--is-bare-repository", "--show-object-format"])
        .run()
        .map_err(|e| not_a_repository(repo, e))?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let bare = lines.next() == Some("true");
    let format = lines.next().and_then(ObjectFormat::parse);
    match format {
        Some(format) => Ok((bare, format)),
        None => Err(GitError::UnexpectedOutput {
            args: "rev-parse --is-bare-repository --show-object-format".into(),
            output: text.trim().to_string(),
        }),
    }
}

/// Files that make a git directory borrow refs or objects from another repository.
const SHARING_FILES: [&str; 3] = ["commondir", "objects/info/alternates", "objects/info/http-alternates"];

/// [`GitError::SharedRepository`] when `repo` takes refs or objects from another repository
/// (see the module rules).
pub fn check_self_contained(repo: &Path) -> Result<(), GitError> {
    for file in SHARING_FILES {
        if fs::symlink_metadata(repo.join(file)).is_ok() {
            return Err(GitError::SharedRepository {
                path: repo.to_path_buf(),
                reason: format!("it has {file}"),
            });
        }
    }
    Ok(())
}

/// Whether git would accept `name` as a ref name (the rules of `git check-ref-format`).
pub fn valid_ref_name(name: &str) -> bool {
    let components_ok = name
        .split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"));
    components_ok
        && name.contains('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && name != "@"
        && !name
            .bytes()
            .any(|b| b < b' ' || b == 0x7f || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\'))
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
    if !repo.is_dir() {
        return Err(GitError::NotARepository(repo.to_path_buf()));
    }
    let out = GitCmd::new(Some(repo))
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .args(prefixes)
        .run()
        .map_err(|e| not_a_repository(repo, e))?;
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
    check_self_contained(repo)?;
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
    batch_check_in(repo, None, inputs)
}

/// [`batch_check`] seeing the objects of `scratch` too (see [`git_objects`]).
fn batch_check_in(
    repo: &Path,
    scratch: Option<&Path>,
    inputs: &[String],
) -> Result<Vec<Option<(String, String)>>, GitError> {
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
    git_objects(repo, scratch)
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
    check_self_contained(repo)?;
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

/// Parses a bundle's header from the first bytes of a bundle of `total_len` bytes, for a
/// caller that reads the bundle from elsewhere than a file (a blob store) and wants its refs
/// without copying the pack. `Ok(None)`: the header goes on past `prefix`, read more (unless
/// `prefix` is the whole bundle, `at_end`, in which case it is an error).
pub fn bundle_info_from_prefix(prefix: &[u8], at_end: bool, total_len: u64) -> Result<Option<BundleInfo>, GitError> {
    // The header ends at its first empty line; no line before it can be empty.
    let complete = prefix.windows(2).any(|w| w == b"\n\n");
    if !(complete || at_end || prefix.len() > bundle::MAX_HEADER) {
        return Ok(None);
    }
    let header = bundle::parse_header(prefix)?;
    Ok(Some(BundleInfo {
        refs: header.ref_map(),
        prerequisites: header.prerequisites,
        bytes: total_len,
        object_format: header.object_format,
    }))
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
/// prerequisites are present ([`GitError::MissingPrerequisites`] otherwise), and the pack is
/// intact and complete: it is indexed by `git index-pack --fix-thin --fsck-objects` into a
/// scratch object directory (with `repo`'s objects as an alternate; removed afterwards) and
/// every object reachable from the bundle's refs must be found there or in `repo`. A damaged
/// bundle gives [`GitError::InvalidBundle`].
///
/// This reads the whole pack; [`apply_bundles`] makes the same checks while storing the
/// objects, so calling this first is only needed to vet a bundle without applying it.
pub fn verify_bundle(repo: &Path, bundle: &Path) -> Result<BundleInfo, GitError> {
    let bundle = absolute(bundle);
    let header = read_header(&bundle)?;
    check_format(object_format(repo)?, &header)?;
    check_self_contained(repo)?;
    let scratch = tempfile::Builder::new()
        .prefix("causeway-verify-")
        .tempdir_in(absolute(repo))
        .map_err(|e| GitError::Io(format!("creating a scratch directory in {}", repo.display()), e))?;
    let objects = scratch.path().join("objects");
    fs::create_dir_all(objects.join("pack")).map_err(|e| GitError::Io(format!("creating {}", objects.display()), e))?;
    ingest(repo, &bundle, &header, Some(&objects), &mut Known::default())?;
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

/// What one apply has learned about the mirror's objects, so each fact costs one `git` run.
#[derive(Default)]
struct Known {
    /// Objects present (a fact that stays true while the mirror is locked).
    present: BTreeSet<String>,
    /// Objects missing as of the last check; forgotten when a pack is added.
    missing: BTreeSet<String>,
    /// Objects whose whole history is present: tips already checked in this apply. They serve
    /// as the boundary of later connectivity walks, as the mirror's refs do.
    connected: BTreeSet<String>,
}

impl Known {
    /// Looks up whichever of `oids` is not known yet (one `cat-file --batch-check`).
    fn learn<'a>(
        &mut self,
        repo: &Path,
        scratch: Option<&Path>,
        oids: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), GitError> {
        let unknown: Vec<String> = oids
            .into_iter()
            .filter(|o| !self.present.contains(*o) && !self.missing.contains(*o))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for (oid, found) in unknown.iter().zip(batch_check_in(repo, scratch, &unknown)?) {
            if found.is_some() {
                self.present.insert(oid.clone());
            } else {
                self.missing.insert(oid.clone());
            }
        }
        Ok(())
    }
}

/// Checks a bundle and stores its objects (in `repo`, or in `scratch`):
///
/// 1. its prerequisites are present ([`GitError::MissingPrerequisites`] otherwise; their own
///    history is covered by step 3, whose walk goes through them);
/// 2. the whole pack goes through `git index-pack --fix-thin --fsck-objects
///    --check-self-contained-and-connected`: checksum, every object's hash and well-formedness,
///    thin deltas resolved, every object an object of the pack links to present; its exit
///    status says whether all those links stay inside the pack;
/// 3. every object reachable from the bundle's refs is present: a self-contained pack is
///    closed under links, so its tips need no walk (as `git clone` skips its connectivity
///    check for such a pack) and are only looked up; other tips go through `git rev-list
///    --objects <tips> --not --all <tips checked before>`, git's own check after a fetch.
///
/// Unlike `git fetch`, the pack is always read, even when its objects are already here, so a
/// damaged bundle never passes.
fn ingest(
    repo: &Path,
    bundle: &Path,
    header: &Header,
    scratch: Option<&Path>,
    known: &mut Known,
) -> Result<(), GitError> {
    let tips: BTreeSet<String> = header.refs.iter().map(|(_, oid)| oid.clone()).collect();
    known.learn(repo, scratch, header.prerequisites.iter().chain(&tips))?;
    let missing: Vec<String> = header
        .prerequisites
        .iter()
        .filter(|p| known.missing.contains(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(GitError::MissingPrerequisites(missing));
    }
    let tips_from_pack: BTreeSet<String> = tips.iter().filter(|t| known.missing.contains(*t)).cloned().collect();

    let self_contained = index_pack(repo, bundle, header, scratch)?;
    known.missing.clear();

    let mut walk: BTreeSet<String> = tips.difference(&known.connected).cloned().collect();
    if self_contained && !tips_from_pack.is_empty() {
        // Absent before and closed under links now: present means connected.
        known.learn(repo, scratch, &tips_from_pack)?;
        let absent: Vec<String> = tips_from_pack.intersection(&known.missing).cloned().collect();
        if !absent.is_empty() {
            return Err(GitError::InvalidBundle(format!(
                "{}: its refs point at objects it does not carry: {}",
                bundle.display(),
                list(&absent)
            )));
        }
        walk.retain(|t| !tips_from_pack.contains(t));
    }
    if !walk.is_empty() {
        let mut stdin = String::new();
        for t in &walk {
            stdin.push_str(t);
            stdin.push('\n');
        }
        for c in &known.connected {
            stdin.push('^');
            stdin.push_str(c);
            stdin.push('\n');
        }
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
    known.present.extend(tips.iter().cloned());
    known.connected.extend(tips);
    Ok(())
}

/// Stores the bundle's pack with `git index-pack`; whether the pack is self-contained (no
/// object in it links to an object outside it).
fn index_pack(repo: &Path, bundle: &Path, header: &Header, scratch: Option<&Path>) -> Result<bool, GitError> {
    let mut file = File::open(bundle).map_err(|e| GitError::Io(format!("opening {}", bundle.display()), e))?;
    file.seek(SeekFrom::Start(header.pack_offset))
        .map_err(|e| GitError::Io(format!("reading {}", bundle.display()), e))?;
    let args = [
        "index-pack",
        "--stdin",
        "--fix-thin",
        "--fsck-objects",
        "--check-self-contained-and-connected",
    ];
    let out = git_objects(repo, scratch).args(args).stdin_file(file).output()?;
    // Exit 1 (after the `pack` line) is index-pack's "stored, but links leave the pack"; a
    // failure dies with 128.
    let stored = out.stdout.starts_with(b"pack\t") || out.stdout.starts_with(b"keep\t");
    match out.status.code() {
        Some(0) if stored => Ok(true),
        Some(1) if stored => Ok(false),
        _ => Err(invalid_from(
            bundle,
            cmd::command_error(args.join(" "), out.status, out.stderr),
        )),
    }
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
/// and the others move ([`ApplyMode::BestEffort`]). See [`apply_chain`] for the steps.
pub fn apply_bundles(mirror: &Path, bundles: &[PathBuf]) -> Result<ApplyOutcome, GitError> {
    apply_bundles_with(mirror, bundles, ApplyMode::BestEffort)
}

/// [`apply_bundles`] with a choice of what to do when some refs are refused.
pub fn apply_bundles_with(mirror: &Path, bundles: &[PathBuf], mode: ApplyMode) -> Result<ApplyOutcome, GitError> {
    let infos = bundles.iter().map(|b| bundle_info(b)).collect::<Result<Vec<_>, _>>()?;
    apply_chain(mirror, &infos, mode, |i| Ok(bundles[i].clone()))
}

/// Applies a chain of bundles, known by their headers (`chain`, e.g. from
/// [`bundle_info_from_prefix`]), to a bare mirror; `open(i)` gives the file of bundle `i`, and
/// is only called for the bundles whose objects the mirror lacks.
///
/// Steps: lock the mirror; look up every tip and prerequisite of the chain (one `cat-file`);
/// a bundle whose tips are all present, with their whole history (`rev-list --objects <tips>
/// --not --all` finds nothing missing), is already in the mirror and is skipped, so a new
/// version of a chain reads only its new bundles. Each other bundle, in order: open it, check
/// that its header is the one given, and ingest it (prerequisites present; the whole pack
/// stored and checked by `git index-pack --fix-thin --fsck-objects`; every object reachable
/// from its refs present, see [`ingest`]). Then decide each ref against the mirror's current
/// value (the last bundle naming a ref gives its incoming value), move every accepted ref in
/// ONE `git update-ref --stdin` transaction (start/update|create/prepare/commit, each update
/// checking the old value), and pin refused tips. If any bundle fails, no branch or tag moves
/// (its objects may stay, unreachable, until gc).
pub fn apply_chain(
    mirror: &Path,
    chain: &[BundleInfo],
    mode: ApplyMode,
    mut open: impl FnMut(usize) -> Result<PathBuf, GitError>,
) -> Result<ApplyOutcome, GitError> {
    let mirror_abs = absolute(mirror);
    let mirror = mirror_abs.as_path();
    // Before git reads anything through a `commondir`.
    check_self_contained(mirror)?;
    let (bare, format) = inspect_repo(mirror)?;
    if !bare {
        return Err(GitError::NotARepository(mirror.to_path_buf()));
    }
    if chain.is_empty() {
        return Ok(ApplyOutcome::default());
    }
    for info in chain {
        if info.object_format != format {
            return Err(GitError::ObjectFormatMismatch {
                repo: format.name().into(),
                bundle: info.object_format.name().into(),
            });
        }
        check_ref_map(&info.refs, format, "bundle")?;
        if let Some(bad) = info.prerequisites.iter().find(|p| !is_hex_oid(p, format)) {
            return Err(GitError::InvalidBundle(format!("bad prerequisite {bad:?}")));
        }
    }
    let _lock = RepoLock::acquire(mirror)?;
    let listed = refs_under(
        mirror,
        &["refs/heads/", "refs/tags/", REFUSED_PREFIX, QUARANTINE_PREFIX],
    )?;
    // Quarantine refs are what earlier versions of this code left behind after a crash.
    let stale: Vec<String> = listed
        .keys()
        .filter(|n| n.starts_with(QUARANTINE_PREFIX))
        .map(|n| format!("delete {n}"))
        .collect();
    ref_transaction(mirror, &stale)?;

    // Which bundles the mirror already has.
    let mut known = Known::default();
    known.learn(
        mirror,
        None,
        chain.iter().flat_map(|b| b.refs.values().chain(&b.prerequisites)),
    )?;
    let have: Vec<bool> = chain
        .iter()
        .map(|b| b.refs.values().all(|t| known.present.contains(t)))
        .collect();
    let have_tips: BTreeSet<String> = chain
        .iter()
        .zip(&have)
        .filter(|(_, h)| **h)
        .flat_map(|(b, _)| b.refs.values().cloned())
        .collect();
    let mut skip = have.clone();
    if !have_tips.is_empty() {
        let stdin: String = have_tips.iter().map(|t| format!("{t}\n")).collect();
        let walk = GitCmd::new(Some(mirror))
            .args(["rev-list", "--objects", "--quiet", "--stdin", "--not", "--all"])
            .stdin_bytes(stdin.into_bytes())
            .run();
        match walk {
            Ok(_) => known.connected.extend(have_tips),
            // Present but with history missing (left by a failed apply): read those bundles.
            Err(GitError::Command { stderr, .. }) => {
                tracing::debug!(mirror = %mirror.display(), %stderr, "tips present but not connected");
                skip = vec![false; chain.len()];
            }
            Err(e) => return Err(e),
        }
    }

    let mut bundles_read = 0;
    for (i, info) in chain.iter().enumerate() {
        if skip[i] {
            continue;
        }
        let bundle = absolute(&open(i)?);
        let header = read_header(&bundle)?;
        check_format(format, &header)?;
        if header.ref_map() != info.refs || header.prerequisites != info.prerequisites {
            return Err(GitError::InvalidBundle(format!(
                "{}: not the bundle its header was read from",
                bundle.display()
            )));
        }
        ingest(mirror, &bundle, &header, None, &mut known)?;
        bundles_read += 1;
    }
    // Everything the chain brings is now present, checked and connected.

    let mut incoming = RefMap::new();
    let mut outside = RefMap::new();
    for info in chain {
        for (name, oid) in &info.refs {
            if name == "HEAD" {
                continue;
            }
            if !valid_ref_name(name) {
                outside.insert(name.clone(), oid.clone());
            } else if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                incoming.insert(name.clone(), oid.clone());
            } else {
                outside.insert(name.clone(), oid.clone());
            }
        }
    }
    // A long ingest leaves time for a push into a bidirectional mirror: decide on fresh refs.
    let listed = if bundles_read > 0 {
        refs_under(mirror, &["refs/heads/", "refs/tags/", REFUSED_PREFIX])?
    } else {
        listed
    };
    let current: RefMap = listed
        .iter()
        .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
        .map(|(n, o)| (n.clone(), o.clone()))
        .collect();
    let pins: RefMap = listed
        .iter()
        .filter(|(n, _)| n.starts_with(REFUSED_PREFIX))
        .map(|(n, o)| (n.clone(), o.clone()))
        .collect();
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
        .filter(|r| pins.get(&pin_name(&r.name)) != Some(&r.incoming))
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
            reason: if valid_ref_name(name) {
                "only branches and tags are mirrored".into()
            } else {
                "not a valid ref name".into()
            },
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
    tracing::debug!(
        mirror = %mirror.display(),
        bundles = chain.len(),
        bundles_read,
        moved = updated.len(),
        "bundle chain applied"
    );
    Ok(ApplyOutcome {
        updated,
        refused,
        bundles_read,
    })
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
    fn ref_names_git_would_refuse_are_recognized() {
        for ok in ["refs/heads/main", "refs/tags/v1.0", "refs/heads/feature/x-y_z"] {
            assert!(valid_ref_name(ok), "{ok}");
        }
        for bad in [
            "refs/heads/../../config",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a//b",
            "refs/heads/",
            "refs/heads/a@{1}",
            "refs/heads/a:b",
            "refs/heads/a\\b",
            "refs/heads/end.",
            "main",
        ] {
            assert!(!valid_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn repositories_that_borrow_refs_or_objects_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("r.git");
        fs::create_dir_all(repo.join("objects/info")).expect("mkdir");
        check_self_contained(&repo).expect("plain");
        fs::write(repo.join("objects/info/alternates"), "/elsewhere/objects\n").expect("write");
        assert!(matches!(
            check_self_contained(&repo),
            Err(GitError::SharedRepository { .. })
        ));
        fs::remove_file(repo.join("objects/info/alternates")).expect("rm");
        fs::write(repo.join("commondir"), "../other.git\n").expect("write");
        assert!(matches!(
            check_self_contained(&repo),
            Err(GitError::SharedRepository { .. })
        ));
    }

    #[test]
    fn error_lists_are_bounded() {
        let many: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let msg = GitError::Divergent(many).to_string();
        assert!(msg.ends_with("and 15 more"), "{msg}");
    }
}
