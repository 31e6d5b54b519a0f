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
import pipeline_speed  # noqa: E402
import profile_step  # noqa: E402
import random_checkpoint  # noqa: E402


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


    def test_opt_rows_get_a_task_column_and_old_records_are_seq_cls(self):
        def rec(impl, task, eps, mib):
            r = {"impl": impl, "phase": "train", "shape": "opt-6.7b", "peft": "lora-all",
                 "precision": "bf16-pure", "examples_per_s": eps, "peak_mib": mib, "gpu": "H200"}
            if task:
                r["task"] = task
            return r
        records = [rec("lightpeft", None, 30.0, 60000), rec("hf-peft", "seq-cls", 20.0, 80000),
                   rec("lightpeft", "causal-lm", 24.0, 70000), rec("hf-peft", "causal-lm", 12.0, 70000)]
        a = types.SimpleNamespace(batch=16, seq=256, iters=10, warmup=3, shapes=["opt-6.7b"],
                                  peft=["lora-all"], precision=["bf16-pure"], tasks=["seq-cls", "causal-lm"])
        lines = gpu_bench.markdown(records, a).splitlines()
        self.assertTrue(lines[2].startswith("| shape | task | PEFT |"), lines[2])
        self.assertEqual(lines[3].count("|"), lines[2].count("|"))
        rows = [line for line in lines if line.startswith("| opt-6.7b")]
        self.assertEqual(rows, [
            "| opt-6.7b | seq-cls | lora-all | bf16-pure | 30 | 20 | 1.50 | n/a | n/a | n/a | 60000 | 80000 | 0.75 |",
            "| opt-6.7b | causal-lm | lora-all | bf16-pure | 24 | 12 | 2.00 | n/a | n/a | n/a | 70000 | 70000 | 1.00 |",
        ])
        self.assertEqual(gpu_bench.PEER_PRECISION["bf16-pure"], "bf16-pure")


def stage(key, kind, wall, inputs=(), **extra):
    s = {"key": key, "kind": kind, "name": key, "inputs": {f"in{i}": k for i, k in enumerate(inputs)},
         "manifest": {"wall_seconds": wall, "figures": extra.pop("figures", {})}}
    s.update(extra)
    return s


def finetune(key, method, wall, train_s, peak, inputs):
    result = {"task": "glue/stsb", "method": method, "seed": 1, "best_main_score": 0.8,
              "efficiency": {"train_seconds_per_step": train_s / 100, "peak_memory_bytes": peak,
                             "memory_kind": "nvml", "trainable_params": 1, "backbone_pruned_pct": 0,
                             "backend": "tch-cuda"}}
    return stage(key, "finetune", wall, inputs, result=result, train_seconds=train_s)


class PipelineSpeed(unittest.TestCase):
    def stages(self):
        return [
            stage("d", "data", 5.0),
            finetune("v", "lora-all", 20.0, 16.0, 1000, ["d"]),
            stage("e", "estimate", 3.0, ["d"], figures={"steps": 180, "seconds_per_step": 0.012}),
            stage("s", "surgery", 1.0, ["e"]),
            finetune("l", "light-r2", 11.0, 8.0, 600, ["d", "s"]),
        ]

    def test_arms_sum_the_stages_each_fine_tune_came_from(self):
        recs = {r["method"]: r for r in pipeline_speed.arms(self.stages())}
        self.assertEqual(recs["lora-all"]["total_seconds"], 20.0)  # data left out
        self.assertEqual(recs["light-r2"]["total_seconds"], 15.0)  # 3 + 1 + 11
        self.assertEqual(recs["light-r2"]["stage_seconds"],
                         {"finetune": 11.0, "data": 5.0, "surgery": 1.0, "estimate": 3.0})
        self.assertEqual(recs["light-r2"]["estimate_steps"], 180)
        self.assertNotIn("estimate_steps", recs["lora-all"])

    def test_compare_gives_the_ratios_and_the_peer(self):
        peers = [{"task": "glue/stsb", "method": "lora-all", "seed": 1, "train_seconds": 40.0,
                  "wall_seconds": 50.0, "peak_allocated_mib": 900}]
        (row,) = pipeline_speed.compare(pipeline_speed.arms(self.stages()), peers, "minilm")
        self.assertEqual(row["total_ratio"], 0.75)
        self.assertEqual(row["memory_ratio"], 0.6)
        self.assertEqual(row["finetune_speedup"], 2.0)
        self.assertAlmostEqual(row["estimate_step_over_finetune_step"], 0.012 / 0.16)
        self.assertEqual(row["peer_train_over_ours"], 2.5)
        self.assertEqual(row["peer_wall_over_ours"], 2.5)
        text = pipeline_speed.table([row])
        self.assertIn("| glue/stsb | light-r2 | 20.0 | 3.0 + 1.0 + 11.0 = 15.0 | 0.75 | 0.60 | 0.07 | — | 2.00× | 2.50× | — |", text)
        self.assertNotIn("meaningless", text)
        row["light"]["random_weights"] = "roberta-base"
        self.assertIn("roberta-base shape: timings only", pipeline_speed.table([row]))

    def test_graph_captures_of_the_estimation_are_shown_where_recorded(self):
        stages = self.stages()
        stages[2]["manifest"]["figures"].update(graph_captures=9, graph_capture_seconds=1.26)
        recs = {r["method"]: r for r in pipeline_speed.arms(stages)}
        self.assertEqual((recs["light-r2"]["estimate_graph_captures"],
                          recs["light-r2"]["estimate_capture_seconds"]), (9, 1.26))
        (row,) = pipeline_speed.compare(list(recs.values()))
        self.assertTrue(pipeline_speed.table([row]).splitlines()[2].endswith("| 9 in 1.3 s |"))


    def test_steps_after_the_first_read_window_give_the_steady_ratio(self):
        stages = self.stages()
        stages[1]["step_seconds"] = [0.03] * 50 + [0.010] * 100   # vanilla fine-tune
        stages[2]["step_seconds"] = [0.05] * 50 + [0.012] * 26    # estimation
        stages[4]["step_seconds"] = [0.04] * 40                   # too short: no steady figure
        recs = {r["method"]: r for r in pipeline_speed.arms(stages)}
        self.assertAlmostEqual(recs["lora-all"]["finetune_steady_s_per_step"], 0.010)
        self.assertIsNone(recs["light-r2"]["finetune_steady_s_per_step"])
        (row,) = pipeline_speed.compare(list(recs.values()))
        self.assertAlmostEqual(row["estimate_step_over_finetune_step_steady"], 1.2)
        self.assertIn("| 0.07 | 1.20 | 2.00× |", pipeline_speed.table([row]))

    def test_phase_table_splits_the_stages_that_recorded_it(self):
        stages = self.stages()
        self.assertIsNone(pipeline_speed.phase_table(
            pipeline_speed.compare(pipeline_speed.arms(stages))))
        ph = lambda load, steps, ev, write: {"load": load, "steps": steps, "eval": ev, "write": write}
        stages[1]["manifest"]["figures"]["phase_seconds"] = ph(4.0, 12.0, 2.5, 0.5)
        stages[2]["manifest"]["figures"]["phase_seconds"] = {"load": 1.5, "steps": 1.0, "write": 0.2}
        stages[3]["manifest"]["figures"]["phase_seconds"] = {"load": 0.5, "prune": 0.25, "write": 0.125}
        (row,) = pipeline_speed.compare(pipeline_speed.arms(stages))
        self.assertEqual(pipeline_speed.phase_table([row]).splitlines()[2:], [
            "| glue/stsb | vanilla | finetune | 20.0 | 4.0 | 12.0 | 2.5 | 0.5 | 1.0 |",
            "| glue/stsb | light-r2 | estimate | 3.0 | 1.5 | 1.0 | 0.0 | 0.2 | 0.3 |",
            "| glue/stsb | light-r2 | surgery | 1.0 | 0.5 | 0.2 | 0.0 | 0.1 | 0.1 |",
        ])


class RandomCheckpoint(unittest.TestCase):
    def test_shapes_and_marker(self):
        cfg = random_checkpoint.bert_config("roberta-base", 30522)
        self.assertEqual((cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
                          cfg["intermediate_size"]), (12, 768, 12, 3072))
        self.assertEqual(cfg["lightpeft_random_weights"], "roberta-base")
        self.assertEqual(random_checkpoint.bert_config("roberta-large", 5)["intermediate_size"], 4096)


if __name__ == "__main__":
    unittest.main()
