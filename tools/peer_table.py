#!/usr/bin/env python3
"""Our LoRA(all) against the HF peer, task by task, over every peer seed on record.

    python3 tools/peer_table.py --ours docs/results/fidelity/final/results.json \
        [--ours-logs 'CALL/run-*.log']... PEER.jsonl...

Reads our rows (method lora-all: mean, sample std and seeds per task, from `lpeft report`'s
results.json). `--ours-logs` adds our runs one by one from what a GPU call brought back: the
RAN lines of `lpeft run` logs name each fine-tune's key, and results.tar.xz beside the log
holds KEY/result.json; a task with runs there takes its seeds from them (every seed found
across the logs, the last log's run where a seed repeats) instead of from results.json. The
peer's records (bench/peers/hf_peft_glue.py, one JSON line a run).
Peer records are kept only on the recipe of docs/fidelity.md (LoRA dropout 0.05, fp32, full
data); one record per (task, seed): the peer is deterministic for a seed, so a repeat must give
the same score, and a repeat that does not is an error. Prints a markdown table: the peer's
seeds and mean ± sample std, ours, the difference of means and Welch's t.
"""
import argparse
import glob
import io
import json
import math
import os
import re
import tarfile
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


def results_by_key(tar_path):
    """{12-hex key prefix: result.json} of a call's results.tar.xz (KEY/result.json members)."""
    out = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            if m.name.endswith("/result.json"):
                out[m.name.split("/")[-2][:12]] = json.load(io.TextIOWrapper(tar.extractfile(m)))
    return out


def our_runs(patterns):
    """{task: {seed: (score, key)}} of our LoRA(all) fine-tunes named in the logs."""
    runs, results = {}, {}
    for pattern in patterns:
        logs = sorted(glob.glob(pattern))
        if not logs:
            sys.exit(f"--ours-logs {pattern}: no such files")
        for log in logs:
            folder = os.path.dirname(log)
            if folder not in results:
                tar_path = os.path.join(folder, "results.tar.xz")
                results[folder] = results_by_key(tar_path) if os.path.exists(tar_path) else {}
            for line in open(log):
                w = line.split()
                m = re.fullmatch(r"ft-(\w+)-lora-all-s(\d+)", w[1]) if w[:1] == ["RAN"] and len(w) > 2 else None
                if not m:
                    continue
                r = results[folder].get(w[2])
                if r is None:
                    sys.exit(f"{log}: {w[1]} ran as {w[2]}, which {folder}/results.tar.xz does not hold")
                runs.setdefault(f"glue/{m[1]}", {})[int(m[2])] = (r["best_main_score"], w[2])
    return runs


def welch_t(m1, s1, n1, m2, s2, n2):
    se = math.sqrt(s1 * s1 / n1 + s2 * s2 / n2) if n1 > 1 and n2 > 1 else 0.0
    return (m1 - m2) / se if se > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True, help="results.json of `lpeft report`")
    ap.add_argument("--ours-logs", action="append", default=[], metavar="GLOB",
                    help="`lpeft run` logs of a GPU call (results.tar.xz beside them); repeatable")
    ap.add_argument("peer", nargs="+", help="JSON lines of bench/peers/hf_peft_glue.py")
    a = ap.parse_args()
    rows = {r["task"]: r for r in json.load(open(a.ours))["rows"] if r["method"] == "lora-all"}
    for task, seeds in our_runs(a.ours_logs).items():
        scores = [v for v, _ in seeds.values()]
        rows[task] = {
            "seeds": sorted(seeds),
            "main_score": {"mean": st.mean(scores), "std": st.stdev(scores) if len(scores) > 1 else 0.0},
        }
    peer = peer_scores(a.peer)
    print("| task | peer seeds | peer | our seeds | ours | ours − peer | Welch t |")
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
        ours_seeds = ",".join(str(s) for s in r["seeds"])
        seeds = ",".join(str(s) for s in sorted(peer.get(task, {})))
        if not p:
            print(f"| {task} | none | — | {ours_seeds} | {om:.2f} ± {osd:.2f} | | |")
            continue
        t = welch_t(om, osd, on, pm, ps, len(p))
        t = "—" if math.isnan(t) else f"{t:+.2f}"
        print(f"| {task} | {seeds} | {pm:.2f} ± {ps:.2f} | {ours_seeds} | {om:.2f} ± {osd:.2f} | {om - pm:+.2f} | {t} |")


if __name__ == "__main__":
    main()
