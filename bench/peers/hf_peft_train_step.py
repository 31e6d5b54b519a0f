#!/usr/bin/env python3
"""Peer benchmark: the same training step as `lpeft-bench`, in Hugging Face transformers + peft
on PyTorch. Prints one JSON line per measurement, in lpeft-bench's format.

Shapes use random weights (weights do not change speed); dropout 0.1, LoRA r=8, alpha=16,
dropout 0.05; AdamW with global-norm clipping at 1.0, as the reference recipe.

--peft light-lora is the Light-PEFT-pruned shape of lpeft-bench: a third of every layer's heads
and FFN neurons removed (transformers 5 has no prune_heads, so the projections are resized),
LoRA on every fourth of the six-per-layer modules at rank 4 with alpha 8 (scale 2 as at r=8).
--precision tf32 allows TF32 matmuls; bf16 runs under torch.autocast(bfloat16) with fp32
weights, as the HF Trainer's bf16=True does; bf16-pure builds every tensor in bf16 (the model
directly in bf16 on the device, LoRA weights kept in bf16 with peft's
autocast_adapter_dtype=False, AdamW state in bf16, no autocast), as lpeft-bench --precision
bf16-pure. Peak memory: torch's allocator peaks per phase.

OPT shapes (opt-1.3b, opt-6.7b, opt-tiny; the same table as lpeft-bench): transformers'
OPTForSequenceClassification (--task seq-cls, the last token's `score`) or OPTForCausalLM
(--task causal-lm, labels = the input ids: next-token loss through the tied LM head), built
from an OPTConfig (pre-LayerNorm, ReLU, 2048 positions, dropout 0.1, attention dropout 0) with
torch.device(--device) as the default device and `dtype`, so opt-6.7b is initialised on the GPU
in bf16 and never in fp32 on the host. The pruned shape (light-lora, light-r2) is built on the
meta device, resized there, then allocated on the device (`to_empty`) and drawn: the unpruned
model never exists. LoRA on q_proj, k_proj, v_proj, out_proj, fc1, fc2.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig,
                          BertForSequenceClassification, OPTConfig, RobertaConfig,
                          RobertaForSequenceClassification)

SHAPES = {
    "minilm": ("bert", 6, 384, 12, 1536, 30522),
    "roberta-base": ("roberta", 12, 768, 12, 3072, 50265),
    "roberta-large": ("roberta", 24, 1024, 16, 4096, 50265),
    # roberta-large's structure with almost no arithmetic: the step time is host overhead
    "large-skeleton": ("roberta", 24, 128, 16, 512, 1000),
    # facebook/opt-1.3b and opt-6.7b (the embeddings' 50272 rows); opt-tiny for CPU checks
    "opt-1.3b": ("opt", 24, 2048, 32, 8192, 50272),
    "opt-6.7b": ("opt", 32, 4096, 32, 16384, 50272),
    "opt-tiny": ("opt", 2, 64, 4, 256, 512),
}
TARGETS = {
    "lora-qv": r".*\.attention\.self\.(query|value)$",
    "lora-all": r".*\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$",
}
OPT_TARGETS = {
    "lora-qv": r".*\.self_attn\.(q_proj|v_proj)$",
    "lora-all": r".*\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)$",
}


SITES = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense"]
# lpeft-bench's (layer, site) order: query, key, value, attention output, FFN in, FFN out.
OPT_SITES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"]


def build(shape, attn):
    fam, layers, hidden, heads, ffn, vocab = SHAPES[shape]
    kw = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
              intermediate_size=ffn, num_labels=2, attn_implementation=attn)
    if fam == "bert":
        return BertForSequenceClassification(BertConfig(**kw))
    return RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **kw))


def opt_config(shape, attn):
    _, layers, hidden, heads, ffn, vocab = SHAPES[shape]
    return OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     ffn_dim=ffn, max_position_embeddings=2048, word_embed_proj_dim=hidden,
                     do_layer_norm_before=True, activation_function="relu", dropout=0.1, attention_dropout=0.0,
                     enable_bias=True, pad_token_id=1, bos_token_id=2, eos_token_id=2, num_labels=2,
                     attn_implementation=attn)


def build_opt(shape, attn, task, dev, dtype, prune):
    """OPT for the task, created on `dev` in `dtype` (transformers' own initialisation there);
    with `prune`, created on the meta device, resized to the pruned shape, then allocated on
    `dev` and drawn (N(0, 0.02) weights, zero biases, unit LayerNorms)."""
    cls = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    with torch.device("meta" if prune else dev):
        model = cls.from_config(opt_config(shape, attn), dtype=dtype)
    if not prune:
        return model
    with torch.device("meta"):
        prune_third_opt(model, shape, dtype)
    model = model.to_empty(device=dev)
    model.tie_weights()  # to_empty gives the tied LM head storage of its own
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=g)
    if task == "causal-lm":
        assert model.lm_head.weight is model.model.decoder.embed_tokens.weight, "LM head tied"
    return model


def prune_third_opt(model, shape, dtype):
    """OPT's layers with a third of their heads and FFN neurons removed (projections resized;
    OPTAttention reshapes by its `num_heads`)."""
    _, _, hidden, heads, ffn, _ = SHAPES[shape]
    head_dim = hidden // heads
    kept_heads, kept_ffn = heads - heads // 3, ffn - ffn // 3
    lin = lambda i, o: torch.nn.Linear(i, o, dtype=dtype)
    for layer in model.base_model.decoder.layers:
        att = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(att, name, lin(hidden, kept_heads * head_dim))
        att.out_proj = lin(kept_heads * head_dim, hidden)
        att.num_heads = kept_heads
        layer.fc1 = lin(hidden, kept_ffn)
        layer.fc2 = lin(kept_ffn, hidden)


def prune_third(model, shape):
    """Remove a third of every layer's heads and FFN neurons by resizing the projections."""
    _, _, hidden, heads, ffn, _ = SHAPES[shape]
    head_dim = hidden // heads
    kept_heads, kept_ffn = heads - heads // 3, ffn - ffn // 3
    enc = model.base_model.encoder
    for layer in enc.layer:
        att = layer.attention.self
        for name in ("query", "key", "value"):
            setattr(att, name, torch.nn.Linear(hidden, kept_heads * head_dim))
        att.num_attention_heads = kept_heads
        att.all_head_size = kept_heads * head_dim
        layer.attention.output.dense = torch.nn.Linear(kept_heads * head_dim, hidden)
        layer.intermediate.dense = torch.nn.Linear(hidden, kept_ffn)
        layer.output.dense = torch.nn.Linear(kept_ffn, hidden)
    return model


def light_targets(shape):
    fam, layers = SHAPES[shape][:2]
    if fam == "opt":
        names = [f"decoder.layers.{l}.{site}" for l in range(layers) for site in OPT_SITES]
    else:
        names = [f"encoder.layer.{l}.{site}" for l in range(layers) for site in SITES]
    return names[::4]


def all_targets(shape):
    fam, layers = SHAPES[shape][:2]
    if fam == "opt":
        return [f"decoder.layers.{l}.{site}" for l in range(layers) for site in OPT_SITES]
    return [f"encoder.layer.{l}.{site}" for l in range(layers) for site in SITES]


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="minilm")
    ap.add_argument("--peft", default="lora-qv")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--inference", action="store_true")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "bf16-pure"])
    ap.add_argument("--task", default="seq-cls", choices=["seq-cls", "causal-lm"],
                    help="causal-lm: OPT shapes only, next-token loss (labels = input ids)")
    ap.add_argument("--attn", default="sdpa", help="transformers attention implementation (sdpa, eager)")
    return ap


class TrainStep:
    """The model, optimizer and batch of one setting; `step()` is one timed training step."""

    def __init__(self, a):
        if a.threads:
            torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        self.dev = dev = torch.device(a.device)
        torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
        fam = SHAPES[a.shape][0]
        if a.task == "causal-lm" and fam != "opt":
            raise SystemExit(f"--task causal-lm needs an OPT shape, not {a.shape}")
        pure = a.precision == "bf16-pure"
        task_type = "CAUSAL_LM" if a.task == "causal-lm" else "SEQ_CLS"
        if a.peft == "light-lora":
            lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=light_targets(a.shape),
                              task_type=task_type)
        elif a.peft == "light-r2":
            # Every module at rank 2 of 8, the scale kept at 16/8 (lpeft-bench's light-r2).
            lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.05, target_modules=all_targets(a.shape),
                              task_type=task_type)
        elif a.peft != "none":
            targets = OPT_TARGETS if fam == "opt" else TARGETS
            lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets[a.peft],
                              task_type=task_type)
        if fam == "opt":
            model = build_opt(a.shape, a.attn, a.task, dev, torch.bfloat16 if pure else torch.float32,
                              prune=a.peft in ("light-lora", "light-r2"))
        else:
            if pure:
                raise SystemExit("--precision bf16-pure is for the OPT shapes here")
            model = build(a.shape, a.attn)
            if a.peft in ("light-lora", "light-r2"):
                model = prune_third(model, a.shape)
            model = model.to(dev)
        if a.peft != "none":
            model = get_peft_model(model, lora, autocast_adapter_dtype=not pure)
        model.train()
        self.model = model
        self.task = a.task
        self.autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.0, eps=1e-8)
        vocab = SHAPES[a.shape][5]
        self.ids = torch.randint(3, vocab, (a.batch, a.seq), device=dev)
        self.mask = torch.ones_like(self.ids)
        self.labels = self.ids if a.task == "causal-lm" else torch.ones(a.batch, dtype=torch.long, device=dev)

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def step(self):
        with self.autocast():
            loss = self.model(input_ids=self.ids, attention_mask=self.mask, labels=self.labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sync()


def main():
    a = parser().parse_args()
    t = TrainStep(a)
    t.reset_peak()
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        t.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    report(a, "train", times, t.model)
    if a.inference:
        t.model.eval()
        t.opt.zero_grad(set_to_none=True)
        t.reset_peak()
        times = []
        with torch.no_grad():
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                with t.autocast():
                    t.model(input_ids=t.ids, attention_mask=t.mask).logits.sum().item()
                t.sync()
                if i >= a.warmup:
                    times.append(time.perf_counter() - t0)
        report(a, "inference", times, t.model)


def report(a, phase, times, model):
    med = sorted(times)[len(times) // 2]
    rec = {"impl": "hf-peft", "backend": f"torch-{a.device}", "shape": a.shape, "peft": a.peft, "phase": phase,
           "task": a.task,
           "dtype": a.precision, "attn": a.attn, "batch": a.batch, "seq": a.seq, "median_s": med, "times_s": times,
           "examples_per_s": a.batch / med, "torch": torch.__version__,
           "params": {"total": sum(p.numel() for p in model.parameters()),
                      "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}}
    if a.device.startswith("cuda"):
        rec["torch_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        rec["torch_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
