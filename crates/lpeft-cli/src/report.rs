//! `lpeft report` and `lpeft compare`: result tables and plots from the fine-tuning artifacts a
//! pipeline's plan points at, and the difference of two result sets.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lpeft_eval::masks::{MaskRecords, read_masks};
use lpeft_eval::report::{ResultSet, compare};
use lpeft_pipeline::Registry;
use lpeft_pipeline::plan::Plan;
use lpeft_schema::results::RunResult;
use lpeft_store::Store;

use crate::cli::{CompareArgs, GlobalArgs, PipelineArgs, ReportArgs};
use crate::commands::make_plan;
use crate::output::{Reporter, short};

/// Stage kind whose artifacts hold a run's `result.json`, and that file: the fine-tune stage's own.
pub use lpeft_finetune::stage::{KIND as FINETUNE_KIND, RESULT_FILE};

/// What the plan's artifacts hold.
#[derive(Debug, Default)]
pub struct Collected {
    pub runs: Vec<RunResult>,
    /// Fine-tuning stages without a readable result.
    pub missing: Vec<String>,
    /// Masks of the estimation stages in the store, by stage name.
    pub masks: Vec<(String, MaskRecords)>,
    /// Why a stage's artifact gave nothing (not in the store, damaged, unreadable).
    pub notes: Vec<String>,
}

/// Reads, through the store's verifying `open_artifact`, the `result.json` of every
/// fine-tuning stage of the plan and the masks of every estimation stage that is in the store.
pub fn collect(plan: &Plan, store: &Store) -> Collected {
    let mut c = Collected::default();
    for node in &plan.nodes {
        let is_finetune = node.kind == FINETUNE_KIND;
        let is_estimate = node.kind == lpeft_estimate::stage::KIND;
        if !is_finetune && !is_estimate {
            continue;
        }
        if !store.contains(&node.key) {
            if is_finetune {
                c.missing.push(node.name.clone());
                c.notes.push(format!(
                    "{} ({}): not in the store ({})",
                    node.name,
                    short(&node.key),
                    node.status.label()
                ));
            }
            continue;
        }
        let read = store
            .open_artifact(&node.key)
            .map_err(|e| e.to_string())
            .and_then(|a| {
                if is_finetune {
                    read_result(&a.dir.join(RESULT_FILE)).map(|r| c.runs.push(r))
                } else {
                    let path = a.dir.join(lpeft_estimate::artifact::MASKS_FILE);
                    read_masks(&path)
                        .map(|m| c.masks.push((node.name.clone(), m)))
                        .map_err(|e| e.to_string())
                }
            });
        if let Err(e) = read {
            if is_finetune {
                c.missing.push(node.name.clone());
            }
            c.notes
                .push(format!("{} ({}): {e}", node.name, short(&node.key)));
        }
    }
    c
}

fn read_result(path: &Path) -> Result<RunResult, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn report(
    args: &ReportArgs,
    global: &GlobalArgs,
    registry: &Registry,
    store: &Store,
    out: &Reporter,
) -> anyhow::Result<()> {
    let pipeline = PipelineArgs {
        file: args.file.clone(),
        profile: args.profile.clone(),
        set: args.set.clone(),
        force: vec![],
        only: vec![],
        downstream: false,
    };
    let plan = make_plan(&pipeline, global, registry, store)?;
    let found = collect(&plan, store);
    store.flush();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&plan.pipeline));
    if found.runs.is_empty() {
        // Empty tables over an earlier report would lose it: say so instead.
        anyhow::bail!(
            "no fine-tuning results of this pipeline{} are in the store ({} fine-tuning stages, none run{}); nothing written, {} left as it was",
            args.profile
                .as_ref()
                .map_or(String::new(), |p| format!(" with profile `{p}`")),
            found.missing.len(),
            if args.set.is_empty() {
                String::new()
            } else {
                format!(" with --set {}", args.set.join(" --set "))
            },
            dir.display()
        );
    }
    let set = ResultSet::new(&plan.pipeline, &found.runs, found.missing.clone());
    let written = lpeft_eval::write_report(&dir, &set, &found.masks)
        .with_context(|| format!("cannot write the report into {}", dir.display()))?;
    for note in &found.notes {
        out.detail(format!("note: {note}"));
    }
    out.line(set.markdown().trim_end());
    let finetune = plan
        .nodes
        .iter()
        .filter(|n| n.kind == FINETUNE_KIND)
        .count();
    out.line(format!(
        "report: {} of {finetune} fine-tuning runs found ({} missing) in {} task × method cells, \
         {} mask sets; wrote {} files to {}",
        found.runs.len(),
        found.missing.len(),
        set.rows.len(),
        found.masks.len(),
        written.len(),
        dir.display()
    ));
    Ok(())
}

fn read_set(path: &Path) -> anyhow::Result<ResultSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a results.json written by `lpeft report`",
            path.display()
        )
    })
}

pub fn compare_files(args: &CompareArgs, out: &Reporter) -> anyhow::Result<()> {
    let a = read_set(&args.a)?;
    let b = read_set(&args.b)?;
    let c = compare(&a, &b);
    if args.json {
        out.line(serde_json::to_string_pretty(&c).expect("comparisons serialize"));
    } else {
        out.line(
            c.markdown(&args.a.display().to_string(), &args.b.display().to_string())
                .trim_end(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::Path;

    use lpeft_pipeline::file::{ExpandOptions, load_str};
    use lpeft_pipeline::plan::{PlanOptions, resolve};
    use lpeft_pipeline::run::{RunOptions, Silent, execute};
    use lpeft_pipeline::stage::{Params, Prepared, RunContext, RunSummary, Stage, StageError};
    use lpeft_schema::results::{Efficiency, RunResult};

    use super::*;

    /// A `finetune` stand-in: writes `result.json` from its parameters.
    struct FakeFinetune;

    impl Stage for FakeFinetune {
        fn kind(&self) -> &'static str {
            FINETUNE_KIND
        }
        fn code_version(&self) -> u32 {
            1
        }
        fn input_slots(&self) -> &'static [&'static str] {
            &[]
        }
        fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
            Ok(Prepared {
                canonical_params: params.clone(),
                external_files: vec![],
                backend_sensitive: false,
            })
        }
        fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
            let p = ctx.params;
            let score = p["score"].as_f64().unwrap();
            let result = RunResult {
                task: p["task"].as_str().unwrap().to_owned(),
                method: p["method"].as_str().unwrap().to_owned(),
                seed: p["seed"].as_u64().unwrap(),
                epochs: vec![],
                best_epoch: 1,
                best_main_score: score,
                best_metrics: BTreeMap::from([("accuracy".to_owned(), score)]),
                efficiency: Efficiency {
                    total_params: 1000,
                    trainable_params: 10,
                    backbone_params: 600,
                    backbone_params_original: 1000,
                    backbone_pruned_pct: p["pruned"].as_f64().unwrap(),
                    train_seconds_per_step: 0.5,
                    train_examples_per_second: 64.0,
                    inference_examples_per_second: 256.0,
                    peak_memory_bytes: 1 << 20,
                    memory_kind: "process_rss".to_owned(),
                    backend: "flex".to_owned(),
                    host: "test".to_owned(),
                },
                wall_seconds: 1.0,
            };
            let json = serde_json::to_string(&result).unwrap();
            std::fs::write(ctx.out_dir.join(RESULT_FILE), json)?;
            Ok(RunSummary::default())
        }
    }

    /// An `estimate` stand-in: `masks.safetensors` with 2 layers × 2 heads, 1 record.
    struct FakeEstimate;

    impl Stage for FakeEstimate {
        fn kind(&self) -> &'static str {
            lpeft_estimate::stage::KIND
        }
        fn code_version(&self) -> u32 {
            1
        }
        fn input_slots(&self) -> &'static [&'static str] {
            &[]
        }
        fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
            FakeFinetune.prepare(params)
        }
        fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
            use safetensors::{Dtype, tensor::TensorView};
            let heads: Vec<u8> = [1.0f32, 0.5, 0.25, 0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let view = TensorView::new(Dtype::F32, vec![1, 2, 2], &heads).unwrap();
            let views = HashMap::from([("head_masks".to_owned(), view)]);
            let path = ctx.out_dir.join(lpeft_estimate::artifact::MASKS_FILE);
            safetensors::serialize_to_file(views, None, &path).unwrap();
            Ok(RunSummary::default())
        }
    }

    fn registry() -> Registry {
        Registry::new(vec![Box::new(FakeFinetune), Box::new(FakeEstimate)])
    }

    fn plan(store: &Store, text: &str) -> Plan {
        let env = |_: &str| None;
        let pipeline = load_str(
            Path::new("t.ron"),
            text,
            &ExpandOptions {
                profile: None,
                set: vec![],
            },
            &env,
        )
        .unwrap();
        resolve(&pipeline, &registry(), store, &PlanOptions::new("flex")).unwrap()
    }

    const STAGES: &str = r#"
        (name: "est", kind: "estimate", params: {}),
        (name: "ft-{method}-{seed}", kind: "finetune",
         sweep: { "method": ["lora", "light"], "seed": [1, 2] },
         params: { "task": "glue/rte", "method": "{method}", "seed": "{seed}",
                   "score": 0.5, "pruned": 0.0 }),
    "#;

    fn pipeline(extra: &str) -> String {
        format!("Pipeline(name: \"t\", stages: [{STAGES}{extra}])")
    }

    #[test]
    fn collects_results_masks_and_missing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let ran = plan(&store, &pipeline(""));
        let opts = RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        };
        execute(&ran, &registry(), &store, &Silent, opts).unwrap();

        // One more fine-tuning stage that never ran.
        let extra = r#"(name: "ft-late", kind: "finetune", params: { "task": "glue/rte",
            "method": "late", "seed": 1, "score": 0.9, "pruned": 40.0 }),"#;
        let p = plan(&store, &pipeline(extra));
        let c = collect(&p, &store);
        assert_eq!(c.runs.len(), 4);
        assert_eq!(c.missing, ["ft-late"]);
        assert!(c.notes[0].starts_with("ft-late ("), "{:?}", c.notes);
        assert!(
            c.notes[0].ends_with("not in the store (RUN)"),
            "{:?}",
            c.notes
        );
        assert_eq!(c.masks.len(), 1);
        assert_eq!(c.masks[0].0, "est");
        assert!(c.masks[0].1.heads.is_some() && c.masks[0].1.ffn.is_none());

        let set = ResultSet::new(&p.pipeline, &c.runs, c.missing.clone());
        assert_eq!(set.methods(), ["lora", "light"]);
        assert_eq!(set.rows[0].seeds, [1, 2]);
        let out = dir.path().join("results");
        let written = lpeft_eval::write_report(&out, &set, &c.masks).unwrap();
        assert_eq!(written.len(), 5, "{written:?}");
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        assert!(
            md.contains("| glue/rte | 50.00 ± 0.00 (2) | 50.00 ± 0.00 (2) |"),
            "{md}"
        );
        assert!(
            md.contains("Missing: 1 run not in the store: ft-late."),
            "{md}"
        );

        // A damaged result is refused by the store's verification and counted as missing.
        let key = &p.nodes.iter().find(|n| n.name == "ft-lora-1").unwrap().key;
        let file = store.object_dir(key).join(RESULT_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, text.replace("glue/rte", "glue/xxx")).unwrap();
        let c = collect(&p, &store);
        assert_eq!(c.runs.len(), 3);
        assert_eq!(c.missing, ["ft-lora-1", "ft-late"]);
        assert!(
            c.notes.iter().any(|n| n.starts_with("ft-lora-1 (")),
            "{:?}",
            c.notes
        );
    }
}
