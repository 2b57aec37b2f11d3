//! `git`: the first sync of a generated repository between two linked clusters against `git clone
//! --mirror` of the same repository over `git daemon` on loopback, in the same run. The repository
//! is written with `git fast-import` (incompressible random files over many commits), served by a
//! `git daemon` this bench starts and stops, and registered at `a` as a `forge/repo`: publishing
//! makes its bundle (timed on its own), `b`'s `sync_pull` fetches and applies it into the mirror
//! (the figure compared with the clone). Like the clone, the first sync is timed several times
//! and its median compared; each round after the first syncs into a new pair of clusters, as
//! only a peer that has never held the content makes a first sync.

use std::{
    fs::File,
    io::{BufWriter, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use causeway::{
    ShareMode,
    api::{RegisterResource, ResourceView},
    content::store::parse_root,
};
use causeway_proto::ClusterId;
use causeway_sync::git::RefMap;
use serde::Serialize;

use super::common::{self, Align, Table, at_most, median, stats};
use super::measure::Stats;
use super::pair::{Pair, TO_A, TO_B};
use super::report::Goal;

/// The first sync may take this many times the clone.
const CLONE_FACTOR: f64 = 1.2;
/// Files each generated commit adds.
const FILES_PER_COMMIT: usize = 4;
const RESOURCE: &str = "first-sync";
/// How long `git daemon` may take to accept connections.
const DAEMON_DEADLINE: Duration = Duration::from_secs(10);
const DAEMON_ATTEMPTS: usize = 5;

/// The generated repository's size and how often it is cloned.
#[derive(Clone, Debug)]
pub struct GitPlan {
    /// Bytes of random file content across the whole history.
    pub bytes: usize,
    pub commits: usize,
    /// Timed clones; the median is the baseline.
    pub clone_rounds: usize,
    /// Timed first syncs, each into a peer of its own (a second sync into the same peer finds
    /// the content there); the median is compared with the clones' median.
    pub sync_rounds: usize,
}

impl GitPlan {
    pub fn full() -> Self {
        GitPlan {
            bytes: 200 << 20,
            commits: 300,
            clone_rounds: 3,
            sync_rounds: 3,
        }
    }

    pub fn quick() -> Self {
        GitPlan {
            bytes: 5 << 20,
            commits: 50,
            clone_rounds: 1,
            sync_rounds: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GitReport {
    /// Why the benchmark did not run, if it did not.
    pub skipped: Option<String>,
    #[serde(flatten)]
    pub figures: Option<GitFigures>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GitFigures {
    pub commits: usize,
    /// Size of the repository's objects (packed or loose).
    pub repo_bytes: u64,
    pub clone: Stats,
    pub clone_secs: f64,
    pub publish_secs: f64,
    /// The first syncs' times; `pull_secs` is their median.
    pub pulls: Stats,
    pub pull_secs: f64,
    /// `b` applying the bundle to a mirror (what the pull ends with), timed again into a fresh
    /// mirror after the pull: the part of the pull that is git's work rather than the transfer.
    pub apply_secs: f64,
    pub pull_vs_clone: f64,
    pub goal: Goal,
}

impl GitReport {
    pub fn goals(&self) -> impl Iterator<Item = &Goal> {
        self.figures.iter().map(|f| &f.goal)
    }

    pub fn table(&self, mode: &str, dir: &str) -> String {
        let mut out = common::heading(
            "first git sync vs git clone --mirror over git daemon (loopback, same run)",
            mode,
            dir,
        );
        let Some(f) = &self.figures else {
            out.push_str(&format!(
                "skipped: {}\n",
                self.skipped.as_deref().unwrap_or("no figures")
            ));
            return out;
        };
        let bytes = f.repo_bytes as f64;
        let mut t = Table::new(&[
            (
                &format!("first sync, {} in {} commits", common::mib(bytes), f.commits),
                Align::Left,
            ),
            ("runs", Align::Right),
            ("time", Align::Right),
            ("MiB/s", Align::Right),
            ("vs clone", Align::Right),
            ("goal", Align::Left),
        ]);
        let mbs = |s: f64| format!("{:.1}", common::mib_per_sec(bytes, s));
        t.row(vec![
            "git clone --mirror over git daemon".into(),
            f.clone.count.to_string(),
            common::secs(f.clone_secs),
            mbs(f.clone_secs),
            "1.00×".into(),
            "baseline (median)".into(),
        ]);
        t.row(vec![
            "causeway publish (bundle + import)".into(),
            "1".into(),
            common::secs(f.publish_secs),
            mbs(f.publish_secs),
            common::times(f.publish_secs / f.clone_secs),
            "(not compared)".into(),
        ]);
        t.row(vec![
            "causeway sync_pull (fetch + apply)".into(),
            f.pulls.count.to_string(),
            common::secs(f.pull_secs),
            mbs(f.pull_secs),
            common::times(f.pull_vs_clone),
            common::goal(Some(&f.goal)),
        ]);
        t.row(vec![
            "  of which b applying the bundle".into(),
            "1".into(),
            common::secs(f.apply_secs),
            mbs(f.apply_secs),
            common::times(f.apply_secs / f.clone_secs),
            format!(
                "(the same apply timed again, into a fresh mirror: {:.0}% of the pull)",
                100.0 * f.apply_secs / f.pull_secs
            ),
        ]);
        out.push_str(&t.render());
        out.push('\n');
        let (met, total) = common::tally(self.goals());
        out.push_str(&common::goals_line(met, total));
        out
    }
}

/// A `git` command with no user or system configuration, a fixed identity and `main` as the
/// first branch.
pub fn git_command(dir: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c
}

/// Runs `git args` (in `dir`), returning its trimmed stdout.
pub fn git(dir: Option<&Path>, args: &[&str]) -> Result<String> {
    let out = git_command(dir)
        .args(args)
        .output()
        .with_context(|| format!("run git {args:?}"))?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))
}

/// Removes the post-receive hook `register_resource` installed: it runs the `causeway` binary,
/// which an in-process bench does not have; the bench publishes by itself instead.
pub fn remove_publish_hook(repo: &Path) -> Result<()> {
    let hook = repo.join("hooks").join("post-receive");
    match std::fs::remove_file(&hook) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", hook.display()))
        }
        _ => Ok(()),
    }
}

/// Why `git daemon` cannot be used here, if it cannot.
fn daemon_unavailable() -> Option<String> {
    if !causeway_sync::git::git_available() {
        return Some("the git program is not installed".into());
    }
    match git_command(None).args(["daemon", "-h"]).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (!text.contains("usage: git daemon")).then(|| format!("`git daemon` is not available: {}", text.trim()))
        }
        Err(e) => Some(format!("`git daemon -h` cannot run: {e}")),
    }
}

/// Writes a bare repository at `repo` with `plan.commits` commits on `main`, each adding
/// [`FILES_PER_COMMIT`] files of random bytes, through `git fast-import`.
fn generate(repo: &Path, plan: &GitPlan, log: &Path) -> Result<()> {
    git(None, &["init", "-q", "--bare", path_str(repo)?])?;
    let mut child = git_command(Some(repo))
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()
        .context("run git fast-import")?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("git fast-import has no stdin"))?;
    let written = (|| -> Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, stdin);
        let blob_len = (plan.bytes / (plan.commits.max(1) * FILES_PER_COMMIT)).max(1);
        let mut blob = vec![0u8; blob_len];
        let mut mark = 0usize;
        for c in 0..plan.commits {
            let first = mark + 1;
            for _ in 0..FILES_PER_COMMIT {
                rand::fill(&mut blob[..]);
                mark += 1;
                write!(w, "blob\nmark :{mark}\ndata {blob_len}\n")?;
                w.write_all(&blob)?;
                w.write_all(b"\n")?;
            }
            let message = format!("commit {c}\n");
            write!(
                w,
                "commit refs/heads/main\ncommitter Bench <bench@example.invalid> {} +0000\ndata {}\n{message}",
                1_700_000_000 + c * 60,
                message.len()
            )?;
            for (f, m) in (first..=mark).enumerate() {
                writeln!(w, "M 100644 :{m} d{:02}/c{c:05}-{f}.bin", c % 32)?;
            }
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    })();
    let status = child.wait()?;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    written.with_context(|| format!("feeding git fast-import: {}", log_text()))?;
    ensure!(status.success(), "git fast-import failed: {}", log_text());
    Ok(())
}

/// Bytes of the repository's objects, packed and loose (`git count-objects -v`, in KiB).
fn count_object_bytes(repo: &Path) -> Result<u64> {
    let out = git(Some(repo), &["count-objects", "-v"])?;
    let mut kib = 0;
    for line in out.lines() {
        if let Some(("size" | "size-pack", v)) = line.split_once(": ") {
            kib += v
                .trim()
                .parse::<u64>()
                .with_context(|| format!("count-objects: {line:?}"))?;
        }
    }
    Ok(kib * 1024)
}

/// A `git daemon` serving every repository under a directory; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path, log: &Path) -> Result<Self> {
        let mut last = String::new();
        for _ in 0..DAEMON_ATTEMPTS {
            let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            let child = git_command(None)
                .arg("daemon")
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", path_str(base)?))
                .arg("--export-all")
                .arg(format!("--port={port}"))
                .arg("--listen=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(File::create(log)?)
                .spawn()
                .context("run git daemon")?;
            let mut daemon = Daemon { child, port };
            let deadline = Instant::now() + DAEMON_DEADLINE;
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(daemon);
                }
                if let Some(status) = daemon.child.try_wait()? {
                    last = format!(
                        "exited with {status}: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    last = format!("not accepting connections on port {port} after {DAEMON_DEADLINE:?}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("git daemon could not be started: {}", last.trim())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generates the repository under `root`, clones it over `git daemon` and syncs it between the
/// pair's clusters. Progress goes to stderr.
pub async fn measure(plan: &GitPlan, root: &Path, pair: &Pair) -> Result<GitReport> {
    if let Some(reason) = daemon_unavailable() {
        eprintln!("git: skipped: {reason}");
        return Ok(GitReport {
            skipped: Some(reason),
            figures: None,
        });
    }
    let base = root.join("git");
    std::fs::create_dir_all(&base)?;
    let repo = base.join("repo.git");
    eprintln!(
        "git: generating {} of random files in {} commits",
        common::mib(plan.bytes as f64),
        plan.commits
    );
    let (p, r, l) = (plan.clone(), repo.clone(), base.join("fast-import.log"));
    tokio::task::spawn_blocking(move || generate(&r, &p, &l)).await??;
    let size = count_object_bytes(&repo)?;
    let want = causeway_sync::git::refs(&repo)?;

    let (b2, r2, rounds) = (base.clone(), repo.clone(), plan.clone_rounds.max(1));
    let clones = tokio::task::spawn_blocking(move || clone_rounds(&b2, &r2, rounds)).await??;
    let clone_secs = median(clones.clone()).as_secs_f64();
    let clone_elapsed = clones.iter().sum();
    let clone = stats(clones, clone_elapsed);

    eprintln!("git: causeway publish and first sync of the same repository");
    let first = first_sync(pair, &repo, &want).await?;
    let mut pulls = vec![first.pull];
    // Later rounds need peers that have never held the content: a pair of their own each, in a
    // directory removed after the round (each holds the repository three times over).
    for round in 1..plan.sync_rounds.max(1) {
        eprintln!("git: first sync {} of {} into a new pair", round + 1, plan.sync_rounds);
        let dir = base.join(format!("sync-{round}"));
        std::fs::create_dir_all(&dir)?;
        let fresh = Pair::start(&dir, "git").await?;
        let timed = first_sync(&fresh, &repo, &want).await;
        fresh.shutdown().await;
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        pulls.push(timed?.pull);
    }
    let pull_secs = median(pulls.clone()).as_secs_f64();
    let pulls_elapsed = pulls.iter().sum();
    let pulls = stats(pulls, pulls_elapsed);
    let (publish_secs, mirror) = (first.publish.as_secs_f64(), first.mirror);
    let root = parse_root(mirror.content.as_deref().unwrap_or_default())?;
    let again = base.join("applied-again.git");
    let t = Instant::now();
    pair.b.content().apply_repo(root, &again).await?;
    let apply_secs = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&again)?;

    let pull_vs_clone = pull_secs / clone_secs;
    let goal = at_most(
        format!("≤ {CLONE_FACTOR} × clone"),
        CLONE_FACTOR * clone_secs,
        "s",
        pull_secs,
    );
    Ok(GitReport {
        skipped: None,
        figures: Some(GitFigures {
            commits: plan.commits,
            repo_bytes: size,
            clone,
            clone_secs,
            publish_secs,
            pulls,
            pull_secs,
            apply_secs,
            pull_vs_clone,
            goal,
        }),
    })
}

/// One first sync: what it timed and the mirror it made.
struct FirstSync {
    publish: Duration,
    pull: Duration,
    mirror: ResourceView,
}

/// Registers and publishes `repo` at `pair.a`, shares it with `b` and times `b`'s first pull,
/// checking that the mirror has the repository's refs (`want`).
async fn first_sync(pair: &Pair, repo: &Path, want: &RefMap) -> Result<FirstSync> {
    pair.a
        .register_resource(RegisterResource {
            name: RESOURCE.into(),
            kind: "forge/repo".into(),
            owner: "bench".into(),
            path: Some(path_str(repo)?.to_string()),
            metadata: Default::default(),
            on_register: causeway::OnRegister::RecordOnly,
        })
        .await?;
    remove_publish_hook(repo)?;
    let t = Instant::now();
    let published = pair.a.publish(RESOURCE, None).await?;
    let publish = t.elapsed();
    ensure!(published.version == 1, "publish made version {}", published.version);
    pair.a.share(RESOURCE, TO_B, ShareMode::Pull, true).await?;
    let t = Instant::now();
    let mirror = pair.b.sync_pull(RESOURCE, TO_A).await?;
    let pull = t.elapsed();
    ensure!(mirror.version == 1, "the mirror is at version {}", mirror.version);
    let origin: ClusterId = mirror
        .mirror_of
        .as_deref()
        .ok_or_else(|| anyhow!("{RESOURCE} at b is not a mirror"))?
        .parse()
        .map_err(|e| anyhow!("mirror origin: {e}"))?;
    let path = causeway::transfer::mirror_path(pair.b.data_dir(), &origin, RESOURCE, "forge/repo");
    ensure!(
        causeway_sync::git::refs(&path)? == *want,
        "the mirror's refs differ from the repository's"
    );
    Ok(FirstSync { publish, pull, mirror })
}

/// Times `rounds` mirror clones of `repo` (under `base`) over a `git daemon` started for them.
fn clone_rounds(base: &Path, repo: &Path, rounds: usize) -> Result<Vec<Duration>> {
    let daemon = Daemon::start(base, &base.join("daemon.log"))?;
    let name = repo
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("repository path {} has no name", repo.display()))?;
    let url = format!("git://127.0.0.1:{}/{name}", daemon.port);
    let want = git(Some(repo), &["rev-parse", "refs/heads/main"])?;
    eprintln!("git: {rounds} × git clone --mirror {url}");
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let dest: PathBuf = base.join(format!("clone-{i}.git"));
        let t = Instant::now();
        git(None, &["clone", "--mirror", "-q", &url, path_str(&dest)?])?;
        samples.push(t.elapsed());
        let got = git(Some(&dest), &["rev-parse", "refs/heads/main"])?;
        ensure!(got == want, "the clone's main is {got}, not {want}");
        std::fs::remove_dir_all(&dest)?;
    }
    drop(daemon);
    Ok(samples)
}
