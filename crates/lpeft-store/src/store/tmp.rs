//! `tmp/` upkeep: leftovers of killed runs, and the one-rename swap of a forced republish.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Store, check_key, open_lock_file, remove_tree};
use crate::error::{IoContext, StoreError};

impl Store {
    /// Removes what killed runs left in `tmp/` (staging directories, artifacts replaced by a
    /// forced rerun) for keys nobody is producing now: their key lock is free. Called before a
    /// run, so leftovers go even when every stage is a hit. Returns what was removed.
    pub fn clean_stale_tmp(&self) -> Result<Vec<PathBuf>, StoreError> {
        let tmp = self.root.join("tmp");
        let mut removed = Vec::new();
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let path = entry.at(&tmp)?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(key) = name.as_deref().and_then(|n| n.split('.').next()) else {
                continue;
            };
            if check_key(key).is_err() {
                continue;
            }
            let lock_path = self.root.join("locks").join(key);
            let file = open_lock_file(&lock_path)?;
            if file.try_lock().is_ok() {
                remove_tree(&path)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }
}

/// Swaps two directories atomically (Linux `renameat2(RENAME_EXCHANGE)`).
pub(super) fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}
