//! Garbage collection: artifacts no pipeline file reaches, and what killed runs left behind.

use std::collections::BTreeSet;
use std::fs;

use super::{GcReport, Store, dir_size, remove_tree, sync_dir};
use crate::error::{IoContext, StoreError};

impl Store {
    /// Remove every artifact not reachable from `roots` (following manifest inputs), and the
    /// leftovers of killed runs. Needs the store to itself: fails with `Busy` during a run.
    pub fn gc(&self, roots: &BTreeSet<String>, dry_run: bool) -> Result<GcReport, StoreError> {
        let _lock = self.try_lock_exclusive()?;
        let mut keep = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().cloned().collect();
        while let Some(k) = todo.pop() {
            if !keep.insert(k.clone()) {
                continue;
            }
            if let Ok(m) = self.manifest(&k) {
                todo.extend(m.inputs.into_values());
            }
        }
        let mut report = GcReport::default();
        for key in self.keys()? {
            if keep.contains(&key) {
                report.kept += 1;
                continue;
            }
            let dir = self.object_dir(&key);
            report.removed.push((key.clone(), dir_size(&dir)));
            if !dry_run {
                // Rename first so a half-deleted artifact is never visible under objects/.
                let trash = self
                    .root
                    .join("tmp")
                    .join(format!("{key}.gc.{}", std::process::id()));
                fs::rename(&dir, &trash).at(&dir)?;
                remove_tree(&trash)?;
                self.cache.lock().expect("cache lock").remove_under(&dir);
            }
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let path = entry.at(&tmp)?.path();
            if !dry_run {
                remove_tree(&path)?;
            }
            report.tmp_removed.push(path);
        }
        if !dry_run {
            let locks = self.root.join("locks");
            for entry in fs::read_dir(&locks).at(&locks)? {
                let path = entry.at(&locks)?.path();
                let _ = fs::remove_file(&path);
            }
            // Temporary files of killed cache and index writes.
            let cache = self.root.join("cache");
            for entry in fs::read_dir(&cache).at(&cache)? {
                let path = entry.at(&cache)?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    let _ = fs::remove_file(&path);
                }
            }
            let index = self.root.join("index");
            for entry in fs::read_dir(&index).at(&index)?.flatten() {
                for inner in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                    let name = inner.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        let _ = fs::remove_file(inner.path());
                    }
                }
            }
            sync_dir(&self.root.join("objects"))?;
            self.flush();
        }
        Ok(report)
    }
}
