#!/usr/bin/env python3
"""The official SQuAD v1.1 evaluation (`evaluate-v1.1.py`), re-implemented line for line.

The Rust evaluation (`lpeft_eval::squad`) is checked against this logic
(`tools/test_squad_eval.py`). Usage, as the official script:

    python3 tools/reference/squad_v1_eval.py dev-v1.1.json predictions.json
"""

import argparse
import json
import re
import string
import sys
from collections import Counter


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def evaluate(dataset, predictions, per_question=None):
    """The official figures; with `per_question` (a list), appends (id, em, f1) per question."""
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
                    if per_question is not None:
                        per_question.append((qa["id"], 0.0, 0.0))
                    continue
                ground_truths = [a["text"] for a in qa["answers"]]
                prediction = predictions[qa["id"]]
                em = float(metric_max_over_ground_truths(exact_match_score, prediction, ground_truths))
                f = float(metric_max_over_ground_truths(f1_score, prediction, ground_truths))
                exact_match += em
                f1 += f
                if per_question is not None:
                    per_question.append((qa["id"], em, f))
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def main():
    parser = argparse.ArgumentParser(description="Evaluation for SQuAD 1.1")
    parser.add_argument("dataset_file")
    parser.add_argument("prediction_file")
    args = parser.parse_args()
    with open(args.dataset_file, encoding="utf-8") as f:
        dataset_json = json.load(f)
        if dataset_json["version"] != "1.1":
            print(f"Evaluation expects v-1.1, but got dataset with v-{dataset_json['version']}", file=sys.stderr)
        dataset = dataset_json["data"]
    with open(args.prediction_file, encoding="utf-8") as f:
        predictions = json.load(f)
    print(json.dumps(evaluate(dataset, predictions)))


if __name__ == "__main__":
    main()
