//! The two template languages of pipeline files: `${NAME:-default}` environment references and
//! `{var}` / `{var.field}` substitution from the pipeline's variables.

use super::*;

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
pub(super) fn resolve_var_references(vars: &mut BTreeMap<String, Value>) -> Result<(), String> {
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
pub(super) fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
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
