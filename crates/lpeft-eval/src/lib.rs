//! Evaluation of lightpeft runs: task metrics and result reports.
//!
//! - [`evaluate_task`] scores a task's dev predictions ([`Outputs`]) with the metrics and main
//!   score its [`TaskSpec`](lpeft_schema::dataset::TaskSpec) names. Scores are fractions.
//! - [`span`] decodes span logits into answer texts (SQuAD); [`squad`] is the official SQuAD
//!   v1.1 evaluation on the official dataset and predictions files (percentages, as it prints).
//! - [`report`]: runs aggregated per (task, method) over seeds, as markdown, CSV and JSON;
//!   [`report::compare`] diffs two result sets. [`svg`] draws the plots, [`masks`] reads an
//!   estimation artifact's masks. [`write_report`] writes all of it into a directory.
//!
//! No burn dependency: this crate is pure Rust and builds in seconds.
//!
//! ```
//! use lpeft_eval::{evaluate, Outputs};
//! use lpeft_schema::dataset::{MainScore, Metric};
//!
//! let (pred, gold) = ([1, 0, 1, 1], [1, 0, 0, 1]);
//! let outputs = Outputs::Classes { predicted: &pred, labels: &gold, groups: None };
//! let main = MainScore::Mean(vec![Metric::F1, Metric::Accuracy]);
//! let e = evaluate(&[Metric::F1, Metric::Accuracy], &main, &outputs).unwrap();
//! assert_eq!(e.metrics["accuracy"], 0.75);
//! assert_eq!(e.metrics["f1"], 0.8);
//! assert!((e.main_score - 0.775).abs() < 1e-12);
//! ```

mod error;
mod evaluate;
pub mod masks;
pub mod metrics;
pub mod report;
pub mod span;
pub mod squad;
pub mod svg;

use std::path::{Path, PathBuf};

pub use error::EvalError;
pub use evaluate::{
    Evaluation, Outputs, argmax_per_group, evaluate, evaluate_record, evaluate_task, metric_name,
    record_answers, score,
};

use crate::masks::MaskRecords;
use crate::report::ResultSet;

/// `results.md`, `results.csv`, `results.json`, one `score_vs_pruned_<task>.svg` per task and
/// `masks_<stage>_{heads,ffn}.svg` per estimation stage, written into `dir` (created if
/// needed). Returns the paths written, in that order.
pub fn write_report(
    dir: &Path,
    set: &ResultSet,
    masks: &[(String, MaskRecords)],
) -> Result<Vec<PathBuf>, EvalError> {
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<(String, String)> = vec![
        ("results.md".to_owned(), set.markdown()),
        ("results.csv".to_owned(), set.csv()),
        ("results.json".to_owned(), set.to_json()),
    ];
    for task in set.tasks() {
        if let Some(svg) = svg::score_vs_pruned(set, task) {
            files.push((format!("score_vs_pruned_{}.svg", svg::slug(task)), svg));
        }
    }
    for (stage, records) in masks {
        for (part, svg) in svg::mask_heatmaps(stage, records) {
            files.push((format!("masks_{}_{part}.svg", svg::slug(stage)), svg));
        }
    }
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| EvalError::Io {
            file: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
