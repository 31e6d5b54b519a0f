//! `lpeft predict` against the fine-tune stage's own dev evaluation, on a tiny random BERT in
//! Hugging Face layout, a tiny WordPiece tokenizer and generated (learnable) RTE, STS-B and
//! BoolQ files: the real stages run (vanilla LoRA for each task, and Light-PEFT for RTE through
//! estimate and surgery), then the dev files with their labels removed are predicted and the
//! submission files scored against the dev labels: the score must be the fine-tune's recorded
//! best dev score exactly. SQuAD: the dev file's answers are the fine-tune's
//! `best/predictions.json` and its recorded EM and F1. Also: exported directories, `--text`,
//! refusals.
#![allow(clippy::print_stderr)] // the scores compared go to the test log

mod tiny;

use std::path::{Path, PathBuf};
use std::process::Command;

use lpeft_schema::dataset::TaskSpec;

use tiny::{LPEFT, Setup, lpeft, ok, setup, text, write};

/// The fine-tune's recorded best dev score, and its task.
fn recorded(s: &Setup, stage: &str) -> (f64, TaskSpec) {
    let dir = s.path().join("store/objects").join(&s.keys[stage]);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    let task = lpeft_data::registry::task(result["task"].as_str().unwrap())
        .unwrap()
        .spec();
    (result["best_main_score"].as_f64().unwrap(), task)
}

/// The dev file of `rel` with its label column (TSV) or field (JSONL) removed.
fn without_labels(root: &Path, rel: &str) -> PathBuf {
    let text = std::fs::read_to_string(root.join(rel)).unwrap();
    let out: String = if rel.ends_with(".jsonl") {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("label");
                v.to_string() + "\n"
            })
            .collect()
    } else {
        text.lines()
            .map(|l| l.rsplit_once('\t').unwrap().0.to_owned() + "\n")
            .collect()
    };
    write(root, &format!("unlabeled/{rel}"), &out)
}

/// Scores a submission file against the dev file's labels with the task's metrics.
fn score_submission(task: &TaskSpec, submission: &Path, dev: &Path) -> f64 {
    let def = lpeft_data::registry::task(&task.name).unwrap();
    let sub = std::fs::read_to_string(submission).unwrap();
    let gold = std::fs::read_to_string(dev).unwrap();
    let (pred, gold): (Vec<String>, Vec<String>) = if task.name.starts_with("superglue") {
        let p = sub.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        let g = gold
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].to_string());
        (p.collect(), g.collect())
    } else {
        let mut lines = sub.lines();
        assert_eq!(lines.next(), Some("index\tprediction"));
        let p = lines.map(|l| l.split('\t').nth(1).unwrap().to_owned());
        let g = gold
            .lines()
            .skip(1)
            .map(|l| l.rsplit('\t').next().unwrap().to_owned());
        (p.collect(), g.collect())
    };
    assert_eq!(pred.len(), gold.len());
    let class = |v: &String| def.raw_labels.iter().position(|l| l == v).unwrap() as i64;
    let e = if def.raw_labels.is_empty() {
        let p: Vec<f64> = pred
            .iter()
            .map(|v| f64::from(v.parse::<f32>().unwrap()))
            .collect();
        let y: Vec<f64> = gold
            .iter()
            .map(|v| f64::from(v.parse::<f32>().unwrap()))
            .collect();
        lpeft_eval::evaluate_task(
            task,
            &lpeft_eval::Outputs::Scores {
                predicted: &p,
                labels: &y,
            },
        )
    } else {
        let p: Vec<i64> = pred.iter().map(class).collect();
        let y: Vec<i64> = gold.iter().map(class).collect();
        let groups: Vec<u32> = (0..p.len() as u32).collect();
        lpeft_eval::evaluate_task(
            task,
            &lpeft_eval::Outputs::Classes {
                predicted: &p,
                labels: &y,
                groups: Some(&groups),
            },
        )
    };
    e.unwrap().main_score
}

#[test]
fn predictions_on_unlabeled_dev_files_reproduce_the_fine_tunes_dev_score() {
    let s = setup();
    let root = s.path();
    let cases = [
        ("ft-rte", "glue/RTE/dev.tsv", "RTE.tsv"),
        ("light-rte", "glue/RTE/dev.tsv", "RTE.tsv"),
        ("ft-stsb", "glue/STS-B/dev.tsv", "STS-B.tsv"),
        ("ft-boolq", "superglue/BoolQ/val.jsonl", "BoolQ.jsonl"),
    ];
    for (stage, dev, file) in cases {
        let (best, task) = recorded(&s, stage);
        let input = without_labels(root, dev);
        let out_dir = root.join("sub").join(stage);
        std::fs::create_dir_all(&out_dir).unwrap();
        let key = &s.keys[stage][..10];
        let stdout = ok(
            root,
            &[
                "predict",
                "--model",
                key,
                "--input",
                input.to_str().unwrap(),
                "--output",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(
            stdout.contains(&format!("wrote {}", out_dir.join(file).display())),
            "{stdout}"
        );
        let got = score_submission(&task, &out_dir.join(file), &root.join(dev));
        assert_eq!(
            got, best,
            "{stage}: the submission's dev score against the fine-tune's"
        );
        eprintln!("{stage}: {} = {got} (recorded {best})", task.name);

        // With the labels left in, predict scores them itself, and says it matches.
        let again = ok(
            root,
            &[
                "predict", "--model", key, "--input", dev, "--output", "again/", "--force",
            ],
        );
        assert!(again.contains(&format!("(main {best})")), "{again}");
        assert!(again.contains("(the same;"), "{again}");
    }
    // The vanilla runs learned something: their predictions are not one constant, so the
    // scores above compare real predictions.
    for f in [
        "sub/ft-rte/RTE.tsv",
        "sub/ft-stsb/STS-B.tsv",
        "sub/ft-boolq/BoolQ.jsonl",
    ] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let distinct: std::collections::BTreeSet<String> = text
            .lines()
            .skip(usize::from(f.ends_with(".tsv")))
            .map(|l| l.rsplit(['\t', ':']).next().unwrap().to_owned())
            .collect();
        assert!(distinct.len() > 1, "{f}: {text}");
    }
}

#[test]
fn an_exported_directory_predicts_what_its_artifact_predicts() {
    let s = setup();
    let root = s.path();
    let store = lpeft_store::Store::open(root.join("store")).unwrap();
    for (stage, dev, file) in [
        ("ft-stsb", "glue/STS-B/dev.tsv", "STS-B.tsv"),
        ("light-rte", "glue/RTE/dev.tsv", "RTE.tsv"),
    ] {
        // The run recorded `model` relative to its directory, which this process is not in.
        let at = lpeft_predict::load::Locations {
            model_dirs: vec![root.join("model")],
            tokenizer: None,
        };
        let reference = lpeft_predict::ModelRef::Artifact(s.keys[stage].clone());
        let trained = lpeft_predict::TrainedModel::open(&store, &reference, &at).unwrap();
        let device = lpeft_model::device::device("flex").unwrap();
        let model = trained.build(&device).unwrap();
        let exported = root.join("exported").join(stage);
        std::fs::create_dir_all(exported.parent().unwrap()).unwrap();
        lpeft_predict::bundle::write(&trained, &model, &exported).unwrap();
        assert!(
            lpeft_predict::bundle::write(&trained, &model, &exported).is_err(),
            "an existing directory is refused"
        );
        let input = without_labels(root, dev);
        let input = input.to_str().unwrap();
        ok(
            root,
            &[
                "predict",
                "--model",
                &s.keys[stage],
                "--input",
                input,
                "--output",
                "a/",
            ],
        );
        let from_dir = ok(
            root,
            &[
                "predict",
                "--model",
                exported.to_str().unwrap(),
                "--input",
                input,
                "--output",
                "b/",
            ],
        );
        assert!(from_dir.contains(&format!("wrote b/{file}")), "{from_dir}");
        let a = std::fs::read_to_string(root.join("a").join(file)).unwrap();
        assert_eq!(
            a,
            std::fs::read_to_string(root.join("b").join(file)).unwrap(),
            "{stage}"
        );
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::fs::remove_dir_all(root.join("b")).unwrap();
    }
}

/// OPT with its own tokenizer (GPT-2 BPE files, no tokenizer.json): predict finds the
/// directory by the dataset's tokenizer hash and reproduces the fine-tune's dev score; the
/// exported directory carries the files under their names and predicts the same.
#[test]
fn an_opt_model_with_its_own_tokenizer_predicts_its_dev_score() {
    let s = tiny::setup_with(tiny::OPT_PIPELINE);
    let root = s.path();
    let (best, task) = recorded(&s, "ft-rte-opt");
    let input = without_labels(root, "glue/RTE/dev.tsv");
    let key = s.keys["ft-rte-opt"].clone();
    ok(
        root,
        &[
            "predict",
            "--model",
            &key,
            "--input",
            input.to_str().unwrap(),
            "--output",
            "a/",
        ],
    );
    let got = score_submission(
        &task,
        &root.join("a/RTE.tsv"),
        &root.join("glue/RTE/dev.tsv"),
    );
    assert_eq!(
        got, best,
        "the submission's dev score against the fine-tune's"
    );

    let store = lpeft_store::Store::open(root.join("store")).unwrap();
    let at = lpeft_predict::load::Locations {
        model_dirs: vec![root.join("opt")],
        tokenizer: None,
    };
    let trained =
        lpeft_predict::TrainedModel::open(&store, &lpeft_predict::ModelRef::Artifact(key), &at)
            .unwrap();
    assert_eq!(trained.text.tokenizer, root.join("opt"));
    let model = trained
        .build(&lpeft_model::device::device("flex").unwrap())
        .unwrap();
    let exported = root.join("exported-opt");
    lpeft_predict::bundle::write(&trained, &model, &exported).unwrap();
    assert!(exported.join("vocab.json").is_file() && !exported.join("tokenizer.json").exists());
    ok(
        root,
        &[
            "predict",
            "--model",
            exported.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            "b/",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("a/RTE.tsv")).unwrap(),
        std::fs::read_to_string(root.join("b/RTE.tsv")).unwrap()
    );

    // Without its merges the directory is not the tokenizer: named, and --tokenizer finds a copy.
    std::fs::create_dir_all(root.join("tok-copy")).unwrap();
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ] {
        std::fs::copy(root.join("opt").join(f), root.join("tok-copy").join(f)).unwrap();
    }
    std::fs::remove_file(root.join("opt/merges.txt")).unwrap();
    let one = [
        "predict",
        "--model",
        &s.keys["ft-rte-opt"],
        "--text",
        "a cat",
        "--pair",
        "yes a dog",
    ];
    let out = lpeft(root, &one);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("the tokenizer the data stage used (opt"),
        "{err}"
    );
    assert!(err.contains("merges.txt"), "{err}");
    let with_dir = ok(root, &[&one[..], &["--tokenizer", "tok-copy"]].concat());
    assert!(!with_dir.is_empty());
}

#[test]
fn one_text_refusals_and_moved_files_say_what_to_do() {
    let s = setup();
    let root = s.path();
    let rte = &s.keys["ft-rte"][..12];

    let one = ok(
        root,
        &[
            "predict",
            "--model",
            rte,
            "--text",
            "the cat sat .",
            "--pair",
            "yes it was .",
        ],
    );
    assert!(one.starts_with("prediction: "), "{one}");
    assert!(
        one.contains("entailment 0.") && one.contains("not_entailment 0."),
        "{one}"
    );
    let stsb = ok(
        root,
        &[
            "predict",
            "--model",
            &s.keys["ft-stsb"],
            "--text",
            "a dog .",
            "--pair",
            "a cat .",
        ],
    );
    assert!(
        stsb.trim()
            .strip_prefix("prediction: ")
            .unwrap()
            .parse::<f32>()
            .is_ok(),
        "{stsb}"
    );
    let out = lpeft(
        root,
        &["predict", "--model", rte, "--text", "the cat sat ."],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("glue/rte takes a pair") && text(&out).contains("--pair"),
        "{}",
        text(&out)
    );

    // Output files: written once, then refused unless --force; nothing printed on stderr
    // (progress bars stay off when stderr is no terminal).
    let input = without_labels(root, "glue/RTE/dev.tsv");
    let input = input.to_str().unwrap();
    let out = lpeft(
        root,
        &[
            "predict", "--model", rte, "--input", input, "--output", "mine.tsv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(root.join("mine.tsv"), "my notes\n").unwrap();
    let out = lpeft(
        root,
        &[
            "predict", "--model", rte, "--input", input, "--output", "mine.tsv",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("mine.tsv exists: give --force"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("mine.tsv")).unwrap(),
        "my notes\n"
    );
    ok(
        root,
        &[
            "predict", "--model", rte, "--input", input, "--output", "mine.tsv", "--force",
        ],
    );
    assert!(
        std::fs::read_to_string(root.join("mine.tsv"))
            .unwrap()
            .starts_with("index\tprediction\n")
    );
    let out = lpeft(root, &["predict", "--model", rte, "--input", input]);
    assert!(
        text(&out).contains("--output is required") && text(&out).contains("RTE.tsv"),
        "{}",
        text(&out)
    );

    // A file of another layout names the file, the line, the column and what was expected.
    let bad = write(root, "bad.tsv", "index\tsentence1\thypothesis\n0\ta\tb\n");
    let out = lpeft(
        root,
        &[
            "predict",
            "--model",
            rte,
            "--input",
            bad.to_str().unwrap(),
            "--output",
            "x/",
        ],
    );
    let msg = text(&out);
    assert!(!out.status.success());
    for needle in [
        "bad.tsv:1",
        "missing column 'sentence2'",
        "header naming `sentence1` and `sentence2`",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let out = lpeft(
        root,
        &["predict", "--model", "no/such/dir", "--text", "a ."],
    );
    assert!(
        text(&out).contains("no/such/dir: no such directory"),
        "{}",
        text(&out)
    );
    // A key of another stage is named as such.
    let out = lpeft(
        root,
        &["predict", "--model", &s.keys["data-rte"], "--text", "a ."],
    );
    assert!(
        text(&out).contains("`data` artifact, not a fine-tune"),
        "{}",
        text(&out)
    );

    // The pretrained model moved: named with what was tried, then found through MODEL_DIR.
    std::fs::rename(root.join("model"), root.join("moved")).unwrap();
    let out = lpeft(
        root,
        &[
            "predict",
            "--model",
            rte,
            "--input",
            input,
            "--output",
            "moved.tsv",
        ],
    );
    let msg = text(&out);
    assert!(!out.status.success());
    assert!(
        msg.contains("the pretrained model the fine-tune started from")
            && msg.contains("MODEL_DIR"),
        "{msg}"
    );
    let out = Command::new(LPEFT)
        .current_dir(root)
        .args([
            "--store",
            "store",
            "predict",
            "--model",
            rte,
            "--input",
            input,
            "--output",
            "moved.tsv",
        ])
        .env("MODEL_DIR", root.join("moved"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.join("moved.tsv")).unwrap(),
        std::fs::read_to_string(root.join("mine.tsv")).unwrap()
    );
}

/// SQuAD: the dev file predicted gives back the fine-tune's best dev answers (its
/// `best/predictions.json`, byte for byte) and its recorded EM and F1; without the answers the
/// same file is written; an existing file is kept without --force; a bad file is named with
/// the field at fault.
#[test]
fn squad_dev_answers_are_the_finetunes_best_answers() {
    let s = tiny::setup_with(tiny::SPAN_PIPELINE);
    let root = s.path();
    let dev = "squad/dev-v1.1.json";
    for m in ["model", "roberta"] {
        let stage = format!("ft-squad-{m}");
        let key = &s.keys[&stage];
        let artifact = root.join("store/objects").join(key);
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(artifact.join("result.json")).unwrap())
                .unwrap();
        let best = result["best_main_score"].as_f64().unwrap();
        let metrics = result["best_metrics"].as_object().unwrap();
        let out_dir = format!("sub/{stage}/");
        let stdout = ok(
            root,
            &[
                "predict",
                "--model",
                &key[..10],
                "--input",
                dev,
                "--output",
                &out_dir,
            ],
        );
        eprintln!("{stdout}");
        let written = root.join(&out_dir).join("predictions.json");
        assert!(
            stdout.contains(&format!(
                "wrote {}",
                Path::new(&out_dir).join("predictions.json").display()
            )),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("(main {best})")), "{stdout}");
        assert!(stdout.contains("(the same;"), "{stdout}");
        for (name, v) in metrics {
            let v = v.as_f64().unwrap();
            assert!(
                stdout.contains(&format!("{name} {v:.4}")),
                "{stage}: {name} {v} in {stdout}"
            );
        }
        let recorded = std::fs::read_to_string(artifact.join("best/predictions.json")).unwrap();
        let got = std::fs::read_to_string(&written).unwrap();
        assert_eq!(
            got, recorded,
            "{stage}: predictions.json against the fine-tune's"
        );
        let answers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&got).unwrap();
        assert_eq!(answers.len(), 8, "one answer per dev question");
        // The official evaluation of the written file is the recorded score.
        let official = lpeft_eval::squad::evaluate_squad_files(&root.join(dev), &written).unwrap();
        assert!(official.unanswered.is_empty());
        for (name, pct) in [
            ("exact_match", official.exact_match),
            ("squad_f1", official.f1),
        ] {
            let v = metrics[name].as_f64().unwrap();
            assert!(
                (pct / 100.0 - v).abs() < 1e-9,
                "{stage}: official {name} {pct} against {v}"
            );
        }
        eprintln!(
            "{stage}: recorded {metrics:?}, official EM {} F1 {}",
            official.exact_match, official.f1
        );

        // Never over an existing file unasked.
        let again = lpeft(
            root,
            &[
                "predict", "--model", key, "--input", dev, "--output", &out_dir,
            ],
        );
        assert!(!again.status.success());
        assert!(text(&again).contains("--force"), "{}", text(&again));
        assert_eq!(std::fs::read_to_string(&written).unwrap(), recorded);

        // Without answers (a test file): the same answers, no score.
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(dev)).unwrap()).unwrap();
        for p in file["data"][0]["paragraphs"].as_array_mut().unwrap() {
            for q in p["qas"].as_array_mut().unwrap() {
                q.as_object_mut().unwrap().remove("answers");
            }
        }
        let unlabeled = write(root, "unlabeled/squad/test.json", &file.to_string());
        let plain = ok(
            root,
            &[
                "predict",
                "--model",
                key,
                "--input",
                unlabeled.to_str().unwrap(),
                "--output",
                "plain.json",
                "--force",
            ],
        );
        assert!(!plain.contains("score on"), "{plain}");
        assert_eq!(
            std::fs::read_to_string(root.join("plain.json")).unwrap(),
            recorded
        );

        // An exported directory answers as its artifact.
        let bundle = format!("bundle-{m}");
        ok(
            root,
            &[
                "export", "--model", key, "--format", "bundle", "--out", &bundle,
            ],
        );
        ok(
            root,
            &[
                "predict",
                "--model",
                &bundle,
                "--input",
                dev,
                "--output",
                "from-dir.json",
                "--force",
            ],
        );
        assert_eq!(
            std::fs::read_to_string(root.join("from-dir.json")).unwrap(),
            recorded
        );
    }

    // A bad file: named, with the field.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(dev)).unwrap()).unwrap();
    file["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 2.into();
    let bad = write(root, "bad/dev-v1.1.json", &file.to_string());
    let out = lpeft(
        root,
        &[
            "predict",
            "--model",
            &s.keys["ft-squad-model"],
            "--input",
            bad.to_str().unwrap(),
            "--output",
            "bad-out/",
        ],
    );
    assert!(!out.status.success());
    let e = text(&out);
    eprintln!("{e}");
    assert!(
        e.contains("bad/dev-v1.1.json") && e.contains("answer_start"),
        "{e}"
    );
    assert!(
        !root.join("bad-out").exists(),
        "nothing written for a bad input"
    );
}
