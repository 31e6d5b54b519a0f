"""tools/squad_split.py: a seeded split by article, every article in exactly one part."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import squad_split  # noqa: E402


def dataset(n):
    return {"version": "1.1", "data": [
        {"title": f"A{i}", "paragraphs": [{"context": "c", "qas": [{"id": f"q{i}", "question": "?", "answers": []}]}]}
        for i in range(n)
    ]}


class SquadSplitTest(unittest.TestCase):
    def test_articles_are_partitioned_in_order_and_seeded(self):
        d = dataset(10)
        train, dev = squad_split.split(d, 3, seed=0)
        titles = lambda part: [a["title"] for a in part["data"]]  # noqa: E731
        self.assertEqual(len(titles(dev)), 3)
        self.assertEqual(sorted(titles(train) + titles(dev)), sorted(titles(d)))
        all_titles = titles(d)
        for part in (train, dev):
            positions = [all_titles.index(t) for t in titles(part)]
            self.assertEqual(positions, sorted(positions), "article order is kept")
        self.assertEqual(squad_split.split(d, 3, seed=0), (train, dev), "same seed, same split")
        others = {tuple(titles(squad_split.split(d, 3, seed=s)[1])) for s in range(1, 6)}
        self.assertGreater(len(others | {tuple(titles(dev))}), 1, "the seed changes the split")

    def test_bad_counts_and_duplicate_titles_are_refused(self):
        with self.assertRaises(ValueError):
            squad_split.split(dataset(3), 3, seed=0)
        with self.assertRaises(ValueError):
            squad_split.split(dataset(3), 0, seed=0)
        d = dataset(3)
        d["data"][1]["title"] = "A0"
        with self.assertRaises(ValueError):
            squad_split.split(d, 1, seed=0)


if __name__ == "__main__":
    unittest.main()
