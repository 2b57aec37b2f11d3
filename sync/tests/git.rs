//! Git repositories as bundle chains, against the real `git` program in temp directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_sync::git::{self, ApplyMode, GitError, RefMap};

macro_rules! require_git {
    () => {
        if !git::git_available() {
            eprintln!("skipping: the git program is not available");
            return;
        }
    };
}

/// Runs git for the test's own setup (commits, pushes) with a clean environment.
fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
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
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    origin: PathBuf,
    mirror: PathBuf,
}

impl World {
    /// A working repo with commits on `main` and `feature` and an annotated tag `v1`, pushed to
    /// a bare origin, and an empty bare mirror.
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let work = root.join("work");
        let origin = root.join("srv/origin.git");
        let mirror = root.join("mirrors/peer/repos/origin.git");
        git::init_bare(&origin).expect("init origin");
        git::init_bare(&mirror).expect("init mirror");
        std::fs::create_dir_all(&work).expect("mkdir");
        run(&work, &["init", "-q", "-b", "main"]);
        run(&work, &["remote", "add", "origin", origin.to_str().expect("utf8")]);
        let w = Self {
            _tmp: tmp,
            root,
            work,
            origin,
            mirror,
        };
        w.commit("README", "hello\n", "first");
        w.commit("src.txt", &"line\n".repeat(200), "second");
        run(&w.work, &["checkout", "-q", "-b", "feature"]);
        w.commit("feature.txt", "feature\n", "feature work");
        run(&w.work, &["checkout", "-q", "main"]);
        w.commit("README", "hello again\n", "third");
        run(&w.work, &["tag", "-a", "v1", "-m", "release 1"]);
        run(&w.work, &["push", "-q", "origin", "main", "feature", "v1"]);
        w
    }

    fn commit(&self, file: &str, content: &str, msg: &str) {
        std::fs::write(self.work.join(file), content).expect("write");
        run(&self.work, &["add", file]);
        run(&self.work, &["commit", "-q", "-m", msg]);
    }

    /// Some new content on a branch, pushed.
    fn advance(&self, branch: &str, n: usize, tag: &str) {
        run(&self.work, &["checkout", "-q", branch]);
        for i in 0..n {
            self.commit(
                &format!("{tag}-{i}.txt"),
                &format!("{tag} {i}\n{}", "x\n".repeat(50)),
                &format!("{tag} {i}"),
            );
        }
        run(&self.work, &["push", "-q", "origin", branch]);
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.root.join("bundles").join(name)
    }
}

#[test]
fn full_bundle_to_empty_mirror() {
    require_git!();
    let w = World::new();
    let origin_refs = git::refs(&w.origin).expect("refs");
    assert_eq!(
        origin_refs.keys().cloned().collect::<Vec<_>>(),
        vec!["refs/heads/feature", "refs/heads/main", "refs/tags/v1"]
    );
    assert!(git::is_bare_repo(&w.origin));
    assert!(!git::is_bare_repo(&w.work));
    assert!(!git::is_bare_repo(&w.root.join("nothing")));

    let b = w.bundle("v1.bundle");
    let info = git::create_bundle(&w.origin, &RefMap::new(), &b)
        .expect("create")
        .expect("some");
    assert_eq!(info.refs, origin_refs);
    assert!(info.prerequisites.is_empty());
    assert_eq!(info.bytes, std::fs::metadata(&b).expect("meta").len());
    assert_eq!(git::bundle_info(&b).expect("info"), info);
    assert_eq!(git::verify_bundle(&w.mirror, &b).expect("verify"), info);

    let outcome = git::apply_bundles(&w.mirror, std::slice::from_ref(&b)).expect("apply");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(outcome.updated, origin_refs);
    assert_eq!(git::refs(&w.mirror).expect("refs"), origin_refs);
    git::fsck(&w.mirror).expect("fsck");
    // No quarantine refs are left behind.
    assert!(run(&w.mirror, &["for-each-ref", "refs/causeway/"]).is_empty());

    // Applying again changes nothing.
    let again = git::apply_bundles(&w.mirror, &[b]).expect("apply again");
    assert!(again.updated.is_empty() && again.refused.is_empty());

    // compact() is a full bundle of the current refs.
    let c = w.bundle("compact.bundle");
    let info = git::compact(&w.origin, &c).expect("compact");
    assert_eq!(info.refs, origin_refs);
    assert!(info.prerequisites.is_empty());
    let fresh = w.root.join("fresh.git");
    git::init_bare(&fresh).expect("init");
    git::apply_bundles(&fresh, &[c]).expect("apply compact");
    assert_eq!(git::refs(&fresh).expect("refs"), origin_refs);
    git::fsck(&fresh).expect("fsck");
}

#[test]
fn incremental_bundles_and_chains() {
    require_git!();
    let w = World::new();
    let v1 = git::refs(&w.origin).expect("refs");
    let b1 = w.bundle("1.bundle");
    git::create_bundle_at(&w.origin, &RefMap::new(), &v1, &b1)
        .expect("create")
        .expect("some");
    git::apply_bundles(&w.mirror, &[b1]).expect("apply v1");

    // Nothing changed: no bundle.
    let none = w.bundle("none.bundle");
    assert!(git::create_bundle(&w.origin, &v1, &none).expect("create").is_none());
    assert!(!none.exists());

    // One more commit: the incremental bundle is smaller than a full one and applies on top.
    w.advance("main", 1, "inc");
    let v2 = git::refs(&w.origin).expect("refs");
    let b2 = w.bundle("2.bundle");
    let inc = git::create_bundle_at(&w.origin, &v1, &v2, &b2)
        .expect("create")
        .expect("some");
    let full = git::compact(&w.origin, &w.bundle("full.bundle")).expect("full");
    assert!(
        inc.bytes < full.bytes,
        "incremental {} >= full {}",
        inc.bytes,
        full.bytes
    );
    assert_eq!(inc.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/main"]);
    assert_eq!(inc.prerequisites, vec![v1["refs/heads/main"].clone()]);
    git::verify_bundle(&w.mirror, &b2).expect("verify");
    let outcome = git::apply_bundles(&w.mirror, &[b2]).expect("apply v2");
    assert_eq!(outcome.updated.keys().collect::<Vec<_>>(), vec!["refs/heads/main"]);
    assert_eq!(git::refs(&w.mirror).expect("refs"), v2);

    // Three more versions: a commit on feature, a new branch and a lightweight tag on an
    // existing commit (no new objects), and a commit on main; applied in one call.
    let mut since = v2.clone();
    let mut chain = Vec::new();
    w.advance("feature", 2, "feat");
    run(&w.work, &["branch", "release", "main"]);
    run(&w.work, &["tag", "light", "main~1"]);
    run(&w.work, &["push", "-q", "origin", "release", "light"]);
    let v3 = git::refs(&w.origin).expect("refs");
    let b = w.bundle("3.bundle");
    let info = git::create_bundle_at(&w.origin, &since, &v3, &b)
        .expect("create")
        .expect("some");
    assert_eq!(
        info.refs.keys().cloned().collect::<Vec<_>>(),
        vec!["refs/heads/feature", "refs/heads/release", "refs/tags/light"]
    );
    chain.push(b);
    since = v3;
    for (i, n) in [(4, 1), (5, 3)] {
        w.advance("main", n, &format!("v{i}"));
        let at = git::refs(&w.origin).expect("refs");
        let b = w.bundle(&format!("{i}.bundle"));
        git::create_bundle_at(&w.origin, &since, &at, &b)
            .expect("create")
            .expect("some");
        chain.push(b);
        since = at;
    }
    // A later bundle cannot be verified before the earlier ones are applied.
    assert!(matches!(
        git::verify_bundle(&w.mirror, &chain[2]),
        Err(GitError::MissingPrerequisites(_))
    ));
    let outcome = git::apply_bundles(&w.mirror, &chain).expect("apply chain");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(
        outcome.updated.keys().cloned().collect::<Vec<_>>(),
        vec![
            "refs/heads/feature",
            "refs/heads/main",
            "refs/heads/release",
            "refs/tags/light"
        ]
    );
    assert_eq!(git::refs(&w.mirror).expect("refs"), since);
    git::fsck(&w.mirror).expect("fsck");

    // A bundle with no new objects at all (a lightweight tag on a commit the mirror has).
    run(&w.work, &["tag", "old", "main~2"]);
    run(&w.work, &["push", "-q", "origin", "old"]);
    let v6 = git::refs(&w.origin).expect("refs");
    let b6 = w.bundle("6.bundle");
    let info = git::create_bundle_at(&w.origin, &since, &v6, &b6)
        .expect("create")
        .expect("some");
    assert_eq!(info.refs.keys().collect::<Vec<_>>(), vec!["refs/tags/old"]);
    assert_eq!(info.prerequisites, vec![v6["refs/tags/old"].clone()]);
    git::verify_bundle(&w.mirror, &b6).expect("verify");
    let outcome = git::apply_bundles(&w.mirror, &[b6]).expect("apply 6");
    assert_eq!(outcome.updated.keys().collect::<Vec<_>>(), vec!["refs/tags/old"]);
    assert_eq!(git::refs(&w.mirror).expect("refs"), v6);
    since = v6;

    // verify_bundle leaves no scratch directories behind.
    let leftovers: Vec<_> = std::fs::read_dir(&w.mirror)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("causeway-verify"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Deleting a ref at the origin: no bundle, and the mirror keeps it.
    run(&w.work, &["push", "-q", "origin", ":release"]);
    assert!(git::create_bundle(&w.origin, &since, &none).expect("create").is_none());
}

#[test]
fn divergent_ref_is_refused_others_move() {
    require_git!();
    let w = World::new();
    let v1 = git::refs(&w.origin).expect("refs");
    let b1 = w.bundle("1.bundle");
    git::create_bundle(&w.origin, &RefMap::new(), &b1).expect("create");
    git::apply_bundles(&w.mirror, &[b1]).expect("apply");

    // Rewrite main at the origin (force-push) and advance feature normally.
    run(&w.work, &["checkout", "-q", "main"]);
    run(&w.work, &["reset", "-q", "--hard", "main~1"]);
    w.commit("rewritten.txt", "another history\n", "rewritten");
    run(&w.work, &["push", "-q", "--force", "origin", "main"]);
    w.advance("feature", 1, "ff");
    let v2 = git::refs(&w.origin).expect("refs");
    assert!(!git::is_ancestor(&w.origin, &v1["refs/heads/main"], &v2["refs/heads/main"]).expect("ancestor"));
    assert!(git::is_ancestor(&w.origin, &v1["refs/heads/feature"], &v2["refs/heads/feature"]).expect("ancestor"));

    let b2 = w.bundle("2.bundle");
    git::create_bundle_at(&w.origin, &v1, &v2, &b2)
        .expect("create")
        .expect("some");

    // All or nothing: nothing moves.
    let err =
        git::apply_bundles_with(&w.mirror, std::slice::from_ref(&b2), ApplyMode::AllOrNothing).expect_err("refused");
    assert!(
        matches!(&err, GitError::Divergent(names) if names == &["refs/heads/main".to_string()]),
        "{err}"
    );
    assert_eq!(git::refs(&w.mirror).expect("refs"), v1);

    // Best effort: main refused and reported, feature fast-forwards.
    let outcome = git::apply_bundles(&w.mirror, std::slice::from_ref(&b2)).expect("apply");
    assert_eq!(outcome.refused.len(), 1, "{:?}", outcome.refused);
    let r = &outcome.refused[0];
    assert_eq!(r.name, "refs/heads/main");
    assert_eq!(r.current.as_deref(), Some(v1["refs/heads/main"].as_str()));
    assert_eq!(r.incoming, v2["refs/heads/main"]);
    assert!(r.reason.contains("fast-forward"), "{}", r.reason);
    assert_eq!(outcome.updated.keys().collect::<Vec<_>>(), vec!["refs/heads/feature"]);
    let mirror_refs = git::refs(&w.mirror).expect("refs");
    assert_eq!(mirror_refs["refs/heads/main"], v1["refs/heads/main"]);
    assert_eq!(mirror_refs["refs/heads/feature"], v2["refs/heads/feature"]);
    git::fsck(&w.mirror).expect("fsck");
    // The refused tip stays reachable for later bundles that build on it.
    let pins = git::refused_pins(&w.mirror).expect("pins");
    assert_eq!(
        pins.get("refs/causeway/refused/heads/main"),
        Some(&v2["refs/heads/main"])
    );
    assert!(outcome.clone().into_result().is_err());

    // Even an aggressive gc keeps the refused history (the pin holds it).
    git::gc(&w.mirror).expect("gc");
    run(&w.mirror, &["gc", "-q", "--prune=now"]);

    // The origin continues on the rewritten history: the next bundle applies (its
    // prerequisite is the pinned tip), main is still refused, and stays reported.
    w.advance("main", 1, "after");
    let v3 = git::refs(&w.origin).expect("refs");
    let b3 = w.bundle("3.bundle");
    git::create_bundle_at(&w.origin, &v2, &v3, &b3)
        .expect("create")
        .expect("some");
    let outcome = git::apply_bundles(&w.mirror, &[b3]).expect("apply 3");
    assert_eq!(
        outcome.refused.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["refs/heads/main"]
    );
    assert_eq!(
        git::refs(&w.mirror).expect("refs")["refs/heads/main"],
        v1["refs/heads/main"]
    );
    assert_eq!(
        git::refused_pins(&w.mirror)
            .expect("pins")
            .get("refs/causeway/refused/heads/main"),
        Some(&v3["refs/heads/main"])
    );

    // A moved tag is refused too.
    run(&w.work, &["tag", "-f", "-a", "v1", "-m", "moved", "feature"]);
    run(&w.work, &["push", "-q", "--force", "origin", "v1"]);
    let v4 = git::refs(&w.origin).expect("refs");
    let b4 = w.bundle("4.bundle");
    git::create_bundle_at(&w.origin, &v3, &v4, &b4)
        .expect("create")
        .expect("some");
    let outcome = git::apply_bundles(&w.mirror, &[b4]).expect("apply 4");
    assert!(
        outcome.refused.iter().any(|r| r.name == "refs/tags/v1"),
        "{:?}",
        outcome.refused
    );
    assert_eq!(git::refs(&w.mirror).expect("refs")["refs/tags/v1"], v1["refs/tags/v1"]);
    git::fsck(&w.mirror).expect("fsck");
}

#[test]
fn tampered_bundle_is_rejected_and_mirror_unchanged() {
    require_git!();
    let w = World::new();
    let v1 = git::refs(&w.origin).expect("refs");
    let b1 = w.bundle("1.bundle");
    git::create_bundle(&w.origin, &RefMap::new(), &b1).expect("create");
    git::apply_bundles(&w.mirror, &[b1]).expect("apply");

    w.advance("main", 3, "more");
    let v2 = git::refs(&w.origin).expect("refs");
    let b2 = w.bundle("2.bundle");
    git::create_bundle_at(&w.origin, &v1, &v2, &b2)
        .expect("create")
        .expect("some");
    let mut bytes = std::fs::read(&b2).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xa5;
    }
    let bad = w.bundle("bad.bundle");
    std::fs::write(&bad, &bytes).expect("write");

    let err = git::verify_bundle(&w.mirror, &bad).expect_err("tampered");
    assert!(matches!(err, GitError::InvalidBundle(_)), "{err}");
    let err = git::apply_bundles(&w.mirror, std::slice::from_ref(&bad)).expect_err("tampered");
    assert!(matches!(err, GitError::InvalidBundle(_)), "{err}");
    assert_eq!(git::refs(&w.mirror).expect("refs"), v1);
    assert!(run(&w.mirror, &["for-each-ref", "refs/causeway/"]).is_empty());
    git::fsck(&w.mirror).expect("fsck");

    // A good chain with a bad bundle in it moves nothing either.
    let err = git::apply_bundles(&w.mirror, &[b2.clone(), bad]).expect_err("chain with a bad bundle");
    assert!(
        matches!(err, GitError::InvalidBundle(_) | GitError::MissingPrerequisites(_)),
        "{err}"
    );
    assert_eq!(git::refs(&w.mirror).expect("refs"), v1);

    // A truncated file and a file that is not a bundle are rejected as well.
    let short = w.bundle("short.bundle");
    std::fs::write(&short, &std::fs::read(&b2).expect("read")[..40]).expect("write");
    assert!(matches!(
        git::verify_bundle(&w.mirror, &short),
        Err(GitError::InvalidBundle(_))
    ));
    let junk = w.bundle("junk.bundle");
    std::fs::write(&junk, b"hello").expect("write");
    assert!(matches!(
        git::apply_bundles(&w.mirror, &[junk]),
        Err(GitError::InvalidBundle(_))
    ));

    // The intact bundle still applies.
    git::apply_bundles(&w.mirror, &[b2]).expect("apply good");
    assert_eq!(git::refs(&w.mirror).expect("refs"), v2);
}

#[test]
fn sha256_repositories() {
    require_git!();
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    run(&work, &["init", "-q", "-b", "main", "--object-format=sha256"]);
    std::fs::write(work.join("f"), "x\n").expect("write");
    run(&work, &["add", "f"]);
    run(&work, &["commit", "-q", "-m", "one"]);
    let origin = tmp.path().join("origin.git");
    git::init_bare_with(&origin, git::ObjectFormat::Sha256).expect("init");
    run(&work, &["push", "-q", origin.to_str().expect("utf8"), "main"]);
    let b = tmp.path().join("full.bundle");
    let info = git::compact(&origin, &b).expect("compact");
    assert_eq!(info.object_format, git::ObjectFormat::Sha256);
    assert_eq!(info.refs["refs/heads/main"].len(), 64);

    let sha1_mirror = tmp.path().join("sha1.git");
    git::init_bare(&sha1_mirror).expect("init");
    assert!(matches!(
        git::apply_bundles(&sha1_mirror, std::slice::from_ref(&b)),
        Err(GitError::ObjectFormatMismatch { .. })
    ));
    let mirror = tmp.path().join("mirror.git");
    git::init_bare_with(&mirror, git::bundle_info(&b).expect("info").object_format).expect("init");
    git::verify_bundle(&mirror, &b).expect("verify");
    git::apply_bundles(&mirror, &[b]).expect("apply");
    assert_eq!(git::refs(&mirror).expect("refs"), git::refs(&origin).expect("refs"));
    git::fsck(&mirror).expect("fsck");
}

#[test]
fn errors_are_typed() {
    require_git!();
    let tmp = tempfile::tempdir().expect("tempdir");
    let nothing = tmp.path().join("nothing");
    assert!(matches!(git::refs(&nothing), Err(GitError::NotARepository(_))));
    std::fs::create_dir_all(&nothing).expect("mkdir");
    assert!(matches!(git::refs(&nothing), Err(GitError::NotARepository(_))));
    assert!(matches!(git::fsck(&nothing), Err(GitError::NotARepository(_))));
    assert!(matches!(
        git::apply_bundles(&nothing, &[]),
        Err(GitError::NotARepository(_))
    ));
    let empty = tmp.path().join("empty.git");
    git::init_bare(&empty).expect("init");
    assert!(git::refs(&empty).expect("refs").is_empty());
    assert!(matches!(
        git::compact(&empty, &tmp.path().join("x.bundle")),
        Err(GitError::NothingToBundle(_))
    ));
    let err =
        git::is_ancestor(&empty, "0123456789012345678901234567890123456789", "refs/heads/main").expect_err("no such");
    match err {
        GitError::Command { stderr, status, .. } => {
            assert!(!stderr.is_empty());
            assert_ne!(status, Some(0));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(matches!(
        git::is_ancestor(&empty, "--all", "x"),
        Err(GitError::InvalidArgument(_))
    ));
    assert_eq!(git::head(&empty).expect("head").as_deref(), Some("refs/heads/main"));
    git::set_head(&empty, "refs/heads/trunk").expect("set head");
    assert_eq!(git::head(&empty).expect("head").as_deref(), Some("refs/heads/trunk"));
    assert!(git::set_head(&empty, "refs/tags/v1").is_err());
}

#[test]
fn a_repository_borrowing_refs_or_objects_is_neither_bundled_from_nor_written_to() {
    require_git!();
    let w = World::new();
    let b = w.bundle("full.bundle");
    git::create_bundle(&w.origin, &RefMap::new(), &b)
        .expect("create")
        .expect("some");
    let shared = |r: Result<_, GitError>| matches!(r, Err(GitError::SharedRepository { .. }));

    // A mirror whose objects come from another repository (what a peer-chosen
    // `objects/info/alternates` would make it): no apply, gc, hook or bundle.
    let alternates = w.mirror.join("objects/info/alternates");
    std::fs::write(&alternates, format!("{}\n", w.origin.join("objects").display())).expect("write");
    assert!(shared(
        git::apply_bundles(&w.mirror, std::slice::from_ref(&b)).map(|_| ())
    ));
    assert!(git::refs(&w.mirror).expect("refs").is_empty(), "refs moved");
    assert!(shared(git::gc(&w.mirror)));
    assert!(shared(git::install_notify_hook(&w.mirror, "true")));
    assert!(!w.mirror.join("hooks/post-receive").exists());
    assert!(shared(git::verify_bundle(&w.mirror, &b).map(|_| ())));
    std::fs::remove_file(&alternates).expect("rm");

    // A repository whose refs live in another (`commondir`): bundling it would hand out the
    // other repository's refs and objects.
    let borrower = w.root.join("borrower.git");
    git::init_bare(&borrower).expect("init");
    std::fs::write(borrower.join("commondir"), format!("{}\n", w.origin.display())).expect("write");
    let at = git::refs(&w.origin).expect("refs");
    let out = w.bundle("stolen.bundle");
    assert!(shared(
        git::create_bundle_at(&borrower, &RefMap::new(), &at, &out).map(|_| ())
    ));
    assert!(!out.exists());
    assert!(shared(
        git::apply_bundles(&borrower, std::slice::from_ref(&b)).map(|_| ())
    ));
}

#[test]
fn a_ref_name_git_would_refuse_is_refused_alone() {
    require_git!();
    let w = World::new();
    let good = w.bundle("good.bundle");
    git::create_bundle(&w.origin, &RefMap::new(), &good)
        .expect("create")
        .expect("some");
    // The same pack under a header naming a branch `refs/heads/../../config`.
    let bytes = std::fs::read(&good).expect("read");
    let end = bytes.windows(2).position(|p| p == b"\n\n").expect("header end") + 2;
    let header = String::from_utf8(bytes[..end].to_vec()).expect("utf8");
    let evil_header = header.replace("refs/heads/feature", "refs/heads/../../config");
    assert_ne!(header, evil_header);
    let evil = w.bundle("evil.bundle");
    std::fs::write(&evil, [evil_header.as_bytes(), &bytes[end..]].concat()).expect("write");

    let outcome = git::apply_bundles(&w.mirror, &[evil]).expect("the other refs still move");
    let refused: Vec<&str> = outcome.refused.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(refused, ["refs/heads/../../config"]);
    assert_eq!(outcome.refused[0].reason, "not a valid ref name");
    let origin = git::refs(&w.origin).expect("refs");
    let mirror = git::refs(&w.mirror).expect("refs");
    assert_eq!(mirror.get("refs/heads/main"), origin.get("refs/heads/main"));
    assert!(!mirror.contains_key("refs/heads/feature"));
    git::fsck(&w.mirror).expect("fsck");
}

#[test]
fn notify_hook_is_idempotent_chains_and_runs_on_push() {
    require_git!();
    let w = World::new();
    let hooks = w.origin.join("hooks");
    // An existing hook of the forge's own, which must keep running.
    let theirs = w.root.join("theirs-ran");
    std::fs::write(
        hooks.join("post-receive"),
        format!("#!/bin/sh\ncat > '{}'\n", theirs.display()),
    )
    .expect("write hook");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(hooks.join("post-receive"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let flag = w.root.join("notified");
    let command = format!("cat > '{}'", flag.display());
    git::install_notify_hook(&w.origin, &command).expect("install");
    let first = std::fs::read_to_string(hooks.join("post-receive")).expect("read");
    git::install_notify_hook(&w.origin, &command).expect("reinstall");
    assert_eq!(
        std::fs::read_to_string(hooks.join("post-receive")).expect("read"),
        first
    );
    assert!(first.contains(git::HOOK_MARKER));
    let chained = std::fs::read_to_string(hooks.join("post-receive.causeway-chained")).expect("chained");
    assert!(chained.contains("theirs-ran"));
    let hook_files = std::fs::read_dir(&hooks)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("post-receive") || n.starts_with(".post-receive"))
        .count();
    assert_eq!(hook_files, 2, "reinstalling must not pile up files");

    w.advance("main", 1, "hooked");
    let main = git::refs(&w.origin).expect("refs")["refs/heads/main"].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ours = std::fs::read_to_string(&flag).unwrap_or_default();
        let forge = std::fs::read_to_string(&theirs).unwrap_or_default();
        if ours.contains(&main) && forge.contains(&main) {
            assert!(ours.contains("refs/heads/main"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hook did not run (ours {ours:?}, theirs {forge:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    assert!(matches!(
        git::install_notify_hook(&w.origin, "  "),
        Err(GitError::InvalidArgument(_))
    ));
}

/// A chain of four versions of `w.origin`: a full bundle, then three incremental ones (a
/// commit on main, a new branch and tag, two commits on feature). Returns the bundles and the
/// refs after each.
fn four_versions(w: &World) -> (Vec<PathBuf>, Vec<RefMap>) {
    let mut since = RefMap::new();
    let (mut bundles, mut versions) = (Vec::new(), Vec::new());
    for i in 0..4 {
        match i {
            0 => {}
            1 => w.advance("main", 1, "one"),
            2 => {
                run(&w.work, &["branch", "release", "main"]);
                run(&w.work, &["tag", "light", "main~1"]);
                run(&w.work, &["push", "-q", "origin", "release", "light"]);
            }
            _ => w.advance("feature", 2, "three"),
        }
        let at = git::refs(&w.origin).expect("refs");
        let b = w.bundle(&format!("chain-{i}.bundle"));
        git::create_bundle_at(&w.origin, &since, &at, &b)
            .expect("create")
            .expect("some");
        bundles.push(b);
        versions.push(at.clone());
        since = at;
    }
    (bundles, versions)
}

fn infos(bundles: &[PathBuf]) -> Vec<git::BundleInfo> {
    bundles.iter().map(|b| git::bundle_info(b).expect("info")).collect()
}

#[test]
fn a_chain_applies_only_the_bundles_the_mirror_lacks() {
    require_git!();
    let w = World::new();
    let (bundles, versions) = four_versions(&w);
    let outcome = git::apply_bundles(&w.mirror, &bundles[..2]).expect("apply first two");
    assert_eq!(outcome.bundles_read, 2);
    assert_eq!(git::refs(&w.mirror).expect("refs"), versions[1]);

    // The whole chain again: bundle 2 only names commits the mirror has (a new branch and a
    // lightweight tag), so only bundle 3 is opened and read; bundle 2's refs still arrive.
    let mut opened = Vec::new();
    let outcome = git::apply_chain(&w.mirror, &infos(&bundles), ApplyMode::BestEffort, |i| {
        opened.push(i);
        Ok(bundles[i].clone())
    })
    .expect("apply chain");
    assert_eq!(opened, vec![3]);
    assert_eq!(outcome.bundles_read, 1);
    assert_eq!(
        outcome.updated.keys().cloned().collect::<Vec<_>>(),
        vec!["refs/heads/feature", "refs/heads/release", "refs/tags/light"]
    );
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(git::refs(&w.mirror).expect("refs"), versions[3]);
    git::fsck(&w.mirror).expect("fsck");

    // The same refs as a fresh mirror that reads all four.
    let fresh = w.root.join("fresh.git");
    git::init_bare(&fresh).expect("init");
    let outcome = git::apply_bundles(&fresh, &bundles).expect("apply all");
    assert_eq!(outcome.bundles_read, 4);
    assert_eq!(git::refs(&fresh).expect("refs"), git::refs(&w.mirror).expect("refs"));
    git::fsck(&fresh).expect("fsck");

    // A mirror that has everything opens nothing and moves nothing.
    let outcome = git::apply_chain(&w.mirror, &infos(&bundles), ApplyMode::BestEffort, |i| {
        panic!("bundle {i} opened although the mirror has it")
    })
    .expect("apply again");
    assert_eq!(outcome.bundles_read, 0);
    assert!(outcome.updated.is_empty() && outcome.refused.is_empty());

    // A skipped bundle's refs still count: a branch deleted on the mirror comes back.
    run(&w.mirror, &["update-ref", "-d", "refs/heads/release"]);
    let outcome = git::apply_bundles(&w.mirror, &bundles).expect("apply after a deletion");
    assert_eq!(outcome.bundles_read, 0);
    assert_eq!(outcome.updated.keys().collect::<Vec<_>>(), vec!["refs/heads/release"]);
    assert_eq!(git::refs(&w.mirror).expect("refs"), versions[3]);
}

#[test]
fn a_bundle_whose_prerequisites_are_missing_is_refused() {
    require_git!();
    let w = World::new();
    let (bundles, versions) = four_versions(&w);
    // Bundle 1 builds on bundle 0, which the mirror has not seen.
    let err = git::apply_bundles(&w.mirror, &bundles[1..2]).expect_err("gap in the chain");
    assert!(matches!(err, GitError::MissingPrerequisites(_)), "{err}");
    assert!(git::refs(&w.mirror).expect("refs").is_empty());
    git::fsck(&w.mirror).expect("fsck");
    let outcome = git::apply_bundles(&w.mirror, &bundles[..2]).expect("with its base");
    assert_eq!(outcome.bundles_read, 2);
    assert_eq!(git::refs(&w.mirror).expect("refs"), versions[1]);
}

#[test]
fn tips_present_without_their_history_are_not_taken_as_applied() {
    require_git!();
    let w = World::new();
    let (bundles, versions) = four_versions(&w);
    git::apply_bundles(&w.mirror, &bundles[..1]).expect("apply first");
    // Bundle 1's commit reaches the mirror alone, without its tree (as a failed apply of a
    // damaged bundle could leave it).
    let tip = &versions[1]["refs/heads/main"];
    let commit = run(&w.origin, &["cat-file", "commit", tip]);
    let loose = w.root.join("commit.txt");
    std::fs::write(&loose, format!("{commit}\n")).expect("write");
    let written = run(
        &w.mirror,
        &[
            "hash-object",
            "-w",
            "-t",
            "commit",
            "--literally",
            loose.to_str().expect("utf8"),
        ],
    );
    assert_eq!(&written, tip);
    let outcome = git::apply_bundles(&w.mirror, &bundles[..2]).expect("apply");
    assert!(outcome.bundles_read >= 1, "bundle 1 was skipped");
    assert_eq!(git::refs(&w.mirror).expect("refs"), versions[1]);
    git::fsck(&w.mirror).expect("fsck");
}

#[test]
fn a_ref_to_an_object_the_pack_lacks_is_refused() {
    require_git!();
    let w = World::new();
    let full = w.bundle("full.bundle");
    git::compact(&w.origin, &full).expect("compact");
    let bytes = std::fs::read(&full).expect("read");
    let end = bytes.windows(2).position(|p| p == b"\n\n").expect("header end") + 1;
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    let mut forged = bytes[..end].to_vec();
    forged.extend_from_slice(format!("{ghost} refs/heads/ghost\n").as_bytes());
    forged.extend_from_slice(&bytes[end..]);
    let bad = w.bundle("ghost.bundle");
    std::fs::write(&bad, &forged).expect("write");
    let err = git::apply_bundles(&w.mirror, &[bad]).expect_err("ghost ref");
    assert!(matches!(err, GitError::InvalidBundle(_)), "{err}");
    assert!(git::refs(&w.mirror).expect("refs").is_empty());
}

#[test]
fn a_header_read_from_elsewhere_must_match_the_file() {
    require_git!();
    let w = World::new();
    let (bundles, _) = four_versions(&w);
    let bytes = std::fs::read(&bundles[1]).expect("read");
    let total = bytes.len() as u64;
    // Headers parse from a prefix; a short prefix asks for more.
    assert_eq!(
        git::bundle_info_from_prefix(&bytes[..10], false, total).expect("short"),
        None
    );
    assert_eq!(
        git::bundle_info_from_prefix(&bytes[..200.min(bytes.len())], false, total).expect("prefix"),
        Some(git::bundle_info(&bundles[1]).expect("info"))
    );
    assert!(matches!(
        git::bundle_info_from_prefix(b"# v2 git bundle\n", true, 16),
        Err(GitError::InvalidBundle(_))
    ));
    // Bundle 0's file handed out for bundle 1's header is refused.
    git::apply_bundles(&w.mirror, &bundles[..1]).expect("apply first");
    let err = git::apply_chain(&w.mirror, &infos(&bundles[..2]), ApplyMode::BestEffort, |_| {
        Ok(bundles[0].clone())
    })
    .expect_err("wrong file");
    assert!(matches!(err, GitError::InvalidBundle(_)), "{err}");
}
