//! Resolution: expanded stages + registry + store -> a [`Plan`] of keyed nodes, each a HIT or a
//! RUN with typed reasons. Resolving reads only stage parameters, external file stamps (hashing
//! a file only when its stamp is not cached) and store metadata; it writes nothing.
//!
//! Here the plan's types and the resolution; `graph.rs` orders the stages, `decide.rs` gives
//! each node its status and reasons, `diff.rs` says how two parameter sets differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use lpeft_schema::manifest::IndexRecord;
use lpeft_store::{KeyInputs, Store};
use serde_json::Value;

use crate::error::{Location, PipelineError};
use crate::file::{Pipeline, StageSpec, select};
use crate::registry::Registry;
use crate::stage::{SlotError, Stage, check_slots};

mod decide;
mod diff;
mod graph;
#[cfg(test)]
mod tests;

use decide::decide;
pub use diff::diff_values;
use graph::topological_order;

/// Why a stage has to run. Shown by `plan` and `run`.
#[derive(Debug, Clone, PartialEq)]
pub enum RerunReason {
    /// Never produced (or removed since).
    Missing,
    /// Asked for with `--force`.
    Forced,
    /// Parameters differ from the last run of this stage.
    ParamsChanged { changes: Vec<ParamChange> },
    /// An input artifact differs from the last run.
    InputChanged { slot: String, from: Option<String> },
    /// An external file's content differs from the last run.
    ExternalChanged { path: String },
    /// The stage's code version differs from the last run.
    StageCodeChanged { kind: String, old: u32, new: u32 },
    /// The backend class differs from the last run.
    BackendChanged {
        old: Option<String>,
        new: Option<String>,
    },
}

/// One changed parameter, by JSON path.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl fmt::Display for ParamChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_string(), |v| v.to_string());
        write!(f, "{} {} → {}", self.path, show(&self.old), show(&self.new))
    }
}

impl fmt::Display for RerunReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RerunReason::Missing => write!(f, "missing"),
            RerunReason::Forced => write!(f, "forced"),
            RerunReason::ParamsChanged { changes } => {
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(f, "params changed: {}", list.join(", "))
            }
            RerunReason::InputChanged { slot, from } => match from {
                Some(stage) => write!(f, "input `{slot}` changed (from `{stage}`)"),
                None => write!(f, "input `{slot}` changed"),
            },
            RerunReason::ExternalChanged { path } => write!(f, "file changed: {path}"),
            RerunReason::StageCodeChanged { kind, old, new } => {
                write!(f, "stage code changed: {kind} v{old} → v{new}")
            }
            RerunReason::BackendChanged { old, new } => write!(
                f,
                "backend changed: {} → {}",
                old.as_deref().unwrap_or("(any)"),
                new.as_deref().unwrap_or("(any)")
            ),
        }
    }
}

/// What the runner will do with a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Published already; nothing to do.
    Hit,
    /// Will be produced.
    Run(Vec<RerunReason>),
    /// Would run, but is outside the `--only` selection.
    Skip(Vec<RerunReason>),
    /// Selected, but an input will not exist (it is skipped or blocked itself).
    Blocked { inputs: Vec<String> },
    /// Published but damaged; refused until rebuilt with `--force`.
    Corrupt(String),
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Run(_) => "RUN",
            Status::Skip(_) => "SKIP",
            Status::Blocked { .. } => "BLOCKED",
            Status::Corrupt(_) => "CORRUPT",
        }
    }
}

/// An input of a node: a key, and the node that produces it (if it is in this plan).
#[derive(Debug, Clone, PartialEq)]
pub struct InputRef {
    pub key: String,
    pub from: Option<String>,
}

/// An external file as resolved for the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRef {
    pub path: PathBuf,
    pub size: u64,
    pub blake3: String,
}

/// A fully resolved stage.
#[derive(Debug, Clone)]
pub struct PlanNode {
    pub name: String,
    pub kind: String,
    pub code_version: u32,
    /// Index of the stage implementation in the registry.
    pub stage_index: usize,
    /// Parameters as written (after expansion); given to `Stage::run`.
    pub params: Value,
    /// Canonical parameters; entered the key.
    pub canonical_params: Value,
    pub inputs: BTreeMap<String, InputRef>,
    pub external: Vec<ExternalRef>,
    pub backend_class: Option<String>,
    pub key: String,
    pub status: Status,
    pub origin: Location,
    pub forced: bool,
}

impl PlanNode {
    pub fn is_run(&self) -> bool {
        matches!(self.status, Status::Run(_))
    }

    /// The index record describing this resolution.
    pub fn index_record(&self, pipeline: &str) -> IndexRecord {
        IndexRecord {
            pipeline: pipeline.to_string(),
            stage: self.name.clone(),
            key: self.key.clone(),
            kind: self.kind.clone(),
            code_version: self.code_version,
            params: self.canonical_params.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|(s, i)| (s.clone(), i.key.clone()))
                .collect(),
            external_files: self
                .external
                .iter()
                .map(|e| (e.path.display().to_string(), e.blake3.clone()))
                .collect(),
            backend_class: self.backend_class.clone(),
            recorded_at: lpeft_store::sys::rfc3339(std::time::SystemTime::now()),
        }
    }
}

/// A resolved pipeline, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pipeline: String,
    pub nodes: Vec<PlanNode>,
    pub backend: String,
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn count(&self, label: &str) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.status.label() == label)
            .count()
    }
}

/// Command-line choices that affect the plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Backend string given to stages (e.g. `flex`, `tch-cuda:0`).
    pub backend: String,
    /// Stage names or globs to rebuild even if published.
    pub force: Vec<String>,
    /// If non-empty, only these stages (names or globs) may run.
    pub only: Vec<String>,
    /// Extend `force` and `only` to every stage downstream of the named ones.
    pub downstream: bool,
}

impl PlanOptions {
    pub fn new(backend: impl Into<String>) -> PlanOptions {
        PlanOptions {
            backend: backend.into(),
            force: vec![],
            only: vec![],
            downstream: false,
        }
    }
}

/// The backend class that enters keys: the backend string without a device index, so
/// `tch-cuda:0` and `tch-cuda:1` share artifacts but `flex` and `tch-cuda` do not. A stage may
/// add a tag to it ([`Stage::backend_tag`]: the model crate's fused-node version on libtorch).
pub fn backend_class(backend: &str) -> String {
    backend
        .split(':')
        .next()
        .unwrap_or(backend)
        .trim()
        .to_ascii_lowercase()
}

/// [`backend_class`] with `stage`'s tag for it and its canonical params, if any: `class+tag`.
pub fn stage_backend_class(stage: &dyn Stage, backend: &str, params: &serde_json::Value) -> String {
    let class = backend_class(backend);
    match stage.backend_tag(&class, params) {
        Some(tag) => format!("{class}+{tag}"),
        None => class,
    }
}

/// Resolve an expanded pipeline into a plan. Errors name the file position of the stage.
pub fn resolve(
    pipeline: &Pipeline,
    registry: &Registry,
    store: &Store,
    opts: &PlanOptions,
) -> Result<Plan, PipelineError> {
    let order = topological_order(&pipeline.stages, registry)?;
    let mut nodes: Vec<PlanNode> = Vec::with_capacity(order.len());
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for i in order {
        let spec = &pipeline.stages[i];
        let (stage_index, stage) = registry
            .get(&spec.kind)
            .expect("checked in topological_order");
        let inputs = spec
            .inputs
            .iter()
            .map(|(slot, from)| {
                (
                    slot.clone(),
                    InputRef {
                        key: keys[from].clone(),
                        from: Some(from.clone()),
                    },
                )
            })
            .collect();
        let node = resolve_node(spec, stage_index, stage, inputs, store, &opts.backend)?;
        keys.insert(node.name.clone(), node.key.clone());
        nodes.push(node);
    }
    let mut plan = Plan {
        pipeline: pipeline.name.clone(),
        nodes,
        backend: opts.backend.clone(),
    };
    decide(&mut plan, store, opts)?;
    Ok(plan)
}

/// Resolve one stage given its input keys (shared by pipelines and `lpeft stage`).
pub fn resolve_node(
    spec: &StageSpec,
    stage_index: usize,
    stage: &dyn Stage,
    inputs: BTreeMap<String, InputRef>,
    store: &Store,
    backend: &str,
) -> Result<PlanNode, PipelineError> {
    let prepared = stage
        .prepare(&spec.params)
        .map_err(|source| PipelineError::Prepare {
            at: spec.origin.clone(),
            stage: spec.name.clone(),
            source,
        })?;
    let mut external = Vec::with_capacity(prepared.external_files.len());
    for path in &prepared.external_files {
        let (size, blake3) = store.hash_external(path).map_err(|e| {
            PipelineError::invalid(&spec.origin, format!("stage `{}`: {e}", spec.name))
        })?;
        external.push(ExternalRef {
            path: path.clone(),
            size,
            blake3,
        });
    }
    let backend_class = prepared
        .backend_sensitive
        .then(|| stage_backend_class(stage, backend, &prepared.canonical_params));
    let input_keys: BTreeMap<String, String> = inputs
        .iter()
        .map(|(s, i): (&String, &InputRef)| (s.clone(), i.key.clone()))
        .collect();
    let hashes: Vec<String> = external.iter().map(|e| e.blake3.clone()).collect();
    let key = KeyInputs {
        kind: stage.kind(),
        code_version: stage.code_version(),
        params: &prepared.canonical_params,
        inputs: &input_keys,
        external_hashes: &hashes,
        backend_class: backend_class.as_deref(),
    }
    .key();
    Ok(PlanNode {
        name: spec.name.clone(),
        kind: stage.kind().to_string(),
        code_version: stage.code_version(),
        stage_index,
        params: spec.params.clone(),
        canonical_params: prepared.canonical_params,
        inputs,
        external,
        backend_class,
        key,
        status: Status::Hit,
        origin: spec.origin.clone(),
        forced: false,
    })
}

/// A one-node plan for running a single stage outside a pipeline (`lpeft stage KIND`), with
/// inputs given as artifact keys.
pub fn single(
    spec: &StageSpec,
    registry: &Registry,
    store: &Store,
    inputs: BTreeMap<String, String>,
    backend: &str,
    force: bool,
) -> Result<Plan, PipelineError> {
    let Some((stage_index, stage)) = registry.get(&spec.kind) else {
        return Err(PipelineError::invalid(
            &spec.origin,
            format!(
                "unknown stage kind `{}` (known: {})",
                spec.kind,
                registry.kinds().join(", ")
            ),
        ));
    };
    check_slots(stage, inputs.keys().map(String::as_str)).map_err(|e| {
        PipelineError::Usage(match e {
            SlotError::Unknown { .. } => e.to_string(),
            SlotError::Unwired { slot } => {
                format!("kind `{}` needs `--input {slot}=KEY`", spec.kind)
            }
        })
    })?;
    let mut resolved = BTreeMap::new();
    for (slot, key) in inputs {
        resolved.insert(
            slot,
            InputRef {
                key: store.resolve(&key)?,
                from: None,
            },
        );
    }
    let mut node = resolve_node(spec, stage_index, stage, resolved, store, backend)?;
    node.forced = force;
    // No index record: a single stage runs because it is missing, or because it is forced.
    node.status = decide::status(&node, store, true, vec![], |node, published| {
        vec![if node.forced && published {
            RerunReason::Forced
        } else {
            RerunReason::Missing
        }]
    });
    Ok(Plan {
        pipeline: String::new(),
        nodes: vec![node],
        backend: backend.to_string(),
    })
}
