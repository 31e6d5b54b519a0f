"""MPNet reference outputs for lpeft-model's parity tests (used by make_model_fixtures.py).

tiny-mpnet-full/  a tiny random MPNet in transformers' own layout and code, unpruned.
tiny-mpnet/       the same kind of model cut to uneven layers: heads [4, 0, 2] (layer 2 keeps the
                  original heads 1 and 3, not the first two) and FFN widths [48, 17, 0]. Nothing in
                  transformers can express a pruned MPNet (it adds the whole [B, H, T, T] relative
                  bias to every layer), so each cut layer adds its kept heads' slice of the bias
                  (a forward pre-hook) and the checkpoint carries that slice as
                  `mpnet.encoder.layer.N.attention.attn.relative_attention_bias.weight`.
Each has config.json, model.safetensors and reference.safetensors (inputs, last hidden state,
MPNetForSequenceClassification logits, and HF's bucket of every relative position in -200..200).

mpnet-reference.safetensors + mpnet-texts.json
                  last hidden states of sentence-transformers/all-mpnet-base-v2 (MPNetModel, real
                  tokens only) for a few sentences and pairs, when the model directory exists.
"""
import json
import os

import torch
from linear_cuts import cut_cols, cut_rows
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import MPNetConfig, MPNetForSequenceClassification, MPNetModel
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder


class NoHeads(torch.nn.Module):
    """`attention.attn` of a layer whose every head is pruned: only `o`'s bias remains."""

    def __init__(self, hidden):
        super().__init__()
        self.q = torch.nn.Linear(hidden, 0)
        self.k = torch.nn.Linear(hidden, 0)
        self.v = torch.nn.Linear(hidden, 0)
        self.o = torch.nn.Linear(0, hidden)

    def forward(self, hidden_states, *args, **kwargs):
        return (self.o(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)),)


def prune(base, kept_heads, ffn, head_dim):
    """Layer i keeps heads `kept_heads[i]` (original ids) and its first `ffn[i]` neurons; returns
    the extra per-layer bias tables the checkpoint must carry."""
    hidden = base.config.hidden_size
    table = base.encoder.relative_attention_bias.weight
    extra = {}
    for i, layer in enumerate(base.encoder.layer):
        heads = kept_heads[i]
        if not heads:
            layer.attention.attn = NoHeads(hidden)
        elif len(heads) < base.config.num_attention_heads:
            attn = layer.attention.attn
            units = [h * head_dim + j for h in heads for j in range(head_dim)]
            for name in ("q", "k", "v"):
                setattr(attn, name, cut_rows(getattr(attn, name), units))
            attn.o = cut_cols(attn.o, units)
            attn.num_attention_heads = len(heads)
            attn.all_head_size = len(units)
            ids = torch.tensor(heads)

            # MPNetAttention calls attn(hidden_states, attention_mask, position_bias, ...).
            def keep_heads(module, args, ids=ids):
                return (args[0], args[1], args[2][:, ids]) + tuple(args[3:])

            attn.register_forward_pre_hook(keep_heads)
            extra[f"mpnet.encoder.layer.{i}.attention.attn.relative_attention_bias.weight"] = (
                table[:, heads].detach().clone().contiguous())
        layer.intermediate.dense = cut_rows(layer.intermediate.dense, list(range(ffn[i])))
        layer.output.dense = cut_cols(layer.output.dense, list(range(ffn[i])))
    return extra


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def inputs():
    """Three rows of 24: a long sentence (distances up to 23 reach the logarithmic buckets), a
    pair `<s> A </s></s> B </s>`, a short padded one."""
    t = 24
    one = [0] + list(range(10, 32)) + [2]
    pair = [0] + list(range(40, 49)) + [2, 2] + list(range(60, 70)) + [2]
    short = [0, 71, 72, 73, 2]
    rows = [r + [1] * (t - len(r)) for r in (one, pair, short)]
    return torch.tensor(rows)


def tiny(out_dir, name, seed, kept_heads=None, ffn=None):
    cfg = MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=48, max_position_embeddings=40,
                      relative_attention_num_buckets=32, pad_token_id=1, bos_token_id=0,
                      eos_token_id=2, attn_implementation="eager", num_labels=3)
    model = MPNetForSequenceClassification(cfg)
    randomize(model, seed)
    extra = {}
    if kept_heads is not None:
        extra = prune(model.mpnet, kept_heads, ffn, head_dim=8)
    model.eval()
    input_ids = inputs()
    attention_mask = (input_ids != cfg.pad_token_id).long()
    with torch.no_grad():
        hidden = model.mpnet(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    rel = torch.arange(-200, 201)
    buckets = MPNetEncoder.relative_position_bucket(rel)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    state.update(extra)
    save_file(state, os.path.join(d, "model.safetensors"))
    cfg.to_json_file(os.path.join(d, "config.json"))
    save_file({
        "input_ids": input_ids, "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "last_hidden_state": hidden.contiguous(), "logits": logits.contiguous(),
        "relative_positions": rel, "buckets": buckets,
    }, os.path.join(d, "reference.safetensors"))
    print(f"{name}: heads {kept_heads} ffn {ffn} -> {d}")


TEXTS = [
    ("it's a charming and often affecting journey.", None),
    ("Unbelievably, the movie wasn't boring at all!", None),
    ("The cat sat on the mat.", "A cat is sitting on a mat."),
    ("How old are you?", "What is your age?"),
]


def real(out_dir, model_dir):
    """The real model's last hidden states, real tokens only, rows concatenated."""
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    model = MPNetModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    states, items = [], []
    for a, b in TEXTS:
        e = tok.encode(a, b) if b is not None else tok.encode(a)
        ids = torch.tensor([e.ids])
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        states.append(h)
        items.append({"text": a, "pair": b, "ids": e.ids, "type_ids": e.type_ids})
    save_file({"last_hidden_state": torch.cat(states).contiguous()},
              os.path.join(out_dir, "mpnet-reference.safetensors"))
    with open(os.path.join(out_dir, "mpnet-texts.json"), "w") as f:
        json.dump(items, f, indent=1)
    print(f"mpnet: {len(items)} inputs, {sum(len(i['ids']) for i in items)} tokens")


def make(out_dir, model_dir):
    tiny(out_dir, "tiny-mpnet-full", 3)
    tiny(out_dir, "tiny-mpnet", 4, kept_heads=[[0, 1, 2, 3], [], [1, 3]], ffn=[48, 17, 0])
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        real(out_dir, model_dir)
    else:
        print(f"{model_dir} is absent: mpnet-reference.safetensors not made (make fetch-mpnet)")
