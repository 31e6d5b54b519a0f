//! Pipeline files as written (RON), before variables, profiles and sweeps are expanded.
//!
//! ```ron
//! Pipeline(
//!     name: "demo",
//!     vars: { "data_dir": "${GLUE_DIR:-../shared/data/glue}" },
//!     profiles: { "smoke": { "rounds": 1 } },
//!     stages: [
//!         (name: "snap-{task}", kind: "snapshot", sweep: { "task": ["RTE", "CoLA"] },
//!          params: { "paths": ["{data_dir}/{task}/dev.tsv"] }),
//!         (name: "digest-{task}", kind: "digest", sweep: { "task": ["RTE", "CoLA"] },
//!          inputs: { "src": "snap-{task}" }),
//!     ],
//! )
//! ```
//!
//! The meaning of each field (substitution rules, profiles, sweeps) is documented in
//! `docs/pipelines.md`; resolution lives in `lpeft-pipeline`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A value in a pipeline file: anything JSON can hold.
pub type Value = serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Pipeline", deny_unknown_fields)]
pub struct PipelineFile {
    /// Name of the pipeline; it names the run records in the store index.
    pub name: String,
    /// Variables shared by all stages, substituted as `{var}`.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Named sets of variable overrides, selected with `--profile NAME`.
    #[serde(default)]
    pub profiles: BTreeMap<String, BTreeMap<String, Value>>,
    pub stages: Vec<StageEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Stage", deny_unknown_fields)]
pub struct StageEntry {
    /// Unique name after expansion; may contain `{var}` placeholders of the sweep.
    pub name: String,
    /// Registered stage kind ("data", "snapshot", ...).
    pub kind: String,
    /// Parameters (a map); string values are substituted.
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Input slot -> name of the producing stage (after expansion).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Cartesian product of named value lists; one stage per combination. A list may also be
    /// given as `"{var}"`, a variable holding a list, so a profile can change it.
    #[serde(default)]
    pub sweep: BTreeMap<String, SweepValues>,
    /// Names of map-valued variables whose entries are merged into `params`
    /// (explicit `params` entries win).
    #[serde(default)]
    pub with: Vec<String>,
}

/// The values of one sweep variable: a literal list, or `"{var}"` naming a list variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SweepValues {
    List(Vec<Value>),
    Var(String),
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}
