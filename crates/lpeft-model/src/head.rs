//! Task heads on top of the encoder, laid out like Hugging Face's so their checkpoints load.

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::activation::{log_softmax, softmax, tanh};
use burn::tensor::{Int, Tensor};

use lpeft_schema::model::{HeadStyle, ModelSpec, TaskHeadSpec};

use crate::error::ModelError;
use crate::layers::{Builder, Dense};
use crate::model::INIT_STD;
use crate::names::{DenseModule, HeadDense};
use crate::peft::dropout;
use crate::source::Role;

#[derive(Module, Debug)]
pub struct TaskHead {
    /// BERT pooler (pretrained, frozen) or RoBERTa's head `dense` (new, trainable);
    /// absent for span extraction and OPT's head.
    pub pooler: Option<Dense>,
    /// Classifier / `out_proj` / `qa_outputs` / OPT's `score` (no bias).
    pub out: Dense,
    pub dropout: Dropout,
    #[module(skip)]
    pub spec: TaskHeadSpec,
}

/// What a head produces.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum HeadOutput {
    /// `[B, num_labels]` (classification), `[B, 1]` (regression) or `[B, choices]`.
    Logits(Tensor<2>),
    /// `[B, T]` each.
    Span { start: Tensor<2>, end: Tensor<2> },
}

/// Gold answers for a batch.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Labels {
    Class(Tensor<1, Int>),
    Score(Tensor<1>),
    Span {
        start: Tensor<1, Int>,
        end: Tensor<1, Int>,
    },
}

impl TaskHead {
    pub fn build(bld: &mut Builder, spec: &ModelSpec) -> Result<TaskHead, ModelError> {
        let e = &spec.encoder;
        let h = e.hidden_size;
        let (pooler_style, out_dim) = match spec.head {
            TaskHeadSpec::SpanExtraction => (None, 2),
            TaskHeadSpec::Classification { num_labels, style } => (Some(style), num_labels),
            TaskHeadSpec::Regression { style } => (Some(style), 1),
            TaskHeadSpec::MultipleChoice { .. } => (Some(HeadStyle::BertPooler), 1),
        };
        let pooler_module = DenseModule::Head(HeadDense::Pooler);
        let pooler = match pooler_style {
            // The BERT pooler is part of the pretrained model and stays frozen (HF PEFT trains
            // only `classifier`); RoBERTa's head dense is new and trained.
            Some(HeadStyle::BertPooler) => {
                Some(bld.dense(pooler_module, h, h, INIT_STD, Role::Backbone, false)?)
            }
            Some(HeadStyle::RobertaDenseTanh) => {
                Some(bld.dense(pooler_module, h, h, INIT_STD, Role::Head, true)?)
            }
            Some(HeadStyle::LastToken) | None => None,
        };
        let out_module = DenseModule::Head(HeadDense::Out);
        let out = if pooler_style == Some(HeadStyle::LastToken) {
            bld.dense_unbiased(out_module, h, out_dim, INIT_STD, Role::Head, true)?
        } else {
            bld.dense(out_module, h, out_dim, INIT_STD, Role::Head, true)?
        };
        Ok(TaskHead {
            pooler,
            out,
            dropout: dropout(e.hidden_dropout),
            spec: spec.head,
        })
    }

    /// `attention_mask` `[B, T]` (1 on real tokens) places OPT's last real token.
    pub fn forward(&self, hidden: Tensor<3>, attention_mask: &Tensor<2, Int>) -> HeadOutput {
        let [b, t, h] = hidden.dims();
        if let TaskHeadSpec::SpanExtraction = self.spec {
            let logits = self.out.forward(Some(hidden), b, t, &self.out_device());
            let start = logits.clone().slice_dim(2, 0..1).reshape([b, t]);
            let end = logits.slice_dim(2, 1..2).reshape([b, t]);
            return HeadOutput::Span { start, end };
        }
        let style = match self.spec {
            TaskHeadSpec::Classification { style, .. } | TaskHeadSpec::Regression { style } => {
                style
            }
            TaskHeadSpec::MultipleChoice { .. } => HeadStyle::BertPooler,
            TaskHeadSpec::SpanExtraction => unreachable!(),
        };
        if style == HeadStyle::LastToken {
            // As OPTForSequenceClassification: `score` on the last real token of each row.
            let last = last_real_token(attention_mask);
            let picked = hidden.gather(1, last.reshape([b, 1, 1]).expand([b, 1, h]));
            return HeadOutput::Logits(self.out.forward2(picked.reshape([b, h])));
        }
        let first = hidden.slice_dim(1, 0..1).reshape([b, h]);
        let pooler = self
            .pooler
            .as_ref()
            .expect("sequence heads have a pooler/dense layer");
        let logits = match style {
            HeadStyle::BertPooler => {
                let pooled = tanh(pooler.forward2(first));
                self.out.forward2(self.dropout.forward(pooled))
            }
            HeadStyle::RobertaDenseTanh => {
                let x = tanh(pooler.forward2(self.dropout.forward(first)));
                self.out.forward2(self.dropout.forward(x))
            }
            HeadStyle::LastToken => unreachable!("returned above"),
        };
        match self.spec {
            TaskHeadSpec::MultipleChoice { choices, .. } => {
                HeadOutput::Logits(logits.reshape([b / choices, choices]))
            }
            _ => HeadOutput::Logits(logits),
        }
    }

    fn out_device(&self) -> burn::tensor::Device {
        self.out
            .bias
            .as_ref()
            .expect("heads have biases")
            .val()
            .device()
    }
}

/// Each row's last position whose attention mask is 1 (as transformers'
/// `(token_indices * non_pad_mask).argmax(-1)`; 0 for a row without one), `[B]`. Positions
/// count from 1 here so that the maximum is unique whatever `argmax` does with ties.
pub fn last_real_token(attention_mask: &Tensor<2, Int>) -> Tensor<1, Int> {
    let [b, t] = attention_mask.dims();
    let positions = Tensor::<1, Int>::arange(1..t as i64 + 1, &attention_mask.device())
        .reshape([1, t])
        .expand([b, t]);
    let real = attention_mask.clone().not_equal_elem(0).int();
    (positions * real).argmax(1).reshape([b])
}

/// Mean cross-entropy of `logits: [N, C]` against class ids `[N]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, labels.reshape([n, 1]));
    picked.mean().neg()
}

/// The task loss for a head output (cross-entropy, MSE, or mean of start/end cross-entropy).
pub fn task_loss(output: &HeadOutput, labels: &Labels) -> Tensor<1> {
    match (output, labels) {
        (HeadOutput::Logits(logits), Labels::Class(y)) => cross_entropy(logits.clone(), y.clone()),
        (HeadOutput::Logits(logits), Labels::Score(y)) => {
            let [n, _] = logits.dims();
            (logits.clone().reshape([n]) - y.clone()).square().mean()
        }
        (HeadOutput::Span { start, end }, Labels::Span { start: s, end: e }) => {
            (cross_entropy(start.clone(), s.clone()) + cross_entropy(end.clone(), e.clone()))
                .div_scalar(2.0)
        }
        _ => panic!("labels do not match the head: {output:?} vs {labels:?}"),
    }
}

/// Distillation term against a teacher's outputs for the same units, `teacher: [N, C]`:
/// `T²·KL(softmax(t/T) ‖ softmax(s/T))` averaged over units for class logits (classification,
/// multiple choice), the mean squared difference for regression scores. `None` for span heads.
pub fn distill_loss(
    output: &HeadOutput,
    teacher: Tensor<2>,
    temperature: f64,
    regression: bool,
) -> Option<Tensor<1>> {
    let HeadOutput::Logits(student) = output else {
        return None;
    };
    if regression {
        return Some((student.clone() - teacher).square().mean());
    }
    let t = 1.0 / temperature;
    let target = softmax(teacher.clone().mul_scalar(t), 1);
    let log_target = log_softmax(teacher.mul_scalar(t), 1);
    let log_student = log_softmax(student.clone().mul_scalar(t), 1);
    let kl = (target * (log_target - log_student)).sum_dim(1).mean();
    Some(kl.mul_scalar(temperature * temperature))
}
