//! The shared training pieces on a tiny random model: steps learn, the NaN guard stops a
//! diverging run with a clear error, evaluation is deterministic and sized per unit, and
//! labels that do not fit the head are refused.

use burn::tensor::Device;

use lpeft_data::{Batch, BatchLabels};
use lpeft_model::model::Model;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::{lora_everywhere, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};
use lpeft_train::{Capture, Predictions, TrainConfig, TrainError, Trainer, evaluate};

fn spec(head: TaskHeadSpec, dropout: f64) -> ModelSpec {
    let mut s = tiny_spec(
        Family::Bert,
        &[(2, 6), (2, 6)],
        head,
        lora_everywhere(2, 2, dropout),
        true,
    );
    s.encoder.hidden_dropout = dropout;
    s
}

fn classification() -> TaskHeadSpec {
    TaskHeadSpec::Classification {
        num_labels: 2,
        style: HeadStyle::BertPooler,
    }
}

/// Rows of 5 tokens (the last one padding in odd rows); label = first token is even.
fn batch(rows: usize, labels: BatchLabels) -> Batch {
    let seq = 5;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in 0..rows {
        for t in 0..seq {
            let pad = r % 2 == 1 && t == seq - 1;
            ids.push(if pad {
                0
            } else {
                3 + ((r * 7 + t * 3) % 30) as i64
            });
            mask.push(i64::from(!pad));
        }
    }
    Batch {
        type_ids: vec![0; rows * seq],
        input_ids: ids,
        attention_mask: mask,
        labels,
        batch_size: rows,
        rows,
        seq_len: seq,
        num_choices: None,
        row_indices: (0..rows).collect(),
        group_indices: (0..rows).collect(),
    }
}

fn class_batch() -> Batch {
    let labels = (0..8).map(|r| ((3 + r * 7) % 2) as i64).collect();
    batch(8, BatchLabels::Class(labels))
}

fn config(lr: f64, steps: usize) -> TrainConfig {
    TrainConfig {
        lr,
        total_steps: steps,
        warmup_steps: 0,
        weight_decay: 0.0,
        max_grad_norm: Some(1.0),
        l1: 1e-3,
        head_mask_lr_coef: 1.0,
        neuron_mask_lr_coef: 1.0,
    }
}

#[test]
fn steps_learn_and_account_time() {
    let device = Device::flex().autodiff();
    let mut model = Model::build(
        &spec(classification(), 0.0),
        &mut RandomSource { seed: 1 },
        &device,
    )
    .unwrap();
    // Read back every 7 steps: records arrive in bursts, complete and in order.
    let mut trainer = Trainer::new(config(5e-2, 30), device).with_read_every(7);
    let b = class_batch();
    let mut records = Vec::new();
    for i in 0..30 {
        let capture = if i % 2 == 0 {
            Capture::IMPORTANCE
        } else {
            Capture::NONE
        };
        let (m, recs) = trainer.step(model, &b, capture).unwrap();
        model = m;
        assert_eq!(recs.len(), if (i + 1) % 7 == 0 { 7 } else { 0 }, "step {i}");
        records.extend(recs);
    }
    records.extend(trainer.finish().unwrap());
    assert!(
        trainer.finish().unwrap().is_empty(),
        "nothing left after a finish"
    );
    let mut losses = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec.step, i);
        assert_eq!(rec.importance.is_some(), i % 2 == 0);
        if let Some(imp) = &rec.importance {
            assert_eq!(imp.modules.len(), 12);
            assert!(imp.rank_taylor.iter().all(|r| r.len() == 2));
        }
        assert!(rec.grad_norm.is_finite() && rec.grad_norm > 0.0);
        losses.push(rec.task_loss);
    }
    assert_eq!(losses.len(), 30);
    assert!(losses[29] < losses[0] * 0.5, "task loss falls: {losses:?}");
    assert_eq!(trainer.timing.steps, 30);
    assert_eq!(trainer.timing.examples, 240);
    assert_eq!(trainer.timing.tokens, 30 * (40 - 4));
    assert_eq!(trainer.steps_done(), 30);
    assert_eq!(trainer.lr(), 0.0, "linear decay ends at 0");
}

#[test]
fn reading_back_late_changes_no_value() {
    let run = |every: usize| {
        let device = Device::flex().autodiff();
        let mut model = Model::build(
            &spec(classification(), 0.0),
            &mut RandomSource { seed: 1 },
            &device,
        )
        .unwrap();
        let mut trainer = Trainer::new(config(5e-2, 12), device).with_read_every(every);
        let mut records = Vec::new();
        for _ in 0..12 {
            let (m, recs) = trainer
                .step(model, &class_batch(), Capture::IMPORTANCE)
                .unwrap();
            model = m;
            records.extend(recs);
        }
        records.extend(trainer.finish().unwrap());
        let values: Vec<_> = records
            .into_iter()
            .map(|r| (r.step, r.loss, r.task_loss, r.lr, r.grad_norm, r.importance))
            .collect();
        (values, trainer.timing.steps)
    };
    let (each, steps_each) = run(1);
    let (late, steps_late) = run(5);
    assert_eq!(each.len(), 12);
    assert_eq!(each, late);
    assert_eq!((steps_each, steps_late), (12, 12));
}

#[test]
fn nan_guard_stops_a_diverging_run() {
    let device = Device::flex().autodiff();
    let mut model = Model::build(
        &spec(classification(), 0.0),
        &mut RandomSource { seed: 2 },
        &device,
    )
    .unwrap();
    let mut cfg = config(1e30, 10);
    cfg.max_grad_norm = None;
    // Read back every 4 steps: the failure may come late, but names the step it happened at.
    let mut trainer = Trainer::new(cfg, device).with_read_every(4);
    let b = class_batch();
    let mut failure = None;
    for _ in 0..10 {
        match trainer.step(model, &b, Capture::NONE) {
            Ok((m, _)) => model = m,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.or_else(|| trainer.finish().err());
    let e = failure.expect("an lr of 1e30 diverges");
    assert!(
        matches!(
            e,
            TrainError::NonFiniteLoss { .. } | TrainError::NonFiniteGradient { .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("diverged"), "{e}");
}

#[test]
fn evaluation_is_deterministic_and_per_unit() {
    let device = Device::flex();
    let model = Model::build(
        &spec(classification(), 0.3),
        &mut RandomSource { seed: 3 },
        &device.clone().autodiff(),
    )
    .unwrap();
    let batches = vec![class_batch(), class_batch()];
    let a = evaluate(&model, batches.clone(), &device).unwrap();
    let b = evaluate(&model, batches, &device).unwrap();
    assert_eq!(
        (&a.predictions, &a.logits, a.loss),
        (&b.predictions, &b.logits, b.loss),
        "no dropout in evaluation"
    );
    assert_eq!(a.examples, 16);
    let Predictions::Class(p) = &a.predictions else {
        panic!("class predictions")
    };
    assert_eq!(p.len(), 16);
    assert_eq!(a.logits.len(), 16);
    assert!(a.loss.is_finite() && a.loss > 0.0);

    let reg = Model::build(
        &spec(
            TaskHeadSpec::Regression {
                style: HeadStyle::BertPooler,
            },
            0.0,
        ),
        &mut RandomSource { seed: 3 },
        &device,
    )
    .unwrap();
    let out = evaluate(
        &reg,
        vec![batch(4, BatchLabels::Float(vec![0.5, 1.0, 2.0, 3.0]))],
        &device,
    )
    .unwrap();
    assert!(matches!(&out.predictions, Predictions::Score(s) if s.len() == 4));
}

#[test]
fn labels_must_fit_the_head() {
    let device = Device::flex();
    let reg = Model::build(
        &spec(
            TaskHeadSpec::Regression {
                style: HeadStyle::BertPooler,
            },
            0.0,
        ),
        &mut RandomSource { seed: 3 },
        &device,
    )
    .unwrap();
    let e = evaluate(&reg, vec![class_batch()], &device).unwrap_err();
    assert!(matches!(e, TrainError::LabelMismatch { .. }), "{e}");
    let e = evaluate(&reg, vec![batch(2, BatchLabels::None)], &device).unwrap_err();
    assert!(matches!(e, TrainError::NoLabels));
}

#[test]
fn mask_groups_have_their_own_learning_rate() {
    use lpeft_model::checkpoint::named_tensors;
    let device = Device::flex().autodiff();
    let spec = spec(classification(), 0.0);
    let b = class_batch();
    let run = |head: f64, neuron: f64, steps: usize| {
        let mut model = Model::build(&spec, &mut RandomSource { seed: 1 }, &device).unwrap();
        let before = named_tensors(&model);
        let cfg = TrainConfig {
            head_mask_lr_coef: head,
            neuron_mask_lr_coef: neuron,
            ..config(1e-2, 3)
        };
        let mut trainer = Trainer::new(cfg, device.clone());
        for _ in 0..steps {
            model = trainer.step(model, &b, Capture::NONE).unwrap().0;
        }
        let after = named_tensors(&model);
        let moved = |name: &str| {
            let (a, b) = (&before[name].1, &after[name].1);
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        (
            moved("encoder.layers.0.attention.head_mask"),
            moved("encoder.layers.0.ffn.neuron_mask"),
            moved("encoder.layers.0.attention.lora_query.a"),
        )
    };
    let (h, n, a) = run(0.0, 1.0, 2);
    assert_eq!(h, 0.0, "a zero coefficient freezes the head masks");
    assert!(n > 0.0 && a > 0.0);
    // One step: both runs see the same gradients, so only the head-mask update differs.
    let (h1, n1, a1) = run(1.0, 1.0, 1);
    let (h3, n3, a3) = run(3.0, 1.0, 1);
    assert!(h1 > 0.0);
    assert!(
        (h3 / h1 - 3.0).abs() < 0.05,
        "Adam steps scale with the group lr: {h1} vs {h3}"
    );
    assert_eq!((n1, a1), (n3, a3), "other groups are unaffected");
}

/// `T²·KL(softmax(t/T) ‖ softmax(s/T))` per row, averaged (the host reference).
fn kl_reference(student: &[Vec<f32>], teacher: &[Vec<f32>], t: f64) -> f64 {
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / t).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| v - lse).collect()
    };
    let n = student.len() as f64;
    student
        .iter()
        .zip(teacher)
        .map(|(s, tr)| {
            let (ls, lt) = (log_softmax(s), log_softmax(tr));
            lt.iter()
                .zip(&ls)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n
        * t
        * t
}

fn distill_of(rows: &[Vec<f32>], weight: f64, temperature: f64) -> lpeft_train::Distill {
    lpeft_train::Distill {
        weight,
        temperature,
        width: rows[0].len(),
        targets: rows.concat(),
    }
}

#[test]
fn distillation_is_the_kl_towards_the_teacher_and_pulls_the_student_to_it() {
    let device = Device::flex().autodiff();
    let spec = spec(classification(), 0.0);
    let b = class_batch();
    // Confident targets that disagree with the labels on some rows: far from the student.
    let teacher: Vec<Vec<f32>> = (0..8)
        .map(|r| {
            if r % 3 == 0 {
                vec![2.0, -2.0]
            } else {
                vec![-1.0, 1.5]
            }
        })
        .collect();
    let mut model = Model::build(&spec, &mut RandomSource { seed: 1 }, &device).unwrap();
    let student = evaluate(&model, vec![b.clone()], &Device::flex())
        .unwrap()
        .logits;
    let cfg = TrainConfig {
        l1: 0.0,
        ..config(5e-2, 40)
    };
    let mut trainer = Trainer::new(cfg, device).with_distill(distill_of(&teacher, 1.0, 2.0));
    let (m, mut first) = trainer.step(model, &b, Capture::NONE).unwrap();
    model = m;
    let first = first.remove(0);
    // Weight 1: the objective is the distillation term alone (no dropout in this model).
    let expected = kl_reference(&student, &teacher, 2.0);
    assert!(
        (first.loss - expected).abs() < 1e-4 * (1.0 + expected),
        "loss {} vs reference KL {expected}",
        first.loss
    );
    assert!(first.task_loss > 0.0, "the task loss is still reported");
    for _ in 1..40 {
        model = trainer.step(model, &b, Capture::NONE).unwrap().0;
    }
    let after = evaluate(&model, vec![b.clone()], &Device::flex())
        .unwrap()
        .logits;
    let kl_after = kl_reference(&after, &teacher, 2.0);
    assert!(kl_after < expected * 0.5, "KL {expected} → {kl_after}");
}

#[test]
fn regression_distills_by_squared_difference_and_a_uncovered_unit_is_refused() {
    let device = Device::flex().autodiff();
    let spec = spec(
        TaskHeadSpec::Regression {
            style: HeadStyle::BertPooler,
        },
        0.0,
    );
    let b = batch(4, BatchLabels::Float(vec![0.5, 1.0, 2.0, 3.0]));
    let model = Model::build(&spec, &mut RandomSource { seed: 1 }, &device).unwrap();
    let student = evaluate(&model, vec![b.clone()], &Device::flex())
        .unwrap()
        .logits;
    let teacher: Vec<Vec<f32>> = vec![vec![1.0], vec![-1.0], vec![0.25], vec![2.0]];
    let cfg = TrainConfig {
        l1: 0.0,
        ..config(1e-2, 2)
    };
    let mut trainer =
        Trainer::new(cfg, device.clone()).with_distill(distill_of(&teacher, 0.25, 2.0));
    let (model, mut rec) = trainer.step(model, &b, Capture::NONE).unwrap();
    let rec = rec.remove(0);
    let mse = student
        .iter()
        .zip(&teacher)
        .map(|(s, t)| f64::from(s[0] - t[0]).powi(2))
        .sum::<f64>()
        / 4.0;
    let expected = 0.75 * rec.task_loss + 0.25 * mse;
    assert!(
        (rec.loss - expected).abs() < 1e-4,
        "{} vs {expected}",
        rec.loss
    );

    let mut short = Trainer::new(cfg, device).with_distill(distill_of(&teacher[..2], 0.5, 2.0));
    let e = short.step(model, &b, Capture::NONE).unwrap_err();
    assert!(
        matches!(&e, TrainError::Teacher(m) if m.contains("unit 2")),
        "{e}"
    );
}
