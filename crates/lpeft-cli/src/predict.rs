//! `lpeft predict`: the command around `lpeft_predict` (which does the work): find the model,
//! read and tokenize the input, predict in batches with progress bars, write the submission
//! file, and say how the input's labels (if any) score against the fine-tune's own dev score.

use anyhow::{Context, bail};
use lpeft_predict::load::Locations;
use lpeft_predict::{ModelRef, Predicted, TrainedModel, input, submit};
use lpeft_store::Store;

use crate::cli::{GlobalArgs, PredictArgs};
use crate::output::Reporter;

/// The trained model `model` names (a fine-tune artifact's key, or an exported directory),
/// with frozen weights looked up where recorded and then in `MODEL_DIR`; `tokenizer`: the
/// tokenizer.json to use when the recorded one has moved. Shared by predict and export.
pub fn open_trained(
    model: &str,
    tokenizer: Option<std::path::PathBuf>,
    store: impl FnOnce() -> anyhow::Result<Store>,
) -> anyhow::Result<TrainedModel> {
    let at = Locations {
        model_dirs: std::env::var_os("MODEL_DIR")
            .filter(|v| !v.is_empty())
            .map(Into::into)
            .into_iter()
            .collect(),
        tokenizer,
    };
    Ok(match ModelRef::parse(model) {
        ModelRef::Dir(dir) => lpeft_predict::bundle::read(&dir, &at)?,
        reference => {
            let store = store()?;
            let trained = TrainedModel::open(&store, &reference, &at)?;
            store.flush();
            trained
        }
    })
}

pub fn predict(
    args: &PredictArgs,
    global: &GlobalArgs,
    store: impl FnOnce() -> anyhow::Result<Store>,
    out: &Reporter,
) -> anyhow::Result<()> {
    let trained = open_trained(&args.model, args.tokenizer.clone(), store)?;
    let task = lpeft_data::registry::task(&trained.task.name)?;
    let examples = match (&args.input, &args.text) {
        (Some(file), _) => input::read_file(task, file)?,
        (None, Some(text)) => input::one(task, text, args.pair.as_deref())?,
        (None, None) => bail!("give --input FILE, or --text (and --pair)"),
    };
    let output = match (&args.output, &args.input) {
        (Some(o), _) => Some(submit::output_path(o, task, examples.file.as_deref())?),
        (None, Some(_)) => bail!(
            "--output is required with --input: a file, or a directory for {}",
            submit::file_name(task, examples.file.as_deref())?
        ),
        (None, None) => None,
    };
    if let Some(path) = &output
        && path.exists()
        && !args.force
    {
        bail!("{} exists: give --force to replace it", path.display());
    }

    let device = lpeft_model::device::device(&global.backend)?;
    let model = trained
        .build(&device)
        .context("cannot rebuild the trained model")?;
    let bar = out.bar("predict");
    let (tensors, texts) = input::tokenize(&examples, &trained.text, &|done, total| {
        bar.follow("tokenize", done, total)
    })?;
    let batch = args.batch_size.map_or(trained.batch_size, |b| b as usize);
    if matches!(trained.task.kind, lpeft_schema::dataset::TaskKind::Span) {
        let answers = lpeft_predict::predict_answers(
            &model,
            &trained.task,
            &tensors,
            texts.as_ref(),
            batch,
            trained.text.pad_id,
            &device,
            &|done, total| bar.follow("windows", done, total),
        )?;
        drop(bar);
        let path = output.context("span tasks are predicted from an --input file")?;
        submit::write(
            &path,
            &submit::render_answers(&answers.official),
            args.force,
        )?;
        out.line(format!(
            "wrote {} ({} answers of {}, {})",
            path.display(),
            answers.official.len(),
            trained.task.name,
            origin(&trained),
        ));
        if let Some(e) = &answers.evaluation {
            report_score(args, &trained, e, out);
        }
        return Ok(());
    }
    let predictions = lpeft_predict::predict(
        &model,
        &tensors,
        &trained.task.kind,
        batch,
        trained.text.pad_id,
        &device,
        &|done, total| bar.follow("batches", done, total),
    )?;
    drop(bar);

    match &output {
        Some(path) => {
            let text = submit::render(task, &examples.ids, &predictions.predicted)?;
            submit::write(path, &text, args.force)?;
            out.line(format!(
                "wrote {} ({} predictions of {}, {})",
                path.display(),
                predictions.predicted.len(),
                trained.task.name,
                origin(&trained),
            ));
        }
        None => out.line(one_line(task, &predictions)?),
    }
    if let Some(e) = lpeft_predict::score(&trained.task, &tensors, texts.as_ref(), &predictions)? {
        report_score(args, &trained, &e, out);
    }
    Ok(())
}

/// The model's method and short key, for the result line.
fn origin(trained: &TrainedModel) -> String {
    trained.origin.key.as_deref().map_or_else(
        || trained.origin.method.clone(),
        |k| format!("{} {}", trained.origin.method, crate::output::short(k)),
    )
}

/// The score on the input's labels (or answers), beside the fine-tune's recorded best one.
fn report_score(
    args: &PredictArgs,
    trained: &TrainedModel,
    e: &lpeft_eval::Evaluation,
    out: &Reporter,
) {
    let file = args
        .input
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string());
    let metrics: Vec<String> = e
        .metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    let what = if matches!(trained.task.kind, lpeft_schema::dataset::TaskKind::Span) {
        "answers"
    } else {
        "labels"
    };
    out.line(format!(
        "score on the {what} in {file}: {} (main {})",
        metrics.join(", "),
        e.main_score
    ));
    if let Some(dev) = &trained.origin.dev {
        let same = if dev.main_score == e.main_score
            && (dev.metrics.is_empty() || dev.metrics == e.metrics)
        {
            "the same"
        } else {
            "differs"
        };
        out.detail(format!(
            "the fine-tune's best {} score: {} ({same}; {} of {} examples{}, backend {})",
            dev.split,
            dev.main_score,
            dev.examples,
            dev.source_examples,
            if dev.examples < dev.source_examples {
                ", a max_examples sample"
            } else {
                ""
            },
            trained.origin.backend
        ));
    }
}

/// One prediction as a line: the label and the class probabilities, or the score.
fn one_line(
    task: &lpeft_data::registry::TaskDef,
    predictions: &lpeft_predict::Predictions,
) -> anyhow::Result<String> {
    let logits = predictions
        .logits
        .first()
        .context("no prediction was made")?;
    Ok(match &predictions.predicted {
        Predicted::Score(s) => format!("prediction: {}", s[0]),
        Predicted::Class(c) => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f64> = logits.iter().map(|l| f64::from(l - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            let names = if task.label_names.is_empty() {
                task.raw_labels
            } else {
                task.label_names
            };
            let probs: Vec<String> = exp
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let name = names.get(i).copied().unwrap_or("?");
                    format!("{name} {:.3}", p / sum)
                })
                .collect();
            format!(
                "prediction: {} ({})",
                submit::label_value(task, c[0]).map_or_else(
                    |_| c[0].to_string(),
                    |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                ),
                probs.join(", ")
            )
        }
    })
}
