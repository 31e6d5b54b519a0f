//! Everything `lpeft` prints goes through [`Reporter`]: result lines on stdout, progress bars
//! on stderr, logs through `tracing` (stderr). One place decides formats, so plan/run output
//! stays consistent and testable. What the runner reports while it runs is in `run_view.rs`.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use lpeft_pipeline::plan::{Plan, PlanNode, Status};
use lpeft_pipeline::run::{Outcome, RunReport};
use lpeft_schema::manifest::Manifest;
use lpeft_store::{GcReport, Store, VerifyIssue};

use crate::progress::{Bar, bar_style};

/// Width of the stage-name column.
pub(crate) const NAME_W: usize = 28;

pub struct Reporter {
    multi: MultiProgress,
    quiet: bool,
    /// Serializes lines from concurrent stages.
    out: Mutex<()>,
}

impl Reporter {
    pub fn new(quiet: bool, progress: bool) -> Reporter {
        let target = if progress && !quiet {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Reporter {
            multi: MultiProgress::with_draw_target(target),
            quiet,
            out: Mutex::new(()),
        }
    }

    /// The only function that writes to stdout. A reader that went away (`lpeft plan | head`)
    /// ends the process quietly with success, as cargo and ripgrep do; artifacts stay whole
    /// (publishing is atomic).
    pub fn line(&self, s: impl Display) {
        use std::io::Write;
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let written = self
            .multi
            .suspend(|| writeln!(std::io::stdout().lock(), "{s}"));
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            self.error(&format!("cannot write to stdout: {e}"));
            std::process::exit(1);
        }
    }

    /// The only function that writes errors (to stderr).
    #[allow(clippy::print_stderr)]
    pub fn error(&self, message: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        self.multi.suspend(|| eprintln!("error: {message}"));
    }

    /// A detail line, dropped with `--quiet`.
    pub fn detail(&self, s: impl Display) {
        if !self.quiet {
            self.line(s);
        }
    }

    pub fn plan(&self, plan: &Plan, store: &Store, file: &str) {
        self.detail(format!(
            "pipeline {} ({file}), backend {}, store {}",
            plan.pipeline,
            plan.backend,
            store.root().display()
        ));
        for node in &plan.nodes {
            self.detail(plan_line(node, store));
        }
        self.line(format!("plan: {}", counts(plan)));
    }

    pub fn plan_json(&self, plan: &Plan) {
        let stages: Vec<serde_json::Value> = plan
            .nodes
            .iter()
            .map(|n| {
                let reasons: Vec<String> = match &n.status {
                    Status::Run(r) | Status::Skip(r) => r.iter().map(ToString::to_string).collect(),
                    Status::Blocked { inputs } => vec![format!("needs {}", inputs.join(", "))],
                    Status::Corrupt(e) => vec![e.clone()],
                    Status::Hit => vec![],
                };
                serde_json::json!({
                    "name": n.name,
                    "kind": n.kind,
                    "key": n.key,
                    "status": n.status.label(),
                    "reasons": reasons,
                    "inputs": n.inputs.iter().map(|(s, i)| (s.clone(), i.key.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                    "params": n.canonical_params,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pipeline": plan.pipeline,
            "backend": plan.backend,
            "stages": stages,
        });
        self.line(serde_json::to_string_pretty(&doc).expect("plan serializes"));
    }

    pub fn run_report(&self, plan: &Plan, report: &RunReport) {
        self.line(format!(
            "run: {} ran, {} hit{} in {}",
            report.ran(),
            report.hits(),
            match plan.count("SKIP") {
                0 => String::new(),
                n => format!(", {n} skipped"),
            },
            secs(report.wall)
        ));
    }

    pub fn show(&self, m: &Manifest, json: bool) {
        if json {
            self.line(serde_json::to_string_pretty(m).expect("manifest serializes"));
            return;
        }
        let size: u64 = m.files.iter().map(|f| f.size).sum();
        self.line(format!("key          {}", m.key));
        self.line(format!(
            "kind         {} v{} (stage `{}`)",
            m.kind, m.code_version, m.stage
        ));
        self.line(format!(
            "params       {}",
            lpeft_store::canonical_json(&m.params)
        ));
        for (slot, key) in &m.inputs {
            self.line(format!("input        {slot} = {key}"));
        }
        for e in &m.external_files {
            self.line(format!(
                "external     {} ({}, {})",
                e.path,
                bytes(e.size),
                &e.blake3[..12]
            ));
        }
        if let Some(seed) = m.seed {
            self.line(format!("seed         {seed}"));
        }
        self.line(format!(
            "backend      {}{}",
            m.backend,
            m.backend_class
                .as_ref()
                .map_or(String::new(), |c| format!(" (class {c} in key)"))
        ));
        self.line(format!(
            "host         {} (lpeft {})",
            m.host, m.tool_version
        ));
        self.line(format!(
            "time         {} → {} ({})",
            m.started_at,
            m.finished_at,
            secs_f(m.wall_seconds)
        ));
        if let Some(rss) = m.peak_rss_bytes {
            self.line(format!("peak rss     {} (whole process)", bytes(rss)));
        }
        if !m.run_reasons.is_empty() {
            self.line(format!("ran because  {}", m.run_reasons.join("; ")));
        }
        self.line(format!(
            "figures      {}",
            lpeft_store::canonical_json(&m.figures)
        ));
        self.line(format!(
            "files        {} files, {}",
            m.files.len(),
            bytes(size)
        ));
        for f in &m.files {
            self.line(format!(
                "  {:>10}  {}  {}",
                bytes(f.size),
                &f.blake3[..12],
                f.path
            ));
        }
    }

    pub fn lineage_line(&self, depth: usize, slot: Option<&str>, key: &str, desc: &str) {
        let indent = "  ".repeat(depth);
        let slot = slot.map_or(String::new(), |s| format!("{s} ← "));
        self.line(format!("{indent}{slot}{} {desc}", short(key)));
    }

    pub fn verify(&self, checked: usize, issues: &[VerifyIssue]) {
        for issue in issues {
            self.line(format!("CORRUPT {}  {}", short(&issue.key), issue.error));
        }
        self.line(format!(
            "verify: {checked} checked, {} ok, {} corrupt",
            checked - issues.len(),
            issues.len()
        ));
    }

    pub fn gc(&self, report: &GcReport, dry_run: bool) {
        let verb = if dry_run { "would remove" } else { "removed" };
        for (key, size) in &report.removed {
            self.detail(format!("{verb} {}  {}", short(key), bytes(*size)));
        }
        for path in &report.tmp_removed {
            self.detail(format!("{verb} {}", path.display()));
        }
        let total: u64 = report.removed.iter().map(|(_, s)| s).sum();
        self.line(format!(
            "gc: kept {}, {verb} {} artifacts ({}) and {} temporary directories",
            report.kept,
            report.removed.len(),
            bytes(total),
            report.tmp_removed.len()
        ));
    }

    pub fn stage_result(&self, node: &PlanNode, outcome: Option<&Outcome>) {
        let status = match (outcome, &node.status) {
            (Some(Outcome::Ran { .. }), _) => "RAN",
            (Some(Outcome::Hit | Outcome::ConcurrentHit), _) | (None, Status::Hit) => "HIT",
            (_, s) => s.label(),
        };
        self.line(format!("{status} {} {}", node.key, node.kind));
    }
}

fn counts(plan: &Plan) -> String {
    let parts: Vec<String> = ["HIT", "RUN", "SKIP", "BLOCKED", "CORRUPT"]
        .iter()
        .map(|l| (l, plan.count(l)))
        .filter(|(l, n)| *n > 0 || **l == "HIT" || **l == "RUN")
        .map(|(l, n)| format!("{n} {}", l.to_ascii_lowercase()))
        .collect();
    parts.join(", ")
}

fn plan_line(node: &PlanNode, store: &Store) -> String {
    let head = format!(
        "  {:<7} {:<NAME_W$} {}",
        node.status.label(),
        node.name,
        short(&node.key)
    );
    match &node.status {
        Status::Hit => match store.manifest(&node.key) {
            Ok(m) => format!(
                "{head}  {}, saves {}",
                bytes(m.files.iter().map(|f| f.size).sum()),
                secs_f(m.wall_seconds)
            ),
            Err(_) => head,
        },
        Status::Run(reasons) | Status::Skip(reasons) => {
            let r: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            format!("{head}  {}", r.join("; "))
        }
        Status::Blocked { inputs } => format!("{head}  needs {}", inputs.join(", ")),
        Status::Corrupt(e) => format!("{head}  {e}"),
    }
}

/// The top-level scalar figures as `name=value`; nested ones are left to `lpeft show`.
pub fn figures_brief(figures: &serde_json::Value) -> String {
    let Some(map) = figures.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut nested = 0;
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for k in keys {
        match &map[k] {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) if !n.is_i64() && !n.is_u64() => parts.push(format!("{k}={}", sig3(f))),
                _ => parts.push(format!("{k}={n}")),
            },
            serde_json::Value::String(v) => parts.push(format!("{k}={v}")),
            serde_json::Value::Bool(v) => parts.push(format!("{k}={v}")),
            serde_json::Value::Null => {}
            _ => nested += 1,
        }
    }
    if nested > 0 {
        parts.push(format!("(+{nested} more in `lpeft show`)"));
    }
    parts.join(" ")
}

/// Three significant digits.
fn sig3(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return f.to_string();
    }
    let digits = (2 - f.abs().log10().floor() as i32).max(0) as usize;
    format!("{f:.digits$}")
}

/// Key prefix shown to people (12 hex digits).
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn secs(d: Duration) -> String {
    secs_f(d.as_secs_f64())
}

pub fn secs_f(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

impl Reporter {
    /// A progress bar named `name` (hidden when stderr is no terminal, or with `--quiet` or
    /// `--no-progress`): a stage's, or a command's own (`lpeft predict`).
    pub fn bar(&self, name: &str) -> Bar {
        // No length until a task starts (an empty bar, not a full one).
        let bar = self.multi.add(ProgressBar::no_length());
        bar.set_style(bar_style());
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar::new(bar, name)
    }

    /// A line that says how to fix the error just printed (stderr).
    #[allow(clippy::print_stderr)]
    pub fn hint(&self, message: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        self.multi.suspend(|| eprintln!("hint: {message}"));
    }
}
