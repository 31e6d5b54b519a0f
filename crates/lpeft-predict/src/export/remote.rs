//! The pruned format's remote code: `modeling_lpeft.py` (a BERT/RoBERTa encoder with a head
//! count and FFN width per layer) beside a `config.json` that names it through `auto_map`,
//! so `AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)` loads
//! a Light-PEFT model with the transformers names and layouts of every weight.

use serde_json::{Value, json};

use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};

pub const MODELING_FILE: &str = "modeling_lpeft.py";
pub const MODELING_SOURCE: &str = include_str!("modeling_lpeft.py");

/// The model class of `modeling_lpeft.py` for a family and head.
pub fn class(family: Family, head: TaskHeadSpec) -> String {
    let family = match family {
        Family::Bert => "Bert",
        Family::Roberta => "Roberta",
        Family::Mpnet => "MPNet",
        Family::Opt => "OPT",
    };
    format!("Lpeft{family}For{}", super::task_class(head))
}

/// Turns a transformers `config.json` into the remote-code model's: per-layer shapes, the head
/// style, and the `auto_map` to the modeling file.
pub fn extend_config(config: &mut Value, spec: &ModelSpec) {
    let e = &spec.encoder;
    let family = match e.family {
        Family::Bert => "bert",
        Family::Roberta => "roberta",
        Family::Mpnet => "mpnet",
        Family::Opt => "opt",
    };
    let style = match spec.head {
        TaskHeadSpec::Classification { style, .. } | TaskHeadSpec::Regression { style } => {
            match style {
                HeadStyle::BertPooler => "bert_pooler",
                HeadStyle::RobertaDenseTanh => "roberta_dense_tanh",
                HeadStyle::LastToken => "last_token",
            }
        }
        _ => "span",
    };
    let layers: Vec<Value> = e
        .layers
        .iter()
        .map(|l| json!({ "heads": l.heads, "ffn": l.ffn }))
        .collect();
    let module = MODELING_FILE.trim_end_matches(".py");
    let class = class(e.family, spec.head);
    let auto = format!("AutoModelFor{}", super::task_class(spec.head));
    let c = config.as_object_mut().expect("a config is an object");
    c.insert("model_type".into(), json!("lpeft-encoder"));
    c.insert("architectures".into(), json!([class]));
    let mut auto_map = serde_json::Map::new();
    auto_map.insert("AutoConfig".into(), json!(format!("{module}.LpeftConfig")));
    auto_map.insert(auto, json!(format!("{module}.{class}")));
    c.insert("auto_map".into(), Value::Object(auto_map));
    c.insert("lpeft_family".into(), json!(family));
    c.insert("lpeft_head_style".into(), json!(style));
    c.insert("lpeft_layers".into(), json!(layers));
    c.insert("attention_head_size".into(), json!(e.head_dim));
    // Uniform fields say nothing true of a pruned model; the per-layer list is the truth.
    c.remove("num_attention_heads");
    c.remove("intermediate_size");
}
