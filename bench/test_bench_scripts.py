"""Unit tests of the benchmark scripts' arithmetic (no torch, no GPU): the numbers in
docs/benchmarks.md come from these functions. Run: python3 -m unittest discover -s bench."""
import contextlib
import io
import json
import os
import sys
import tempfile
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_bench  # noqa: E402
import profile_step  # noqa: E402


def x(name, cat, ts, dur, tid=1):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "tid": tid, "pid": 1}


class ProfileStep(unittest.TestCase):
    def test_union_merges_overlaps_and_nesting(self):
        self.assertEqual(profile_step.intervals_union([]), 0.0)
        self.assertEqual(profile_step.intervals_union([(0, 10), (5, 12), (20, 25), (21, 22)]), 17.0)

    def test_summary_per_step(self):
        trace = {"traceEvents": [
            # two profiled steps (CPU marks) and Kineto's GPU copy of one, which must not count
            x("ProfilerStep#3", "user_annotation", 0, 100),
            x("ProfilerStep#4", "user_annotation", 100, 100),
            x("ProfilerStep#3", "gpu_user_annotation", 0, 100),
            # operators: two top-level, one nested inside the first, one on another thread
            x("aten::mm", "cpu_op", 10, 20),
            x("aten::empty", "cpu_op", 12, 2),
            x("aten::add", "cpu_op", 40, 5),
            x("aten::mul", "cpu_op", 10, 5, tid=2),
            x("cudaLaunchKernel", "cuda_runtime", 11, 1),
            x("cudaLaunchKernel", "cuda_runtime", 41, 1),
            x("gemm", "kernel", 20, 30),
            x("add", "kernel", 40, 20),  # overlaps the gemm by 10
            x("Memcpy HtoD", "gpu_memcpy", 150, 10),
            x("not complete", "kernel", 0, 5) | {"ph": "B"},
        ]}
        s, tables = profile_step.summarize(trace, 2)
        self.assertEqual(s["steps"], 2)
        self.assertEqual(s["wall_ms"], 0.1)  # 200 µs over 2 steps
        self.assertEqual(s["kernels"], 1.0)
        self.assertEqual(s["kernel_ms"], 0.025)
        self.assertEqual(s["gpu_busy_ms"], 0.025)  # (40 merged + 10 copy) / 2 steps
        self.assertEqual(s["launches"], 1.0)
        self.assertEqual(s["ops_top_level"], 1.5)
        self.assertEqual(s["ops_all"], 2.0)
        self.assertEqual(s["gpu_busy_fraction"], 0.25)
        names = [row[0] for row in tables["top-level operators"]]
        self.assertEqual(sorted(names), ["aten::add", "aten::mm", "aten::mul"])

    def test_table_rescales_to_profiled_steps(self):
        rec = {"side": "ours", "shape": "s", "peft": "p", "precision": "tf32", "steps": 10,
               "kernels": 100.0, "gpu_busy_ms": 2.5, "ops_top_level": 300.0}
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "run-a"))
            path = os.path.join(d, "run-a", "summary.jsonl")
            with open(path, "w") as f:
                f.write(json.dumps(rec) + "\n")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                profile_step.table([path], 5)
            self.assertIn("| run-a | ours | s | p | tf32 | 200 | 5.0 | 600 |", out.getvalue())
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                profile_step.table([path], None)
            self.assertIn("| 100 | 2.5 | 300 |", out.getvalue())


class GpuBench(unittest.TestCase):
    def test_medians_ratios_and_round_range(self):
        def rec(impl, phase, rnd, eps, mib):
            return {"impl": impl, "phase": phase, "round": rnd, "shape": "roberta-base", "peft": "lora-qv",
                    "precision": "bf16", "examples_per_s": eps, "peak_mib": mib, "gpu": "H200", "torch": "2.11"}
        records = [
            rec("lightpeft", "train", 0, 300.0, 900), rec("hf-peft", "train", 0, 100.0, 1000),
            rec("lightpeft", "train", 1, 200.0, 900), rec("hf-peft", "train", 1, 100.0, 1000),
            rec("lightpeft", "inference", 0, 50.0, 900), rec("hf-peft", "inference", 0, 25.0, 1000),
        ]
        a = types.SimpleNamespace(batch=32, seq=128, iters=20, warmup=5, shapes=["roberta-base"],
                                  peft=["lora-qv"], precision=["bf16"])
        table = gpu_bench.markdown(records, a)
        self.assertIn("median over 2 rounds", table)
        row = [line for line in table.splitlines() if line.startswith("| roberta-base")][0]
        # train: median(300, 200) = 250 against 100; per round 2.00 and 3.00; memory 0.90
        self.assertEqual(row, "| roberta-base | lora-qv | bf16 | 250 | 100 | 2.50 | 2.00–3.00 | 50 | 25 | 2.00 "
                              "| 900 | 1000 | 0.90 |")


if __name__ == "__main__":
    unittest.main()
