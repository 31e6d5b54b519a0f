//! Tokenization of a split into flat arrays (the in-memory form of `<split>.safetensors`).

use lpeft_schema::dataset::{RecordTexts, SpanQuestion, SpanTexts};
use lpeft_tokenizer::{Tokenizer, WindowConfig};
use rayon::prelude::*;

use crate::error::DataError;
use crate::example::{Inputs, Label, RawSplit};

pub use lpeft_artifacts::dataset::{Labels, SplitTensors, Texts};

/// Tokenization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeConfig {
    pub max_length: usize,
    /// Span tasks only.
    pub doc_stride: usize,
    /// Span tasks only.
    pub max_query_length: usize,
}

/// Examples tokenized between two progress reports of [`encode_split_with`].
pub const PROGRESS_CHUNK: usize = 4096;

pub fn encode_split(
    split: &RawSplit,
    tokenizer: &Tokenizer,
    cfg: EncodeConfig,
) -> Result<(SplitTensors, Option<Texts>), DataError> {
    encode_split_with(split, tokenizer, cfg, &|_| {})
}

/// [`encode_split`], calling `progress` with the number of examples tokenized so far after
/// every [`PROGRESS_CHUNK`] of them (each example is tokenized on its own, so the chunks change
/// nothing in the output).
pub fn encode_split_with(
    split: &RawSplit,
    tokenizer: &Tokenizer,
    cfg: EncodeConfig,
    progress: &dyn Fn(usize),
) -> Result<(SplitTensors, Option<Texts>), DataError> {
    let is_span = split
        .examples
        .first()
        .is_some_and(|e| matches!(e.inputs, Inputs::Span { .. }));
    if is_span {
        return encode_span(split, tokenizer, cfg, progress);
    }
    let mut pairs: Vec<(&str, Option<&str>)> = Vec::new();
    let mut group_ids = Vec::new();
    for (g, e) in split.examples.iter().enumerate() {
        let Inputs::Rows(rows) = &e.inputs else {
            return Err(DataError::Params("mixed span and row examples".to_owned()));
        };
        for (a, b) in rows {
            pairs.push((a, b.as_deref()));
            group_ids.push(g as u32);
        }
    }
    // Chunks of examples (an example's rows stay in one chunk), so progress counts examples.
    let mut encoded = Vec::with_capacity(pairs.len());
    let mut start = 0;
    for (i, chunk) in split.examples.chunks(PROGRESS_CHUNK).enumerate() {
        let rows: usize = chunk
            .iter()
            .map(|e| match &e.inputs {
                Inputs::Rows(r) => r.len(),
                Inputs::Span { .. } => 0,
            })
            .sum();
        encoded.extend(tokenizer.encode_batch(&pairs[start..start + rows], Some(cfg.max_length))?);
        start += rows;
        progress(i * PROGRESS_CHUNK + chunk.len());
    }
    let mut t = SplitTensors {
        input_ids: Vec::new(),
        type_ids: Vec::new(),
        offsets: Vec::with_capacity(encoded.len() + 1),
        group_ids,
        example_ids: split.examples.iter().map(|e| e.source_row).collect(),
        labels: Labels::None,
        token_spans: None,
        num_truncated: 0,
    };
    t.offsets.push(0);
    for e in &encoded {
        t.input_ids.extend_from_slice(&e.ids);
        t.type_ids.extend(e.type_ids.iter().map(|&x| x as u8));
        t.offsets.push(t.input_ids.len() as u64);
        t.num_truncated += e.truncated as usize;
    }
    if split.labeled() {
        let mut class = Vec::new();
        let mut float = Vec::new();
        for e in &split.examples {
            match &e.label {
                Label::Class(c) | Label::Choice(c) => class.push(*c),
                Label::PerRow(cs) => class.extend_from_slice(cs),
                Label::Float(f) => float.push(*f),
                Label::None => {
                    return Err(DataError::Params(format!(
                        "split {} mixes labeled and unlabeled examples (source row {})",
                        split.name, e.source_row
                    )));
                }
            }
        }
        t.labels = if float.is_empty() {
            Labels::Class(class)
        } else {
            Labels::Float(float)
        };
    }
    // ReCoRD: every example carries its entities and answers.
    let texts = if split.examples.iter().any(|e| e.record.is_some()) {
        let queries = split
            .examples
            .iter()
            .map(|e| e.record.clone())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                DataError::Params(format!("split {}: ReCoRD texts missing", split.name))
            })?;
        Some(Texts::Record(RecordTexts { queries }))
    } else {
        None
    };
    Ok((t, texts))
}

fn encode_span(
    split: &RawSplit,
    tokenizer: &Tokenizer,
    cfg: EncodeConfig,
    progress: &dyn Fn(usize),
) -> Result<(SplitTensors, Option<Texts>), DataError> {
    let wcfg = WindowConfig {
        max_len: cfg.max_length,
        stride: cfg.doc_stride,
        max_first_len: cfg.max_query_length,
    };
    let mut windows: Vec<Vec<lpeft_tokenizer::Encoded>> = Vec::with_capacity(split.examples.len());
    for (i, chunk) in split.examples.chunks(PROGRESS_CHUNK).enumerate() {
        let encoded: Vec<Vec<lpeft_tokenizer::Encoded>> = chunk
            .par_iter()
            .map(|e| match &e.inputs {
                Inputs::Span {
                    question, context, ..
                } => tokenizer
                    .encode_windows(question, &split.contexts[*context], wcfg)
                    .map_err(DataError::from),
                Inputs::Rows(_) => Err(DataError::Params("mixed span and row examples".to_owned())),
            })
            .collect::<Result<_, _>>()?;
        windows.extend(encoded);
        progress(i * PROGRESS_CHUNK + chunk.len());
    }
    let labeled = split.labeled();
    let mut t = SplitTensors {
        input_ids: Vec::new(),
        type_ids: Vec::new(),
        offsets: vec![0],
        group_ids: Vec::new(),
        example_ids: split.examples.iter().map(|e| e.source_row).collect(),
        labels: Labels::None,
        token_spans: Some(Vec::new()),
        num_truncated: 0,
    };
    let mut spans_out = Vec::new();
    let mut questions = Vec::with_capacity(split.examples.len());
    for (g, (e, ws)) in split.examples.iter().zip(&windows).enumerate() {
        let Inputs::Span {
            id,
            context,
            answers,
            ..
        } = &e.inputs
        else {
            unreachable!("checked while encoding");
        };
        questions.push(SpanQuestion {
            id: id.clone(),
            context: *context,
            answers: answers.clone(),
        });
        let token_spans = t.token_spans.as_mut().expect("span split");
        for w in ws {
            t.input_ids.extend_from_slice(&w.ids);
            t.type_ids.extend(w.type_ids.iter().map(|&x| x as u8));
            t.offsets.push(t.input_ids.len() as u64);
            t.group_ids.push(g as u32);
            t.num_truncated += w.truncated as usize;
            for (s, o) in w.sequence_ids.iter().zip(&w.offsets) {
                if *s == Some(1) {
                    token_spans.extend_from_slice(&[o.0 as u32, o.1 as u32]);
                } else {
                    token_spans.extend_from_slice(&[u32::MAX, u32::MAX]);
                }
            }
            if labeled {
                let pos = answers.first().and_then(|a| {
                    crate::squad::span_positions(
                        &w.sequence_ids,
                        &w.offsets,
                        a.byte_start,
                        a.byte_start + a.text.len(),
                    )
                });
                let (s, e) = pos.unwrap_or((0, 0));
                spans_out.extend_from_slice(&[s as i64, e as i64]);
            }
        }
    }
    if labeled {
        t.labels = Labels::Span(spans_out);
    }
    let texts = Texts::Span(SpanTexts {
        contexts: split.contexts.clone(),
        questions,
    });
    Ok((t, Some(texts)))
}
