#!/usr/bin/env python3
"""Whether a data artifact of ours holds exactly the tokens, token types and labels that the HF
peer (hf_peft_glue.py) trains and evaluates on, row by row: rules the data out when our scores
and the peer's differ.

  python3 bench/peers/same_tokens.py --artifact STORE/objects/KEY --glue-dir DIR --model DIR \
      --task rte [--max-length 128]

Prints one line per split with the number of rows that differ, and exits 1 if any does.
Needs numpy, safetensors and tokenizers.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_peft_glue as peer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True, help="a data stage's artifact directory")
    ap.add_argument("--glue-dir", required=True)
    ap.add_argument("--model", required=True, help="model directory with tokenizer.json")
    ap.add_argument("--task", required=True, choices=sorted(peer.TASKS))
    ap.add_argument("--max-length", type=int, default=128)
    a = ap.parse_args()
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(a.max_length, strategy="longest_first")
    failed = False
    for split in ("train", "dev"):
        ours = load_file(os.path.join(a.artifact, f"{split}.safetensors"))
        rows, _ = peer.read_split(a.glue_dir, a.task, split)
        theirs = peer.encode(tok, rows, a.max_length)
        offsets, ids, types = ours["offsets"], ours["input_ids"], ours["type_ids"]
        labels = ours["labels"]
        if len(offsets) - 1 != len(theirs):
            print(f"{split}: {len(offsets) - 1} rows here, {len(theirs)} in the peer's encoding")
            failed = True
            continue
        differ = 0
        for i, (t_ids, t_types, t_label) in enumerate(theirs):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            same = (ids[lo:hi].tolist() == list(t_ids) and types[lo:hi].tolist() == list(t_types)
                    and float(labels[i]) == float(t_label))
            differ += not same
        print(f"{split}: {len(theirs)} rows, {differ} differ")
        failed |= differ > 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
