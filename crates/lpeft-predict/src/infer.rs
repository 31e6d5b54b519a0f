//! Batched predictions in eval mode, and their scores when the input has labels.
//!
//! Batches are made as the fine-tune's dev evaluation makes them (source order, padded to the
//! longest row of each batch, the same units per batch), so the logits of a dev file are the
//! ones the fine-tune scored, bit for bit on the same backend.

use burn::module::Module;
use burn::tensor::Device;

use lpeft_artifacts::dataset::{BatchConfig, Batcher, Labels, SplitTensors, Texts};
use lpeft_eval::span::{SpanPrediction, decode_split, official_predictions, span_answers};
use lpeft_eval::squad::SquadPredictions;
use lpeft_eval::{Evaluation, Outputs, evaluate_task};
use lpeft_model::Model;
use lpeft_model::head::HeadOutput;
use lpeft_schema::dataset::{TaskKind, TaskSpec};
use lpeft_schema::model::TaskHeadSpec;

use crate::PredictError;

/// One prediction per unit: an example (a row), or a question for multiple choice.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    /// The arg-max class (classification) or choice (multiple choice).
    Class(Vec<i64>),
    /// The regression output (STS-B).
    Score(Vec<f32>),
}

impl Predicted {
    pub fn len(&self) -> usize {
        match self {
            Predicted::Class(v) => v.len(),
            Predicted::Score(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub predicted: Predicted,
    /// The head's outputs per unit (class logits, choice logits, or the score).
    pub logits: Vec<Vec<f32>>,
}

/// First index of the largest value (as the trainer's evaluation picks it).
fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as i64
}

/// Runs `model` over `split` in batches of `batch_size` units on `device` (a plain device).
/// `progress(done, total)` follows the units.
pub fn predict(
    model: &Model,
    split: &SplitTensors,
    kind: &TaskKind,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<Predictions, PredictError> {
    if matches!(kind, TaskKind::Span) {
        return Err(PredictError::Unsupported(
            "span extraction (SQuAD) is predicted per question: use `predict_answers`".into(),
        ));
    }
    let cfg = BatchConfig::evaluation(batch_size, pad_id);
    let batcher = Batcher::new(split, kind, cfg)?;
    let total = batcher.num_units();
    let regression = matches!(model.spec.head, TaskHeadSpec::Regression { .. });
    let model = model.valid();
    let mut logits = Vec::with_capacity(total);
    progress(0, total);
    for batch in batcher.epoch(0) {
        let input = lpeft_train::to_input(&batch, device);
        let HeadOutput::Logits(out) = model.forward(&input).head else {
            return Err(PredictError::Unsupported(
                "a span head gives no per-example predictions".into(),
            ));
        };
        let [_, width] = out.dims();
        let values = out
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| PredictError::Unsupported(format!("reading logits: {e:?}")))?;
        logits.extend(values.chunks(width.max(1)).map(<[f32]>::to_vec));
        progress(logits.len(), total);
    }
    let predicted = if regression {
        Predicted::Score(logits.iter().map(|r| r[0]).collect())
    } else {
        Predicted::Class(logits.iter().map(|r| argmax(r)).collect())
    };
    Ok(Predictions { predicted, logits })
}

/// The answers of a span task (SQuAD), one per question.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    /// Per question, in the input's order.
    pub decoded: Vec<SpanPrediction>,
    /// The official predictions file's content: question id → answer.
    pub official: SquadPredictions,
    /// Exact match and F1 against the input's answers, when it has them.
    pub evaluation: Option<Evaluation>,
}

/// Runs a span model over the windows of `split` in batches of `batch_size` windows (as the
/// fine-tune's dev evaluation batches them) and decodes every question's answer from its
/// windows' start and end logits exactly as the fine-tune scores dev: HF's n-best search
/// (`SpanDecoding::HF_DEFAULTS`), the best over the question's windows, cut from the context
/// through the tokens' byte offsets. Scored when `split` has answers.
#[allow(clippy::too_many_arguments)]
pub fn predict_answers(
    model: &Model,
    task: &TaskSpec,
    split: &SplitTensors,
    texts: Option<&Texts>,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<Answers, PredictError> {
    let Some(Texts::Span(texts)) = texts else {
        return Err(PredictError::Unsupported(format!(
            "{}: span predictions need the input's contexts and questions (a SQuAD file)",
            task.name
        )));
    };
    let cfg = BatchConfig::evaluation(batch_size, pad_id);
    let batcher = Batcher::new(split, &task.kind, cfg)?;
    let total = batcher.num_units();
    let model = model.valid();
    let (mut starts, mut ends) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let read = |t: burn::tensor::Tensor<2>| -> Result<(usize, Vec<f32>), PredictError> {
        let [_, width] = t.dims();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| PredictError::Unsupported(format!("reading span logits: {e:?}")))?;
        Ok((width.max(1), values))
    };
    progress(0, total);
    for batch in batcher.epoch(0) {
        let input = lpeft_train::to_input(&batch, device);
        let HeadOutput::Span { start, end } = model.forward(&input).head else {
            return Err(PredictError::Unsupported(format!(
                "{}: the model has no span head",
                task.name
            )));
        };
        let (w, s) = read(start)?;
        let (_, e) = read(end)?;
        starts.extend(s.chunks(w).map(<[f32]>::to_vec));
        ends.extend(e.chunks(w).map(<[f32]>::to_vec));
        progress(starts.len(), total);
    }
    let decoded = decode_split(split, texts, &starts, &ends)?;
    let evaluation = match split.labels {
        Labels::None => None,
        _ => {
            let (predicted, gold) = span_answers(texts, &decoded);
            Some(evaluate_task(
                task,
                &Outputs::Answers {
                    predicted: &predicted,
                    gold: &gold,
                },
            )?)
        }
    };
    Ok(Answers {
        official: official_predictions(texts, &decoded),
        decoded,
        evaluation,
    })
}

/// The task's metrics of `predictions` against the labels of `split`, computed as the
/// fine-tune's dev evaluation computes them (ReCoRD from the logits and the split's `texts`);
/// `None` for an unlabeled split.
pub fn score(
    task: &TaskSpec,
    split: &SplitTensors,
    texts: Option<&Texts>,
    predictions: &Predictions,
) -> Result<Option<Evaluation>, PredictError> {
    if matches!(split.labels, Labels::None) {
        return Ok(None);
    }
    // As the fine-tune's `score`: ReCoRD is chosen from the logits, whatever the predictions.
    if let Some(Texts::Record(texts)) = texts {
        let e = lpeft_eval::evaluate_record(task, &predictions.logits, &split.group_ids, texts);
        return Ok(Some(e?));
    }
    let e = match (&task.kind, &predictions.predicted, &split.labels) {
        (TaskKind::MultipleChoice { .. }, Predicted::Class(p), Labels::Class(y)) => evaluate_task(
            task,
            &Outputs::Choices {
                predicted: p,
                labels: y,
            },
        ),
        (_, Predicted::Class(p), Labels::Class(y)) => evaluate_task(
            task,
            &Outputs::Classes {
                predicted: p,
                labels: y,
                groups: Some(&split.group_ids),
            },
        ),
        (_, Predicted::Score(p), Labels::Float(y)) => {
            let p: Vec<f64> = p.iter().map(|v| f64::from(*v)).collect();
            let y: Vec<f64> = y.iter().map(|v| f64::from(*v)).collect();
            evaluate_task(
                task,
                &Outputs::Scores {
                    predicted: &p,
                    labels: &y,
                },
            )
        }
        _ => {
            return Err(PredictError::Unsupported(format!(
                "{}: the labels of the input do not fit the model's predictions",
                task.name
            )));
        }
    };
    Ok(Some(e?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_first_class() {
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 0, "as the trainer's evaluation");
    }
}
