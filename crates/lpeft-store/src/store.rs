use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lpeft_schema::manifest::{FileEntry, IndexRecord, Manifest};

use crate::cache::{FileStamp, HashCache, hash_file};
use crate::error::{IoContext, StoreError};
use crate::key::is_full_key;

/// Name of the manifest inside an artifact directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// BLAKE3 of `manifest.json`, so a damaged manifest is detected too.
pub const MANIFEST_HASH_FILE: &str = "manifest.blake3";

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An open store directory. Cheap to share between threads.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cache: Mutex<HashCache>,
}

/// The store-wide lock: shared while running, exclusive for gc. Released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Exclusive right to produce one key. Released on drop.
#[derive(Debug)]
pub struct KeyLock {
    key: String,
    _file: File,
}

/// A temporary output directory for one key; becomes an artifact through [`Store::publish`].
#[derive(Debug)]
pub struct Staging {
    key: String,
    dir: PathBuf,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A verified artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub key: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// How thoroughly [`Store::verify`] checks file content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Trust the hash cache for files whose (size, mtime, ctime, inode) did not change.
    Cached,
    /// Re-read every byte and also reject files the manifest does not list.
    Deep,
}

/// One artifact that failed verification.
#[derive(Debug)]
pub struct VerifyIssue {
    pub key: String,
    pub error: StoreError,
}

/// What [`Store::gc`] removed (or would remove).
#[derive(Debug, Default)]
pub struct GcReport {
    pub kept: usize,
    /// (key, bytes) of unreferenced artifacts.
    pub removed: Vec<(String, u64)>,
    /// Leftover temporary directories of killed runs.
    pub tmp_removed: Vec<PathBuf>,
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for sub in ["objects", "tmp", "index", "locks", "cache"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).at(&d)?;
        }
        let root = fs::canonicalize(&root).at(&root)?;
        let cache = HashCache::load(&root.join("cache/hashes.json"));
        Ok(Store {
            root,
            cache: Mutex::new(cache),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn object_dir(&self, key: &str) -> PathBuf {
        self.root.join("objects").join(key)
    }

    /// Whether a complete artifact with this key is published (content not checked).
    pub fn contains(&self, key: &str) -> bool {
        self.object_dir(key).join(MANIFEST_FILE).is_file()
    }

    /// Take the store lock shared (runs) — blocks while a gc holds it.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = open_lock_file(&path)?;
        file.lock_shared().at(&path)?;
        Ok(StoreLock { _file: file })
    }

    /// Take the store lock exclusively without waiting (gc); `Busy` if a run holds it.
    pub fn try_lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                store: self.root.clone(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Take the exclusive right to produce `key`, waiting for another process producing it.
    pub fn lock_key(&self, key: &str) -> Result<KeyLock, StoreError> {
        check_key(key)?;
        let path = self.root.join("locks").join(key);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(
                    key = &key[..12],
                    "another run is producing this artifact; waiting"
                );
                file.lock().at(&path)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::Io { path, source: e }),
        }
        Ok(KeyLock {
            key: key.to_string(),
            _file: file,
        })
    }

    /// Create an empty staging directory for the locked key, removing leftovers of killed runs
    /// for the same key (safe: whoever made them no longer holds the key lock).
    pub fn begin(&self, lock: &KeyLock) -> Result<Staging, StoreError> {
        let tmp = self.root.join("tmp");
        let prefix = format!("{}.", lock.key);
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let entry = entry.at(&tmp)?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::debug!(path = %entry.path().display(), "removing stale staging directory");
                remove_tree(&entry.path())?;
            }
        }
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("{}.{}.{}", lock.key, std::process::id(), n));
        fs::create_dir(&dir).at(&dir)?;
        Ok(Staging {
            key: lock.key.clone(),
            dir,
        })
    }

    /// Publish a staging directory atomically as an artifact.
    ///
    /// Hashes and fsyncs every file, makes them read-only, writes the manifest (whose `files`,
    /// `key` and `format` are filled in here), fsyncs, then renames the directory into
    /// `objects/`. An existing artifact with the same key (a forced rerun) is replaced.
    pub fn publish(
        &self,
        staging: Staging,
        lock: &KeyLock,
        mut manifest: Manifest,
    ) -> Result<Manifest, StoreError> {
        assert_eq!(
            staging.key, lock.key,
            "staging and lock belong to different keys"
        );
        let key = staging.key.clone();
        let mut stamped = Vec::new();
        let mut files = Vec::new();
        for rel in list_files(&staging.dir)? {
            if rel == MANIFEST_FILE || rel == MANIFEST_HASH_FILE {
                return Err(StoreError::Reserved { name: rel });
            }
            let path = staging.dir.join(&rel);
            let f = File::open(&path).at(&path)?;
            f.sync_all().at(&path)?;
            make_read_only(&path)?;
            let (stamp, blake3) = hash_file(&path)?;
            files.push(FileEntry {
                path: rel.clone(),
                size: stamp.size,
                blake3: blake3.clone(),
            });
            stamped.push((rel, stamp, blake3));
        }
        manifest.format = lpeft_schema::manifest::MANIFEST_FORMAT;
        manifest.key = key.clone();
        manifest.files = files;
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_synced(&staging.dir.join(MANIFEST_FILE), &bytes)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        write_synced(
            &staging.dir.join(MANIFEST_HASH_FILE),
            format!("{hash}\n").as_bytes(),
        )?;
        for dir in list_dirs(&staging.dir)? {
            sync_dir(&dir)?;
        }

        let objects = self.root.join("objects");
        let target = objects.join(&key);
        if target.exists() {
            // A forced rerun: swap the new directory in with one rename, so readers see the
            // old artifact or the new one, never neither; the old one is then in staging's place.
            self.cache.lock().expect("cache lock").remove_under(&target);
            if tmp::exchange(&staging.dir, &target).is_ok() {
                remove_tree(&staging.dir)?;
            } else {
                // Filesystems without RENAME_EXCHANGE: move the old one aside first.
                let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
                let old = self
                    .root
                    .join("tmp")
                    .join(format!("{key}.old.{}.{n}", std::process::id()));
                fs::rename(&target, &old).at(&target)?;
                fs::rename(&staging.dir, &target).at(&target)?;
                remove_tree(&old)?;
            }
        } else {
            fs::rename(&staging.dir, &target).at(&target)?;
        }
        sync_dir(&objects)?;
        let mut cache = self.cache.lock().expect("cache lock");
        for (rel, stamp, blake3) in stamped {
            cache.insert(target.join(rel), stamp, blake3);
        }
        Ok(manifest)
    }

    /// Resolve a full key or a unique prefix (at least 4 hex digits) to a published key.
    pub fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        if is_full_key(prefix) {
            return if self.contains(prefix) {
                Ok(prefix.to_string())
            } else {
                Err(StoreError::NotFound {
                    key: prefix.to_string(),
                    store: self.root.clone(),
                })
            };
        }
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::InvalidKey {
                key: prefix.to_string(),
            });
        }
        let prefix = prefix.to_ascii_lowercase();
        let matches: Vec<String> = self
            .keys()?
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound {
                key: prefix,
                store: self.root.clone(),
            }),
            1 => Ok(matches.into_iter().next().expect("one match")),
            n => Err(StoreError::AmbiguousKey { prefix, matches: n }),
        }
    }

    /// All published keys, sorted.
    pub fn keys(&self) -> Result<Vec<String>, StoreError> {
        let objects = self.root.join("objects");
        let mut keys = Vec::new();
        for entry in fs::read_dir(&objects).at(&objects)? {
            let name = entry
                .at(&objects)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if is_full_key(&name) {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Read and check a manifest (its own hash and its key), without checking the files.
    pub fn manifest(&self, key: &str) -> Result<Manifest, StoreError> {
        check_key(key)?;
        let dir = self.object_dir(key);
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                    store: self.root.clone(),
                });
            }
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let hash_path = dir.join(MANIFEST_HASH_FILE);
        let recorded = fs::read_to_string(&hash_path).map_err(|_| StoreError::MissingFile {
            key: key.to_string(),
            file: MANIFEST_HASH_FILE.to_string(),
        })?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if recorded.trim() != actual {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                file: MANIFEST_FILE.to_string(),
                expected: recorded.trim().to_string(),
                actual,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if manifest.key != key {
            return Err(StoreError::BadManifest {
                path,
                message: format!("it names key {} but lives under {key}", manifest.key),
            });
        }
        // Every listed file lies inside the artifact: no absolute paths, no `..`.
        if let Some(entry) = manifest.files.iter().find(|f| {
            let p = Path::new(&f.path);
            f.path.is_empty()
                || p.components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
        }) {
            return Err(StoreError::BadManifest {
                path,
                message: format!(
                    "file entry {:?} is not a path inside the artifact",
                    entry.path
                ),
            });
        }
        Ok(manifest)
    }

    /// Open an artifact for reading: the manifest and every file are checked (file hashes
    /// through the stat-keyed cache). A damaged artifact is refused, naming the file.
    pub fn open_artifact(&self, key: &str) -> Result<Artifact, StoreError> {
        let manifest = self.verify(key, VerifyMode::Cached)?;
        Ok(Artifact {
            key: key.to_string(),
            dir: self.object_dir(key),
            manifest,
        })
    }

    /// Check an artifact against its manifest.
    pub fn verify(&self, key: &str, mode: VerifyMode) -> Result<Manifest, StoreError> {
        let manifest = self.manifest(key)?;
        let dir = self.object_dir(key);
        for entry in &manifest.files {
            let path = dir.join(&entry.path);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => return Err(StoreError::NotRegular { path }),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StoreError::MissingFile {
                        key: key.to_string(),
                        file: entry.path.clone(),
                    });
                }
                Err(e) => return Err(StoreError::Io { path, source: e }),
            };
            if meta.len() != entry.size {
                return Err(StoreError::SizeMismatch {
                    key: key.to_string(),
                    file: entry.path.clone(),
                    expected: entry.size,
                    actual: meta.len(),
                });
            }
            let stamp = FileStamp::of(&meta);
            let cached = match mode {
                VerifyMode::Cached => self
                    .cache
                    .lock()
                    .expect("cache lock")
                    .get(&path, &stamp)
                    .map(str::to_string),
                VerifyMode::Deep => None,
            };
            let actual = match cached {
                Some(h) => h,
                None => {
                    let (stamp, h) = hash_file(&path)?;
                    self.cache
                        .lock()
                        .expect("cache lock")
                        .insert(path.clone(), stamp, h.clone());
                    h
                }
            };
            if actual != entry.blake3 {
                return Err(StoreError::Corrupt {
                    key: key.to_string(),
                    file: entry.path.clone(),
                    expected: entry.blake3.clone(),
                    actual,
                });
            }
        }
        if mode == VerifyMode::Deep {
            let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
            for rel in list_files(&dir)? {
                if rel != MANIFEST_FILE
                    && rel != MANIFEST_HASH_FILE
                    && !listed.contains(rel.as_str())
                {
                    return Err(StoreError::ExtraFile {
                        key: key.to_string(),
                        file: rel,
                    });
                }
            }
        }
        Ok(manifest)
    }

    /// Verify every artifact; returns the number checked and the failures.
    pub fn verify_all(&self, mode: VerifyMode) -> Result<(usize, Vec<VerifyIssue>), StoreError> {
        let keys = self.keys()?;
        let issues = keys
            .iter()
            .filter_map(|k| {
                self.verify(k, mode).err().map(|error| VerifyIssue {
                    key: k.clone(),
                    error,
                })
            })
            .collect();
        Ok((keys.len(), issues))
    }

    /// Size and content hash of a file outside the store, through the cache.
    pub fn hash_external(&self, path: &Path) -> Result<(u64, String), StoreError> {
        let abs = fs::canonicalize(path).at(path)?;
        let meta = fs::metadata(&abs).at(&abs)?;
        let stamp = FileStamp::of(&meta);
        if let Some(h) = self.cache.lock().expect("cache lock").get(&abs, &stamp) {
            return Ok((stamp.size, h.to_string()));
        }
        let (stamp, h) = hash_file(&abs)?;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(abs, stamp, h.clone());
        Ok((stamp.size, h))
    }

    /// Persist the hash cache (call at the end of a command).
    ///
    /// The cache only saves re-hashing, so a failed write (a read-only store, a full disk)
    /// warns and returns the error without failing the command; the next run hashes again.
    pub fn flush(&self) -> Option<StoreError> {
        let path = self.root.join("cache/hashes.json");
        let e = self.cache.lock().expect("cache lock").save(&path).err()?;
        tracing::warn!("hash cache not saved ({e}); files will be hashed again next time");
        Some(e)
    }

    fn index_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root
            .join("index")
            .join(sanitize(pipeline))
            .join(format!("{}.json", sanitize(stage)))
    }

    /// The last recorded resolution of a pipeline stage, if any (unreadable records are ignored).
    pub fn read_index(&self, pipeline: &str, stage: &str) -> Option<IndexRecord> {
        let bytes = fs::read(self.index_path(pipeline, stage)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record the resolution of a pipeline stage (atomic replace).
    pub fn write_index(&self, record: &IndexRecord) -> Result<(), StoreError> {
        let path = self.index_path(&record.pipeline, &record.stage);
        let dir = path.parent().expect("index path has a parent");
        fs::create_dir_all(dir).at(dir)?;
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), n));
        let bytes = serde_json::to_vec_pretty(record).expect("index record serializes");
        fs::write(&tmp, bytes).at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        Ok(())
    }

    /// Keys named by the index records of one pipeline.
    pub fn index_keys(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("index").join(sanitize(pipeline));
        let mut keys = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(keys);
        };
        for entry in entries {
            let path = entry.at(&dir)?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(rec) = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<IndexRecord>(&b).ok())
            {
                keys.push(rec.key);
            }
        }
        Ok(keys)
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if is_full_key(key) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            key: key.to_string(),
        })
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).at(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)?;
    drop(f);
    make_read_only(path)
}

fn make_read_only(path: &Path) -> Result<(), StoreError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).at(path)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Relative `/`-separated paths of all regular files under `root`, sorted.
/// Symlinks and other special files are refused.
fn list_files(root: &Path) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        for entry in fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let ft = entry.file_type().at(&path)?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() {
                todo.push((path, child));
            } else if ft.is_file() {
                out.push(child);
            } else {
                return Err(StoreError::NotRegular { path });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn list_dirs(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let dir = out[i].clone();
        for entry in fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            if entry.file_type().at(entry.path())?.is_dir() {
                out.push(entry.path());
            }
        }
        i += 1;
    }
    // Children first, so a parent's fsync covers already-synced entries.
    out.reverse();
    Ok(out)
}

/// Total size in bytes of the files under `dir` (0 if unreadable).
pub fn dir_size(dir: &Path) -> u64 {
    list_files(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|rel| fs::metadata(dir.join(rel)).ok())
        .map(|m| m.len())
        .sum()
}

mod gc;
mod tmp;

#[cfg(test)]
mod tests;
