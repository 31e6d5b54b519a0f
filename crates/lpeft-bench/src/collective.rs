//! `lpeft-allreduce`: what one all-reduce of a gradient set costs across N peers, one thread per
//! device, for deciding whether data-parallel training inside one fine-tune can pay
//! (docs/cluster.md, "Data-parallel training inside one fine-tune").
//!
//! Every peer holds the same set of tensors on its device (peer `i`'s filled with `i + 1`, so
//! the sum is known) and all peers sum them, each ending with the result on its own device.
//! Three ways, one JSON line each per gradient set:
//!
//! - `burn`: burn 0.22.1's collective API (`burn::tensor::distributed`: a
//!   `DistributedContext` over the devices, then `all_reduce` per tensor). burn's dispatch
//!   routes it only to its CubeCL backend (NCCL, on CUDA devices) and to `remote`; on libtorch
//!   and flex it panics, and the line says `"status": "unsupported"` with the panic's message.
//! - `to-device`: a centralized all-reduce as burn's tensors can do it: every other peer moves
//!   its tensors to peer 0's device (`to_device`), peer 0 sums them, every other peer moves the
//!   sum back. libtorch copies device to device directly; on one device `to_device` is a
//!   no-op, so only the sums are timed: what a centralized all-reduce costs at best.
//! - `host`: the same through host memory (`into_data`, `from_data`): the round trip of a
//!   centralized all-reduce that cannot copy between devices (peer 0's sum goes to the host
//!   once, and from there to every other peer).
//!
//! Times are from a barrier before the first move to a barrier after every peer has synced its
//! result on its device. `algbw_gb_s` is one peer's bytes over that time, `busbw_gb_s` that
//! times 2(N−1)/N (NCCL's convention: what each link carries in a ring all-reduce).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use burn::tensor::{Device, Tensor, TensorData};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "lpeft-allreduce")]
pub struct Args {
    /// One peer per device, comma-separated (`tch-cpu,tch-cpu`, `tch-cuda:0,tch-cuda:1`,
    /// `flex,flex`); a device may repeat.
    #[arg(long, default_value = "flex,flex")]
    pub devices: String,
    /// Gradient sets, comma-separated: `lora-all` (roberta-base's LoRA(all) fine-tune: the
    /// 144 LoRA factors at rank 8 and the classification head), `opt-1.3b` (every parameter of
    /// OPT-1.3b: a full fine-tune's gradient), `opt-1.3b-lora-all` (LoRA(all) at rank 8 on
    /// OPT-1.3b and its classification head), or `full:N` (N floats, `K`/`M`/`G` decimal
    /// suffixes, in OPT-1.3b's decoder-layer tensors, the last one cut to fit).
    #[arg(long, default_value = "lora-all,full:50M")]
    pub sets: String,
    /// Comma-separated: `burn`, `to-device`, `host`.
    #[arg(long, default_value = "burn,to-device,host")]
    pub modes: String,
    /// Timed all-reduces per set and mode (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Stop timing a set and mode after this many seconds (at least one timed all-reduce).
    #[arg(long, default_value_t = 60.0)]
    pub budget_s: f64,
}

/// How the peers reduce (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Burn,
    ToDevice,
    Host,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "burn" => Mode::Burn,
            "to-device" => Mode::ToDevice,
            "host" => Mode::Host,
            other => bail!("unknown mode {other:?} (expected burn, to-device, host)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Burn => "burn",
            Mode::ToDevice => "to-device",
            Mode::Host => "host",
        }
    }
}

/// A gradient set: its name as given and the element count of each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradientSet {
    pub name: String,
    pub sizes: Vec<usize>,
}

impl GradientSet {
    pub fn parse(spec: &str) -> Result<Self> {
        let sizes = match spec {
            // roberta-base: 12 layers, hidden 768, FFN 3072; LoRA r=8 on the six matrices.
            "lora-all" => [
                lora_all_sizes(12, 768, 3072, 8),
                roberta_head_sizes(768, 2).into(),
            ]
            .concat(),
            "opt-1.3b" => opt_sizes(&OPT_1_3B),
            // The same LoRA on OPT-1.3b, and OPTForSequenceClassification's `score` (no bias).
            "opt-1.3b-lora-all" => {
                let s = OPT_1_3B;
                let mut sizes = lora_all_sizes(s.layers, s.hidden, s.ffn, 8);
                sizes.push(s.hidden * 2);
                sizes
            }
            _ => match spec.strip_prefix("full:") {
                Some(n) => layer_cut(&OPT_1_3B, parse_count(n)?),
                None => {
                    bail!("unknown gradient set {spec:?} (expected lora-all, opt-1.3b, full:N)")
                }
            },
        };
        Ok(Self {
            name: spec.to_owned(),
            sizes,
        })
    }

    pub fn floats(&self) -> usize {
        self.sizes.iter().sum()
    }
}

/// `50M`, `1.3G`, `4096`, `12K`: a decimal count with an optional K/M/G (10³, 10⁶, 10⁹)
/// suffix; it must come out a positive whole number.
pub fn parse_count(s: &str) -> Result<usize> {
    let (digits, scale) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1e3),
        Some((i, 'M' | 'm')) => (&s[..i], 1e6),
        Some((i, 'G' | 'g')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let value = digits
        .parse::<f64>()
        .ok()
        .map(|v| v * scale)
        .filter(|v| v.is_finite() && *v >= 1.0 && v.fract() == 0.0);
    match value {
        Some(v) => Ok(v as usize),
        None => bail!("{s:?}: expected a positive whole count such as 4096, 50M or 1.3G"),
    }
}

/// The LoRA factors of LoRA(all), as element counts: per layer A `[in, r]` and B `[r, out]`
/// for query, key, value, attention output (hidden → hidden), FFN in (hidden → ffn) and FFN
/// out (ffn → hidden). Their order is not the model's, which does not matter here.
pub fn lora_all_sizes(layers: usize, hidden: usize, ffn: usize, rank: usize) -> Vec<usize> {
    let per_layer = [
        (hidden, hidden),
        (hidden, hidden),
        (hidden, hidden),
        (hidden, hidden),
        (hidden, ffn),
        (ffn, hidden),
    ];
    (0..layers)
        .flat_map(|_| per_layer)
        .flat_map(|(i, o)| [i * rank, rank * o])
        .collect()
}

/// RoBERTa's classification head (`RobertaDenseTanh`): dense weight and bias, output weight
/// and bias.
pub fn roberta_head_sizes(hidden: usize, labels: usize) -> [usize; 4] {
    [hidden * hidden, hidden, hidden * labels, labels]
}

/// The shape of an OPT decoder as transformers' `OPTForCausalLM` holds it (the LM head is tied
/// to the token embedding, so not counted twice).
#[derive(Debug, Clone, Copy)]
pub struct OptShape {
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Rows of the learned position table (max positions + 2).
    pub positions: usize,
}

/// facebook/opt-1.3b's `config.json`.
pub const OPT_1_3B: OptShape = OptShape {
    layers: 24,
    hidden: 2048,
    ffn: 8192,
    vocab: 50272,
    positions: 2050,
};

/// One decoder layer's parameters: q, k, v, out_proj (weight, bias), the attention LayerNorm,
/// fc1, fc2 (weight, bias) and the final LayerNorm of the layer.
fn opt_layer_sizes(s: &OptShape) -> [usize; 16] {
    let h = s.hidden;
    [
        h * h,
        h,
        h * h,
        h,
        h * h,
        h,
        h * h,
        h,
        h,
        h,
        s.ffn * h,
        s.ffn,
        h * s.ffn,
        h,
        h,
        h,
    ]
}

/// Every parameter of the model: embeddings, the layers, the decoder's final LayerNorm.
pub fn opt_sizes(s: &OptShape) -> Vec<usize> {
    let mut sizes = vec![s.vocab * s.hidden, s.positions * s.hidden];
    for _ in 0..s.layers {
        sizes.extend(opt_layer_sizes(s));
    }
    sizes.extend([s.hidden, s.hidden]);
    sizes
}

/// `floats` elements as the decoder layers' tensors, layer after layer, the last tensor cut.
pub fn layer_cut(s: &OptShape, floats: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = floats;
    for n in opt_layer_sizes(s).into_iter().cycle() {
        if left == 0 {
            break;
        }
        sizes.push(n.min(left));
        left -= n.min(left);
    }
    sizes
}

/// One line of results.
fn record(
    mode: Mode,
    set: &GradientSet,
    devices: &[String],
    times: &[f64],
    verified: bool,
) -> serde_json::Value {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let bytes = set.floats() * 4;
    let n = devices.len() as f64;
    let algbw = bytes as f64 / median / 1e9;
    serde_json::json!({
        "bench": "allreduce", "mode": mode.name(), "status": "ok", "set": set.name,
        "devices": devices, "peers": devices.len(), "tensors": set.sizes.len(),
        "floats": set.floats(), "bytes": bytes, "dtype": "f32",
        "same_device": devices.iter().all(|d| *d == devices[0]),
        "median_ms": median * 1e3, "times_ms": times.iter().map(|t| t * 1e3).collect::<Vec<_>>(),
        "algbw_gb_s": algbw, "busbw_gb_s": algbw * 2.0 * (n - 1.0) / n, "verified": verified,
    })
}

fn unsupported(
    mode: Mode,
    set: &GradientSet,
    devices: &[String],
    error: &str,
) -> serde_json::Value {
    serde_json::json!({
        "bench": "allreduce", "mode": mode.name(), "status": "unsupported", "set": set.name,
        "devices": devices, "peers": devices.len(), "tensors": set.sizes.len(),
        "floats": set.floats(), "bytes": set.floats() * 4, "error": error,
    })
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, turning a panic into its message, with the default hook's report silenced.
fn quietly<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
    std::panic::set_hook(hook);
    out
}

fn sync(device: &Device) {
    // A failed sync leaves the other peers at a barrier: fail loudly (the GPU script has a
    // timeout around the whole run).
    device.sync().expect("device sync");
}

/// What the peers share during one round.
struct Round {
    barrier: Barrier,
    /// Peer i's tensors on peer 0's device.
    gathered: Mutex<Vec<Option<Vec<Tensor<1>>>>>,
    /// The sum on peer 0's device, and (`host`) its host copy with the number of peers that
    /// have not read it yet (the last one takes it instead of copying it).
    sum: Mutex<Option<Vec<Tensor<1>>>>,
    sum_host: Mutex<Option<(Vec<TensorData>, usize)>>,
}

/// Peer `i`'s part of one all-reduce; returns its copy of the result. Peer 0's tensors never
/// move, and it keeps the sum it made: the least a centralized all-reduce has to do.
fn all_reduce_once(
    mode: Mode,
    i: usize,
    mine: &[Tensor<1>],
    devices: &[Device],
    round: &Round,
) -> Vec<Tensor<1>> {
    let (own, root) = (&devices[i], &devices[0]);
    let moved: Vec<Tensor<1>> = match mode {
        _ if i == 0 => mine.to_vec(),
        Mode::ToDevice => mine.iter().map(|t| t.clone().to_device(root)).collect(),
        Mode::Host => mine
            .iter()
            .map(|t| Tensor::from_data(t.clone().into_data(), root))
            .collect(),
        Mode::Burn => unreachable!("burn's all-reduce is not run through a round"),
    };
    sync(root);
    round.gathered.lock().expect("lock")[i] = Some(moved);
    round.barrier.wait();
    if i == 0 {
        let parts: Vec<Vec<Tensor<1>>> = (round.gathered.lock().expect("lock").iter_mut())
            .map(|p| p.take().expect("every peer gathered"))
            .collect();
        let mut sum = parts[0].clone();
        for part in &parts[1..] {
            sum = sum
                .into_iter()
                .zip(part)
                .map(|(a, b)| a + b.clone())
                .collect();
        }
        sync(root);
        if mode == Mode::Host {
            let host = sum.iter().cloned().map(Tensor::into_data).collect();
            *round.sum_host.lock().expect("lock") = Some((host, devices.len() - 1));
        }
        *round.sum.lock().expect("lock") = Some(sum);
    }
    round.barrier.wait();
    let sum = || {
        round
            .sum
            .lock()
            .expect("lock")
            .clone()
            .expect("sum published")
    };
    let back: Vec<Tensor<1>> = match mode {
        _ if i == 0 => sum(),
        Mode::Host => {
            let mut slot = round.sum_host.lock().expect("lock");
            let (host, readers) = slot.as_mut().expect("sum published");
            *readers -= 1;
            let data = if *readers == 0 {
                slot.take().expect("sum published").0
            } else {
                host.clone()
            };
            drop(slot);
            data.into_iter()
                .map(|d| Tensor::from_data(d, own))
                .collect()
        }
        _ => sum().into_iter().map(|t| t.to_device(own)).collect(),
    };
    sync(own);
    round.barrier.wait();
    if i == 0 {
        *round.sum.lock().expect("lock") = None;
    }
    back
}

/// Whether every tensor of `result` has `expected` at its first and last element.
fn check(result: &[Tensor<1>], expected: f32) -> bool {
    result.iter().all(|t| {
        let n = t.dims()[0];
        [0, n - 1].iter().all(|&j| {
            let v = t.clone().narrow(0, j, 1).into_scalar::<f32>();
            v == expected
        })
    })
}

/// Times `mode` on `set`: the seconds of each timed all-reduce, and whether every result
/// (warm-up ones included) was right on every peer. `Err` holds burn's refusal (a panic's message).
fn measure(
    mode: Mode,
    set: &GradientSet,
    devices: &[Device],
    args: &Args,
) -> std::result::Result<(Vec<f64>, bool), String> {
    let n = devices.len();
    let expected = (n * (n + 1) / 2) as f32;
    let _context = match mode {
        Mode::Burn => Some(quietly(|| {
            DistributedContext::init(
                devices.to_vec(),
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Sum,
                },
            )
        })?),
        _ => None,
    };
    let round = Round {
        barrier: Barrier::new(n),
        gathered: Mutex::new(vec![None; n]),
        sum: Mutex::new(None),
        sum_host: Mutex::new(None),
    };
    let times = Mutex::new(Vec::new());
    let verified = Mutex::new(true);
    let go_on = Mutex::new(None);
    std::thread::scope(|scope| {
        for (i, device) in devices.iter().enumerate() {
            let (round, times, verified, go_on) = (&round, &times, &verified, &go_on);
            scope.spawn(move || {
                let mine: Vec<Tensor<1>> = (set.sizes.iter())
                    .map(|&s| Tensor::full([s], (i + 1) as f32, device))
                    .collect();
                sync(device);
                let start = Instant::now();
                let mut k = 0;
                loop {
                    // Peer 0 decides for everyone, between two barriers, whether to go on; the
                    // second is also the start line.
                    round.barrier.wait();
                    if i == 0 {
                        let go = k < args.warmup + args.iters
                            && (k <= args.warmup || start.elapsed().as_secs_f64() < args.budget_s);
                        *go_on.lock().expect("lock") = Some(go);
                    }
                    round.barrier.wait();
                    if !go_on.lock().expect("lock").expect("decided") {
                        break;
                    }
                    let t0 = Instant::now();
                    let result = match mode {
                        Mode::Burn => {
                            let all: Vec<Tensor<1>> = (mine.iter())
                                .map(|t| {
                                    burn::tensor::distributed::all_reduce(
                                        t.clone(),
                                        ReduceOperation::Sum,
                                        devices.to_vec(),
                                    )
                                    .resolve()
                                })
                                .collect();
                            sync(device);
                            round.barrier.wait();
                            all
                        }
                        _ => all_reduce_once(mode, i, &mine, devices, round),
                    };
                    if i == 0 && k >= args.warmup {
                        times.lock().expect("lock").push(t0.elapsed().as_secs_f64());
                    }
                    // Every round's result, checked outside the timing.
                    let ok = check(&result, expected);
                    *verified.lock().expect("lock") &= ok;
                    k += 1;
                }
            });
        }
    });
    let times = times.into_inner().expect("lock");
    if times.is_empty() {
        return Err("no all-reduce was timed".to_owned());
    }
    Ok((times, verified.into_inner().expect("lock")))
}

/// Runs the benchmark given a command line (`argv[0]` first), printing one JSON line per set
/// and mode.
pub fn run<I, T>(argv: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    let names: Vec<String> = args.devices.split(',').map(str::to_owned).collect();
    if names.len() < 2 {
        bail!(
            "--devices {:?}: an all-reduce needs two peers or more",
            args.devices
        );
    }
    let devices = (names.iter())
        .map(|d| lpeft_model::device::device(d).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let sets = (args.sets.split(','))
        .map(GradientSet::parse)
        .collect::<Result<Vec<_>>>()?;
    let modes = (args.modes.split(','))
        .map(Mode::parse)
        .collect::<Result<Vec<_>>>()?;
    if args.iters == 0 {
        bail!("--iters 0: nothing would be timed");
    }
    for set in &sets {
        for &mode in &modes {
            let line = match measure(mode, set, &devices, &args) {
                Ok((times, verified)) => record(mode, set, &names, &times, verified),
                Err(e) => unsupported(mode, set, &names, &e),
            };
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_decimal_suffixes() {
        assert_eq!(parse_count("4096").unwrap(), 4096);
        assert_eq!(parse_count("12K").unwrap(), 12_000);
        assert_eq!(parse_count("50M").unwrap(), 50_000_000);
        assert_eq!(parse_count("1.3G").unwrap(), 1_300_000_000);
        for bad in ["", "M", "0", "-5", "1.5", "2.0000001K", "x", "inf"] {
            assert!(parse_count(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lora_all_is_roberta_base_adapters_and_head() {
        let set = GradientSet::parse("lora-all").unwrap();
        // 12 layers × 6 modules × (A, B), then the head's four tensors.
        assert_eq!(set.sizes.len(), 148);
        // LoRA: 12 × (4 × 2 × 768 × 8 + 2 × (768 + 3072) × 8) = 1,327,104; head 592,130.
        assert_eq!(set.floats(), 1_327_104 + 592_130);
    }

    #[test]
    fn opt_lora_all_is_its_adapters_and_score() {
        let set = GradientSet::parse("opt-1.3b-lora-all").unwrap();
        assert_eq!(set.sizes.len(), 24 * 12 + 1);
        // 24 × (4 × 2 × 2048 × 8 + 2 × (2048 + 8192) × 8) + 2048 × 2.
        assert_eq!(set.floats(), 7_077_888 + 4096);
    }

    #[test]
    fn opt_1_3b_has_its_published_parameter_count() {
        let set = GradientSet::parse("opt-1.3b").unwrap();
        assert_eq!(set.floats(), 1_315_758_080);
        assert_eq!(set.sizes.len(), 2 + 24 * 16 + 2);
    }

    #[test]
    fn full_sets_are_layer_tensors_cut_to_the_count() {
        let set = GradientSet::parse("full:50M").unwrap();
        assert_eq!(set.floats(), 50_000_000);
        // One layer holds 50,358,272: all but the last few tensors fit.
        let layer = opt_layer_sizes(&OPT_1_3B);
        assert_eq!(set.sizes[..12], layer[..12]);
        assert!(set.sizes.iter().all(|&s| s > 0));
        let two = GradientSet::parse("full:100716544").unwrap();
        assert_eq!(two.sizes.len(), 32);
        assert_eq!(two.sizes[16..], layer);
        assert!(GradientSet::parse("full:").is_err());
        assert!(GradientSet::parse("lora").is_err());
    }

    #[test]
    fn args_and_modes_parse() {
        let args = Args::try_parse_from([
            "lpeft-allreduce",
            "--devices",
            "tch-cpu,tch-cpu",
            "--sets",
            "lora-all,full:50M",
            "--modes",
            "to-device,host",
            "--iters",
            "3",
        ])
        .unwrap();
        assert_eq!(args.devices, "tch-cpu,tch-cpu");
        assert_eq!(args.iters, 3);
        let modes: Vec<Mode> = args
            .modes
            .split(',')
            .map(|m| Mode::parse(m).unwrap())
            .collect();
        assert_eq!(modes, [Mode::ToDevice, Mode::Host]);
        assert!(Mode::parse("ring").is_err());
    }

    /// The LoRA(all) sets are what the fine-tune stage trains: the model's trainable tensors on
    /// small RoBERTa and OPT shapes.
    #[test]
    fn lora_all_matches_the_models_trainable_tensors() {
        use lpeft_model::model::Model;
        use lpeft_model::source::RandomSource;
        use lpeft_model::testing::{lora_everywhere, tiny_spec};
        use lpeft_schema::model::{Family, HeadStyle, TaskHeadSpec};
        let (hidden, ffn, rank, labels) = (16, 24, 2, 3);
        let lora = lora_all_sizes(2, hidden, ffn, rank);
        let roberta = [lora.clone(), roberta_head_sizes(hidden, labels).into()].concat();
        let opt = [lora, vec![hidden * labels]].concat();
        for (family, style, expected) in [
            (Family::Roberta, HeadStyle::RobertaDenseTanh, roberta),
            (Family::Opt, HeadStyle::LastToken, opt),
        ] {
            let head = TaskHeadSpec::Classification {
                num_labels: labels,
                style,
            };
            let layers = [(4, ffn), (4, ffn)];
            let spec = tiny_spec(family, &layers, head, lora_everywhere(2, rank, 0.0), false);
            let autodiff = Device::flex().autodiff();
            let model = Model::build(&spec, &mut RandomSource { seed: 0 }, &autodiff).unwrap();
            let mut ours: Vec<usize> = lpeft_model::checkpoint::trainable_tensors(&model)
                .values()
                .map(|(shape, _)| shape.iter().product())
                .collect();
            let mut expected = expected;
            ours.sort_unstable();
            expected.sort_unstable();
            assert_eq!(ours, expected, "{family:?}");
        }
    }

    /// Peers on flex: the baselines sum right, burn's API is refused by name.
    #[test]
    fn tiny_run_on_flex() {
        let args = Args::try_parse_from(["lpeft-allreduce", "--iters", "2"]).unwrap();
        let devices = vec![Device::flex(), Device::flex()];
        let set = GradientSet {
            name: "tiny".to_owned(),
            sizes: vec![3, 1, 1000],
        };
        // Three peers too: the host copy is then read by two.
        let three = vec![Device::flex(); 3];
        for (mode, devices) in [Mode::ToDevice, Mode::Host]
            .iter()
            .flat_map(|m| [(m, &devices), (m, &three)])
        {
            let (times, verified) = measure(*mode, &set, devices, &args).unwrap();
            assert_eq!(times.len(), 2);
            assert!(verified, "{mode:?} on {} peers", devices.len());
        }
        let refused = measure(Mode::Burn, &set, &devices, &args).unwrap_err();
        assert!(refused.contains("not supported"), "{refused}");
        let line = record(
            Mode::Host,
            &set,
            &["flex".into(), "flex".into()],
            &[0.5, 0.25],
            true,
        );
        assert_eq!(line["bytes"], 4016);
        assert_eq!(line["median_ms"], 500.0);
    }
}
