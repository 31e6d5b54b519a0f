#!/usr/bin/env python3
"""Splits a SQuAD v1.1 file by article into train-v1.1.json and dev-v1.1.json (official format).

The shared data has no SQuAD train file (../shared/data/squad/SOURCES.md): for experiments, part
a of the official dev set is split by article, so no context is seen in both splits. Articles go
to dev by a hash of (seed, title), not by Python's random module, so the split never changes with
the Python version; article order and content are kept.

    python3 tools/squad_split.py ../shared/data/squad/dev-v1.1-part-a.json data/squad-split \\
        --dev-articles 4 --seed 0
"""

import argparse
import hashlib
import json
import os
import sys


def article_rank(title, seed):
    return hashlib.blake2b(f"{seed}\0{title}".encode("utf-8"), digest_size=8).hexdigest()


def split(dataset, dev_articles, seed):
    """(train, dev) datasets: the `dev_articles` articles of lowest rank go to dev."""
    articles = dataset["data"]
    if not 0 < dev_articles < len(articles):
        raise ValueError(f"dev_articles must be between 1 and {len(articles) - 1}, got {dev_articles}")
    titles = [a["title"] for a in articles]
    if len(set(titles)) != len(titles):
        raise ValueError("article titles are not unique")
    dev_titles = set(sorted(titles, key=lambda t: article_rank(t, seed))[:dev_articles])
    version = dataset.get("version", "1.1")
    train = {"data": [a for a in articles if a["title"] not in dev_titles], "version": version}
    dev = {"data": [a for a in articles if a["title"] in dev_titles], "version": version}
    return train, dev


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a SQuAD v1.1 file (official format)")
    parser.add_argument("out_dir", help="written: train-v1.1.json, dev-v1.1.json")
    parser.add_argument("--dev-articles", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.source, encoding="utf-8") as f:
        dataset = json.load(f)
    try:
        train, dev = split(dataset, args.dev_articles, args.seed)
    except ValueError as e:
        sys.exit(f"{args.source}: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    for name, part in [("train-v1.1.json", train), ("dev-v1.1.json", dev)]:
        with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
            json.dump(part, f, ensure_ascii=False)
        questions = sum(len(p["qas"]) for a in part["data"] for p in a["paragraphs"])
        print(f"{name}: {len(part['data'])} articles, {questions} questions")


if __name__ == "__main__":
    main()
