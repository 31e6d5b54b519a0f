//! The data-prep stage (`kind = "data"`) for the pipeline runner.

use lpeft_pipeline::stage::{
    Params, Prepared, Progress, RunContext, RunSummary, Stage, StageError, parse_params,
};

use crate::build::{BuildProgress, DataConfig, Resolved, build_reporting, resolve};
use crate::error::DataError;

/// Turns a task's official files into a tokenized dataset artifact.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataStage;

pub const KIND: &str = "data";

/// Command-line flags of `lpeft data`: (long flag, parameter, help). Values are parsed like
/// `--param` values (JSON, else a string).
pub const CLI_FLAGS: &[(&str, &str, &str)] = &[
    (
        "task",
        "task",
        "Task: glue/sst2, glue/mnli, superglue/copa, squad/v1.1, ...",
    ),
    (
        "data-dir",
        "data_dir",
        "Official layout root (<root>/<TASK>/...) [default: GLUE_DIR, SUPERGLUE_DIR or SQUAD_DIR]",
    ),
    (
        "model",
        "model",
        "Model directory holding tokenizer.json (or OPT's vocab.json + merges.txt + tokenizer_config.json), or the file itself",
    ),
    (
        "max-length",
        "max_length",
        "Tokens per row incl. special tokens [default: 128; SQuAD 384]",
    ),
    (
        "max-examples",
        "max_examples",
        "Per split, a seeded sample of at most this many examples",
    ),
    ("seed", "seed", "Seed of the sample [default: 0]"),
    (
        "splits",
        "splits",
        "Splits as a JSON list, e.g. '[\"train\",\"dev\"]' [default: the task's]",
    ),
];

/// A data error as the stage's: the ones about parameters as such, the others as failures
/// (their messages say what failed, so they are not prefixed with the stage's kind).
fn stage_error(e: DataError) -> StageError {
    match e {
        DataError::Params(_)
        | DataError::UnknownTask { .. }
        | DataError::UnknownSplit { .. }
        | DataError::NoDataSource { .. } => StageError::params(KIND, e),
        other => StageError::Failed {
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// A build's progress on the stage's bar: one bar per split's tokenization, counted in
/// examples (so it shows a rate and an ETA), with the build's last line as its message.
struct StageProgress<'a> {
    bar: &'a dyn Progress,
    done: std::cell::Cell<usize>,
    line: std::cell::RefCell<String>,
}

impl BuildProgress for StageProgress<'_> {
    fn line(&self, line: &str) {
        line.clone_into(&mut self.line.borrow_mut());
        self.bar.advance(0, line);
    }
    fn tokenized(&self, split: &str, done: usize, total: usize) {
        if done == 0 {
            self.bar.start(&format!("tokenize {split}"), total as u64);
        }
        let step = done.saturating_sub(self.done.replace(done));
        self.bar.advance(step as u64, &self.line.borrow());
    }
}

impl DataStage {
    fn resolve(params: &Params) -> Result<Resolved, StageError> {
        let config: DataConfig = parse_params(KIND, params)?;
        resolve(&config).map_err(stage_error)
    }
}

impl Stage for DataStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn input_slots(&self) -> &'static [&'static str] {
        &[]
    }

    fn about(&self) -> &'static str {
        "Read a task's official files (or the hub's) and tokenize them into a dataset artifact"
    }

    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let resolved = Self::resolve(params)?;
        Ok(Prepared {
            canonical_params: resolved.canonical_params(),
            external_files: resolved.files(),
            backend_sensitive: false,
        })
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let resolved = Self::resolve(ctx.params)?;
        let progress = StageProgress {
            bar: ctx.progress,
            done: Default::default(),
            line: Default::default(),
        };
        let report = build_reporting(&resolved, ctx.out_dir, &progress);
        ctx.progress.finish();
        let report = report.map_err(stage_error)?;
        let splits: serde_json::Map<String, serde_json::Value> = report
            .meta
            .splits
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    serde_json::json!({
                        "examples": s.num_examples,
                        "source_examples": s.num_source_examples,
                        "rows": s.num_rows,
                        "tokens": s.num_tokens,
                        "truncated": s.num_truncated,
                    }),
                )
            })
            .collect();
        let mut figures = serde_json::json!({
            "task": report.meta.task.name,
            "splits": splits,
            "read_seconds": report.read_seconds,
            "tokenize_seconds": report.tokenize_seconds,
        });
        // Flat counts too, so one-line summaries show them: `train_examples=67349`.
        for s in &report.meta.splits {
            figures[format!("{}_examples", s.name)] = s.num_examples.into();
        }
        Ok(RunSummary { figures })
    }
}
