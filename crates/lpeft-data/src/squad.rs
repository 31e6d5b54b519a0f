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
    let mut out = Collected::default();
    for article in file.data {
        for paragraph in article.paragraphs {
            out.paragraph(
                paragraph.context,
                paragraph.qas,
                |id| line_of(&bytes, id),
                path,
            )?;
        }
    }
    Ok((out.examples, out.contexts))
}

/// Rows of the hub's SQuAD parquet file (`id`, `title`, `context`, `question`,
/// `answers: {text: [..], answer_start: [..]}`), one per question; consecutive rows with the
/// same context share it.
pub(crate) fn from_hub_rows(
    rows: &[serde_json::Map<String, serde_json::Value>],
    path: &Path,
) -> Result<(Vec<Example>, Vec<String>), DataError> {
    let mut out = Collected::default();
    let mut pending: Option<(String, Vec<Qa>, u64)> = None;
    for (i, obj) in rows.iter().enumerate() {
        let loc = crate::superglue::Loc {
            path,
            line: i as u64 + 1,
        };
        let context = loc.str(obj, "context")?;
        let answers = loc.obj(obj, "answers")?;
        let texts = loc.arr(answers, "text")?;
        let starts = loc.arr(answers, "answer_start")?;
        let answers = texts
            .iter()
            .zip(starts)
            .map(|(t, s)| {
                Ok(Answer {
                    text: t
                        .as_str()
                        .ok_or_else(|| loc.missing("answers.text", "strings"))?
                        .to_owned(),
                    answer_start: s
                        .as_u64()
                        .ok_or_else(|| loc.missing("answers.answer_start", "integers"))?
                        as usize,
                })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        let qa = Qa {
            id: loc.str(obj, "id")?.to_owned(),
            question: loc.str(obj, "question")?.to_owned(),
            answers,
        };
        match &mut pending {
            Some((c, qas, _)) if c == context => qas.push(qa),
            _ => {
                if let Some((c, qas, line)) = pending.take() {
                    out.paragraph(c, qas, |_| line, path)?;
                }
                pending = Some((context.to_owned(), vec![qa], loc.line));
            }
        }
    }
    if let Some((c, qas, line)) = pending {
        out.paragraph(c, qas, |_| line, path)?;
    }
    Ok((out.examples, out.contexts))
}

#[derive(Default)]
struct Collected {
    examples: Vec<Example>,
    contexts: Vec<String>,
}

impl Collected {
    fn paragraph(
        &mut self,
        context: String,
        qas: Vec<Qa>,
        line_of: impl Fn(&str) -> u64,
        path: &Path,
    ) -> Result<(), DataError> {
        let context_index = self.contexts.len();
        // Character index -> byte index, with one past the end.
        let char_starts: Vec<usize> = context
            .char_indices()
            .map(|(b, _)| b)
            .chain(std::iter::once(context.len()))
            .collect();
        for qa in qas {
            let mut answers = Vec::with_capacity(qa.answers.len());
            for (i, a) in qa.answers.into_iter().enumerate() {
                let Some(&byte_start) = char_starts.get(a.answer_start) else {
                    return Err(DataError::BadValue {
                        path: path.to_owned(),
                        line: line_of(&qa.id),
                        field: format!("answer_start of question {}", qa.id),
                        value: a.answer_start.to_string(),
                        expected: format!(
                            "a character offset inside the context ({} characters)",
                            char_starts.len() - 1
                        ),
                    });
                };
                // The span target and the scoring both trust the offset; a shifted one would
                // train on the wrong tokens without a word.
                if context.get(byte_start..byte_start + a.text.len()) != Some(a.text.as_str()) {
                    let found: String = context[byte_start..]
                        .chars()
                        .take(a.text.chars().count())
                        .collect();
                    return Err(DataError::BadValue {
                        path: path.to_owned(),
                        line: line_of(&qa.id),
                        field: format!("answers[{i}].answer_start of question {}", qa.id),
                        value: a.answer_start.to_string(),
                        expected: format!(
                            "the offset of the answer text {:?} in the context, which reads {found:?} there",
                            a.text
                        ),
                    });
                }
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
            self.examples.push(Example {
                source_row: self.examples.len() as u32,
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
        self.contexts.push(context);
        Ok(())
    }
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
