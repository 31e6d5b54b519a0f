"""A Hugging Face BERT checkpoint of random weights (drawn by seed) with a named encoder's
shape, for timing the whole pipeline where no pretrained weights can be had: speed depends on
the shape, not on the values, and every score trained from it is meaningless (its config.json
says so in `lightpeft_random_weights`).

    python3 bench/random_checkpoint.py --shape roberta-base --seed 1 \
        --tokenizer ../shared/models/all-MiniLM-L6-v2 --out /tmp/roberta-base-random

The layout is BERT's (post-LayerNorm, GELU, token types) with the vocabulary of the given
tokenizer, whose files are copied beside the weights; layers, width, heads and FFN width are
the named model's. Needs torch and transformers.
"""
import argparse
import json
import os
import shutil

# layers, hidden size, heads, FFN width
SHAPES = {
    "minilm": (6, 384, 12, 1536),
    "bert-base": (12, 768, 12, 3072),
    "roberta-base": (12, 768, 12, 3072),
    "roberta-large": (24, 1024, 16, 4096),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def bert_config(shape, vocab_size):
    layers, hidden, heads, ffn = SHAPES[shape]
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "lightpeft_random_weights": shape,
    }


def vocab_size(tokenizer_json):
    with open(tokenizer_json, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    return len(vocab)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json (BERT vocabulary)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from transformers import BertConfig, BertModel

    cfg = bert_config(args.shape, vocab_size(os.path.join(args.tokenizer, "tokenizer.json")))
    torch.manual_seed(args.seed)
    model = BertModel(BertConfig(**cfg))
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    # save_pretrained writes its own config.json; the marker must survive it.
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    for name in TOKENIZER_FILES:
        src = os.path.join(args.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, name))
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {args.shape} shape, {n / 1e6:.1f}M random parameters (seed {args.seed})")


if __name__ == "__main__":
    main()
