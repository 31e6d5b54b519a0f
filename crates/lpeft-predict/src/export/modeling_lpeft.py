"""A BERT/RoBERTa encoder with a head count and an FFN width per layer (down to zero), as
Light-PEFT's pruning leaves it: written by `lpeft export --format pruned`, loaded with
`AutoModelForSequenceClassification` (or, for a span head, `AutoModelForQuestionAnswering`)
`.from_pretrained(dir, trust_remote_code=True)`.

Weights keep the transformers names (`bert.encoder.layer.0.attention.self.query.weight`, ...);
`config.lpeft_layers` lists each layer's `heads` and `ffn`; a layer without heads (or neurons)
has no query/key/value (or intermediate) projection, and its output projection is `[hidden, 0]`
(its bias alone remains)."""

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput


class LpeftConfig(PretrainedConfig):
    model_type = "lpeft-encoder"

    def __init__(self, lpeft_family="bert", lpeft_layers=None, lpeft_head_style="bert_pooler",
                 attention_head_size=64, hidden_size=768, vocab_size=30522,
                 max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                 hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.lpeft_family = lpeft_family
        self.lpeft_layers = lpeft_layers or []
        self.lpeft_head_style = lpeft_head_style
        self.attention_head_size = attention_head_size
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.num_hidden_layers = len(self.lpeft_layers)


def _act(name):
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unsupported activation {name!r}")


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.roberta = c.lpeft_family == "roberta"
        self.pad = c.pad_token_id

    def forward(self, input_ids, token_type_ids):
        if self.roberta:
            real = input_ids.ne(self.pad).long()
            positions = torch.cumsum(real, dim=1) * real + self.pad
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        inner = heads * c.attention_head_size
        self.query = nn.Linear(c.hidden_size, inner)
        self.key = nn.Linear(c.hidden_size, inner)
        self.value = nn.Linear(c.hidden_size, inner)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)
        self.heads, self.d = heads, c.attention_head_size

    def forward(self, x, bias):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.d).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d) + bias
        ctx = self.dropout(scores.softmax(-1)) @ v
        return ctx.transpose(1, 2).reshape(b, t, self.heads * self.d)


class DenseNorm(nn.Module):
    """`LayerNorm(dropout(dense(x)) + residual)`: BERT's SelfOutput and Output."""

    def __init__(self, c, d_in):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.self = SelfAttention(c, heads) if heads > 0 else None
        self.output = DenseNorm(c, heads * c.attention_head_size)

    def forward(self, x, bias):
        ctx = self.self(x, bias) if self.self is not None else x.new_zeros(*x.shape[:2], 0)
        return self.output(ctx, x)


class Intermediate(nn.Module):
    def __init__(self, c, width):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, width)
        self.act = _act(c.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c, shape):
        super().__init__()
        self.attention = Attention(c, shape["heads"])
        self.intermediate = Intermediate(c, shape["ffn"]) if shape["ffn"] > 0 else None
        self.output = DenseNorm(c, shape["ffn"])

    def forward(self, x, bias):
        x = self.attention(x, bias)
        h = self.intermediate(x) if self.intermediate is not None else x.new_zeros(*x.shape[:2], 0)
        return self.output(h, x)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c, s) for s in c.lpeft_layers)


class Pooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        if c.lpeft_head_style == "bert_pooler":
            self.pooler = Pooler(c)

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


class RobertaHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.out_proj = nn.Linear(c.hidden_size, c.num_labels)


class _Base(PreTrainedModel):
    config_class = LpeftConfig

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_model_prefix, Backbone(config))
        if config.lpeft_head_style == "span":
            self.qa_outputs = nn.Linear(config.hidden_size, 2)
        elif config.lpeft_head_style == "bert_pooler":
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        else:
            self.classifier = RobertaHead(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(input_ids, attention_mask, token_type_ids)
        if self.config.lpeft_head_style == "span":
            start, end = self.qa_outputs(hidden).unbind(-1)
            return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)
        first = hidden[:, 0]
        if self.config.lpeft_head_style == "bert_pooler":
            pooled = torch.tanh(backbone.pooler.dense(first))
            logits = self.classifier(self.dropout(pooled))
        else:
            x = torch.tanh(self.classifier.dense(self.dropout(first)))
            logits = self.classifier.out_proj(self.dropout(x))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class LpeftBertForSequenceClassification(_Base):
    base_model_prefix = "bert"


class LpeftRobertaForSequenceClassification(_Base):
    base_model_prefix = "roberta"


# Span heads (`qa_outputs`): the same classes under the question-answering names.
LpeftBertForQuestionAnswering = LpeftBertForSequenceClassification
LpeftRobertaForQuestionAnswering = LpeftRobertaForSequenceClassification
