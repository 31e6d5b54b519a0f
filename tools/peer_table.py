#!/usr/bin/env python3
"""Our LoRA(all) against the HF peer, task by task, over every peer seed on record.

    python3 tools/peer_table.py --ours docs/results/fidelity/final/results.json PEER.jsonl...

Reads our rows (method lora-all: mean, sample std and seeds per task, from `lpeft report`'s
results.json) and the peer's records (bench/peers/hf_peft_glue.py, one JSON line a run).
Peer records are kept only on the recipe of docs/fidelity.md (LoRA dropout 0.05, fp32, full
data); one record per (task, seed): the peer is deterministic for a seed, so a repeat must give
the same score, and a repeat that does not is an error. Prints a markdown table: the peer's
seeds and mean ± sample std, ours, the difference of means and Welch's t.
"""
import argparse
import json
import math
import statistics as st
import sys

RECIPE = {"dropout": 0.05, "tf32": False, "lr": 3e-4, "batch_size": 32, "rank": 8, "alpha": 16.0}


def peer_scores(paths):
    """{task: {seed: score}} of the peer's runs on the recipe."""
    scores = {}
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not a JSON line ({e})")
                recipe = r.get("recipe", {})
                if r.get("method") != "lora-all" or r.get("limit") is not None or recipe.get("bf16"):
                    continue
                if any(recipe.get(k) != v for k, v in RECIPE.items()):
                    continue
                seeds = scores.setdefault(r["task"], {})
                old = seeds.get(r["seed"])
                if old is not None and abs(old - r["best_main_score"]) > 1e-9:
                    sys.exit(f"{path}:{n}: {r['task']} seed {r['seed']} scored {r['best_main_score']}, "
                             f"an earlier record of the same seed {old}")
                seeds[r["seed"]] = r["best_main_score"]
    return scores


def welch_t(m1, s1, n1, m2, s2, n2):
    se = math.sqrt(s1 * s1 / n1 + s2 * s2 / n2) if n1 > 1 and n2 > 1 else 0.0
    return (m1 - m2) / se if se > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True, help="results.json of `lpeft report`")
    ap.add_argument("peer", nargs="+", help="JSON lines of bench/peers/hf_peft_glue.py")
    a = ap.parse_args()
    rows = {r["task"]: r for r in json.load(open(a.ours))["rows"] if r["method"] == "lora-all"}
    peer = peer_scores(a.peer)
    print("| task | peer seeds | peer | ours seeds | ours | ours − peer | Welch t |")
    print("|---|---|---|---|---|---|---|")
    for task in sorted(set(rows) | set(peer)):
        p = [100 * v for _, v in sorted(peer.get(task, {}).items())]
        pm = st.mean(p) if p else float("nan")
        ps = st.stdev(p) if len(p) > 1 else 0.0
        r = rows.get(task)
        if r is None:
            print(f"| {task} | {len(p)} | {pm:.2f} ± {ps:.2f} | — | not run | | |")
            continue
        om, osd, on = 100 * r["main_score"]["mean"], 100 * r["main_score"]["std"], len(r["seeds"])
        seeds = ",".join(str(s) for s in sorted(peer.get(task, {})))
        if not p:
            print(f"| {task} | none | — | {on} | {om:.2f} ± {osd:.2f} | | |")
            continue
        t = welch_t(om, osd, on, pm, ps, len(p))
        t = "—" if math.isnan(t) else f"{t:+.2f}"
        print(f"| {task} | {seeds} | {pm:.2f} ± {ps:.2f} | {on} | {om:.2f} ± {osd:.2f} | {om - pm:+.2f} | {t} |")


if __name__ == "__main__":
    main()
