#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for lpeft-model's parity tests.

Writes, under crates/lpeft-model/tests/fixtures/:
  tiny-bert/, tiny-roberta/  small random models with uneven per-layer heads and FFN widths
                             (a layer with zero heads, a layer with zero FFN neurons), saved as
                             HF checkpoints (config.json + model.safetensors, tiny-bert also as
                             pytorch_model.bin), plus reference.safetensors with inputs, the last
                             hidden states and classification logits;
  minilm-reference.safetensors + minilm-texts.json
                             last hidden states of ../shared/models/all-MiniLM-L6-v2 for a set of
                             sentences and pairs tokenized with the `tokenizers` library;
  tiny-mpnet/, tiny-mpnet-full/, mpnet-reference.safetensors + mpnet-texts.json
                             MPNet's, see mpnet_fixtures.py (the real model from --mpnet-dir);
  tiny-opt/, tiny-opt-full/, tiny-opt-post/
                             OPT's, see opt_fixtures.py;
  tiny-opt-bpe/              OPT's own tokenizer files (toy GPT-2 BPE) and a tiny OPT, with the
                             tokenizer's expected encodings, see opt_tokenizer_fixtures.py.

Needs torch, transformers (5.x) and tokenizers. Run from the repository root:
  python3 tools/reference/make_model_fixtures.py [--model-dir ../shared/models/all-MiniLM-L6-v2]
      [--mpnet-dir .whl/all-mpnet-base-v2] [--only bert,roberta,minilm,mpnet,opt,opt-bpe]
CI does not run this; it compares against the committed files.
"""
import argparse
import json
import os

import torch
import mpnet_fixtures
import opt_fixtures
import opt_tokenizer_fixtures
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (BertConfig, BertForSequenceClassification, BertModel, RobertaConfig,
                          RobertaForSequenceClassification)

OUT = os.path.join("crates", "lpeft-model", "tests", "fixtures")


class NoHeads(torch.nn.Module):
    """Self-attention of a layer whose every head is pruned: empty Q/K/V, an empty context."""

    def __init__(self, hidden):
        super().__init__()
        self.query = torch.nn.Linear(hidden, 0)
        self.key = torch.nn.Linear(hidden, 0)
        self.value = torch.nn.Linear(hidden, 0)

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


def resize(linear, d_in, d_out):
    new = torch.nn.Linear(d_in, d_out)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:d_out, :d_in])
        new.bias.copy_(linear.bias[:d_out])
    return new


def prune_shapes(model, base, heads, ffn, head_dim):
    """Cut each layer to `heads[i]` heads and `ffn[i]` neurons (keeping the first ones)."""
    enc = base.encoder
    hidden = model.config.hidden_size
    for i, layer in enumerate(enc.layer):
        inner = heads[i] * head_dim
        att = layer.attention
        if heads[i] == 0:
            att.self = NoHeads(hidden)
        else:
            for name in ("query", "key", "value"):
                setattr(att.self, name, resize(getattr(att.self, name), hidden, inner))
            att.self.num_attention_heads = heads[i]
            att.self.all_head_size = inner
        out = torch.nn.Linear(inner, hidden)
        with torch.no_grad():
            out.weight.copy_(att.output.dense.weight[:, :inner])
            out.bias.copy_(att.output.dense.bias)
        att.output.dense = out
        layer.intermediate.dense = resize(layer.intermediate.dense, hidden, ffn[i])
        fc2 = torch.nn.Linear(ffn[i], hidden)
        with torch.no_grad():
            fc2.weight.copy_(layer.output.dense.weight[:, : ffn[i]])
            fc2.bias.copy_(layer.output.dense.bias)
        layer.output.dense = fc2


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def tiny(family, seed):
    common = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=40, attn_implementation="eager",
                  num_labels=3)
    if family == "bert":
        cfg = BertConfig(type_vocab_size=2, pad_token_id=0, **common)
        model = BertForSequenceClassification(cfg)
        base = model.bert
    else:
        cfg = RobertaConfig(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
        model = RobertaForSequenceClassification(cfg)
        base = model.roberta
    randomize(model, seed)
    heads, ffn = [4, 0, 2], [48, 17, 0]
    prune_shapes(model, base, heads, ffn, head_dim=8)
    model.eval()

    # Three rows: a single sentence, a pair, a padded short one.
    pad = cfg.pad_token_id
    if family == "bert":
        ids = [[2, 11, 12, 13, 14, 3, 0, 0, 0], [2, 21, 22, 3, 31, 32, 33, 3, 0], [2, 41, 3, 0, 0, 0, 0, 0, 0]]
        types = [[0] * 9, [0, 0, 0, 0, 1, 1, 1, 1, 0], [0] * 9]
    else:
        ids = [[0, 11, 12, 13, 14, 2, 1, 1, 1], [0, 21, 22, 2, 2, 32, 33, 2, 1], [0, 41, 2, 1, 1, 1, 1, 1, 1]]
        types = [[0] * 9] * 3
    input_ids = torch.tensor(ids)
    attention_mask = (input_ids != pad).long()
    token_type_ids = torch.tensor(types)
    with torch.no_grad():
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        logits = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    d = os.path.join(OUT, f"tiny-{family}")
    os.makedirs(d, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(state, os.path.join(d, "model.safetensors"))
    if family == "bert":
        os.makedirs(os.path.join(d, "bin"), exist_ok=True)
        torch.save(state, os.path.join(d, "bin", "pytorch_model.bin"))
        cfg.to_json_file(os.path.join(d, "bin", "config.json"))
    cfg.to_json_file(os.path.join(d, "config.json"))
    save_file({
        "input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
        "last_hidden_state": hidden.contiguous(), "logits": logits.contiguous(),
    }, os.path.join(d, "reference.safetensors"))
    print(f"tiny-{family}: heads {heads} ffn {ffn} -> {d}")


TEXTS = [
    ("A series of escapades demonstrating the adage that what is good for the goose is also good for the gander.", None),
    ("it's a charming and often affecting journey.", None),
    ("Unbelievably, the movie wasn't boring at all!", None),
    ("The cat sat on the mat.", "A cat is sitting on a mat."),
    ("Amrozi accused his brother, whom he called \"the witness\", of deliberately distorting his evidence.",
     "Referring to him as only \"the witness\", Amrozi accused his brother of deliberately distorting his evidence."),
    ("How old are you?", "What is your age?"),
]


def minilm(model_dir):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    encs = [tok.encode(a, b) if b is not None else tok.encode(a) for a, b in TEXTS]
    t = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(encs), t, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encs):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        types[i, :n] = torch.tensor(e.type_ids)
        mask[i, :n] = 1
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    save_file({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
               "last_hidden_state": hidden.contiguous()}, os.path.join(OUT, "minilm-reference.safetensors"))
    with open(os.path.join(OUT, "minilm-texts.json"), "w") as f:
        json.dump([{"text": a, "pair": b, "ids": e.ids, "type_ids": e.type_ids} for (a, b), e in zip(TEXTS, encs)], f, indent=1)
    print(f"minilm: {len(encs)} inputs, T={t}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.path.join("..", "shared", "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--mpnet-dir", default=os.path.join(".whl", "all-mpnet-base-v2"))
    ap.add_argument("--only", default="bert,roberta,minilm,mpnet,opt,opt-bpe",
                    help="comma-separated subset to (re)make")
    args = ap.parse_args()
    only = set(args.only.split(","))
    torch.manual_seed(0)
    if "bert" in only:
        tiny("bert", 1)
    if "roberta" in only:
        tiny("roberta", 2)
    if "minilm" in only:
        minilm(args.model_dir)
    if "mpnet" in only:
        mpnet_fixtures.make(OUT, args.mpnet_dir)
    if "opt" in only:
        opt_fixtures.make(OUT)
    if "opt-bpe" in only:
        opt_tokenizer_fixtures.make(os.path.join(OUT, "tiny-opt-bpe"))
