//! The plan as Slurm batch jobs: one per RUN stage, each `lpeft run FILE --only STAGE` into the
//! one store on a shared filesystem, submitted after (`afterok`) the jobs of the RUN stages it
//! reads. HIT stages get no job. Pure: the caller writes the files and calls `sbatch`.
//!
//! Every option goes on sbatch's command line in `submit.sh`, shell-quoted, because `#SBATCH`
//! lines have no reliable quoting for paths with spaces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::PipelineError;
use crate::file::select;
use crate::plan::{Plan, Status, backend_class};
use crate::run::check_runnable;

/// How the jobs reproduce this plan, and what they ask Slurm for.
#[derive(Debug, Clone)]
pub struct SlurmOptions<'a> {
    /// The lpeft binary the jobs run (absolute, on the shared filesystem).
    pub lpeft: &'a Path,
    /// The directory the jobs run in: relative paths in the pipeline resolve against it.
    pub workdir: &'a Path,
    /// Where the scripts are written; the jobs' logs go to `logs/` inside.
    pub scripts: &'a Path,
    /// The pipeline file (absolute) and what selects this plan from it.
    pub file: &'a Path,
    pub profile: Option<&'a str>,
    /// `--set NAME=VALUE` arguments, as given.
    pub set: &'a [String],
    /// The store (absolute, on the shared filesystem).
    pub store: &'a Path,
    /// Generic resources of backend-sensitive jobs (`gpu:1`); `None`: never any (a CPU backend,
    /// or `--gres none`).
    pub gres: Option<&'a str>,
    /// Further sbatch options for every job (`--partition=gpu`).
    pub extra: &'a [String],
}

/// One batch job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub stage: String,
    /// File name of its script inside the scripts directory (`003-surgery-rte.sbatch`).
    pub file_name: String,
    pub script: String,
    /// Indices (into the job list) of the jobs it waits for.
    pub after: Vec<usize>,
    /// Whether it requests the generic resources.
    pub gres: bool,
}

/// The jobs of every RUN node, in plan order (so a job comes after those it waits for).
/// Refuses blocked or corrupt plans, and stage names that as `--only` patterns would select
/// other stages too.
pub fn jobs(plan: &Plan, opts: &SlurmOptions<'_>) -> Result<Vec<Job>, PipelineError> {
    check_runnable(plan)?;
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    let backend = backend_class(&plan.backend);
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut jobs = Vec::new();
    for node in plan
        .nodes
        .iter()
        .filter(|n| matches!(n.status, Status::Run(_)))
    {
        let selects =
            select(std::slice::from_ref(&node.name), &names).map_err(PipelineError::Usage)?;
        if selects.len() != 1 {
            return Err(PipelineError::Usage(format!(
                "stage `{}` is a pattern matching {} stages, so `--only {}` cannot pick it alone; rename it",
                node.name,
                selects.len(),
                node.name
            )));
        }
        let after: Vec<usize> = node
            .inputs
            .values()
            .filter_map(|i| i.from.as_deref())
            .filter_map(|from| index.get(from).copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut args: Vec<String> = vec![
            "--no-progress".into(),
            "--store".into(),
            opts.store.display().to_string(),
            // The device index is Slurm's to choose (CUDA_VISIBLE_DEVICES); keys carry the class.
            "--backend".into(),
            backend.clone(),
            "run".into(),
            opts.file.display().to_string(),
        ];
        if let Some(p) = opts.profile {
            args.extend(["--profile".into(), p.to_string()]);
        }
        for s in opts.set {
            args.extend(["--set".into(), s.clone()]);
        }
        args.extend(["--only".into(), node.name.clone()]);
        if node.forced {
            args.extend(["--force".into(), node.name.clone()]);
        }
        let mut script = String::new();
        let _ = writeln!(script, "#!/usr/bin/env bash");
        let _ = writeln!(
            script,
            "# Stage `{}` ({}) of pipeline `{}`, key {}; submitted by submit.sh.",
            node.name, node.kind, plan.pipeline, node.key
        );
        let _ = writeln!(script, "set -euo pipefail");
        let _ = writeln!(script, "cd {}", quote(&opts.workdir.display().to_string()));
        let _ = writeln!(
            script,
            "exec {} {}",
            quote(&opts.lpeft.display().to_string()),
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        );
        index.insert(&node.name, jobs.len());
        jobs.push(Job {
            stage: node.name.clone(),
            file_name: format!("{:03}-{}.sbatch", jobs.len() + 1, file_safe(&node.name)),
            script,
            after,
            gres: opts.gres.is_some() && node.backend_class.is_some(),
        });
    }
    Ok(jobs)
}

/// `submit.sh`: submits the jobs in order, each with `--dependency=afterok` on the ids of the
/// jobs it waits for, and prints `STAGE<TAB>JOB_ID` per job. `$SBATCH` overrides the command.
pub fn submit_script(plan: &Plan, jobs: &[Job], opts: &SlurmOptions<'_>) -> String {
    let mut s = String::new();
    let gpu = jobs.iter().filter(|j| j.gres).count();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(
        s,
        "# Pipeline `{}`{}: {} job(s), {gpu} of them asking for generic resources. Written by `lpeft slurm`.",
        plan.pipeline,
        opts.profile
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default(),
        jobs.len()
    );
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "SBATCH=\"${{SBATCH:-sbatch}}\"");
    let _ = writeln!(
        s,
        "mkdir -p {}",
        quote(&opts.scripts.join("logs").display().to_string())
    );
    // `--parsable` prints `id` or `id;cluster`.
    let _ = writeln!(
        s,
        "submit() {{ local out; out=$(\"$SBATCH\" --parsable \"$@\"); echo \"${{out%%;*}}\"; }}"
    );
    for (i, job) in jobs.iter().enumerate() {
        let mut args: Vec<String> = vec![
            format!(
                "--job-name=lpeft-{}-{}",
                file_safe(&plan.pipeline),
                file_safe(&job.stage)
            ),
            format!("--chdir={}", opts.workdir.display()),
            format!(
                "--output={}",
                opts.scripts
                    .join("logs")
                    .join(format!("{}-%j.out", file_safe(&job.stage)))
                    .display()
            ),
            "--kill-on-invalid-dep=yes".into(),
        ];
        if job.gres {
            args.push(format!(
                "--gres={}",
                opts.gres.expect("gres jobs have gres")
            ));
        }
        args.extend(opts.extra.iter().cloned());
        let mut line: Vec<String> = args.iter().map(|a| quote(a)).collect();
        if !job.after.is_empty() {
            let ids: Vec<String> = job
                .after
                .iter()
                .map(|d| format!("${{j{}}}", d + 1))
                .collect();
            line.push(format!("\"--dependency=afterok:{}\"", ids.join(":")));
        }
        line.push(quote(
            &opts.scripts.join(&job.file_name).display().to_string(),
        ));
        let _ = writeln!(s, "j{}=$(submit {})", i + 1, line.join(" "));
        let _ = writeln!(
            s,
            "printf '%s\\t%s\\n' {} \"$j{}\"",
            quote(&job.stage),
            i + 1
        );
    }
    s
}

/// A word for the shell: single-quoted unless it is plainly safe.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A stage name as part of a file or job name.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
