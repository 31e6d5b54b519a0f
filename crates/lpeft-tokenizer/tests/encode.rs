//! Encoding checks on the real MiniLM (BERT WordPiece) tokenizer and a tiny hand-written
//! byte-level BPE tokenizer with RoBERTa's post-processor.

use std::path::PathBuf;

use lpeft_tokenizer::{Family, Tokenizer, WindowConfig};

fn minilm() -> Tokenizer {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "missing {}/tokenizer.json (shared models)",
        dir.display()
    );
    Tokenizer::from_file(&dir).expect("MiniLM tokenizer loads")
}

const ROBERTA_JSON: &str = r#"{
  "version": "1.0",
  "truncation": {"max_length": 4, "strategy": "LongestFirst", "stride": 0, "direction": "Right"},
  "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": false},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {
    "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "c": 6, "Ġ": 7, "Ġa": 8, "ab": 9, "Ġab": 10, "Ġc": 11},
    "merges": ["Ġ a", "a b", "Ġa b", "Ġ c"]
  }
}"#;

fn roberta() -> Tokenizer {
    Tokenizer::from_bytes(
        ROBERTA_JSON.as_bytes(),
        std::path::Path::new("roberta-test.json"),
    )
    .expect("tiny RoBERTa loads")
}

#[test]
fn bert_single_and_pair_use_cls_sep_and_type_ids() {
    let tok = minilm();
    assert_eq!(tok.family(), Family::Bert);
    assert_eq!(tok.pad_id(), 0);
    let e = tok.encode("Hello world", None, None).unwrap();
    let cls = tok.token_to_id("[CLS]").unwrap();
    let sep = tok.token_to_id("[SEP]").unwrap();
    assert_eq!(e.ids.first(), Some(&cls));
    assert_eq!(e.ids.last(), Some(&sep));
    assert_eq!(e.len(), 4);
    assert!(e.type_ids.iter().all(|&t| t == 0));

    let p = tok
        .encode("Hello world", Some("good day to you"), None)
        .unwrap();
    let seps: Vec<usize> = p
        .ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == sep)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(seps.len(), 2);
    assert_eq!(p.ids[0], cls);
    assert_eq!(&p.type_ids[..=seps[0]], &vec![0; seps[0] + 1][..]);
    assert!(p.type_ids[seps[0] + 1..].iter().all(|&t| t == 1));
    assert_eq!(p.sequence_ids[0], None);
    assert_eq!(p.sequence_ids[1], Some(0));
    assert_eq!(p.sequence_ids[seps[0] + 1], Some(1));
    // Offsets are byte offsets into the sequence a token came from.
    assert_eq!(p.offsets[1], (0, 5));
    assert_eq!(p.offsets[seps[0] + 1], (0, 4));
}

#[test]
fn baked_padding_and_truncation_are_switched_off() {
    // The MiniLM tokenizer.json pads to 128 and truncates at 128.
    let tok = minilm();
    let long = "word ".repeat(300);
    assert_eq!(tok.encode("short", None, None).unwrap().len(), 3);
    assert_eq!(tok.encode(&long, None, None).unwrap().len(), 302);
}

#[test]
fn longest_first_truncation_counts_special_tokens() {
    let tok = minilm();
    let a = "one two three four five six seven eight nine ten";
    let b = "alpha beta";
    let e = tok.encode(a, Some(b), Some(10)).unwrap();
    assert_eq!(e.len(), 10);
    // 10 - 3 special = 7 text tokens: b (2) is kept whole, a is cut to 5.
    assert_eq!(e.sequence_ids.iter().filter(|s| **s == Some(0)).count(), 5);
    assert_eq!(e.sequence_ids.iter().filter(|s| **s == Some(1)).count(), 2);
    let s = tok.encode(a, None, Some(6)).unwrap();
    assert_eq!(s.len(), 6);
    assert!(tok.encode(a, Some(b), Some(3)).is_err());
}

#[test]
fn batch_matches_single_encoding_in_order() {
    let tok = minilm();
    let texts: Vec<String> = (0..500)
        .map(|i| format!("sentence number {i} is here"))
        .collect();
    let inputs: Vec<(&str, Option<&str>)> =
        texts.iter().map(|t| (t.as_str(), Some("pair"))).collect();
    let batch = tok.encode_batch(&inputs, Some(16)).unwrap();
    for (i, (a, b)) in inputs.iter().enumerate() {
        assert_eq!(batch[i], tok.encode(a, *b, Some(16)).unwrap());
    }
}

#[test]
fn roberta_pair_is_s_a_double_sep_b_with_zero_type_ids() {
    let tok = roberta();
    assert_eq!(tok.family(), Family::Roberta);
    assert_eq!(tok.pad_id(), 1);
    let e = tok.encode("ab c", Some("a"), None).unwrap();
    // <s> ab Ġc </s> </s> a </s>
    assert_eq!(e.ids, vec![0, 9, 11, 2, 2, 4, 2]);
    assert_eq!(e.type_ids, vec![0; 7]);
    assert_eq!(tok.num_special_tokens(true), 4);
    assert_eq!(tok.num_special_tokens(false), 2);
    // The tokenizer.json's truncation at 4 is switched off.
    assert_eq!(tok.encode("ab ab ab ab", None, None).unwrap().len(), 6);
    let t = tok.encode("ab ab ab ab", None, Some(4)).unwrap();
    assert_eq!(t.ids, vec![0, 9, 10, 2]);
}

#[test]
fn windows_overlap_by_stride_and_keep_context_offsets() {
    let tok = minilm();
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home",
    ];
    let context = (0..40)
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let cfg = WindowConfig {
        max_len: 20,
        stride: 4,
        max_first_len: 8,
    };
    let windows = tok.encode_windows("which word", &context, cfg).unwrap();
    assert!(windows.len() > 1);
    let mut covered = Vec::new();
    for w in &windows {
        assert!(w.len() <= 20);
        let ctx: Vec<(usize, usize)> = w
            .sequence_ids
            .iter()
            .zip(&w.offsets)
            .filter(|(s, _)| **s == Some(1))
            .map(|(_, o)| *o)
            .collect();
        covered.push(ctx);
    }
    // Consecutive windows share exactly `stride` context tokens.
    for pair in covered.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert_eq!(&prev[prev.len() - 4..], &next[..4]);
    }
    // The last window ends at the end of the context.
    assert_eq!(covered.last().unwrap().last().unwrap().1, context.len());
    // Offsets slice the context.
    let (s, e) = covered[0][0];
    assert_eq!(&context[s..e], "the");
}

#[test]
fn missing_file_names_the_path() {
    let err = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
