//! Resolution: expanded stages + registry + store -> a [`Plan`] of keyed nodes, each a HIT or a
//! RUN with typed reasons. Resolving reads only stage parameters, external file stamps (hashing
//! a file only when its stamp is not cached) and store metadata; it writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use lpeft_schema::manifest::IndexRecord;
use lpeft_store::{KeyInputs, Store};
use serde_json::Value;

use crate::error::{Location, PipelineError};
use crate::file::{Pipeline, StageSpec, select};
use crate::registry::Registry;
use crate::stage::Stage;

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
/// `tch-cuda:0` and `tch-cuda:1` share artifacts but `flex` and `tch-cuda` do not. libtorch
/// classes carry `+fused3`: training there runs fused nodes (`lpeft_model::fused`) whose
/// dropout stream differs from the earlier elementary operations, so their artifacts differ;
/// version 2 of the nodes (layer-norm backward kernels, the LoRA scale inside the GEMMs, FFN
/// widths padded on CUDA, which draws LoRA dropout over the padded width) changed the last
/// bits again, and version 3 runs estimation (masks, recorded norm ratios) on them too, pads
/// LoRA ranks on CUDA and computes the LoRA GEMMs with `mm`/`addmm` (the scale on the small
/// factor), so `+fused` and `+fused2` artifacts are not reused.
pub fn backend_class(backend: &str) -> String {
    let class = backend
        .split(':')
        .next()
        .unwrap_or(backend)
        .trim()
        .to_ascii_lowercase();
    if class.starts_with("tch") {
        format!("{class}+fused3")
    } else {
        class
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
    let backend_class = prepared.backend_sensitive.then(|| backend_class(backend));
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

/// Topological order (stable: file order among independent stages); checks kinds, slots,
/// input names and cycles.
fn topological_order(
    stages: &[StageSpec],
    registry: &Registry,
) -> Result<Vec<usize>, PipelineError> {
    let by_name: BTreeMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for s in stages {
        let Some((_, stage)) = registry.get(&s.kind) else {
            return Err(PipelineError::invalid(
                &s.origin,
                format!(
                    "stage `{}`: unknown kind `{}` (known: {})",
                    s.name,
                    s.kind,
                    registry.kinds().join(", ")
                ),
            ));
        };
        let slots = stage.input_slots();
        for (slot, from) in &s.inputs {
            if !slots.contains(&slot.as_str()) {
                return Err(PipelineError::invalid(
                    &s.origin,
                    format!(
                        "stage `{}`: kind `{}` has no input slot `{slot}` (slots: {})",
                        s.name,
                        s.kind,
                        if slots.is_empty() {
                            "none".to_string()
                        } else {
                            slots.join(", ")
                        }
                    ),
                ));
            }
            if !by_name.contains_key(from.as_str()) {
                return Err(PipelineError::invalid(
                    &s.origin,
                    format!(
                        "stage `{}`: input `{slot}` refers to unknown stage `{from}`",
                        s.name
                    ),
                ));
            }
        }
        for slot in slots
            .iter()
            .filter(|slot| !stage.optional_slots().contains(slot))
        {
            if !s.inputs.contains_key(*slot) {
                return Err(PipelineError::invalid(
                    &s.origin,
                    format!("stage `{}`: input slot `{slot}` is not wired", s.name),
                ));
            }
        }
    }
    // Kahn's algorithm, always taking the lowest-index ready stage.
    let mut indegree: Vec<usize> = stages.iter().map(|s| s.inputs.len()).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for (i, s) in stages.iter().enumerate() {
        for from in s.inputs.values() {
            users[by_name[from.as_str()]].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..stages.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < stages.len() {
        let stuck: Vec<&str> = (0..stages.len())
            .filter(|i| indegree[*i] > 0)
            .map(|i| stages[i].name.as_str())
            .collect();
        let first = stages
            .iter()
            .find(|s| s.name == stuck[0])
            .expect("stuck stage exists");
        return Err(PipelineError::invalid(
            &first.origin,
            format!(
                "stages depend on each other in a cycle: {}",
                stuck.join(", ")
            ),
        ));
    }
    Ok(order)
}

/// Set each node's status from the store, the index and the options.
fn decide(plan: &mut Plan, store: &Store, opts: &PlanOptions) -> Result<(), PipelineError> {
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut forced = select(&opts.force, &names).map_err(PipelineError::Usage)?;
    let mut only = select(&opts.only, &names).map_err(PipelineError::Usage)?;
    if opts.downstream {
        if opts.force.is_empty() && opts.only.is_empty() {
            return Err(PipelineError::Usage(
                "--downstream needs --force or --only".into(),
            ));
        }
        forced = downstream_of(plan, &forced);
        only = downstream_of(plan, &only);
    }
    let restrict = !opts.only.is_empty();
    let mut unavailable: BTreeSet<String> = BTreeSet::new();
    for node in &mut plan.nodes {
        node.forced = forced.contains(&node.name);
        let published = store.contains(&node.key);
        let selected = !restrict || only.contains(&node.name);
        node.status = if published && !node.forced {
            match store.open_artifact(&node.key) {
                Ok(_) => Status::Hit,
                Err(e) => Status::Corrupt(e.to_string()),
            }
        } else {
            let reasons = reasons(node, store, &plan.pipeline, published);
            let blocked: Vec<String> = node
                .inputs
                .values()
                .filter_map(|i| i.from.clone())
                .filter(|f| unavailable.contains(f))
                .collect();
            if !selected {
                Status::Skip(reasons)
            } else if !blocked.is_empty() {
                Status::Blocked { inputs: blocked }
            } else {
                Status::Run(reasons)
            }
        };
        if matches!(
            node.status,
            Status::Skip(_) | Status::Blocked { .. } | Status::Corrupt(_)
        ) {
            unavailable.insert(node.name.clone());
        }
    }
    Ok(())
}

fn downstream_of(plan: &Plan, roots: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = roots.clone();
    for node in &plan.nodes {
        if node
            .inputs
            .values()
            .any(|i| i.from.as_ref().is_some_and(|f| out.contains(f)))
        {
            out.insert(node.name.clone());
        }
    }
    out
}

fn reasons(node: &PlanNode, store: &Store, pipeline: &str, published: bool) -> Vec<RerunReason> {
    if node.forced && published {
        return vec![RerunReason::Forced];
    }
    let mut out = Vec::new();
    if node.forced {
        out.push(RerunReason::Forced);
    }
    let Some(rec) = store.read_index(pipeline, &node.name) else {
        out.push(RerunReason::Missing);
        return out;
    };
    if rec.key == node.key {
        out.push(RerunReason::Missing);
        return out;
    }
    if rec.kind == node.kind && rec.code_version != node.code_version {
        out.push(RerunReason::StageCodeChanged {
            kind: node.kind.clone(),
            old: rec.code_version,
            new: node.code_version,
        });
    }
    let mut changes = Vec::new();
    diff_values(
        "",
        Some(&rec.params),
        Some(&node.canonical_params),
        &mut changes,
    );
    if !changes.is_empty() {
        out.push(RerunReason::ParamsChanged { changes });
    }
    for (slot, input) in &node.inputs {
        if rec.inputs.get(slot) != Some(&input.key) {
            out.push(RerunReason::InputChanged {
                slot: slot.clone(),
                from: input.from.clone(),
            });
        }
    }
    let old_hashes: BTreeSet<&String> = rec.external_files.values().collect();
    for e in &node.external {
        if !old_hashes.contains(&e.blake3) {
            out.push(RerunReason::ExternalChanged {
                path: e.path.display().to_string(),
            });
        }
    }
    if rec.external_files.len() != node.external.len()
        && !out
            .iter()
            .any(|r| matches!(r, RerunReason::ExternalChanged { .. }))
    {
        out.push(RerunReason::ExternalChanged {
            path: "(set of files)".into(),
        });
    }
    if rec.backend_class != node.backend_class {
        out.push(RerunReason::BackendChanged {
            old: rec.backend_class,
            new: node.backend_class.clone(),
        });
    }
    if out.is_empty() || (node.forced && out.len() == 1) {
        out.push(RerunReason::Missing);
    }
    out
}

/// Differences between two JSON values, as (path, old, new).
pub fn diff_values(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<ParamChange>,
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(&p, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a != b => out.push(ParamChange {
            path: if path.is_empty() {
                "(params)".into()
            } else {
                path.to_string()
            },
            old: a.cloned(),
            new: b.cloned(),
        }),
        _ => {}
    }
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
    let slots = stage.input_slots();
    for slot in inputs.keys() {
        if !slots.contains(&slot.as_str()) {
            return Err(PipelineError::Usage(format!(
                "kind `{}` has no input slot `{slot}` (slots: {})",
                spec.kind,
                if slots.is_empty() {
                    "none".to_string()
                } else {
                    slots.join(", ")
                }
            )));
        }
    }
    if let Some(missing) = slots
        .iter()
        .filter(|s| !stage.optional_slots().contains(s))
        .find(|s| !inputs.contains_key(**s))
    {
        return Err(PipelineError::Usage(format!(
            "kind `{}` needs `--input {missing}=KEY`",
            spec.kind
        )));
    }
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
    node.status = if store.contains(&node.key) && !force {
        match store.open_artifact(&node.key) {
            Ok(_) => Status::Hit,
            Err(e) => Status::Corrupt(e.to_string()),
        }
    } else if force && store.contains(&node.key) {
        Status::Run(vec![RerunReason::Forced])
    } else {
        Status::Run(vec![RerunReason::Missing])
    };
    Ok(Plan {
        pipeline: String::new(),
        nodes: vec![node],
        backend: backend.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::backend_class;

    #[test]
    fn backend_classes_drop_the_device_index_and_mark_fused_libtorch() {
        assert_eq!(backend_class("flex"), "flex");
        assert_eq!(backend_class("cuda:1"), "cuda");
        assert_eq!(backend_class("tch"), "tch+fused3");
        assert_eq!(backend_class("tch-cuda:0"), backend_class("TCH-CUDA:1"));
        assert_eq!(backend_class("tch-cuda:0"), "tch-cuda+fused3");
    }
}
