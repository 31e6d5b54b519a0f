//! SuperGLUE readers: `<Task>/{train,val,test}.jsonl`, one JSON object per line, turned into
//! encoder inputs as the reference code does (spec §1.4):
//!
//! - BoolQ: (question, passage); CB and RTE: (premise, hypothesis);
//! - WiC: one sentence, `"{s1} {s2} Does {word} have the same meaning in both sentences?"`;
//! - WSC: (`"{span2}: {text}"`, span1_text);
//! - COPA: multiple choice, (`"{premise} because"` or `"{premise} so"`, choice) per choice;
//! - MultiRC: one binary row (paragraph, `"{question} {answer}"`) per answer option, one
//!   example (group) per question;
//! - ReCoRD: one binary row (passage, query with `@placeholder` replaced by the entity) per
//!   distinct candidate entity, one example (group) per query. As in Hugging Face `datasets`,
//!   `@highlight\n` in passages becomes `- `.
//!
//! The same record conversion serves rows from the hub's parquet files ([`from_hub_row`]),
//! whose MultiRC and ReCoRD rows are already flattened.

use std::path::Path;

use lpeft_schema::dataset::RecordQuery;
use serde_json::{Map, Value};

use crate::error::DataError;
use crate::example::{Example, Inputs, Label};
use crate::glue::class_id;
use crate::registry::{Shape, TaskDef};

/// Where a record came from, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Loc<'a> {
    pub path: &'a Path,
    pub line: u64,
}

impl Loc<'_> {
    pub(crate) fn missing(&self, field: &str, expected: &str) -> DataError {
        DataError::MissingField {
            path: self.path.to_owned(),
            line: self.line,
            field: field.to_owned(),
            expected: expected.to_owned(),
        }
    }

    fn bad(&self, field: &str, value: &Value, expected: &str) -> DataError {
        let mut value = value.to_string();
        if value.len() > 80 {
            value.truncate(value.floor_char_boundary(77));
            value.push_str("...");
        }
        DataError::BadValue {
            path: self.path.to_owned(),
            line: self.line,
            field: field.to_owned(),
            value,
            expected: expected.to_owned(),
        }
    }

    pub(crate) fn str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        field: &str,
    ) -> Result<&'v str, DataError> {
        match obj.get(field) {
            None => Err(self.missing(field, "a string")),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.bad(field, v, "a string")),
        }
    }

    pub(crate) fn int(&self, obj: &Map<String, Value>, field: &str) -> Result<i64, DataError> {
        match obj.get(field) {
            None => Err(self.missing(field, "an integer")),
            Some(v) => v.as_i64().ok_or_else(|| self.bad(field, v, "an integer")),
        }
    }

    pub(crate) fn obj<'v>(
        &self,
        obj: &'v Map<String, Value>,
        field: &str,
    ) -> Result<&'v Map<String, Value>, DataError> {
        match obj.get(field) {
            None => Err(self.missing(field, "an object")),
            Some(Value::Object(o)) => Ok(o),
            Some(v) => Err(self.bad(field, v, "an object")),
        }
    }

    pub(crate) fn arr<'v>(
        &self,
        obj: &'v Map<String, Value>,
        field: &str,
    ) -> Result<&'v [Value], DataError> {
        match obj.get(field) {
            None => Err(self.missing(field, "an array")),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.bad(field, v, "an array")),
        }
    }

    fn as_obj<'v>(&self, v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, DataError> {
        v.as_object().ok_or_else(|| self.bad(what, v, "an object"))
    }
}

/// How labels are written: as in the official files (`true`, `"entailment"`, `1`), or as the
/// hub's class ids (`-1` for unlabeled test rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelStyle {
    Official,
    ClassId,
}

/// Read one SuperGLUE JSONL split file.
pub fn read_jsonl(task: &TaskDef, path: &Path) -> Result<Vec<Example>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let loc = Loc {
            path,
            line: i as u64 + 1,
        };
        let value: Value = serde_json::from_str(line).map_err(|e| DataError::BadJson {
            path: path.to_owned(),
            line: loc.line,
            message: e.to_string(),
        })?;
        let obj = loc.as_obj(&value, "line")?;
        from_official(task, obj, i as u32, loc, &mut examples)?;
    }
    Ok(examples)
}

/// The label field of a record, or `None` when absent (test files).
fn label_value(obj: &Map<String, Value>) -> Option<&Value> {
    obj.get("label").filter(|v| !v.is_null())
}

/// Raw label text of a JSON value: `true`, `entailment`, `1`.
fn raw(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn class_label(
    task: &TaskDef,
    obj: &Map<String, Value>,
    loc: Loc<'_>,
    style: LabelStyle,
) -> Result<Option<i64>, DataError> {
    let Some(v) = label_value(obj) else {
        return Ok(None);
    };
    match style {
        LabelStyle::Official => class_id(task, loc.path, loc.line, &raw(v)).map(Some),
        LabelStyle::ClassId => {
            let id = v
                .as_i64()
                .ok_or_else(|| loc.bad("label", v, "a class id"))?;
            if id == -1 {
                Ok(None)
            } else if (0..task.num_labels() as i64).contains(&id) {
                Ok(Some(id))
            } else {
                Err(DataError::UnknownLabel {
                    path: loc.path.to_owned(),
                    line: loc.line,
                    value: id.to_string(),
                    expected: format!("0..{} or -1", task.num_labels()),
                })
            }
        }
    }
}

/// The single-row tasks and COPA, whose official and hub records share field names.
fn flat_example(
    task: &TaskDef,
    obj: &Map<String, Value>,
    row: u32,
    loc: Loc<'_>,
    style: LabelStyle,
) -> Result<Example, DataError> {
    let s = |f: &str| loc.str(obj, f).map(str::to_owned);
    let label = class_label(task, obj, loc, style)?;
    let (inputs, label) = match task.name {
        "superglue/boolq" => (
            vec![(s("question")?, Some(s("passage")?))],
            label.map(Label::Class),
        ),
        "superglue/cb" | "superglue/rte" => (
            vec![(s("premise")?, Some(s("hypothesis")?))],
            label.map(Label::Class),
        ),
        "superglue/wic" => (
            vec![(
                format!(
                    "{} {} Does {} have the same meaning in both sentences?",
                    s("sentence1")?,
                    s("sentence2")?,
                    s("word")?
                ),
                None,
            )],
            label.map(Label::Class),
        ),
        "superglue/wsc" => {
            // Official files nest the spans under `target`; the hub's rows are flat.
            let spans = match obj.get("target") {
                Some(_) => loc.obj(obj, "target")?,
                None => obj,
            };
            let span1 = loc.str(spans, "span1_text")?;
            let span2 = loc.str(spans, "span2_text")?;
            (
                vec![(format!("{span2}: {}", s("text")?), Some(span1.to_owned()))],
                label.map(Label::Class),
            )
        }
        "superglue/copa" => {
            let word = match loc.str(obj, "question")? {
                "cause" => "because",
                "effect" => "so",
                _ => {
                    return Err(loc.bad("question", &obj["question"], "\"cause\" or \"effect\""));
                }
            };
            let first = format!("{} {word}", s("premise")?);
            (
                vec![
                    (first.clone(), Some(s("choice1")?)),
                    (first, Some(s("choice2")?)),
                ],
                label.map(Label::Choice),
            )
        }
        other => {
            return Err(DataError::Params(format!(
                "task {other} has no flat record reader"
            )));
        }
    };
    Ok(Example {
        source_row: row,
        inputs: Inputs::Rows(inputs),
        label: label.unwrap_or(Label::None),
        record: None,
    })
}

/// One line of an official JSONL file; MultiRC and ReCoRD lines give several examples.
fn from_official(
    task: &TaskDef,
    obj: &Map<String, Value>,
    row: u32,
    loc: Loc<'_>,
    out: &mut Vec<Example>,
) -> Result<(), DataError> {
    match task.shape {
        Shape::AnswerOptions => {
            let passage = loc.obj(obj, "passage")?;
            let paragraph = loc.str(passage, "text")?;
            for q in loc.arr(passage, "questions")? {
                let q = loc.as_obj(q, "questions[]")?;
                let question = loc.str(q, "question")?;
                let mut rows = Vec::new();
                let mut labels = Vec::new();
                for a in loc.arr(q, "answers")? {
                    let a = loc.as_obj(a, "answers[]")?;
                    rows.push((
                        paragraph.to_owned(),
                        Some(format!("{question} {}", loc.str(a, "text")?)),
                    ));
                    if let Some(l) = class_label(task, a, loc, LabelStyle::Official)? {
                        labels.push(l);
                    }
                }
                let label = if labels.is_empty() {
                    Label::None
                } else if labels.len() == rows.len() {
                    Label::PerRow(labels)
                } else {
                    return Err(
                        loc.missing("answers[].label", "a label on every answer or on none")
                    );
                };
                out.push(Example {
                    source_row: row,
                    inputs: Inputs::Rows(rows),
                    label,
                    record: None,
                });
            }
            Ok(())
        }
        Shape::Candidates => {
            let passage = loc.obj(obj, "passage")?;
            let text = loc.str(passage, "text")?;
            let chars: Vec<char> = text.chars().collect();
            let mut entities: Vec<String> = Vec::new();
            for e in loc.arr(passage, "entities")? {
                let e = loc.as_obj(e, "entities[]")?;
                let (start, end) = (loc.int(e, "start")?, loc.int(e, "end")?);
                // ReCoRD entity spans are inclusive character ranges.
                if start < 0 || end < start || end as usize >= chars.len() {
                    return Err(loc.bad(
                        "entities[]",
                        &Value::Object(e.clone()),
                        "an inclusive character span inside the passage",
                    ));
                }
                let entity: String = chars[start as usize..=end as usize].iter().collect();
                if !entities.contains(&entity) {
                    entities.push(entity);
                }
            }
            let passage_text = text.replace("@highlight\n", "- ");
            for qa in loc.arr(obj, "qas")? {
                let qa = loc.as_obj(qa, "qas[]")?;
                let query = loc.str(qa, "query")?;
                let answers = match qa.get("answers") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => loc
                        .arr(qa, "answers")?
                        .iter()
                        .map(|a| {
                            loc.as_obj(a, "answers[]")
                                .and_then(|a| loc.str(a, "text"))
                                .map(str::to_owned)
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                let id = qa.get("idx").map(raw).unwrap_or_default();
                out.push(record_example(
                    row,
                    &passage_text,
                    query,
                    &entities,
                    answers,
                    id,
                ));
            }
            Ok(())
        }
        _ => {
            out.push(flat_example(task, obj, row, loc, LabelStyle::Official)?);
            Ok(())
        }
    }
}

fn record_example(
    row: u32,
    passage: &str,
    query: &str,
    entities: &[String],
    answers: Vec<String>,
    id: String,
) -> Example {
    let rows = entities
        .iter()
        .map(|e| (passage.to_owned(), Some(query.replace("@placeholder", e))))
        .collect();
    let label = if answers.is_empty() {
        Label::None
    } else {
        Label::PerRow(
            entities
                .iter()
                .map(|e| answers.contains(e) as i64)
                .collect(),
        )
    };
    Example {
        source_row: row,
        inputs: Inputs::Rows(rows),
        label,
        record: Some(RecordQuery {
            id,
            entities: entities.to_vec(),
            answers,
        }),
    }
}

/// Turn the rows of a hub parquet file (as JSON objects) into examples. MultiRC rows (one per
/// answer option) are grouped back by (paragraph, question) index; ReCoRD rows are one per
/// query already.
pub(crate) fn from_hub_rows(
    task: &TaskDef,
    rows: &[Map<String, Value>],
    path: &Path,
) -> Result<Vec<Example>, DataError> {
    let mut out: Vec<Example> = Vec::new();
    let mut last_group: Option<(i64, i64)> = None;
    for (i, obj) in rows.iter().enumerate() {
        let loc = Loc {
            path,
            line: i as u64 + 1,
        };
        match task.shape {
            Shape::AnswerOptions => {
                let idx = loc.obj(obj, "idx")?;
                let group = (loc.int(idx, "paragraph")?, loc.int(idx, "question")?);
                let row = (
                    loc.str(obj, "paragraph")?.to_owned(),
                    Some(format!(
                        "{} {}",
                        loc.str(obj, "question")?,
                        loc.str(obj, "answer")?
                    )),
                );
                let label = class_label(task, obj, loc, LabelStyle::ClassId)?;
                if last_group != Some(group) {
                    last_group = Some(group);
                    out.push(Example {
                        source_row: i as u32,
                        inputs: Inputs::Rows(Vec::new()),
                        label: if label.is_some() {
                            Label::PerRow(Vec::new())
                        } else {
                            Label::None
                        },
                        record: None,
                    });
                }
                let e = out.last_mut().expect("pushed above");
                if let Inputs::Rows(rows) = &mut e.inputs {
                    rows.push(row);
                }
                match (&mut e.label, label) {
                    (Label::PerRow(ls), Some(l)) => ls.push(l),
                    (Label::None, None) => {}
                    _ => {
                        return Err(loc
                            .missing("label", "a label on every answer of a question or on none"));
                    }
                }
            }
            Shape::Candidates => {
                let passage = loc.str(obj, "passage")?.replace("@highlight\n", "- ");
                let mut entities: Vec<String> = Vec::new();
                for e in loc.arr(obj, "entities")? {
                    let e = e
                        .as_str()
                        .ok_or_else(|| loc.bad("entities[]", e, "a string"))?;
                    if !entities.iter().any(|x| x == e) {
                        entities.push(e.to_owned());
                    }
                }
                let answers = loc
                    .arr(obj, "answers")?
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| loc.bad("answers[]", a, "a string"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let id = obj.get("idx").map(raw).unwrap_or_default();
                out.push(record_example(
                    i as u32,
                    &passage,
                    loc.str(obj, "query")?,
                    &entities,
                    answers,
                    id,
                ));
            }
            _ => out.push(flat_example(task, obj, i as u32, loc, LabelStyle::ClassId)?),
        }
    }
    Ok(out)
}
