#!/usr/bin/env python3
"""GPU benchmark of issue 7: lightpeft (`lpeft-bench`, libtorch CUDA through burn's `tch` backend)
beside Hugging Face transformers + peft on the same GPU, in one run.

For every shape x PEFT x precision it runs our binary, then the peer, each in its own process
(batch 32, seq 128; training step = forward + backward + clip + AdamW on the trainable set;
inference = forward without autodiff), and samples `nvidia-smi` every 20 ms while each process
runs: peak device memory is the GPU's used memory above the idle level, the same measure for
both (CUDA context included). Writes every record as JSON lines and a markdown table.

  python3 bench/gpu_bench.py --bench ./lpeft-bench --out results/bench
      [--shapes roberta-base roberta-large] [--peft lora-qv lora-all light-lora]
      [--precision tf32 bf16-mixed bf16] [--iters 10] [--warmup 3] [--rounds 1]
      [--tasks seq-cls causal-lm] [--deadline-s S] [--timeout-s S]

OPT shapes (opt-1.3b, opt-6.7b): `--tasks seq-cls causal-lm` adds the causal-LM training step
(next-token loss through the tied LM head; skipped for the encoder shapes) and a task column to
the table; `--precision bf16-pure` is every tensor in bf16 on both sides (ours `--precision
bf16-pure`; the peer builds the model in bf16 on the GPU and keeps LoRA and AdamW state in
bf16). `--deadline-s` starts no run once that many seconds have passed less the longest run so
far; `--timeout-s` stops a run that takes longer (its row then has no figures).

With --rounds R every row runs R times, ours and the peer alternating, and the table gives the
median over rounds and the range of the per-round ratios (the GPU host is shared: single runs
of one row have differed by up to 45 %).

Precisions: tf32 = fp32 tensors with TF32 matmuls (ours: `--precision tf32`, libtorch's TF32
switch; the peer: torch.backends.cuda.matmul.allow_tf32); bf16-mixed = ours: `--precision
bf16-mixed`, the stages' mixed precision (GEMMs and attention in bf16, f32 master weights and
AdamW state); the peer: torch.autocast(bfloat16) over fp32 weights, which is what the HF
Trainer's bf16=True does: the same numerics on both sides; bf16 = ours: every tensor bf16
(weights, activations, LoRA and AdamW state, `--precision bf16-pure`), the peer: autocast as
above (not the same numerics: kept for the earlier tables).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def gpu_used_mib():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


class PeakSampler:
    """Samples the GPU's used memory while a process runs."""

    def __init__(self):
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, gpu_used_mib())
            except Exception:  # a failed query must not kill the benchmark
                pass
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run(cmd, env, log, timeout=None):
    time.sleep(1.0)  # let the previous process's memory go back
    idle = gpu_used_mib()
    with PeakSampler() as s:
        t0 = time.time()
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
            log.write(f"$ {' '.join(cmd)}\nTIMEOUT after {timeout} s\n{out(e.stdout)}{out(e.stderr)}\n")
            log.flush()
            print(f"TIMEOUT ({timeout} s): {' '.join(cmd)}", file=sys.stderr)
            return []
        wall = time.time() - t0
    log.write(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}\n")
    log.flush()
    if p.returncode != 0:
        print(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}", file=sys.stderr)
        return []
    recs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
                         capture_output=True, text=True).stdout.strip()
    for r in recs:
        r["peak_mib"] = s.peak - idle
        r["gpu"] = gpu
        r["process_wall_s"] = wall
    return recs


# The peer's name for each of our precisions: its bf16 is autocast; bf16-pure is every tensor
# bf16 on both sides.
PEER_PRECISION = {"fp32": "fp32", "tf32": "tf32", "bf16-mixed": "bf16", "bf16": "bf16", "bf16-pure": "bf16-pure"}
# Tasks each shape family has: the causal-LM step needs a decoder.
CAUSAL_LM_SHAPES = ("opt-",)


def task_of(r):
    """A record's task; records from before the task field are sequence classification."""
    return r.get("task", "seq-cls")


def tasks_of(a):
    return getattr(a, "tasks", None) or ["seq-cls"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", help="lpeft-bench built with --features tch (needed unless --table-from)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["roberta-base", "roberta-large"])
    ap.add_argument("--peft", nargs="+", default=["lora-qv", "lora-all", "light-lora"])
    ap.add_argument("--precision", nargs="+", default=["tf32", "bf16-mixed"], choices=sorted(PEER_PRECISION))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every row this many times, ours and the peer alternating")
    ap.add_argument("--only", choices=["ours", "peer"], help="run one side only")
    ap.add_argument("--graphs", choices=["on", "off"], default="off",
                    help="ours: the training step through the pipeline's trainer with CUDA graphs")
    ap.add_argument("--tasks", nargs="+", default=["seq-cls"], choices=["seq-cls", "causal-lm"],
                    help="causal-lm: OPT shapes only (the others skip it)")
    ap.add_argument("--deadline-s", type=float, help="start no run after this many seconds, less the longest run")
    ap.add_argument("--timeout-s", type=float, help="stop any one run after this many seconds")
    ap.add_argument("--table-from", nargs="+", metavar="JSONL",
                    help="run nothing: write the table of these bench.jsonl files (merged) into --out")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.table_from:
        records = [json.loads(l) for f in a.table_from for l in open(f) if l.strip()]
        table = markdown(records, a)
        with open(os.path.join(a.out, "bench.md"), "w") as f:
            f.write(table)
        print(table)
        return
    if not a.bench:
        ap.error("--bench is required to run (only --table-from runs nothing)")
    records = []
    log = open(os.path.join(a.out, "bench.log"), "w")
    jsonl = open(os.path.join(a.out, "bench.jsonl"), "a")

    def keep(r):
        records.append(r)
        jsonl.write(json.dumps(r) + "\n")
        jsonl.flush()

    common = ["--batch", str(a.batch), "--seq", str(a.seq), "--iters", str(a.iters), "--warmup", str(a.warmup),
              "--inference"]
    start, longest = time.time(), 0.0

    def timed(cmd, env):
        """Runs cmd unless the deadline is too close; keeps the longest run's wall time."""
        nonlocal longest
        if a.deadline_s is not None and time.time() - start + max(longest, 1.0) > a.deadline_s:
            print(f"deadline: not started: {' '.join(cmd)}", file=sys.stderr, flush=True)
            return []
        t0 = time.time()
        recs = run(cmd, env, log, a.timeout_s)
        longest = max(longest, time.time() - t0)
        return recs

    for shape in a.shapes:
        for task in tasks_of(a):
            if task == "causal-lm" and not shape.startswith(CAUSAL_LM_SHAPES):
                print(f"{shape}: no causal-LM step (an encoder), skipped", file=sys.stderr)
                continue
            for peft in a.peft:
                for prec in a.precision:
                    env = dict(os.environ)
                    args = ["--shape", shape, "--peft", peft, *common]
                    if task != "seq-cls":
                        args += ["--task", task]
                    for rnd in range(a.rounds):
                        if a.only != "peer":
                            ours = {"bf16": "bf16-pure"}.get(prec, prec)
                            cmd = [a.bench, "--backend", "tch-cuda", "--precision", ours, "--graphs", a.graphs, *args]
                            for r in timed(cmd, env):
                                r["precision"], r["round"], r["graphs"] = prec, rnd, a.graphs
                                keep(r)
                        if a.only != "ours":
                            peer_env = dict(os.environ)
                            peer_env.pop("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", None)
                            for r in timed([a.python, os.path.join(HERE, "peers", "hf_peft_train_step.py"),
                                            "--device", "cuda", "--precision", PEER_PRECISION[prec], *args],
                                           peer_env):
                                r["precision"], r["round"] = prec, rnd
                                keep(r)
                    print(f"{shape} {task} {peft} {prec} done", file=sys.stderr, flush=True)
    table = markdown(records, a)
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write(table)
    print(table)


def markdown(records, a):
    """Median over rounds of each side's figure, their ratio, and with several rounds the range
    of the per-round training ratios. A task column when tasks other than sequence
    classification were asked for."""
    by = {}
    for r in records:
        key = (r["shape"], task_of(r), r["peft"], r["precision"], r["impl"], r["phase"])
        by.setdefault(key, []).append(r)
    gpu = next((r["gpu"] for r in records if r.get("gpu")), "?")
    torch_v = next((r.get("torch") for r in records if r.get("torch")), "?")
    rounds = max((r.get("round", 0) for r in records), default=0) + 1
    spread = rounds > 1
    tasks = tasks_of(a)
    with_task = tasks != ["seq-cls"]
    lines = [
        f"GPU: {gpu}; peer: transformers + peft on torch {torch_v}; batch {a.batch}, seq {a.seq}; "
        f"median of {a.iters} steps after {a.warmup} warm-up steps"
        + (f"; median over {rounds} rounds, ours and the peer alternating." if spread else "."),
        "",
        "| shape |" + (" task |" if with_task else "") + " PEFT | precision | train ex/s ours | train ex/s peer | ours/peer |"
        + (" per-round ours/peer |" if spread else "")
        + " infer ex/s ours | infer ex/s peer | ours/peer | peak MiB ours | peak MiB peer | ours/peer |",
        "|---|" + ("---|" if with_task else "") + "---|---|---|---|---|" + ("---|" if spread else "")
        + "---|---|---|---|---|---|",
    ]
    ratio = lambda x, y: f"{x / y:.2f}" if x and y else "n/a"
    fmt = lambda x, d=0: f"{x:.{d}f}" if x else "n/a"
    present = {(r["shape"], task_of(r), r["peft"], r["precision"]) for r in records}
    for shape in a.shapes:
        for task in tasks:
            for peft in a.peft:
                for prec in a.precision:
                    if (shape, task, peft, prec) not in present:
                        continue
                    recs = lambda impl, phase: by.get((shape, task, peft, prec, impl, phase), [])

                    def g(impl, phase, key):
                        vals = [r[key] for r in recs(impl, phase) if r.get(key)]
                        return statistics.median(vals) if vals else None

                    tr_o, tr_p = g("lightpeft", "train", "examples_per_s"), g("hf-peft", "train", "examples_per_s")
                    in_o, in_p = g("lightpeft", "inference", "examples_per_s"), g("hf-peft", "inference", "examples_per_s")
                    m_o, m_p = g("lightpeft", "train", "peak_mib"), g("hf-peft", "train", "peak_mib")
                    cells = [shape] + ([task] if with_task else []) + [peft, prec, fmt(tr_o), fmt(tr_p), ratio(tr_o, tr_p)]
                    if spread:
                        ours = {r.get("round", 0): r["examples_per_s"] for r in recs("lightpeft", "train")}
                        peer = {r.get("round", 0): r["examples_per_s"] for r in recs("hf-peft", "train")}
                        per = sorted(ours[k] / peer[k] for k in ours if k in peer and peer[k])
                        cells.append(f"{per[0]:.2f}–{per[-1]:.2f}" if per else "n/a")
                    cells += [fmt(in_o), fmt(in_p), ratio(in_o, in_p), fmt(m_o), fmt(m_p), ratio(m_o, m_p)]
                    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
