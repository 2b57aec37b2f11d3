//! Registering content makes it fetchable: an artifact or a bare repository registered with
//! `--path` and shared is synced by a linked peer at once (byte-exact, the same refs), with no
//! `resource publish` or push in between. A resource registered with `--no-publish` reads
//! `pending` ("nothing published yet") at the peer, never `synced`, until its first version
//! arrives by itself. An import that fails registers nothing, and running it again succeeds.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The exit code of `sync NAME --from PEER` while PEER has published nothing of NAME.
const EXIT_NOTHING_PUBLISHED: i32 = 75;

fn pull_row(node: &NodeProc, name: &str) -> Option<Value> {
    node.try_json(&["sync", "status"])?
        .as_array()?
        .iter()
        .find(|t| t["resource"] == name && t["direction"] == "pull")
        .cloned()
}

/// Every branch and tag of the bare repository `repo`, as `OBJECT REF` lines.
fn refs(repo: &Path) -> String {
    git(repo, &REFS_ARGS)
}

/// Lists every branch and tag as `OBJECT REF` lines.
const REFS_ARGS: [&str; 4] = [
    "for-each-ref",
    "--format=%(objectname) %(refname)",
    "refs/heads",
    "refs/tags",
];

/// The refs of `repo` if it is a readable repository now: a mirror being written into place
/// is not yet, and a poll must not fail on that.
fn refs_if_ready(repo: &Path) -> Option<String> {
    try_git(repo, &REFS_ARGS)
}

fn commit(work: &Path, file: &str, text: &str) {
    std::fs::write(work.join(file), text).unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", text]);
}

fn share_with_b(a: &NodeProc, name: &str) {
    let out = a.cli(&["share", name, "--with", "b", "--mode", "pull"]);
    assert!(out.status.success(), "share {name}: {}", stderr(&out));
}

#[test]
fn an_artifact_registered_with_a_path_is_synced_at_once_and_an_unpublished_one_reads_pending() {
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    let a_cluster = cluster_id(&a);
    let artifacts = b.dir.join("mirrors").join(&a_cluster).join("artifacts");

    // Registered with its path: version 1 with the file's content, nothing else to run.
    let src = h.path("model.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let registered = a.register_artifact("model", &src);
    assert_eq!(registered["version"], 1, "{registered}");
    assert!(registered["content"].is_string(), "{registered}");
    share_with_b(&a, "model");
    let mirror = b.json(&["sync", "model", "--from", "a"]);
    assert_eq!(mirror["version"], 1);
    assert_eq!(mirror["content"], registered["content"]);
    assert!(
        std::fs::read(artifacts.join("model")).unwrap() == data,
        "mirror differs"
    );
    assert_eq!(pull_row(&b, "model").unwrap()["state"], "synced");

    // Registered with --no-publish: version 0, no content; the peer's pull says so, and its
    // status reads pending with the reason, never synced.
    let later = h.path("later.bin");
    std::fs::write(&later, b"published later").unwrap();
    let path = later.to_str().unwrap();
    let r = a.json(&[
        "resource",
        "register",
        "--kind",
        "artifact",
        "--name",
        "later",
        "--path",
        path,
        "--no-publish",
    ]);
    assert_eq!((r["version"].as_u64(), r["content"].is_null()), (Some(0), true), "{r}");
    share_with_b(&a, "later");
    let out = b.cli(&["sync", "later", "--from", "a"]);
    assert_eq!(out.status.code(), Some(EXIT_NOTHING_PUBLISHED), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing published yet"), "{}", stderr(&out));
    let row = pull_row(&b, "later").expect("a pull row for later");
    assert_eq!(row["state"], "pending", "{row}");
    assert_eq!(row["reason"], "nothing published yet", "{row}");
    assert_eq!(row["version"], 0, "{row}");
    assert_eq!(row["lag_ms"], 0, "nothing to lag behind: {row}");
    assert!(!artifacts.join("later").exists());
    // --json prints the followed mirror on stdout and keeps the exit code.
    let out = b.cli(&["sync", "later", "--from", "a", "--json"]);
    assert_eq!(out.status.code(), Some(EXIT_NOTHING_PUBLISHED));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (shown["version"].as_u64(), shown["mirror_of"].as_str()),
        (Some(0), Some(a_cluster.as_str()))
    );

    // The first version, published later, reaches b's mirror by itself.
    assert_eq!(a.json(&["resource", "publish", "later"])["version"], 1);
    wait_for("later's first version on b's disk", || {
        (std::fs::read(artifacts.join("later")).ok()? == b"published later").then_some(())
    });
    wait_for("later's pull row to read synced", || {
        let row = pull_row(&b, "later")?;
        (row["state"] == "synced" && row["version"] == 1 && row["reason"].is_null()).then_some(())
    });
}

#[test]
fn a_repository_registered_with_a_path_is_synced_at_once_with_the_same_refs() {
    if !causeway_sync::git::git_available() {
        println!("skipping: the git program is not installed");
        return;
    }
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    let a_cluster = cluster_id(&a);
    let repos = b.dir.join("mirrors").join(&a_cluster).join("repos");

    // A repository with two branches and a tag, registered: its refs are version 1.
    let origin = h.path("lib.git");
    let work = h.path("lib-work");
    std::fs::create_dir_all(&work).unwrap();
    git(h.root.path(), &["init", "-q", "--bare", origin.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    commit(&work, "lib.rs", "v1");
    git(&work, &["tag", "v1.0"]);
    git(&work, &["checkout", "-q", "-b", "next"]);
    commit(&work, "next.rs", "next");
    git(&work, &["push", "-q", origin.to_str().unwrap(), "main", "next", "v1.0"]);
    let out = a.cli(&[
        "resource",
        "register",
        "--kind",
        "forge/repo",
        "--name",
        "lib",
        "--path",
        origin.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["version"], 1, "{r}");
    share_with_b(&a, "lib");
    let m = b.json(&["sync", "lib", "--from", "a"]);
    assert_eq!(m["version"], 1);
    let mirror = repos.join("lib.git");
    assert_eq!(refs(&mirror), refs(&origin));
    assert_eq!(refs(&origin).lines().count(), 3);
    git(&mirror, &["fsck", "--strict"]);

    // A repository without refs has nothing to publish: version 0, pending at the peer; its
    // first push publishes (the hook registering installed) and reaches b by itself.
    let empty = h.path("empty.git");
    git(h.root.path(), &["init", "-q", "--bare", empty.to_str().unwrap()]);
    let r = a.json(&[
        "resource",
        "register",
        "--kind",
        "forge/repo",
        "--name",
        "empty",
        "--path",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(r["version"], 0, "{r}");
    share_with_b(&a, "empty");
    let out = b.cli(&["sync", "empty", "--from", "a"]);
    assert_eq!(out.status.code(), Some(EXIT_NOTHING_PUBLISHED), "{}", stderr(&out));
    let row = pull_row(&b, "empty").unwrap();
    assert_eq!(
        (row["state"].as_str(), row["reason"].as_str()),
        (Some("pending"), Some("nothing published yet"))
    );
    git(&work, &["push", "-q", empty.to_str().unwrap(), "main"]);
    let empty_mirror = repos.join("empty.git");
    wait_for("the first push at b", || {
        (refs_if_ready(&empty_mirror)? == refs(&empty)).then_some(())
    });
}

#[test]
fn an_import_that_fails_registers_nothing_and_a_rerun_succeeds() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    // A plain directory is no bare repository: the import fails, with the reason.
    let not_bare = h.path("not-bare");
    std::fs::create_dir_all(&not_bare).unwrap();
    std::fs::write(not_bare.join("README"), "not a repository").unwrap();
    let path = not_bare.to_str().unwrap();
    let register = [
        "resource",
        "register",
        "--kind",
        "forge/repo",
        "--name",
        "repo",
        "--path",
        path,
    ];
    let out = a.cli(&register);
    assert!(!out.status.success(), "a failed import registered");
    assert!(stderr(&out).contains("not a bare git repository"), "{}", stderr(&out));
    let out = a.cli(&["resource", "show", "repo"]);
    assert!(!out.status.success(), "the catalog holds a half-registered resource");
    assert_eq!(a.resource_names().unwrap(), Vec::<String>::new());

    // Once the path holds a repository, the same command succeeds.
    if causeway_sync::git::git_available() {
        std::fs::remove_dir_all(&not_bare).unwrap();
        git(h.root.path(), &["init", "-q", "--bare", path]);
        let out = a.cli(&register);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(a.resource_names().unwrap(), ["repo"]);
    }
    // --no-publish needs a path; without one, clap refuses it before anything is sent.
    let out = a.cli(&[
        "resource",
        "register",
        "--kind",
        "artifact",
        "--name",
        "x",
        "--no-publish",
    ]);
    assert!(!out.status.success());
    assert!(a.resource_names().unwrap().iter().all(|n| n != "x"));
}
