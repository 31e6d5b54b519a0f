"""The Rust SQuAD v1.1 evaluation (lpeft_eval::squad) against the official script's logic.

The fixture tests/fixtures/squad_eval holds tricky cases (punctuation, articles, Unicode,
several gold answers, empty and missing predictions) and expected.json, the per-question
figures that both this test and crates/lpeft-eval/tests/squad.rs check. With cargo on PATH,
the Rust example `squad_evaluate` is also run on the fixture and on the shared SQuAD dev
part (if present) with generated predictions, and compared question by question.
"""

import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "squad_eval")
SHARED_DEV = os.path.join(ROOT, "..", "shared", "data", "squad", "dev-v1.1-part-a.json")
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import squad_v1_eval  # noqa: E402


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def reference(dataset_path, predictions_path):
    per_question = []
    # The official script names every unanswered question on stderr; the test needs no such list.
    with contextlib.redirect_stderr(io.StringIO()):
        totals = squad_v1_eval.evaluate(load(dataset_path)["data"], load(predictions_path), per_question)
    return totals, per_question


def rust(dataset_path, predictions_path):
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "lpeft-eval", "--example", "squad_evaluate", "--",
         dataset_path, predictions_path, "--per-question"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def perturbed_predictions(dataset, seed):
    """Per question one of: the first gold answer, the same dressed up (case, article,
    punctuation), a part of it, another gold, a context word, empty, or no prediction."""
    rng = random.Random(seed)
    predictions = {}
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            words = paragraph["context"].split()
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                kind = rng.randrange(7)
                if kind == 6:
                    continue
                gold = golds[0]
                tokens = gold.split()
                predictions[qa["id"]] = [
                    gold,
                    "The " + gold.upper() + ".",
                    " ".join(tokens[: max(1, len(tokens) // 2)]),
                    golds[-1] + " " + rng.choice(words),
                    rng.choice(words),
                    "",
                ][kind]
    return predictions


class SquadEvalTest(unittest.TestCase):
    def test_reference_gives_the_expected_figures(self):
        totals, per_question = reference(
            os.path.join(FIXTURE, "dev.json"), os.path.join(FIXTURE, "predictions.json"))
        expected = load(os.path.join(FIXTURE, "expected.json"))
        self.assertAlmostEqual(totals["exact_match"], expected["exact_match"], places=12)
        self.assertAlmostEqual(totals["f1"], expected["f1"], places=12)
        self.assertEqual([q[0] for q in per_question], [q["id"] for q in expected["questions"]])
        for (qid, em, f1), want in zip(per_question, expected["questions"]):
            self.assertEqual(em, want["exact_match"], qid)
            self.assertAlmostEqual(f1, want["f1"], places=12, msg=qid)

    def check_rust_against_reference(self, dataset_path, predictions_path):
        totals, per_question = reference(dataset_path, predictions_path)
        got = rust(dataset_path, predictions_path)
        self.assertAlmostEqual(got["exact_match"], totals["exact_match"], places=9)
        self.assertAlmostEqual(got["f1"], totals["f1"], places=9)
        self.assertEqual(len(got["questions"]), len(per_question))
        for q, (qid, em, f1) in zip(got["questions"], per_question):
            self.assertEqual(q["id"], qid)
            self.assertEqual(q["exact_match"], em, qid)
            self.assertAlmostEqual(q["f1"], f1, places=12, msg=qid)

    @unittest.skipIf(shutil.which("cargo") is None, "cargo not on PATH")
    def test_rust_matches_reference_on_fixture(self):
        self.check_rust_against_reference(
            os.path.join(FIXTURE, "dev.json"), os.path.join(FIXTURE, "predictions.json"))

    @unittest.skipIf(shutil.which("cargo") is None, "cargo not on PATH")
    @unittest.skipUnless(os.path.exists(SHARED_DEV), "no ../shared/data/squad")
    def test_rust_matches_reference_on_shared_dev(self):
        dataset = load(SHARED_DEV)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "predictions.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(perturbed_predictions(dataset, seed=15), f, ensure_ascii=False)
            self.check_rust_against_reference(SHARED_DEV, path)


if __name__ == "__main__":
    unittest.main()
