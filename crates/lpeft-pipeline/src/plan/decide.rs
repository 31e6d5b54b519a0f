//! Each node's status (HIT, RUN, SKIP, BLOCKED, CORRUPT) and its typed rerun reasons, and what
//! lies downstream of forced stages.

use super::*;

/// Set each node's status from the store, the index and the options.
pub(super) fn decide(
    plan: &mut Plan,
    store: &Store,
    opts: &PlanOptions,
) -> Result<(), PipelineError> {
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
        let selected = !restrict || only.contains(&node.name);
        let blocked: Vec<String> = node
            .inputs
            .values()
            .filter_map(|i| i.from.clone())
            .filter(|f| unavailable.contains(f))
            .collect();
        node.status = status(node, store, selected, blocked, |node, published| {
            reasons(node, store, &plan.pipeline, published)
        });
        if matches!(
            node.status,
            Status::Skip(_) | Status::Blocked { .. } | Status::Corrupt(_)
        ) {
            unavailable.insert(node.name.clone());
        }
    }
    Ok(())
}

/// The one status decision, for pipelines and single stages alike: a published artifact that
/// is not forced is a HIT (CORRUPT when it does not verify); any other node would run for the
/// `reasons` given whether its key is published, unless it is outside the selection (SKIP) or
/// an input will not exist (BLOCKED, naming the inputs' stages).
pub(super) fn status(
    node: &PlanNode,
    store: &Store,
    selected: bool,
    blocked: Vec<String>,
    reasons: impl FnOnce(&PlanNode, bool) -> Vec<RerunReason>,
) -> Status {
    let published = store.contains(&node.key);
    if published && !node.forced {
        return match store.open_artifact(&node.key) {
            Ok(_) => Status::Hit,
            Err(e) => Status::Corrupt(e.to_string()),
        };
    }
    let reasons = reasons(node, published);
    if !selected {
        Status::Skip(reasons)
    } else if !blocked.is_empty() {
        Status::Blocked { inputs: blocked }
    } else {
        Status::Run(reasons)
    }
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
