//! Moving mirrors written by older versions (`mirrors/<origin>/<name>` and
//! `mirrors/<origin>/<name>.git`, where one name's path could lie inside another's) into the
//! layout of [`super::layout`], at start. What cannot be moved unambiguously stays, unused, in
//! `mirrors.old-layout/` for the operator, and the mirror is written again from the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use causeway_proto::ClusterId;

use super::layout::{LAYOUT_MARKER, MIRRORS_DIR, mirror_path, prepare};

/// Where an older layout's `mirrors/` is set aside while its mirrors are moved out.
pub const OLD_LAYOUT_DIR: &str = "mirrors.old-layout";

/// A mirror the catalog records: origin, name, kind.
pub type MirrorRecord = (ClusterId, String, String);

fn old_rel(name: &str, kind: &str) -> Option<PathBuf> {
    if name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return None;
    }
    Some(PathBuf::from(if kind == "forge/repo" {
        format!("{name}.git")
    } else {
        name.to_string()
    }))
}

/// Sets an older layout's `mirrors/` aside (once) and moves each recorded mirror whose old
/// path is neither another's nor nested with another's into its new place. Never deletes a
/// file: what is left is reported.
pub fn from_old_layout(data_dir: &Path, mirrors: &[MirrorRecord]) {
    let root = data_dir.join(MIRRORS_DIR);
    let old_root = data_dir.join(OLD_LAYOUT_DIR);
    let unmarked = root.is_dir() && std::fs::symlink_metadata(root.join(LAYOUT_MARKER)).is_err();
    if unmarked {
        let empty = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none());
        let set_aside = if empty {
            std::fs::remove_dir(&root)
        } else if old_root.exists() {
            tracing::warn!(
                mirrors = %root.display(),
                kept = %old_root.display(),
                "mirrors in an older layout found, and an older layout already set aside: move one of them away"
            );
            return;
        } else {
            std::fs::rename(&root, &old_root)
        };
        if let Err(e) = set_aside {
            tracing::warn!(path = %root.display(), error = %e, "cannot set the older mirror layout aside");
            return;
        }
    }
    if !old_root.is_dir() {
        return;
    }
    let mut moved = 0usize;
    for (origin, name, kind) in mirrors {
        let Some(rel) = old_rel(name, kind) else { continue };
        let ambiguous = mirrors.iter().any(|(o, n, k)| {
            o == origin
                && (n, k) != (name, kind)
                && old_rel(n, k).is_some_and(|other| other.starts_with(&rel) || rel.starts_with(&other))
        });
        let old = old_root.join(origin.to_string()).join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&old) else {
            continue;
        };
        // A repository that borrows another's refs or objects (what the attack on the older
        // layout planted) is not moved either: it is written again, clean.
        let unfit = meta.file_type().is_symlink()
            || (kind == "forge/repo" && (!meta.is_dir() || causeway_sync::git::check_self_contained(&old).is_err()));
        if ambiguous || unfit {
            tracing::warn!(path = %old.display(), resource = %name, "an older-layout mirror overlaps another or borrows from one; left in place and written again");
            continue;
        }
        if mirror_path(data_dir, origin, name, kind).exists() {
            continue;
        }
        let moved_one = prepare(data_dir, origin, name, kind)
            .map_err(|e| e.to_string())
            .and_then(|new| std::fs::rename(&old, &new).map_err(|e| e.to_string()));
        match moved_one {
            Ok(()) => moved += 1,
            Err(e) => tracing::warn!(path = %old.display(), error = %e, "cannot move an older-layout mirror"),
        }
    }
    if moved > 0 {
        tracing::info!(moved, "mirrors moved from the older layout");
    }
    prune_empty(&old_root);
    if old_root.exists() {
        tracing::warn!(
            path = %old_root.display(),
            "files of the older mirror layout that could not be moved are kept here, unused; remove them once checked"
        );
    }
    // `mirrors/` exists and is marked from now on, even before any mirror is written.
    let _ = std::fs::create_dir_all(&root);
    let _ = std::fs::write(root.join(LAYOUT_MARKER), b"");
}

/// Removes the empty directories below and at `dir` (never following a symlink); whether
/// `dir` is gone.
fn prune_empty(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut left = BTreeSet::new();
    for e in entries.flatten() {
        let gone = e.file_type().is_ok_and(|t| t.is_dir()) && prune_empty(&e.path());
        if !gone {
            left.insert(e.file_name());
        }
    }
    left.is_empty() && std::fs::remove_dir(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unambiguous_mirrors_move_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let o = ClusterId([3; 32]);
        let old = d.join(MIRRORS_DIR).join(o.to_string());
        std::fs::create_dir_all(old.join("lib.git/objects")).expect("mkdir");
        std::fs::write(old.join("lib.git/HEAD"), b"ref: refs/heads/main\n").expect("write");
        std::fs::create_dir_all(old.join("docs")).expect("mkdir");
        std::fs::write(old.join("docs/file"), b"bin").expect("write");
        // `foo.git` the repository and `foo.git/config` the artifact share a path.
        std::fs::create_dir_all(old.join("foo.git")).expect("mkdir");
        std::fs::write(old.join("foo.git/config"), b"[core]").expect("write");
        let records: Vec<MirrorRecord> = vec![
            (o, "lib".into(), "forge/repo".into()),
            (o, "docs/file".into(), "artifact".into()),
            (o, "foo".into(), "forge/repo".into()),
            (o, "foo.git/config".into(), "artifact".into()),
        ];
        from_old_layout(d, &records);
        assert!(mirror_path(d, &o, "lib", "forge/repo").join("HEAD").is_file());
        assert_eq!(
            std::fs::read(mirror_path(d, &o, "docs/file", "artifact")).expect("moved"),
            b"bin"
        );
        assert!(!mirror_path(d, &o, "foo", "forge/repo").exists());
        assert!(
            d.join(OLD_LAYOUT_DIR)
                .join(o.to_string())
                .join("foo.git/config")
                .is_file()
        );
        assert!(d.join(MIRRORS_DIR).join(LAYOUT_MARKER).exists());
        // Running again changes nothing.
        from_old_layout(d, &records);
        assert!(mirror_path(d, &o, "lib", "forge/repo").join("HEAD").is_file());
        assert!(
            d.join(OLD_LAYOUT_DIR)
                .join(o.to_string())
                .join("foo.git/config")
                .is_file()
        );
    }
}
