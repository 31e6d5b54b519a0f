//! The stages' dependency order, checking kinds, slots, input names and cycles.

use super::*;
use crate::stage::{SlotError, check_slots};

/// Topological order (stable: file order among independent stages); checks kinds, slots,
/// input names and cycles.
pub(super) fn topological_order(
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
        let slots = check_slots(stage, s.inputs.keys().map(String::as_str));
        let wiring =
            |e: &SlotError| PipelineError::invalid(&s.origin, format!("stage `{}`: {e}", s.name));
        for (slot, from) in &s.inputs {
            // An unknown slot is reported where the walk over the inputs reaches it, so an
            // earlier input's unknown stage still comes first.
            if let Err(e @ SlotError::Unknown { slot: unknown, .. }) = &slots
                && unknown == slot
            {
                return Err(wiring(e));
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
        if let Err(e) = &slots {
            return Err(wiring(e));
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
