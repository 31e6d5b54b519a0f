//! One stage's run through the store: key lock, inputs opened (verified), staging directory,
//! the stage's own code, manifest and atomic publish.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use lpeft_schema::manifest::{ExternalFile, Manifest};
use lpeft_store::{KEY_FORMAT, Store, sys};

use super::{Observer, Outcome, RunOptions, panicked, record};
use crate::error::PipelineError;
use crate::plan::{Plan, PlanNode, Status};
use crate::registry::Registry;
use crate::stage::{InputArtifact, RunContext};

/// Run `node` on `device` (its slot's backend string; the plan's backend for stages off the
/// device), which the stage sees as its backend and the manifest records.
pub(super) fn run_node(
    node: &PlanNode,
    device: Option<&str>,
    plan: &Plan,
    registry: &Registry,
    store: &Store,
    observer: &dyn Observer,
    opts: RunOptions<'_>,
) -> Result<Outcome, PipelineError> {
    let backend = device.unwrap_or(&plan.backend);
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
    observer.started(node, device);
    let started_at = SystemTime::now();
    let t0 = Instant::now();
    let progress = observer.progress(node);
    let ctx = RunContext {
        kind: &node.kind,
        params: &node.params,
        inputs: &inputs,
        out_dir: staging.dir(),
        backend,
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
        backend: backend.to_string(),
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
        device: device.map(str::to_string),
    })
}
