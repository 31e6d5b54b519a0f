//! Execution: run the RUN nodes of a [`Plan`] in dependency order, `jobs` at a time, each
//! through the store (key lock, staging directory, atomic publish) and record every resolved
//! node in the store index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use lpeft_schema::manifest::{ExternalFile, Manifest};
use lpeft_store::{KEY_FORMAT, Store, sys};

use crate::error::PipelineError;
use crate::plan::{Plan, PlanNode, Status};
use crate::registry::Registry;
use crate::stage::{InputArtifact, Progress, RunContext, StageError};

/// What happened to one node.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Published before this run started.
    Hit,
    /// Produced by a concurrent run while this one waited for the key.
    ConcurrentHit,
    /// Produced by this run.
    Ran {
        wall: Duration,
        bytes: u64,
        figures: serde_json::Value,
    },
    /// Not run (outside `--only`).
    Skipped,
}

/// Receives runner events; implemented by the CLI (progress bars, log lines) and by tests.
pub trait Observer: Sync {
    /// A node is about to run (after its key lock is held).
    fn started(&self, node: &PlanNode);
    /// A node finished (or was a hit).
    fn finished(&self, node: &PlanNode, outcome: &Outcome);
    /// The progress sink for a running node.
    fn progress(&self, node: &PlanNode) -> Box<dyn Progress + '_>;
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, _n: u64, _message: &str) {}
    fn finish(&self) {}
}

/// An observer that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn started(&self, _node: &PlanNode) {}
    fn finished(&self, _node: &PlanNode, _outcome: &Outcome) {}
    fn progress(&self, _node: &PlanNode) -> Box<dyn Progress + '_> {
        Box::new(NoProgress)
    }
}

/// The result of a run: one outcome per node, in plan order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcomes: Vec<(String, Outcome)>,
    pub wall: Duration,
}

impl RunReport {
    pub fn ran(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Ran { .. }))
            .count()
    }
    pub fn hits(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Hit | Outcome::ConcurrentHit))
            .count()
    }
}

/// Options of one execution.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    pub jobs: usize,
    /// At most this many backend-sensitive stages (estimation, fine-tuning: the ones that run
    /// on the device) at once, within `jobs`; `None`: only `jobs` limits them. On one GPU,
    /// stages of one process share its queue, so running two at once makes each slower.
    pub device_jobs: Option<usize>,
    /// Write index records under this pipeline name (None for single-stage runs).
    pub record_as: Option<&'a str>,
}

/// Run a plan. Refuses up front (touching nothing) if any node is blocked or corrupt.
pub fn execute(
    plan: &Plan,
    registry: &Registry,
    store: &Store,
    observer: &dyn Observer,
    opts: RunOptions<'_>,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let refused: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| match &n.status {
            Status::Blocked { inputs } => Some(format!(
                "`{}` needs {} which will not be produced (outside --only?)",
                n.name,
                inputs.join(", ")
            )),
            Status::Corrupt(e) => Some(format!(
                "`{}`: {e}; rebuild it with `--force {}` (or remove it with `lpeft gc`)",
                n.name, n.name
            )),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        return Err(PipelineError::Refused(refused.join("; ")));
    }
    let _store_lock = store.lock_shared()?;
    for path in store.clean_stale_tmp()? {
        tracing::info!(path = %path.display(), "removed what a killed run left in tmp/");
    }
    // A gc may have run between planning and taking the lock.
    let gone: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.status == Status::Hit && !store.contains(&n.key))
        .map(|n| n.name.as_str())
        .collect();
    if !gone.is_empty() {
        return Err(PipelineError::Refused(format!(
            "the store changed while planning (a gc?): {} no longer present; run again",
            gone.join(", ")
        )));
    }

    let index: BTreeMap<&str, usize> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.nodes.len()];
    let mut waiting: BTreeSet<usize> = BTreeSet::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        match node.status {
            Status::Hit => {
                outcomes[i] = Some(Outcome::Hit);
                observer.finished(node, &Outcome::Hit);
                record(store, node, opts)?;
            }
            Status::Skip(_) => outcomes[i] = Some(Outcome::Skipped),
            _ => {
                waiting.insert(i);
            }
        }
    }

    let jobs = opts.jobs.max(1);
    let mut errors: Vec<PipelineError> = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Outcome, PipelineError>)>();
        let (mut running, mut running_device) = (0usize, 0usize);
        loop {
            if errors.is_empty() {
                let mut device_free = opts
                    .device_jobs
                    .map_or(usize::MAX, |d| d.max(1).saturating_sub(running_device));
                let ready: Vec<usize> = waiting
                    .iter()
                    .copied()
                    .filter(|&i| {
                        plan.nodes[i].inputs.values().all(|inp| match &inp.from {
                            Some(from) => outcomes[index[from.as_str()]].is_some(),
                            None => true,
                        })
                    })
                    .filter(|&i| {
                        if !on_device(&plan.nodes[i]) {
                            return true;
                        }
                        let free = device_free > 0;
                        device_free = device_free.saturating_sub(1);
                        free
                    })
                    .take(jobs - running)
                    .collect();
                for i in ready {
                    waiting.remove(&i);
                    running += 1;
                    running_device += usize::from(on_device(&plan.nodes[i]));
                    let tx = tx.clone();
                    let node = &plan.nodes[i];
                    std::thread::Builder::new()
                        .name(format!("{STAGE_THREAD}{}", node.name))
                        .spawn_scoped(scope, move || {
                            // A panic outside the stage's own run (which run_node catches)
                            // becomes an error too, so the scheduler always hears back.
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    run_node(node, plan, registry, store, observer, opts)
                                }))
                                .unwrap_or_else(|panic| Err(panicked(node, &panic)));
                            let _ = tx.send((i, result));
                        })
                        .expect("a stage thread starts");
                }
            }
            if running == 0 {
                break;
            }
            let (i, result) = rx.recv().expect("a running stage reports back");
            running -= 1;
            running_device -= usize::from(on_device(&plan.nodes[i]));
            match result {
                Ok(outcome) => {
                    observer.finished(&plan.nodes[i], &outcome);
                    outcomes[i] = Some(outcome);
                }
                Err(e) => errors.push(e),
            }
        }
    });
    store.flush();
    match errors.len() {
        0 => {}
        1 => return Err(errors.pop().expect("one error")),
        _ => return Err(PipelineError::Several(errors)),
    }
    Ok(RunReport {
        outcomes: plan
            .nodes
            .iter()
            .zip(outcomes)
            .map(|(n, o)| (n.name.clone(), o.unwrap_or(Outcome::Skipped)))
            .collect(),
        wall: started.elapsed(),
    })
}

/// Names of the threads stages run on start with this, so a panic hook can tell a stage's
/// panic (reported by the runner as that stage's failure) from the program's own.
pub const STAGE_THREAD: &str = "stage ";

/// A stage's panic as its failure, with the panic's message.
fn panicked(node: &PlanNode, panic: &Box<dyn std::any::Any + Send>) -> PipelineError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    PipelineError::StageFailed {
        stage: node.name.clone(),
        source: StageError::Failed {
            message: format!("panicked: {message}"),
            source: None,
        },
    }
}

/// Whether a node runs on the backend's device (its key carries the backend class).
fn on_device(node: &PlanNode) -> bool {
    node.backend_class.is_some()
}

/// Record the node's resolution in the index (skipped when the record already names this key,
/// so an unchanged pipeline writes nothing).
fn record(store: &Store, node: &PlanNode, opts: RunOptions<'_>) -> Result<(), PipelineError> {
    if let Some(pipeline) = opts.record_as {
        let current = store.read_index(pipeline, &node.name);
        if current.as_ref().is_none_or(|r| r.key != node.key) {
            store.write_index(&node.index_record(pipeline))?;
        }
    }
    Ok(())
}

fn run_node(
    node: &PlanNode,
    plan: &Plan,
    registry: &Registry,
    store: &Store,
    observer: &dyn Observer,
    opts: RunOptions<'_>,
) -> Result<Outcome, PipelineError> {
    let lock = store.lock_key(&node.key)?;
    if store.contains(&node.key) && !node.forced {
        // Another process produced it while we waited; readers verify it as usual.
        store.open_artifact(&node.key)?;
        record(store, node, opts)?;
        return Ok(Outcome::ConcurrentHit);
    }
    let mut inputs = BTreeMap::new();
    for (slot, input) in &node.inputs {
        let artifact = store.open_artifact(&input.key)?;
        inputs.insert(
            slot.clone(),
            InputArtifact {
                key: artifact.key,
                kind: artifact.manifest.kind,
                dir: artifact.dir,
            },
        );
    }
    let stage = registry.by_index(node.stage_index);
    let staging = store.begin(&lock)?;
    observer.started(node);
    let started_at = SystemTime::now();
    let t0 = Instant::now();
    let progress = observer.progress(node);
    let ctx = RunContext {
        kind: &node.kind,
        params: &node.params,
        inputs: &inputs,
        out_dir: staging.dir(),
        backend: &plan.backend,
        progress: progress.as_ref(),
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.run(&ctx)));
    let summary = match ran {
        Ok(Ok(s)) => s,
        failed => {
            // Nothing half-written stays behind, whether the stage failed or panicked.
            let _ = std::fs::remove_dir_all(staging.dir());
            return Err(match failed {
                Ok(Err(source)) => PipelineError::StageFailed {
                    stage: node.name.clone(),
                    source,
                },
                Err(panic) => panicked(node, &panic),
                Ok(Ok(_)) => unreachable!("matched above"),
            });
        }
    };
    drop(progress);
    let wall = t0.elapsed();
    let manifest = Manifest {
        format: 0,
        key: node.key.clone(),
        key_format: KEY_FORMAT,
        kind: node.kind.clone(),
        stage: node.name.clone(),
        code_version: node.code_version,
        params: node.canonical_params.clone(),
        inputs: node
            .inputs
            .iter()
            .map(|(s, i)| (s.clone(), i.key.clone()))
            .collect(),
        external_files: node
            .external
            .iter()
            .map(|e| ExternalFile {
                path: e.path.display().to_string(),
                size: e.size,
                blake3: e.blake3.clone(),
            })
            .collect(),
        seed: node
            .canonical_params
            .get("seed")
            .and_then(serde_json::Value::as_u64),
        backend: plan.backend.clone(),
        backend_class: node.backend_class.clone(),
        host: sys::host_name(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: sys::rfc3339(started_at),
        finished_at: sys::rfc3339(SystemTime::now()),
        wall_seconds: wall.as_secs_f64(),
        peak_rss_bytes: sys::peak_rss_bytes(),
        files: vec![],
        figures: summary.figures,
        run_reasons: match &node.status {
            Status::Run(reasons) => reasons.iter().map(ToString::to_string).collect(),
            _ => vec![],
        },
    };
    let manifest = store.publish(staging, &lock, manifest)?;
    drop(lock);
    record(store, node, opts)?;
    let bytes = manifest.files.iter().map(|f| f.size).sum::<u64>();
    Ok(Outcome::Ran {
        wall,
        bytes,
        figures: manifest.figures,
    })
}
