//! libtorch kernels of the fused islands (see the parent module): the burn extension that runs
//! them as autodiff nodes (here), and one file per island with its forward, what it saves and
//! its backward.

mod add_norm;
mod attention;
mod linear;
pub(super) mod norm_kernel;
pub(super) mod ratios;
mod scale;
pub(super) mod scale_kernel;

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, LibTorch, backend_extension};
use tch::Tensor as T;

use self::add_norm::AddNormSaved;
use self::attention::{AttentionSaved, GraphSaved};
use self::linear::LinearSaved;
use self::scale::ScaledSaved;
use super::{Act, Compute, Island};

pub(super) fn run(
    inputs: Vec<burn::backend::DispatchTensor>,
    island: Island,
) -> burn::backend::DispatchTensor {
    type D = burn::backend::Dispatch;
    let n = inputs.len();
    let mut it = inputs.into_iter();
    let mut next = || it.next().expect("arity checked");
    match n {
        3 => <D as TorchIslands>::island3(next(), next(), next(), island),
        4 => <D as TorchIslands>::island4(next(), next(), next(), next(), island),
        5 => <D as TorchIslands>::island5(next(), next(), next(), next(), next(), island),
        6 => <D as TorchIslands>::island6(next(), next(), next(), next(), next(), next(), island),
        _ => unreachable!("{island:?} with {n} inputs"),
    }
}

/// One method per arity: the extension macro routes fixed tensor arguments only.
#[backend_extension(LibTorch, Autodiff)]
pub trait TorchIslands: Backend {
    fn island3(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self>;
    fn island4(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn island5(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        e: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn island6(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        e: FloatTensor<Self>,
        f: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self>;
    /// See [`super::take_recorded_ratios`]; never part of a graph.
    fn recorded_ratios(weights: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Island {
    /// Whether input `i` can carry a gradient (the padding bias never does; marking it
    /// would also steer libtorch away from its fused attention kernels).
    fn differentiable(&self, i: usize) -> bool {
        !matches!(self, Island::Attention { .. } if i == attention::SCORE_BIAS)
    }

    /// The float type the island's kernels run in, when it is not its inputs' own
    /// ([`Compute::Bf16`]: mixed precision).
    fn compute_kind(&self) -> Option<tch::Kind> {
        let compute = match *self {
            Island::Linear { compute, .. } | Island::Attention { compute, .. } => compute,
            Island::AddNorm { .. } => Compute::F32,
        };
        (compute == Compute::Bf16).then_some(tch::Kind::BFloat16)
    }

    /// Whether the last input scales the first ([`Island::Linear`]'s `in_scale`).
    fn scales_input(&self) -> bool {
        matches!(self, Island::Linear { in_scale: true, .. })
    }

    /// Whether the output stays in the compute type ([`super::Fusing::handing_off`]).
    fn hands_off(&self) -> bool {
        let asked = match *self {
            Island::Linear { hand_off, .. } | Island::Attention { hand_off, .. } => hand_off,
            Island::AddNorm { .. } => false,
        };
        asked && self.compute_kind().is_some()
    }

    /// The float type of the output, given the inputs': the compute type where handed off;
    /// else the first input's, or f32 where that input was handed over in the compute type
    /// (mixed precision keeps activations in f32 between islands). Add-norm's is its
    /// residual's (x may come in bf16 over an f32 stream).
    fn output_kind(&self, inputs: &[tch::Kind]) -> tch::Kind {
        if matches!(self, Island::AddNorm { .. }) {
            return inputs[add_norm::RESIDUAL];
        }
        let first_input = inputs[0];
        match self.compute_kind() {
            Some(c) if self.hands_off() => c,
            Some(c) if first_input == c => tch::Kind::Float,
            _ => first_input,
        }
    }

    /// The computation on libtorch tensors in the island's compute type, the result in
    /// [`Island::output_kind`]; `train` enables dropout.
    fn eval_cast(&self, x: &[T], train: bool) -> T {
        let kinds: Vec<tch::Kind> = x.iter().map(T::kind).collect();
        let out_kind = self.output_kind(&kinds);
        let scaled = self
            .scales_input()
            .then(|| scale::inputs(x, self.compute_kind()));
        let (xs, _) = cast_inputs(scaled.as_deref().unwrap_or(x), self.compute_kind());
        scale_kernel::to_kind(&self.eval(&xs, train), out_kind)
    }

    /// The computation on libtorch tensors; `train` enables dropout.
    fn eval(&self, x: &[T], train: bool) -> T {
        let p = |p: f64| if train { p } else { 0.0 };
        match *self {
            // The training forward with nothing trained saves nothing worth keeping.
            Island::Linear { .. } => {
                let mut island = *self;
                if let Island::Linear { lora_dropout, .. } = &mut island {
                    *lora_dropout = p(*lora_dropout);
                }
                linear::forward(x, &island, &[false; 5]).0
            }
            Island::Attention { heads, dropout, .. } => {
                let (b, t, hd) = x[0].size3().expect("[B, T, H·D] query");
                let h = heads as i64;
                let split = |y: &T| y.view([b, t, h, hd / h]).transpose(1, 2);
                let ctx = T::scaled_dot_product_attention(
                    &split(&x[0]),
                    &split(&x[1]),
                    &split(&x[2]),
                    Some(&x[3]),
                    p(dropout),
                    false,
                    None::<f64>,
                    false,
                );
                ctx.transpose(1, 2).reshape([b, t, hd])
            }
            Island::AddNorm { dropout, .. } => add_norm::eval(x, self, p(dropout)),
        }
    }
}

fn infer(inputs: &[&TchTensor], island: &Island) -> TchTensor {
    let xs: Vec<T> = inputs.iter().map(|t| t.tensor.shallow_clone()).collect();
    TchTensor::new(tch::no_grad(|| island.eval_cast(&xs, false)))
}

/// `x` in `kind` where given (with whether each input was converted), else shallow copies.
fn cast_inputs<'a>(
    x: impl IntoIterator<Item = &'a T>,
    kind: Option<tch::Kind>,
) -> (Vec<T>, Vec<bool>) {
    x.into_iter()
        .map(|t| match kind {
            Some(k) if t.kind() != k => (scale_kernel::to_kind(t, k), true),
            _ => (t.shallow_clone(), false),
        })
        .unzip()
}

impl TorchIslands for LibTorch {
    fn island3(a: TchTensor, b: TchTensor, c: TchTensor, island: Island) -> TchTensor {
        infer(&[&a, &b, &c], &island)
    }
    fn island4(
        a: TchTensor,
        b: TchTensor,
        c: TchTensor,
        d: TchTensor,
        island: Island,
    ) -> TchTensor {
        infer(&[&a, &b, &c, &d], &island)
    }
    fn island5(
        a: TchTensor,
        b: TchTensor,
        c: TchTensor,
        d: TchTensor,
        e: TchTensor,
        island: Island,
    ) -> TchTensor {
        infer(&[&a, &b, &c, &d, &e], &island)
    }
    fn island6(
        a: TchTensor,
        b: TchTensor,
        c: TchTensor,
        d: TchTensor,
        e: TchTensor,
        f: TchTensor,
        island: Island,
    ) -> TchTensor {
        infer(&[&a, &b, &c, &d, &e, &f], &island)
    }
    fn recorded_ratios(weights: TchTensor) -> TchTensor {
        TchTensor::new(tch::no_grad(|| ratios::take(&weights.tensor)))
    }
}

/// What an island's backward needs, saved by its forward (one type per island, in its file).
enum Saved {
    Linear(LinearSaved),
    AddNorm(AddNormSaved),
    Attention(AttentionSaved),
    Graph(GraphSaved),
    /// A projection whose input entered scaled.
    Scaled(Box<ScaledSaved>),
}

/// One island's saved tensors, taken by its backward step.
struct Recorded {
    saved: Saved,
    /// Float type of the island's own output (its compute type), which its backward wants.
    kind: tch::Kind,
    /// Float type of each input, which its gradient must have (they differ under mixed
    /// precision: the kernels ran in bf16 on f32 inputs).
    input_kinds: Vec<tch::Kind>,
    /// burn handles of the inputs and the output: while they live, burn-tch sees the storage
    /// as shared and never reuses it in place, which would corrupt what was saved.
    _pins: Vec<TchTensor>,
}

/// `Clone` because burn's backward state must be; all clones share the one recording.
#[derive(Clone)]
struct IslandState(Arc<Mutex<Option<Recorded>>>);

impl std::fmt::Debug for IslandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IslandState")
    }
}

/// `drop(x)` with its keep-mask, or `x` itself when `p == 0`.
fn dropout_with_mask(x: &T, p: f64) -> (T, Option<(T, f64)>) {
    if p > 0.0 {
        let (y, mask) = x.native_dropout(p, true);
        (y, Some((mask, 1.0 / (1.0 - p))))
    } else {
        (x.shallow_clone(), None)
    }
}

fn undo_dropout(g: T, mask: &Option<(T, f64)>) -> T {
    match mask {
        Some((m, scale)) => T::native_dropout_backward(&g, m, *scale),
        None => g,
    }
}

/// `t` with `rows` zero rows and `cols` zero columns appended (itself when both are 0).
fn pad2(t: &T, rows: i64, cols: i64) -> T {
    if rows == 0 && cols == 0 {
        t.shallow_clone()
    } else {
        t.constant_pad_nd([0, cols, 0, rows])
    }
}

/// `t` with its padding (the last `drop` entries of `dim`) cut off, contiguous.
fn unpad(t: T, dim: i64, drop: i64) -> T {
    if drop == 0 {
        t
    } else {
        let keep = t.size()[dim as usize] - drop;
        t.narrow(dim, 0, keep).contiguous()
    }
}

fn activate(y: &T, act: Act) -> T {
    match act {
        Act::Gelu => y.gelu("none"),
        Act::GeluTanh => y.gelu("tanh"),
        Act::Relu => y.relu(),
    }
}

/// Gradients of the inputs listed in `wanted` (input index), in that order; `x_kind`: the
/// float type the first input's gradient is handed back in, where a projection can compute it
/// there directly (None: its compute type).
fn backward_of(saved: Saved, g: &T, wanted: &[usize], x_kind: Option<tch::Kind>) -> Vec<Option<T>> {
    match saved {
        Saved::Linear(s) => linear::backward(s, g, wanted, x_kind),
        Saved::AddNorm(s) => add_norm::backward(s, g, wanted),
        Saved::Attention(s) => attention::backward(s, g, wanted),
        Saved::Graph(s) => attention::graph_backward(s, g, wanted),
        Saved::Scaled(s) => scale::backward(*s, g, wanted),
    }
}

/// Which inputs (and whether the output) share storage with the saved tensors.
fn shared_storage(saved: &Saved, n: usize) -> (Vec<bool>, bool) {
    match saved {
        Saved::Linear(s) => (linear::shared_storage(s, n), false),
        Saved::AddNorm(_) => (add_norm::shared_storage(n), false),
        Saved::Attention(_) | Saved::Graph(_) => (vec![true; n], true),
        Saved::Scaled(s) => scale::shared_storage(s, n),
    }
}

#[derive(Debug)]
struct IslandBackward;

impl<const N: usize> Backward<LibTorch, N> for IslandBackward {
    type State = IslandState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let Some(rec) = ops.state.0.lock().expect("island state").take() else {
            return;
        };
        let (wanted, ids): (Vec<usize>, Vec<_>) = ops
            .parents
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|node| (i, node.id)))
            .unzip();
        if wanted.is_empty() {
            return;
        }
        // Upstream gradients may arrive in another float type (a loss computed in f32 over
        // bf16 logits); the island's kernels need its own.
        let g = if grad.tensor.kind() == rec.kind {
            grad.tensor
        } else {
            grad.tensor.to_kind(rec.kind)
        };
        let gs = backward_of(rec.saved, &g, &wanted, Some(rec.input_kinds[0]));
        let gs = gs.into_iter().zip(&wanted).map(|(g, &i)| {
            let want = rec.input_kinds[i];
            g.map(|g| {
                if g.kind() == want {
                    g
                } else {
                    scale_kernel::to_kind(&g, want)
                }
            })
        });
        // Two gradients may be one tensor (∂x and ∂residual of add+norm without dropout):
        // they then share burn-tch's storage handle, so neither is reused in place.
        let mut made: Vec<TchTensor> = Vec::with_capacity(ids.len());
        for (id, g) in ids.into_iter().zip(gs) {
            let Some(g) = g else { continue };
            let ptr = g.data_ptr();
            let t = match made.iter().find(|m| m.tensor.data_ptr() == ptr) {
                Some(twin) => TchTensor::from_existing(g, twin.storage.clone()),
                None => TchTensor::new(g),
            };
            made.push(t.clone());
            grads.register::<LibTorch>(id, t);
        }
    }
}

fn record<C: CheckpointStrategy, const N: usize>(
    inputs: [FloatTensor<Autodiff<LibTorch, C>>; N],
    island: Island,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let guards = inputs.each_ref().map(|t| t.node());
    // Parameters that are trained (leaves needing a gradient): what they need is saved.
    let trained = inputs
        .each_ref()
        .map(Autodiff::<LibTorch, C>::float_is_require_grad);
    let prims: Vec<TchTensor> = inputs.into_iter().map(|t| t.into_primitive()).collect();
    match IslandBackward
        .prepare::<C>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input_kinds: Vec<tch::Kind> = prims.iter().map(|p| p.tensor.kind()).collect();
            // An input scale is applied first; the projection then sees `x·s` in x's slot. The
            // island's inputs as they came (`raw`) are kept for the scaling's backward.
            let scaled = island.scales_input().then(|| {
                let raw: Vec<T> = prims.iter().map(|p| p.tensor.shallow_clone()).collect();
                let inputs = scale::inputs(&raw, island.compute_kind());
                (raw, inputs)
            });
            let (xs, mut cast) = match &scaled {
                Some((_, inputs)) => cast_inputs(inputs, island.compute_kind()),
                None => cast_inputs(prims.iter().map(|p| &p.tensor), island.compute_kind()),
            };
            let (output, saved) = match island {
                Island::Linear { .. } => tch::no_grad(|| linear::forward(&xs, &island, &trained)),
                Island::AddNorm { .. } => tch::no_grad(|| add_norm::forward(&xs, &island)),
                Island::Attention { .. } => {
                    match tch::no_grad(|| attention::forward(&xs, &island)) {
                        Some(done) => done,
                        None => {
                            let leaves: Vec<T> = xs
                                .iter()
                                .enumerate()
                                .map(|(i, x)| {
                                    let leaf = x.detach();
                                    if island.differentiable(i) {
                                        leaf.set_requires_grad(true)
                                    } else {
                                        leaf
                                    }
                                })
                                .collect();
                            let output = tch::with_grad(|| island.eval(&leaves, true));
                            (output.detach(), Saved::Graph(GraphSaved { leaves, output }))
                        }
                    }
                }
            };
            let saved = match &scaled {
                Some((raw, _)) => {
                    // The scaling keeps x and s as they came.
                    cast[linear::X] = false;
                    cast.push(false);
                    Saved::Scaled(Box::new(scale::saved(saved, raw)))
                }
                None => saved,
            };
            let kind = output.kind();
            // A handed-off output stays in the compute type; its gradient comes back in it.
            let out_kind = island.output_kind(&input_kinds);
            let output_cast = kind != out_kind;
            let out = TchTensor::new(if output_cast {
                scale_kernel::to_kind(&output, out_kind)
            } else {
                output
            });
            // Pin only what the saved tensors share storage with: pinning more would keep
            // activations alive until the backward (memory the peer does not spend). A
            // converted input or output is a copy: the saved tensors never share the original.
            let (inputs, output_shared) = shared_storage(&saved, prims.len());
            let mut pins: Vec<TchTensor> = prims
                .into_iter()
                .zip(inputs.into_iter().zip(cast))
                .filter_map(|(p, (keep, cast))| (keep && !cast).then_some(p))
                .collect();
            if output_shared && !output_cast {
                pins.push(out.clone());
            }
            let state = IslandState(Arc::new(Mutex::new(Some(Recorded {
                saved,
                kind,
                input_kinds,
                _pins: pins,
            }))));
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            let xs: Vec<T> = prims.iter().map(|p| p.tensor.shallow_clone()).collect();
            prep.finish(TchTensor::new(tch::no_grad(|| island.eval_cast(&xs, true))))
        }
    }
}

impl<C: CheckpointStrategy> TorchIslands for Autodiff<LibTorch, C> {
    fn island3(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self> {
        record::<C, 3>([a, b, c], island)
    }
    fn island4(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self> {
        record::<C, 4>([a, b, c, d], island)
    }
    fn island5(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        e: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self> {
        record::<C, 5>([a, b, c, d, e], island)
    }
    fn island6(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        e: FloatTensor<Self>,
        f: FloatTensor<Self>,
        island: Island,
    ) -> FloatTensor<Self> {
        record::<C, 6>([a, b, c, d, e, f], island)
    }
    fn recorded_ratios(weights: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::AutodiffBackend;
        let inner = <Self as AutodiffBackend>::inner(weights);
        <Self as AutodiffBackend>::from_inner(LibTorch::recorded_ratios(inner))
    }
}
