//! A linked peer choosing resource names and collection entries that would become paths inside
//! the receiver's other mirrors: nested names land in their own mirror, collections that could
//! escape or overwrite are refused before anything is written, a mirror whose files went
//! missing is written again, and mirrors of the older layout move into place at start.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

fn commit(work: &Path, text: &str) {
    std::fs::write(work.join("lib.rs"), text).unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", text]);
    git(work, &["push", "-q", "origin", "main"]);
}

/// A bare repository `name.git` with one pushed commit, and its work tree.
fn origin_repo(h: &Harness, name: &str) -> (PathBuf, PathBuf) {
    let origin = h.path(&format!("{name}.git"));
    let work = h.path(&format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git(h.root.path(), &["init", "-q", "--bare", origin.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    git(&work, &["remote", "add", "origin", origin.to_str().unwrap()]);
    commit(&work, "v1");
    (origin, work)
}

fn share_with_b(a: &NodeProc, name: &str) {
    let out = a.cli(&["share", name, "--with", "b", "--mode", "pull"]);
    assert!(out.status.success(), "share {name}: {}", stderr(&out));
}

/// Registers (and so publishes) and shares the file or directory at `path` as `name` on `a`.
fn offer_artifact(a: &NodeProc, name: &str, path: &Path) {
    a.register_artifact(name, path);
    share_with_b(a, name);
}

/// Where `node` says it keeps its mirror of `name`.
fn mirror_path(node: &NodeProc, name: &str) -> PathBuf {
    let r = node.json(&["resource", "show", name]);
    PathBuf::from(r["path"].as_str().unwrap_or_else(|| panic!("no path for {name}: {r}")))
}

/// Every file below `dir` (relative), with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn names_nested_in_a_repository_mirror_cannot_change_it() {
    if !causeway_sync::git::git_available() {
        println!("skipping: the git program is not installed");
        return;
    }
    let h = Harness::new();
    let (a, b) = h.linked_pair(|_| {}, |_| {});
    let a_id = cluster_id(&a);
    let (origin, work) = origin_repo(&h, "foo");
    let old_commit = git(&origin, &["rev-parse", "refs/heads/main"]);
    commit(&work, "v2");
    let out = a.cli(&[
        "resource",
        "register",
        "--kind",
        "forge/repo",
        "--name",
        "foo",
        "--path",
        origin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    share_with_b(&a, "foo");
    let bar = h.path("bar.bin");
    std::fs::write(&bar, b"an unrelated mirror").unwrap();
    offer_artifact(&a, "bar", &bar);

    assert_eq!(b.json(&["sync", "foo", "--from", "a"])["version"], 1);
    assert_eq!(b.json(&["sync", "bar", "--from", "a"])["version"], 1);
    let mirror = mirror_path(&b, "foo");
    assert_eq!(mirror, b.dir.join("mirrors").join(&a_id).join("repos").join("foo.git"));
    let bar_mirror = mirror_path(&b, "bar");
    assert_eq!(
        bar_mirror,
        b.dir.join("mirrors").join(&a_id).join("artifacts").join("bar")
    );
    let refs_before = git(&mirror, &["for-each-ref"]);
    let config_before = std::fs::read(mirror.join("config")).unwrap();
    let repo_tree_before = tree(&mirror);

    // The peer's artifacts, named to land inside b's mirror of `foo` in the old layout: a
    // branch moved back, hooks and objects taken from elsewhere, and a tree replacing it all.
    let evil = h.path("evil");
    std::fs::create_dir_all(evil.join("tree/refs/heads")).unwrap();
    std::fs::write(evil.join("main"), format!("{old_commit}\n")).unwrap();
    std::fs::write(
        evil.join("config"),
        "[core]\n\tbare = true\n\thooksPath = /tmp/causeway-evil-hooks\n",
    )
    .unwrap();
    std::fs::write(evil.join("alternates"), format!("{}\n", h.path("elsewhere").display())).unwrap();
    std::fs::write(evil.join("commondir"), "../../other.git\n").unwrap();
    std::fs::write(evil.join("tree/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(evil.join("tree/refs/heads/main"), format!("{old_commit}\n")).unwrap();
    let names = [
        ("foo.git/refs/heads/main", evil.join("main")),
        ("foo.git/config", evil.join("config")),
        ("foo.git/objects/info/alternates", evil.join("alternates")),
        ("foo.git/commondir", evil.join("commondir")),
        ("foo.git", evil.join("tree")),
    ];
    for (name, path) in &names {
        offer_artifact(&a, name, path);
        let m = b.json(&["sync", name, "--from", "a"]);
        assert_eq!(m["mirror_of"], a_id.as_str());
        // Each is a mirror of its own, beside the others, with its own bytes.
        let at = mirror_path(&b, name);
        assert_eq!(
            at.parent(),
            Some(b.dir.join("mirrors").join(&a_id).join("artifacts").as_path())
        );
        assert!(
            !at.starts_with(&mirror),
            "{name} landed in foo's mirror: {}",
            at.display()
        );
        if path.is_file() {
            assert_eq!(std::fs::read(&at).unwrap(), std::fs::read(path).unwrap());
        } else {
            assert_eq!(tree(&at), tree(path));
        }
    }

    // b's mirror of foo is as it was: refs, config, every file; the other mirror too.
    assert_eq!(git(&mirror, &["for-each-ref"]), refs_before);
    assert_eq!(std::fs::read(mirror.join("config")).unwrap(), config_before);
    assert_eq!(tree(&mirror), repo_tree_before);
    assert!(!mirror.join("commondir").exists() && !mirror.join("objects/info/alternates").exists());
    assert_eq!(std::fs::read(&bar_mirror).unwrap(), b"an unrelated mirror");
    git(&mirror, &["fsck", "--strict"]);

    // And it still follows its origin.
    commit(&work, "v3");
    let want = git(&origin, &["rev-parse", "refs/heads/main"]);
    wait_for("the new commit in b's mirror of foo", || {
        (git(&mirror, &["rev-parse", "refs/heads/main"]) == want).then_some(())
    });
}

/// Puts a collection with the given entries (each name with its bytes) into `a`'s blob store
/// while `a` is stopped; returns its content root.
fn craft_collection(a: &mut NodeProc, tag: &str, entries: &[(&str, Vec<u8>)]) -> String {
    assert!(a.stop());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = rt.block_on(async {
        let store = causeway::content::ContentStore::open(&a.dir.join(causeway::datadir::BLOBS_DIR))
            .await
            .unwrap();
        let mut collection = iroh_blobs::format::collection::Collection::default();
        let mut keep = Vec::new();
        for (name, bytes) in entries {
            let tt = store.store().blobs().add_bytes(bytes.clone()).await.unwrap();
            collection.push(name.to_string(), tt.hash);
            keep.push(tt);
        }
        let tt = collection.store(store.store()).await.unwrap();
        let root = iroh_blobs::HashAndFormat::hash_seq(tt.hash());
        store.tag(tag, root).await.unwrap();
        store.shutdown().await;
        root
    });
    a.start();
    root.to_string()
}

/// A crafted collection: its resource name, its entries, and the words of the refusal.
type Case = (&'static str, Vec<(&'static str, Vec<u8>)>, &'static str);

#[test]
fn collections_that_repeat_or_escape_are_refused_with_nothing_written() {
    let h = Harness::new();
    let (mut a, b) = h.linked_pair(|_| {}, |_| {});
    let a_id = cluster_id(&a);
    // Large enough to be stored as files of their own, which a mirror hard-links.
    let big = |seed: u8| -> Vec<u8> { (0..200_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect() };
    let cases: [Case; 3] = [
        ("dup", vec![("x", big(3)), ("x", big(5))], "twice"),
        (
            "escape",
            vec![("ok", big(7)), ("../../../escaped", b"pwned".to_vec())],
            "safe relative path",
        ),
        (
            "absolute",
            vec![("/tmp/causeway-escaped", b"pwned".to_vec())],
            "safe relative path",
        ),
    ];
    let mut roots = Vec::new();
    for (name, entries, _) in &cases {
        roots.push(craft_collection(&mut a, &format!("test/{name}"), entries));
    }
    wait_pinned(&b, "a");
    for ((name, _, why), root) in cases.iter().zip(&roots) {
        let out = a.cli(&["resource", "register", "--kind", "artifact", "--name", name]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = a.cli(&["resource", "publish", name, "--content", root]);
        assert!(out.status.success(), "{}", stderr(&out));
        share_with_b(&a, name);
        let out = b.cli(&["sync", name, "--from", "a"]);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr(&out).contains(why), "{name}: {}", stderr(&out));
    }
    // Nothing of them anywhere on b: no mirror, no partial tree, no escaped file.
    let artifacts = b.dir.join("mirrors").join(&a_id).join("artifacts");
    let left: Vec<String> = std::fs::read_dir(&artifacts)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "written on b: {left:?}");
    assert!(!b.dir.join("escaped").exists() && !h.root.path().join("escaped").exists());
    assert!(!Path::new("/tmp/causeway-escaped").exists());
    for (name, _, _) in &cases {
        let r = b.try_json(&["resource", "show", name]);
        assert!(r.is_none(), "{name} recorded as a mirror: {r:?}");
    }
}

#[test]
fn a_mirror_whose_files_are_gone_is_written_again() {
    let h = Harness::new();
    let (a, mut b) = h.linked_pair(|_| {}, |c| c.sync.member_replication_ms = 200);
    let file = h.path("f.bin");
    std::fs::write(&file, vec![9u8; 100_000]).unwrap();
    offer_artifact(&a, "f", &file);
    let site = h.path("site");
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(site.join("assets/app.js"), vec![1u8; 50_000]).unwrap();
    offer_artifact(&a, "docs/site", &site);
    b.json(&["sync", "f", "--from", "a"]);
    b.json(&["sync", "docs/site", "--from", "a"]);
    let (fm, sm) = (mirror_path(&b, "f"), mirror_path(&b, "docs/site"));
    assert_eq!(sm.file_name().unwrap(), "docs%2Fsite");
    let want = tree(&site);
    assert_eq!(tree(&sm), want);

    // Deleted while running: back by themselves.
    std::fs::remove_file(&fm).unwrap();
    std::fs::remove_dir_all(&sm).unwrap();
    wait_for("the deleted mirrors written again", || {
        (std::fs::read(&fm).ok()? == vec![9u8; 100_000] && tree(&sm) == want).then_some(())
    });

    // A crash in the middle of replacing the tree (the old one aside, the new one not yet in):
    // the start puts it back.
    assert!(b.stop());
    let aside = sm.with_file_name(".docs%2Fsite.causeway-old");
    std::fs::rename(&sm, &aside).unwrap();
    b.start();
    wait_for("the tree back in place", || {
        (tree(&sm) == want && !aside.exists()).then_some(())
    });

    // Mirrors in the older layout (`mirrors/<origin>/<name>`) move into place at start; a
    // file there that no mirror owns is kept aside, not deleted.
    assert!(b.stop());
    let a_id = origin_of(&b, &fm);
    let mirrors = b.dir.join("mirrors");
    let old_origin = h.path("old-origin");
    std::fs::create_dir_all(old_origin.join("docs")).unwrap();
    std::fs::rename(&fm, old_origin.join("f")).unwrap();
    std::fs::rename(&sm, old_origin.join("docs/site")).unwrap();
    std::fs::write(old_origin.join("stray"), b"an operator's file").unwrap();
    std::fs::remove_dir_all(&mirrors).unwrap();
    std::fs::create_dir_all(&mirrors).unwrap();
    std::fs::rename(&old_origin, mirrors.join(&a_id)).unwrap();
    let ino = std::fs::metadata(mirrors.join(&a_id).join("f")).unwrap().ino();
    b.start();
    wait_for("the older layout moved", || {
        (fm.exists() && tree(&sm) == want).then_some(())
    });
    assert_eq!(
        std::fs::metadata(&fm).unwrap().ino(),
        ino,
        "f was written again, not moved"
    );
    let kept = b.dir.join("mirrors.old-layout").join(&a_id).join("stray");
    assert_eq!(std::fs::read(kept).unwrap(), b"an operator's file");
}

/// The origin cluster ID in a mirror path `.../mirrors/<origin>/artifacts/<name>`.
fn origin_of(node: &NodeProc, mirror: &Path) -> String {
    let rel = mirror.strip_prefix(node.dir.join("mirrors")).unwrap();
    rel.components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned()
}
