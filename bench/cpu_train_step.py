#!/usr/bin/env python3
"""CPU benchmark of issue 2: the MiniLM LoRA training step (batch 32, seq 128) of lightpeft's
default CPU backend beside the same step in Hugging Face transformers + peft on PyTorch CPU,
measured in the same run with interleaved rounds (this VM's timings drift by ±25 %).

  python3 bench/cpu_train_step.py --bench target/release/lpeft-bench [--rounds 2] [--peft lora-qv lora-all]
      [--backend flex ndarray tch]   (ndarray / tch: a bench built with those features)

Prints a markdown table of medians and the ratio ours/theirs (time per step; > 1 means slower).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="target/release/lpeft-bench")
    ap.add_argument("--backend", nargs="+", default=["flex"],
                    help="one or more of the bench binary's CPU backends (flex, ndarray, tch)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--shape", default="minilm")
    ap.add_argument("--peft", nargs="+", default=["lora-qv"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args()
    rows = {}
    for r in range(a.rounds):
        for peft in a.peft:
            common = ["--shape", a.shape, "--peft", peft, "--batch", str(a.batch), "--seq", str(a.seq), "--iters", str(a.iters)]
            for backend in a.backend:
                for rec in run([a.bench, "--backend", backend, *common]):
                    rows.setdefault((peft, backend), []).extend(rec["times_s"])
            for rec in run([a.python, os.path.join(HERE, "peers", "hf_peft_train_step.py"), *common]):
                rows.setdefault((peft, "peer"), []).extend(rec["times_s"])
                torch_version = rec["torch"]
            print(f"round {r + 1}/{a.rounds} {peft} done", file=sys.stderr)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\nMiniLM-shaped encoder ({a.shape}), batch {a.batch}, seq {a.seq}, train step = forward + backward + AdamW (clip 1.0),")
    print(f"{a.rounds} interleaved rounds x {a.iters} timed steps each; peer: transformers + peft on torch {torch_version} CPU.\n")
    print("| PEFT | " + " | ".join(f"lightpeft {b} s/step (ours/peer)" for b in a.backend) + " | HF peft (torch CPU) s/step |")
    print("|---|" + "---|" * (len(a.backend) + 1))
    for peft in a.peft:
        peer = med(rows[(peft, "peer")])
        ours = [med(rows[(peft, b)]) for b in a.backend]
        print(f"| {peft} | " + " | ".join(f"{o:.3f} ({o / peer:.2f})" for o in ours) + f" | {peer:.3f} |")


if __name__ == "__main__":
    main()
