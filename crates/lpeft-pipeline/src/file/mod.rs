//! Reading pipeline files: RON -> [`PipelineFile`] -> expanded [`StageSpec`]s.
//!
//! Expansion order: environment references `${NAME:-default}` in every string, then the
//! selected profile and `--set` overrides on top of `vars`, then per stage the sweep
//! combinations, `{var}` substitution in names, inputs and string parameters, and `with`
//! merges. The result is a flat list of uniquely named stages, each with the file position of
//! the entry it came from. Nothing here touches the store or runs a stage.
//!
//! Here the expansion itself; `template.rs` has the `${ENV}` and `{var}` languages,
//! `positions.rs` finds the file position of an entry for error messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lpeft_schema::pipeline::{PipelineFile, StageEntry, SweepValues, Value};

use crate::error::{Location, PipelineError};

mod positions;
mod template;

use positions::{field_offset, find_position, shift};
use template::{closest, resolve_var_references};
pub use template::{expand_env, substitute};

/// A stage after expansion, ready to be resolved against the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    pub name: String,
    pub kind: String,
    pub params: Value,
    /// Input slot -> producing stage name.
    pub inputs: BTreeMap<String, String>,
    pub origin: Location,
}

/// An expanded pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub path: PathBuf,
    pub stages: Vec<StageSpec>,
}

/// Choices made on the command line that shape expansion.
#[derive(Debug, Clone, Default)]
pub struct ExpandOptions {
    /// Profile to apply on top of `vars`.
    pub profile: Option<String>,
    /// `--set var=value` overrides, applied last.
    pub set: Vec<(String, Value)>,
}

/// Parse RON text into the as-written form; errors carry file:line:col.
pub fn parse(path: &Path, text: &str) -> Result<PipelineFile, PipelineError> {
    ron::Options::default()
        .with_recursion_limit(MAX_DEPTH)
        .from_str::<PipelineFile>(text)
        .map_err(|e| PipelineError::Syntax {
            at: Location {
                file: path.to_path_buf(),
                line: e.span.start.line.max(1),
                col: e.span.start.col.max(1),
            },
            message: match e.code {
                ron::Error::ExceededRecursionLimit => {
                    format!(
                        "values nest too deeply (the parser allows {MAX_DEPTH} levels of recursion)"
                    )
                }
                code => code.to_string(),
            },
        })
}

/// Parser recursion a pipeline file may use (a list inside a list takes about two levels; real
/// files need under twenty); deeper input would otherwise overflow the stack in the parser or
/// in the expansion that walks the values.
pub const MAX_DEPTH: usize = 128;

/// Read, parse and expand a pipeline file, with environment variables from the process.
pub fn load(path: &Path, opts: &ExpandOptions) -> Result<Pipeline, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let env = |name: &str| std::env::var(name).ok();
    load_str(path, &text, opts, &env)
}

/// [`load`] on text already in memory, with an explicit environment (for tests).
pub fn load_str(
    path: &Path,
    text: &str,
    opts: &ExpandOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, PipelineError> {
    let file = parse(path, text)?;
    expand(path, text, &file, opts, env)
}

fn expand(
    path: &Path,
    text: &str,
    file: &PipelineFile,
    opts: &ExpandOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, PipelineError> {
    let file_loc = Location::file_only(path);
    let top = find_position(text, "name", &file.name, 0).map_or(file_loc.clone(), |(line, col)| {
        Location {
            file: path.to_path_buf(),
            line,
            col,
        }
    });

    // Variables: vars < profile < --set, then environment references, then var-in-var.
    let mut vars = file.vars.clone();
    if let Some(profile) = &opts.profile {
        let Some(over) = file.profiles.get(profile) else {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            return Err(PipelineError::invalid(
                &top,
                format!(
                    "unknown profile `{profile}` (defined: {})",
                    list_or_none(&known)
                ),
            ));
        };
        vars.extend(over.clone());
    }
    for (k, v) in &opts.set {
        if !vars.contains_key(k) {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            let hint =
                closest(k, &known).map_or(String::new(), |c| format!("did you mean `{c}`? "));
            return Err(PipelineError::invalid(
                &top,
                format!(
                    "--set `{k}`: no such variable in this pipeline{}; {hint}known: {}",
                    opts.profile
                        .as_ref()
                        .map_or(String::new(), |p| format!(" or profile `{p}`")),
                    list_or_none(&known)
                ),
            ));
        }
        vars.insert(k.clone(), v.clone());
    }
    for value in vars.values_mut() {
        *value = map_strings(value, &mut |s| expand_env(s, env))
            .map_err(|m| PipelineError::invalid(&top, m))?;
    }
    resolve_var_references(&mut vars).map_err(|m| PipelineError::invalid(&top, m))?;

    let stages_at = field_offset(text, "stages");
    let mut stages: Vec<StageSpec> = Vec::new();
    let mut seen: BTreeMap<String, Location> = BTreeMap::new();
    let mut occurrences: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &file.stages {
        let nth = occurrences.entry(entry.name.as_str()).or_insert(0);
        let origin = find_position(&text[stages_at..], "name", &entry.name, *nth)
            .map(|(line, col)| shift(text, stages_at, line, col))
            .map_or(file_loc.clone(), |(line, col)| Location {
                file: path.to_path_buf(),
                line,
                col,
            });
        *nth += 1;
        for spec in expand_entry(entry, &vars, env, &origin)? {
            if let Some(first) = seen.get(&spec.name) {
                return Err(PipelineError::invalid(
                    &origin,
                    format!(
                        "duplicate stage name `{}` (first defined at {first})",
                        spec.name
                    ),
                ));
            }
            seen.insert(spec.name.clone(), origin.clone());
            stages.push(spec);
        }
    }
    let name = expand_env(&file.name, env).map_err(|m| PipelineError::invalid(&top, m))?;
    if name.is_empty() {
        return Err(PipelineError::invalid(&top, "the pipeline name is empty"));
    }
    Ok(Pipeline {
        name,
        path: path.to_path_buf(),
        stages,
    })
}

fn expand_entry(
    entry: &StageEntry,
    vars: &BTreeMap<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    origin: &Location,
) -> Result<Vec<StageSpec>, PipelineError> {
    let err = |m: String| PipelineError::invalid(origin, format!("stage `{}`: {m}", entry.name));
    if !entry.params.is_object() {
        return Err(err("`params` must be a map, e.g. { \"lr\": 1e-4 }".into()));
    }
    // Environment references first, so `${X:-a}` is not mistaken for a `{var}`.
    let env_str = |s: &str| expand_env(s, env);
    let name = env_str(&entry.name).map_err(err)?;
    let params = map_strings(&entry.params, &mut |s| env_str(s)).map_err(err)?;
    let mut inputs = BTreeMap::new();
    for (slot, from) in &entry.inputs {
        inputs.insert(slot.clone(), env_str(from).map_err(err)?);
    }

    let mut combos: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for (var, spec) in &entry.sweep {
        let values = match spec {
            SweepValues::List(list) => list.clone(),
            SweepValues::Var(reference) => match substitute(reference, vars).map_err(err)? {
                Value::Array(list) => list,
                other => {
                    return Err(err(format!(
                        "sweep variable `{var}`: {reference:?} must name a list variable, \
                         e.g. \"seeds\": [1, 2, 3]; it is {other}"
                    )));
                }
            },
        };
        if values.is_empty() {
            // A list written in the entry must have values (an empty one is a slip); a list
            // variable may be emptied on purpose (`--set 'distills=[]'`): no stages then.
            if matches!(spec, SweepValues::Var(_)) {
                return Ok(Vec::new());
            }
            return Err(err(format!("sweep variable `{var}` has no values")));
        }
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for combo in &combos {
            for v in &values {
                let v = map_strings(v, &mut |s| env_str(s)).map_err(err)?;
                let mut c = combo.clone();
                c.insert(var.clone(), v);
                next.push(c);
            }
        }
        combos = next;
        if combos.len() > 100_000 {
            return Err(err("sweep expands to more than 100000 stages".into()));
        }
    }

    let mut out = Vec::with_capacity(combos.len());
    for combo in combos {
        let mut scope = vars.clone();
        scope.extend(combo);
        let subst = |s: &str| substitute(s, &scope);
        let stage_name = match subst(&name).map_err(err)? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if stage_name.is_empty() {
            return Err(err("the stage name is empty".into()));
        }
        let mut stage_params = map_values(&params, &subst).map_err(err)?;
        for with in &entry.with {
            let var = with.trim_matches(|c| c == '{' || c == '}');
            match scope.get(var) {
                Some(Value::Object(extra)) => {
                    let obj = stage_params.as_object_mut().expect("params is a map");
                    for (k, v) in extra {
                        if !obj.contains_key(k) && k != "name" {
                            obj.insert(k.clone(), v.clone());
                        }
                    }
                }
                Some(_) => return Err(err(format!("`with` names `{var}`, which is not a map"))),
                None => return Err(err(format!("`with` names unknown variable `{var}`"))),
            }
        }
        let mut stage_inputs = BTreeMap::new();
        for (slot, from) in &inputs {
            let from = match subst(from).map_err(err)? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            stage_inputs.insert(slot.clone(), from);
        }
        out.push(StageSpec {
            name: stage_name,
            kind: entry.kind.clone(),
            params: stage_params,
            inputs: stage_inputs,
            origin: origin.clone(),
        });
    }
    Ok(out)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Apply `f` to every string inside `value` (map keys are left alone).
fn map_strings(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(f(s)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| map_strings(v, f))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), map_strings(v, f)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Replace every string inside `value` by the result of `f` (which may change its type).
fn map_values(value: &Value, f: &dyn Fn(&str) -> Result<Value, String>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => f(s)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| map_values(v, f))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), map_values(v, f)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Stage names that `pattern` selects: exact name, or a glob with `*`.
pub fn matches_glob(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// Names in `all` selected by any of `patterns`; an unmatched pattern is an error.
pub fn select(patterns: &[String], all: &[&str]) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for p in patterns {
        let before = out.len();
        let mut any = false;
        for n in all {
            if matches_glob(p, n) {
                out.insert(n.to_string());
                any = true;
            }
        }
        if !any && out.len() == before {
            return Err(format!(
                "no stage matches `{p}` (stages: {})",
                list_or_none(all)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
