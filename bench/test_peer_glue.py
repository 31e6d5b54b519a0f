"""Unit tests of the accuracy peer's data reading and metrics (no torch): its column of
docs/fidelity.md comes from these functions. Run: python3 -m unittest discover -s bench."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import hf_peft_glue as peer  # noqa: E402


class Metrics(unittest.TestCase):
    def test_matthews_on_a_hand_computed_case(self):
        # tp 2, tn 1, fp 1, fn 1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
        pred, gold = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]
        self.assertAlmostEqual(peer.mcc(pred, gold), 1 / 6)
        self.assertEqual(peer.mcc([1, 1], [1, 0]), 0.0, "a constant prediction scores 0")

    def test_f1_and_the_mrpc_main_score(self):
        pred, gold = [1, 1, 0, 0], [1, 0, 1, 0]
        values, main = peer.metrics("mrpc", pred, gold)
        self.assertAlmostEqual(values["f1"], 0.5)
        self.assertAlmostEqual(values["accuracy"], 0.5)
        self.assertAlmostEqual(main, 0.5)

    def test_spearman_uses_average_ranks_for_ties(self):
        self.assertEqual(peer.ranks([3.0, 1.0, 3.0, 2.0]), [2.5, 0.0, 2.5, 1.0])
        values, main = peer.metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.0, 5.0])
        self.assertAlmostEqual(values["spearman"], peer.pearson([0, 1, 2, 3], [0, 1.5, 1.5, 3]))
        self.assertAlmostEqual(main, (values["pearson"] + values["spearman"]) / 2)


class Reading(unittest.TestCase):
    def write(self, folder, name, text):
        d = os.path.join(self.dir.name, folder)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def test_cola_has_no_header_and_rte_maps_label_names(self):
        self.write("CoLA", "train.tsv", 'gj04\t1\t\tThe "quote is unbalanced.\ngj04\t0\t*\tBad one .\n')
        rows, kind = peer.read_split(self.dir.name, "cola", "train")
        self.assertEqual(kind, "class")
        self.assertEqual(rows, [('The "quote is unbalanced.', None, 1), ("Bad one .", None, 0)])
        self.write("RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tnot_entailment\n")
        rows, _ = peer.read_split(self.dir.name, "rte", "dev")
        self.assertEqual(rows, [("A", "B", 1)])

    def test_a_byte_order_mark_before_the_header_is_not_part_of_its_first_name(self):
        self.write("MRPC", "train.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA .\tB .\n")
        rows, kind = peer.read_split(self.dir.name, "mrpc", "train")
        self.assertEqual((kind, rows), ("class", [("A .", "B .", 1)]))

    def test_a_short_row_names_file_and_line(self):
        self.write("RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tentailment\n")
        with self.assertRaises(SystemExit) as e:
            peer.read_split(self.dir.name, "rte", "train")
        self.assertIn("train.tsv:2", str(e.exception))


if __name__ == "__main__":
    unittest.main()
