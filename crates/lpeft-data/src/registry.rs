//! The task registry: for every supported task its inputs, labels, metrics, main score, and
//! where its files are (local layout and hub layout).
//!
//! Label ids follow the Hugging Face `datasets` class-label order, so an artifact built from
//! the official files and one built from the hub's parquet files agree on ids.

use lpeft_schema::dataset::{MainScore, Metric, TaskKind, TaskSpec};

use crate::error::DataError;

/// Which benchmark (and so which file layout) a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// `<TASK>/{train,dev,test}.tsv`, as the GLUE download script writes them.
    Glue,
    /// `<Task>/{train,val,test}.jsonl`.
    SuperGlue,
    /// `{train,dev}-v1.1.json`.
    Squad,
}

/// Where a GLUE task's fields are in its TSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsvLayout {
    /// Columns found by header name; the label column is absent in test files.
    Header {
        first: &'static str,
        second: Option<&'static str>,
        label: &'static str,
    },
    /// CoLA train/dev: no header; columns source, label, original mark, sentence.
    /// (CoLA's test file has a header `index  sentence` and is read with [`COLA_TEST`].)
    ColaNoHeader,
}

pub const COLA_TEST: TsvLayout = TsvLayout::Header {
    first: "sentence",
    second: None,
    label: "label",
};

/// How examples are formed and labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One row per example, one class id.
    Classification,
    /// One row per example, one float.
    Regression,
    /// COPA: one row per choice, the label is the right choice.
    MultipleChoice { num_choices: u32 },
    /// MultiRC: one binary row per answer option, grouped by question.
    AnswerOptions,
    /// ReCoRD: one binary row per candidate entity, grouped by query.
    Candidates,
    /// SQuAD: context windows with start/end positions, grouped by question.
    Span,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy)]
pub struct TaskDef {
    /// `glue/sst2`, `superglue/boolq`, `squad/v1.1`.
    pub name: &'static str,
    pub benchmark: Benchmark,
    /// Directory of the task in the official layout (`SST-2`, `BoolQ`).
    pub dir: &'static str,
    /// Config name on the hub (`sst2`, `boolq`).
    pub hub_config: &'static str,
    /// Input field names (Hugging Face names, as in spec §1.4).
    pub inputs: &'static [&'static str],
    pub shape: Shape,
    /// Label values as the official files write them, in class-id order.
    pub raw_labels: &'static [&'static str],
    /// Class names, in class-id order (Hugging Face names).
    pub label_names: &'static [&'static str],
    pub metrics: &'static [Metric],
    pub main_score: Main,
    pub tsv: Option<TsvLayout>,
    /// Splits read when the config names none.
    pub default_splits: &'static [&'static str],
}

/// A `const`-friendly form of [`MainScore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    One(Metric),
    Mean(&'static [Metric]),
}

use Metric::*;

const TRAIN_DEV: &[&str] = &["train", "dev"];
const BINARY_01: &[&str] = &["0", "1"];
const BOOL: &[&str] = &["false", "true"];
const NLI2: &[&str] = &["entailment", "not_entailment"];

pub static TASKS: &[TaskDef] = &[
    TaskDef {
        name: "glue/cola",
        benchmark: Benchmark::Glue,
        dir: "CoLA",
        hub_config: "cola",
        inputs: &["sentence"],
        shape: Shape::Classification,
        raw_labels: BINARY_01,
        label_names: &["unacceptable", "acceptable"],
        metrics: &[Matthews],
        main_score: Main::One(Matthews),
        tsv: Some(TsvLayout::ColaNoHeader),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/sst2",
        benchmark: Benchmark::Glue,
        dir: "SST-2",
        hub_config: "sst2",
        inputs: &["sentence"],
        shape: Shape::Classification,
        raw_labels: BINARY_01,
        label_names: &["negative", "positive"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: Some(TsvLayout::Header {
            first: "sentence",
            second: None,
            label: "label",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/mrpc",
        benchmark: Benchmark::Glue,
        dir: "MRPC",
        hub_config: "mrpc",
        inputs: &["sentence1", "sentence2"],
        shape: Shape::Classification,
        raw_labels: BINARY_01,
        label_names: &["not_equivalent", "equivalent"],
        metrics: &[F1, Accuracy],
        main_score: Main::Mean(&[F1, Accuracy]),
        tsv: Some(TsvLayout::Header {
            first: "#1 String",
            second: Some("#2 String"),
            label: "Quality",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/qqp",
        benchmark: Benchmark::Glue,
        dir: "QQP",
        hub_config: "qqp",
        inputs: &["question1", "question2"],
        shape: Shape::Classification,
        raw_labels: BINARY_01,
        label_names: &["not_duplicate", "duplicate"],
        metrics: &[F1, Accuracy],
        main_score: Main::Mean(&[F1, Accuracy]),
        tsv: Some(TsvLayout::Header {
            first: "question1",
            second: Some("question2"),
            label: "is_duplicate",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/stsb",
        benchmark: Benchmark::Glue,
        dir: "STS-B",
        hub_config: "stsb",
        inputs: &["sentence1", "sentence2"],
        shape: Shape::Regression,
        raw_labels: &[],
        label_names: &[],
        metrics: &[Pearson, Spearman],
        main_score: Main::Mean(&[Pearson, Spearman]),
        tsv: Some(TsvLayout::Header {
            first: "sentence1",
            second: Some("sentence2"),
            label: "score",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/mnli",
        benchmark: Benchmark::Glue,
        dir: "MNLI",
        hub_config: "mnli",
        inputs: &["premise", "hypothesis"],
        shape: Shape::Classification,
        raw_labels: &["entailment", "neutral", "contradiction"],
        label_names: &["entailment", "neutral", "contradiction"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: Some(TsvLayout::Header {
            first: "sentence1",
            second: Some("sentence2"),
            label: "gold_label",
        }),
        default_splits: &["train", "dev", "dev_mismatched"],
    },
    TaskDef {
        name: "glue/qnli",
        benchmark: Benchmark::Glue,
        dir: "QNLI",
        hub_config: "qnli",
        inputs: &["question", "sentence"],
        shape: Shape::Classification,
        raw_labels: NLI2,
        label_names: NLI2,
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: Some(TsvLayout::Header {
            first: "question",
            second: Some("sentence"),
            label: "label",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/rte",
        benchmark: Benchmark::Glue,
        dir: "RTE",
        hub_config: "rte",
        inputs: &["sentence1", "sentence2"],
        shape: Shape::Classification,
        raw_labels: NLI2,
        label_names: NLI2,
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: Some(TsvLayout::Header {
            first: "sentence1",
            second: Some("sentence2"),
            label: "label",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "glue/wnli",
        benchmark: Benchmark::Glue,
        dir: "WNLI",
        hub_config: "wnli",
        inputs: &["sentence1", "sentence2"],
        shape: Shape::Classification,
        raw_labels: BINARY_01,
        label_names: &["not_entailment", "entailment"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: Some(TsvLayout::Header {
            first: "sentence1",
            second: Some("sentence2"),
            label: "label",
        }),
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/boolq",
        benchmark: Benchmark::SuperGlue,
        dir: "BoolQ",
        hub_config: "boolq",
        inputs: &["question", "passage"],
        shape: Shape::Classification,
        raw_labels: BOOL,
        label_names: &["False", "True"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/cb",
        benchmark: Benchmark::SuperGlue,
        dir: "CB",
        hub_config: "cb",
        inputs: &["premise", "hypothesis"],
        shape: Shape::Classification,
        raw_labels: &["entailment", "contradiction", "neutral"],
        label_names: &["entailment", "contradiction", "neutral"],
        metrics: &[Accuracy, MacroF1],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/copa",
        benchmark: Benchmark::SuperGlue,
        dir: "COPA",
        hub_config: "copa",
        inputs: &["premise", "question", "choice1", "choice2"],
        shape: Shape::MultipleChoice { num_choices: 2 },
        raw_labels: BINARY_01,
        label_names: &["choice1", "choice2"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/rte",
        benchmark: Benchmark::SuperGlue,
        dir: "RTE",
        hub_config: "rte",
        inputs: &["premise", "hypothesis"],
        shape: Shape::Classification,
        raw_labels: NLI2,
        label_names: NLI2,
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/wic",
        benchmark: Benchmark::SuperGlue,
        dir: "WiC",
        hub_config: "wic",
        inputs: &["sentence1", "sentence2", "word"],
        shape: Shape::Classification,
        raw_labels: BOOL,
        label_names: &["False", "True"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/wsc",
        benchmark: Benchmark::SuperGlue,
        dir: "WSC",
        hub_config: "wsc.fixed",
        inputs: &["text", "span1_text", "span2_text"],
        shape: Shape::Classification,
        raw_labels: BOOL,
        label_names: &["False", "True"],
        metrics: &[Accuracy],
        main_score: Main::One(Accuracy),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/multirc",
        benchmark: Benchmark::SuperGlue,
        dir: "MultiRC",
        hub_config: "multirc",
        inputs: &["paragraph", "question", "answer"],
        shape: Shape::AnswerOptions,
        raw_labels: BINARY_01,
        label_names: &["False", "True"],
        metrics: &[F1a, ExactMatch],
        main_score: Main::Mean(&[F1a, ExactMatch]),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "superglue/record",
        benchmark: Benchmark::SuperGlue,
        dir: "ReCoRD",
        hub_config: "record",
        inputs: &["passage", "query", "entities"],
        shape: Shape::Candidates,
        raw_labels: &[],
        label_names: &["False", "True"],
        metrics: &[ExactMatch, SquadF1],
        main_score: Main::Mean(&[ExactMatch, SquadF1]),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
    TaskDef {
        name: "squad/v1.1",
        benchmark: Benchmark::Squad,
        dir: "",
        hub_config: "plain_text",
        inputs: &["question", "context"],
        shape: Shape::Span,
        raw_labels: &[],
        label_names: &[],
        metrics: &[ExactMatch, SquadF1],
        main_score: Main::Mean(&[ExactMatch, SquadF1]),
        tsv: None,
        default_splits: TRAIN_DEV,
    },
];

/// Look a task up by its registry name. `glue/sst-2`, `sst2` and `SST-2` are not accepted:
/// names are exact, so keys stay canonical.
pub fn task(name: &str) -> Result<&'static TaskDef, DataError> {
    TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| DataError::UnknownTask {
            name: name.to_owned(),
            known: TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })
}

impl TaskDef {
    pub fn num_labels(&self) -> usize {
        self.label_names.len()
    }

    /// Splits this task can have. MNLI's `dev` is the matched dev set.
    pub fn known_splits(&self) -> &'static [&'static str] {
        match (self.benchmark, self.name) {
            (_, "glue/mnli") => &["train", "dev", "dev_mismatched", "test", "test_mismatched"],
            (Benchmark::Squad, _) => &["train", "dev"],
            _ => &["train", "dev", "test"],
        }
    }

    pub fn check_split(&self, split: &str) -> Result<(), DataError> {
        if self.known_splits().contains(&split) {
            Ok(())
        } else {
            Err(DataError::UnknownSplit {
                task: self.name.to_owned(),
                split: split.to_owned(),
                available: self.known_splits().join(", "),
            })
        }
    }

    /// File name of a split in the official local layout, relative to the task directory.
    pub fn local_file(&self, split: &str) -> String {
        match self.benchmark {
            Benchmark::Glue => match (self.name, split) {
                ("glue/mnli", "dev") => "dev_matched.tsv".to_owned(),
                ("glue/mnli", "test") => "test_matched.tsv".to_owned(),
                _ => format!("{split}.tsv"),
            },
            Benchmark::SuperGlue => match split {
                "dev" => "val.jsonl".to_owned(),
                _ => format!("{split}.jsonl"),
            },
            Benchmark::Squad => format!("{split}-v1.1.json"),
        }
    }

    /// Split name on the hub (`validation`, `validation_matched`, ...).
    pub fn hub_split(&self, split: &str) -> String {
        match (self.name, split) {
            ("glue/mnli", "dev") => "validation_matched".to_owned(),
            ("glue/mnli", "dev_mismatched") => "validation_mismatched".to_owned(),
            ("glue/mnli", "test") => "test_matched".to_owned(),
            (_, "dev") => "validation".to_owned(),
            _ => split.to_owned(),
        }
    }

    /// The task as recorded in a dataset artifact.
    pub fn spec(&self) -> TaskSpec {
        let kind = match self.shape {
            Shape::Classification | Shape::AnswerOptions | Shape::Candidates => {
                TaskKind::Classification {
                    num_labels: self.num_labels() as u32,
                }
            }
            Shape::Regression => TaskKind::Regression,
            Shape::MultipleChoice { num_choices } => TaskKind::MultipleChoice { num_choices },
            Shape::Span => TaskKind::Span,
        };
        let grouping = match self.shape {
            Shape::MultipleChoice { .. } => Some("choices"),
            Shape::AnswerOptions | Shape::Span => Some("question"),
            Shape::Candidates => Some("query"),
            Shape::Classification | Shape::Regression => None,
        };
        TaskSpec {
            name: self.name.to_owned(),
            inputs: self.inputs.iter().map(|s| (*s).to_owned()).collect(),
            kind,
            label_names: self.label_names.iter().map(|s| (*s).to_owned()).collect(),
            metrics: self.metrics.to_vec(),
            main_score: match self.main_score {
                Main::One(m) => MainScore::Metric(m),
                Main::Mean(ms) => MainScore::Mean(ms.to_vec()),
            },
            grouping: grouping.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_labels_consistent() {
        for (i, t) in TASKS.iter().enumerate() {
            assert!(
                TASKS[i + 1..].iter().all(|u| u.name != t.name),
                "{}",
                t.name
            );
            if !t.raw_labels.is_empty() {
                assert_eq!(t.raw_labels.len(), t.label_names.len(), "{}", t.name);
            }
            for s in t.default_splits {
                t.check_split(s).unwrap();
            }
        }
    }

    #[test]
    fn main_scores_follow_the_issue() {
        assert_eq!(task("glue/cola").unwrap().main_score, Main::One(Matthews));
        assert_eq!(
            task("glue/stsb").unwrap().main_score,
            Main::Mean(&[Pearson, Spearman])
        );
        assert_eq!(task("glue/mnli").unwrap().main_score, Main::One(Accuracy));
        assert!(task("glue/sst-2").is_err());
    }
}
