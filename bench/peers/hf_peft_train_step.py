#!/usr/bin/env python3
"""Peer benchmark: the same training step as `lpeft-bench`, in Hugging Face transformers + peft
on PyTorch. Prints one JSON line per measurement, in lpeft-bench's format.

Shapes use random weights (weights do not change speed); dropout 0.1, LoRA r=8, alpha=16,
dropout 0.05; AdamW with global-norm clipping at 1.0, as the reference recipe.

--peft light-lora is the Light-PEFT-pruned shape of lpeft-bench: a third of every layer's heads
and FFN neurons removed (transformers 5 has no prune_heads, so the projections are resized),
LoRA on every fourth of the six-per-layer modules at rank 4 with alpha 8 (scale 2 as at r=8).
--precision tf32 allows TF32 matmuls; bf16 runs under torch.autocast(bfloat16) with fp32
weights, as the HF Trainer's bf16=True does. Peak memory: torch's allocator peaks per phase.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

SHAPES = {
    "minilm": ("bert", 6, 384, 12, 1536, 30522),
    "roberta-base": ("roberta", 12, 768, 12, 3072, 50265),
    "roberta-large": ("roberta", 24, 1024, 16, 4096, 50265),
    # roberta-large's structure with almost no arithmetic: the step time is host overhead
    "large-skeleton": ("roberta", 24, 128, 16, 512, 1000),
}
TARGETS = {
    "lora-qv": r".*\.attention\.self\.(query|value)$",
    "lora-all": r".*\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$",
}


SITES = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense"]


def build(shape, attn):
    fam, layers, hidden, heads, ffn, vocab = SHAPES[shape]
    kw = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
              intermediate_size=ffn, num_labels=2, attn_implementation=attn)
    if fam == "bert":
        return BertForSequenceClassification(BertConfig(**kw))
    return RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **kw))


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
    layers = SHAPES[shape][1]
    names = [f"encoder.layer.{l}.{site}" for l in range(layers) for site in SITES]
    return names[::4]


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
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
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
        model = build(a.shape, a.attn)
        if a.peft == "light-lora":
            model = prune_third(model, a.shape)
            lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=light_targets(a.shape),
                              task_type="SEQ_CLS")
        elif a.peft != "none":
            lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS[a.peft],
                              task_type="SEQ_CLS")
        model = model.to(dev)
        if a.peft != "none":
            model = get_peft_model(model, lora)
        model.train()
        self.model = model
        self.autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.0, eps=1e-8)
        vocab = SHAPES[a.shape][5]
        self.ids = torch.randint(3, vocab, (a.batch, a.seq), device=dev)
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.ones(a.batch, dtype=torch.long, device=dev)

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
