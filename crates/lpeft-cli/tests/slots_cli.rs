//! `lpeft run --devices` and `lpeft slurm` end to end, on builtin stages (`digest` with
//! `device: true` takes a device slot but computes on the host, so a flex build schedules
//! onto `tch-cuda:i` slots without a GPU), and a fake sbatch that runs each job at once.
#![allow(clippy::print_stderr)] // test diagnostics go to the test log

mod tiny;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

/// A work directory with `data/<t>.tsv` for each task and `p.ron`: snap-<t> (host) →
/// dig-<t> (device, `rounds` BLAKE3 rounds over the file).
fn work(tasks: usize, kib: usize, rounds: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let mut list = Vec::new();
    for t in 0..tasks {
        let line = format!("task {t}\t{}\n", "x".repeat(60));
        std::fs::write(
            dir.path().join(format!("data/t{t}.tsv")),
            line.repeat(kib * 1024 / line.len() + 1),
        )
        .unwrap();
        list.push(format!("\"t{t}\""));
    }
    let text = format!(
        r#"Pipeline(name: "p", vars: {{ "rounds": {rounds} }}, stages: [
    (name: "snap-{{t}}", kind: "snapshot", sweep: {{ "t": [{l}] }}, params: {{ "paths": ["data/{{t}}.tsv"] }}),
    (name: "dig-{{t}}", kind: "digest", sweep: {{ "t": [{l}] }}, params: {{ "device": true, "rounds": "{{rounds}}" }},
     inputs: {{ "src": "snap-{{t}}" }}),
])"#,
        l = list.join(", ")
    );
    std::fs::write(dir.path().join("p.ron"), text).unwrap();
    dir
}

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(LPEFT);
    c.args(args)
        .current_dir(dir)
        .env("LPEFT_STORE", dir.join("store"))
        .env_remove("RUST_LOG")
        .env_remove("LPEFT_PROFILE")
        .env_remove("LPEFT_BACKEND");
    c
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cmd(dir, args).output().unwrap();
    assert!(
        out.status.success(),
        "lpeft {args:?} failed:\n{}",
        text_of(&out)
    );
    text_of(&out)
}

/// Stdout of a command that must succeed (JSON, without stderr's notes).
fn stdout(dir: &Path, args: &[&str]) -> String {
    let out = cmd(dir, args).output().unwrap();
    assert!(
        out.status.success(),
        "lpeft {args:?} failed:\n{}",
        text_of(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = cmd(dir, args).output().unwrap();
    assert!(
        !out.status.success(),
        "lpeft {args:?} succeeded:\n{}",
        text_of(&out)
    );
    text_of(&out)
}

/// The `backend` a stage's manifest records.
fn recorded_backend(dir: &Path, plan_json: &serde_json::Value, stage: &str) -> String {
    let show = stdout(dir, &["show", tiny::stage_key(plan_json, stage), "--json"]);
    let manifest: serde_json::Value = serde_json::from_str(&show).unwrap();
    manifest["backend"].as_str().unwrap().to_string()
}

#[test]
fn devices_pin_device_stages_say_when_they_wait_and_keys_stay_device_free() {
    // Digests of about a quarter second each, so that two of them overlap.
    let dir = work(4, 64, 5000);
    let dir = dir.path();
    let run = ok(
        dir,
        &[
            "run",
            "p.ron",
            "--devices",
            "tch-cuda:0,tch-cuda:1",
            "--jobs",
            "2",
        ],
    );
    assert!(
        run.contains("run 1 at a time on each of 2 device(s) (tch-cuda:0, tch-cuda:1)"),
        "{run}"
    );
    for d in ["tch-cuda:0", "tch-cuda:1"] {
        assert!(run.contains(&format!("[on {d}]")), "{run}");
        assert!(run.contains(&format!(" on {d}  ")), "{run}");
    }
    // Where each ran is in its manifest, not in its key: any device of the class hits.
    let plan: serde_json::Value = serde_json::from_str(&stdout(
        dir,
        &["plan", "p.ron", "--backend", "tch-cuda:7", "--json"],
    ))
    .unwrap();
    let statuses: Vec<&str> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == "HIT"), "{plan}");
    let mut seen: Vec<String> = (0..4)
        .map(|t| recorded_backend(dir, &plan, &format!("dig-t{t}")))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["tch-cuda:0", "tch-cuda:1"]);
    let flex = ok(dir, &["plan", "p.ron"]);
    assert!(
        flex.contains("plan: 4 hit, 4 run"),
        "another class reruns the device stages:\n{flex}"
    );

    // One device: the runner says that the device stages wait for it.
    let one = ok(
        dir,
        &[
            "run",
            "p.ron",
            "--backend",
            "tch-cuda:1",
            "--force",
            "dig-*",
        ],
    );
    assert!(one.contains("  WAIT    dig-t"), "{one}");
    assert!(
        one.contains("every device is busy (tch-cuda:1; 1 stage(s) each"),
        "{one}"
    );
}

#[test]
fn bad_device_lists_name_the_flag() {
    let dir = work(1, 1, 1);
    let dir = dir.path();
    let e = fails(dir, &["run", "p.ron", "--devices", "tch-cuda:x"]);
    assert!(
        e.contains("--devices `tch-cuda:x`: unknown backend `tch-cuda:x`"),
        "{e}"
    );
    let e = fails(
        dir,
        &[
            "run",
            "p.ron",
            "--devices",
            "tch-cuda:0",
            "--backend",
            "flex",
        ],
    );
    assert!(
        e.contains("--backend `flex` and --devices `tch-cuda:0`"),
        "{e}"
    );
    let e = fails(dir, &["run", "p.ron", "--devices", "tch-cuda:0,tch-cuda:0"]);
    assert!(e.contains("--per-device 2"), "{e}");
    if !cfg!(feature = "tch") {
        let e = fails(dir, &["run", "p.ron", "--devices", "tch-cuda:*"]);
        assert!(
            e.contains("--devices `tch-cuda:*`")
                && e.contains("only tch-cuda devices can be counted"),
            "{e}"
        );
    }
    assert!(
        !dir.join("store/objects")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    );
}

#[test]
fn sigkill_during_a_run_on_slots_leaves_a_store_that_verifies_and_a_rerun_completes() {
    let dir = work(6, 256, 1500);
    let dir = dir.path();
    let args = [
        "run",
        "p.ron",
        "--devices",
        "tch-cuda:0,tch-cuda:1,tch-cuda:2",
        "--jobs",
        "2",
        "-q",
    ];
    let t0 = Instant::now();
    ok(dir, &[&args[..], &["--store", "scratch"]].concat());
    let full = t0.elapsed();
    eprintln!("full run: {full:?}");
    let mut kills = 0;
    for round in 0..12 {
        if kills == 3 {
            break;
        }
        std::fs::remove_dir_all(dir.join("store/objects")).ok();
        std::fs::create_dir_all(dir.join("store/objects")).unwrap();
        let mut child = cmd(dir, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = full.mul_f64([0.3, 0.55, 0.75, 0.15][round % 4]);
        std::thread::sleep(at.max(Duration::from_millis(5)));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        kills += usize::from(!finished);
        let verify = cmd(dir, &["verify", "--all"]).output().unwrap();
        assert!(
            verify.status.success(),
            "round {round}, kill at {at:?}:\n{}",
            text_of(&verify)
        );
    }
    assert_eq!(kills, 3, "runs were killed mid-way");
    let rerun = ok(dir, &args);
    let plan = ok(dir, &["plan", "p.ron", "--backend", "tch-cuda"]);
    assert!(plan.contains("plan: 12 hit, 0 run"), "{rerun}\n{plan}");
    ok(dir, &["verify", "--all"]);
    let gc_tmp = std::fs::read_dir(dir.join("store/tmp")).unwrap().count();
    assert_eq!(
        gc_tmp, 0,
        "the rerun swept what the killed runs left in tmp/"
    );
}

/// A fake sbatch that runs the job script at once (submit.sh submits in dependency order, so
/// inputs exist when a job starts) and fails like sbatch when the job fails.
fn fake_sbatch(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake sbatch");
    std::fs::write(
        &path,
        "#!/usr/bin/env bash\nset -e\nfor a in \"$@\"; do last=\"$a\"; case \"$a\" in --gres=*) echo \"$last\" >> \"$(dirname \"$0\")/gres\";; esac; done\nn=$(( $(cat \"$0.n\" 2>/dev/null || echo 0) + 1 )); echo $n > \"$0.n\"\nbash \"$last\" > \"$(dirname \"$0\")/job-$n.log\" 2>&1\necho $n\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn slurm_submit_runs_each_stage_as_its_own_job_into_one_store() {
    let dir = work(2, 4, 3);
    let dir = dir.path();
    // One stage is a HIT already: it gets no job.
    ok(dir, &["run", "p.ron", "--only", "snap-t0"]);
    let fake = fake_sbatch(dir);
    let out = cmd(
        dir,
        &[
            "slurm",
            "submit",
            "p.ron",
            "--backend",
            "tch-cuda",
            "--scripts",
            "job scripts",
        ],
    )
    .env("SBATCH", &fake)
    .output()
    .unwrap();
    let text = text_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wrote 3 job script(s)") && text.contains("(1 HIT stage(s) need no job)"),
        "{text}"
    );
    assert!(text.contains("submitted dig-t1 as job 3"), "{text}");
    let gres = std::fs::read_to_string(dir.join("gres")).unwrap();
    assert_eq!(
        gres.lines().count(),
        2,
        "the two digest jobs ask for a GPU: {gres}"
    );
    let job = std::fs::read_to_string(dir.join("job-3.log")).unwrap();
    assert!(job.contains("dig-t1"), "{job}");
    ok(dir, &["verify", "--all"]);
    let plan = ok(dir, &["plan", "p.ron", "--backend", "tch-cuda"]);
    assert!(plan.contains("plan: 4 hit, 0 run"), "{plan}");
    // Nothing left to do: no scripts, no submission.
    let again = ok(
        dir,
        &[
            "slurm",
            "emit",
            "p.ron",
            "--backend",
            "tch-cuda",
            "--scripts",
            "job scripts",
        ],
    );
    assert!(again.contains("nothing to submit"), "{again}");
    // A CPU backend's digest jobs ask for no GPU.
    let cpu = ok(dir, &["slurm", "emit", "p.ron", "--scripts", "cpu jobs"]);
    assert!(cpu.contains("wrote 2 job script(s)"), "{cpu}");
    let submit = std::fs::read_to_string(dir.join("cpu jobs/submit.sh")).unwrap();
    assert!(!submit.contains("--gres="), "{submit}");
}
