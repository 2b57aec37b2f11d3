//! Where mirrors live on a node's disk, and the rules that keep a peer-chosen name from
//! becoming a path of its choosing: `DATA_DIR/mirrors/<origin>/repos/<name>.git` and
//! `DATA_DIR/mirrors/<origin>/artifacts/<name>`, each name encoded into one path component.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use causeway_proto::ClusterId;

use crate::error::NodeError;

/// The directory below the data directory that holds every mirror.
pub const MIRRORS_DIR: &str = "mirrors";
/// Repository mirrors of one origin, below `mirrors/<origin>/`.
pub const REPOS_DIR: &str = "repos";
/// Artifact mirrors of one origin, below `mirrors/<origin>/`.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// Present in `mirrors/` once it is laid out as this module says; a `mirrors/` without it was
/// written by an older version as `mirrors/<origin>/<name>[.git]`.
pub const LAYOUT_MARKER: &str = ".layout-v2";
/// Longest encoded name kept whole; a longer one is cut and made unique with a hash (a file
/// name is at most 255 bytes, and `.git` plus the scratch suffixes must still fit).
pub const MAX_ENCODED_NAME: usize = 200;
/// Suffix of a file or tree being written before it is moved into place.
pub const PARTIAL_SUFFIX: &str = ".causeway-partial";
/// Suffix of the previous tree while a new one is moved into its place.
pub const OLD_SUFFIX: &str = ".causeway-old";
/// Prefix of the scratch directory a repository mirror's bundles are taken out into.
pub const APPLY_PREFIX: &str = ".causeway-apply-";

/// A resource name as one path component: letters, digits, `-`, `_` and `.` (not first) stay
/// as they are, every other byte (`/` and `%` among them) becomes `%XX`. The result is never
/// empty, `.` or `..`, never starts with `.` (scratch names do), and two names never encode
/// the same, so no mirror's path can be, or lie inside, another's.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        // Cannot come from a non-empty name: an encoded `%` is always followed by two digits.
        out.push('%');
    }
    if out.len() > MAX_ENCODED_NAME {
        // `~` never survives encoding, so a shortened name cannot equal a whole one.
        let hash = blake3::hash(name.as_bytes()).to_hex();
        out.truncate(MAX_ENCODED_NAME - hash.len() - 1);
        out.push('~');
        out.push_str(&hash);
    }
    out
}

/// The directory of one origin's mirrors.
pub fn origin_dir(data_dir: &Path, origin: &ClusterId) -> PathBuf {
    data_dir.join(MIRRORS_DIR).join(origin.to_string())
}

fn kind_dir(kind: &str) -> &'static str {
    if kind == "forge/repo" { REPOS_DIR } else { ARTIFACTS_DIR }
}

/// Where a mirror of `name` from `origin` is materialized.
pub fn mirror_path(data_dir: &Path, origin: &ClusterId, name: &str, kind: &str) -> PathBuf {
    let dir = origin_dir(data_dir, origin).join(kind_dir(kind));
    if kind == "forge/repo" {
        dir.join(format!("{}.git", encode_name(name)))
    } else {
        dir.join(encode_name(name))
    }
}

/// `target`'s sibling with `.` before and `suffix` after its file name: never a mirror's own
/// path (encoded names do not start with `.`).
pub fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(suffix);
    target.with_file_name(name)
}

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("mirror: {e}"))
}

/// A directory that must be a real directory (created if missing), never a symlink: nothing
/// is written through a link someone else placed.
fn real_dir(path: &Path) -> Result<(), NodeError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(NodeError::Refused(format!(
            "{} is not a directory (a symlink or a file): not writing through it",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => real_dir(path),
            Err(e) => Err(err(format!("creating {}: {e}", path.display()))),
        },
        Err(e) => Err(err(format!("{}: {e}", path.display()))),
    }
}

/// Creates the directories a mirror of `kind` from `origin` is written into (and marks
/// `mirrors/` as this layout), checking each is a real directory; refuses a mirror path that
/// is a symlink. Returns the mirror's path.
pub fn prepare(data_dir: &Path, origin: &ClusterId, name: &str, kind: &str) -> Result<PathBuf, NodeError> {
    let mirrors = data_dir.join(MIRRORS_DIR);
    real_dir(&mirrors)?;
    let marker = mirrors.join(LAYOUT_MARKER);
    if std::fs::symlink_metadata(&marker).is_err() {
        std::fs::write(&marker, b"").map_err(|e| err(format!("{}: {e}", marker.display())))?;
    }
    let origin_dir = origin_dir(data_dir, origin);
    real_dir(&origin_dir)?;
    real_dir(&origin_dir.join(kind_dir(kind)))?;
    let target = mirror_path(data_dir, origin, name, kind);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(NodeError::Refused(format!(
            "{} is a symlink: not writing through it",
            target.display()
        )));
    }
    Ok(target)
}

/// Whether a mirror's files are gone from `path` (deleted, or lost to a crash), so it must be
/// written again.
pub fn is_missing(path: &Path, kind: &str) -> bool {
    if kind == "forge/repo" {
        !(path.join("HEAD").is_file() && path.join("objects").is_dir())
    } else {
        std::fs::symlink_metadata(path).is_err()
    }
}

/// Checks a directory artifact's entry names before anything is written: each a relative
/// path of non-empty components other than `.` and `..`, no NUL, none listed twice, and none
/// both a file and a directory of another entry (`a` and `a/b`), at most `max` of them.
pub fn check_entry_names<'a>(names: impl IntoIterator<Item = &'a str>, max: usize) -> Result<(), NodeError> {
    let mut seen = BTreeSet::new();
    for name in names {
        let safe =
            !name.is_empty() && !name.contains('\0') && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !safe {
            return Err(NodeError::Refused(format!(
                "collection entry {name:?} is not a safe relative path"
            )));
        }
        if !seen.insert(name) {
            return Err(NodeError::Refused(format!("collection lists {name:?} twice")));
        }
        if seen.len() > max {
            return Err(NodeError::Refused(format!("collection has more than {max} entries")));
        }
    }
    for name in &seen {
        let mut end = 0;
        while let Some(i) = name[end..].find('/') {
            end += i;
            if seen.contains(&name[..end]) {
                return Err(NodeError::Refused(format!(
                    "collection entry {:?} is both a file and the directory of {name:?}",
                    &name[..end]
                )));
            }
            end += 1;
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a file, a symlink or a tree).
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves the complete `partial` to `target`. A file replaces a file in one rename; otherwise
/// (a tree, or a file becoming a tree) the previous version goes aside first (`.<name>.causeway-old`) and is removed after, so a crash
/// at any point leaves either version in place or aside, which [`recover`] puts back.
pub fn swap_into_place(partial: &Path, target: &Path) -> Result<(), NodeError> {
    let aside = sibling(target, OLD_SUFFIX);
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    // A rename replaces a file by a file only; anything else goes aside first.
    let target_is_dir = std::fs::symlink_metadata(target).is_ok() && (is_dir(target) || is_dir(partial));
    if target_is_dir {
        remove_any(&aside).map_err(|e| err(format!("{}: {e}", aside.display())))?;
        std::fs::rename(target, &aside).map_err(|e| err(format!("moving {} aside: {e}", target.display())))?;
    }
    std::fs::rename(partial, target).map_err(|e| err(format!("moving {} into place: {e}", target.display())))?;
    if target_is_dir && let Err(e) = remove_any(&aside) {
        tracing::warn!(path = %aside.display(), error = %e, "cannot remove a mirror's previous version");
    }
    Ok(())
}

/// At start, before any transfer: finishes or undoes what an interrupted write left in each
/// origin's mirror directories. Scratch directories and partial writes are removed; a
/// previous version left aside goes back into place when no new one replaced it.
pub fn recover(data_dir: &Path) {
    let root = data_dir.join(MIRRORS_DIR);
    let Ok(origins) = std::fs::read_dir(&root) else {
        return;
    };
    // In an older layout `repos/` and `artifacts/` may be mirrors of their own: not touched.
    let this_layout = std::fs::symlink_metadata(root.join(LAYOUT_MARKER)).is_ok();
    for origin in origins.flatten() {
        if !origin.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // The origin's own directory too: older versions wrote their scratch there.
        recover_dir(&origin.path(), false);
        if this_layout {
            recover_dir(&origin.path().join(REPOS_DIR), true);
            recover_dir(&origin.path().join(ARTIFACTS_DIR), true);
        }
    }
}

/// `dotted`: only names starting with `.` are scratch (this layout's; the older one wrote
/// `<name>.causeway-partial`).
fn recover_dir(dir: &Path, dotted: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let scratch =
            name.starts_with(APPLY_PREFIX) || (name.ends_with(PARTIAL_SUFFIX) && (!dotted || name.starts_with('.')));
        let result = if scratch {
            remove_any(&path).map(|_| "removed an interrupted mirror write")
        } else if let Some(own) = name.strip_prefix('.').and_then(|n| n.strip_suffix(OLD_SUFFIX)) {
            let target = dir.join(own);
            if std::fs::symlink_metadata(&target).is_ok() {
                remove_any(&path).map(|_| "removed a replaced mirror version")
            } else {
                std::fs::rename(&path, &target).map(|_| "put back a mirror version an interrupted swap left aside")
            }
        } else {
            continue;
        };
        match result {
            Ok(what) => tracing::info!(path = %path.display(), "{what}"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot recover an interrupted mirror write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_to_one_component_that_no_other_name_shares() {
        assert_eq!(encode_name("foo"), "foo");
        assert_eq!(encode_name("foo.git/refs/heads/main"), "foo.git%2Frefs%2Fheads%2Fmain");
        assert_eq!(encode_name("a%b"), "a%25b");
        assert_eq!(encode_name(".."), "%2E.");
        assert_eq!(encode_name(".hidden"), "%2Ehidden");
        assert_eq!(encode_name(""), "%");
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        let long = "a/".repeat(100) + "z";
        let other = "a/".repeat(100) + "y";
        let (l, o) = (encode_name(&long), encode_name(&other));
        assert!(l.len() <= MAX_ENCODED_NAME && l.contains('~'), "{l}");
        assert_ne!(l, o);
        for n in ["foo", "a/b", "..", "", &long] {
            let e = encode_name(n);
            assert!(!e.contains('/') && !e.starts_with('.') && e != "..", "{n:?} -> {e:?}");
        }
    }

    #[test]
    fn repositories_and_artifacts_live_apart() {
        let origin = ClusterId([7; 32]);
        let d = Path::new("/d");
        let repo = mirror_path(d, &origin, "foo", "forge/repo");
        assert_eq!(repo, d.join(format!("mirrors/{origin}/repos/foo.git")));
        for evil in ["foo.git/refs/heads/main", "foo.git/config", "foo.git", "../foo"] {
            let p = mirror_path(d, &origin, evil, "artifact");
            assert!(!p.starts_with(&repo), "{evil} -> {}", p.display());
            assert_eq!(
                p.parent(),
                Some(d.join(format!("mirrors/{origin}/artifacts")).as_path())
            );
        }
        let nested = mirror_path(d, &origin, "foo.git/x", "forge/repo");
        assert!(!nested.starts_with(&repo));
        assert_eq!(
            sibling(&repo, PARTIAL_SUFFIX).file_name().unwrap(),
            ".foo.git.causeway-partial"
        );
    }

    #[test]
    fn unsafe_or_repeated_entry_names_are_refused() {
        check_entry_names(["a", "b/c", "b/d"], 10).expect("fine");
        for bad in [
            vec!["/etc/passwd"],
            vec!["a/../b"],
            vec![".."],
            vec!["a//b"],
            vec![""],
            vec!["a/"],
            vec!["./a"],
            vec!["x", "x"],
            vec!["a", "a/b"],
            vec!["a\0b"],
        ] {
            assert!(check_entry_names(bad.iter().copied(), 10).is_err(), "{bad:?}");
        }
        assert!(check_entry_names(["a", "b", "c"], 2).is_err());
    }

    #[test]
    fn an_interrupted_swap_is_undone_and_scratch_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let arts = dir.path().join("mirrors/abc").join(ARTIFACTS_DIR);
        std::fs::create_dir_all(&arts).expect("mkdir");
        std::fs::write(dir.path().join(MIRRORS_DIR).join(LAYOUT_MARKER), b"").expect("marker");
        std::fs::create_dir_all(arts.join(".causeway-apply-x1/inner")).expect("mkdir");
        std::fs::create_dir_all(arts.join(".tree.causeway-partial/sub")).expect("mkdir");
        // Crash after the old tree went aside, before the new one moved in.
        std::fs::create_dir_all(arts.join(".site.causeway-old")).expect("mkdir");
        std::fs::write(arts.join(".site.causeway-old/index.html"), b"v1").expect("write");
        // Crash after the new one moved in, before the old one was removed.
        std::fs::create_dir_all(arts.join(".docs.causeway-old")).expect("mkdir");
        std::fs::create_dir_all(arts.join("docs")).expect("mkdir");
        // A mirror whose name merely ends like a scratch file is a mirror.
        std::fs::write(arts.join("file.causeway-partial"), b"a mirror").expect("write");
        std::fs::write(arts.join("file"), b"whole").expect("write");
        recover(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(&arts)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["docs", "file", "file.causeway-partial", "site"]);
        assert_eq!(std::fs::read(arts.join("site/index.html")).expect("read"), b"v1");
        recover(&dir.path().join("nothing-here"));
    }

    #[test]
    fn a_swap_replaces_files_and_trees_either_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("t");
        let partial = sibling(&target, PARTIAL_SUFFIX);
        std::fs::write(&target, b"file").expect("write");
        std::fs::create_dir_all(partial.join("sub")).expect("mkdir");
        swap_into_place(&partial, &target).expect("file -> tree");
        assert!(target.join("sub").is_dir());
        std::fs::write(&partial, b"file again").expect("write");
        swap_into_place(&partial, &target).expect("tree -> file");
        assert_eq!(std::fs::read(&target).expect("read"), b"file again");
        std::fs::write(&partial, b"third").expect("write");
        swap_into_place(&partial, &target).expect("file -> file");
        assert_eq!(std::fs::read(&target).expect("read"), b"third");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").collect();
        assert_eq!(left.len(), 1, "nothing aside or partial is left");
    }

    #[test]
    fn a_symlinked_mirror_directory_is_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = ClusterId([1; 32]);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::fs::create_dir_all(origin_dir(dir.path(), &origin)).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, origin_dir(dir.path(), &origin).join(REPOS_DIR)).expect("symlink");
        assert!(prepare(dir.path(), &origin, "r", "forge/repo").is_err());
        let art = prepare(dir.path(), &origin, "a/b", "artifact").expect("artifacts dir is fine");
        assert!(art.parent().expect("parent").is_dir());
        assert!(dir.path().join(MIRRORS_DIR).join(LAYOUT_MARKER).exists());
    }
}
