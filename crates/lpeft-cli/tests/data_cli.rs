//! `lpeft data` with the named flags of the issue, on the shared GLUE files beside the clone:
//! it prints the key and counts, and a second run is a cache hit.

use std::path::Path;
use std::process::{Command, Output};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

fn lpeft(store: &Path, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("../shared/data/glue/SST-2/train.tsv").is_file(),
        "../shared/data/glue is missing: put the shared data beside the clone"
    );
    Command::new(LPEFT)
        .args(args)
        .current_dir(&root)
        .env("LPEFT_STORE", store)
        .env_remove("GLUE_DIR")
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = lpeft(store, args);
    assert!(
        out.status.success(),
        "lpeft {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const SST2: &[&str] = &[
    "data",
    "--task",
    "glue/sst2",
    "--data-dir",
    "../shared/data/glue",
    "--model",
    "../shared/models/all-MiniLM-L6-v2",
];

#[test]
fn data_subcommand_prints_key_and_counts_then_hits() {
    let store = tempfile::tempdir().unwrap();
    let first = ok(store.path(), SST2);
    assert!(first.contains("train_examples=67349"), "{first}");
    assert!(first.contains("dev_examples=872"), "{first}");
    let last = first.lines().last().unwrap();
    assert!(last.starts_with("RAN "), "{first}");
    let key = last.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(key.len(), 64);

    let second = ok(store.path(), SST2);
    assert_eq!(second.lines().last().unwrap(), format!("HIT {key} data"));

    // The other flags are parameters too; an explicit --param wins over a flag.
    let sample = [
        SST2,
        &["--max-examples", "100", "--seed", "3", "--max-length", "64"],
    ]
    .concat();
    let a = ok(store.path(), &sample);
    assert!(a.contains("train_examples=100"), "{a}");
    let b = ok(
        store.path(),
        &[&sample[..], &["--param", "max_examples=100"]].concat(),
    );
    assert!(b.lines().last().unwrap().starts_with("HIT "), "{b}");
    let c = ok(
        store.path(),
        &[&sample[..], &["--param", "max_examples=101"]].concat(),
    );
    assert!(c.contains("train_examples=101"), "{c}");

    let bad = lpeft(
        store.path(),
        &[
            "data",
            "--task",
            "glue/sst-2",
            "--data-dir",
            "x",
            "--model",
            "y",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown task `glue/sst-2`"));
}

#[test]
fn an_stsb_score_outside_0_to_5_is_read_with_a_warning_naming_the_line() {
    let store = tempfile::tempdir().unwrap();
    let glue = tempfile::tempdir().unwrap();
    let header =
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n";
    let row = |i: usize, score: &str| format!("{i}\tg\tf\ty\t{i}\ts\ts\tA cat.\tA dog.\t{score}\n");
    std::fs::create_dir_all(glue.path().join("STS-B")).unwrap();
    for (split, bad) in [("train", "7.5"), ("dev", "2.0")] {
        let text = format!("{header}{}{}", row(0, "1.0"), row(1, bad));
        std::fs::write(glue.path().join(format!("STS-B/{split}.tsv")), text).unwrap();
    }
    let dir = glue.path().to_str().unwrap();
    let out = lpeft(
        store.path(),
        &[
            "data",
            "--task",
            "glue/stsb",
            "--data-dir",
            dir,
            "--model",
            "../shared/models/all-MiniLM-L6-v2",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("STS-B/train.tsv:3: glue/stsb score 7.5 is outside 0–5"),
        "{err}"
    );
}
