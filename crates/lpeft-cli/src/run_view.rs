//! What `lpeft run` prints while it runs: where estimation and fine-tuning stages go (device
//! slots), each stage as it starts, waits for a device, and finishes.

use lpeft_pipeline::plan::{PlanNode, Status};
use lpeft_pipeline::run::{DeviceSlots, Observer, Outcome};
use lpeft_pipeline::stage::Progress;

use crate::output::{NAME_W, Reporter, bytes, figures_brief, secs, short};

/// Runner events → result lines and progress bars.
pub struct RunView<'a> {
    pub reporter: &'a Reporter,
}

impl Observer for RunView<'_> {
    fn started(&self, node: &PlanNode, device: Option<&str>) {
        tracing::info!(stage = %node.name, key = short(&node.key), device, "running");
        if let Status::Run(reasons) = &node.status {
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            let on = device.map(|d| format!("  [on {d}]")).unwrap_or_default();
            self.reporter.detail(format!(
                "  RUN     {:<NAME_W$} {}  {}{on}",
                node.name,
                short(&node.key),
                why.join("; ")
            ));
        }
    }

    fn waiting_for_device(&self, node: &PlanNode, slots: &DeviceSlots) {
        let per = slots
            .per_slot
            .map_or("any number of".to_string(), |p| p.to_string());
        self.reporter.detail(format!(
            "  WAIT    {:<NAME_W$} {}  every device is busy ({}; {per} stage(s) each, --per-device to share)",
            node.name,
            short(&node.key),
            slots.names.join(", ")
        ));
    }

    fn finished(&self, node: &PlanNode, outcome: &Outcome) {
        let head = format!("{:<NAME_W$} {}", node.name, short(&node.key));
        let r = self.reporter;
        match outcome {
            Outcome::Hit => r.detail(format!("  HIT     {head}")),
            Outcome::ConcurrentHit => {
                r.detail(format!("  HIT     {head}  (produced by a concurrent run)"))
            }
            Outcome::Ran {
                wall,
                bytes: b,
                figures,
                device,
            } => r.detail(format!(
                "  RAN     {head}  {}, {}{}  {}",
                secs(*wall),
                bytes(*b),
                device
                    .as_deref()
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default(),
                figures_brief(figures)
            )),
            Outcome::Skipped => {}
        }
    }

    fn progress(&self, node: &PlanNode) -> Box<dyn Progress + '_> {
        Box::new(self.reporter.bar(&node.name))
    }
}

impl Reporter {
    /// How `lpeft run` places estimation and fine-tuning stages, said before it starts.
    pub fn slots_note(&self, slots: &DeviceSlots, jobs: usize) {
        let per = slots.per_slot.unwrap_or(usize::MAX);
        let devices = slots.names.join(", ");
        if slots.on_host {
            if per < jobs {
                self.detail(format!(
                    "note: at most {per} estimation/fine-tuning stage(s) at once on {devices} (--per-device: they share the backend's random stream); --jobs {jobs} applies to all stages"
                ));
            }
        } else {
            self.detail(format!(
                "note: estimation/fine-tuning stages run {per} at a time on each of {} device(s) ({devices}), the others wait for a free one (--per-device N to share a device); --jobs {jobs} applies to the other stages",
                slots.names.len()
            ));
        }
        if per > 1 && per != usize::MAX {
            self.detail(format!(
                "note: --per-device {per}: concurrent training stages on one device share its random stream, so their results depend on timing"
            ));
        }
        if slots.names.len() > 1 {
            self.detail(
                "note: each training stage seeds only its own device's random stream, but that has not been checked on several GPUs yet (docs/cluster.md): results may depend on timing; for bit-exact reruns, one process per GPU (`lpeft slurm`, or CUDA_VISIBLE_DEVICES=i lpeft run --only ...)",
            );
        }
    }
}
