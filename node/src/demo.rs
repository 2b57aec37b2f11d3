//! `causeway demo`: the whole federation in one command. Two clusters start in temporary data
//! dirs on loopback, link each other, share a git repository and an artifact, replicate them,
//! and a new commit pushed on one side arrives on the other. The data dirs are kept and both
//! nodes keep serving their control sockets, so the CLI can be pointed at them afterwards;
//! with `--exit` the nodes stop and the demo says how to start them again.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::api::{OnRegister, RegisterResource};
use crate::config::{Config, Discovery};
use crate::control::ControlServer;
use crate::federation::health::LinkState;
use crate::node::Node;

/// How long any demo step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

fn free_addr() -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Demo",
            "-c",
            "user.email=demo@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

async fn wait<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > STEP_DEADLINE {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Cluster {
    name: &'static str,
    dir: PathBuf,
    node: Node,
    serve: tokio::task::JoinHandle<()>,
}

async fn start(root: &Path, name: &'static str) -> Result<Cluster> {
    let dir = root.join(name);
    let bind = free_addr()?;
    crate::init::init(&dir, Some(name.into()), bind, Discovery::Static).await?;
    let config = Config::load(&dir.join(crate::datadir::CONFIG_FILE)).map_err(anyhow::Error::msg)?;
    let control = ControlServer::bind(&config.socket_path(&dir)).await?;
    let node = Node::start(&dir, config).await?;
    let serve = {
        let node = node.clone();
        tokio::spawn(async move { control.serve(node).await })
    };
    Ok(Cluster { name, dir, node, serve })
}

fn step(n: usize, text: &str) {
    println!("\n[{n}] {text}");
}

/// Runs the demo; with `exit`, stops both nodes at the end instead of serving until Ctrl-C.
pub async fn run(root: Option<PathBuf>, exit: bool) -> Result<()> {
    let root = match root {
        Some(r) => r,
        None => std::env::temp_dir().join(format!("causeway-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    println!("causeway demo: two clusters on loopback, data under {}", root.display());

    step(
        1,
        "start cluster alpha and cluster beta (one node each, static discovery)",
    );
    let alpha = start(&root, "alpha").await?;
    let beta = start(&root, "beta").await?;
    for c in [&alpha, &beta] {
        let id = c.node.id_info();
        println!(
            "    {:<6} endpoint {}  cluster {}  {}",
            c.name,
            &id.endpoint_id[..16],
            &id.cluster_id[..16],
            id.addrs.join(",")
        );
    }

    step(
        2,
        "link them both ways (each side pins the other's cluster key at the first handshake)",
    );
    alpha
        .node
        .link_add(beta.node.endpoint_id(), beta.node.addrs(), Some("beta".into()))
        .await?;
    beta.node
        .link_add(alpha.node.endpoint_id(), alpha.node.addrs(), Some("alpha".into()))
        .await?;
    for (c, peer) in [(&alpha, "beta"), (&beta, "alpha")] {
        let l = wait("a mutual link", || async {
            c.node
                .link_list()
                .await
                .ok()?
                .into_iter()
                .find(|l| l.name == peer && l.state == LinkState::Active && l.mutual)
        })
        .await?;
        println!(
            "    {} → {}: {} mutual={} rtt={}ms",
            c.name,
            peer,
            l.state,
            l.mutual,
            l.rtt_ms.unwrap_or(0)
        );
    }

    let git_ok = causeway_sync::git::git_available();
    let repo = root.join("repos").join("shared-lib.git");
    let work = root.join("repos").join("shared-lib-work");
    step(
        3,
        "alpha registers a git repository and an artifact, and shares them with beta",
    );
    if git_ok {
        std::fs::create_dir_all(&work)?;
        git(&root, &["init", "-q", "--bare", &repo.to_string_lossy()])?;
        git(&work, &["init", "-q"])?;
        std::fs::write(work.join("lib.rs"), "pub fn answer() -> u32 { 41 }\n")?;
        git(&work, &["add", "."])?;
        git(&work, &["commit", "-q", "-m", "first"])?;
        git(&work, &["push", "-q", &repo.to_string_lossy(), "main"])?;
        alpha
            .node
            .register_resource(RegisterResource {
                name: "shared-lib".into(),
                kind: "forge/repo".into(),
                owner: "forge".into(),
                path: Some(repo.to_string_lossy().into_owned()),
                metadata: Default::default(),
                on_register: OnRegister::Publish,
            })
            .await?;
        alpha
            .node
            .share("shared-lib", "beta", causeway_policy::ShareMode::Bidirectional, false)
            .await?;
        println!("    shared-lib (forge/repo) → beta, bidirectional");
    } else {
        println!("    (git is not installed: skipping the repository)");
    }
    let artifact = root.join("release.bin");
    let bytes: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&artifact, &bytes)?;
    alpha
        .node
        .register_resource(RegisterResource {
            name: "release".into(),
            kind: "artifact".into(),
            owner: "ci".into(),
            path: Some(artifact.to_string_lossy().into_owned()),
            metadata: Default::default(),
            on_register: OnRegister::Publish,
        })
        .await?;
    alpha
        .node
        .share("release", "beta", causeway_policy::ShareMode::Pull, true)
        .await?;
    alpha
        .node
        .register_resource(RegisterResource {
            name: "private-notes".into(),
            kind: "artifact".into(),
            owner: "ops".into(),
            path: None,
            metadata: Default::default(),
            on_register: OnRegister::RecordOnly,
        })
        .await?;
    println!("    release (artifact, 4 MiB) → beta, pull read-only;  private-notes: not shared");

    step(4, "beta asks alpha what it shares (private-notes stays invisible)");
    for e in beta.node.peer_catalog("alpha", false).await? {
        println!(
            "    {:<14} {:<12} v{}  {}{}",
            e.name,
            e.kind,
            e.version,
            e.mode,
            if e.read_only { " read-only" } else { "" }
        );
    }

    step(
        5,
        "beta replicates both (content is BLAKE3-verified, then recorded through beta's Raft)",
    );
    for name in git_ok.then_some("shared-lib").into_iter().chain(["release"]) {
        let m = beta.node.sync_pull(name, "alpha").await?;
        println!(
            "    {name}: mirror of {}… at version {}",
            &m.mirror_of.unwrap_or_default()[..16],
            m.version
        );
    }

    if git_ok {
        step(
            6,
            "a developer pushes a commit to alpha's repository; it arrives in beta's mirror",
        );
        std::fs::write(work.join("lib.rs"), "pub fn answer() -> u32 { 42 }\n")?;
        git(&work, &["commit", "-q", "-am", "fix the answer"])?;
        let started = Instant::now();
        git(&work, &["push", "-q", &repo.to_string_lossy(), "main"])?;
        // The repository's hook publishes by itself when the `causeway` binary runs this demo;
        // publishing here as well is harmless (nothing new → no new version).
        alpha.node.publish("shared-lib", None).await?;
        let v = wait("the commit at beta", || async {
            let r = beta.node.show_resource("shared-lib").await.ok()?;
            (r.version >= 2).then_some(r.version)
        })
        .await?;
        println!(
            "    beta's mirror reached version {v} {} ms after the push",
            started.elapsed().as_millis()
        );
        let alpha_cluster = alpha.node.id_info().cluster_id;
        println!(
            "    mirror repository: {}",
            crate::transfer::mirror_path(&beta.dir, &alpha_cluster.parse()?, "shared-lib", "forge/repo").display()
        );
    }

    step(7, "beta's sync status");
    for t in beta.node.sync_status().await? {
        println!(
            "    {:<12} {:<5} {:<8} v{}  {} bytes  lag {} ms",
            t.resource, t.direction, t.state, t.version, t.bytes_done, t.lag_ms
        );
    }

    let bin = program();
    let tries = try_commands(&bin, &alpha.dir, &beta.dir);
    let (alpha_dir, beta_dir) = (alpha.dir.clone(), beta.dir.clone());
    if exit {
        for c in [alpha, beta] {
            c.serve.abort();
            c.node.shutdown().await;
        }
        println!(
            "\nBoth nodes have stopped. Their data is kept under {}:",
            root.display()
        );
        println!("    alpha  {}", alpha_dir.display());
        println!("    beta   {}  (mirrors under mirrors/)", beta_dir.display());
        println!("Start them again, each in its own terminal (or with & at the end):");
        for dir in [&alpha_dir, &beta_dir] {
            println!("    {bin} --data-dir {} run", quoted(dir));
        }
        println!("then try:");
        for t in &tries {
            println!("    {t}");
        }
        return Ok(());
    }
    println!("\nThe data dirs are kept. Try, while this runs:");
    for t in &tries {
        println!("    {t}");
    }
    println!("Ctrl-C stops both nodes.");
    tokio::signal::ctrl_c().await?;
    for c in [alpha, beta] {
        c.serve.abort();
        c.node.shutdown().await;
    }
    Ok(())
}

/// Commands to try against the two nodes.
fn try_commands(bin: &str, alpha: &Path, beta: &Path) -> Vec<String> {
    vec![
        format!("{bin} --data-dir {} link list", quoted(alpha)),
        format!("{bin} --data-dir {} catalog alpha", quoted(beta)),
        format!("{bin} --data-dir {} resource list", quoted(beta)),
        format!("{bin} --data-dir {} sync status --json", quoted(beta)),
    ]
}

/// A path as a shell word: single-quoted unless it is plain.
fn quoted(p: &Path) -> String {
    let s = p.display().to_string();
    let plain = s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@,".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// How to call this program again: `causeway` when that is what the shell finds, else the
/// path of the running binary (a demo run with `cargo run` is not on the PATH).
fn program() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "causeway".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::canonicalize(dir.join("causeway"))
                .is_ok_and(|found| std::fs::canonicalize(&exe).is_ok_and(|me| me == found))
        })
    });
    if on_path { "causeway".into() } else { quoted(&exe) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shell_words() {
        assert_eq!(
            quoted(Path::new("/tmp/causeway-demo-1/alpha")),
            "/tmp/causeway-demo-1/alpha"
        );
        assert_eq!(quoted(Path::new("/tmp/my demo/alpha")), "'/tmp/my demo/alpha'");
        assert_eq!(quoted(Path::new("/tmp/it's")), "'/tmp/it'\\''s'");
    }
}
