//! Execution: run the RUN nodes of a [`Plan`] in dependency order, backend-sensitive ones on
//! device slots (`schedule`), the others `jobs` at a time, each through the store (`node`: key
//! lock, staging directory, atomic publish), and record every resolved node in the store index.

mod node;
mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lpeft_store::Store;

pub use self::schedule::DeviceSlots;
use self::schedule::{Scheduler, Task};
use crate::error::PipelineError;
use crate::plan::{Plan, PlanNode, Status};
use crate::registry::Registry;
use crate::stage::{Progress, StageError};

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
        /// The device slot it ran on (backend-sensitive stages), for information only.
        device: Option<String>,
    },
    /// Not run (outside `--only`).
    Skipped,
}

/// Receives runner events; implemented by the CLI (progress bars, log lines) and by tests.
pub trait Observer: Sync {
    /// A node is about to run (after its key lock is held), on this device slot if it is
    /// backend-sensitive.
    fn started(&self, node: &PlanNode, device: Option<&str>);
    /// A ready node waits because every device slot is busy (said once per node).
    fn waiting_for_device(&self, _node: &PlanNode, _slots: &DeviceSlots) {}
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
    fn started(&self, _node: &PlanNode, _device: Option<&str>) {}
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
    /// Stages off the device at once (and device stages too when the device is the host's CPU).
    pub jobs: usize,
    /// At most this many backend-sensitive stages (estimation, fine-tuning: the ones that run
    /// on the device) at once, on [`execute`]'s one slot; `None`: only `jobs` limits them
    /// ([`execute_on`] takes [`DeviceSlots::per_slot`] instead). On one GPU, stages of one
    /// process share its queue, so running two at once makes each slower.
    pub device_jobs: Option<usize>,
    /// Write index records under this pipeline name (None for single-stage runs).
    pub record_as: Option<&'a str>,
}

/// Run a plan with the plan's backend as the one device slot (on the host's CPUs, so its
/// stages count against `jobs`; `device_jobs` of them at once). Refuses up front (touching
/// nothing) if any node is blocked or corrupt.
pub fn execute(
    plan: &Plan,
    registry: &Registry,
    store: &Store,
    observer: &dyn Observer,
    opts: RunOptions<'_>,
) -> Result<RunReport, PipelineError> {
    let slots = DeviceSlots::single(&plan.backend, opts.device_jobs);
    execute_on(plan, registry, store, observer, opts, &slots)
}

/// Run a plan with backend-sensitive stages pinned to `slots` (each slot's backend string is
/// what its stages see; `slots.per_slot` of them at once on one slot) and the others `jobs` at
/// a time. Keys do not change with the slots: they carry the backend class only.
pub fn execute_on(
    plan: &Plan,
    registry: &Registry,
    store: &Store,
    observer: &dyn Observer,
    opts: RunOptions<'_>,
    slots: &DeviceSlots,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    if slots.names.is_empty() {
        return Err(PipelineError::Usage("no device slots to run on".into()));
    }
    check_runnable(plan)?;
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
    for (i, node) in plan.nodes.iter().enumerate() {
        match node.status {
            Status::Hit => {
                outcomes[i] = Some(Outcome::Hit);
                observer.finished(node, &Outcome::Hit);
                record(store, node, opts)?;
            }
            Status::Skip(_) => outcomes[i] = Some(Outcome::Skipped),
            _ => {}
        }
    }
    let tasks = plan
        .nodes
        .iter()
        .map(|n| Task {
            deps: n
                .inputs
                .values()
                .filter_map(|inp| inp.from.as_deref().map(|f| index[f]))
                .collect(),
            device: on_device(n),
        })
        .collect();
    let mut scheduler = Scheduler::new(tasks, |i| outcomes[i].is_some(), opts.jobs, slots);

    let mut errors: Vec<PipelineError> = Vec::new();
    let mut told_waiting: BTreeSet<usize> = BTreeSet::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Outcome, PipelineError>)>();
        loop {
            for (i, slot) in scheduler.start() {
                let tx = tx.clone();
                let node = &plan.nodes[i];
                let device = slot.map(|s| slots.names[s].as_str());
                std::thread::Builder::new()
                    .name(format!("{STAGE_THREAD}{}", node.name))
                    .spawn_scoped(scope, move || {
                        // A panic outside the stage's own run (which run_node catches)
                        // becomes an error too, so the scheduler always hears back.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            node::run_node(node, device, plan, registry, store, observer, opts)
                        }))
                        .unwrap_or_else(|panic| Err(panicked(node, &panic)));
                        let _ = tx.send((i, result));
                    })
                    .expect("a stage thread starts");
            }
            for i in scheduler.waiting_for_slot() {
                if told_waiting.insert(i) {
                    observer.waiting_for_device(&plan.nodes[i], slots);
                }
            }
            if scheduler.running() == 0 {
                break;
            }
            let (i, result) = rx.recv().expect("a running stage reports back");
            scheduler.finish(i);
            match result {
                Ok(outcome) => {
                    observer.finished(&plan.nodes[i], &outcome);
                    outcomes[i] = Some(outcome);
                }
                Err(e) => {
                    // Running stages finish and publish; nothing new starts.
                    scheduler.stop();
                    errors.push(e);
                }
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

/// Refuses a plan with a blocked or corrupt node, naming each and what to do.
pub fn check_runnable(plan: &Plan) -> Result<(), PipelineError> {
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
    if refused.is_empty() {
        Ok(())
    } else {
        Err(PipelineError::Refused(refused.join("; ")))
    }
}

/// Names of the threads stages run on start with this, so a panic hook can tell a stage's
/// panic (reported by the runner as that stage's failure) from the program's own.
pub const STAGE_THREAD: &str = "stage ";

/// A stage's panic as its failure, with the panic's message.
pub(super) fn panicked(node: &PlanNode, panic: &Box<dyn std::any::Any + Send>) -> PipelineError {
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
pub(super) fn record(
    store: &Store,
    node: &PlanNode,
    opts: RunOptions<'_>,
) -> Result<(), PipelineError> {
    if let Some(pipeline) = opts.record_as {
        let current = store.read_index(pipeline, &node.name);
        if current.as_ref().is_none_or(|r| r.key != node.key) {
            store.write_index(&node.index_record(pipeline))?;
        }
    }
    Ok(())
}
