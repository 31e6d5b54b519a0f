use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::KeyInputs;

fn manifest_template(kind: &str) -> Manifest {
    Manifest {
        format: 0,
        key: String::new(),
        key_format: crate::KEY_FORMAT,
        kind: kind.to_string(),
        stage: "test".to_string(),
        code_version: 1,
        params: serde_json::json!({}),
        inputs: BTreeMap::new(),
        external_files: vec![],
        seed: None,
        backend: "flex".to_string(),
        backend_class: None,
        host: crate::sys::host_name(),
        tool_version: "test".to_string(),
        started_at: String::new(),
        finished_at: String::new(),
        wall_seconds: 0.0,
        peak_rss_bytes: None,
        files: vec![],
        figures: serde_json::json!({}),
        run_reasons: vec![],
    }
}

fn key_for(n: u32) -> String {
    KeyInputs {
        kind: "t",
        code_version: n,
        params: &serde_json::json!({}),
        inputs: &BTreeMap::new(),
        external_hashes: &[],
        backend_class: None,
    }
    .key()
}

fn put(store: &Store, key: &str, files: &[(&str, &str)], inputs: &[(&str, &str)]) -> Manifest {
    let lock = store.lock_key(key).unwrap();
    let staging = store.begin(&lock).unwrap();
    for (name, content) in files {
        let p = staging.dir().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let mut m = manifest_template("t");
    m.inputs = inputs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    store.publish(staging, &lock, m).unwrap()
}

fn flip_byte(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn publish_then_open_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(1);
    let m = put(
        &store,
        &key,
        &[("a.txt", "alpha"), ("sub/b.txt", "beta")],
        &[],
    );
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[1].path, "sub/b.txt");
    let a = store.open_artifact(&key).unwrap();
    assert_eq!(fs::read_to_string(a.dir.join("sub/b.txt")).unwrap(), "beta");
    store.verify(&key, VerifyMode::Deep).unwrap();
    assert_eq!(store.resolve(&key[..8]).unwrap(), key);
    // Nothing is left in tmp/.
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn flipped_byte_is_refused_by_readers_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(2);
    put(&store, &key, &[("data.bin", "0123456789")], &[]);
    store.open_artifact(&key).unwrap();
    assert!(store.flush().is_none());
    flip_byte(&store.object_dir(&key).join("data.bin"));
    let err = store.open_artifact(&key).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { file, .. } if file == "data.bin"),
        "{err}"
    );
    assert!(err.to_string().contains("data.bin"));
    // A fresh process (new cache load) refuses too.
    let store2 = Store::open(tmp.path()).unwrap();
    assert!(store2.open_artifact(&key).is_err());
    assert!(store2.verify(&key, VerifyMode::Deep).is_err());
    let (n, issues) = store2.verify_all(VerifyMode::Deep).unwrap();
    assert_eq!((n, issues.len()), (1, 1));
}

#[test]
fn damaged_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(3);
    put(&store, &key, &[("x", "x")], &[]);
    flip_byte(&store.object_dir(&key).join(MANIFEST_FILE));
    let err = store.open_artifact(&key).unwrap_err();
    assert!(err.to_string().contains(MANIFEST_FILE), "{err}");
}

#[test]
fn deep_verify_rejects_extra_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(4);
    put(&store, &key, &[("x", "x")], &[]);
    fs::write(store.object_dir(&key).join("intruder"), "!").unwrap();
    store.verify(&key, VerifyMode::Cached).unwrap();
    assert!(matches!(
        store.verify(&key, VerifyMode::Deep),
        Err(StoreError::ExtraFile { .. })
    ));
}

#[test]
fn reserved_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(5);
    let lock = store.lock_key(&key).unwrap();
    let staging = store.begin(&lock).unwrap();
    fs::write(staging.dir().join(MANIFEST_FILE), "{}").unwrap();
    let err = store
        .publish(staging, &lock, manifest_template("t"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Reserved { .. }));
    assert!(!store.contains(&key));
}

#[test]
fn stale_staging_is_cleaned_and_forced_republish_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(6);
    let stale = tmp.path().join("tmp").join(format!("{key}.999999.0"));
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("half"), "partial").unwrap();
    put(&store, &key, &[("v", "one")], &[]);
    assert!(!stale.exists());
    put(&store, &key, &[("v", "two")], &[]);
    let a = store.open_artifact(&key).unwrap();
    assert_eq!(fs::read_to_string(a.dir.join("v")).unwrap(), "two");
}

#[test]
fn a_forced_republish_never_leaves_readers_without_the_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(7);
    put(&store, &key, &[("v", "0")], &[]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let gaps = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut gaps = 0usize;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                gaps += usize::from(!store.contains(&key));
            }
            gaps
        });
        for i in 1..300 {
            put(&store, &key, &[("v", &i.to_string())], &[]);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert_eq!(gaps, 0, "readers saw the key missing {gaps} times");
    let a = store.open_artifact(&key).unwrap();
    assert_eq!(fs::read_to_string(a.dir.join("v")).unwrap(), "299");
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn leftovers_of_killed_runs_go_unless_their_key_is_being_produced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (dead, live) = (key_for(8), key_for(9));
    put(&store, &dead, &[("v", "x")], &[]);
    let t = tmp.path().join("tmp");
    for d in [
        format!("{dead}.999999.0"),
        format!("{dead}.old.999999.1"),
        format!("{live}.4242.0"),
        "not-a-key".to_string(),
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    let _producing = store.lock_key(&live).unwrap();
    let removed = store.clean_stale_tmp().unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let left: BTreeSet<String> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        [format!("{live}.4242.0"), "not-a-key".to_string()].into()
    );
    assert!(store.contains(&dead));
}

#[test]
fn a_failed_cache_write_only_warns_and_reads_still_work() {
    // As root (CI), permission bits do not stop writes: the cache directory goes away instead,
    // which fails the write the way a read-only or full filesystem does.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(13);
    put(&store, &key, &[("v", "x")], &[]);
    fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    let again = Store::open(tmp.path()).unwrap();
    fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    again.open_artifact(&key).unwrap();
    assert_eq!(again.verify_all(VerifyMode::Deep).unwrap().1.len(), 0);
    let e = again.flush().expect("the write failed");
    assert!(e.to_string().contains("hashes.json"), "{e}");
    again.open_artifact(&key).unwrap();
}

#[test]
fn a_manifest_listing_a_file_outside_its_artifact_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = key_for(14);
    put(&store, &key, &[("v", "x")], &[]);
    fs::write(tmp.path().join("outside"), "secret").unwrap();
    let dir = store.object_dir(&key);
    let good = store.manifest(&key).unwrap();
    for bad in ["../../outside", "/etc/hostname", ""] {
        let mut m = good.clone();
        m.files = vec![FileEntry {
            path: bad.into(),
            size: 6,
            blake3: blake3::hash(b"secret").to_hex().to_string(),
        }];
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        for f in [MANIFEST_FILE, MANIFEST_HASH_FILE] {
            let mut p = fs::metadata(dir.join(f)).unwrap().permissions();
            p.set_mode(0o644);
            fs::set_permissions(dir.join(f), p).unwrap();
        }
        fs::write(dir.join(MANIFEST_FILE), &bytes).unwrap();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        fs::write(dir.join(MANIFEST_HASH_FILE), format!("{hash}\n")).unwrap();
        let e = store.open_artifact(&key).unwrap_err().to_string();
        assert!(
            e.contains("is not a path inside the artifact"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn gc_keeps_the_closure_of_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (a, b, c) = (key_for(10), key_for(11), key_for(12));
    put(&store, &a, &[("f", "a")], &[]);
    put(&store, &b, &[("f", "b")], &[("src", &a)]);
    put(&store, &c, &[("f", "c")], &[]);
    fs::create_dir_all(tmp.path().join("tmp/leftover")).unwrap();
    let roots: BTreeSet<String> = [b.clone()].into();
    let dry = store.gc(&roots, true).unwrap();
    assert_eq!(dry.removed.len(), 1);
    assert!(store.contains(&c));
    let report = store.gc(&roots, false).unwrap();
    assert_eq!(report.removed[0].0, c);
    assert_eq!(report.kept, 2);
    assert_eq!(report.tmp_removed.len(), 1);
    assert!(store.contains(&a) && store.contains(&b) && !store.contains(&c));
}

#[test]
fn gc_is_refused_while_a_run_holds_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let _run = store.lock_shared().unwrap();
    let other = Store::open(tmp.path()).unwrap();
    assert!(matches!(
        other.gc(&BTreeSet::new(), true),
        Err(StoreError::Busy { .. })
    ));
}

#[test]
fn key_lock_serializes_producers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(tmp.path()).unwrap());
    let key = key_for(20);
    let produced = std::sync::Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (store, key, produced) = (store.clone(), key.clone(), produced.clone());
            std::thread::spawn(move || {
                let lock = store.lock_key(&key).unwrap();
                if !store.contains(&key) {
                    produced.fetch_add(1, Ordering::SeqCst);
                    let staging = store.begin(&lock).unwrap();
                    fs::write(staging.dir().join("f"), "x").unwrap();
                    store
                        .publish(staging, &lock, manifest_template("t"))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(produced.load(Ordering::SeqCst), 1);
    store.verify(&key, VerifyMode::Deep).unwrap();
}

#[test]
fn external_hash_is_cached_and_invalidated_by_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let f = tmp.path().join("input.txt");
    fs::write(&f, "hello").unwrap();
    let (size, h1) = store.hash_external(&f).unwrap();
    assert_eq!(size, 5);
    assert_eq!(h1, blake3::hash(b"hello").to_hex().to_string());
    assert!(store.flush().is_none());
    fs::write(&f, "hellO").unwrap();
    let store2 = Store::open(tmp.path().join("store")).unwrap();
    let (_, h2) = store2.hash_external(&f).unwrap();
    assert_ne!(h1, h2);
}

#[test]
fn index_records_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.read_index("p", "s/1").is_none());
    let rec = IndexRecord {
        pipeline: "p".into(),
        stage: "s/1".into(),
        key: key_for(30),
        kind: "t".into(),
        code_version: 1,
        params: serde_json::json!({"a": 1}),
        inputs: BTreeMap::new(),
        external_files: BTreeMap::new(),
        backend_class: None,
        recorded_at: String::new(),
    };
    store.write_index(&rec).unwrap();
    assert_eq!(store.read_index("p", "s/1"), Some(rec.clone()));
    assert_eq!(store.index_keys("p").unwrap(), vec![rec.key]);
}
