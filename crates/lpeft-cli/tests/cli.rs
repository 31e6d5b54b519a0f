//! End-to-end tests of the `lpeft` binary on a temporary store, with the builtin `snapshot` and
//! `digest` stages over generated files (no external resources).
#![allow(clippy::print_stderr)] // test diagnostics (seed, timings) go to the test log

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A work directory with `data/<t>/` holding `files` files of `kib` KiB for each task,
    /// and `pipelines/p.ron` snapshotting and digesting them.
    fn new(tasks: &[&str], files: usize, kib: usize, rounds: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for t in tasks {
            let d = dir.path().join("data").join(t);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..files {
                let mut content = Vec::with_capacity(kib * 1024);
                while content.len() < kib * 1024 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    content.extend_from_slice(format!("{t}\t{i}\t{seed:x}\n").as_bytes());
                }
                std::fs::write(d.join(format!("f{i:02}.tsv")), content).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        let list = tasks
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"// test pipeline
Pipeline(
    name: "p",
    vars: {{ "data": "data", "rounds": {rounds} }},
    profiles: {{ "more": {{ "rounds": {} }} }},
    stages: [
        (name: "snap-{{t}}", kind: "snapshot", sweep: {{ "t": [{list}] }},
         params: {{ "paths": ["{{data}}/{{t}}"] }}),
        (name: "digest-{{t}}", kind: "digest", sweep: {{ "t": [{list}] }},
         params: {{ "rounds": "{{rounds}}" }}, inputs: {{ "src": "snap-{{t}}" }}),
    ],
)
"#,
            rounds + 1
        );
        std::fs::write(dir.path().join("pipelines/p.ron"), text).unwrap();
        Env { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(LPEFT);
        c.args(args)
            .current_dir(self.path())
            .env("LPEFT_STORE", self.path().join("store"))
            .env_remove("RUST_LOG")
            .env_remove("LPEFT_PROFILE")
            .env_remove("LPEFT_BACKEND");
        c
    }

    fn lpeft(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.lpeft(args);
        assert!(
            out.status.success(),
            "lpeft {args:?} failed:\n{}",
            text_of(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn objects(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.path().join("store/objects"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn flip_byte(path: &Path, at: usize) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn second_run_does_no_work_and_one_parameter_reruns_only_its_stages() {
    let env = Env::new(&["a", "b", "c"], 3, 16, 1);
    let first = env.ok(&["run", "pipelines/p.ron", "--jobs", "2"]);
    assert!(first.contains("run: 6 ran, 0 hit"), "{first}");

    let t0 = Instant::now();
    let second = env.ok(&["run", "pipelines/p.ron"]);
    let wall = t0.elapsed();
    assert!(second.contains("run: 0 ran, 6 hit"), "{second}");
    assert_eq!(second.matches("  HIT  ").count(), 6, "{second}");
    assert!(wall < Duration::from_secs(1), "second run took {wall:?}");

    let plan = env.ok(&["plan", "pipelines/p.ron", "--set", "rounds=2"]);
    assert!(plan.contains("plan: 3 hit, 3 run"), "{plan}");
    for t in ["a", "b", "c"] {
        let line = plan
            .lines()
            .find(|l| l.contains(&format!("digest-{t} ")))
            .unwrap();
        assert!(line.trim_start().starts_with("RUN"), "{line}");
        assert!(line.ends_with("params changed: rounds 1 → 2"), "{line}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["plan", "pipelines/p.ron", "--json", "--set", "rounds=2"]))
            .unwrap();
    let stages = json["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 6);
    assert_eq!(stages[3]["status"], "RUN");
    assert_eq!(stages[3]["reasons"][0], "params changed: rounds 1 → 2");
    let plan = env.ok(&["plan", "pipelines/p.ron", "--profile", "more"]);
    assert!(plan.contains("plan: 3 hit, 3 run"), "{plan}");

    // A changed data file reruns its snapshot and digest only.
    std::fs::write(env.path().join("data/b/f00.tsv"), "changed\n").unwrap();
    let plan = env.ok(&["plan", "pipelines/p.ron"]);
    assert!(plan.contains("plan: 4 hit, 2 run"), "{plan}");
    assert!(
        plan.contains("input `src` changed (from `snap-b`)"),
        "{plan}"
    );
    let run = env.ok(&["run", "pipelines/p.ron"]);
    assert!(run.contains("run: 2 ran, 4 hit"), "{run}");
}

#[test]
fn sigkill_at_random_points_never_leaves_a_visible_partial_artifact() {
    let env = Env::new(&["a", "b", "c", "d"], 6, 256, 24);
    // How long a full run takes, measured on a scratch store.
    let t0 = Instant::now();
    let out = env
        .cmd(&[
            "run",
            "pipelines/p.ron",
            "--jobs",
            "2",
            "--store",
            "scratch",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text_of(&out));
    let full = t0.elapsed();
    eprintln!("full run: {full:?}");

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-point seed: {seed}");
    // Kill points are drawn until 10 runs were killed mid-way (a run that finished first does
    // not count, and narrows the range: the machine may be faster than the measurement).
    let mut window = full;
    let mut kills = 0;
    let mut round = 0;
    while kills < 10 && round < 40 {
        round += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = window.mul_f64(0.02 + 0.9 * (seed % 1000) as f64 / 1000.0);
        // Each round starts with no published artifacts, but keeps whatever the killed runs
        // left in tmp/ and locks/.
        std::fs::remove_dir_all(env.path().join("store/objects")).ok();
        std::fs::create_dir_all(env.path().join("store/objects")).unwrap();
        let mut child = env
            .cmd(&["run", "pipelines/p.ron", "--jobs", "2", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        if finished {
            window = window.mul_f64(0.8);
        } else {
            kills += 1;
        }
        // Every visible artifact is complete and intact.
        let verify = env.lpeft(&["verify", "--all"]);
        assert!(
            verify.status.success(),
            "round {round} (kill at {at:?}):\n{}",
            text_of(&verify)
        );
        for obj in env.objects() {
            assert!(
                obj.join("manifest.json").is_file(),
                "partial artifact {obj:?}"
            );
        }
    }
    assert!(
        kills >= 10,
        "only {kills} of {round} runs were killed mid-way"
    );
    eprintln!("{kills} of {round} runs were killed mid-way");
    let rerun = env.ok(&["run", "pipelines/p.ron", "--jobs", "2"]);
    assert!(rerun.contains("ran"), "{rerun}");
    let plan = env.ok(&["plan", "pipelines/p.ron"]);
    assert!(plan.contains("plan: 8 hit, 0 run"), "{plan}");
    env.ok(&["verify", "--all"]);
    // The same keys as an uninterrupted run.
    let scratch: Vec<_> = std::fs::read_dir(env.path().join("scratch/objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(scratch.len(), 8);
    for k in scratch {
        assert!(
            env.path()
                .join("store/objects")
                .join(k)
                .join("manifest.json")
                .is_file()
        );
    }
    // Leftovers of killed runs are swept by gc.
    let gc = env.ok(&["gc"]);
    assert!(gc.contains("gc: kept 8, removed 0 artifacts"), "{gc}");
    assert_eq!(
        std::fs::read_dir(env.path().join("store/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_flipped_byte_is_refused_by_verify_and_every_reader() {
    let env = Env::new(&["a"], 2, 4, 1);
    env.ok(&["run", "pipelines/p.ron"]);
    let plan = env.ok(&["plan", "pipelines/p.ron"]);
    let key_of = |stage: &str| {
        let line = plan
            .lines()
            .find(|l| l.contains(&format!(" {stage} ")))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    let (snap, digest) = (key_of("snap-a"), key_of("digest-a"));
    let snap_dir = env
        .objects()
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&snap))
        .unwrap();
    flip_byte(&snap_dir.join("a/f01.tsv"), 10);

    for args in [
        vec!["verify", "--all"],
        vec!["verify", snap.as_str()],
        vec!["show", snap.as_str()],
        vec!["lineage", digest.as_str()],
        vec!["run", "pipelines/p.ron"],
        vec![
            "digest",
            "--input",
            &format!("src={snap}"),
            "--param",
            "rounds=7",
        ],
    ] {
        let out = env.lpeft(&args);
        assert!(
            !out.status.success(),
            "lpeft {args:?} accepted a corrupt artifact:\n{}",
            text_of(&out)
        );
        assert!(
            text_of(&out).contains("a/f01.tsv"),
            "lpeft {args:?} does not name the file:\n{}",
            text_of(&out)
        );
    }
    // A forced rebuild repairs it.
    env.ok(&["run", "pipelines/p.ron", "--force", "snap-a"]);
    env.ok(&["verify", "--all"]);
}

#[test]
fn two_concurrent_runs_on_one_store_both_succeed() {
    let env = Env::new(&["a", "b", "c", "d"], 4, 128, 8);
    let spawn = || {
        env.cmd(&["run", "pipelines/p.ron", "--jobs", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text_of(&a));
    assert!(b.status.success(), "{}", text_of(&b));
    env.ok(&["verify", "--all"]);
    assert_eq!(env.objects().len(), 8);
    // Each artifact was produced once: the two runs' RAN lines do not overlap.
    let ran = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("RAN"))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect()
    };
    let (ra, rb) = (ran(&a), ran(&b));
    assert_eq!(ra.len() + rb.len(), 8, "a: {ra:?}\nb: {rb:?}");
    let plan = env.ok(&["plan", "pipelines/p.ron"]);
    assert!(plan.contains("plan: 8 hit, 0 run"), "{plan}");
}

#[test]
fn malformed_pipelines_report_file_line_and_column() {
    let env = Env::new(&["a"], 1, 1, 1);
    let cases: &[(&str, &str, &str)] = &[
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"a\" kind: \"snapshot\"),\n  ],\n)\n",
            "bad.ron:4:",
            "comma",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [],\n  oops: 1,\n)\n",
            "bad.ron:4:",
            "oops",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"a\", kind: \"nope\"),\n  ],\n)\n",
            "bad.ron:4:6:",
            "unknown kind `nope`",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n\n    (name: \"d\", kind: \"digest\", inputs: { \"src\": \"zz\" }),\n  ],\n)\n",
            "bad.ron:5:6:",
            "unknown stage `zz`",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"s\", kind: \"snapshot\", params: { \"paths\": [\"{nope}\"] }),\n  ],\n)\n",
            "bad.ron:4:6:",
            "unknown variable `nope`",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"s\", kind: \"snapshot\", params: { \"paths\": [\"missing/file\"] }),\n  ],\n)\n",
            "bad.ron:4:6:",
            "missing/file",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"s\", kind: \"snapshot\", params: { \"paths\": [\"data/a\"] }),\n    (name: \"s\", kind: \"snapshot\", params: { \"paths\": [\"data/a\"] }),\n  ],\n)\n",
            "bad.ron:5:6:",
            "duplicate stage name `s`",
        ),
        (
            "Pipeline(\n  name: \"x\",\n  stages: [\n    (name: \"s\", kind: \"snapshot\", params: { \"paths\": [\"data/a\"]",
            "bad.ron:4:",
            "Expected",
        ),
    ];
    for (src, at, what) in cases {
        std::fs::write(env.path().join("bad.ron"), src).unwrap();
        for sub in ["plan", "run"] {
            let out = env.lpeft(&[sub, "bad.ron"]);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(at), "expected `{at}` in: {err}");
            assert!(err.contains(what), "expected `{what}` in: {err}");
        }
    }
    // Nothing was written for invalid pipelines.
    assert!(!env.path().join("store/objects").exists() || env.objects().is_empty());
}

#[test]
fn gc_keeps_what_pipeline_files_reference() {
    let env = Env::new(&["a"], 1, 1, 1);
    env.ok(&["run", "pipelines/p.ron"]);
    env.ok(&["run", "pipelines/p.ron", "--set", "rounds=5"]);
    let stray = env.ok(&["snapshot", "-p", "paths=[\"data/a/f00.tsv\"]"]);
    assert!(stray.contains("RAN"), "{stray}");
    assert_eq!(env.objects().len(), 4);
    let dry = env.ok(&["gc", "--dry-run"]);
    // Kept: both digests (the current one and the last recorded run), and the snapshot.
    assert!(
        dry.contains("gc: kept 3, would remove 1 artifacts"),
        "{dry}"
    );
    assert_eq!(env.objects().len(), 4);
    env.ok(&["gc"]);
    assert_eq!(env.objects().len(), 3);
    let plan = env.ok(&["plan", "pipelines/p.ron"]);
    assert!(plan.contains("plan: 2 hit, 0 run"), "{plan}");
}

#[test]
fn single_stage_from_flags_and_config() {
    let env = Env::new(&["a"], 1, 1, 1);
    let out = env.ok(&["snapshot", "-q", "--param", "paths=[\"data/a\"]"]);
    let key = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.starts_with("RAN "), "{out}");
    std::fs::write(env.path().join("cfg.ron"), "{ \"paths\": [\"data/a\"] }").unwrap();
    let again = env.ok(&["stage", "snapshot", "-q", "--config", "cfg.ron"]);
    assert_eq!(again.trim(), format!("HIT {key} snapshot"));
    let d = env.ok(&["digest", "-q", "--input", &format!("src={}", &key[..8])]);
    assert!(d.starts_with("RAN "), "{d}");
    std::fs::write(
        env.path().join("cfg.ron"),
        "{ \"paths\": [\"data/a\"]\n  \"x\": 1 }",
    )
    .unwrap();
    let bad = env.lpeft(&["snapshot", "--config", "cfg.ron"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("cfg.ron:2:"),
        "{}",
        text_of(&bad)
    );
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["snapshot", "--help"],
        &["gc", "--help"],
    ] {
        env.ok(sub);
    }
}

/// The real data stage on the shared GLUE files beside the clone (`../shared`): a pipeline
/// of six tokenized datasets, into a temporary store.
#[test]
fn data_pipeline_reruns_nothing_then_exactly_what_a_parameter_touches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared");
    assert!(
        shared.join("data/glue").is_dir(),
        "{} is missing: put the shared data beside the clone",
        shared.display()
    );
    let work = tempfile::tempdir().unwrap();
    let text = r#"Pipeline(
    name: "glue-data",
    vars: { "glue_dir": "${GLUE_DIR:-../shared/data/glue}", "model_dir": "../shared/models/all-MiniLM-L6-v2",
            "max_length": 128, "max_examples": 256 },
    stages: [
        (name: "data-{task}", kind: "data", sweep: { "task": ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"] },
         params: { "task": "glue/{task}", "data_dir": "{glue_dir}", "model": "{model_dir}",
                   "max_length": "{max_length}", "max_examples": "{max_examples}" }),
    ],
)"#;
    let file = work.path().join("data.ron");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap().to_string();
    let lpeft = |args: &[&str]| {
        let out = Command::new(LPEFT)
            .args(args)
            .current_dir(&root)
            .env("LPEFT_STORE", work.path().join("store"))
            .env_remove("GLUE_DIR")
            .env_remove("LPEFT_PROFILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "lpeft {args:?}:\n{}", text_of(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = lpeft(&["run", &file, "--jobs", "2"]);
    assert!(first.contains("run: 6 ran, 0 hit"), "{first}");

    let t0 = Instant::now();
    let second = lpeft(&["run", &file]);
    let wall = t0.elapsed();
    assert!(second.contains("run: 0 ran, 6 hit"), "{second}");
    assert!(wall < Duration::from_secs(1), "no-op rerun took {wall:?}");

    let plan = lpeft(&["plan", &file, "--set", "max_length=64"]);
    assert!(plan.contains("plan: 0 hit, 6 run"), "{plan}");
    assert!(
        plan.contains("params changed: max_length 128 → 64"),
        "{plan}"
    );
    let only = lpeft(&["run", &file, "--set", "max_length=64", "--only", "data-rte"]);
    assert!(only.contains("run: 1 ran, 0 hit, 5 skipped"), "{only}");
    let plan = lpeft(&["plan", &file, "--set", "max_length=64"]);
    assert!(plan.contains("plan: 1 hit, 5 run"), "{plan}");
    lpeft(&["verify", "--all"]);
}

/// Every pipeline in `pipelines/` parses and resolves (all profiles), so `make reproduce-glue`
/// and `lpeft gc` keep working as stages are added.
#[test]
fn the_repository_pipelines_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let store = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("glue.ron")));
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut profiles = vec![None];
        if let Some(i) = text.find("profiles:") {
            for name in [
                "smoke",
                "full",
                "slow",
                "reference",
                "explore",
                "final",
                "sweep",
            ] {
                if text[i..].contains(&format!("\"{name}\":")) {
                    profiles.push(Some(name));
                }
            }
        }
        for profile in profiles {
            let mut args = vec!["plan", f.to_str().unwrap()];
            if let Some(p) = profile {
                args.extend(["--profile", p]);
            }
            let out = Command::new(LPEFT)
                .args(&args)
                .current_dir(&root)
                .env("LPEFT_STORE", store.path())
                .env_remove("GLUE_DIR")
                .env_remove("SUPERGLUE_DIR")
                .env_remove("MODEL_DIR")
                .env_remove("LPEFT_PROFILE")
                .output()
                .unwrap();
            assert!(out.status.success(), "lpeft {args:?}:\n{}", text_of(&out));
        }
    }
}

#[test]
fn a_closed_stdout_ends_quietly_and_bad_names_are_refused_at_plan_time() {
    let env = Env::new(&["a", "b", "c"], 1, 1, 1);
    // The reader is gone before the first line: no panic, exit 0 (like `lpeft plan | head`).
    for args in [
        &["plan", "pipelines/p.ron"][..],
        &["run", "pipelines/p.ron"][..],
    ] {
        let mut child = env
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let out = env.lpeft(&["plan", "pipelines/p.ron", "--backend", "nonexistent"]);
    let t = text_of(&out);
    assert!(
        !out.status.success()
            && t.contains("unknown backend `nonexistent`")
            && t.contains("tch-cuda[:i]"),
        "{t}"
    );
    let out = env.lpeft(&["plan", "pipelines/p.ron", "--set", "=1"]);
    let t = text_of(&out);
    assert!(
        !out.status.success() && t.contains("name before `=` is empty"),
        "{t}"
    );
    let out = env.lpeft(&["plan", "pipelines/p.ron", "--set", "round=2"]);
    let t = text_of(&out);
    assert!(
        !out.status.success() && t.contains("did you mean `rounds`?"),
        "{t}"
    );
    // A backend that is known but not compiled in still plans (keys need only its name).
    env.ok(&["plan", "pipelines/p.ron", "--backend", "tch-cuda:1"]);
}

#[test]
fn reading_commands_work_when_the_hash_cache_cannot_be_written() {
    let env = Env::new(&["a"], 1, 1, 1);
    env.ok(&["run", "pipelines/p.ron"]);
    // A directory where the cache file goes: its write fails, as on a read-only or full disk
    // (permission bits would not stop root, who runs CI).
    let cache = env.path().join("store/cache/hashes.json");
    std::fs::remove_file(&cache).unwrap();
    std::fs::create_dir_all(cache.join("x")).unwrap();
    let key = env.objects()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for args in [
        vec!["verify", "--all"],
        vec!["plan", "pipelines/p.ron"],
        vec!["run", "pipelines/p.ron"],
        vec!["show", key.as_str()],
        vec!["lineage", key.as_str()],
    ] {
        let out = env.lpeft(&args);
        let t = text_of(&out);
        assert!(out.status.success(), "{args:?}: {t}");
        assert!(t.contains("hash cache not saved"), "{args:?}: {t}");
    }
}

#[test]
fn an_error_with_its_cause_inside_prints_the_cause_once() {
    let env = Env::new(&["a"], 1, 1, 1);
    std::fs::write(
        env.path().join("pipelines/d.ron"),
        r#"Pipeline(name: "d", stages: [(name: "data", kind: "data",
            params: { "task": "glue/rte", "data_dir": "no/such/dir", "model": "no/such/model" })])"#,
    )
    .unwrap();
    let out = env.lpeft(&["plan", "pipelines/d.ron"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("no/such/model").count(), 1, "{err}");
}

#[test]
fn a_rerun_of_hits_removes_what_a_killed_forced_replace_left_in_tmp() {
    let env = Env::new(&["a"], 1, 1, 1);
    env.ok(&["run", "pipelines/p.ron"]);
    let key = env.objects()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // What a run killed inside a forced replace leaves: its staging and the moved-aside copy.
    let tmp = env.path().join("store/tmp");
    for leftover in [format!("{key}.4242.0"), format!("{key}.old.4242.1")] {
        std::fs::create_dir_all(tmp.join(&leftover)).unwrap();
        std::fs::write(tmp.join(&leftover).join("part"), "x").unwrap();
    }
    let out = env.ok(&["run", "pipelines/p.ron"]);
    assert!(out.contains("0 ran"), "{out}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
