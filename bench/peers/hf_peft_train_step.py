#!/usr/bin/env python3
"""Peer benchmark: the same training step as `lpeft-bench`, in Hugging Face transformers + peft
on PyTorch. Prints one JSON line per measurement, in lpeft-bench's format.

Shapes use random weights (weights do not change speed); dropout 0.1, LoRA r=8, alpha=16,
dropout 0.05; AdamW with global-norm clipping at 1.0, as the reference recipe.
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
}
TARGETS = {
    "lora-qv": r".*\.attention\.self\.(query|value)$",
    "lora-all": r".*\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$",
}


def build(shape, device):
    fam, layers, hidden, heads, ffn, vocab = SHAPES[shape]
    kw = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
              intermediate_size=ffn, num_labels=2, attn_implementation="eager")
    if fam == "bert":
        return BertForSequenceClassification(BertConfig(**kw)).to(device)
    return RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **kw)).to(device)


def main():
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
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = build(a.shape, dev)
    if a.peft != "none":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS[a.peft],
                                                 task_type="SEQ_CLS"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, eps=1e-8)
    vocab = SHAPES[a.shape][5]
    ids = torch.randint(3, vocab, (a.batch, a.seq), device=dev)
    mask = torch.ones_like(ids)
    labels = torch.ones(a.batch, dtype=torch.long, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    report(a, "train", times)
    if a.inference:
        model.eval()
        times = []
        with torch.no_grad():
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                model(input_ids=ids, attention_mask=mask).logits.sum().item()
                sync()
                if i >= a.warmup:
                    times.append(time.perf_counter() - t0)
        report(a, "inference", times)


def report(a, phase, times):
    med = sorted(times)[len(times) // 2]
    print(json.dumps({"impl": "hf-peft", "backend": f"torch-{a.device}", "shape": a.shape, "peft": a.peft, "phase": phase,
                      "batch": a.batch, "seq": a.seq, "median_s": med, "times_s": times,
                      "examples_per_s": a.batch / med, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
