//! Fuzzing the manifest reader: an artifact whose manifest.json is mutated (its recorded hash
//! updated, so the parser and the checks behind it are reached) is refused or read, never a
//! panic, and a file entry never reaches outside the artifact. See tests/fuzz/mutate.rs.

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use std::fs;

use lpeft_store::{KeyInputs, MANIFEST_FILE, Store};

#[test]
fn manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let key = KeyInputs {
        kind: "t",
        code_version: 1,
        params: &serde_json::json!({}),
        inputs: &Default::default(),
        external_hashes: &[],
        backend_class: None,
    }
    .key();
    let lock = store.lock_key(&key).unwrap();
    let staging = store.begin(&lock).unwrap();
    fs::write(staging.dir().join("data.tsv"), "a\tb\n").unwrap();
    fs::create_dir_all(staging.dir().join("sub")).unwrap();
    fs::write(staging.dir().join("sub/w.bin"), [0u8, 1, 2]).unwrap();
    let template: lpeft_schema::manifest::Manifest = serde_json::from_value(serde_json::json!({
        "format": 0, "key": "", "key_format": 1, "kind": "t", "stage": "s", "code_version": 1,
        "params": {"x": [1, {"y": null}]}, "inputs": {}, "external_files": [], "seed": 3,
        "backend": "flex", "backend_class": null, "host": "h", "tool_version": "0",
        "started_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T00:00:01.000Z",
        "wall_seconds": 1.0, "peak_rss_bytes": 1, "files": [], "figures": {}, "run_reasons": []
    }))
    .unwrap();
    store.publish(staging, &lock, template).unwrap();
    drop(lock);
    let dir = store.object_dir(&key);
    let manifest = dir.join(MANIFEST_FILE);
    let seed = fs::read(&manifest).unwrap();
    let writable = |p: &std::path::Path| {
        if let Ok(meta) = fs::metadata(p) {
            let mut perm = meta.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(p, perm).unwrap();
        }
    };
    mutate::run("manifest", &[seed], mutate::cases(2_000), |input| {
        writable(&manifest);
        writable(&dir.join("manifest.blake3"));
        fs::write(&manifest, input).unwrap();
        let hash = blake3::hash(input).to_hex().to_string();
        fs::write(dir.join("manifest.blake3"), format!("{hash}\n")).unwrap();
        if let Ok(a) = store.open_artifact(&key) {
            assert!(a.manifest.files.iter().all(|f| !f.path.contains("..")));
        }
    });
}
