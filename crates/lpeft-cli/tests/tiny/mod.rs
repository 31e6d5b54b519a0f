//! The tiny world of `predict_cli.rs`: a random BERT in Hugging Face layout, a WordPiece
//! tokenizer over a few dozen words, learnable RTE, STS-B, BoolQ and SQuAD files, and the
//! pipelines that run the real stages on them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

pub fn lpeft(dir: &Path, args: &[&str]) -> Output {
    Command::new(LPEFT)
        .current_dir(dir)
        .args(["--store", "store"])
        .args(args)
        .env_remove("MODEL_DIR")
        .env_remove("LPEFT_BACKEND")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A stage's key in `lpeft plan --json`'s output.
pub fn stage_key<'a>(plan: &'a serde_json::Value, stage: &str) -> &'a str {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap()["key"]
        .as_str()
        .unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lpeft(dir, args);
    assert!(out.status.success(), "lpeft {args:?}:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "park", "is", "not", "big", "small",
    "red", "blue", "yes", "no", "and", "or", "it", "was", "very", "good", "bad", "man", "woman",
    "car", "tree", "house", "sun", "moon", "eats", "sees", "likes", "runs", "walks", "fast",
    "slow", "happy", "sad", "old", "new", "green", "one",
];

/// A WordPiece `tokenizer.json` over [`WORDS`] and "." (ids 5..), BERT's special tokens first.
fn tokenizer_json() -> String {
    tokenizer_json_for(false)
}

/// [`tokenizer_json`], or with RoBERTa's special tokens (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>`
/// 3, `<mask>` 4) and post-processor.
pub fn tokenizer_json_for(roberta: bool) -> String {
    let specials = if roberta {
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    } else {
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    };
    let mut vocab = serde_json::Map::new();
    for (i, t) in specials.iter().chain(WORDS).chain(&["."]).enumerate() {
        vocab.insert((*t).to_owned(), i.into());
    }
    assert_eq!(vocab.len(), 50, "the fixture's vocabulary size");
    let special = |id: u32, content: &str| {
        serde_json::json!({ "id": id, "content": content, "single_word": false, "lstrip": false,
                             "rstrip": false, "normalized": false, "special": true })
    };
    if roberta {
        return serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"),
                             special(3, "<unk>"), special(4, "<mask>")],
            "normalizer": { "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                            "strip_accents": null, "lowercase": true },
            "pre_tokenizer": { "type": "BertPreTokenizer" },
            "post_processor": { "type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                                "trim_offsets": true, "add_prefix_space": false },
            "decoder": { "type": "WordPiece", "prefix": "##", "cleanup": true },
            "model": { "type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "##",
                       "max_input_chars_per_word": 100, "vocab": vocab },
        })
        .to_string();
    }
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": { "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                        "strip_accents": null, "lowercase": true },
        "pre_tokenizer": { "type": "BertPreTokenizer" },
        "post_processor": { "type": "TemplateProcessing",
            "single": [{ "SpecialToken": { "id": "[CLS]", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                       { "SpecialToken": { "id": "[SEP]", "type_id": 0 } }],
            "pair": [{ "SpecialToken": { "id": "[CLS]", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                     { "SpecialToken": { "id": "[SEP]", "type_id": 0 } }, { "Sequence": { "id": "B", "type_id": 1 } },
                     { "SpecialToken": { "id": "[SEP]", "type_id": 1 } }],
            "special_tokens": { "[CLS]": { "id": "[CLS]", "ids": [2], "tokens": ["[CLS]"] },
                                "[SEP]": { "id": "[SEP]", "ids": [3], "tokens": ["[SEP]"] } } },
        "decoder": { "type": "WordPiece", "prefix": "##", "cleanup": true },
        "model": { "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 100, "vocab": vocab },
    })
    .to_string()
}

/// A random BERT in Hugging Face layout: 2 layers of 2 heads (head size 8), FFN 32, vocab 50.
fn tiny_bert(dir: &Path, rng: &mut Rng) {
    tiny_model(dir, rng, false);
}

/// A random RoBERTa of [`tiny_bert`]'s shape (pad id 1, positions from 2, one token type).
pub fn tiny_roberta(dir: &Path, seed: u64) {
    tiny_model(dir, &mut Rng(seed), true);
}

fn tiny_model(dir: &Path, rng: &mut Rng, roberta: bool) {
    let (h, ffn, layers) = (16usize, 32usize, 2usize);
    let (kind, pad, positions, types) = if roberta {
        ("roberta", 1, 42, 1)
    } else {
        ("bert", 0, 40, 2)
    };
    let config = serde_json::json!({
        "model_type": kind, "hidden_size": h, "num_attention_heads": 2, "num_hidden_layers": layers,
        "intermediate_size": ffn, "vocab_size": 50, "max_position_embeddings": positions,
        "type_vocab_size": types, "pad_token_id": pad, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json_for(roberta)).unwrap();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut random = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| ((rng.next() % 2001) as f32 / 1000.0 - 1.0) * 0.1)
            .collect();
        tensors.insert(name, (shape, v));
    };
    let e = format!("{kind}.embeddings");
    random(format!("{e}.word_embeddings.weight"), vec![50, h]);
    random(
        format!("{e}.position_embeddings.weight"),
        vec![positions, h],
    );
    random(format!("{e}.token_type_embeddings.weight"), vec![types, h]);
    let mut norms = vec![format!("{e}.LayerNorm")];
    for l in 0..layers {
        let p = format!("{kind}.encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", ffn, h),
            ("output.dense", h, ffn),
        ] {
            random(format!("{p}.{name}.weight"), vec![out, inp]);
            random(format!("{p}.{name}.bias"), vec![out]);
        }
        norms.push(format!("{p}.attention.output.LayerNorm"));
        norms.push(format!("{p}.output.LayerNorm"));
    }
    if !roberta {
        random("bert.pooler.dense.weight".into(), vec![h, h]);
        random("bert.pooler.dense.bias".into(), vec![h]);
    }
    for n in norms {
        tensors.insert(format!("{n}.weight"), (vec![h], vec![1.0; h]));
        tensors.insert(format!("{n}.bias"), (vec![h], vec![0.0; h]));
    }
    lpeft_model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
}

/// A tiny random OPT as the hub ships OPT (lpeft-model's tiny-opt-bpe: `config.json`,
/// `model.safetensors`, GPT-2 BPE's `vocab.json` + `merges.txt` + configs, no
/// `tokenizer.json`; 64 positions).
pub fn tiny_opt(dir: &Path) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lpeft-model/tests/fixtures/tiny-opt-bpe");
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
}

/// Vanilla LoRA on RTE over the tiny OPT and its own tokenizer.
pub const OPT_PIPELINE: &str = r#"Pipeline(name: "opt", stages: [
    (name: "data-rte-opt", kind: "data",
     params: { "task": "glue/rte", "data_dir": "glue", "model": "opt", "max_length": 48 }),
    (name: "ft-rte-opt", kind: "finetune", inputs: { "dataset": "data-rte-opt" },
     params: { "method": "lora", "model": "opt", "peft": { "kind": "lora", "rank": 4, "alpha": 8.0 },
               "epochs": 4, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 3 }),
])"#;

/// xorshift64: reproducible weights and sentences.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn sentence(&mut self) -> String {
        let n = 3 + (self.next() % 8) as usize;
        let words: Vec<&str> = (0..n)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect();
        format!("{} .", words.join(" "))
    }
}

/// (sentence1, sentence2, label, score) rows, learnable: sentence2 starts with "yes" for the
/// positive class; the score grows with sentence2's length.
fn pairs(rng: &mut Rng, n: usize) -> Vec<(String, String, bool, f32)> {
    (0..n)
        .map(|_| {
            let yes = rng.next().is_multiple_of(2);
            let a = rng.sentence();
            let b = format!("{} {}", if yes { "yes" } else { "no" }, rng.sentence());
            let score = (b.len() as f32 / 12.0).min(5.0);
            (a, b, yes, score)
        })
        .collect()
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    /// Stage name → key, from `lpeft plan --json`.
    pub keys: BTreeMap<String, String>,
}

impl Setup {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn setup() -> Setup {
    setup_with(PIPELINE)
}

/// [`setup`]'s files (and a tiny RoBERTa in `roberta/`), then `pipeline` run on them.
pub fn setup_with(pipeline: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    tiny_bert(&root.join("model"), &mut rng);
    for (split, n) in [("train", 48), ("dev", 28)] {
        let rows = pairs(&mut rng, n);
        let rte: String = rows
            .iter()
            .enumerate()
            .map(|(i, (a, b, y, _))| {
                let label = if *y { "entailment" } else { "not_entailment" };
                format!("{i}\t{a}\t{b}\t{label}\n")
            })
            .collect();
        write(
            root,
            &format!("glue/RTE/{split}.tsv"),
            &format!("index\tsentence1\tsentence2\tlabel\n{rte}"),
        );
        let stsb: String = rows
            .iter()
            .enumerate()
            .map(|(i, (a, b, _, s))| {
                format!("{i}\tmain-captions\tMSRvid\t2012test\t{i:04}\t{a}\t{b}\t{s}\n")
            })
            .collect();
        write(
            root,
            &format!("glue/STS-B/{split}.tsv"),
            &format!(
                "index\tgenre\tfilename\tyear\told_index\tsentence1\tsentence2\tscore\n{stsb}"
            ),
        );
        let boolq: String = rows
            .iter()
            .enumerate()
            .map(|(i, (a, b, y, _))| {
                serde_json::json!({ "question": a, "passage": b, "idx": i, "label": y }).to_string()
                    + "\n"
            })
            .collect();
        let file = if split == "dev" { "val" } else { split };
        write(root, &format!("superglue/BoolQ/{file}.jsonl"), &boolq);
    }
    tiny_roberta(&root.join("roberta"), 0x5EED_4321_0000_0002);
    tiny_opt(&root.join("opt"));
    squad_files(root);
    std::fs::write(root.join("p.ron"), pipeline).unwrap();
    ok(root, &["--no-progress", "run", "p.ron"]);
    let plan: serde_json::Value =
        serde_json::from_str(&ok(root, &["plan", "p.ron", "--json"])).unwrap();
    let keys = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Setup { dir, keys }
}

pub fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

const PIPELINE: &str = r#"Pipeline(name: "tiny", vars: { "model": "model" }, stages: [
    (name: "data-{t}", kind: "data", sweep: { "t": ["rte", "stsb"] },
     params: { "task": "glue/{t}", "data_dir": "glue", "model": "{model}", "max_length": 32 }),
    (name: "data-boolq", kind: "data",
     params: { "task": "superglue/boolq", "data_dir": "superglue", "model": "{model}", "max_length": 32 }),
    (name: "ft-{t}", kind: "finetune", sweep: { "t": ["rte", "stsb", "boolq"] },
     inputs: { "dataset": "data-{t}" },
     params: { "method": "lora", "model": "{model}", "peft": { "kind": "lora", "rank": 4, "alpha": 8.0 },
               "epochs": 20, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 3 }),
    (name: "est-rte", kind: "estimate", inputs: { "dataset": "data-rte" },
     params: { "model": "{model}", "peft": { "kind": "lora", "rank": 4 }, "steps": { "steps": 3 },
               "batch_size": 8, "lr": 0.05, "seed": 1 }),
    (name: "cut-rte", kind: "surgery", inputs: { "estimate": "est-rte" },
     params: { "model": "{model}", "head_ratio": 0.25, "ffn_ratio": 0.25, "module_ratio": 0.25, "rank_ratio": 0.5 }),
    (name: "light-rte", kind: "finetune", inputs: { "dataset": "data-rte", "init": "cut-rte" },
     params: { "method": "light", "epochs": 20, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 4 }),
])"#;

/// SQuAD-format files over the tiny vocabulary (`squad/{train,dev}-v1.1.json`): the answer is
/// the word after "is".
pub fn squad_files(root: &Path) {
    let words = ["cat", "dog", "sun", "moon", "tree", "house", "car", "man"];
    for (split, n) in [("train", 24), ("dev", 8)] {
        let paragraphs: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let answer = words[i % words.len()];
                let context = format!(
                    "the old {} ran . it is {answer} and it was good .",
                    words[(i + 3) % words.len()]
                );
                let start = context.find(&format!("is {answer}")).unwrap() + 3;
                serde_json::json!({ "context": context, "qas": [{
                    "id": format!("{split}{i}"), "question": "what is it ?",
                    "answers": [{ "text": answer, "answer_start": start }] }] })
            })
            .collect();
        let file = serde_json::json!({ "version": "1.1",
            "data": [{ "title": "tiny", "paragraphs": paragraphs }] });
        write(root, &format!("squad/{split}-v1.1.json"), &file.to_string());
    }
}

/// Vanilla LoRA on SQuAD (windows of 24 tokens, stride 8) over the tiny BERT and RoBERTa.
pub const SPAN_PIPELINE: &str = r#"Pipeline(name: "span", stages: [
    (name: "data-squad-{m}", kind: "data", sweep: { "m": ["model", "roberta"] },
     params: { "task": "squad/v1.1", "data_dir": "squad", "model": "{m}", "max_length": 24, "doc_stride": 8 }),
    (name: "ft-squad-{m}", kind: "finetune", sweep: { "m": ["model", "roberta"] },
     inputs: { "dataset": "data-squad-{m}" },
     params: { "method": "lora", "model": "{m}", "peft": { "kind": "lora", "rank": 4, "alpha": 8.0 },
               "epochs": 1, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 3 }),
])"#;
