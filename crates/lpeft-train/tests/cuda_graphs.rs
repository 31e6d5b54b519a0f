//! Steps captured as CUDA graphs train the same model as steps run one operator at a time.
//!
//! On the default device (flex, or any device without graphs) `with_cuda_graphs` must change
//! nothing at all. With `LPEFT_TEST_DEVICE=tch-cuda` (a build with `--features lpeft-model/tch`
//! on a GPU) two batch shapes alternate, with and without importance captures: the very first
//! step runs plainly, each of the four keys is captured on first sight and replayed after;
//! losses, importance captures and the trained parameters must match the plain run's up to the
//! last bits the device-side learning rate changes, dropout included.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use lpeft_data::{Batch, BatchLabels};
use lpeft_model::model::Model;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::{lora_everywhere, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, TaskHeadSpec};
use lpeft_train::{Capture, StepRecord, TrainConfig, Trainer};

fn batch(rows: usize, seq: usize, salt: usize) -> Batch {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in 0..rows {
        for t in 0..seq {
            let pad = r % 2 == 1 && t == seq - 1;
            ids.push(if pad {
                0
            } else {
                3 + ((r * 7 + t * 3 + salt) % 30) as i64
            });
            mask.push(i64::from(!pad));
        }
    }
    Batch {
        type_ids: vec![0; rows * seq],
        input_ids: ids,
        attention_mask: mask,
        labels: BatchLabels::Class((0..rows).map(|r| ((r + salt) % 2) as i64).collect()),
        batch_size: rows,
        rows,
        seq_len: seq,
        num_choices: None,
        row_indices: (0..rows).collect(),
        group_indices: (0..rows).collect(),
    }
}

/// The tests of this file one at a time: they seed and draw from the device's one random stream
/// (the comparison with the plain run needs the same dropout draws).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn device() -> Device {
    match std::env::var("LPEFT_TEST_DEVICE") {
        Ok(name) => lpeft_model::device::device(&name).expect("LPEFT_TEST_DEVICE"),
        Err(_) => Device::flex(),
    }
}

struct Values(Vec<f32>);
impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let data = p.val().into_data().convert::<f32>();
        self.0.extend(data.try_to_vec::<f32>().unwrap_or_default());
    }
}

/// What a training gave: its step records, every parameter's values, (captured, replayed).
type Trained = (Vec<StepRecord>, Vec<f32>, (usize, usize));

/// 14 steps alternating two shapes (importance captured on every third), then every
/// parameter's values.
fn train(graphs: bool) -> Trained {
    device().seed(7);
    train_from_seed(graphs, 0.1)
}

/// `train` without seeding the device (LoRA dropout `lora_dropout`, the only dropout).
fn train_from_seed(graphs: bool, lora_dropout: f64) -> Trained {
    let plain = device();
    let device = plain.autodiff();
    let spec = tiny_spec(
        Family::Bert,
        &[(2, 6), (2, 6)],
        TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::BertPooler,
        },
        lora_everywhere(2, 2, lora_dropout),
        true,
    );
    let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &device).unwrap();
    let config = TrainConfig {
        lr: 5e-2,
        total_steps: 14,
        warmup_steps: 2,
        weight_decay: 0.01,
        max_grad_norm: Some(1.0),
        l1: 1e-3,
        head_mask_lr_coef: 1.0,
        neuron_mask_lr_coef: 2.0,
    };
    let mut trainer = Trainer::new(config, device)
        .with_read_every(5)
        .with_cuda_graphs(graphs)
        .unwrap();
    let mut records = Vec::new();
    for i in 0..14 {
        let b = if i % 2 == 0 {
            batch(4, 5, i)
        } else {
            batch(3, 7, i)
        };
        let capture = if i % 3 == 0 {
            Capture::IMPORTANCE
        } else {
            Capture::NONE
        };
        let (m, recs) = trainer.step(model, &b, capture).unwrap();
        model = m;
        records.extend(recs);
    }
    records.extend(trainer.finish().unwrap());
    // Capture time is counted exactly when steps were captured.
    let captures = trainer.graph_captures();
    assert_eq!(
        captures.seconds > 0.0,
        trainer.graph_counts().0 > 0,
        "{captures:?} for {:?}",
        trainer.graph_counts()
    );
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    (records, v.0, trainer.graph_counts())
}

/// Two trainings' parameter values, one by one (see [`close`]).
fn close_params(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        close(
            f64::from(*a),
            f64::from(*b),
            &format!("parameter value {i}"),
        );
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs())),
        "{what}: {a} against {b}"
    );
}

#[test]
fn graphed_steps_train_the_same_model() {
    let _serial = serial();
    let (plain, plain_params, none) = train(false);
    let (graphed, graphed_params, counts) = train(true);
    assert_eq!(none, (0, 0));
    assert_eq!(plain.len(), 14);
    if !lpeft_model::graph::on_for(&device()) {
        // No graphs here: the option must be a no-op, to the bit.
        assert_eq!(counts, (0, 0));
        let strip = |r: &[StepRecord]| -> Vec<StepRecord> {
            // Wall times differ run to run.
            r.iter()
                .map(|r| StepRecord {
                    seconds: 0.0,
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(strip(&plain), strip(&graphed));
        assert_eq!(plain_params, graphed_params);
        return;
    }
    // The first step runs plainly; then each key (shape, importance) is captured on first
    // sight and replayed after: 4 keys here (2 shapes, with and without importance).
    let (captured, replayed) = counts;
    assert!(
        captured >= 2 && replayed >= 4,
        "captured {captured}, replayed {replayed}"
    );
    for (p, g) in plain.iter().zip(&graphed) {
        close(p.loss, g.loss, &format!("step {} loss", p.step));
        close(
            p.grad_norm,
            g.grad_norm,
            &format!("step {} gradient norm", p.step),
        );
        match (&p.importance, &g.importance) {
            (Some(a), Some(b)) => {
                for (x, y) in a.p2.iter().zip(&b.p2) {
                    close(f64::from(*x), f64::from(*y), &format!("step {} p2", p.step));
                }
            }
            (None, None) => {}
            _ => panic!("step {}: importance captured on one side only", p.step),
        }
    }
    close_params(&plain_params, &graphed_params);
}

/// [`train_from_seed`] with graphs on two threads started together; their results in order.
fn graphed_on_two_threads(lora_dropout: f64) -> Vec<Trained> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                train_from_seed(true, lora_dropout)
            })
        })
        .collect();
    runs.into_iter()
        .map(|r| r.join().expect("a training thread panicked"))
        .collect()
}

/// Two trainings capturing and replaying graphs on one device at the same time, each on its own
/// thread (as `lpeft run --per-device 2` runs two stages): both finish, and each trains the
/// model one training alone trains. Without dropout, since the two share the device's random
/// stream.
#[test]
fn graphed_trainings_on_two_threads_of_one_device() {
    let _serial = serial();
    device().seed(7);
    let (alone, alone_params, _) = train_from_seed(true, 0.0);
    for (records, params, counts) in graphed_on_two_threads(0.0) {
        if lpeft_model::graph::on_for(&device()) {
            assert!(counts.0 >= 2 && counts.1 >= 4, "graphs {counts:?}");
        }
        for (a, b) in alone.iter().zip(&records) {
            close(a.loss, b.loss, &format!("step {} loss", a.step));
        }
        close_params(&alone_params, &params);
    }
}

/// The same with dropout: the two trainings draw from the device's one random stream while the
/// other captures (libtorch refuses a draw from a generator another thread is capturing with,
/// unless the trainer keeps captures apart from draws). Their results depend on timing, so
/// this checks that both finish with finite values.
#[test]
fn graphed_trainings_with_dropout_on_two_threads_of_one_device() {
    let _serial = serial();
    device().seed(7);
    for (records, params, _) in graphed_on_two_threads(0.1) {
        assert_eq!(records.len(), 14);
        assert!(
            records.iter().all(|r| r.loss.is_finite()),
            "a loss is not finite"
        );
        assert!(
            params.iter().all(|v| v.is_finite()),
            "a parameter is not finite"
        );
    }
}
