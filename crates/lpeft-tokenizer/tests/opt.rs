//! OPT's own tokenizer: GPT-2 byte-level BPE read from a model directory's `vocab.json` +
//! `merges.txt` + `tokenizer_config.json` (no `tokenizer.json`), against what transformers'
//! `GPT2Tokenizer` gives on the same files (`expected.json`, made with the toy vocabulary by
//! tools/reference/opt_tokenizer_fixtures.py): single sentences, pairs, longest-first
//! truncation, and question/context windows, ids, type ids, byte offsets and sequence ids.

use std::path::{Path, PathBuf};

use lpeft_tokenizer::{Encoded, Family, Tokenizer, TokenizerError, TokenizerSource, WindowConfig};
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lpeft-model/tests/fixtures/tiny-opt-bpe")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `e` equals the Python record `want` (ids, type ids, byte offsets, sequence ids).
fn check(e: &Encoded, want: &Value, what: &str) {
    assert_eq!(e.ids, u32s(&want["ids"]), "{what}: ids");
    assert_eq!(e.type_ids, u32s(&want["type_ids"]), "{what}: type ids");
    let offsets: Vec<(usize, usize)> = want["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(e.offsets, offsets, "{what}: offsets");
    let seq: Vec<Option<u8>> = want["sequence_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().map(|s| s as u8))
        .collect();
    assert_eq!(e.sequence_ids, seq, "{what}: sequence ids");
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(fixture()).expect("the OPT BPE directory loads")
}

#[test]
fn the_directory_is_read_as_gpt2_bpe_with_opt_specials() {
    let src = TokenizerSource::locate(fixture()).unwrap();
    let names: Vec<String> = src
        .files()
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // No tokenizer_class in the config: config.json's model_type is read too.
    assert_eq!(
        names,
        [
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "config.json"
        ]
    );
    let tok = tokenizer();
    assert_eq!(tok.family(), Family::Opt);
    assert_eq!(tok.pad_id(), 1);
    assert_eq!(tok.token_to_id("</s>"), Some(2));
    assert_eq!(tok.num_special_tokens(false), 1);
    assert_eq!(tok.num_special_tokens(true), 2);
    assert_eq!(
        tok.vocab_size() as u64,
        expected()["vocab_size"].as_u64().unwrap()
    );
}

#[test]
fn singles_and_pairs_match_transformers() {
    let tok = tokenizer();
    let want = expected();
    let mut n = 0;
    for case in want["cases"].as_array().unwrap() {
        let first = case["first"].as_str().unwrap();
        let second = case["second"].as_str();
        let max_len = case["max_length"].as_u64().map(|m| m as usize);
        let e = tok.encode(first, second, max_len).unwrap();
        let what = format!("{first:?} / {second:?} / {max_len:?}");
        check(&e, case, &what);
        assert_eq!(
            e.truncated,
            case["truncated"].as_bool().unwrap_or(false),
            "{what}: truncated"
        );
        if let Some(m) = max_len {
            assert_eq!(e.len(), m, "{what}: cut to max length");
        }
        // OPT puts </s> first and nothing at the end.
        assert_eq!(e.ids[0], 2);
        n += 1;
    }
    assert!(n >= 10, "{n} cases");
}

#[test]
fn windows_match_transformers_overflowing_tokens() {
    let tok = tokenizer();
    let want = expected();
    for w in want["windows"].as_array().unwrap() {
        let (q, c) = (
            w["question"].as_str().unwrap(),
            w["context"].as_str().unwrap(),
        );
        let cfg = WindowConfig {
            max_len: w["max_length"].as_u64().unwrap() as usize,
            stride: w["stride"].as_u64().unwrap() as usize,
            max_first_len: 64,
        };
        let got = tok.encode_windows(q, c, cfg).unwrap();
        let windows = w["windows"].as_array().unwrap();
        assert_eq!(got.len(), windows.len(), "window count");
        for (i, (e, want)) in got.iter().zip(windows).enumerate() {
            check(e, want, &format!("window {i}"));
            // Offsets of context tokens cut the context (with the leading space of `Ġ` tokens).
            for (s, (a, b)) in e.sequence_ids.iter().zip(&e.offsets) {
                if *s == Some(1) {
                    assert!(a < b && c.get(*a..*b).is_some(), "{a}..{b}");
                }
            }
        }
    }
}

/// The key-relevant identity: a hash over every file read, which changes with any of them.
#[test]
fn the_content_hash_covers_every_file_read() {
    let base = tokenizer().content_hash().to_owned();
    assert_eq!(tokenizer().content_hash(), base, "stable");
    for file in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ] {
        let dir = copy_fixture();
        let path = dir.path().join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        if file == "merges.txt" {
            // One merge fewer.
            let end = text.trim_end().rfind('\n').unwrap();
            text.truncate(end + 1);
        } else {
            // Whitespace only: the same settings, other bytes.
            text.push(' ');
        }
        std::fs::write(&path, text).unwrap();
        let other = Tokenizer::from_file(dir.path()).unwrap();
        assert_ne!(other.content_hash(), base, "{file} is part of the hash");
    }
    // A tokenizer.json beside the files wins: the directory is read as today.
    let dir = copy_fixture();
    let src = TokenizerSource::locate(dir.path()).unwrap();
    assert!(matches!(src, TokenizerSource::Gpt2(_)));
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    assert_eq!(
        TokenizerSource::locate(dir.path()).unwrap(),
        TokenizerSource::Json(dir.path().join("tokenizer.json"))
    );
}

fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap();
        if name != "model.safetensors" && name != "expected.json" {
            std::fs::copy(&p, dir.path().join(name)).unwrap();
        }
    }
    dir
}

fn error(dir: &Path) -> String {
    Tokenizer::from_file(dir).unwrap_err().to_string()
}

#[test]
fn missing_or_unsupported_files_are_named() {
    let dir = copy_fixture();
    std::fs::remove_file(dir.path().join("merges.txt")).unwrap();
    let e = error(dir.path());
    let shown = dir.path().display().to_string();
    for part in [
        shown.as_str(),
        "merges.txt",
        "vocab.json",
        "tokenizer_config.json",
    ] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    assert!(matches!(
        Tokenizer::from_file(dir.path()),
        Err(TokenizerError::MissingFiles { .. })
    ));

    let empty = tempfile::tempdir().unwrap();
    let e = error(empty.path());
    assert!(
        e.contains("tokenizer.json") && e.contains("vocab.json"),
        "{e}"
    );

    // vocab.json + merges.txt of another family (RoBERTa's have other special tokens).
    let dir = copy_fixture();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "roberta"}"#,
    )
    .unwrap();
    let e = error(dir.path());
    assert!(
        e.contains("\"roberta\"") && e.contains("tokenizer.json"),
        "{e}"
    );
    let dir = copy_fixture();
    let config = dir.path().join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["tokenizer_class"] = "RobertaTokenizer".into();
    std::fs::write(&config, v.to_string()).unwrap();
    assert!(error(dir.path()).contains("RobertaTokenizer"));
    // With GPT2Tokenizer named, config.json is not needed (nor read).
    v["tokenizer_class"] = "GPT2Tokenizer".into();
    std::fs::write(&config, v.to_string()).unwrap();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let src = TokenizerSource::locate(dir.path()).unwrap();
    assert_eq!(src.files().len(), 4);
    assert_eq!(src.load().unwrap().family(), Family::Opt);

    // A special token the vocabulary lacks.
    v["pad_token"] = "<nope>".into();
    std::fs::write(&config, v.to_string()).unwrap();
    std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
    let e = error(dir.path());
    assert!(e.contains("<nope>") && e.contains("vocab.json"), "{e}");
}

/// special_tokens_map.json overrides the config (transformers 5, without added_tokens_decoder);
/// a layout other than OPT's (bos before each sequence, nothing after) is refused by name.
#[test]
fn settings_follow_transformers_precedence() {
    let dir = copy_fixture();
    let map = dir.path().join("special_tokens_map.json");
    std::fs::write(&map, r#"{"pad_token": "<unk>"}"#).unwrap();
    assert_eq!(Tokenizer::from_file(dir.path()).unwrap().pad_id(), 3);

    let config = dir.path().join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["add_bos_token"] = false.into();
    std::fs::write(&config, v.to_string()).unwrap();
    let e = error(dir.path());
    assert!(e.contains("add_bos_token false"), "{e}");
    v["add_bos_token"] = true.into();
    v["add_eos_token"] = true.into();
    std::fs::write(&config, v.to_string()).unwrap();
    assert!(error(dir.path()).contains("add_eos_token true"));
}

/// A `tokenizer.json` whose template puts one special token before the sequence (as
/// transformers 4's GPT2Converter wrote OPT's) is the OPT family, and its own pair template
/// (`</s> A B`, no second `</s>`) is what it encodes with.
#[test]
fn an_opt_tokenizer_json_is_read_as_it_is() {
    let json = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 1, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
        "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "Ġ": 6, "Ġa": 7},
        "merges": ["Ġ a"]}
    }"#;
    let tok = Tokenizer::from_bytes(json.as_bytes(), Path::new("opt-v4.json")).unwrap();
    assert_eq!(tok.family(), Family::Opt);
    assert_eq!(tok.pad_id(), 1);
    assert_eq!(tok.encode("a b", None, None).unwrap().ids, [2, 4, 6, 5]);
    assert_eq!(
        tok.encode("a", Some("b a"), None).unwrap().ids,
        [2, 4, 5, 7]
    );
}
