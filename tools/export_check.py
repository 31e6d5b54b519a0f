#!/usr/bin/env python3
"""Checks a directory written by `lpeft export` against our own logits.

    lpeft export --model KEY --format peft|merged|pruned --out DIR --reference ours.json
    python3 tools/export_check.py DIR ours.json [--tol 1e-4]

Loads DIR with transformers (and peft for an adapter: `PeftModel.from_pretrained` over the
model its `base_model_name_or_path` names; `trust_remote_code=True` for a pruned model), runs
it in eval mode on the inputs stored in ours.json and compares the logits with ours: prints the
largest absolute difference and exits 1 above --tol. Needs torch, transformers (and peft).
"""

import argparse
import json
import os
import sys

import torch


def load(directory, span):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    auto = AutoModelForQuestionAnswering if span else AutoModelForSequenceClassification
    adapter = os.path.join(directory, "adapter_config.json")
    if os.path.exists(adapter):
        from peft import PeftModel
        from safetensors.torch import load_file

        with open(adapter) as f:
            config = json.load(f)
        weights = load_file(os.path.join(directory, "adapter_model.safetensors"))
        out = [v for k, v in weights.items() if k.endswith(("classifier.weight",
               "classifier.out_proj.weight", "qa_outputs.weight"))]
        base = auto.from_pretrained(config["base_model_name_or_path"], num_labels=out[0].shape[0])
        return PeftModel.from_pretrained(base, directory), "peft"
    with open(os.path.join(directory, "config.json")) as f:
        remote = "auto_map" in json.load(f)
    model = auto.from_pretrained(directory, trust_remote_code=remote)
    return model, "pruned (remote code)" if remote else "merged"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("reference", help="JSON from `lpeft export --reference`")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    with open(args.reference) as f:
        ref = json.load(f)
    span = "start_logits" in ref
    model, kind = load(args.dir, span)
    model.eval()
    t = lambda k: torch.tensor(ref[k], dtype=torch.long)
    # peft 0.21's PeftModelForQuestionAnswering.forward drops token_type_ids (it takes them and
    # does not pass them on); its base model, with the LoRA layers in place, does not.
    run = model.get_base_model() if span and kind == "peft" else model
    with torch.no_grad():
        out = run(input_ids=t("input_ids"), token_type_ids=t("token_type_ids"),
                  attention_mask=t("attention_mask"))
    if span:  # start and end logits side by side: [B, T, 2]
        logits = torch.stack([out.start_logits, out.end_logits], -1)
        ours = torch.stack([torch.tensor(ref["start_logits"]), torch.tensor(ref["end_logits"])], -1)
    else:
        logits, ours = out.logits, torch.tensor(ref["logits"], dtype=torch.float32)
    if logits.shape != ours.shape:
        print(f"{args.dir}: logits shape {tuple(logits.shape)}, ours {tuple(ours.shape)}")
        return 1
    diff = (logits.float() - ours).abs().max().item()
    ok = diff <= args.tol
    print(f"{args.dir}: {kind}, logits {tuple(ours.shape)}, max |transformers - ours| = "
          f"{diff:.3e} ({'ok' if ok else 'FAIL'}, tol {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
