//! BLAKE3 hash cache keyed by file identity: (path, size, mtime, ctime, inode).
//!
//! A file whose stamp is unchanged is not re-read. ctime cannot be set from user space, so a
//! write followed by resetting mtime still invalidates the entry. The cache is one JSON file,
//! replaced atomically; concurrent writers may lose each other's entries, which only costs a
//! re-hash later.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, StoreError};

/// The identity of a file's content as far as the file system can tell without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            ino: meta.ino(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    stamp: FileStamp,
    blake3: String,
}

#[derive(Debug, Default)]
pub(crate) struct HashCache {
    entries: BTreeMap<PathBuf, Entry>,
    dirty: bool,
}

impl HashCache {
    pub(crate) fn load(path: &Path) -> HashCache {
        let entries = fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        HashCache {
            entries,
            dirty: false,
        }
    }

    pub(crate) fn get(&self, path: &Path, stamp: &FileStamp) -> Option<&str> {
        self.entries
            .get(path)
            .filter(|e| e.stamp == *stamp)
            .map(|e| e.blake3.as_str())
    }

    pub(crate) fn insert(&mut self, path: PathBuf, stamp: FileStamp, blake3: String) {
        self.entries.insert(path, Entry { stamp, blake3 });
        self.dirty = true;
    }

    pub(crate) fn remove_under(&mut self, dir: &Path) {
        let before = self.entries.len();
        self.entries.retain(|p, _| !p.starts_with(dir));
        self.dirty |= self.entries.len() != before;
    }

    pub(crate) fn save(&mut self, path: &Path) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec(&self.entries).expect("cache entries serialize");
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .at(&tmp)
            .and_then(|()| fs::rename(&tmp, path).at(path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.dirty = false;
        Ok(())
    }
}

/// Hash a file, returning its stamp (taken before reading) and hex BLAKE3.
pub(crate) fn hash_file(path: &Path) -> Result<(FileStamp, String), StoreError> {
    let mut f = fs::File::open(path).at(path)?;
    let stamp = FileStamp::of(&f.metadata().at(path)?);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((stamp, hasher.finalize().to_hex().to_string()))
}
