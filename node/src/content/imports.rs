//! Imports running on this node (a file or directory read into the blob store for a publish or
//! a registration): bytes done and the total, by store tag, so the CLI can show a progress bar
//! while its request runs. Live state only, in memory; a row lives as long as its import.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

/// Most imports tracked at once; beyond it an import runs untracked (it still completes).
pub const MAX_TRACKED_IMPORTS: usize = 256;

/// How far one import is. `bytes_done` counts each byte twice over half its weight: once as it
/// is copied into the store and once as it is hashed, so the count moves through both phases
/// and reaches `bytes_total` when both are done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportView {
    pub tag: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// The table of running imports (shared by every clone of the content store).
#[derive(Clone, Debug, Default)]
pub struct Imports(Arc<Mutex<BTreeMap<String, ImportView>>>);

impl Imports {
    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ImportView>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracking an import under `tag`; the row goes when the returned guard drops.
    pub fn begin(&self, tag: &str, bytes_total: u64, files_total: u64) -> ImportGuard {
        let mut table = self.table();
        let tracked = table.contains_key(tag) || table.len() < MAX_TRACKED_IMPORTS;
        if tracked {
            table.insert(
                tag.to_string(),
                ImportView {
                    tag: tag.to_string(),
                    bytes_done: 0,
                    bytes_total,
                    files_done: 0,
                    files_total,
                },
            );
        }
        ImportGuard {
            imports: self.clone(),
            tag: tag.to_string(),
            tracked,
            base: 0,
            current: FileProgress::default(),
        }
    }

    /// The import running under `tag`, if any.
    pub fn get(&self, tag: &str) -> Option<ImportView> {
        self.table().get(tag).cloned()
    }

    /// A running import whose tag `matches`, if any (the table is bounded, so this is cheap).
    pub fn find(&self, matches: impl Fn(&str) -> bool) -> Option<ImportView> {
        self.table()
            .iter()
            .find(|(tag, _)| matches(tag))
            .map(|(_, v)| v.clone())
    }
}

/// The current file's two phases, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct FileProgress {
    copied: u64,
    hashed: u64,
}

impl FileProgress {
    /// Half the copy and half the hashing: each byte counts once over the whole import.
    fn weighted(self) -> u64 {
        self.copied / 2 + self.hashed / 2
    }
}

/// One import's handle: reports progress and removes the row when dropped.
pub struct ImportGuard {
    imports: Imports,
    tag: String,
    tracked: bool,
    /// Bytes of the files already imported.
    base: u64,
    current: FileProgress,
}

impl ImportGuard {
    fn publish(&self) {
        if !self.tracked {
            return;
        }
        if let Some(row) = self.imports.table().get_mut(&self.tag) {
            row.bytes_done = (self.base + self.current.weighted()).min(row.bytes_total);
        }
    }

    /// The current file's copy reached `offset` bytes.
    pub fn copied(&mut self, offset: u64) {
        self.current.copied = self.current.copied.max(offset);
        self.publish();
    }

    /// The current file's hashing reached `offset` bytes.
    pub fn hashed(&mut self, offset: u64) {
        self.current.hashed = self.current.hashed.max(offset);
        self.publish();
    }

    /// The current file (of `size` bytes) is in the store.
    pub fn file_done(&mut self, size: u64) {
        self.base = self.base.saturating_add(size);
        self.current = FileProgress::default();
        if self.tracked
            && let Some(row) = self.imports.table().get_mut(&self.tag)
        {
            row.files_done += 1;
        }
        self.publish();
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        if self.tracked {
            self.imports.table().remove(&self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_through_both_phases_and_the_row_goes_with_the_import() {
        let imports = Imports::default();
        let mut g = imports.begin("res/x", 1000, 2);
        assert_eq!(imports.get("res/x").unwrap().bytes_done, 0);
        g.copied(400);
        assert_eq!(imports.get("res/x").unwrap().bytes_done, 200);
        g.hashed(400);
        assert_eq!(imports.get("res/x").unwrap().bytes_done, 400);
        g.copied(400);
        g.hashed(400);
        g.file_done(400);
        let row = imports.get("res/x").unwrap();
        assert_eq!((row.bytes_done, row.files_done, row.files_total), (400, 1, 2));
        g.copied(600);
        g.hashed(600);
        g.file_done(600);
        assert_eq!(imports.get("res/x").unwrap().bytes_done, 1000);
        drop(g);
        assert!(imports.get("res/x").is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let imports = Imports::default();
        let guards: Vec<_> = (0..MAX_TRACKED_IMPORTS)
            .map(|i| imports.begin(&format!("t/{i}"), 1, 1))
            .collect();
        let mut extra = imports.begin("t/extra", 10, 1);
        extra.copied(10);
        assert!(imports.get("t/extra").is_none());
        drop(extra);
        assert_eq!(imports.0.lock().unwrap().len(), MAX_TRACKED_IMPORTS);
        drop(guards);
        assert!(imports.0.lock().unwrap().is_empty());
    }
}
