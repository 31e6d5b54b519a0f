//! The subcommands. Errors are `anyhow` here (the binary); libraries use typed errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use lpeft_pipeline::file::{ExpandOptions, load};
use lpeft_pipeline::plan::{Plan, PlanOptions, resolve, single};
use lpeft_pipeline::run::{RunOptions, execute, execute_on};
use lpeft_pipeline::{Location, PipelineError, Registry, StageSpec};
use lpeft_store::{Store, VerifyMode};
use serde_json::Value;

use crate::cli::{Command, EncodeArgs, GcArgs, GlobalArgs, PipelineArgs, StageArgs, VerifyArgs};
use crate::devices::DeviceRequest;
use crate::output::{Reporter, short};
use crate::run_view::RunView;

pub enum Action {
    Builtin(Command),
    Stage(String, StageArgs),
}

pub fn dispatch(
    global: &GlobalArgs,
    action: Action,
    registry: &Registry,
    out: &Reporter,
) -> anyhow::Result<ExitCode> {
    let store = || {
        Store::open(&global.store)
            .with_context(|| format!("cannot open the store at {}", global.store.display()))
    };
    match action {
        Action::Builtin(Command::Plan(args)) => {
            let store = store()?;
            let plan = make_plan(&args.pipeline, global, registry, &store)?;
            if args.json {
                out.plan_json(&plan);
            } else {
                out.plan(&plan, &store, &args.pipeline.file.display().to_string());
            }
            store.flush();
        }
        Action::Builtin(Command::Run(args)) => {
            let store = store()?;
            let request = DeviceRequest {
                devices: &args.devices,
                backend: &global.backend,
                backend_given: global.backend_given,
                per_device: args.per_device(),
            };
            let (backend, slots) = crate::devices::resolve(&request, |class| {
                Ok(lpeft_model::device::device_count(class)?)
            })?;
            let global = GlobalArgs {
                backend,
                ..global.clone()
            };
            let plan = make_plan(&args.pipeline, &global, registry, &store)?;
            out.slots_note(&slots, args.jobs.into());
            let view = RunView { reporter: out };
            let opts = RunOptions {
                jobs: args.jobs.into(),
                device_jobs: slots.per_slot,
                record_as: Some(&plan.pipeline),
            };
            let report = execute_on(&plan, registry, &store, &view, opts, &slots)?;
            out.run_report(&plan, &report);
        }
        Action::Builtin(Command::Slurm(command)) => {
            crate::slurm::slurm(&command, global, registry, &store()?, out)?;
        }
        Action::Builtin(Command::Show(args)) => {
            let store = store()?;
            let key = store.resolve(&args.key)?;
            let artifact = store.open_artifact(&key)?;
            out.show(&artifact.manifest, args.json);
            store.flush();
        }
        Action::Builtin(Command::Lineage(args)) => {
            let store = store()?;
            let key = store.resolve(&args.key)?;
            let ok = lineage(&store, out, &key, None, 0, &mut BTreeSet::new());
            store.flush();
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Action::Builtin(Command::Verify(args)) => return verify(&store()?, out, &args),
        Action::Builtin(Command::Gc(args)) => gc(&store()?, out, &args, global, registry)?,
        Action::Builtin(Command::Report(args)) => {
            crate::report::report(&args, global, registry, &store()?, out)?;
        }
        Action::Builtin(Command::Compare(args)) => crate::report::compare_files(&args, out)?,
        Action::Builtin(Command::Stage(args)) => {
            run_stage(&args.kind, &args.args, global, registry, &store()?, out)?;
        }
        Action::Stage(kind, args) => run_stage(&kind, &args, global, registry, &store()?, out)?,
        Action::Builtin(Command::Encode(args)) => encode(&args, global, out)?,
        Action::Builtin(Command::Predict(args)) => {
            crate::predict::predict(&args, global, store, out)?;
        }
        Action::Builtin(Command::Export(args)) => {
            crate::export::export(&args, global, store, out)?;
        }
        Action::Builtin(Command::Doctor) => crate::setup::doctor(global, out),
        Action::Builtin(Command::FetchData(args)) => crate::setup::fetch_data(&args, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(args: &EncodeArgs, global: &GlobalArgs, out: &Reporter) -> anyhow::Result<()> {
    let device = lpeft_model::device::device(&global.backend)?;
    let tokenizer = lpeft_tokenizer::Tokenizer::from_file(&args.model)?;
    let model = lpeft_model::encode::load_pretrained_encoder(&args.model, &device)?;
    // Never more tokens than the model has positions for (RoBERTa's start after the pad id,
    // OPT's at row 2).
    let encoder = &model.spec.encoder;
    let offset = match encoder.family {
        lpeft_schema::model::Family::Roberta
        | lpeft_schema::model::Family::Mpnet
        | lpeft_schema::model::Family::Opt => 2,
        lpeft_schema::model::Family::Bert => 0,
    };
    let limit = encoder.max_position_embeddings.saturating_sub(offset);
    let max_length = args.max_length.map_or(limit, |m| m.min(limit));
    let encoded = tokenizer.encode(&args.text, args.pair.as_deref(), Some(max_length))?;
    if encoded.truncated {
        out.detail(format!(
            "note: the input was cut to {max_length} tokens ({})",
            if args.max_length.is_some_and(|m| m <= limit) {
                "--max-length".to_string()
            } else {
                format!("the model's {limit} positions")
            }
        ));
    }
    let result = lpeft_model::encode::encode_ids(&model, &encoded.ids, &encoded.type_ids, &device);
    lpeft_model::encode::write_encoding(&args.output, &result)?;
    out.line(format!(
        "wrote {} (last_hidden_state [1, {}, {}], input_ids [1, {}])",
        args.output.display(),
        encoded.ids.len(),
        result.hidden_size,
        encoded.ids.len()
    ));
    Ok(())
}

pub(crate) fn make_plan(
    args: &PipelineArgs,
    global: &GlobalArgs,
    registry: &Registry,
    store: &Store,
) -> anyhow::Result<Plan> {
    // Keys need only a known backend name; running a stage needs it compiled in too.
    lpeft_model::device::check_known(&global.backend)?;
    let mut set = Vec::new();
    for s in &args.set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set `{s}`: expected NAME=VALUE"))?;
        if k.trim().is_empty() {
            bail!("--set `{s}`: the variable name before `=` is empty");
        }
        set.push((k.trim().to_string(), parse_value(v)));
    }
    let pipeline = load(
        &args.file,
        &ExpandOptions {
            profile: args.profile.clone(),
            set,
        },
    )?;
    let opts = PlanOptions {
        backend: global.backend.clone(),
        force: args.force.clone(),
        only: args.only.clone(),
        downstream: args.downstream,
    };
    Ok(resolve(&pipeline, registry, store, &opts)?)
}

/// A command-line value: JSON if it parses (numbers, booleans, lists, quoted strings),
/// otherwise the text itself.
fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn lineage(
    store: &Store,
    out: &Reporter,
    key: &str,
    slot: Option<&str>,
    depth: usize,
    seen: &mut BTreeSet<String>,
) -> bool {
    match store.open_artifact(key) {
        Ok(a) => {
            let m = &a.manifest;
            let again = !seen.insert(key.to_string());
            let desc = format!(
                "{} v{} `{}` {}{}",
                m.kind,
                m.code_version,
                m.stage,
                lpeft_store::canonical_json(&m.params),
                if again { " (see above)" } else { "" }
            );
            out.lineage_line(depth, slot, key, &desc);
            for e in &m.external_files {
                out.lineage_line(depth + 1, Some("file"), &e.blake3, &e.path);
            }
            let mut ok = true;
            if !again {
                for (s, k) in &m.inputs {
                    ok &= lineage(store, out, k, Some(s), depth + 1, seen);
                }
            }
            ok
        }
        Err(e) => {
            out.lineage_line(depth, slot, key, &format!("UNREADABLE: {e}"));
            false
        }
    }
}

fn verify(store: &Store, out: &Reporter, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mode = if args.fast {
        VerifyMode::Cached
    } else {
        VerifyMode::Deep
    };
    let (checked, issues) = match &args.key {
        Some(k) => {
            let key = store.resolve(k)?;
            let issues = match store.verify(&key, mode) {
                Ok(_) => vec![],
                Err(error) => vec![lpeft_store::VerifyIssue { key, error }],
            };
            (1, issues)
        }
        None => store.verify_all(mode)?,
    };
    store.flush();
    out.verify(checked, &issues);
    Ok(if issues.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn gc(
    store: &Store,
    out: &Reporter,
    args: &GcArgs,
    global: &GlobalArgs,
    registry: &Registry,
) -> anyhow::Result<()> {
    let mut roots = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.pipelines)
        .with_context(|| format!("cannot list pipeline files in {}", args.pipelines.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let parsed = lpeft_pipeline::file::parse(file, &text)?;
        let mut profiles: Vec<Option<String>> = vec![None];
        profiles.extend(parsed.profiles.keys().cloned().map(Some));
        for profile in profiles {
            let pipeline = load(
                file,
                &ExpandOptions {
                    profile: profile.clone(),
                    set: vec![],
                },
            )?;
            let plan = resolve(
                &pipeline,
                registry,
                store,
                &PlanOptions::new(global.backend.clone()),
            )
            .with_context(|| {
                format!(
                    "gc keeps what pipeline files reference, but {} (profile {}) does not resolve; \
                         fix it or move it out of {}",
                    file.display(),
                    profile.as_deref().unwrap_or("default"),
                    args.pipelines.display()
                )
            })?;
            roots.extend(plan.nodes.iter().map(|n| n.key.clone()));
            roots.extend(store.index_keys(&pipeline.name)?);
        }
    }
    tracing::info!(
        files = files.len(),
        roots = roots.len(),
        "gc roots collected"
    );
    let report = store.gc(&roots, args.dry_run)?;
    out.gc(&report, args.dry_run);
    Ok(())
}

fn run_stage(
    kind: &str,
    args: &StageArgs,
    global: &GlobalArgs,
    registry: &Registry,
    store: &Store,
    out: &Reporter,
) -> anyhow::Result<()> {
    let (mut params, origin) = match &args.config {
        Some(path) => (read_config(path)?, Location::file_only(path)),
        None => (
            Value::Object(Default::default()),
            Location::file_only("<command line>"),
        ),
    };
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param `{p}`: expected NAME=VALUE"))?;
        set_path(&mut params, k.trim(), parse_value(v))?;
    }
    let mut inputs = BTreeMap::new();
    for i in &args.inputs {
        let (slot, key) = i
            .split_once('=')
            .with_context(|| format!("--input `{i}`: expected SLOT=KEY"))?;
        inputs.insert(slot.trim().to_string(), key.trim().to_string());
    }
    let spec = StageSpec {
        name: kind.to_string(),
        kind: kind.to_string(),
        params,
        inputs: BTreeMap::new(),
        origin,
    };
    let plan = single(&spec, registry, store, inputs, &global.backend, args.force)?;
    let node = &plan.nodes[0];
    if args.plan {
        out.stage_result(node, None);
        store.flush();
        return Ok(());
    }
    let view = RunView { reporter: out };
    let report = execute(
        &plan,
        registry,
        store,
        &view,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    )?;
    out.stage_result(node, Some(&report.outcomes[0].1));
    tracing::info!(key = short(&node.key), "done");
    Ok(())
}

fn read_config(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = ron::from_str(&text).map_err(|e| PipelineError::Syntax {
        at: Location {
            file: path.to_path_buf(),
            line: e.span.start.line,
            col: e.span.start.col,
        },
        message: e.code.to_string(),
    })?;
    if !value.is_object() {
        bail!(
            "{}: the config must be a map of parameters, e.g. {{ \"task\": \"rte\" }}",
            path.display()
        );
    }
    Ok(value)
}

fn set_path(params: &mut Value, path: &str, value: Value) -> anyhow::Result<()> {
    let mut cur = params;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = cur else {
            bail!("--param {path}: `{}` is not a map", parts[..i].join("."));
        };
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}
