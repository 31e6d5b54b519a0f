#!/usr/bin/env python3
"""Which kernels one training step runs more of than another, from two of
bench/profile_step.py's per-step tables (`--out DIR` writes them as DIR/<side>-<setting>.md).

  python3 bench/kernel_diff.py ESTIMATE.md FINETUNE.md [--top 12]

Prints, per kernel name, the difference in GPU time and in launches per step (first minus
second), largest first, as a markdown table; the totals of both first.
"""
import argparse
import re

ROW = re.compile(r"^\| `(.*)` \| ([\d.]+) \| ([\d.]+) \|")


def kernels(path):
    """Per-step (count, ms) by kernel name, from the table under the `## kernels` heading."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            if line.startswith("## "):
                section = line[3:].strip()
                continue
            m = ROW.match(line)
            if m and section and section.startswith("kernels"):
                out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    if not out:
        raise SystemExit(f"{path}: no `## kernels` table of profile_step.py found")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    x, y = kernels(a.first), kernels(a.second)
    total = lambda k: sum(ms for _, ms in k.values())
    print(f"kernel time per step: {total(x):.3f} ms against {total(y):.3f} ms (tables' rows)\n")
    print("| kernel | Δ ms | Δ launches |\n|---|---|---|")
    rows = []
    for name in set(x) | set(y):
        (cx, mx), (cy, my) = x.get(name, (0, 0)), y.get(name, (0, 0))
        rows.append((mx - my, cx - cy, name))
    for dms, dn, name in sorted(rows, reverse=True)[: a.top]:
        print(f"| `{name[:110]}` | {dms:+.3f} | {dn:+.0f} |")


if __name__ == "__main__":
    main()
