//! A git repository federated between two clusters: the spec's "shared-lib" scenario. A commit
//! pushed to the origin's repository reaches the peer's mirror by itself, the peer's catalog
//! records the new version, the mirror passes `git fsck`, and a divergent (force-pushed) ref is
//! refused and reported, never overwritten.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `refs/heads/main` of `repo`, or `None` while the repository is not there yet.
fn try_head(repo: &Path) -> Option<String> {
    let out = Command::new("git")
        .args([
            "--git-dir",
            repo.to_str()?,
            "rev-parse",
            "--verify",
            "-q",
            "refs/heads/main",
        ])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn commit(work: &Path, file: &str, text: &str) {
    std::fs::write(work.join(file), text).unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", text]);
}

#[test]
fn shared_lib_commits_reach_the_mirror_and_divergence_is_refused() {
    if !causeway_sync::git::git_available() {
        println!("skipping: the git program is not installed");
        return;
    }
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});

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
    assert_eq!(
        a.json(&["resource", "show", "shared-lib"])["version"],
        1,
        "registering published the refs"
    );
    assert!(
        a.cli(&["share", "shared-lib", "--with", "b", "--mode", "pull"])
            .status
            .success()
    );

    let a_cluster = a.json(&["id"])["cluster_id"].as_str().unwrap().to_string();
    let mirror = b
        .dir
        .join("mirrors")
        .join(&a_cluster)
        .join("repos")
        .join("shared-lib.git");
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
    let row = || {
        let all = b.try_json(&["sync", "status"])?;
        all.as_array()?.iter().find(|t| t["resource"] == "shared-lib").cloned()
    };
    let status = wait_for("the divergence to be reported", || {
        let t = row()?;
        t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("divergent"))
            .then_some(t)
    });
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(head(&mirror), before, "a divergent ref must never be overwritten");
    git(&mirror, &["fsck", "--strict"]);

    // Another pull (an admin's `sync`, or a reconcile racing the first) finds the mirror at the
    // recorded version: the refusal must stay reported, not read as synced.
    let version = status["version"].as_u64().expect("version");
    assert_eq!(b.json(&["sync", "shared-lib", "--from", "a"])["version"], version);
    let t = row().expect("shared-lib's row");
    assert_eq!(t["state"], "failed", "{t}");
    assert!(t["reason"].as_str().is_some_and(|r| r.contains("divergent")), "{t}");
    assert_eq!(head(&mirror), before);
}

#[test]
fn write_back_fast_forwards_read_only_is_denied_and_push_shares_arrive_unasked() {
    if !causeway_sync::git::git_available() {
        println!("skipping: the git program is not installed");
        return;
    }
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    let a_cluster = a.json(&["id"])["cluster_id"].as_str().unwrap().to_string();

    let make_repo = |name: &str| {
        let origin = h.path(&format!("{name}.git"));
        let work = h.path(&format!("{name}-work"));
        std::fs::create_dir_all(&work).unwrap();
        git(h.root.path(), &["init", "-q", "--bare", origin.to_str().unwrap()]);
        git(&work, &["init", "-q"]);
        commit(&work, "README", name);
        git(&work, &["remote", "add", "origin", origin.to_str().unwrap()]);
        git(&work, &["push", "-q", "origin", "main"]);
        let out = a.cli(&[
            "resource",
            "register",
            "--kind",
            "forge/repo",
            "--name",
            name,
            "--path",
            origin.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        origin
    };
    let head = |repo: &Path| git(repo, &["rev-parse", "refs/heads/main"]);

    // Bidirectional: b's commit flows back to a by fast-forward.
    let tools = make_repo("tools");
    assert!(
        a.cli(&["share", "tools", "--with", "b", "--mode", "bidirectional"])
            .status
            .success()
    );
    b.json(&["sync", "tools", "--from", "a"]);
    let mirror = b.dir.join("mirrors").join(&a_cluster).join("repos").join("tools.git");
    let bwork = h.path("b-tools-work");
    git(
        h.root.path(),
        &["clone", "-q", mirror.to_str().unwrap(), bwork.to_str().unwrap()],
    );
    commit(&bwork, "fix.rs", "fix from b");
    // The mirror's hook offers it back by itself; the explicit command is idempotent.
    git(&bwork, &["push", "-q", "origin", "main"]);
    let want = head(&mirror);
    let out = b.cli(&["sync", "tools", "--to", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("b's commit at a's origin", || (head(&tools) == want).then_some(()));
    git(&tools, &["fsck", "--strict"]);
    wait_for("a's new version", || {
        (a.try_json(&["resource", "show", "tools"])?["version"].as_u64()? >= 2).then_some(())
    });

    // Read-only: the origin refuses and does not change; b's status says denied, with the reason.
    let ro = make_repo("ro");
    assert!(
        a.cli(&["share", "ro", "--with", "b", "--mode", "bidirectional", "--read-only"])
            .status
            .success()
    );
    b.json(&["sync", "ro", "--from", "a"]);
    let ro_mirror = b.dir.join("mirrors").join(&a_cluster).join("repos").join("ro.git");
    let ro_work = h.path("b-ro-work");
    git(
        h.root.path(),
        &["clone", "-q", ro_mirror.to_str().unwrap(), ro_work.to_str().unwrap()],
    );
    commit(&ro_work, "x", "not allowed");
    git(&ro_work, &["push", "-q", "origin", "main"]);
    let before = head(&ro);
    let out = b.cli(&["sync", "ro", "--to", "a"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    let t = b.json(&["sync", "status"]);
    let t = t
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource"] == "ro" && t["direction"] == "push")
        .unwrap()
        .clone();
    assert_eq!(t["state"], "denied", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("read"), "{t}");
    assert_eq!(head(&ro), before, "a read-only origin never changes because of a peer");

    // Divergent write-back: both sides committed; a's ref is not overwritten.
    let awork = h.path("tools-work");
    git(&awork, &["pull", "-q", "origin", "main"]);
    commit(&awork, "a.rs", "from a");
    git(&awork, &["push", "-q", "origin", "main"]);
    let a_head = head(&tools);
    commit(&bwork, "b.rs", "from b again");
    git(&bwork, &["push", "-q", "origin", "main"]);
    let out = b.cli(&["sync", "tools", "--to", "a"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("divergent"), "{}", stderr(&out));
    assert_eq!(head(&tools), a_head);

    // Push share: a's new version arrives at b without b asking, once b's link takes pushes.
    let out = b.cli(&["link", "set", "a", "--accept-pushes", "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pushed = make_repo("pushed");
    assert!(
        a.cli(&["share", "pushed", "--with", "b", "--mode", "push"])
            .status
            .success()
    );
    let pm = b.dir.join("mirrors").join(&a_cluster).join("repos").join("pushed.git");
    let origin_head = head(&pushed);
    wait_for("the pushed repository at b", || {
        (try_head(&pm)? == origin_head).then_some(())
    });
    let r = b.json(&["resource", "show", "pushed"]);
    assert_eq!(r["mirror_of"], a_cluster.as_str());
}
