//! The Slurm scripts of a plan, without Slurm: which stages get jobs, their dependencies and
//! resources, and the quoting of paths with spaces, checked by running submit.sh with a fake
//! sbatch and a job script with a fake lpeft.

use std::path::{Path, PathBuf};
use std::process::Command;

use lpeft_pipeline::builtin::{DigestStage, SnapshotStage};
use lpeft_pipeline::file::load_str;
use lpeft_pipeline::plan::resolve;
use lpeft_pipeline::run::{RunOptions, Silent, execute};
use lpeft_pipeline::slurm::{Job, SlurmOptions, jobs, quote, submit_script};
use lpeft_pipeline::{ExpandOptions, Plan, PlanOptions, Registry};
use lpeft_store::Store;

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    registry: Registry,
}

/// A directory with a space in its name, a data file, a store.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my data");
    std::fs::create_dir_all(&dir).unwrap();
    for t in ["a", "b"] {
        std::fs::write(dir.join(format!("{t}.tsv")), format!("{t}\n1\n")).unwrap();
    }
    let store = Store::open(tmp.path().join("shared store")).unwrap();
    let registry = Registry::new(vec![Box::new(SnapshotStage), Box::new(DigestStage)]);
    Fixture {
        tmp,
        store,
        registry,
    }
}

/// snap-{a,b} (host) → dig-{a,b} (device) → sum-{a,b} (device, reads dig and snap).
fn plan(f: &Fixture, backend: &str) -> Plan {
    let text = format!(
        r#"Pipeline(name: "p", vars: {{ "dir": "{}" }}, stages: [
    (name: "snap-{{t}}", kind: "snapshot", sweep: {{ "t": ["a", "b"] }}, params: {{ "paths": ["{{dir}}/{{t}}.tsv"] }}),
    (name: "dig-{{t}}", kind: "digest", sweep: {{ "t": ["a", "b"] }}, params: {{ "device": true }}, inputs: {{ "src": "snap-{{t}}" }}),
    (name: "sum-{{t}}", kind: "digest", sweep: {{ "t": ["a", "b"] }}, params: {{ "device": true, "rounds": 2 }}, inputs: {{ "src": "dig-{{t}}" }}),
])"#,
        f.tmp.path().join("my data").display()
    );
    let no_env = |_: &str| None;
    let p = load_str(
        Path::new("p.ron"),
        &text,
        &ExpandOptions::default(),
        &no_env,
    )
    .unwrap();
    resolve(&p, &f.registry, &f.store, &PlanOptions::new(backend)).unwrap()
}

struct Paths {
    lpeft: PathBuf,
    workdir: PathBuf,
    scripts: PathBuf,
    file: PathBuf,
    set: Vec<String>,
}

fn paths(f: &Fixture) -> Paths {
    Paths {
        lpeft: f.tmp.path().join("bin dir/lpeft"),
        workdir: f.tmp.path().join("work dir"),
        scripts: f.tmp.path().join("job scripts"),
        file: f.tmp.path().join("my data/p.ron"),
        set: vec![r#"tasks=["rte"]"#.into(), "note=it's".into()],
    }
}

fn options<'a>(f: &'a Fixture, p: &'a Paths, gres: Option<&'a str>) -> SlurmOptions<'a> {
    SlurmOptions {
        lpeft: &p.lpeft,
        workdir: &p.workdir,
        scripts: &p.scripts,
        file: &p.file,
        profile: Some("smoke"),
        set: &p.set,
        store: f.store.root(),
        gres,
        extra: &[],
    }
}

fn names(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.stage.as_str()).collect()
}

#[test]
fn one_job_per_run_stage_after_the_jobs_it_reads_with_gres_on_device_stages_only() {
    let f = fixture();
    // snap-a is in the store already: a HIT, so no job, and dig-a waits for nothing.
    let first = plan(&f, "tch-cuda");
    let only_snap_a = Plan {
        nodes: vec![first.nodes[0].clone()],
        ..first.clone()
    };
    assert_eq!(only_snap_a.nodes[0].name, "snap-a");
    execute(
        &only_snap_a,
        &f.registry,
        &f.store,
        &Silent,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    )
    .unwrap();
    let p = plan(&f, "tch-cuda:3");
    let paths = paths(&f);
    let jobs = jobs(&p, &options(&f, &paths, Some("gpu:1"))).unwrap();
    assert_eq!(names(&jobs), ["snap-b", "dig-a", "dig-b", "sum-a", "sum-b"]);
    let by = |n: &str| jobs.iter().find(|j| j.stage == n).unwrap();
    let after = |n: &str| -> Vec<&str> {
        by(n)
            .after
            .iter()
            .map(|&i| jobs[i].stage.as_str())
            .collect()
    };
    assert!(after("dig-a").is_empty(), "its input is a HIT");
    assert_eq!(after("dig-b"), ["snap-b"]);
    assert_eq!(after("sum-a"), ["dig-a"]);
    assert!(!by("snap-b").gres, "a host stage asks for no GPU");
    assert!(by("dig-a").gres && by("sum-b").gres);
    assert_eq!(by("snap-b").file_name, "001-snap-b.sbatch");
    // The job runs its stage alone on the backend class: Slurm picks the device.
    let script = &by("dig-b").script;
    assert!(script.contains("--backend tch-cuda run "), "{script}");
    assert!(!script.contains("tch-cuda:3"), "{script}");
    assert!(script.contains("--only dig-b"), "{script}");
    assert!(
        script.contains(&format!("--profile smoke --set '{}'", r#"tasks=["rte"]"#)),
        "{script}"
    );
    assert!(
        script.contains(&format!("key {}", p.node("dig-b").unwrap().key)),
        "{script}"
    );

    let submit = submit_script(&p, &jobs, &options(&f, &paths, Some("gpu:1")));
    let dep_lines: Vec<&str> = submit
        .lines()
        .filter(|l| l.contains("--dependency"))
        .collect();
    assert_eq!(dep_lines.len(), 3, "{submit}");
    assert!(
        submit.contains("j3=$(submit ") && submit.contains("\"--dependency=afterok:${j1}\""),
        "{submit}"
    );
    assert_eq!(submit.matches("--gres=gpu:1").count(), 4, "{submit}");

    let none = jobs_without_gres(&f, &p, &paths);
    assert!(none.iter().all(|j| !j.gres));
}

fn jobs_without_gres(f: &Fixture, p: &Plan, paths: &Paths) -> Vec<Job> {
    let jobs = jobs(p, &options(f, paths, None)).unwrap();
    let submit = submit_script(p, &jobs, &options(f, paths, None));
    assert!(!submit.contains("--gres="), "{submit}");
    jobs
}

/// Writes an executable script.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn submit_sh_chains_the_ids_sbatch_returns_and_paths_with_spaces_arrive_whole() {
    let f = fixture();
    let p = plan(&f, "tch-cuda");
    let paths = paths(&f);
    let opts = options(&f, &paths, Some("gpu:1"));
    let jobs = jobs(&p, &opts).unwrap();
    assert_eq!(jobs.len(), 6);
    for j in &jobs {
        script(&paths.scripts.join(&j.file_name), &j.script);
    }
    let submit = paths.scripts.join("submit.sh");
    script(&submit, &submit_script(&p, &jobs, &opts));
    // A fake sbatch: one line per call with its arguments separated by `|`, ids from 100.
    let calls = f.tmp.path().join("calls");
    let fake = f.tmp.path().join("fake sbatch");
    script(
        &fake,
        &format!(
            "#!/usr/bin/env bash\nn=$(( $(cat {c}.n 2>/dev/null || echo 99) + 1 )); echo $n > {c}.n\n(IFS='|'; echo \"$*\") >> {c}\necho \"$n;cluster\"\n",
            c = quote(&calls.display().to_string())
        ),
    );
    let out = Command::new("bash")
        .arg(&submit)
        .env("SBATCH", &fake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.lines().next(), Some("snap-a\t100"), "{printed}");
    assert_eq!(printed.lines().count(), 6);
    let calls = std::fs::read_to_string(&calls).unwrap();
    let calls: Vec<Vec<&str>> = calls.lines().map(|l| l.split('|').collect()).collect();
    // sum-a (job 5) reads dig-a (job 3, id 102).
    let sum_a = &calls[4];
    assert!(sum_a.contains(&"--dependency=afterok:102"), "{sum_a:?}");
    assert!(
        sum_a.contains(&format!("--chdir={}", paths.workdir.display()).as_str()),
        "{sum_a:?}"
    );
    assert_eq!(
        sum_a.last().unwrap(),
        &paths.scripts.join("005-sum-a.sbatch").display().to_string()
    );
    assert!(
        calls[0]
            .iter()
            .all(|a| !a.starts_with("--dependency") && !a.starts_with("--gres"))
    );
    assert!(paths.scripts.join("logs").is_dir());

    // A job script hands lpeft its arguments whole, from the work directory.
    script(
        &paths.lpeft,
        "#!/usr/bin/env bash\npwd\nfor a in \"$@\"; do echo \"[$a]\"; done\n",
    );
    std::fs::create_dir_all(&paths.workdir).unwrap();
    let out = Command::new("bash")
        .arg(paths.scripts.join("005-sum-a.sbatch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines[0], paths.workdir.display().to_string());
    let store = format!("[{}]", f.store.root().display());
    let file = format!("[{}]", paths.file.display());
    let want = [
        "[--no-progress]",
        "[--store]",
        &store,
        "[--backend]",
        "[tch-cuda]",
        "[run]",
        &file,
        "[--profile]",
        "[smoke]",
        "[--set]",
        r#"[tasks=["rte"]]"#,
        "[--set]",
        "[note=it's]",
        "[--only]",
        "[sum-a]",
    ];
    assert_eq!(&lines[1..], want);
}

#[test]
fn a_stage_name_that_is_a_pattern_for_others_is_refused() {
    let f = fixture();
    let text = format!(
        r#"Pipeline(name: "g", stages: [
    (name: "s-a", kind: "snapshot", params: {{ "paths": ["{d}/a.tsv"] }}),
    (name: "s-*", kind: "snapshot", params: {{ "paths": ["{d}/b.tsv"] }}),
])"#,
        d = f.tmp.path().join("my data").display()
    );
    let no_env = |_: &str| None;
    let pipeline = load_str(
        Path::new("g.ron"),
        &text,
        &ExpandOptions::default(),
        &no_env,
    )
    .unwrap();
    let p = resolve(&pipeline, &f.registry, &f.store, &PlanOptions::new("flex")).unwrap();
    let paths = paths(&f);
    let e = jobs(&p, &options(&f, &paths, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage `s-*` is a pattern matching 2 stages"),
        "{e}"
    );
}
