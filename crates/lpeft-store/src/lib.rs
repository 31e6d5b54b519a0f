//! Content-addressed artifact store: keys, manifests, atomic publish, verification, locking.
//!
//! Layout of a store directory:
//!
//! ```text
//! <store>/lock                      shared by runs, exclusive for gc
//! <store>/locks/<key>               per-key lock held while the key is being produced
//! <store>/objects/<key>/            published artifacts: files + manifest.json (read-only)
//! <store>/tmp/<key>.<pid>.<n>/      in-progress outputs; never read
//! <store>/index/<pipeline>/<stage>.json   last resolution of each pipeline stage
//! <store>/cache/hashes.json         BLAKE3 cache keyed by (path, size, mtime, ctime, inode)
//! ```
//!
//! Invariant: a directory under `objects/` exists only if it is complete and its manifest lists
//! every file with its BLAKE3 hash; readers never see a partial artifact, and every read checks
//! the hashes (through the stat-keyed cache).

mod cache;
mod error;
pub mod key;
mod store;
pub mod sys;

pub use cache::FileStamp;
pub use error::StoreError;
pub use key::{KEY_FORMAT, KeyInputs, canonical_json};
pub use store::{
    Artifact, GcReport, KeyLock, MANIFEST_FILE, Staging, Store, StoreLock, VerifyIssue, VerifyMode,
    dir_size,
};
