//! A first run without `../shared`: the error says how to get the model and the data
//! (MODEL_DIR, `make fetch-model`, GLUE_DIR, `make fetch-data`, the hub option), and
//! `lpeft doctor` shows what this build offers and what is found where.

use std::path::Path;
use std::process::{Command, Output};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

/// `lpeft` in `dir` with the data and model variables set as given (and no others).
fn lpeft(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(LPEFT);
    c.current_dir(dir)
        .args(["--store", "store"])
        .args(args)
        .env("LPEFT_HUB_CACHE", dir.join("hub-cache"));
    for var in [
        "GLUE_DIR",
        "MODEL_DIR",
        "SUPERGLUE_DIR",
        "SQUAD_DIR",
        "LPEFT_BACKEND",
        "HF_ENDPOINT",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `<tmp>/clone` with the repository's pipelines and nothing beside it (no `../shared`).
fn fresh_clone() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    std::fs::create_dir_all(clone.join("pipelines")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("pipelines/glue.ron"),
        clone.join("pipelines/glue.ron"),
    )
    .unwrap();
    (tmp, clone)
}

#[test]
fn a_fresh_clone_without_shared_says_how_to_get_the_model_and_the_data() {
    let (_tmp, clone) = fresh_clone();
    let out = lpeft(&clone, &[], &["plan", "pipelines/glue.ron"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing file ../shared/models/all-MiniLM-L6-v2"),
        "{stderr}"
    );
    for needle in [
        "hint: the pipelines read the model from MODEL_DIR",
        "`make fetch-model`",
        "export MODEL_DIR=.whl/all-MiniLM-L6-v2",
        "hint: the pipelines read GLUE from GLUE_DIR",
        "`make fetch-data`",
        "export GLUE_DIR=data/glue",
        "`\"hub\": {}`",
        "`lpeft doctor`",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }

    // With a model found, the next error is the GLUE files, with their hint.
    let model = clone.join("m");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(model.join(f), "{}").unwrap();
    }
    let out = lpeft(
        &clone,
        &[("MODEL_DIR", &model)],
        &["plan", "pipelines/glue.ron"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing file ../shared/data/glue/CoLA/train.tsv")
            && stderr.contains("glue/cola split `train`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the pipelines read GLUE from GLUE_DIR"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("read the model from"),
        "the model is found: {stderr}"
    );
}

#[test]
fn doctor_shows_backends_devices_and_where_data_and_model_are() {
    let (_tmp, clone) = fresh_clone();
    let out = lpeft(&clone, &[], &["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "backends      compiled in: flex",
        "flex: CPU (",
        "--backend     flex (usable)",
        "store         store: not created yet",
        "MODEL_DIR unset, the pipelines' default ../shared/models/all-MiniLM-L6-v2: MISSING",
        "GLUE_DIR unset, the pipelines' default ../shared/data/glue: MISSING",
        "doctor: 2 problem(s)",
        "fix: the pipelines read the model from MODEL_DIR",
        "`make fetch-data`",
    ] {
        assert!(report.contains(needle), "{needle}: {report}");
    }
    assert!(!clone.join("store").exists(), "doctor creates no store");

    // Found through the variables: the model's files, and the GLUE splits per task.
    let model = clone.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(model.join(f), "{}").unwrap();
    }
    let glue = clone.join("glue");
    for f in [
        "RTE/train.tsv",
        "RTE/dev.tsv",
        "RTE/test.tsv",
        "MNLI/dev_mismatched.tsv",
    ] {
        std::fs::create_dir_all(glue.join(f).parent().unwrap()).unwrap();
        std::fs::write(glue.join(f), "").unwrap();
    }
    let out = lpeft(
        &clone,
        &[("MODEL_DIR", &model), ("GLUE_DIR", &glue)],
        &["--backend", "nonexistent", "doctor"],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for needle in [
        format!(
            "MODEL_DIR={}: found (config.json, tokenizer.json, model.safetensors)",
            model.display()
        ),
        format!("GLUE_DIR={}:", glue.display()),
        "RTE      train dev test".into(),
        "MNLI     dev_mismatched".into(),
        "SST-2    missing".into(),
        "--backend     nonexistent (NOT USABLE: unknown backend `nonexistent`".into(),
        "doctor: no problems found".into(),
    ] {
        assert!(report.contains(&needle), "{needle}: {report}");
    }
}

#[test]
fn fetch_data_names_the_url_it_could_not_download() {
    let (_tmp, clone) = fresh_clone();
    // Nothing listens on port 9 of localhost.
    let endpoint = Path::new("http://127.0.0.1:9");
    let out = lpeft(
        &clone,
        &[("HF_ENDPOINT", endpoint)],
        &["fetch-data", "--task", "rte"],
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(
            "http://127.0.0.1:9/datasets/nyu-mll/glue/resolve/main/rte/train-00000-of-00001.parquet"
        ),
        "{msg}"
    );
    let out = lpeft(&clone, &[], &["fetch-data", "--task", "nope"]);
    assert!(
        text(&out).contains("unknown task `glue/nope`"),
        "{}",
        text(&out)
    );
}
