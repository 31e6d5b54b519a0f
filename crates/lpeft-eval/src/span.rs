//! Span decoding: start/end logits of a question's context windows → the answer text, as
//! Hugging Face's `postprocess_qa_predictions` (SQuAD v1.1, no null answer) does it.
//!
//! Per window, the `n_best` highest start logits × the `n_best` highest end logits are
//! candidates; a candidate is kept when both tokens lie in the window's context, end ≥ start
//! and it spans at most `max_answer_length` tokens. Its score is start logit + end logit; the
//! best over all windows of the question wins, and its text is the context between the start
//! token's first byte and the end token's last. Ties go to the earlier window, then the
//! higher-ranked start, then end (HF's order up to numpy's unstable argsort). A question with
//! no valid candidate is answered with the empty string (HF writes the word `empty`).

use lpeft_artifacts::dataset::SplitTensors;
use lpeft_schema::dataset::SpanTexts;

use crate::EvalError;
use crate::squad::SquadPredictions;

/// `token_spans` entry of a token outside the context (question, special tokens), as the
/// data stage writes it.
pub const NOT_CONTEXT: u32 = u32::MAX;

/// How candidates are searched; `HF_DEFAULTS` are `run_qa.py`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanDecoding {
    /// Starts and ends tried per window (the top `n_best` of each).
    pub n_best: usize,
    /// Longest answer, in tokens.
    pub max_answer_length: usize,
}

impl SpanDecoding {
    pub const HF_DEFAULTS: SpanDecoding = SpanDecoding {
        n_best: 20,
        max_answer_length: 30,
    };
}

/// One context window (one encoder row) and what the model said about it.
#[derive(Debug, Clone, Copy)]
pub struct WindowLogits<'a> {
    /// The question (group id), indexing `SpanTexts::questions`.
    pub question: usize,
    /// One logit per token of the window; entries past its tokens (batch padding) are ignored.
    pub start_logits: &'a [f32],
    pub end_logits: &'a [f32],
    /// `[tokens, 2]` flattened: byte range of each token in the context, [`NOT_CONTEXT`] for
    /// tokens outside it.
    pub token_spans: &'a [u32],
}

/// The decoded answer of one question.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanPrediction {
    pub text: String,
    /// Start logit + end logit of the chosen span; `None` without a valid candidate.
    pub score: Option<f32>,
    /// Byte range of the answer in its context.
    pub bytes: Option<(usize, usize)>,
}

/// Positions of `logits` sorted by decreasing value (ties: lower position first), at most `k`.
fn top_positions(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn context_range(token_spans: &[u32], token: usize) -> Option<(usize, usize)> {
    let (s, e) = (token_spans[2 * token], token_spans[2 * token + 1]);
    (s != NOT_CONTEXT && e != NOT_CONTEXT).then_some((s as usize, e as usize))
}

/// The best span of one window: (score, start byte, end byte).
fn best_in_window(w: &WindowLogits<'_>, cfg: &SpanDecoding) -> Option<(f32, usize, usize)> {
    let tokens = w.token_spans.len() / 2;
    let starts = top_positions(&w.start_logits[..tokens], cfg.n_best);
    let ends = top_positions(&w.end_logits[..tokens], cfg.n_best);
    let mut best: Option<(f32, usize, usize)> = None;
    for &s in &starts {
        let Some((start_byte, _)) = context_range(w.token_spans, s) else {
            continue;
        };
        for &e in &ends {
            if e < s || e - s + 1 > cfg.max_answer_length {
                continue;
            }
            let Some((_, end_byte)) = context_range(w.token_spans, e) else {
                continue;
            };
            let score = w.start_logits[s] + w.end_logits[e];
            if best.is_none_or(|(b, _, _)| score > b) {
                best = Some((score, start_byte, end_byte));
            }
        }
    }
    best
}

/// One prediction per question of `texts`, in question order.
pub fn decode_spans(
    texts: &SpanTexts,
    windows: &[WindowLogits<'_>],
    cfg: &SpanDecoding,
) -> Result<Vec<SpanPrediction>, EvalError> {
    let mut best: Vec<Option<(f32, usize, usize)>> = vec![None; texts.questions.len()];
    for (row, w) in windows.iter().enumerate() {
        let tokens = w.token_spans.len() / 2;
        if w.token_spans.len() % 2 != 0
            || w.start_logits.len() < tokens
            || w.end_logits.len() < tokens
        {
            return Err(EvalError::Inconsistent(format!(
                "window {row}: {} token-span entries (two per token) but {} start and {} end logits",
                w.token_spans.len(),
                w.start_logits.len(),
                w.end_logits.len()
            )));
        }
        let slot = best.get_mut(w.question).ok_or_else(|| {
            EvalError::Inconsistent(format!(
                "window {row}: question {} but only {} questions in the texts",
                w.question,
                texts.questions.len()
            ))
        })?;
        if let Some(candidate) = best_in_window(w, cfg)
            && slot.is_none_or(|(b, _, _)| candidate.0 > b)
        {
            *slot = Some(candidate);
        }
    }
    texts
        .questions
        .iter()
        .zip(best)
        .map(|(q, best)| {
            let Some((score, start, end)) = best else {
                return Ok(SpanPrediction {
                    text: String::new(),
                    score: None,
                    bytes: None,
                });
            };
            let context = texts.contexts.get(q.context).ok_or_else(|| {
                EvalError::Inconsistent(format!(
                    "question {}: context {} but only {} contexts",
                    q.id,
                    q.context,
                    texts.contexts.len()
                ))
            })?;
            let text = context.get(start..end).ok_or_else(|| {
                EvalError::Inconsistent(format!(
                    "question {}: answer bytes {start}..{end} are not a slice of its context ({} bytes)",
                    q.id,
                    context.len()
                ))
            })?;
            Ok(SpanPrediction {
                text: text.to_owned(),
                score: Some(score),
                bytes: Some((start, end)),
            })
        })
        .collect()
}

/// Predicted texts and gold answer texts per question, ready for
/// [`Outputs::Answers`](crate::Outputs::Answers).
pub fn span_answers(
    texts: &SpanTexts,
    predictions: &[SpanPrediction],
) -> (Vec<String>, Vec<Vec<String>>) {
    let predicted = predictions.iter().map(|p| p.text.clone()).collect();
    let gold = texts
        .questions
        .iter()
        .map(|q| q.answers.iter().map(|a| a.text.clone()).collect())
        .collect();
    (predicted, gold)
}

/// The official `predictions.json` content: question id → predicted text.
pub fn official_predictions(texts: &SpanTexts, predictions: &[SpanPrediction]) -> SquadPredictions {
    texts
        .questions
        .iter()
        .zip(predictions)
        .map(|(q, p)| (q.id.clone(), p.text.clone()))
        .collect()
}

/// The best answer per question of a span split (a dataset artifact's windows: rows grouped by
/// question, token spans into the contexts), from its rows' logits, with HF's n-best search
/// (`SpanDecoding::HF_DEFAULTS`: 20 candidates, answers of at most 30 tokens). The fine-tune's
/// dev evaluation and `lpeft predict` both decode through it.
pub fn decode_split(
    split: &SplitTensors,
    texts: &SpanTexts,
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
) -> Result<Vec<SpanPrediction>, EvalError> {
    let rows = split.num_rows();
    let spans = split.token_spans.as_deref().unwrap_or_default();
    if start_logits.len() != rows
        || end_logits.len() != rows
        || spans.len() != 2 * split.input_ids.len()
    {
        return Err(EvalError::Inconsistent(format!(
            "span split: {rows} rows and {} token-span entries for {} tokens, but logits for {} and {} rows",
            spans.len(),
            split.input_ids.len(),
            start_logits.len(),
            end_logits.len()
        )));
    }
    let windows: Vec<WindowLogits<'_>> = (0..rows)
        .map(|r| {
            let tokens = split.row(r);
            WindowLogits {
                question: split.group_ids[r] as usize,
                start_logits: &start_logits[r],
                end_logits: &end_logits[r],
                token_spans: &spans[2 * tokens.start..2 * tokens.end],
            }
        })
        .collect();
    decode_spans(texts, &windows, &SpanDecoding::HF_DEFAULTS)
}
