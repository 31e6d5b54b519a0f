//! `lpeft-bench`: times our training step (forward, backward, AdamW on the trainable set) and
//! inference on an encoder (or OPT decoder) of a given shape with random weights (weights do
//! not change speed), and prints one JSON line per measurement. `bench/cpu_train_step.py` runs
//! it beside the PyTorch peer in the same session and prints the ratios; `bench/gpu_bench.py`
//! does it on a GPU.
//!
//! Tasks: sequence classification (`--task seq-cls`, the default: the family's head and
//! cross-entropy over 2 labels) and, on the OPT shapes, the causal-LM step (`--task causal-lm`:
//! next-token loss through the tied embedding matrix, `lpeft_model::opt::causal_lm_loss`).
//!
//! Weights: every tensor is drawn from its initialiser's distribution's width as uniform values
//! ([`BenchSource`]: seeded per tensor and chunk, filled on every core), because drawing
//! opt-6.7b's 6.7e9 normal values one at a time would take minutes. Under `--precision
//! bf16-pure` each tensor is converted to bf16 on the host as it is created (burn's
//! `from_data` converts to the device's default float type before the copy), so the device
//! never holds an f32 copy of the weights: opt-6.7b's are 12.4 GiB there.
//!
//! The library also exports `lpeft_bench_run` with the C ABI, so that a profiler living in
//! another runtime of the same process (PyTorch's, through `bench/profile_step.py`) can watch
//! our steps: build it with `cargo rustc --release -p lpeft-bench --lib --crate-type cdylib`.

#![allow(clippy::print_stdout)]

pub mod collective;

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use clap::Parser;
use lpeft_model::head::{Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::opt::{causal_lm_loss, lm_logits};
use lpeft_model::optim::{AdamW, AdamWConfig};
use lpeft_model::precision::Precision;
use lpeft_model::rng::SeededRng;
use lpeft_model::source::{Init, Role, WeightSource};
use lpeft_model::testing::{lora_everywhere, random_input};
use lpeft_schema::model::{
    Activation, EncoderSpec, Family, HeadStyle, LayerShape, LoraTarget, ModelSpec, PeftModuleSpec,
    PeftSite, RelativeAttention, TaskHeadSpec,
};

#[derive(Parser, Debug)]
struct Args {
    /// Shape: minilm (6x384, 12 heads, FFN 1536), roberta-base, mpnet-base, roberta-large,
    /// large-skeleton (roberta-large's 24 layers of 16 heads at width 128: host overhead only),
    /// opt-1.3b (24x2048, 32 heads, FFN 8192), opt-6.7b (32x4096, 32 heads, FFN 16384), or
    /// opt-tiny (2x64, 4 heads, FFN 256: for tests).
    #[arg(long, default_value = "minilm")]
    shape: String,
    /// seq-cls: sequence classification (2 labels, the family's head: OPT's last-token
    /// `score`); causal-lm (OPT shapes): next-token loss through the tied LM head.
    #[arg(long, default_value = "seq-cls", value_parser = ["seq-cls", "causal-lm"])]
    task: String,
    /// lora-qv (r=8 on query, value), lora-all (r=8 on the six matrices), light-lora (the
    /// Light-PEFT-pruned shape: a third of every layer's heads and FFN neurons removed, LoRA on a
    /// quarter of the six-per-layer modules at rank 4, scale kept at alpha/8), light-r2 (the same
    /// pruned layers, LoRA on all six at rank 2: the pipeline's `r2` cut), or none.
    #[arg(long, default_value = "lora-qv")]
    peft: String,
    /// fp32; tf32 (f32 tensors, TF32 matmuls: libtorch CUDA); bf16-mixed (the stages'
    /// `precision: bf16-mixed`: GEMMs and attention in bf16 inside the fused nodes, f32 master
    /// weights and AdamW state, as autocast); bf16-pure (every tensor bf16: weights,
    /// activations and optimizer state).
    #[arg(long, default_value = "fp32",
          value_parser = ["fp32", "tf32", "bf16-mixed", "bf16-pure"])]
    precision: String,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed iterations (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Also time inference (forward only, no autodiff).
    #[arg(long)]
    inference: bool,
    /// Fused libtorch nodes for projections, attention and add+LayerNorm (`on`, the default,
    /// as in training runs), or `off`: burn's elementary operations (for comparison). Only the
    /// libtorch backends have fused nodes.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    fused: String,
    /// Multiple that fused FFN widths are padded to inside the nodes: `auto` (8 on CUDA, none
    /// elsewhere, as in training runs) or a number (1: never), for comparison.
    #[arg(long, default_value = "auto")]
    ffn_align: String,
    /// Multiple that LoRA ranks are padded to inside the nodes, where it should differ from
    /// `--ffn-align` (a number; 1: never; by default the same).
    #[arg(long)]
    rank_align: Option<usize>,
    /// Under bf16-mixed, islands hand their outputs to the island that alone consumes them in
    /// bf16 (`on`, as the stages do) or convert them to f32 as before (`off`), for comparison.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    hand_off: String,
    /// With `--step estimate`, the head and neuron masks are applied inside the projection
    /// islands that consume them (`on`, as the stages do) or by a product between islands as
    /// before (`off`), for comparison.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    masks_in_islands: String,
    /// Under bf16-mixed and TF32 on CUDA, add + dropout + LayerNorm of the residual stream run in the
    /// shim's kernels (`on`, as the stages do) or in libtorch's operations as before (`off`: other
    /// last bits), for comparison.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    norm_kernel: String,
    /// FFN widths of the pruned shapes: `uniform` (a third off every layer: 3072 → 2048, 8192 →
    /// 5462), `irregular` (a few neurons fewer, different per layer and never a multiple of 8, as
    /// the global FFN cut of the pipeline's surgery leaves them: 2047, 2044, 2041, 2038, ...) or
    /// `multiple8` (the uniform width rounded up to a multiple of 8, as surgery's
    /// `ffn_multiple: 8` keeps it: 5462 → 5464; 2048 stays).
    #[arg(long, value_enum, default_value_t = FfnWidths::Uniform)]
    ffn_widths: FfnWidths,
    /// Also report the median time of forward, backward and optimizer separately (a device
    /// sync after each, so the total is slower than the plain step).
    #[arg(long)]
    breakdown: bool,
    /// `on`: steps through the pipeline's trainer with CUDA graphs (the first step runs, the
    /// second is captured, the rest replayed: at least two warm-up steps are run); `off`, the
    /// default: the plain loop below (forward, backward, AdamW).
    #[arg(long, default_value = "off", value_parser = ["on", "off"])]
    graphs: String,
    /// Time a stage's step through the pipeline's trainer (`--graphs` picks graphed or plain):
    /// `finetune`, the fine-tune stage's, or `estimate`, the estimation stage's on the same
    /// shape: head and FFN masks on every layer with their L1 term (1e-4, the stage's default),
    /// the importance captures (norm ratios inside the projection nodes, the rank Taylor
    /// scores); both read back every 50 steps as the stages do. Left out: the bench's own plain
    /// loop (forward, backward, AdamW), or the trainer's fine-tune step under `--graphs on`.
    #[arg(long, value_enum)]
    step: Option<Step>,
}

/// Which stage's training step is timed (`--step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    Finetune,
    Estimate,
}

/// FFN widths of the pruned shapes (`--ffn-widths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FfnWidths {
    /// A third off every layer.
    Uniform,
    /// 1, 4, 7 or 10 fewer than uniform, by layer: never a multiple of 8.
    Irregular,
    /// Uniform rounded up to a multiple of 8.
    Multiple8,
}

impl FfnWidths {
    /// The name `--ffn-widths` takes, as the records say it.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("every width rule has a name")
            .get_name()
            .to_owned()
    }
}

/// Heads and FFN neurons kept when a third is removed (the Light-PEFT shape).
fn pruned(layer: LayerShape, index: usize, widths: FfnWidths) -> LayerShape {
    let ffn = layer.ffn - layer.ffn / 3;
    LayerShape {
        heads: layer.heads - layer.heads / 3,
        ffn: match widths {
            FfnWidths::Uniform => ffn,
            // 2047, 2044, 2041, 2038 from 2048, none a multiple of 8.
            FfnWidths::Irregular => ffn - 1 - 3 * (index % 4),
            FfnWidths::Multiple8 => ffn.next_multiple_of(8),
        },
    }
}

/// A quarter of the modules, spread over layers and sites (every fourth in (layer, site)
/// order), at half rank; the scale stays alpha / original rank.
fn light_lora(n_layers: usize) -> Vec<PeftModuleSpec> {
    lora_everywhere(n_layers, 8, 0.05)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 0)
        .map(|(_, m)| PeftModuleSpec { rank: 4, ..m })
        .collect()
}

/// One row of the shape table: layers, hidden size, heads, FFN width, vocabulary, family.
pub fn shape(name: &str) -> Result<(usize, usize, usize, usize, usize, Family)> {
    Ok(match name {
        "minilm" => (6, 384, 12, 1536, 30522, Family::Bert),
        "roberta-base" => (12, 768, 12, 3072, 50265, Family::Roberta),
        "mpnet-base" => (12, 768, 12, 3072, 30527, Family::Mpnet),
        "roberta-large" => (24, 1024, 16, 4096, 50265, Family::Roberta),
        // roberta-large's layer count and structure (the same number of kernels and graph
        // nodes per step) with almost no arithmetic: its step time is the host's overhead.
        "large-skeleton" => (24, 128, 16, 512, 1000, Family::Roberta),
        // facebook/opt-1.3b and opt-6.7b (vocabulary padded to 50272 as their embeddings are).
        "opt-1.3b" => (24, 2048, 32, 8192, 50272, Family::Opt),
        "opt-6.7b" => (32, 4096, 32, 16384, 50272, Family::Opt),
        "opt-tiny" => (2, 64, 4, 256, 512, Family::Opt),
        other => bail!(
            "unknown shape {other:?} (expected minilm, roberta-base, mpnet-base, roberta-large, large-skeleton, opt-1.3b, opt-6.7b, opt-tiny)"
        ),
    })
}

/// The encoder spec of a shape. OPT: pre-LayerNorm layers and a final LayerNorm, ReLU, causal
/// attention, learned positions offset by 2 (2048 of them), no token types, padding id 1,
/// dropout 0.1 and no attention dropout, as facebook/opt-*'s configs.
pub fn encoder(name: &str) -> Result<EncoderSpec> {
    let (layers, hidden, heads, ffn, vocab, family) = shape(name)?;
    let opt = family == Family::Opt;
    Ok(EncoderSpec {
        family,
        vocab_size: vocab,
        hidden_size: hidden,
        head_dim: hidden / heads,
        layers: vec![LayerShape { heads, ffn }; layers],
        max_position_embeddings: if opt {
            2048 + lpeft_model::opt::POSITION_OFFSET
        } else {
            514
        },
        type_vocab_size: match family {
            Family::Bert => 2,
            Family::Roberta => 1,
            Family::Mpnet | Family::Opt => 0,
        },
        pad_token_id: if family == Family::Bert { 0 } else { 1 },
        layer_norm_eps: if opt { 1e-5 } else { 1e-12 },
        hidden_act: if opt {
            Activation::Relu
        } else {
            Activation::Gelu
        },
        hidden_dropout: 0.1,
        attention_dropout: if opt { 0.0 } else { 0.1 },
        relative_attention: (family == Family::Mpnet).then_some(RelativeAttention {
            num_buckets: 32,
            max_distance: 128,
        }),
        pre_norm: opt,
    })
}

/// The model of a shape, PEFT setting and FFN widths (`--peft`, `--ffn-widths`): 2 labels in
/// the family's head style.
pub fn model_spec(name: &str, peft: &str, widths: FfnWidths) -> Result<ModelSpec> {
    let mut enc = encoder(name)?;
    let n_layers = enc.layers.len();
    if peft == "light-lora" || peft == "light-r2" {
        enc.layers = (enc.layers.into_iter().enumerate())
            .map(|(i, l)| pruned(l, i, widths))
            .collect();
    }
    let peft = match peft {
        "none" => vec![],
        "light-lora" => light_lora(n_layers),
        // The pipeline's operating point (docs/fidelity.md `r2`): every module, rank 2 of 8.
        "light-r2" => lora_everywhere(n_layers, 8, 0.05)
            .into_iter()
            .map(|m| PeftModuleSpec { rank: 2, ..m })
            .collect(),
        "lora-all" => lora_everywhere(n_layers, 8, 0.05),
        "lora-qv" => lora_everywhere(n_layers, 8, 0.05)
            .into_iter()
            .filter(|m| {
                matches!(
                    m.id.site,
                    PeftSite::Lora(LoraTarget::Query | LoraTarget::Value)
                )
            })
            .collect(),
        other => bail!("unknown peft {other:?}"),
    };
    let style = match enc.family {
        Family::Bert => HeadStyle::BertPooler,
        Family::Roberta | Family::Mpnet => HeadStyle::RobertaDenseTanh,
        Family::Opt => HeadStyle::LastToken,
    };
    Ok(ModelSpec {
        encoder: enc,
        head: TaskHeadSpec::Classification {
            num_labels: 2,
            style,
        },
        peft,
        masks: false,
    })
}

/// Random weights for speed measurements: each tensor's values are uniform with the width of
/// its initialiser (a normal's standard deviation, Kaiming's bound; zeros and ones as they
/// are), drawn from a stream per tensor name and 64 Ki-value chunk, the chunks on every core.
/// The same seed gives the same values whatever the thread count.
#[derive(Debug, Clone, Copy)]
pub struct BenchSource {
    pub seed: u64,
}

impl WeightSource for BenchSource {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        _role: Role,
    ) -> Result<Vec<f32>, lpeft_model::error::ModelError> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let n: usize = shape.iter().product();
        let bound = match init {
            Init::Zeros => return Ok(vec![0.0; n]),
            Init::Ones => return Ok(vec![1.0; n]),
            // Uniform on ±√3·σ has the normal's standard deviation.
            Init::Normal { std } => std * 3f64.sqrt(),
            Init::KaimingUniform { fan_in } => 1.0 / (fan_in.max(1) as f64).sqrt(),
        } as f32;
        let base = SeededRng::derive(self.seed, name).next_u64();
        let mut values = vec![0f32; n];
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = SeededRng::new(base ^ (c as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
                for v in chunk {
                    // 24 random bits: uniform on [-1, 1).
                    let u = (rng.next_u64() >> 40) as f32 * (2.0 / (1u32 << 24) as f32) - 1.0;
                    *v = bound * u;
                }
            });
        Ok(values)
    }
}

/// Runs the benchmark given a command line (`argv[0]` first); `after_step(i)` is called after
/// step `i` (warm-up steps included) has finished on the device. Prints each record as a JSON
/// line as soon as it is measured and returns them all.
pub fn run<I, T>(argv: I, after_step: &mut dyn FnMut(usize)) -> Result<Vec<serde_json::Value>>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // clap's own exit on --help or a bad flag, as a binary would.
    let args = Args::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    let mut records = Vec::new();
    let align = match args.ffn_align.as_str() {
        "auto" => None,
        n => Some(n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            anyhow::anyhow!("--ffn-align {n:?}: expected auto or a positive number")
        })?),
    };
    let stage_precision = match args.precision.as_str() {
        "tf32" => Precision::Tf32,
        "bf16-mixed" => Precision::Bf16Mixed,
        _ => Precision::Fp32,
    };
    let policy = lpeft_model::fused::FusedPolicy {
        enabled: args.fused == "on",
        align,
        rank_align: args.rank_align,
        compute: stage_precision.compute(),
        hand_off: args.hand_off == "on",
        masks_in_islands: args.masks_in_islands == "on",
        norm_kernel: args.norm_kernel == "on",
        // Precision::apply sets it (under tf32), as in the stages.
        norm_kernel_in_f32: false,
    };
    let estimate = args.step == Some(Step::Estimate);
    let mut spec = model_spec(&args.shape, &args.peft, args.ffn_widths)?;
    spec.masks = estimate;
    let causal_lm = args.task == "causal-lm";
    if causal_lm && spec.encoder.family != Family::Opt {
        bail!(
            "--task causal-lm needs an OPT shape (opt-1.3b, opt-6.7b, opt-tiny), not {}",
            args.shape
        );
    }
    if causal_lm && (args.graphs == "on" || args.step.is_some()) {
        bail!(
            "--graphs on and --step step through the pipeline's trainer, which has no \
             causal-LM loss"
        );
    }
    let offset = match spec.encoder.family {
        Family::Bert => 0,
        _ => 2,
    };
    if args.seq + offset > spec.encoder.max_position_embeddings {
        bail!(
            "--seq {} is more than the {} shape's {} positions",
            args.seq,
            args.shape,
            spec.encoder.max_position_embeddings - offset
        );
    }
    let mut device = lpeft_model::device::device(&args.backend)?;
    if args.precision == "bf16-pure" {
        // Before any tensor exists: the first tensor fixes the device's defaults.
        device
            .configure(FloatDType::BF16)
            .map_err(|e| anyhow::anyhow!("{} cannot default to bf16: {e:?}", args.backend))?;
    }
    // Held for the whole run: TF32 is a process-wide libtorch switch.
    let _precision = stage_precision.enter(&device)?;
    device.seed(0);
    let fused = policy.on(&device).is_some();
    let ad = device.clone().autodiff();
    let mut model = Model::build(&spec, &mut BenchSource { seed: 0 }, &ad)?;
    model.encoder.fused = policy;
    // As the stages do: the compute type (the policy's already) and, under bf16-mixed, the
    // frozen projections stored in bf16 once.
    stage_precision.apply(&mut model);
    // Full-length rows: the peer pads to max_length too.
    let full = |dev: &burn::tensor::Device| {
        let mut input = random_input(&spec.encoder, args.batch, args.seq, 1, dev);
        input.attention_mask = Tensor::<2, Int>::ones([args.batch, args.seq], dev);
        input
    };
    let input = full(&ad);
    let labels = Labels::Class(Tensor::<1, Int>::from_data(
        TensorData::new(vec![1i64; args.batch], [args.batch]),
        &ad,
    ));
    let elem_bytes = if args.precision == "bf16-pure" { 2 } else { 4 };
    if args.graphs == "on" || args.step.is_some() {
        let (times, trained) = trainer_steps(&args, model, &ad, &device, after_step)?;
        let params = serde_json::json!({
            "total": trained.0, "breakdown": null, "graphs": trained.1,
            "weights_mib": (trained.0 * elem_bytes) as f64 / (1 << 20) as f64,
        });
        records.push(report(&args, "train", &times, trained.2, &params, fused));
        return Ok(records);
    }
    let mut opt = AdamW::new(AdamWConfig::reference(0.0));
    let mut times = Vec::new();
    let mut last_loss = None;
    let mut phases: [Vec<f64>; 3] = Default::default();
    let sync = || device.sync().map_err(|e| anyhow::anyhow!("{e:?}"));
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        let loss = if causal_lm {
            let hidden = model.encoder.forward(&input, None);
            causal_lm_loss(lm_logits(&model, hidden), &input)
        } else {
            task_loss(&model.forward(&input).head, &labels)
        };
        if args.breakdown {
            sync()?;
        }
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        last_loss = Some(loss.detach());
        if args.breakdown {
            sync()?;
        }
        let t2 = Instant::now();
        model = opt.step(model, grads, 1e-4).0;
        sync()?;
        after_step(i);
        if i >= args.warmup {
            times.push(t0.elapsed().as_secs_f64());
            if args.breakdown {
                phases[0].push((t1 - t0).as_secs_f64());
                phases[1].push((t2 - t1).as_secs_f64());
                phases[2].push(t2.elapsed().as_secs_f64());
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let breakdown = args.breakdown.then(|| {
        serde_json::json!({
            "forward_s": median(&phases[0]), "backward_s": median(&phases[1]),
            "optimizer_s": median(&phases[2]),
        })
    });
    let trainable: usize = opt.state_len();
    let total = model.num_params();
    // Read once, after the timed steps.
    let loss = last_loss.map(|l| l.into_scalar::<f32>() as f64);
    let params = serde_json::json!({
        "total": total, "breakdown": breakdown,
        "weights_mib": (total * elem_bytes) as f64 / (1 << 20) as f64, "last_loss": loss,
    });
    records.push(report(&args, "train", &times, trainable, &params, fused));
    if args.inference {
        let plain = model.valid();
        let input = full(&device);
        let mut times = Vec::new();
        for i in 0..args.warmup + args.iters {
            let t0 = Instant::now();
            let out = if causal_lm {
                let hidden = plain.encoder.forward(&input, None);
                lm_logits(&plain, hidden)
            } else {
                plain.forward(&input).hidden
            };
            let _ = out.sum().into_scalar::<f32>();
            device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if i >= args.warmup {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        records.push(report(&args, "inference", &times, 0, &params, fused));
    }
    Ok(records)
}

/// What [`trainer_steps`] measured: the timed steps' seconds, the parameter count, the steps
/// (captured, replayed) and the trainable tensor count (0: the trainer does not say).
type GraphedRun = (Vec<f64>, (usize, (usize, usize), usize));

/// Steps through `lpeft_train::Trainer` (CUDA graphs with `--graphs on`) on full-length random
/// rows, with the estimation stage's masks, L1 and captures under `--step estimate`.
fn trainer_steps(
    args: &Args,
    mut model: Model,
    ad: &burn::tensor::Device,
    device: &burn::tensor::Device,
    after_step: &mut dyn FnMut(usize),
) -> Result<GraphedRun> {
    use lpeft_artifacts::dataset::batch::{Batch, BatchLabels};
    use lpeft_train::{Capture, TrainConfig, Trainer};
    let (rows, seq) = (args.batch, args.seq);
    let vocab = model.spec.encoder.vocab_size as u64;
    // Token ids from a fixed LCG: values do not change the speed.
    let mut x = 12345u64;
    let ids = (0..rows * seq)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab) as i64
        })
        .collect();
    let batch = Batch {
        input_ids: ids,
        type_ids: vec![0; rows * seq],
        attention_mask: vec![1; rows * seq],
        labels: BatchLabels::Class(vec![1; rows]),
        batch_size: rows,
        rows,
        seq_len: seq,
        num_choices: None,
        row_indices: (0..rows).collect(),
        group_indices: (0..rows).collect(),
    };
    let graphs = args.graphs == "on";
    let estimate = args.step == Some(Step::Estimate);
    let warmup = if graphs {
        args.warmup.max(2)
    } else {
        args.warmup
    };
    let config = TrainConfig {
        lr: 1e-4,
        total_steps: warmup + args.iters + 1,
        warmup_steps: 0,
        weight_decay: 0.0,
        max_grad_norm: Some(1.0),
        l1: if estimate { 1e-4 } else { 0.0 },
        head_mask_lr_coef: 1.0,
        neuron_mask_lr_coef: 1.0,
    };
    // Under `--step`, the stages' read interval (their READ_EVERY, 50 in both); the
    // `--graphs on` rows without it keep the one read at the end they always had.
    let mut trainer = Trainer::new(config, ad.clone())
        .with_read_every(if args.step.is_some() { 50 } else { usize::MAX })
        .with_cuda_graphs(graphs)?;
    let capture = if estimate {
        Capture::IMPORTANCE
    } else {
        Capture::NONE
    };
    let mut times = Vec::new();
    for i in 0..warmup + args.iters {
        let t0 = Instant::now();
        model = trainer.step(model, &batch, capture)?.0;
        device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        after_step(i);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    trainer.finish()?;
    // The trainer does not expose its optimizer's tensor count; the row says 0.
    Ok((times, (model.num_params(), trainer.graph_counts(), 0)))
}

fn report(
    args: &Args,
    phase: &str,
    times: &[f64],
    trainable_tensors: usize,
    params: &serde_json::Value,
    fused: bool,
) -> serde_json::Value {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "impl": "lightpeft", "backend": args.backend, "shape": args.shape, "peft": args.peft,
        "task": args.task,
        "phase": phase, "batch": args.batch, "seq": args.seq, "median_s": median, "times_s": times,
        "examples_per_s": args.batch as f64 / median, "trainable_tensors": trainable_tensors,
        "precision": args.precision, "params": params,
        "fused": fused, "ffn_align": args.ffn_align, "rank_align": args.rank_align,
        "hand_off": args.hand_off, "masks_in_islands": args.masks_in_islands,
        "norm_kernel": args.norm_kernel, "scale_kernel": scale_kernel(),
        "ffn_widths": args.ffn_widths.name(),
        "step": args.step.and_then(|s| clap::ValueEnum::to_possible_value(&s))
            .map(|v| v.get_name().to_owned()),
    });
    println!("{line}");
    line
}

/// Whether the estimation masks' bf16 scaling ran in its CUDA kernels in this process.
fn scale_kernel() -> serde_json::Value {
    let (runs, unavailable) = lpeft_model::fused::scale_kernel_report();
    let norm_forwards = lpeft_model::fused::norm_kernel_runs();
    serde_json::json!({ "runs": runs, "unavailable": unavailable, "norm_forwards": norm_forwards })
}

/// C entry point for in-process profilers: runs the benchmark with the whitespace-separated
/// arguments in `LPEFT_BENCH_ARGS` (an environment variable, so that no raw pointer has to be
/// read) and calls `after_step(i)` after every step; 0 on success, 1 on error (printed).
// `no_mangle` is an unsafe attribute (symbol clashes); the name is prefixed to be unique.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn lpeft_bench_run(after_step: Option<extern "C" fn(i32)>) -> i32 {
    let line = std::env::var("LPEFT_BENCH_ARGS").unwrap_or_default();
    let argv = std::iter::once("lpeft-bench").chain(line.split_whitespace());
    let mut hook = |i: usize| {
        if let Some(f) = after_step {
            f(i32::try_from(i).unwrap_or(i32::MAX));
        }
    };
    match run(argv, &mut hook) {
        Ok(_) => 0,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("lpeft-bench: {e:#}");
            }
            1
        }
    }
}
