//! Small building blocks whose weights may be absent when a pruned dimension is zero, and the
//! builder that fills them from a [`WeightSource`].

use burn::module::{Module, Param};
use burn::tensor::module::{layer_norm, linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::ModelError;
use crate::names::{DenseModule, DenseParam, NormModule, NormParam, TensorName};
use crate::source::{Init, Role, WeightSource};

/// `y = x W + b` with `W: [d_in, d_out]` (burn layout). The weight is absent when `d_in == 0`
/// (every input unit pruned): the layer then outputs its bias alone.
#[derive(Module, Debug)]
pub struct Dense {
    pub weight: Option<Param<Tensor<2>>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub d_in: usize,
    pub d_out: usize,
}

impl Dense {
    /// `x: [B, T, d_in]`, or `None` when `d_in == 0`; returns `[B, T, d_out]`.
    pub fn forward(
        &self,
        x: Option<Tensor<3>>,
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> Tensor<3> {
        match (&self.weight, x) {
            (Some(w), Some(x)) => linear(x, w.val(), self.bias.as_ref().map(Param::val)),
            _ => match &self.bias {
                Some(b) => b
                    .val()
                    .reshape([1, 1, self.d_out])
                    .expand([batch, seq, self.d_out]),
                None => Tensor::zeros([batch, seq, self.d_out], device),
            },
        }
    }

    /// Forward for a 2-D input `[N, d_in]` (heads on pooled vectors).
    pub fn forward2(&self, x: Tensor<2>) -> Tensor<2> {
        let w = self
            .weight
            .as_ref()
            .expect("2-D dense layers are never zero-width")
            .val();
        linear(x, w, self.bias.as_ref().map(Param::val))
    }

    pub fn weight_value(&self) -> Option<Tensor<2>> {
        self.weight.as_ref().map(Param::val)
    }
}

/// LayerNorm over the last dimension with HF's epsilon.
#[derive(Module, Debug)]
pub struct Norm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub eps: f64,
}

impl Norm {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        layer_norm(x, self.gamma.val(), Some(self.beta.val()), self.eps)
    }

    /// `LayerNorm(dropout(x) + residual)` as one libtorch node; see [`crate::fused`].
    pub fn forward_fused(
        &self,
        x: Tensor<3>,
        residual: Tensor<3>,
        dropout: f64,
        f: crate::fused::Fusing,
    ) -> Tensor<3> {
        let params = (self.gamma.val(), self.beta.val());
        crate::fused::add_norm(x, residual, params, self.eps, dropout, f)
    }
}

/// Builds parameters from a weight source, recording which roles are trainable.
pub struct Builder<'a> {
    pub source: &'a mut dyn WeightSource,
    pub device: Device,
}

impl Builder<'_> {
    fn values(
        &mut self,
        name: TensorName,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, ModelError> {
        let name = name.to_string();
        let v = self.source.fetch(&name, shape, init, role)?;
        let n: usize = shape.iter().product();
        if v.len() != n {
            return Err(ModelError::BadSpec(format!(
                "source gave {} values for `{name}` of shape {shape:?}",
                v.len()
            )));
        }
        Ok(v)
    }

    pub fn param1(
        &mut self,
        name: TensorName,
        len: usize,
        init: Init,
        role: Role,
        trainable: bool,
    ) -> Result<Param<Tensor<1>>, ModelError> {
        let v = self.values(name, &[len], init, role)?;
        let t = Tensor::<1>::from_data(TensorData::new(v, [len]), &self.device);
        Ok(Param::from_tensor(t).set_require_grad(trainable))
    }

    pub fn param2(
        &mut self,
        name: TensorName,
        shape: [usize; 2],
        init: Init,
        role: Role,
        trainable: bool,
    ) -> Result<Param<Tensor<2>>, ModelError> {
        let v = self.values(name, &shape, init, role)?;
        let t = Tensor::<2>::from_data(TensorData::new(v, shape), &self.device);
        Ok(Param::from_tensor(t).set_require_grad(trainable))
    }

    /// A one-scalar-per-unit mask initialised to 1, or `None` when `enabled` is off or there are
    /// no units.
    pub fn mask(
        &mut self,
        name: TensorName,
        len: usize,
        enabled: bool,
    ) -> Result<Option<Param<Tensor<1>>>, ModelError> {
        if !enabled || len == 0 {
            return Ok(None);
        }
        self.param1(name, len, Init::Ones, Role::Peft, true)
            .map(Some)
    }

    /// A dense layer (its `weight` and `bias`); `d_out` must be > 0.
    pub fn dense(
        &mut self,
        module: DenseModule,
        d_in: usize,
        d_out: usize,
        std: f64,
        role: Role,
        trainable: bool,
    ) -> Result<Dense, ModelError> {
        self.dense_with(module, (d_in, d_out), std, role, trainable, true)
    }

    /// A dense layer without a bias (OPT's `score`); `d_in` must be > 0.
    pub fn dense_unbiased(
        &mut self,
        module: DenseModule,
        d_in: usize,
        d_out: usize,
        std: f64,
        role: Role,
        trainable: bool,
    ) -> Result<Dense, ModelError> {
        self.dense_with(module, (d_in, d_out), std, role, trainable, false)
    }

    fn dense_with(
        &mut self,
        module: DenseModule,
        (d_in, d_out): (usize, usize),
        std: f64,
        role: Role,
        trainable: bool,
        biased: bool,
    ) -> Result<Dense, ModelError> {
        let weight = if d_in > 0 {
            Some(self.param2(
                module.tensor(DenseParam::Weight),
                [d_in, d_out],
                Init::Normal { std },
                role,
                trainable,
            )?)
        } else {
            None
        };
        let bias = if biased {
            Some(self.param1(
                module.tensor(DenseParam::Bias),
                d_out,
                Init::Zeros,
                role,
                trainable,
            )?)
        } else {
            None
        };
        Ok(Dense {
            weight,
            bias,
            d_in,
            d_out,
        })
    }

    pub fn norm(
        &mut self,
        module: NormModule,
        d: usize,
        eps: f64,
        role: Role,
        trainable: bool,
    ) -> Result<Norm, ModelError> {
        Ok(Norm {
            gamma: self.param1(
                module.tensor(NormParam::Gamma),
                d,
                Init::Ones,
                role,
                trainable,
            )?,
            beta: self.param1(
                module.tensor(NormParam::Beta),
                d,
                Init::Zeros,
                role,
                trainable,
            )?,
            eps,
        })
    }
}
