//! Fine-tuning on a tiny random model and a tiny learnable dataset: vanilla and from a saved
//! (pruned-style) checkpoint; per-epoch metrics, best-epoch selection, best weights.

use burn::tensor::Device;

use lpeft_data::encode::{Labels as DataLabels, SplitTensors};
use lpeft_finetune::FinetuneConfig;
use lpeft_finetune::run::{finetune, param_counts, total_steps};
use lpeft_model::checkpoint;
use lpeft_model::model::Model;
use lpeft_model::peft_config::{PeftConfig, estimation_spec};
use lpeft_model::rng::SeededRng;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::tiny_encoder;
use lpeft_pipeline::stage::Progress;
use lpeft_schema::model::{Family, LoraTarget};

struct Silent;
impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: &str) {}
    fn finish(&self) {}
}

/// Rows of 3..9 random tokens; the label is whether token 5 occurs (learnable).
fn split(n: usize, seed: u64) -> SplitTensors {
    let mut rng = SeededRng::new(seed);
    let (mut ids, mut types, mut offsets, mut labels) = (vec![], vec![], vec![0u64], vec![]);
    for _ in 0..n {
        let len = 3 + (rng.next_u64() % 7) as usize;
        let row: Vec<u32> = (0..len).map(|_| 2 + (rng.next_u64() % 30) as u32).collect();
        labels.push(i64::from(row.contains(&5)));
        ids.extend(&row);
        types.extend(std::iter::repeat_n(0u8, len));
        offsets.push(ids.len() as u64);
    }
    SplitTensors {
        input_ids: ids,
        type_ids: types,
        offsets,
        group_ids: (0..n as u32).collect(),
        example_ids: (0..n as u32).collect(),
        labels: DataLabels::Class(labels),
        token_spans: None,
        num_truncated: 0,
    }
}

fn config() -> FinetuneConfig {
    let mut c: FinetuneConfig = serde_json::from_value(serde_json::json!({
        "method": "lora-qv", "model": "unused", "peft": { "kind": "lora", "targets": ["query", "value"] },
        "epochs": 3, "batch_size": 8, "lr": 2e-2,
    }))
    .unwrap();
    c.validate(false).unwrap();
    c.eval_batch_size = 16;
    c
}

#[test]
fn vanilla_run_evaluates_every_epoch_and_keeps_the_best() {
    let task = lpeft_data::registry::task("glue/sst2").unwrap().spec();
    let (train, dev) = (split(32, 1), split(24, 2));
    let cfg = config();
    let device = Device::flex().autodiff();
    device.seed(1);
    let spec = estimation_spec(
        tiny_encoder(Family::Bert, &[(4, 8), (4, 8)]),
        &task.kind,
        cfg.peft.as_ref().unwrap(),
    );
    let spec = lpeft_schema::model::ModelSpec {
        masks: false,
        ..spec
    };
    assert!(spec.peft.iter().all(|m| matches!(
        m.id.site,
        lpeft_schema::model::PeftSite::Lora(LoraTarget::Query | LoraTarget::Value)
    )));
    let model = Model::build(&spec, &mut RandomSource { seed: 2 }, &device).unwrap();
    let counts = param_counts(&model);
    assert!(
        counts.trainable > 0 && counts.trainable < counts.total && counts.backbone < counts.total
    );
    let out = finetune(
        &cfg,
        model,
        &task,
        &train,
        &dev,
        None,
        0,
        &device,
        &Device::flex(),
        &Silent,
        None,
    )
    .unwrap();
    assert_eq!(out.epochs.len(), 3);
    assert_eq!(out.curve.len(), total_steps(&cfg, 4));
    assert_eq!(
        out.epochs.iter().map(|e| e.step).collect::<Vec<_>>(),
        vec![4, 8, 12]
    );
    let best = out
        .epochs
        .iter()
        .map(|e| e.main_score)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(
        out.epochs[out.best_epoch].main_score, best,
        "best epoch has the highest main score"
    );
    assert!(
        out.epochs
            .iter()
            .all(|e| e.metrics.contains_key("accuracy"))
    );
    assert!(
        out.best_state
            .keys()
            .all(|k| k.contains("lora_") || k.starts_with("head.out")),
        "{:?}",
        out.best_state.keys()
    );
    assert!(out.inference_examples_per_second > 0.0);
}

#[test]
fn a_step_cap_ends_the_run_with_an_evaluation() {
    let task = lpeft_data::registry::task("glue/sst2").unwrap().spec();
    let (train, dev) = (split(32, 1), split(8, 2));
    let mut cfg = config();
    cfg.max_steps = Some(6);
    let device = Device::flex().autodiff();
    let spec = estimation_spec(
        tiny_encoder(Family::Bert, &[(2, 4)]),
        &task.kind,
        cfg.peft.as_ref().unwrap(),
    );
    let model = Model::build(
        &lpeft_schema::model::ModelSpec {
            masks: false,
            ..spec
        },
        &mut RandomSource { seed: 2 },
        &device,
    )
    .unwrap();
    let out = finetune(
        &cfg,
        model,
        &task,
        &train,
        &dev,
        None,
        0,
        &device,
        &Device::flex(),
        &Silent,
        None,
    )
    .unwrap();
    assert_eq!(out.curve.len(), 6);
    assert_eq!(
        out.epochs.iter().map(|e| e.step).collect::<Vec<_>>(),
        vec![4, 6],
        "epoch end, then the cap"
    );
}

#[test]
fn training_from_a_saved_checkpoint_keeps_its_shapes_and_trains_its_peft() {
    train_from_a_saved_checkpoint(Family::Bert);
}

/// OPT's pre-LayerNorm causal layers, a zero-head layer and its last-token head, as the
/// fine-tune stage trains them from a (pruned) checkpoint.
#[test]
fn an_opt_checkpoint_fine_tunes_too() {
    train_from_a_saved_checkpoint(Family::Opt);
}

fn train_from_a_saved_checkpoint(family: Family) {
    let task = lpeft_data::registry::task("glue/sst2").unwrap().spec();
    let (train, dev) = (split(16, 3), split(8, 4));
    let device = Device::flex().autodiff();
    let peft = PeftConfig::Lora {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
    };
    let mut spec = estimation_spec(tiny_encoder(family, &[(3, 5), (0, 2)]), &task.kind, &peft);
    spec.masks = false;
    let model = Model::build(&spec, &mut RandomSource { seed: 4 }, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&model, dir.path()).unwrap();
    let loaded = checkpoint::load(dir.path(), &device).unwrap();
    assert_eq!(loaded.spec, spec);
    let cfg: FinetuneConfig = serde_json::from_value(
        serde_json::json!({ "method": "light-peft-lora", "epochs": 1, "batch_size": 8 }),
    )
    .unwrap();
    cfg.validate(true).unwrap();
    let out = finetune(
        &cfg,
        loaded,
        &task,
        &train,
        &dev,
        None,
        0,
        &device,
        &Device::flex(),
        &Silent,
        None,
    )
    .unwrap();
    assert_eq!(out.epochs.len(), 1);
    let before = checkpoint::trainable_tensors(&model);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        out.best_state.keys().collect::<Vec<_>>()
    );
    assert!(
        before.iter().any(|(k, v)| out.best_state[k].1 != v.1),
        "trainable tensors moved"
    );
}

#[test]
fn config_errors_name_the_field() {
    let err = lpeft_finetune::stage::parse(&serde_json::json!({ "method": "x", "model": "m" }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`model` and `peft`"), "{err}");
    let err = lpeft_finetune::stage::parse(&serde_json::json!({ "method": "x", "epochs": 0 }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("epochs"), "{err}");
    let err = lpeft_finetune::stage::parse(&serde_json::json!({ "method": "x", "epoch": 3 }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("epoch"), "{err}");
}

#[test]
fn an_empty_training_split_is_an_error_not_zero_steps() {
    let task = lpeft_data::registry::task("glue/sst2").unwrap().spec();
    let cfg = config();
    let device = Device::flex().autodiff();
    let spec = lpeft_schema::model::ModelSpec {
        masks: false,
        ..estimation_spec(
            tiny_encoder(Family::Bert, &[(4, 8)]),
            &task.kind,
            cfg.peft.as_ref().unwrap(),
        )
    };
    let model = Model::build(&spec, &mut RandomSource { seed: 2 }, &device).unwrap();
    let e = finetune(
        &cfg,
        model,
        &task,
        &split(0, 1),
        &split(4, 2),
        None,
        0,
        &device,
        &Device::flex(),
        &Silent,
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("the training split has no examples"),
        "{e}"
    );
}

/// A span split: per question one window `[CLS] q [SEP] w.. [SEP]` whose context words are
/// "w<id>"; the answer is the word of token 5 (planted once in every context).
fn span_split(n: usize, seed: u64) -> (SplitTensors, lpeft_data::Texts) {
    use lpeft_schema::dataset::{SpanAnswer, SpanQuestion, SpanTexts};
    let mut rng = SeededRng::new(seed);
    let (mut ids, mut types, mut offsets, mut spans, mut labels) =
        (vec![], vec![], vec![0u64], vec![], vec![]);
    let (mut contexts, mut questions) = (vec![], vec![]);
    for q in 0..n {
        let len = 3 + (rng.next_u64() % 5) as usize;
        let answer_at = (rng.next_u64() % len as u64) as usize;
        let words: Vec<u32> = (0..len)
            .map(|i| {
                if i == answer_at {
                    5
                } else {
                    6 + (rng.next_u64() % 20) as u32
                }
            })
            .collect();
        let (mut context, mut byte_start) = (String::new(), 0);
        ids.extend([1, 2 + (rng.next_u64() % 3) as u32, 3]);
        types.extend([0u8, 0, 0]);
        spans.extend([u32::MAX; 6]);
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                context.push(' ');
            }
            if i == answer_at {
                byte_start = context.len();
            }
            let start = context.len() as u32;
            context.push_str(&format!("w{w}"));
            spans.extend([start, context.len() as u32]);
            ids.push(*w);
            types.push(1);
        }
        ids.push(3);
        types.push(1);
        spans.extend([u32::MAX; 2]);
        offsets.push(ids.len() as u64);
        let pos = (3 + answer_at) as i64;
        labels.extend([pos, pos]);
        contexts.push(context);
        questions.push(SpanQuestion {
            id: format!("q{q}"),
            context: q,
            answers: vec![SpanAnswer {
                text: "w5".into(),
                byte_start,
            }],
        });
    }
    let split = SplitTensors {
        input_ids: ids,
        type_ids: types,
        offsets,
        group_ids: (0..n as u32).collect(),
        example_ids: (0..n as u32).collect(),
        labels: DataLabels::Span(labels),
        token_spans: Some(spans),
        num_truncated: 0,
    };
    (
        split,
        lpeft_data::Texts::Span(SpanTexts {
            contexts,
            questions,
        }),
    )
}

#[test]
fn span_logits_are_decoded_and_scored_against_the_gold_texts() {
    let task = lpeft_data::registry::task("squad/v1.1").unwrap().spec();
    let (dev, texts) = span_split(4, 3);
    let DataLabels::Span(gold) = &dev.labels else {
        unreachable!()
    };
    // Logits peaking at the gold token for questions 0 and 1, at the [SEP]-adjacent first
    // context token for the others (right only if the answer is there).
    let (mut starts, mut ends) = (vec![], vec![]);
    for r in 0..dev.num_rows() {
        let mut l = vec![0.0f32; dev.row(r).len() + 2]; // batch padding past the row
        let at = if r < 2 { gold[2 * r] as usize } else { 3 };
        l[at] = 5.0;
        starts.push(l.clone());
        ends.push(l);
    }
    let first_is_gold = (2..4).filter(|&r| gold[2 * r] == 3).count() as f64;
    let predictions = lpeft_train::Predictions::Span {
        start_logits: starts,
        end_logits: ends,
    };
    let e = lpeft_finetune::run::score(&task, &dev, Some(&texts), &predictions, &[]).unwrap();
    let want = (2.0 + first_is_gold) / 4.0;
    assert_eq!(e.metrics["exact_match"], want);
    assert_eq!(e.metrics["squad_f1"], want, "one-word answers: F1 is EM");
    assert_eq!(e.main_score, want);
    let e = lpeft_finetune::run::score(&task, &dev, None, &predictions, &[]).unwrap_err();
    assert!(e.to_string().contains("span texts"), "{e}");
}

/// Two epochs of LoRA(q,v) on a tiny BERT for a task scored by answer texts (SQuAD, ReCoRD):
/// every epoch reports exact match and F1 in [0, 1], their mean as the main score.
fn two_epochs_of_answers(
    task: &lpeft_schema::dataset::TaskSpec,
    train: &SplitTensors,
    dev: &SplitTensors,
    dev_texts: &lpeft_data::Texts,
) -> lpeft_finetune::run::Outcome {
    let mut cfg = config();
    cfg.epochs = 2;
    let device = Device::flex().autodiff();
    device.seed(1);
    let spec = lpeft_schema::model::ModelSpec {
        masks: false,
        ..estimation_spec(
            tiny_encoder(Family::Bert, &[(4, 8), (4, 8)]),
            &task.kind,
            cfg.peft.as_ref().unwrap(),
        )
    };
    let model = Model::build(&spec, &mut RandomSource { seed: 2 }, &device).unwrap();
    let out = finetune(
        &cfg,
        model,
        task,
        train,
        dev,
        Some(dev_texts),
        0,
        &device,
        &Device::flex(),
        &Silent,
        None,
    )
    .unwrap();
    assert_eq!(out.epochs.len(), 2);
    for e in &out.epochs {
        let (em, f1) = (e.metrics["exact_match"], e.metrics["squad_f1"]);
        assert!(
            (0.0..=1.0).contains(&em) && (0.0..=1.0).contains(&f1),
            "{e:?}"
        );
        assert!((e.main_score - (em + f1) / 2.0).abs() < 1e-12);
    }
    out
}

#[test]
fn span_extraction_fine_tunes_and_reports_exact_match_and_f1() {
    let task = lpeft_data::registry::task("squad/v1.1").unwrap().spec();
    let ((train, _), (dev, dev_texts)) = (span_split(32, 1), span_split(12, 2));
    let out = two_epochs_of_answers(&task, &train, &dev, &dev_texts);
    assert!(out.best_state.keys().any(|k| k.starts_with("head.")));
    // The planted token is easy to find: the best epoch answers every dev question right, and
    // its answers (one per question) are what the scores were computed on.
    assert_eq!(out.epochs[out.best_epoch].metrics["exact_match"], 1.0);
    let answers = out.best_answers.expect("span answers");
    let lpeft_data::Texts::Span(texts) = &dev_texts else {
        unreachable!()
    };
    assert_eq!(answers.len(), texts.questions.len());
    assert!(answers.values().all(|a| a == "w5"), "{answers:?}");
}

/// ReCoRD-shaped rows: `queries[q]` candidates for query q, one row each (label: whether the
/// row holds token 5, as in [`split`]); each candidate's entity text is `e{q}-{i}`, and the gold
/// answer is the text of the first candidate holding token 5 (or of candidate 0).
fn record_split(queries: &[usize], seed: u64) -> (SplitTensors, lpeft_data::Texts) {
    use lpeft_schema::dataset::{RecordQuery, RecordTexts};
    let rows: usize = queries.iter().sum();
    let mut s = split(rows, seed);
    s.group_ids = queries
        .iter()
        .enumerate()
        .flat_map(|(q, &n)| std::iter::repeat_n(q as u32, n))
        .collect();
    let DataLabels::Class(labels) = &s.labels else {
        unreachable!()
    };
    let mut at = 0;
    let texts = queries
        .iter()
        .enumerate()
        .map(|(q, &n)| {
            let entities: Vec<String> = (0..n).map(|i| format!("e{q}-{i}")).collect();
            let gold = (0..n).find(|&i| labels[at + i] == 1).unwrap_or(0);
            at += n;
            RecordQuery {
                id: format!("q{q}"),
                answers: vec![entities[gold].clone()],
                entities,
            }
        })
        .collect();
    (s, lpeft_data::Texts::Record(RecordTexts { queries: texts }))
}

#[test]
fn record_chooses_each_querys_best_scored_candidate() {
    let task = lpeft_data::registry::task("superglue/record")
        .unwrap()
        .spec();
    let (dev, texts) = record_split(&[3, 2], 4);
    let lpeft_data::Texts::Record(t) = &texts else {
        unreachable!()
    };
    let gold: Vec<usize> = t
        .queries
        .iter()
        .map(|q| q.entities.iter().position(|e| *e == q.answers[0]).unwrap())
        .collect();
    // Query 0's gold candidate has the largest True-over-False margin, query 1's the smallest;
    // the arg-max classes (all 0) would say nothing about which candidate is chosen.
    let mut logits = Vec::new();
    for (q, &n) in [3usize, 2].iter().enumerate() {
        for i in 0..n {
            let margin = if (i == gold[q]) == (q == 0) { 2.0 } else { 1.0 };
            logits.push(vec![5.0, 5.0 - 3.0 + margin]);
        }
    }
    let predictions = lpeft_train::Predictions::Class(vec![0; 5]);
    let e = lpeft_finetune::run::score(&task, &dev, Some(&texts), &predictions, &logits).unwrap();
    assert_eq!(e.metrics["exact_match"], 0.5);
    assert_eq!(
        e.metrics["squad_f1"], 0.5,
        "e0-x against e1-y share no token"
    );
    assert_eq!(e.main_score, 0.5);
    let bad = vec![vec![0.0f32; 3]; 5];
    let err = lpeft_finetune::run::score(&task, &dev, Some(&texts), &predictions, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ReCoRD needs 2"), "{err}");
}

#[test]
fn multirc_scores_f1a_over_options_and_exact_match_per_question() {
    let task = lpeft_data::registry::task("superglue/multirc")
        .unwrap()
        .spec();
    let mut dev = split(5, 5);
    dev.group_ids = vec![0, 0, 0, 1, 1];
    dev.labels = DataLabels::Class(vec![1, 0, 1, 1, 0]);
    // Question 0 all right; question 1 one option wrong.
    let predictions = lpeft_train::Predictions::Class(vec![1, 0, 1, 1, 1]);
    let e = lpeft_finetune::run::score(&task, &dev, None, &predictions, &[]).unwrap();
    assert_eq!(e.metrics["exact_match"], 0.5);
    // F1 over all five options: tp 3, fp 1, fn 0.
    assert!((e.metrics["f1a"] - 6.0 / 7.0).abs() < 1e-12, "{e:?}");
}

#[test]
fn record_fine_tunes_and_reports_exact_match_and_f1() {
    let task = lpeft_data::registry::task("superglue/record")
        .unwrap()
        .spec();
    let ((train, _), (dev, dev_texts)) = (
        record_split(&[4, 4, 4, 4, 4, 4, 4, 4], 1),
        record_split(&[3, 4, 3, 4], 2),
    );
    let out = two_epochs_of_answers(&task, &train, &dev, &dev_texts);
    for e in &out.epochs {
        assert!(!e.metrics.contains_key("accuracy"), "{e:?}");
    }
}
