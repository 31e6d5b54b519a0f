"""tools/peer_table.py: peer records filtered to the recipe, repeats checked, our runs from logs."""

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import peer_table  # noqa: E402

RECIPE = {"lr": 3e-4, "batch_size": 32, "rank": 8, "alpha": 16.0, "dropout": 0.05, "tf32": False}


def record(task, seed, score, **recipe):
    return {"task": task, "method": "lora-all", "seed": seed, "best_main_score": score,
            "recipe": {**RECIPE, **recipe}}


class PeerTableTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def write_lines(self, name, records):
        with open(self.path(name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        return self.path(name)

    def test_only_the_recipe_counts_and_a_repeat_must_agree(self):
        a = self.write_lines("a.jsonl", [record("glue/rte", 1, 0.6), record("glue/rte", 2, 0.7, dropout=0.0)])
        b = self.write_lines("b.jsonl", [record("glue/rte", 1, 0.6), record("glue/rte", 3, 0.5, bf16=True)])
        self.assertEqual(peer_table.peer_scores([a, b]), {"glue/rte": {1: 0.6}})
        c = self.write_lines("c.jsonl", [record("glue/rte", 1, 0.61)])
        with self.assertRaises(SystemExit) as e:
            peer_table.peer_scores([a, c])
        self.assertIn("c.jsonl:1", str(e.exception))

    def test_our_runs_come_from_ran_lines_and_the_results_beside_them(self):
        key = "0123456789ab" + "f" * 52
        with tarfile.open(self.path("results.tar.xz"), "w:xz") as tar:
            data = json.dumps({"best_main_score": 0.25}).encode()
            info = tarfile.TarInfo(f"{key}/result.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        with open(self.path("run-1.log"), "w") as f:
            f.write("  RUN     ft-cola-lora-all-s4          0123456789ab  missing\n")
            f.write("  RAN     ft-cola-lora-all-s4          0123456789ab  40.91 s, 1.8 MiB\n")
            f.write("  RAN     data-cola                    3abce53d84bc  301 ms\n")
        self.assertEqual(peer_table.our_runs([self.path("run-*.log")]), {"glue/cola": {4: (0.25, "0123456789ab")}})
        with open(self.path("run-2.log"), "w") as f:
            f.write("  RAN     ft-cola-lora-all-s5          ba9876543210  40.91 s\n")
        with self.assertRaises(SystemExit) as e:
            peer_table.our_runs([self.path("run-2.log")])
        self.assertIn("ba9876543210", str(e.exception))

    def test_the_table_compares_means(self):
        ours = self.path("results.json")
        with open(ours, "w") as f:
            json.dump({"rows": [{"task": "glue/rte", "method": "lora-all", "seeds": [1, 2],
                                 "main_score": {"mean": 0.60, "std": 0.01}}]}, f)
        peer = self.write_lines("p.jsonl", [record("glue/rte", 1, 0.62), record("glue/rte", 2, 0.64)])
        out = subprocess.run([sys.executable, os.path.join(HERE, "peer_table.py"), "--ours", ours, peer],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn("| glue/rte | 1,2 | 63.00 ± 1.41 | 1,2 | 60.00 ± 1.00 | -3.00 |", out)


if __name__ == "__main__":
    unittest.main()
