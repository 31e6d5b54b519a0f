"""Whole-pipeline timing: vanilla LoRA(all) against Light-PEFT (estimate + surgery + fine-tune)
from the stages' manifests in the store, beside the HF PEFT peer's vanilla fine-tune.

    lpeft plan pipelines/speed.ron --backend tch-cuda --json > plan.json
    python3 bench/pipeline_speed.py --plan plan.json --store artifacts \
        [--peer peer.jsonl] [--label minilm] [--out records.jsonl]

Every figure comes from what the stages recorded: `wall_seconds` of each manifest (the stage
from start to publish: model load, training, evaluation, writing), the fine-tune's own step
times (`curve.json`) and peak memory (`result.json`: device memory on a GPU), the estimation's
step time (its figures). The step columns "after step 50" leave out the first 50 steps (the
trainer's first read window: CUDA's warm-up, the first graph captures), which a short
estimation cannot spread thin. Prints one table per call and appends one JSON line per task and
seed to `--out`. Pure functions (`arms`, `compare`) are unit-tested in test_bench_scripts.py.
"""
import argparse
import json
import os
import sys

VANILLA = "lora-all"
# Steps of the first read window of the trainer (lpeft_estimate::READ_EVERY): a curve's step
# seconds are that window's average.
WARM_STEPS = 50


def load_stage(store, stage):
    """A plan stage with its manifest and, for a fine-tune, its result and curve; None when the
    stage is not in the store (a call that ran part of the pipeline)."""
    d = os.path.join(store, "objects", stage["key"])
    path = os.path.join(d, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        out = dict(stage, manifest=json.load(f))
    out["random_weights"] = random_weights(out["manifest"])
    if stage["kind"] == "finetune":
        with open(os.path.join(d, "result.json"), encoding="utf-8") as f:
            out["result"] = json.load(f)
    curve = os.path.join(d, "curve.json")
    if stage["kind"] in ("finetune", "estimate") and os.path.exists(curve):
        with open(curve, encoding="utf-8") as f:
            out["step_seconds"] = [r["seconds"] for r in json.load(f)]
        out["train_seconds"] = sum(out["step_seconds"])
    return out


def steady_s_per_step(stage):
    """Mean step seconds after the first WARM_STEPS steps; None without a curve that long."""
    steps = stage.get("step_seconds", [])[WARM_STEPS:]
    return sum(steps) / len(steps) if steps else None


def random_weights(manifest):
    """The shape name when the stage's model is a `bench/random_checkpoint.py` checkpoint."""
    for f in manifest.get("external_files", []):
        if os.path.basename(f["path"]) == "config.json" and os.path.exists(f["path"]):
            with open(f["path"], encoding="utf-8") as c:
                shape = json.load(c).get("lightpeft_random_weights")
            if shape:
                return shape
    return None


def arms(stages):
    """One record per fine-tune: its method, task, seed, and the wall seconds of every stage
    it was made from (data, estimate, surgery, finetune), found through the inputs."""
    by_key = {s["key"]: s for s in stages}
    out = []
    for ft in (s for s in stages if s["kind"] == "finetune"):
        walls, phases, seen, todo = {}, {}, set(), [ft["key"]]
        est, random = None, None
        while todo:
            key = todo.pop()
            if key in seen or key not in by_key:
                continue
            seen.add(key)
            s = by_key[key]
            walls[s["kind"]] = walls.get(s["kind"], 0.0) + s["manifest"]["wall_seconds"]
            ph = (s["manifest"].get("figures") or {}).get("phase_seconds")
            if ph is not None:
                phases[s["kind"]] = ph
            if s["kind"] == "estimate":
                est = s
            random = random or s.get("random_weights")
            todo.extend(s["inputs"].values())
        r = ft["result"]
        eff = r["efficiency"]
        rec = {
            "task": r["task"],
            "method": r["method"],
            "seed": r["seed"],
            "stage_seconds": walls,
            # Stages that split their wall time (load, steps, eval, write; newer binaries).
            "phase_seconds": phases,
            # Training the method costs everything but the shared data preparation.
            "total_seconds": sum(v for k, v in walls.items() if k != "data"),
            "finetune_train_seconds": ft["train_seconds"],
            "finetune_s_per_step": eff["train_seconds_per_step"],
            "finetune_steady_s_per_step": steady_s_per_step(ft),
            "peak_memory_bytes": eff["peak_memory_bytes"],
            "memory_kind": eff["memory_kind"],
            "trainable_params": eff["trainable_params"],
            "backbone_pruned_pct": eff["backbone_pruned_pct"],
            "best_main_score": r["best_main_score"],
            "backend": eff["backend"],
            "random_weights": random,
        }
        if est is not None:
            fig = est["manifest"]["figures"]
            rec["estimate_steps"] = fig["steps"]
            rec["estimate_s_per_step"] = fig["seconds_per_step"]
            rec["estimate_steady_s_per_step"] = steady_s_per_step(est)
            if "graph_captures" in fig:
                # Steps captured as CUDA graphs, and their host seconds (inside the above).
                rec["estimate_graph_captures"] = fig["graph_captures"]
                rec["estimate_capture_seconds"] = fig["graph_capture_seconds"]
        out.append(rec)
    return out


def compare(records, peers=(), label=""):
    """Light-PEFT against vanilla per task and seed (and against the peer's vanilla)."""
    out = []
    vanilla = {(r["task"], r["seed"]): r for r in records if r["method"] == VANILLA}
    peer = {(p["task"], p["seed"]): p for p in peers if p.get("method") == VANILLA}
    for light in (r for r in records if r["method"] != VANILLA):
        v = vanilla.get((light["task"], light["seed"]))
        if v is None:
            continue
        row = {
            "label": label,
            "task": light["task"],
            "seed": light["seed"],
            "method": light["method"],
            "vanilla": v,
            "light": light,
            "total_ratio": light["total_seconds"] / v["total_seconds"],
            "memory_ratio": light["peak_memory_bytes"] / max(1, v["peak_memory_bytes"]),
            "finetune_speedup": v["finetune_train_seconds"] / light["finetune_train_seconds"],
        }
        if "estimate_s_per_step" in light:
            row["estimate_step_over_finetune_step"] = (
                light["estimate_s_per_step"] / v["finetune_s_per_step"]
            )
        est_steady, ft_steady = light.get("estimate_steady_s_per_step"), v.get("finetune_steady_s_per_step")
        if est_steady and ft_steady:
            row["estimate_step_over_finetune_step_steady"] = est_steady / ft_steady
        p = peer.get((light["task"], light["seed"]))
        if p is not None:
            row["peer"] = {k: p[k] for k in ("train_seconds", "wall_seconds", "peak_allocated_mib")}
            row["peer_train_over_ours"] = p["train_seconds"] / v["finetune_train_seconds"]
            row["peer_wall_over_ours"] = p["wall_seconds"] / v["stage_seconds"]["finetune"]
        out.append(row)
    return out


def table(rows):
    head = ("| task | Light-PEFT cut | vanilla: fine-tune s | Light-PEFT: estimate + surgery + fine-tune s | "
            "total ratio | peak memory ratio | est. step / ft step | the same after step 50 | "
            "ft speed-up (pruned) | HF peer train s / ours | estimation's graph captures |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        v, lt = r["vanilla"], r["light"]
        s = lt["stage_seconds"]
        peer = f"{r['peer_train_over_ours']:.2f}×" if "peer_train_over_ours" in r else "—"
        est = r.get("estimate_step_over_finetune_step")
        steady = r.get("estimate_step_over_finetune_step_steady")
        caps = (f"{lt['estimate_graph_captures']} in {lt['estimate_capture_seconds']:.1f} s"
                if "estimate_graph_captures" in lt else "—")
        lines.append(
            f"| {r['task']} | {r['method']} | {v['total_seconds']:.1f} | {s.get('estimate', 0):.1f} + "
            f"{s.get('surgery', 0):.1f} + {s.get('finetune', 0):.1f} = {lt['total_seconds']:.1f} | "
            f"{r['total_ratio']:.2f} | {r['memory_ratio']:.2f} | "
            f"{'—' if est is None else f'{est:.2f}'} | {'—' if steady is None else f'{steady:.2f}'} | "
            f"{r['finetune_speedup']:.2f}× | {peer} | {caps} |"
        )
    shapes = sorted({r["light"]["random_weights"] or r["vanilla"]["random_weights"] for r in rows} - {None})
    if shapes:
        lines.append(f"\nRandom weights of the {', '.join(shapes)} shape: timings only, every score is meaningless.")
    return "\n".join(lines)


def phase_table(rows):
    """Where each stage's wall time went, for the stages that recorded it (newer binaries):
    `load` (inputs read, model built), `steps` (training steps; the surgery's pruning and
    rebuilding), `eval`, `write`, and `rest`, the wall time outside them (the store's hashing
    and publishing, the trainer's work between timed steps). None when no stage recorded it."""
    lines = ["| task | arm | stage | wall s | load | steps (surgery: prune) | eval | write | rest |",
             "|" + "---|" * 9]
    for r in rows:
        for arm, rec in (("vanilla", r["vanilla"]), (r["method"], r["light"])):
            for kind in ("estimate", "surgery", "finetune"):
                ph = rec.get("phase_seconds", {}).get(kind)
                if ph is None:
                    continue
                wall = rec["stage_seconds"][kind]
                load, work = ph.get("load", 0.0), ph.get("steps", ph.get("prune", 0.0))
                ev, write = ph.get("eval", 0.0), ph.get("write", 0.0)
                lines.append(
                    f"| {r['task']} | {arm} | {kind} | {wall:.1f} | {load:.1f} | {work:.1f} | "
                    f"{ev:.1f} | {write:.1f} | {wall - load - work - ev - write:.1f} |"
                )
    return "\n".join(lines) if len(lines) > 2 else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", required=True, help="`lpeft plan --json` output")
    ap.add_argument("--store", default="artifacts")
    ap.add_argument("--peer", help="JSON lines of bench/peers/hf_peft_glue.py")
    ap.add_argument("--label", default="", help="names the run in the records (e.g. the shape)")
    ap.add_argument("--out", help="JSON lines file to append the comparisons to")
    args = ap.parse_args(argv)
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)
    loaded = [(s["name"], load_stage(args.store, s)) for s in plan["stages"]]
    missing = [name for name, s in loaded if s is None]
    if missing:
        print(f"not in the store (left out): {', '.join(missing)}", file=sys.stderr)
    stages = [s for _, s in loaded if s is not None]
    peers = []
    if args.peer and os.path.exists(args.peer):
        with open(args.peer, encoding="utf-8") as f:
            peers = [json.loads(line) for line in f if line.strip()]
    rows = compare(arms(stages), peers, args.label)
    print(table(rows))
    phases = phase_table(rows)
    if phases:
        print("\nWhere each stage's time went (seconds):\n\n" + phases)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
