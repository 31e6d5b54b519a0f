#!/usr/bin/env python3
"""Where a training step's time goes, ours against the peer, seen by PyTorch's own profiler.

Both sides run inside this Python process under torch.profiler (CUPTI on CUDA): the peer's
step (bench/peers/hf_peft_train_step.py) directly, ours through `liblpeft_bench.so`, which calls
the same libtorch this process has loaded. Per step it reports the wall time, the number of
kernels and their summed and merged (busy) GPU time, the launches, and the libtorch operators
called (top-level: not counting operators called inside another). A GPU busy for much less than
the wall time means the host's issuing of kernels is the bound.

  cargo rustc --release -p lpeft-bench --features lpeft-bench/tch --lib --crate-type cdylib
  python3 bench/profile_step.py --side ours --lib target/release/liblpeft_bench.so \\
      --device cuda --shape roberta-large --peft lora-qv --precision tf32 [--out DIR]
  python3 bench/profile_step.py --side peer --device cuda --shape roberta-large ...

Prints one JSON line; with --out also writes DIR/<side>-<setting>.md (kernels and operators by
total time and count) and the Chrome trace.

  python3 bench/profile_step.py --table RUN/summary.jsonl ... [--steps-profiled 5]

prints those JSON lines (one file per run, named by its folder) as a markdown table. Per-step
figures are totals divided by the step marks found; --steps-profiled N rescales records whose
mark count differs from the N steps really profiled (the first version of this script also
counted Kineto's GPU copies of the marks, so its records say 10 steps for 5).
"""
import argparse
import collections
import ctypes
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", nargs="+", metavar="SUMMARY_JSONL", help="print these records as a table")
    ap.add_argument("--steps-profiled", type=int, help="with --table: the steps each record really covered")
    ap.add_argument("--side", choices=["ours", "peer"])
    ap.add_argument("--lib", help="liblpeft_bench.so (--side ours)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--shape", default="roberta-base")
    ap.add_argument("--peft", default="lora-qv")
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16", "bf16-mixed"],
                    help="bf16: every tensor bf16 (ours: bf16-pure); bf16-mixed: ours only, the stages' autocast")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the profiled ones (>= 2)")
    ap.add_argument("--steps", type=int, default=5, help="profiled steps")
    ap.add_argument("--fused", default="on", choices=["on", "off"], help="ours: fused libtorch nodes")
    ap.add_argument("--ffn-align", default="auto", help="ours: lpeft-bench's --ffn-align (auto, or 1: no padding)")
    ap.add_argument("--ffn-widths", default="uniform", choices=["uniform", "irregular", "multiple8"],
                    help="ours: lpeft-bench's --ffn-widths (the pruned shapes' FFN widths)")
    ap.add_argument("--step", default="finetune", choices=["finetune", "estimate"],
                    help="ours: lpeft-bench's --step (estimate: the estimation stage's step, masks and captures)")
    ap.add_argument("--graphs", default="off", choices=["on", "off"], help="ours: lpeft-bench's --graphs")
    ap.add_argument("--norm-kernel", default="on", choices=["on", "off"],
                    help="ours: lpeft-bench's --norm-kernel (bf16-mixed's add-norm kernels)")
    ap.add_argument("--out", help="folder for the per-kernel tables and the Chrome trace")
    a = ap.parse_args()
    if a.table:
        return a
    if not a.side:
        ap.error("--side is required (unless --table)")
    if a.warmup < 2:
        ap.error("--warmup must be at least 2 (the profiler's own warm-up needs one step)")
    if a.side == "ours" and not a.lib:
        ap.error("--side ours needs --lib")
    if a.side == "peer" and (a.precision == "bf16-mixed" or a.step != "finetune" or a.graphs != "off"):
        ap.error("--precision bf16-mixed, --step and --graphs are ours only")
    return a


def setting(a):
    """The file stem of one run: every argument that changes what is profiled."""
    align = f"-align{a.ffn_align}" if a.side == "ours" and a.ffn_align != "auto" else ""
    widths = f"-{a.ffn_widths}" if a.side == "ours" and a.ffn_widths != "uniform" else ""
    step = f"-{a.step}" if a.step != "finetune" else ""
    graphs = "-graphs" if a.graphs == "on" else ""
    norm = "-norm-off" if a.side == "ours" and a.norm_kernel == "off" else ""
    return f"{a.side}-{a.shape}-{a.peft}-{a.precision}-b{a.batch}-s{a.seq}{align}{widths}{step}{graphs}{norm}"


def intervals_union(spans):
    total, end = 0.0, None
    for s, e in sorted(spans):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def summarize(trace, steps):
    ev = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    # The CPU-side marks only (Kineto repeats them as GPU annotations).
    step_marks = [e for e in ev if e["name"].startswith("ProfilerStep#") and e.get("cat") == "user_annotation"]
    kernels = [e for e in ev if e.get("cat") == "kernel"]
    copies = [e for e in ev if e.get("cat") in ("gpu_memcpy", "gpu_memset")]
    runtime = [e for e in ev if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    ops = [e for e in ev if e.get("cat") == "cpu_op"]
    # Top-level operators: not inside another operator of the same thread.
    top = []
    by_tid = collections.defaultdict(list)
    for e in ops:
        by_tid[e["tid"]].append(e)
    for tid_ops in by_tid.values():
        tid_ops.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_end = -1.0
        for e in tid_ops:
            if e["ts"] >= open_end:
                top.append(e)
                open_end = e["ts"] + e["dur"]
    n = max(len(step_marks), 1)
    launches = [e for e in runtime if "Launch" in e["name"]]
    per = lambda x: x / n
    summary = {
        "steps": len(step_marks),
        "wall_ms": per(sum(e["dur"] for e in step_marks) / 1e3),
        "kernels": per(len(kernels)),
        "kernel_ms": per(sum(e["dur"] for e in kernels) / 1e3),
        "gpu_busy_ms": per(intervals_union([(e["ts"], e["ts"] + e["dur"]) for e in kernels + copies]) / 1e3),
        "copies": per(len(copies)),
        "launches": per(len(launches)),
        "runtime_calls_ms": per(sum(e["dur"] for e in runtime) / 1e3),
        "ops_top_level": per(len(top)),
        "ops_all": per(len(ops)),
    }
    if summary["wall_ms"]:
        summary["gpu_busy_fraction"] = summary["gpu_busy_ms"] / summary["wall_ms"]

    def table(events, key):
        acc = collections.defaultdict(lambda: [0, 0.0])
        for e in events:
            acc[key(e)][0] += 1
            acc[key(e)][1] += e["dur"]
        rows = sorted(acc.items(), key=lambda kv: -kv[1][1])
        return [(name[:110], c / n, t / n / 1e3) for name, (c, t) in rows]

    tables = {"kernels": table(kernels, lambda e: e["name"]), "top-level operators": table(top, lambda e: e["name"])}
    return summary, tables


def table(files, steps_profiled):
    print("| run | side | shape | PEFT | precision | kernels / step | GPU busy ms / step | "
          "top-level operators / step |")
    print("|---|---|---|---|---|---|---|---|")
    for path in files:
        run = os.path.basename(os.path.dirname(os.path.abspath(path)))
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for r in records:
            k = r["steps"] / steps_profiled if steps_profiled else 1.0
            print(f"| {run} | {r['side']} | {r['shape']} | {r['peft']} | {r['precision']} | "
                  f"{r['kernels'] * k:.0f} | {r['gpu_busy_ms'] * k:.1f} | {r['ops_top_level'] * k:.0f} |")


def main():
    a = parse()
    if a.table:
        table(a.table, a.steps_profiled)
        return
    if a.side == "ours" and a.precision == "tf32":
        os.environ["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = "1"  # read when libtorch starts
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
    sched = schedule(wait=1, warmup=a.warmup - 1, active=a.steps, repeat=1)
    prof = profile(activities=activities, schedule=sched)
    if a.side == "ours":
        backend = "tch-cuda" if a.device == "cuda" else "tch"
        ours = {"bf16": "bf16-pure"}.get(a.precision, a.precision)
        os.environ["LPEFT_BENCH_ARGS"] = " ".join([
            "--backend", backend, "--precision", ours, "--shape", a.shape, "--peft", a.peft, "--batch", str(a.batch),
            "--seq", str(a.seq), "--iters", str(a.steps), "--warmup", str(a.warmup), "--fused", a.fused,
            "--ffn-align", a.ffn_align, "--ffn-widths", a.ffn_widths, "--step", a.step, "--graphs", a.graphs,
            "--norm-kernel", a.norm_kernel])
        lib = ctypes.CDLL(os.path.abspath(a.lib))
        hook_type = ctypes.CFUNCTYPE(None, ctypes.c_int)
        hook = hook_type(lambda i: prof.step())
        lib.lpeft_bench_run.argtypes = [hook_type]
        lib.lpeft_bench_run.restype = ctypes.c_int
        with prof:
            rc = lib.lpeft_bench_run(hook)
        if rc != 0:
            sys.exit(f"lpeft_bench_run failed ({rc})")
    else:
        sys.path.insert(0, os.path.join(HERE, "peers"))
        import hf_peft_train_step as peer
        args = peer.parser().parse_args([
            "--shape", a.shape, "--peft", a.peft, "--batch", str(a.batch), "--seq", str(a.seq),
            "--device", a.device, "--precision", a.precision])
        t = peer.TrainStep(args)
        with prof:
            for _ in range(a.warmup + a.steps):
                t.step()
                prof.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(a.out or tmp, f"{setting(a)}.trace.json")
        if a.out:
            os.makedirs(a.out, exist_ok=True)
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    summary, tables = summarize(trace, a.steps)
    rec = {"side": a.side, "device": a.device, "shape": a.shape, "peft": a.peft, "precision": a.precision,
           "batch": a.batch, "seq": a.seq, "fused": a.fused if a.side == "ours" else None,
           "ffn_align": a.ffn_align if a.side == "ours" else None,
           "step": a.step if a.side == "ours" else None, "graphs": a.graphs if a.side == "ours" else None,
           **summary}
    print(json.dumps(rec), flush=True)
    if a.out:
        with open(os.path.join(a.out, f"{setting(a)}.md"), "w") as f:
            f.write(f"# {setting(a)}: per step\n\n```\n{json.dumps(rec, indent=1)}\n```\n")
            for title, rows in tables.items():
                f.write(f"\n## {title} (per step)\n\n| name | count | ms |\n|---|---|---|\n")
                for name, c, ms in rows[:40]:
                    f.write(f"| `{name}` | {c:g} | {ms:.3f} |\n")


if __name__ == "__main__":
    main()
