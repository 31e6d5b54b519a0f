//! `precision: bf16-mixed` (`fused::Compute::Bf16`) against fp32 on the same fused nodes: the
//! loss, logits, every gradient and the estimation's recorded norm ratios within bf16's
//! rounding, every gradient back in f32 (the master weights' type), the inference path too.
//! Run with `cargo test -p lpeft-model --features tch --test mixed_precision` (part of `make
//! test-tch`); `LPEFT_TEST_DEVICE=tch-cuda` on a GPU covers the CUDA attention kernels in bf16.
#![cfg(feature = "tch")]

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::{max_diff, values};
use lpeft_model::fused::{Compute, FusedPolicy};
use lpeft_model::head::{HeadOutput, Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::peft::NormRatioRecorder;
use lpeft_model::precision::Precision;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};

/// A pruned-shape encoder (a head-less layer, an FFN-less one) with LoRA on every projection
/// and masks; head size 8, as the CUDA attention kernels take.
fn spec(family: Family) -> ModelSpec {
    spec_with(family, true, 0.0)
}

/// [`spec`] with or without the estimation's masks, at a LoRA dropout.
fn spec_with(family: Family, masks: bool, lora_dropout: f64) -> ModelSpec {
    let layers = [(4, 12), (0, 8), (2, 0)];
    let style = match family {
        Family::Roberta => HeadStyle::RobertaDenseTanh,
        _ => HeadStyle::BertPooler,
    };
    let head = TaskHeadSpec::Classification {
        num_labels: 3,
        style,
    };
    let peft = lora_everywhere(3, 3, lora_dropout);
    let mut spec = tiny_spec(family, &layers, head, peft, masks);
    spec.encoder.hidden_size = 32;
    spec.encoder.head_dim = 8;
    spec.encoder.hidden_dropout = 0.0;
    spec.encoder.attention_dropout = 0.0;
    spec
}

/// Every gradient by parameter, with its float type.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<(String, DType, Vec<f32>)>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let dtype = g.dtype();
            self.out.push((format!("{:?}", param.id), dtype, values(g)));
        }
    }
}

/// LoRA B and the masks away from their initial values, so that every gradient is non-zero.
fn spread(model: Model) -> Model {
    struct Spread;
    impl burn::module::ModuleMapper for Spread {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let data = t.to_data();
            let constant = data.iter::<f32>().all(|v| v == 0.0 || v == 1.0);
            let t = if t.is_require_grad() && constant {
                let n = t.shape().num_elements();
                let vals: Vec<f32> = (0..n).map(|i| 0.4 + 0.15 * (i % 5) as f32).collect();
                Tensor::<D>::from_data(TensorData::new(vals, t.shape()), &t.device()).require_grad()
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Spread)
}

type Run = (
    f32,
    Vec<f32>,
    Vec<(String, DType, Vec<f32>)>,
    Vec<f32>,
    Vec<f32>,
);

/// Loss, logits, gradients, recorded ratios (by module) and inference logits under `precision`.
fn run(family: Family, device: &Device, precision: Precision) -> Run {
    run_with(family, device, |m| precision.apply(m))
}

/// [`run`] with the model put under its precision by `apply`.
fn run_with(family: Family, device: &Device, apply: impl FnOnce(&mut Model)) -> Run {
    run_spec(&spec(family), device, apply)
}

/// libtorch's generator is the process's: runs that draw dropout take turns, or a test running
/// beside another would draw from the other's stream.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`run_with`] on any spec.
fn run_spec(spec: &ModelSpec, device: &Device, apply: impl FnOnce(&mut Model)) -> Run {
    let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let spec = spec.clone();
    let ad = device.clone().autodiff();
    ad.seed(5);
    let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
    model.encoder.fused = FusedPolicy::default();
    apply(&mut model);
    let model = spread(model);
    let input = random_input(&spec.encoder, 4, 9, 2, &ad);
    let mut rec = NormRatioRecorder::new(&input.attention_mask);
    let out = model.forward_recording(&input, &mut rec);
    let HeadOutput::Logits(logits) = out.head.clone() else {
        unreachable!("classification head")
    };
    let labels = Labels::Class(Tensor::<1, Int>::from_ints([0, 1, 2, 1], &ad));
    let loss = task_loss(&out.head, &labels);
    let loss_v = loss.clone().into_scalar::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut c = Collect {
        grads: &grads,
        out: vec![],
    };
    model.visit(&mut c);
    let mut ratios: Vec<(String, f32)> = rec
        .ratios()
        .iter()
        .map(|(id, t)| (id.to_string(), t.clone().into_scalar::<f32>()))
        .collect();
    ratios.sort_by(|a, b| a.0.cmp(&b.0));
    let plain_model = model.valid();
    let plain_input = random_input(&spec.encoder, 4, 9, 2, device);
    let HeadOutput::Logits(inference) = plain_model.forward(&plain_input).head else {
        unreachable!("classification head")
    };
    let ratios = ratios.into_iter().map(|(_, r)| r).collect();
    (loss_v, values(logits), c.out, ratios, values(inference))
}

/// The device under test: `LPEFT_TEST_DEVICE`, libtorch's CPU by default.
fn on_cuda() -> bool {
    std::env::var("LPEFT_TEST_DEVICE").is_ok_and(|d| d.contains("cuda"))
}

fn test_device() -> Device {
    let name = std::env::var("LPEFT_TEST_DEVICE").unwrap_or_else(|_| "tch".into());
    lpeft_model::device::device(&name).unwrap()
}

/// Two runs' loss, logits, gradients (with their float types), ratios and inference logits
/// are the same to the bit; `what` names the case.
fn assert_same_bits(a: &Run, b: &Run, what: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.0.to_bits(), b.0.to_bits(), "{what}: loss");
    assert_eq!(bits(&a.1), bits(&b.1), "{what}: logits");
    assert_eq!(a.2.len(), b.2.len(), "{what}: gradients");
    for ((name, d1, g1), (_, d2, g2)) in a.2.iter().zip(&b.2) {
        assert_eq!((d1, bits(g1)), (d2, bits(g2)), "{what} {name}: gradient");
    }
    assert_eq!(bits(&a.3), bits(&b.3), "{what}: ratios");
    assert_eq!(bits(&a.4), bits(&b.4), "{what}: inference");
}

/// Largest difference relative to the larger magnitude of `a` (floored).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    max_diff(a, b) / scale
}

#[test]
fn bf16_mixed_tracks_fp32() {
    let device = test_device();
    assert_eq!(Precision::Bf16Mixed.compute(), Compute::Bf16);
    Precision::Bf16Mixed.check(&device).unwrap();
    for family in [Family::Bert, Family::Roberta] {
        let (loss32, logits32, grads32, ratios32, inf32) = run(family, &device, Precision::Fp32);
        let norms = lpeft_model::fused::norm_kernel_runs();
        let (loss16, logits16, grads16, ratios16, inf16) =
            run(family, &device, Precision::Bf16Mixed);
        // On CUDA the residual stream ran in the add-norm kernels (they are what is compared
        // with fp32 here); on the CPU they never run.
        let ran = lpeft_model::fused::norm_kernel_runs() > norms;
        assert_eq!(ran, on_cuda(), "{family:?}: add-norm kernels ran: {ran}");
        // bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2 %); a few layers of GEMMs
        // compound it to about a percent, never to the 10 % a wrong cast or scale would give.
        assert!(
            (loss32 - loss16).abs() < 2e-2 * loss32.abs().max(1.0),
            "{family:?}: loss {loss32} vs {loss16}"
        );
        assert!(rel(&logits32, &logits16) < 3e-2, "{family:?}: logits");
        assert!(rel(&inf32, &inf16) < 3e-2, "{family:?}: inference logits");
        assert!(
            logits32 != logits16,
            "{family:?}: bf16-mixed computed exactly fp32's logits: it did not run in bf16"
        );
        assert_eq!(grads32.len(), grads16.len(), "{family:?}: gradients");
        assert!(
            grads32.len() >= 16,
            "{family:?}: {} gradients",
            grads32.len()
        );
        for ((name, d32, g32), (_, d16, g16)) in grads32.iter().zip(&grads16) {
            assert_eq!(*d32, DType::F32, "{family:?} {name}: fp32 gradient type");
            assert_eq!(*d16, DType::F32, "{family:?} {name}: gradient not in f32");
            assert!(
                g16.iter().all(|v| v.is_finite()),
                "{family:?} {name}: not finite"
            );
            assert!(
                rel(g32, g16) < 6e-2,
                "{family:?} {name}: bf16-mixed gradient off by {} of its scale",
                rel(g32, g16)
            );
        }
        assert_eq!(
            ratios32.len(),
            ratios16.len(),
            "{family:?}: ratios recorded"
        );
        assert!(
            ratios32.len() >= 12,
            "{family:?}: {} ratios",
            ratios32.len()
        );
        assert!(
            rel(&ratios32, &ratios16) < 3e-2,
            "{family:?}: recorded ratios"
        );
    }
}

/// Float types of the encoder projections' tensors: frozen ones of projections with a weight and
/// a bias (what a fused node takes), frozen biases of projections without a weight (a pruned-away
/// input: the bias alone, on the plain path), and trained ones.
fn projection_dtypes(model: &Model) -> (Vec<DType>, Vec<DType>, Vec<DType>) {
    let (mut frozen, mut bias_alone, mut trained) = (vec![], vec![], vec![]);
    for layer in &model.encoder.layers {
        let (a, f) = (&layer.attention, &layer.ffn);
        for d in [
            a.query.as_ref(),
            a.key.as_ref(),
            a.value.as_ref(),
            Some(&a.output),
        ]
        .into_iter()
        .chain([f.input.as_ref(), Some(&f.output)])
        .flatten()
        {
            let has_weight = d.weight.is_some();
            let w = d
                .weight
                .as_ref()
                .map(|p| (p.val().is_require_grad(), p.val().dtype()));
            let b = d
                .bias
                .as_ref()
                .map(|p| (p.val().is_require_grad(), p.val().dtype()));
            for (trains, dtype) in [w, b].into_iter().flatten() {
                match (trains, has_weight) {
                    (true, _) => trained.push(dtype),
                    (false, true) => frozen.push(dtype),
                    (false, false) => bias_alone.push(dtype),
                }
            }
        }
    }
    (frozen, bias_alone, trained)
}

/// bf16-mixed stores the frozen projections in bf16 once instead of casting them in every
/// fused call: the same bf16 values reach the same kernels, so loss, logits, gradients,
/// ratios and inference logits are identical to the bit; trained tensors stay f32.
#[test]
fn frozen_projections_cast_once_change_nothing() {
    let device = test_device();
    for family in [Family::Bert, Family::Roberta] {
        let once = run(family, &device, Precision::Bf16Mixed);
        let every_call = run_with(family, &device, |m| {
            m.encoder.fused.compute = Compute::Bf16;
        });
        assert_same_bits(&once, &every_call, &format!("{family:?}"));

        // The cast took where it should, and only there.
        let spec = spec(family);
        let ad = device.clone().autodiff();
        let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
        let mut lora_trained_bias = model.encoder.layers[0]
            .attention
            .output
            .bias
            .take()
            .unwrap();
        lora_trained_bias = lora_trained_bias.set_require_grad(true);
        model.encoder.layers[0].attention.output.bias = Some(lora_trained_bias);
        Precision::Bf16Mixed.apply(&mut model);
        let (frozen, bias_alone, trained) = projection_dtypes(&model);
        assert!(
            frozen.len() >= 8,
            "{family:?}: {} frozen tensors",
            frozen.len()
        );
        assert!(
            frozen.iter().all(|d| *d == DType::BF16),
            "{family:?}: frozen {frozen:?}"
        );
        // The spec's head-less and FFN-less layers: their output projections keep a bias alone.
        assert_eq!(
            bias_alone,
            vec![DType::F32; 2],
            "{family:?}: a bias alone stays f32"
        );
        assert_eq!(
            trained,
            vec![DType::F32],
            "{family:?}: a trained bias stays f32"
        );
        let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
        Precision::Fp32.apply(&mut model);
        let (frozen, _, _) = projection_dtypes(&model);
        assert!(
            frozen.iter().all(|d| *d == DType::F32),
            "{family:?}: fp32 casts nothing"
        );
    }
}

/// Without the fused nodes (here: flex) bf16-mixed cannot run and casts nothing, so a model
/// that reaches the plain path never meets a bf16 weight.
#[test]
fn no_cast_without_fused_nodes() {
    let spec = spec(Family::Bert);
    let ad = Device::flex().autodiff();
    let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
    lpeft_model::precision::frozen_projections_in_bf16(&mut model);
    let (frozen, _, _) = projection_dtypes(&model);
    assert!(!frozen.is_empty() && frozen.iter().all(|d| *d == DType::F32));
}

/// Under bf16-mixed, an island hands its output to the island that alone consumes it (q, k, v
/// to the attention core; the context to the output projection and FC1's activations to FC2
/// where no mask sits between) in bf16 instead of converting it to f32 for the next island to
/// convert back. bf16 → f32 → bf16 is exact, so loss, logits, gradients (each in its
/// parameter's type), ratios and inference logits are identical to the bit, with the
/// estimation's masks and without, LoRA dropout acting.
#[test]
fn hand_off_in_bf16_changes_nothing() {
    let device = test_device();
    for family in [Family::Bert, Family::Roberta] {
        for masks in [true, false] {
            let spec = spec_with(family, masks, 0.1);
            let handed = run_spec(&spec, &device, |m| Precision::Bf16Mixed.apply(m));
            let converted = run_spec(&spec, &device, |m| {
                Precision::Bf16Mixed.apply(m);
                m.encoder.fused.hand_off = false;
            });
            let what = format!("{family:?}, masks {masks}");
            assert_same_bits(&handed, &converted, &what);
            assert!(handed.2.len() >= 18, "{what}: {} gradients", handed.2.len());
            for (name, dtype, _) in &handed.2 {
                assert_eq!(*dtype, DType::F32, "{what} {name}: gradient type");
            }
        }
    }
}

/// The estimation's head and neuron masks applied inside the projection islands that consume
/// them (`FusedPolicy::masks_in_islands`) give what the product between islands gave, to the
/// bit: loss, logits, every gradient (the masks' included) and its type, ratios and inference,
/// in bf16-mixed (where the producing islands then hand off in bf16) and in fp32, LoRA dropout
/// acting.
#[test]
fn masks_in_islands_change_nothing() {
    let device = test_device();
    for family in [Family::Bert, Family::Roberta] {
        let spec = spec_with(family, true, 0.1);
        for precision in [Precision::Bf16Mixed, Precision::Fp32] {
            let kernel_runs = lpeft_model::fused::scale_kernel_report().0;
            let inside = run_spec(&spec, &device, |m| precision.apply(m));
            // On CUDA under bf16 the masks' products ran in the shim's kernels (vectorised for
            // the layers whose widths are multiples of 8, one element a thread for the 12
            // neurons), so the comparison below checks their bits against libtorch's.
            if on_cuda() && precision == Precision::Bf16Mixed {
                let (runs, failure) = lpeft_model::fused::scale_kernel_report();
                assert_eq!(failure, None, "the scaling kernels could not run");
                assert!(runs > kernel_runs, "the scaling kernels did not run");
            }
            let between = run_spec(&spec, &device, |m| {
                precision.apply(m);
                m.encoder.fused.masks_in_islands = false;
            });
            let what = format!("{family:?}, {precision:?}");
            assert_same_bits(&inside, &between, &what);
            // The masks were trained: one per layer with heads, one per layer with neurons.
            let unmasked = run_spec(&spec_with(family, false, 0.1), &device, |m| {
                precision.apply(m)
            });
            let l = &spec.encoder.layers;
            let masks =
                l.iter().filter(|s| s.heads > 0).count() + l.iter().filter(|s| s.ffn > 0).count();
            assert_eq!(
                inside.2.len(),
                unmasked.2.len() + masks,
                "{what}: gradients"
            );
        }
    }
}

/// The hand-off is live: a projection island asked to hand off under bf16 returns bf16, and
/// f32 otherwise (without it, or in f32 compute).
#[test]
fn a_handed_off_projection_stays_bf16() {
    use lpeft_model::fused::{self, Island};
    let device = lpeft_model::device::device("tch").unwrap();
    let x = Tensor::<3>::from_data(TensorData::new(vec![0.5f32; 2 * 3 * 4], [2, 3, 4]), &device);
    let w = Tensor::<2>::from_data(TensorData::new(vec![0.25f32; 4 * 8], [4, 8]), &device);
    let bias = Tensor::<1>::from_data(TensorData::new(vec![0.125f32; 8], [8]), &device);
    let out = |compute, hand_off| {
        let island = Island::Linear {
            lora_scale: 0.0,
            lora_dropout: 0.0,
            act: None,
            pad_out: 0,
            pad_in: 0,
            rank_align: 1,
            record: false,
            compute,
            hand_off,
            in_scale: false,
            f32_grad: false,
        };
        fused::linear(x.clone(), w.clone(), bias.clone(), None, None, island).dtype()
    };
    assert_eq!(out(Compute::Bf16, true), DType::BF16);
    assert_eq!(out(Compute::Bf16, false), DType::F32);
    assert_eq!(out(Compute::F32, true), DType::F32);
}

/// How far the add-norm kernels' run may be from libtorch's operations': relative loss,
/// logits (training and inference) and gradients.
struct Tolerances {
    loss: f32,
    logits: f32,
    grads: f32,
}

/// `family`'s tiny model under `precision` with the add-norm kernels and with libtorch's
/// operations (the same model, the same draws): asserts they agree within `tol`, with the same
/// gradient types, and on the CPU, where the kernels never run, to the bit. Returns whether the
/// kernels ran in the first run.
fn kernels_against_ops(
    family: Family,
    device: &Device,
    precision: Precision,
    tol: Tolerances,
) -> bool {
    let spec = spec_with(family, false, 0.0);
    let norms = lpeft_model::fused::norm_kernel_runs();
    let kernels = run_spec(&spec, device, |m| precision.apply(m));
    let ran = lpeft_model::fused::norm_kernel_runs() > norms;
    let ops = run_spec(&spec, device, |m| {
        precision.apply(m);
        m.encoder.fused.norm_kernel = false;
    });
    assert!(
        (kernels.0 - ops.0).abs() < tol.loss * ops.0.abs().max(1.0),
        "{family:?}: loss {} against {}",
        kernels.0,
        ops.0
    );
    assert!(rel(&ops.1, &kernels.1) < tol.logits, "{family:?}: logits");
    assert!(
        rel(&ops.4, &kernels.4) < tol.logits,
        "{family:?}: inference logits"
    );
    for ((name, d1, g1), (_, d2, g2)) in ops.2.iter().zip(&kernels.2) {
        assert_eq!(d1, d2, "{family:?} {name}: gradient type");
        assert!(
            rel(g1, g2) < tol.grads,
            "{family:?} {name}: off by {}",
            rel(g1, g2)
        );
    }
    if !on_cuda() {
        // Nothing ran in kernels on the CPU: the very same computation.
        assert_same_bits(&kernels, &ops, &format!("{family:?} on the CPU"));
    }
    ran
}

/// The add-norm kernels against libtorch's operations under bf16-mixed (the same model, the
/// same dropout draws: both take their masks from libtorch's generator, the kernels as uint8):
/// loss, logits and gradients within bf16's rounding of each other (on CUDA the kernels sum the
/// statistics in another order, so the last bits may differ: the key tag says which ran), and
/// on the CPU, where the kernels never run, the same bits.
#[test]
fn norm_kernels_track_libtorchs_operations() {
    let device = test_device();
    for family in [Family::Bert, Family::Roberta] {
        let tol = Tolerances {
            loss: 1e-2,
            logits: 2e-2,
            grads: 5e-2,
        };
        kernels_against_ops(family, &device, Precision::Bf16Mixed, tol);
    }
}

/// TF32's residual stream in the add-norm kernels (x and ∂x in f32) against libtorch's
/// operations: on CUDA the kernels ran and every value is within f32 summation-order noise
/// (both sides run the same TF32 GEMMs; an error of the kernels' f32 path would be far off), on
/// the CPU, where they never run, the same bits.
#[test]
fn tf32_norm_kernels_track_libtorchs_operations() {
    let device = test_device();
    let _tf32 = on_cuda().then(|| Precision::Tf32.enter(&device).expect("TF32 on CUDA"));
    for family in [Family::Bert, Family::Roberta] {
        let tol = Tolerances {
            loss: 1e-3,
            logits: 1e-3,
            grads: 1e-2,
        };
        let ran = kernels_against_ops(family, &device, Precision::Tf32, tol);
        assert_eq!(ran, on_cuda(), "{family:?}: add-norm kernels ran: {ran}");
    }
}
