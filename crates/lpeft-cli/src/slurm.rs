//! `lpeft slurm emit|submit`: the plan's RUN stages as Slurm jobs (scripts from
//! `lpeft_pipeline::slurm`), written to a directory and, for `submit`, handed to sbatch.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use lpeft_pipeline::Registry;
use lpeft_pipeline::slurm::{SlurmOptions, jobs, submit_script};
use lpeft_store::Store;

use crate::cli::{GlobalArgs, SlurmCommand};
use crate::commands::make_plan;
use crate::output::Reporter;

pub fn slurm(
    command: &SlurmCommand,
    global: &GlobalArgs,
    registry: &Registry,
    store: &Store,
    out: &Reporter,
) -> anyhow::Result<()> {
    let (args, submit) = match command {
        SlurmCommand::Submit(a) => (a, true),
        SlurmCommand::Emit(a) => (a, false),
    };
    let plan = make_plan(&args.pipeline, global, registry, store)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let file = std::fs::canonicalize(&args.pipeline.file)
        .with_context(|| format!("cannot find {}", args.pipeline.file.display()))?;
    let scripts = cwd.join(
        args.scripts
            .clone()
            .unwrap_or_else(|| PathBuf::from("slurm").join(&plan.pipeline)),
    );
    let lpeft = match &args.lpeft {
        Some(p) => cwd.join(p),
        None => std::env::current_exe().context("cannot find this lpeft binary")?,
    };
    let gres = match args.gres.trim() {
        "" => bail!("--gres ``: expected a generic resource such as gpu:1, or none"),
        "none" => None,
        // CPU backends' training stages need no GPU.
        g => (!lpeft_model::device::on_host(&plan.backend)).then_some(g),
    };
    let opts = SlurmOptions {
        lpeft: &lpeft,
        workdir: &cwd,
        scripts: &scripts,
        file: &file,
        profile: args.pipeline.profile.as_deref(),
        set: &args.pipeline.set,
        store: store.root(),
        gres,
        extra: &args.sbatch,
    };
    let jobs = jobs(&plan, &opts)?;
    if jobs.is_empty() {
        out.line(format!(
            "nothing to submit: every stage of {} is in the store",
            plan.pipeline
        ));
        return Ok(());
    }
    write_scripts(&scripts, &jobs, &submit_script(&plan, &jobs, &opts))?;
    for job in &jobs {
        let after: Vec<&str> = job.after.iter().map(|&i| jobs[i].stage.as_str()).collect();
        let line = format!(
            "  JOB     {:<28} {}{}",
            job.stage,
            if job.gres { "gres " } else { "" },
            if after.is_empty() {
                String::new()
            } else {
                format!("after {}", after.join(", "))
            }
        );
        out.detail(line.trim_end());
    }
    let submit_sh = scripts.join("submit.sh");
    out.line(format!(
        "wrote {} job script(s) and {} ({} HIT stage(s) need no job)",
        jobs.len(),
        submit_sh.display(),
        plan.count("HIT")
    ));
    if submit {
        let run = Command::new("bash")
            .arg(&submit_sh)
            .output()
            .with_context(|| format!("cannot run bash {}", submit_sh.display()))?;
        let stdout = String::from_utf8_lossy(&run.stdout);
        for line in stdout.lines() {
            if let Some((stage, id)) = line.split_once('\t') {
                out.line(format!("submitted {stage} as job {id}"));
            }
        }
        if !run.status.success() {
            bail!(
                "{} failed ({}): {}; jobs submitted before it stay queued (scancel them, or let them run)",
                submit_sh.display(),
                run.status,
                String::from_utf8_lossy(&run.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Writes the scripts (executable) and submit.sh into `dir`, replacing the scripts of an
/// earlier emit so that submit.sh never meets a stale one.
fn write_scripts(
    dir: &Path,
    jobs: &[lpeft_pipeline::slurm::Job],
    submit: &str,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sbatch") {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove the old {}", path.display()))?;
        }
    }
    let files = jobs
        .iter()
        .map(|j| (j.file_name.as_str(), j.script.as_str()))
        .chain([("submit.sh", submit)]);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}
