//! One call that scores a task's dev predictions: [`evaluate_task`] (or [`evaluate`] with an
//! explicit metric list), dispatching on the registry's [`Metric`] and [`MainScore`].

use std::collections::BTreeMap;

use lpeft_schema::dataset::{MainScore, Metric, RecordTexts, TaskSpec};

use crate::EvalError;
use crate::metrics;

/// What a model predicted, with the gold labels, in the form its task needs.
#[derive(Debug, Clone, Copy)]
pub enum Outputs<'a> {
    /// One class id per encoder row (classification; MultiRC answer options; ReCoRD candidate
    /// rows). `groups` holds the row's question id (`group_ids`) and is needed only for
    /// MultiRC's per-question exact match.
    Classes {
        predicted: &'a [i64],
        labels: &'a [i64],
        groups: Option<&'a [u32]>,
    },
    /// One value per row (regression, e.g. STS-B).
    Scores {
        predicted: &'a [f64],
        labels: &'a [f64],
    },
    /// Multiple choice: per group the index of the chosen and of the right choice (COPA).
    Choices {
        predicted: &'a [i64],
        labels: &'a [i64],
    },
    /// Per question the predicted answer text and the gold answer texts (SQuAD: the text of
    /// the predicted span; ReCoRD: the chosen candidate entity).
    Answers {
        predicted: &'a [String],
        gold: &'a [Vec<String>],
    },
}

impl Outputs<'_> {
    fn form(&self) -> &'static str {
        match self {
            Outputs::Classes { .. } => "class",
            Outputs::Scores { .. } => "score",
            Outputs::Choices { .. } => "choice",
            Outputs::Answers { .. } => "answer-text",
        }
    }
}

/// Scores of one evaluation: every requested metric by its snake_case name, and the main
/// score that selects the best epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub metrics: BTreeMap<String, f64>,
    pub main_score: f64,
}

/// The snake_case name of a metric, as in `result.json` (`matthews`, `macro_f1`, ...).
pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Accuracy => "accuracy",
        Metric::F1 => "f1",
        Metric::Matthews => "matthews",
        Metric::Pearson => "pearson",
        Metric::Spearman => "spearman",
        Metric::MacroF1 => "macro_f1",
        Metric::F1a => "f1a",
        Metric::ExactMatch => "exact_match",
        Metric::SquadF1 => "squad_f1",
    }
}

/// One metric on one set of outputs.
pub fn score(metric: Metric, outputs: &Outputs<'_>) -> Result<f64, EvalError> {
    let not_applicable = || EvalError::NotApplicable {
        metric: metric_name(metric),
        outputs: outputs.form(),
    };
    match (metric, outputs) {
        (
            Metric::Accuracy,
            Outputs::Classes {
                predicted, labels, ..
            }
            | Outputs::Choices { predicted, labels },
        ) => metrics::accuracy(predicted, labels),
        (
            Metric::F1 | Metric::F1a,
            Outputs::Classes {
                predicted, labels, ..
            },
        ) => metrics::binary_f1(predicted, labels),
        (
            Metric::Matthews,
            Outputs::Classes {
                predicted, labels, ..
            },
        ) => metrics::matthews(predicted, labels),
        (
            Metric::MacroF1,
            Outputs::Classes {
                predicted, labels, ..
            },
        ) => metrics::macro_f1(predicted, labels),
        (Metric::Pearson, Outputs::Scores { predicted, labels }) => {
            metrics::pearson(predicted, labels)
        }
        (Metric::Spearman, Outputs::Scores { predicted, labels }) => {
            metrics::spearman(predicted, labels)
        }
        (
            Metric::ExactMatch,
            Outputs::Classes {
                predicted,
                labels,
                groups,
            },
        ) => {
            let groups = groups.ok_or(EvalError::MissingGroups {
                metric: "exact_match",
            })?;
            metrics::group_exact_match(predicted, labels, groups)
        }
        (Metric::ExactMatch, Outputs::Answers { predicted, gold }) => {
            metrics::squad_exact_match(predicted, gold)
        }
        (Metric::SquadF1, Outputs::Answers { predicted, gold }) => {
            metrics::squad_f1(predicted, gold)
        }
        _ => Err(not_applicable()),
    }
}

/// Computes `metrics` and the main score. A metric the main score names but `metrics` omits
/// is computed too and reported.
pub fn evaluate(
    metrics: &[Metric],
    main: &MainScore,
    outputs: &Outputs<'_>,
) -> Result<Evaluation, EvalError> {
    let mut scores = BTreeMap::new();
    let main_parts: &[Metric] = match main {
        MainScore::Metric(m) => std::slice::from_ref(m),
        MainScore::Mean(ms) => ms,
    };
    for &m in metrics.iter().chain(main_parts) {
        if !scores.contains_key(metric_name(m)) {
            scores.insert(metric_name(m).to_owned(), score(m, outputs)?);
        }
    }
    if main_parts.is_empty() {
        return Err(EvalError::Empty {
            what: "main score (an empty mean)",
        });
    }
    let main_score = main_parts
        .iter()
        .map(|&m| scores[metric_name(m)])
        .sum::<f64>()
        / main_parts.len() as f64;
    Ok(Evaluation {
        metrics: scores,
        main_score,
    })
}

/// [`evaluate`] with the task's own metrics and main score.
pub fn evaluate_task(task: &TaskSpec, outputs: &Outputs<'_>) -> Result<Evaluation, EvalError> {
    evaluate(&task.metrics, &task.main_score, outputs)
}

/// Per group, in increasing group id, the group id and the position within the group (row
/// order) of its highest-scoring row; ties go to the first row. For COPA-style choices and
/// ReCoRD candidates scored one row each.
pub fn argmax_per_group(scores: &[f64], groups: &[u32]) -> Result<Vec<(u32, usize)>, EvalError> {
    if scores.len() != groups.len() {
        return Err(EvalError::LengthMismatch {
            what: "argmax_per_group",
            left: scores.len(),
            right: groups.len(),
        });
    }
    // group → (rows seen, best position, best score)
    let mut best: BTreeMap<u32, (usize, usize, f64)> = BTreeMap::new();
    for (&s, &g) in scores.iter().zip(groups) {
        let e = best.entry(g).or_insert((0, 0, f64::NEG_INFINITY));
        if s > e.2 {
            e.1 = e.0;
            e.2 = s;
        }
        e.0 += 1;
    }
    Ok(best.into_iter().map(|(g, (_, pos, _))| (g, pos)).collect())
}

/// ReCoRD: the chosen entity text per query (highest-scoring candidate row) and the gold
/// answers, ready for [`Outputs::Answers`]. `groups` are the rows' query ids, indexing
/// `texts.queries`; a query's rows list its entities in order.
pub fn record_answers(
    scores: &[f64],
    groups: &[u32],
    texts: &RecordTexts,
) -> Result<(Vec<String>, Vec<Vec<String>>), EvalError> {
    let mut predicted = Vec::new();
    let mut gold = Vec::new();
    for (g, pos) in argmax_per_group(scores, groups)? {
        let q = texts.queries.get(g as usize).ok_or_else(|| {
            EvalError::Inconsistent(format!(
                "ReCoRD: group {g} but only {} queries in the texts",
                texts.queries.len()
            ))
        })?;
        let entity = q.entities.get(pos).ok_or_else(|| {
            EvalError::Inconsistent(format!(
                "ReCoRD query {}: candidate row {pos} but {} entities",
                q.id,
                q.entities.len()
            ))
        })?;
        predicted.push(entity.clone());
        gold.push(q.answers.clone());
    }
    Ok((predicted, gold))
}

/// ReCoRD's evaluation from the head's two logits per candidate row (`[False, True]`): each
/// query's candidate with the largest True-over-False margin is its answer, scored by the
/// task's metrics (max-over-gold exact match and F1). `groups`: the rows' query ids.
pub fn evaluate_record(
    task: &TaskSpec,
    logits: &[Vec<f32>],
    groups: &[u32],
    texts: &RecordTexts,
) -> Result<Evaluation, EvalError> {
    if logits.len() != groups.len() {
        return Err(EvalError::Inconsistent(format!(
            "task {}: {} candidate scores for {} rows",
            task.name,
            logits.len(),
            groups.len()
        )));
    }
    let scores = logits
        .iter()
        .map(|l| match l.as_slice() {
            [no, yes] => Ok(f64::from(*yes) - f64::from(*no)),
            _ => Err(EvalError::Inconsistent(format!(
                "task {}: a candidate row has {} logits, ReCoRD needs 2",
                task.name,
                l.len()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (predicted, gold) = record_answers(&scores, groups, texts)?;
    evaluate_task(
        task,
        &Outputs::Answers {
            predicted: &predicted,
            gold: &gold,
        },
    )
}
