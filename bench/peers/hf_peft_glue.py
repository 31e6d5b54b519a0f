#!/usr/bin/env python3
"""Accuracy peer: Hugging Face transformers + peft fine-tuning a GLUE task with our recipe.

Reads the same official GLUE TSV files and tokenizer.json as `lpeft` (through the `tokenizers`
library: transformers 5's BertTokenizerFast(vocab_file=...) maps words to one id), builds
BertForSequenceClassification on the model directory, adds LoRA with peft and trains with the
recipe of pipelines/glue.ron: AdamW (0.9, 0.999, 1e-8), global-norm clipping, a linear schedule
with warm-up, weight decay off biases and LayerNorms, per-batch padding to the longest row,
dev evaluation at every epoch end, best epoch by the task's main score. One JSON line per run.

    python3 bench/peers/hf_peft_glue.py --glue-dir DIR --model DIR --task cola --method lora-all \
        --seed 1 --out runs.jsonl [--epochs 10] [--lr 3e-4] [--device cuda]

Methods: lora-all (q, k, v, attention output, FFN in, FFN out; no warm-up, no weight decay, the
Light-PEFT recipe) and lora-qv (q, v; warm-up 6 %, weight decay 0.1, the reference's vanilla).
"""

import argparse
import json
import math
import os
import sys
import time

TASKS = {
    # name: (folder, first column, second column, label column, kind); None = no header (CoLA)
    "cola": ("CoLA", None, None, None, "class"),
    "sst2": ("SST-2", "sentence", None, "label", "class"),
    "mrpc": ("MRPC", "#1 String", "#2 String", "Quality", "class"),
    "stsb": ("STS-B", "sentence1", "sentence2", "score", "regression"),
    "rte": ("RTE", "sentence1", "sentence2", "label", "class"),
}
RTE_LABELS = {"entailment": 0, "not_entailment": 1}

METHODS = {
    "lora-all": dict(
        targets=r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)",
        warmup_ratio=0.0,
        weight_decay=0.0,
    ),
    "lora-qv": dict(
        targets=r".*encoder\.layer\.\d+\.attention\.self\.(query|value)",
        warmup_ratio=0.06,
        weight_decay=0.1,
    ),
}


def read_split(glue_dir, task, split):
    """(first, second, label) rows of a GLUE TSV, split on tabs without quoting, like lpeft."""
    folder, c1, c2, cl, kind = TASKS[task]
    path = os.path.join(glue_dir, folder, f"{split}.tsv")
    # utf-8-sig: MRPC's files open with a byte-order mark, which lpeft strips from the header too.
    with open(path, encoding="utf-8-sig") as f:
        lines = [line.rstrip("\n").rstrip("\r") for line in f if line.strip()]
    rows = []
    if c1 is None:  # CoLA: source, label, original label, sentence; no header
        for n, line in enumerate(lines, 1):
            cols = line.split("\t")
            if len(cols) < 4:
                sys.exit(f"{path}:{n}: expected 4 tab-separated columns, found {len(cols)}")
            rows.append((cols[3], None, int(cols[1])))
        return rows, kind
    header = lines[0].split("\t")
    try:
        i1 = header.index(c1)
        i2 = header.index(c2) if c2 else None
        il = header.index(cl)
    except ValueError as e:
        sys.exit(f"{path}:1: header {header} lacks a column: {e}")
    for n, line in enumerate(lines[1:], 2):
        cols = line.split("\t")
        if len(cols) != len(header):
            sys.exit(f"{path}:{n}: {len(cols)} columns, the header has {len(header)}")
        raw = cols[il]
        if kind == "regression":
            label = float(raw)
        elif task == "rte":
            label = RTE_LABELS[raw]
        else:
            label = int(raw)
        rows.append((cols[i1], cols[i2] if i2 is not None else None, label))
    return rows, kind


def encode(tokenizer, rows, max_length):
    out = []
    for a, b, y in rows:
        enc = tokenizer.encode(a, b) if b is not None else tokenizer.encode(a)
        out.append((enc.ids, enc.type_ids, y))
    return out


def batches(torch, data, batch_size, order, pad_id, device, float_labels):
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            t, tt, _ = data[i]
            ids[r, : len(t)] = torch.tensor(t)
            types[r, : len(t)] = torch.tensor(tt)
            mask[r, : len(t)] = 1
        labels = torch.tensor(
            [data[i][2] for i in idx], dtype=torch.float32 if float_labels else torch.long
        )
        yield ids.to(device), types.to(device), mask.to(device), labels.to(device)


def mcc(pred, gold):
    tp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 1)
    tn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 0)
    fp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 1)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else (tp * tn - fp * fn) / den


def f1(pred, gold):
    tp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 1)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return 0.0 if sx == 0 or sy == 0 else sxy / (sx * sy)


def ranks(v):
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def metrics(task, pred, gold):
    """All metrics and the main score (fractions), as lpeft's task registry defines them."""
    if task == "stsb":
        p, s = pearson(pred, gold), pearson(ranks(pred), ranks(gold))
        return {"pearson": p, "spearman": s}, (p + s) / 2
    acc = sum(1 for a, b in zip(pred, gold) if a == b) / len(gold)
    if task == "cola":
        m = mcc(pred, gold)
        return {"matthews": m}, m
    if task == "mrpc":
        f = f1(pred, gold)
        return {"accuracy": acc, "f1": f}, (acc + f) / 2
    return {"accuracy": acc}, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glue-dir", required=True)
    ap.add_argument("--model", required=True, help="BERT model directory with tokenizer.json")
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--method", default="lora-all", choices=sorted(METHODS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tf32", action="store_true", help="TF32 matmuls (default: full fp32)")
    ap.add_argument("--bf16", action="store_true",
                    help="torch.autocast(bfloat16) over fp32 weights (the HF Trainer's bf16=True)")
    ap.add_argument("--limit", type=int, default=None, help="first N rows of each split (checks)")
    ap.add_argument("--out", required=True, help="JSON lines file to append the run to")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    start = time.time()

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(args.max_length, strategy="longest_first")
    pad_id = tok.token_to_id("[PAD]") or 0
    train_rows, kind = read_split(args.glue_dir, args.task, "train")
    dev_rows, _ = read_split(args.glue_dir, args.task, "dev")
    if args.limit:
        train_rows, dev_rows = train_rows[: args.limit], dev_rows[: args.limit]
    train = encode(tok, train_rows, args.max_length)
    dev = encode(tok, dev_rows, args.max_length)
    regression = kind == "regression"
    num_labels = 1 if regression else max(r[2] for r in train_rows) + 1

    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels, dtype=torch.float32
    )
    recipe = METHODS[args.method]
    cfg = LoraConfig(
        task_type="SEQ_CLS",
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=recipe["targets"],
    )
    model = get_peft_model(model, cfg).to(device)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for _, p in trainable)
    n_lora = sum(p.numel() for n, p in trainable if "lora_" in n)
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n
    groups = [
        {"params": [p for n, p in trainable if not no_decay(n)], "weight_decay": recipe["weight_decay"]},
        {"params": [p for n, p in trainable if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = math.ceil(recipe["warmup_ratio"] * total)

    def schedule(step):  # HF get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epochs, train_seconds = [], 0.0
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        order = torch.randperm(len(train), generator=gen).tolist()
        loss_sum = torch.zeros((), device=device)
        for ids, types, mask, labels in batches(
            torch, train, args.batch_size, order, pad_id, device, regression
        ):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
            logits = logits.float()
            if regression:
                loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
            else:
                loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.time() - t0
        model.eval()
        preds = []
        with torch.no_grad():
            for ids, types, mask, _ in batches(
                torch, dev, args.eval_batch_size, list(range(len(dev))), pad_id, device, regression
            ):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
                if regression:
                    preds.extend(logits.squeeze(-1).float().tolist())
                else:
                    preds.extend(logits.argmax(-1).tolist())
        values, main_score = metrics(args.task, preds, [r[2] for r in dev])
        epochs.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / steps_per_epoch,
                "metrics": values,
                "main_score": main_score,
            }
        )
        print(f"{args.task} {args.method} s{args.seed} epoch {epoch + 1}: {main_score:.4f}", flush=True)
    best = max(range(len(epochs)), key=lambda i: (epochs[i]["main_score"], -i))
    record = {
        "peer": "hf-peft",
        "task": f"glue/{args.task}",
        "method": args.method,
        "seed": args.seed,
        "epochs": epochs,
        "best_epoch": best + 1,
        "best_main_score": epochs[best]["main_score"],
        "best_metrics": epochs[best]["metrics"],
        "trainable_params": n_trainable,
        "peft_params": n_lora,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - start,
        "steps": total,
        "peak_allocated_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        ),
        "recipe": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "rank": args.rank,
            "alpha": args.alpha,
            "dropout": args.dropout,
            "max_grad_norm": args.max_grad_norm,
            "tf32": args.tf32,
            "bf16": args.bf16,
            **{k: v for k, v in recipe.items() if k != "targets"},
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__,
        },
    }
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
