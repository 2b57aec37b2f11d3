//! A git repository federated between two clusters: the spec's "shared-lib" scenario. A commit
//! pushed to the origin's repository reaches the peer's mirror by itself, the peer's catalog
//! records the new version, the mirror passes `git fsck`, and a divergent (force-pushed) ref is
//! refused and reported, never overwritten.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(work: &Path, file: &str, text: &str) {
    std::fs::write(work.join(file), text).unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", text]);
}

fn link_add(from: &NodeProc, to: &NodeProc, name: &str) {
    let out = from.cli(&[
        "link",
        "add",
        &to.endpoint_id(),
        "--addr",
        &format!("127.0.0.1:{}", to.port),
        "--name",
        name,
    ]);
    assert!(out.status.success(), "link add: {}", stderr(&out));
}

fn wait_pinned(node: &NodeProc, link: &str) {
    wait_for(&format!("{} to pin {link}", node.name), || {
        node.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .any(|l| l["name"] == link && l["peer"].is_string() && l["state"] == "active")
            .then_some(())
    });
}

#[test]
fn shared_lib_commits_reach_the_mirror_and_divergence_is_refused() {
    if !causeway_sync::git::git_available() {
        println!("skipping: the git program is not installed");
        return;
    }
    let h = Harness::new();
    let (mut a, mut b) = (h.init("a"), h.init("b"));
    a.start();
    b.start();
    link_add(&a, &b, "b");
    link_add(&b, &a, "a");
    wait_pinned(&a, "b");
    wait_pinned(&b, "a");

    // The origin: a bare repository with history, as a forge would keep it.
    let origin = h.path("shared-lib.git");
    let work = h.path("work");
    std::fs::create_dir_all(&work).unwrap();
    git(h.root.path(), &["init", "-q", "--bare", origin.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    commit(&work, "lib.rs", "v1");
    git(&work, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(&work, &["push", "-q", "origin", "main"]);

    let out = a.cli(&[
        "resource",
        "register",
        "--kind",
        "forge/repo",
        "--name",
        "shared-lib",
        "--path",
        origin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(a.json(&["resource", "publish", "shared-lib"])["version"], 1);
    assert!(
        a.cli(&["share", "shared-lib", "--with", "b", "--mode", "pull"])
            .status
            .success()
    );

    let a_cluster = a.json(&["id"])["cluster_id"].as_str().unwrap().to_string();
    let mirror = b.dir.join("mirrors").join(&a_cluster).join("shared-lib.git");
    let m = b.json(&["sync", "shared-lib", "--from", "a"]);
    assert_eq!(m["version"], 1);
    assert_eq!(m["mirror_of"], a_cluster.as_str());
    let head = |repo: &Path| git(repo, &["rev-parse", "refs/heads/main"]);
    assert_eq!(head(&mirror), head(&origin));
    git(&mirror, &["fsck", "--strict"]);

    // A commit pushed to the origin reaches the mirror by itself (hook → publish → notify → pull).
    commit(&work, "lib.rs", "v2");
    git(&work, &["push", "-q", "origin", "main"]);
    let want = head(&origin);
    wait_for("the pushed commit in b's mirror", || {
        (head(&mirror) == want).then_some(())
    });
    let r = wait_for("b's catalog to record version 2", || {
        let r = b.try_json(&["resource", "show", "shared-lib"])?;
        (r["version"].as_u64()? >= 2).then_some(r)
    });
    assert_eq!(r["mirror_of"], a_cluster.as_str());
    git(&mirror, &["fsck", "--strict"]);

    // A force-pushed rewrite at the origin: the mirror refuses the divergent ref and says so.
    let before = head(&mirror);
    git(&work, &["reset", "-q", "--hard", "HEAD~1"]);
    commit(&work, "other.rs", "rewritten");
    git(&work, &["push", "-q", "--force", "origin", "main"]);
    let status = wait_for("the divergence to be reported", || {
        let t = b.try_json(&["sync", "status"])?;
        let t = t.as_array()?.iter().find(|t| t["resource"] == "shared-lib")?.clone();
        t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("divergent"))
            .then_some(t)
    });
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(head(&mirror), before, "a divergent ref must never be overwritten");
    git(&mirror, &["fsck", "--strict"]);
}
