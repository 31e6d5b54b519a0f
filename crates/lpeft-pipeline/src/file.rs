//! Reading pipeline files: RON -> [`PipelineFile`] -> expanded [`StageSpec`]s.
//!
//! Expansion order: environment references `${NAME:-default}` in every string, then the
//! selected profile and `--set` overrides on top of `vars`, then per stage the sweep
//! combinations, `{var}` substitution in names, inputs and string parameters, and `with`
//! merges. The result is a flat list of uniquely named stages, each with the file position of
//! the entry it came from. Nothing here touches the store or runs a stage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lpeft_schema::pipeline::{PipelineFile, StageEntry, SweepValues, Value};

use crate::error::{Location, PipelineError};

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

/// Expand `${NAME}` and `${NAME:-default}` from the environment. `$$` is a literal `$`.
pub fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("unterminated `${{` in \"{s}\""));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "bad environment reference `${{{inner}}}` in \"{s}\""
                ));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

enum Tok<'a> {
    Lit(String),
    Var(&'a str),
}

/// Split a string into literal text and `{var}` references. `{{` and `}}` are literal braces.
fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, String> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    let b = s.as_bytes();
    while i < s.len() {
        let c = s[i..].chars().next().expect("in bounds");
        match c {
            '{' if b.get(i + 1) == Some(&b'{') => {
                lit.push('{');
                i += 2;
            }
            '}' if b.get(i + 1) == Some(&b'}') => {
                lit.push('}');
                i += 2;
            }
            '{' => {
                let Some(end) = s[i + 1..].find('}') else {
                    return Err(format!("unterminated `{{` in \"{s}\""));
                };
                let name = &s[i + 1..i + 1 + end];
                if !is_var_name(name) {
                    return Err(format!("bad variable reference `{{{name}}}` in \"{s}\""));
                }
                if !lit.is_empty() {
                    toks.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                toks.push(Tok::Var(name));
                i += end + 2;
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` in \"{s}\" (write `}}}}` for a literal brace)"
                ));
            }
            c => {
                lit.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !lit.is_empty() {
        toks.push(Tok::Lit(lit));
    }
    Ok(toks)
}

/// Substitute `{var}` references. A string that is exactly one reference takes the variable's
/// value with its type; otherwise values are formatted into the string (a map by its `name`
/// entry; `{method.rank}` reads inside a map). `{{` and `}}` are literal braces.
pub fn substitute(s: &str, vars: &BTreeMap<String, Value>) -> Result<Value, String> {
    if !s.contains('{') && !s.contains('}') {
        return Ok(Value::String(s.to_string()));
    }
    let toks = tokenize(s)?;
    if let [Tok::Var(name)] = toks.as_slice() {
        return lookup(name, vars).cloned();
    }
    let mut out = String::with_capacity(s.len());
    for t in toks {
        match t {
            Tok::Lit(l) => out.push_str(&l),
            Tok::Var(name) => out.push_str(&to_text(name, lookup(name, vars)?)?),
        }
    }
    Ok(Value::String(out))
}

/// Names of the variables a value refers to (head of dotted paths).
fn references(value: &Value, out: &mut BTreeSet<String>) -> Result<(), String> {
    match value {
        Value::String(s) => {
            for t in tokenize(s)? {
                if let Tok::Var(name) = t {
                    out.insert(name.split('.').next().unwrap_or_default().to_string());
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                references(v, out)?;
            }
        }
        Value::Object(map) => {
            for v in map.values() {
                references(v, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn lookup<'a>(name: &str, vars: &'a BTreeMap<String, Value>) -> Result<&'a Value, String> {
    let mut parts = name.split('.');
    let head = parts.next().unwrap_or_default();
    let mut v = vars.get(head).ok_or_else(|| {
        let known: Vec<&str> = vars.keys().map(String::as_str).collect();
        format!(
            "unknown variable `{head}` (defined: {})",
            list_or_none(&known)
        )
    })?;
    for part in parts {
        v = v
            .get(part)
            .ok_or_else(|| format!("variable `{name}`: no entry `{part}`"))?;
    }
    Ok(v)
}

fn to_text(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(map) => match map.get("name") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(format!(
                "variable `{name}` is a map without a string `name`, so it cannot appear inside a string"
            )),
        },
        Value::Null | Value::Array(_) => Err(format!(
            "variable `{name}` is {v}, which cannot appear inside a string"
        )),
    }
}

/// Let variables refer to other variables (`"data": "{root}/glue"`): resolve them in
/// dependency order, each exactly once (a substituted value is never re-read, so escaped
/// braces stay literal).
fn resolve_var_references(vars: &mut BTreeMap<String, Value>) -> Result<(), String> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, v) in vars.iter() {
        let mut refs = BTreeSet::new();
        references(v, &mut refs).map_err(|m| format!("variable `{k}`: {m}"))?;
        if let Some(unknown) = refs.iter().find(|r| !vars.contains_key(*r)) {
            return Err(format!(
                "variable `{k}` refers to `{unknown}`, which is not a variable \
                 (sweep variables can only be used in stages)"
            ));
        }
        deps.insert(k.clone(), refs);
    }
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    while done.len() < vars.len() {
        let ready: Vec<String> = deps
            .iter()
            .filter(|(k, d)| !done.contains_key(*k) && d.iter().all(|r| done.contains_key(r)))
            .map(|(k, _)| k.clone())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = vars
                .keys()
                .filter(|k| !done.contains_key(*k))
                .map(String::as_str)
                .collect();
            return Err(format!(
                "variables refer to each other in a cycle: {}",
                stuck.join(", ")
            ));
        }
        for k in ready {
            let v = map_values(&vars[&k], &|s| substitute(s, &done))
                .map_err(|m| format!("variable `{k}`: {m}"))?;
            done.insert(k, v);
        }
    }
    *vars = done;
    Ok(())
}

/// 1-based (line, col) of the `nth` occurrence of `field: "value"` in RON text.
/// The known name nearest to `name` by edit distance, if it is near enough to be a typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Byte offset of the first `field:` in RON text (0 if absent).
fn field_offset(text: &str, field: &str) -> usize {
    let mut from = 0;
    while let Some(rel) = text[from..].find(field) {
        let at = from + rel;
        from = at + field.len();
        if text[from..].trim_start().starts_with(':') {
            return at;
        }
    }
    0
}

/// Convert a (line, col) found in `text[offset..]` into one for `text`.
fn shift(text: &str, offset: usize, line: usize, col: usize) -> (usize, usize) {
    let before = &text[..offset];
    let lines_before = before.matches('\n').count();
    if line == 1 {
        let col_before = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        (lines_before + 1, col_before + col)
    } else {
        (lines_before + line, col)
    }
}

pub(crate) fn find_position(
    text: &str,
    field: &str,
    value: &str,
    nth: usize,
) -> Option<(usize, usize)> {
    let quoted = serde_json::to_string(value).ok()?;
    let mut count = 0;
    let mut from = 0;
    while let Some(rel) = text[from..].find(field) {
        let start = from + rel;
        from = start + field.len();
        let before_ok = start == 0
            || !text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"');
        if !before_ok {
            continue;
        }
        let rest = text[from..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        if rest.trim_start().starts_with(&quoted) {
            if count == nth {
                let line = text[..start].matches('\n').count() + 1;
                let col = text[..start]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
                    + 1;
                return Some((line, col));
            }
            count += 1;
        }
    }
    None
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
