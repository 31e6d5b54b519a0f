"""Unit tests of tools/check_deps.py (python3 -m unittest discover -s tools)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_deps  # noqa: E402


def pkg(name, *deps, dev=()):
    return {"name": name, "dependencies": [{"name": d, "kind": None} for d in deps]
            + [{"name": d, "kind": "dev"} for d in dev]}


class CrateGraph(unittest.TestCase):
    def test_rules(self):
        meta = {"packages": [
            pkg("lpeft-artifacts", "serde"),
            pkg("lpeft-train", "lpeft-artifacts", "lpeft-data"),
            pkg("lpeft-estimate", "lpeft-artifacts", dev=["lpeft-data"]),
            pkg("lpeft-surgery", "lpeft-estimate"),
            pkg("lpeft-data", "lpeft-artifacts"),
            pkg("lpeft-cli", "lpeft-data", "lpeft-estimate"),
        ]}
        self.assertEqual(check_deps.violations(meta), [
            ("lpeft-surgery", "lpeft-estimate", "stage crates never depend on each other"),
            ("lpeft-train", "lpeft-data", "shared crates never depend on a stage crate"),
        ])

    def test_command_libraries(self):
        meta = {"packages": [
            pkg("lpeft-artifacts"),
            pkg("lpeft-data", "lpeft-artifacts"),
            pkg("lpeft-finetune", "lpeft-artifacts"),
            pkg("lpeft-predict", "lpeft-artifacts", "lpeft-data", "lpeft-finetune"),
            pkg("lpeft-eval", "lpeft-predict"),
            pkg("lpeft-cli", "lpeft-predict", "lpeft-finetune"),
        ]}
        self.assertEqual(check_deps.violations(meta), [
            ("lpeft-eval", "lpeft-predict", "only binaries depend on a command library"),
            ("lpeft-predict", "lpeft-finetune",
             "a command library uses no stage crate but lpeft-data"),
        ])

    def test_clean_graph(self):
        meta = {"packages": [pkg("lpeft-artifacts"), pkg("lpeft-estimate", "lpeft-artifacts"),
                             pkg("lpeft-cli", "lpeft-estimate")]}
        self.assertEqual(check_deps.violations(meta), [])


if __name__ == "__main__":
    unittest.main()
