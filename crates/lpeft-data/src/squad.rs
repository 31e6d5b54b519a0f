//! SQuAD v1.1 reader: `{"version": "1.1", "data": [{"title", "paragraphs": [{"context",
//! "qas": [{"id", "question", "answers": [{"answer_start", "text"}]}]}]}]}`.
//!
//! Answer starts are character offsets in the official files; they are turned into byte
//! offsets here, since token offsets are byte offsets (see `lpeft-tokenizer`).

use std::path::Path;

use lpeft_schema::dataset::SpanAnswer;
use serde::Deserialize;

use crate::error::DataError;
use crate::example::{Example, Inputs, Label};

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    answer_start: usize,
    text: String,
}

/// Read a SQuAD v1.1 file: one example per question, contexts kept once per paragraph.
pub fn read_squad(path: &Path) -> Result<(Vec<Example>, Vec<String>), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let file: File = serde_json::from_slice(&bytes).map_err(|e| DataError::BadJson {
        path: path.to_owned(),
        line: e.line() as u64,
        message: e.to_string(),
    })?;
    let mut examples = Vec::new();
    let mut contexts = Vec::new();
    for article in file.data {
        for paragraph in article.paragraphs {
            let context_index = contexts.len();
            // Character index -> byte index, with one past the end.
            let char_starts: Vec<usize> = paragraph
                .context
                .char_indices()
                .map(|(b, _)| b)
                .chain(std::iter::once(paragraph.context.len()))
                .collect();
            for qa in paragraph.qas {
                let mut answers = Vec::with_capacity(qa.answers.len());
                for a in qa.answers {
                    let Some(&byte_start) = char_starts.get(a.answer_start) else {
                        return Err(DataError::BadValue {
                            path: path.to_owned(),
                            line: line_of(&bytes, &qa.id),
                            field: format!("answer_start of question {}", qa.id),
                            value: a.answer_start.to_string(),
                            expected: format!(
                                "a character offset inside the context ({} characters)",
                                char_starts.len() - 1
                            ),
                        });
                    };
                    answers.push(SpanAnswer {
                        text: a.text,
                        byte_start,
                    });
                }
                let label = if answers.is_empty() {
                    Label::None
                } else {
                    // The span target is built at tokenization time from the first answer.
                    Label::Class(0)
                };
                examples.push(Example {
                    source_row: examples.len() as u32,
                    inputs: Inputs::Span {
                        id: qa.id,
                        question: qa.question,
                        context: context_index,
                        answers,
                    },
                    label,
                    record: None,
                });
            }
            contexts.push(paragraph.context);
        }
    }
    Ok((examples, contexts))
}

/// 1-based line of the first occurrence of `"id": "<id>"` in the file (for error messages).
fn line_of(bytes: &[u8], id: &str) -> u64 {
    let needle = format!("\"{id}\"");
    let text = String::from_utf8_lossy(bytes);
    text.find(&needle)
        .map_or(0, |pos| text[..pos].matches('\n').count() as u64 + 1)
}

/// Start and end token positions (inclusive) of the answer at `byte_start..byte_start+len` in
/// a window, or `None` when the window does not contain the whole answer.
pub fn span_positions(
    sequence_ids: &[Option<u8>],
    offsets: &[(usize, usize)],
    byte_start: usize,
    byte_end: usize,
) -> Option<(usize, usize)> {
    let ctx: Vec<usize> = (0..sequence_ids.len())
        .filter(|&i| sequence_ids[i] == Some(1))
        .collect();
    let (&first, &last) = (ctx.first()?, ctx.last()?);
    if offsets[first].0 > byte_start || offsets[last].1 < byte_end {
        return None;
    }
    let start = ctx
        .iter()
        .copied()
        .rev()
        .find(|&i| offsets[i].0 <= byte_start)?;
    let end = ctx.iter().copied().find(|&i| offsets[i].1 >= byte_end)?;
    Some((start, end.max(start)))
}
