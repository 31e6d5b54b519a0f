//! Command-line definitions (clap derive). Stage subcommands are added at run time from the
//! registry, each with [`StageArgs`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lpeft",
    version,
    about = "Light-PEFT pipelines: plan, run and inspect content-addressed experiment artifacts",
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Artifact store directory.
    #[arg(long, global = true, env = "LPEFT_STORE", default_value = "artifacts")]
    pub store: PathBuf,
    /// Numeric backend given to stages (`flex`, `tch`, `tch-cuda:0`, ...). Only its class
    /// (without a device index) enters the keys of backend-sensitive stages.
    #[arg(long, global = true, env = "LPEFT_BACKEND", default_value = "flex")]
    pub backend: String,
    /// Whether --backend (or LPEFT_BACKEND) was given rather than left at its default; set
    /// from the parsed matches.
    #[arg(skip)]
    pub backend_given: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and final results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never draw progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: show each stage as HIT (with its key) or RUN (with the reason).
    Plan(PlanArgs),
    /// Run a pipeline: produce every stage that is not in the store.
    Run(RunArgs),
    /// Run a pipeline on a Slurm cluster: one job per stage to run, into one shared store.
    #[command(subcommand)]
    Slurm(SlurmCommand),
    /// Show an artifact's manifest (verifying it first).
    Show(ShowArgs),
    /// Show the artifacts an artifact was made from, recursively.
    Lineage(KeyArg),
    /// Check artifacts against their manifests (re-reading every byte).
    Verify(VerifyArgs),
    /// Result tables and plots of a pipeline's fine-tuning runs found in the store, written to
    /// `results/<pipeline>/` (results.md, results.csv, results.json, SVG plots).
    Report(ReportArgs),
    /// Compare two `results.json` written by `lpeft report`: main-score differences and
    /// efficiency ratios (B / A) per task and method.
    Compare(CompareArgs),
    /// Remove artifacts that no pipeline in `pipelines/` references, and leftovers of killed runs.
    Gc(GcArgs),
    /// Run one stage alone, from `--param`s or a RON config (same as `lpeft KIND`).
    Stage(GenericStageArgs),
    /// Final hidden states of a pretrained encoder for one text (or pair), as safetensors
    /// (`last_hidden_state` f32 [1, T, H], `input_ids` i64 [1, T]), to compare with other
    /// implementations.
    Encode(EncodeArgs),
    /// Predict with a fine-tuned model: a task's own file (GLUE TSV, SuperGLUE JSONL, SQuAD
    /// JSON; labels optional) into the leaderboard's submission file (SQuAD: the official
    /// predictions.json), or one --text (and --pair).
    Predict(PredictArgs),
    /// Export a fine-tuned model for the Hugging Face ecosystem: a PEFT adapter (`peft`), a
    /// transformers model with LoRA merged (`merged`), or a pruned model with its modeling
    /// file for `trust_remote_code=True` (`pruned`); or our own directory for `lpeft predict`
    /// (`bundle`).
    Export(ExportArgs),
    /// What this build and machine offer: backends and devices, where the data and the model
    /// are found (GLUE_DIR, MODEL_DIR), the store, and how to fix what is missing.
    Doctor,
    /// Download GLUE from the Hugging Face hub (parquet) and write it in the official layout,
    /// <out>/<TASK>/{train,dev,test}.tsv, for GLUE_DIR=<out> (needs a network).
    FetchData(FetchDataArgs),
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A fine-tune artifact: its key or a unique prefix (`lpeft plan FILE` lists the keys), or
    /// an exported model directory.
    #[arg(long)]
    pub model: String,
    /// Input in the task's own layout: a GLUE TSV file (test.tsv; a dev or train file's label
    /// column is read for a score and otherwise ignored), a SuperGLUE JSONL file, or a SQuAD
    /// v1.1 JSON file (answers, if present, are scored).
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    pub input: Option<PathBuf>,
    /// Submission file to write, or a directory to write the leaderboard's file name into
    /// (GLUE `<Task>.tsv`, SuperGLUE `<Task>.jsonl`, SQuAD `predictions.json`). Required with
    /// --input.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// One example instead of a file: the task's first field.
    #[arg(long)]
    pub text: Option<String>,
    /// The second field of a pair task, with --text.
    #[arg(long, requires = "text")]
    pub pair: Option<String>,
    /// Examples per batch [default: the fine-tune's dev batch size, with which a dev file
    /// reproduces the fine-tune's dev score exactly].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// The tokenizer.json (or OPT's directory of vocab.json + merges.txt + configs) to use when
    /// the one the data stage read has moved (it must have the recorded content; MODEL_DIR is
    /// searched too).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A fine-tune artifact: its key or a unique prefix, or an exported model directory.
    #[arg(long)]
    pub model: String,
    /// `peft` (unpruned LoRA: adapter_config.json + adapter_model.safetensors), `merged`
    /// (unpruned: config.json + model.safetensors + tokenizer) or `pruned` (any shape, with
    /// modeling_lpeft.py through auto_map); `bundle`: our own checkpoint with its tokenizer
    /// and task, for `lpeft predict --model DIR`.
    #[arg(long, value_parser = ["peft", "merged", "pruned", "bundle"])]
    pub format: String,
    /// The directory to write (absent or empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write our logits on a few fixed inputs to this JSON file, for
    /// tools/export_check.py to compare with transformers.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// With --format peft: the pretrained model the adapter applies to, for a Light-PEFT run
    /// whose cut left the backbone whole, or a moved model (its weights must be the model's).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// The tokenizer.json (or OPT's directory of vocab.json + merges.txt + configs) to use when
    /// the one the data stage read has moved.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FetchDataArgs {
    /// GLUE tasks to fetch (`rte`, `sst2`, ...; repeatable) [default: every GLUE task].
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// The GLUE root to write into.
    #[arg(long, default_value = "data/glue")]
    pub out: PathBuf,
    /// Dataset repository on the hub [default: nyu-mll/glue].
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit of the repository.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Rewrite files that are there already.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Hugging Face model directory (config.json, model.safetensors or pytorch_model.bin, and
    /// tokenizer.json or, as OPT ships it, vocab.json + merges.txt + tokenizer_config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The text (first sequence).
    #[arg(long)]
    pub text: String,
    /// Optional second sequence of a pair.
    #[arg(long)]
    pub pair: Option<String>,
    /// Truncate (longest first) to at most this many tokens, special tokens included.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Output file (safetensors).
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Pipeline file (RON). Relative paths inside it resolve against the current directory.
    pub file: PathBuf,
    /// Apply a named profile of variable overrides from the file.
    #[arg(long, env = "LPEFT_PROFILE")]
    pub profile: Option<String>,
    /// Override a variable: `--set name=value` (value parsed as JSON, else taken as a string).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Rebuild these stages (names or globs such as `ft-*`) even if they are in the store.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Run only these stages (names or globs); others must already be in the store.
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Extend --force / --only to every stage downstream of the named ones.
    #[arg(long)]
    pub downstream: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Print the plan as JSON (one object with every stage's key, status and reasons).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stages off the device (data, surgery) to run at once, independent stages only; on a
    /// CPU backend (flex, tch) estimation and fine-tuning count against it too.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Device slots for estimation and fine-tuning, each running its own stages at once:
    /// `tch-cuda:0,tch-cuda:1`, or `tch-cuda:*` (quoted) for every GPU libtorch sees
    /// [default: the --backend alone]. Keys do not depend on which device ran a stage.
    #[arg(long, value_name = "DEVICE,...", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Estimation and fine-tuning stages at once on one device. Default 1: every backend
    /// draws dropout from one process-wide random stream, so two training stages at once
    /// interleave their draws and their results depend on timing (and on a GPU they share its
    /// queue, so each runs slower). More than 1 gives up reproducibility for throughput.
    #[arg(long, visible_alias = "device-jobs", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub per_device: u16,
}

impl RunArgs {
    /// Stages at once on one device.
    pub fn per_device(&self) -> usize {
        usize::from(self.per_device)
    }
}

/// `lpeft slurm`: the plan as Slurm jobs.
#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Write one sbatch script per stage to run, and submit.sh, which submits them in order
    /// with `--dependency=afterok` on the jobs they read from; then run submit.sh.
    Submit(SlurmArgs),
    /// Only write the scripts and submit.sh (run `bash DIR/submit.sh` to submit).
    Emit(SlurmArgs),
}

#[derive(Debug, Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Directory for the scripts and the jobs' logs (`logs/`), on the shared filesystem
    /// [default: slurm/<pipeline name>]. Scripts of an earlier emit there are replaced.
    #[arg(long)]
    pub scripts: Option<PathBuf>,
    /// Generic resources of estimation and fine-tuning jobs on a GPU backend; `none` to
    /// request none. Jobs on a CPU backend never request any.
    #[arg(long, default_value = "gpu:1")]
    pub gres: String,
    /// Extra `#SBATCH` option for every job, e.g. `--sbatch=--partition=gpu` (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// The lpeft binary the jobs run (on the shared filesystem) [default: this one].
    #[arg(long)]
    pub lpeft: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeyArg {
    /// Artifact key or a unique prefix of at least 4 hex digits.
    pub key: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Artifact key or a unique prefix of at least 4 hex digits.
    pub key: String,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Artifact key or unique prefix.
    #[arg(conflicts_with = "all")]
    pub key: Option<String>,
    /// Verify every artifact in the store (the default without KEY).
    #[arg(long)]
    pub all: bool,
    /// Trust cached hashes of files whose size, mtime, ctime and inode are unchanged.
    #[arg(long)]
    pub fast: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory of pipeline files whose artifacts are kept (all profiles).
    #[arg(long, default_value = "pipelines")]
    pub pipelines: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Pipeline file (RON); its plan names the fine-tuning and estimation artifacts.
    pub file: PathBuf,
    /// Apply a named profile of variable overrides from the file.
    #[arg(long, env = "LPEFT_PROFILE")]
    pub profile: Option<String>,
    /// Override a variable: `--set name=value` (as for `lpeft plan`).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Output directory (default `results/<pipeline name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline `results.json` (A).
    pub a: PathBuf,
    /// The `results.json` compared with it (B).
    pub b: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// A stage parameter: `--param name=value` (value parsed as JSON, else a string;
    /// `a.b=1` sets a nested entry). Overrides the config file.
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// An input artifact: `--input slot=KEY` (key or unique prefix).
    #[arg(short, long = "input", value_name = "SLOT=KEY")]
    pub inputs: Vec<String>,
    /// RON file with the parameters as a map, e.g. `{ "task": "rte" }`.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Rebuild even if the artifact is in the store.
    #[arg(long)]
    pub force: bool,
    /// Only print the key and status; do not run.
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Args)]
pub struct GenericStageArgs {
    /// Stage kind (see the stage subcommands in `lpeft --help`).
    pub kind: String,
    #[command(flatten)]
    pub args: StageArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["lpeft", "run", "p.ron"], args].concat()).unwrap();
        match cli.command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn device_stages_default_to_one_at_a_time() {
        let r = run_args(&["--jobs", "3"]);
        assert_eq!(
            r.per_device(),
            1,
            "one training stage per device by default"
        );
        assert!(r.devices.is_empty());
        let r = run_args(&["--jobs", "3", "--device-jobs", "2"]);
        assert_eq!(r.per_device(), 2, "the old name still works");
        let r = run_args(&["--devices", "tch-cuda:0,tch-cuda:1", "--per-device", "3"]);
        assert_eq!(r.devices, ["tch-cuda:0", "tch-cuda:1"]);
        assert_eq!(r.per_device(), 3);
    }
}
