#!/usr/bin/env python3
"""The table of docs/fidelity.md's RTE-gap section, from what tools/gpu/rte_gap.sh brought back.

    python3 tools/gpu/rte_gap_table.py docs/results/fidelity/rte-gap/call-*

Each folder holds ours-VARIANT-sSEED.log (whose RAN line names the fine-tune's key),
results.tar.xz (the fine-tunes' result.json by key) and peer-VARIANT.jsonl. Prints, per variant
and side, every seed's best dev accuracy, the mean ± sample standard deviation, and ours against
the peer of the same variant (difference of means, Welch's t). Variants that only change our
implementation of the recipe (`plain`, `unfused`) have no peer run of their own: their rows are
compared with the peer's `base`, marked "vs base".
"""
import glob
import json
import os
import re
import statistics as st
import sys

# The results.tar.xz reader and Welch's t are tools/peer_table.py's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import peer_table  # noqa: E402


def ours(folder):
    """{variant: {seed: score}} of our runs in one call's folder."""
    scores = {}
    results = peer_table.results_by_key(os.path.join(folder, "results.tar.xz"))
    for log in glob.glob(os.path.join(folder, "ours-*-s*.log")):
        variant, seed = re.match(r"ours-(.+)-s(\d+)\.log$", os.path.basename(log)).groups()
        for line in open(log):
            words = line.split()
            if words[:1] == ["RAN"] and words[1].startswith("ft-rte-"):
                scores.setdefault(variant, {})[int(seed)] = results[words[2]]["best_main_score"]
    return scores


def peer(folder):
    scores = {}
    for path in glob.glob(os.path.join(folder, "peer-*.jsonl")):
        variant = os.path.basename(path)[len("peer-"):-len(".jsonl")]
        for line in open(path):
            r = json.loads(line)
            scores.setdefault(variant, {})[r["seed"]] = r["best_main_score"]
    return scores


def merge(into, more):
    for variant, by_seed in more.items():
        into.setdefault(variant, {}).update(by_seed)


def summary(by_seed):
    v = [100 * by_seed[s] for s in sorted(by_seed)]
    sd = st.stdev(v) if len(v) > 1 else float("nan")
    return v, st.mean(v), sd


def gap_and_t(ours_row, peer_row):
    (ov, om, osd), (pv, pm, psd) = ours_row, peer_row
    gap, t = f"{om - pm:+.2f}", ""
    if len(pv) > 1 and len(ov) > 1:
        t = f"{peer_table.welch_t(om, osd, len(ov), pm, psd, len(pv)):.2f}"
    return gap, t


def main(folders):
    sides = {"ours": {}, "peer": {}}
    for f in folders:
        merge(sides["ours"], ours(f))
        merge(sides["peer"], peer(f))
    print("| variant | side | seeds | best dev accuracy ×100, by seed | mean ± std | ours − peer | Welch t |")
    print("|---|---|---|---|---|---|---|")
    for variant in sorted(set(sides["ours"]) | set(sides["peer"])):
        rows = {}
        for side in ("ours", "peer"):
            by_seed = sides[side].get(variant)
            if not by_seed:
                continue
            v, mean, sd = summary(by_seed)
            rows[side] = (v, mean, sd)
            seeds = ",".join(str(s) for s in sorted(by_seed))
            gap = t = ""
            if side == "peer" and "ours" in rows:
                gap, t = gap_and_t(rows["ours"], rows["peer"])
            elif side == "ours" and variant not in sides["peer"] and sides["peer"].get("base"):
                gap, t = gap_and_t(rows["ours"], summary(sides["peer"]["base"]))
                gap += " vs base"
            print(f"| {variant} | {side} | {seeds} | {', '.join(f'{x:.2f}' for x in v)} "
                  f"| {mean:.2f} ± {sd:.2f} (n={len(v)}) | {gap} | {t} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
