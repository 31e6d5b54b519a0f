//! The official SQuAD v1.1 evaluation (`evaluate-v1.1.py`) on files in the official formats:
//! a dataset file (`{"version": "1.1", "data": [{"paragraphs": [{"qas": [{"id", "answers":
//! [{"text"}]}]}]}]}`) and a predictions file (`{"<question id>": "<answer text>"}`).
//!
//! Unlike the rest of this crate, [`SquadScores`] holds percentages, as the official script
//! prints them (`{"exact_match": 81.2, "f1": 88.4}`), so the two can be compared verbatim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::metrics::{answer_exact_match, answer_f1};

/// One question of a dataset file and the texts of its gold answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldQuestion {
    pub id: String,
    pub answers: Vec<String>,
}

/// Question id → predicted answer text, the official predictions format.
pub type SquadPredictions = BTreeMap<String, String>;

/// The official script's figures, plus what it only prints to stderr.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SquadScores {
    /// Percentage of questions whose prediction matches a gold answer after normalisation.
    pub exact_match: f64,
    /// Percentage: mean over questions of the best token F1 against any gold answer.
    pub f1: f64,
    /// Questions in the dataset file (the denominator, unanswered ones included).
    pub total: usize,
    /// Ids of the questions without a prediction (each scores 0).
    pub unanswered: Vec<String>,
    /// Per question in file order: exact match (0 or 1) and F1 in [0, 1].
    pub questions: Vec<QuestionScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuestionScore {
    pub id: String,
    pub exact_match: f64,
    pub f1: f64,
}

#[derive(Deserialize)]
struct DatasetFile {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    answers: Vec<GoldAnswer>,
}

#[derive(Deserialize)]
struct GoldAnswer {
    text: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    // serde_json's message names the field and the line and column.
    serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("not a SQuAD {what}: {e}")))
}

fn bad(file: &Path, message: String) -> EvalError {
    EvalError::Bad {
        file: PathBuf::from(file),
        message,
    }
}

/// The questions of a SQuAD v1.1 dataset file, in file order. A question without gold
/// answers is refused: the official script fails on it (`max()` of nothing).
pub fn read_gold(path: &Path) -> Result<Vec<GoldQuestion>, EvalError> {
    let file: DatasetFile = read_json(path, "dataset file")?;
    let mut questions = Vec::new();
    for qa in file
        .data
        .into_iter()
        .flat_map(|a| a.paragraphs)
        .flat_map(|p| p.qas)
    {
        if qa.answers.is_empty() {
            return Err(bad(
                path,
                format!(
                    "question {}: no gold answers (field `answers` is empty)",
                    qa.id
                ),
            ));
        }
        questions.push(GoldQuestion {
            id: qa.id,
            answers: qa.answers.into_iter().map(|a| a.text).collect(),
        });
    }
    Ok(questions)
}

/// A predictions file: one JSON object of question id → answer string.
pub fn read_predictions(path: &Path) -> Result<SquadPredictions, EvalError> {
    read_json(
        path,
        "predictions file (an object of question id to answer string)",
    )
}

/// Writes `predictions` in the official format (keys sorted, so the bytes are reproducible).
pub fn write_predictions(path: &Path, predictions: &SquadPredictions) -> Result<(), EvalError> {
    let text = serde_json::to_string_pretty(predictions)
        .map_err(|e| EvalError::Inconsistent(format!("predictions as JSON: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|source| EvalError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// The official evaluation: every question of `gold` counts; one without a prediction scores
/// 0 (and is listed); predictions for ids not in `gold` are ignored.
pub fn evaluate_squad(
    gold: &[GoldQuestion],
    predictions: &SquadPredictions,
) -> Result<SquadScores, EvalError> {
    if gold.is_empty() {
        return Err(EvalError::Empty {
            what: "SQuAD dataset (no questions)",
        });
    }
    let mut questions = Vec::with_capacity(gold.len());
    let mut unanswered = Vec::new();
    for q in gold {
        let (exact_match, f1) = match predictions.get(&q.id) {
            Some(p) => (
                best_over_gold(p, &q.answers, answer_exact_match),
                best_over_gold(p, &q.answers, answer_f1),
            ),
            None => {
                unanswered.push(q.id.clone());
                (0.0, 0.0)
            }
        };
        questions.push(QuestionScore {
            id: q.id.clone(),
            exact_match,
            f1,
        });
    }
    let total = questions.len();
    let percent = |sum: f64| 100.0 * sum / total as f64;
    Ok(SquadScores {
        exact_match: percent(questions.iter().map(|q| q.exact_match).sum()),
        f1: percent(questions.iter().map(|q| q.f1).sum()),
        total,
        unanswered,
        questions,
    })
}

fn best_over_gold(predicted: &str, gold: &[String], score: fn(&str, &str) -> f64) -> f64 {
    gold.iter().map(|g| score(predicted, g)).fold(0.0, f64::max)
}

/// [`evaluate_squad`] on a dataset file and a predictions file.
pub fn evaluate_squad_files(dataset: &Path, predictions: &Path) -> Result<SquadScores, EvalError> {
    evaluate_squad(&read_gold(dataset)?, &read_predictions(predictions)?)
}
