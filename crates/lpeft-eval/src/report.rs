//! Result tables: fine-tuning runs ([`RunResult`]) aggregated per (task, method) over seeds,
//! rendered as markdown, CSV and JSON; and the comparison of two result sets.
//!
//! Scores are stored as fractions and shown ×100 with two decimals. Tasks and methods keep the
//! order in which they first appear in the runs (plan order), so outputs are deterministic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lpeft_schema::results::RunResult;
use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (n − 1 in the denominator; `None` for one value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1).then(|| {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        });
        Some(Stat { mean, std })
    }
}

/// One (task, method) cell: its seeds' scores and mean efficiency figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub task: String,
    pub method: String,
    pub seeds: Vec<u64>,
    pub main_score: Stat,
    /// Per metric name; seeds lacking a metric do not count towards it.
    pub metrics: BTreeMap<String, Stat>,
    pub total_params: f64,
    pub trainable_params: f64,
    pub backbone_pruned_pct: f64,
    pub train_seconds_per_step: f64,
    pub train_examples_per_second: f64,
    pub inference_examples_per_second: f64,
    pub peak_memory_bytes: f64,
    pub memory_kind: String,
    /// Distinct `backend on host` descriptions of the runs.
    pub hardware: Vec<String>,
}

/// What `lpeft report` writes as `results.json` and `lpeft compare` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSet {
    pub pipeline: String,
    pub rows: Vec<Row>,
    /// Fine-tuning stages of the pipeline without a result in the store.
    pub missing: Vec<String>,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Groups runs by (task, method) in order of first appearance and aggregates each group.
pub fn aggregate(runs: &[RunResult]) -> Vec<Row> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&RunResult>> = BTreeMap::new();
    for run in runs {
        let id = (run.task.clone(), run.method.clone());
        if !groups.contains_key(&id) {
            order.push(id.clone());
        }
        groups.entry(id).or_default().push(run);
    }
    order
        .into_iter()
        .map(|id| {
            let runs = &groups[&id];
            let mut by_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in runs {
                for (name, v) in &r.best_metrics {
                    by_metric.entry(name.clone()).or_default().push(*v);
                }
            }
            let main: Vec<f64> = runs.iter().map(|r| r.best_main_score).collect();
            let eff = |f: fn(&RunResult) -> f64| mean(runs.iter().map(|r| f(r)));
            let mut hardware: Vec<String> = runs
                .iter()
                .map(|r| format!("{} on {}", r.efficiency.backend, r.efficiency.host))
                .collect();
            hardware.sort();
            hardware.dedup();
            let mut kinds: Vec<&str> = runs
                .iter()
                .map(|r| r.efficiency.memory_kind.as_str())
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            Row {
                task: id.0,
                method: id.1,
                seeds: runs.iter().map(|r| r.seed).collect(),
                main_score: Stat::of(&main).expect("a group has at least one run"),
                metrics: by_metric
                    .into_iter()
                    .filter_map(|(k, v)| Stat::of(&v).map(|s| (k, s)))
                    .collect(),
                total_params: eff(|r| r.efficiency.total_params as f64),
                trainable_params: eff(|r| r.efficiency.trainable_params as f64),
                backbone_pruned_pct: eff(|r| r.efficiency.backbone_pruned_pct),
                train_seconds_per_step: eff(|r| r.efficiency.train_seconds_per_step),
                train_examples_per_second: eff(|r| r.efficiency.train_examples_per_second),
                inference_examples_per_second: eff(|r| r.efficiency.inference_examples_per_second),
                peak_memory_bytes: eff(|r| r.efficiency.peak_memory_bytes as f64),
                memory_kind: kinds.join("+"),
                hardware,
            }
        })
        .collect()
}

impl ResultSet {
    pub fn new(pipeline: &str, runs: &[RunResult], missing: Vec<String>) -> ResultSet {
        ResultSet {
            pipeline: pipeline.to_owned(),
            rows: aggregate(runs),
            missing,
        }
    }

    /// Tasks, then methods, in order of first appearance.
    pub fn tasks(&self) -> Vec<&str> {
        unique(self.rows.iter().map(|r| r.task.as_str()))
    }
    pub fn methods(&self) -> Vec<&str> {
        unique(self.rows.iter().map(|r| r.method.as_str()))
    }
    pub fn row(&self, task: &str, method: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.task == task && r.method == method)
    }
    /// Metric names over all rows, sorted.
    pub fn metric_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rows
            .iter()
            .flat_map(|r| r.metrics.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Mean over tasks of a method's mean main score; `None` unless it has every task.
    pub fn task_average(&self, method: &str) -> Option<f64> {
        let tasks = self.tasks();
        let scores: Option<Vec<f64>> = tasks
            .iter()
            .map(|t| self.row(t, method).map(|r| r.main_score.mean))
            .collect();
        scores.map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("result sets serialize")
    }

    /// Main-score table (tasks × methods) and efficiency table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let methods = self.methods();
        let _ = writeln!(s, "# Results: {}\n", self.pipeline);
        let _ = writeln!(
            s,
            "Main score ×100 on dev (best epoch), mean ± sample std over seeds (n seeds).\n"
        );
        let _ = writeln!(s, "| task | {} |", methods.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(methods.len()));
        for task in self.tasks() {
            let cells: Vec<String> = methods
                .iter()
                .map(|m| {
                    self.row(task, m).map_or_else(
                        || "—".to_owned(),
                        |r| format!("{} ({})", stat100(&r.main_score), r.seeds.len()),
                    )
                })
                .collect();
            let _ = writeln!(s, "| {task} | {} |", cells.join(" | "));
        }
        let tasks = self.tasks();
        if tasks.len() > 1 {
            let cells: Vec<String> = methods
                .iter()
                .map(|m| {
                    self.task_average(m)
                        .map_or_else(|| "—".to_owned(), |a| format!("{:.2}", 100.0 * a))
                })
                .collect();
            let _ = writeln!(s, "| mean over tasks | {} |", cells.join(" | "));
        }
        let _ = writeln!(s, "\n## Metrics\n");
        let _ = writeln!(s, "| task | method | metric | ×100 |");
        let _ = writeln!(s, "|---|---|---|---|");
        for task in self.tasks() {
            for r in methods.iter().filter_map(|m| self.row(task, m)) {
                for (name, st) in &r.metrics {
                    let _ = writeln!(s, "| {task} | {} | {name} | {} |", r.method, stat100(st));
                }
            }
        }
        let _ = writeln!(s, "\n## Efficiency\n");
        let _ = writeln!(
            s,
            "| method | task | trainable params | total params | backbone pruned | train s/step | \
             train ex/s | inference ex/s | peak memory | hardware |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for method in &methods {
            for r in self.rows.iter().filter(|r| r.method == *method) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1} % | {:.4} | {:.1} | {:.1} | {} ({}) | {} |",
                    r.method,
                    r.task,
                    count(r.trainable_params),
                    count(r.total_params),
                    r.backbone_pruned_pct,
                    r.train_seconds_per_step,
                    r.train_examples_per_second,
                    r.inference_examples_per_second,
                    bytes(r.peak_memory_bytes),
                    r.memory_kind,
                    r.hardware.join("; ")
                );
            }
        }
        if !self.missing.is_empty() {
            let _ = writeln!(
                s,
                "\nMissing: {} run{} not in the store: {}.",
                self.missing.len(),
                if self.missing.len() == 1 { "" } else { "s" },
                listed(&self.missing, 10)
            );
        }
        s
    }

    /// One row per (task, method); scores ×1 (fractions), std empty for one seed.
    pub fn csv(&self) -> String {
        let metrics = self.metric_names();
        let mut header: Vec<String> = [
            "task",
            "method",
            "n_seeds",
            "seeds",
            "main_mean",
            "main_std",
        ]
        .iter()
        .map(|h| (*h).to_owned())
        .collect();
        for m in &metrics {
            header.push(format!("{m}_mean"));
            header.push(format!("{m}_std"));
        }
        header.extend(
            [
                "trainable_params",
                "total_params",
                "backbone_pruned_pct",
                "train_seconds_per_step",
                "train_examples_per_second",
                "inference_examples_per_second",
                "peak_memory_bytes",
                "memory_kind",
                "hardware",
            ]
            .iter()
            .map(|h| (*h).to_owned()),
        );
        let mut s = String::new();
        let _ = writeln!(s, "{}", header.join(","));
        for r in &self.rows {
            let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
            let mut f = vec![
                csv_field(&r.task),
                csv_field(&r.method),
                r.seeds.len().to_string(),
                csv_field(&seeds.join(" ")),
                r.main_score.mean.to_string(),
                opt(r.main_score.std),
            ];
            for m in &metrics {
                match r.metrics.get(*m) {
                    Some(st) => {
                        f.push(st.mean.to_string());
                        f.push(opt(st.std));
                    }
                    None => f.extend([String::new(), String::new()]),
                }
            }
            f.extend([
                r.trainable_params.to_string(),
                r.total_params.to_string(),
                r.backbone_pruned_pct.to_string(),
                r.train_seconds_per_step.to_string(),
                r.train_examples_per_second.to_string(),
                r.inference_examples_per_second.to_string(),
                r.peak_memory_bytes.to_string(),
                csv_field(&r.memory_kind),
                csv_field(&r.hardware.join("; ")),
            ]);
            let _ = writeln!(s, "{}", f.join(","));
        }
        s
    }
}

/// One (task, method) present in both result sets: B relative to A.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDiff {
    pub task: String,
    pub method: String,
    pub main_a: f64,
    pub main_b: f64,
    /// `main_b - main_a` (fractions).
    pub main_delta: f64,
    /// B / A; `None` where A is 0.
    pub trainable_params_ratio: Option<f64>,
    pub train_seconds_per_step_ratio: Option<f64>,
    pub train_examples_per_second_ratio: Option<f64>,
    pub inference_examples_per_second_ratio: Option<f64>,
    pub peak_memory_ratio: Option<f64>,
}

/// B against A per (task, method), plus the cells found in only one of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub rows: Vec<RowDiff>,
    pub only_a: Vec<(String, String)>,
    pub only_b: Vec<(String, String)>,
}

fn ratio(b: f64, a: f64) -> Option<f64> {
    (a != 0.0).then(|| b / a)
}

pub fn compare(a: &ResultSet, b: &ResultSet) -> Comparison {
    let mut rows = Vec::new();
    let mut only_a = Vec::new();
    for ra in &a.rows {
        match b.row(&ra.task, &ra.method) {
            Some(rb) => rows.push(RowDiff {
                task: ra.task.clone(),
                method: ra.method.clone(),
                main_a: ra.main_score.mean,
                main_b: rb.main_score.mean,
                main_delta: rb.main_score.mean - ra.main_score.mean,
                trainable_params_ratio: ratio(rb.trainable_params, ra.trainable_params),
                train_seconds_per_step_ratio: ratio(
                    rb.train_seconds_per_step,
                    ra.train_seconds_per_step,
                ),
                train_examples_per_second_ratio: ratio(
                    rb.train_examples_per_second,
                    ra.train_examples_per_second,
                ),
                inference_examples_per_second_ratio: ratio(
                    rb.inference_examples_per_second,
                    ra.inference_examples_per_second,
                ),
                peak_memory_ratio: ratio(rb.peak_memory_bytes, ra.peak_memory_bytes),
            }),
            None => only_a.push((ra.task.clone(), ra.method.clone())),
        }
    }
    let only_b = b
        .rows
        .iter()
        .filter(|r| a.row(&r.task, &r.method).is_none())
        .map(|r| (r.task.clone(), r.method.clone()))
        .collect();
    Comparison {
        rows,
        only_a,
        only_b,
    }
}

impl Comparison {
    /// Markdown table: scores ×100, Δ with sign, ratios as `×1.23`.
    pub fn markdown(&self, a_name: &str, b_name: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "A = {a_name}, B = {b_name}; ratios are B / A.\n");
        let _ = writeln!(
            s,
            "| task | method | main A | main B | Δ | trainable params | train s/step | \
             train ex/s | inference ex/s | peak memory |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.2} | {:+.2} | {} | {} | {} | {} | {} |",
                r.task,
                r.method,
                100.0 * r.main_a,
                100.0 * r.main_b,
                100.0 * r.main_delta,
                times(r.trainable_params_ratio),
                times(r.train_seconds_per_step_ratio),
                times(r.train_examples_per_second_ratio),
                times(r.inference_examples_per_second_ratio),
                times(r.peak_memory_ratio),
            );
        }
        for (side, cells) in [("A", &self.only_a), ("B", &self.only_b)] {
            if !cells.is_empty() {
                let names: Vec<String> = cells.iter().map(|(t, m)| format!("{t} × {m}")).collect();
                let _ = writeln!(s, "\nOnly in {side}: {}.", names.join(", "));
            }
        }
        s
    }
}

/// The first `max` names, then how many more (the full list is in `results.json`).
fn listed(names: &[String], max: usize) -> String {
    if names.len() <= max {
        return names.join(", ");
    }
    format!(
        "{} and {} more (all in results.json)",
        names[..max].join(", "),
        names.len() - max
    )
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// `85.20 ± 1.05`, or `85.20` for one seed.
fn stat100(s: &Stat) -> String {
    match s.std {
        Some(sd) => format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * sd),
        None => format!("{:.2}", 100.0 * s.mean),
    }
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |r| format!("×{r:.2}"))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Parameter counts as `124.6M`, `885.0K`, `512`.
pub fn count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Bytes in binary units (`1.5 GiB`).
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
