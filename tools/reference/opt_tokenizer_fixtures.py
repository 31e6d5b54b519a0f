"""OPT's own tokenizer (GPT-2 byte-level BPE, as facebook/opt-* ship it) on a toy vocabulary,
and the reference encodings lpeft-tokenizer must reproduce (crates/lpeft-tokenizer/tests/opt.rs;
the data stage and `lpeft encode` use the same directory).

Run with a Python that has tokenizers, transformers and torch (no network: everything is made
here):
    python tools/reference/opt_tokenizer_fixtures.py crates/lpeft-model/tests/fixtures/tiny-opt-bpe

The directory is a model directory in the hub's OPT layout with no tokenizer.json:
  vocab.json, merges.txt   a byte-level BPE learnt here (by the few lines of `learn_merges`) on
                           the toy corpus below: OPT's four specials first (<s> 0, <pad> 1,
                           </s> 2, <unk> 3), the 256 byte symbols, then one token per merge
  tokenizer_config.json    as facebook/opt-*'s: add_bos_token true, bos = eos = unk = </s>,
  special_tokens_map.json  pad <pad>, add_prefix_space false, no tokenizer_class (transformers
                           picks GPT2Tokenizer from config.json's model_type "opt")
  config.json,             a tiny random OPT (OPTModel keys) with this vocabulary, so that
  model.safetensors        `lpeft encode` can run on the directory
  expected.json            what transformers' tokenizer gives (checked against a tokenizer
                           assembled from the `tokenizers` package's parts: BPE from the files,
                           ByteLevel pre-tokenizer and decoder, the `</s> $A` / `</s> $A </s> $B`
                           template), per case: ids, type ids, byte offsets, sequence ids; the
                           question/context windows of span tasks; OPTModel's last hidden state
                           for two `lpeft encode` inputs

Offsets: Python reports character offsets; they are written as UTF-8 byte offsets (what the Rust
`tokenizers` crate reports) so that the non-ASCII cases check them too.
"""
import json
import os
import sys
from collections import Counter

import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import AutoTokenizer, OPTConfig, OPTModel

NUM_MERGES = 48

CORPUS = [
    "The cat sat on the mat.",
    "The dog sat on the log.",
    "A cat and a dog are playing in the garden.",
    "The cats were sitting on the mats, and the dogs were not.",
    "It's a nice day; don't you think so?",
    "They're going to the station at 10:30 today.",
    "Someone is playing the guitar in the other room.",
    "The quick brown fox jumps over the lazy dog.",
    "Is the weather going to be better tomorrow?",
    "The man is playing a game with the other players.",
    "We paid 42 dollars for the tickets in 2019.",
    "The garden is green and the station is grey.",
]

SINGLES = [
    "The cat sat on the mat.",
    "A dog is playing in the garden!",
    "Hello world",
    "  two leading spaces and a tab\there",
    "They're not the players we paid for in 1999.",
    "Un café naïve — 東京 ☕",
    "</s> and <pad> are special, <s> and <unk> are not",
]

PAIRS = [
    ("The cat sat on the mat.", "A cat is sitting on a mat."),
    ("Is it going to rain?", "No, the weather is better today."),
    ("Un café ?", "Oui — deux cafés."),
]

# (first, second or None, max_length): longest-first truncation counting the special tokens.
TRUNCATED = [
    ("The quick brown fox jumps over the lazy dog.", None, 6),
    ("The quick brown fox jumps over the lazy dog.", "A cat.", 9),
    ("Short one.", "The man is playing a game with the other players in the garden.", 10),
    ("The cats were sitting on the mats.", "The dogs were sitting on the logs.", 11),
]

# Question / context windows (the data stage's SQuAD windows): max_length, stride.
WINDOWS = [
    ("Where did the cat sit?",
     "The cat sat on the mat. The dog sat on the log. Later the cat went to the garden, "
     "where the dog was playing with the other dogs, and nobody sat on the mat.",
     24, 4),
]

ENCODE = [
    ("The cat sat on the mat.", None),
    ("Is it going to rain?", "No, the weather is better today."),
]


def byte_symbols():
    """GPT-2's reversible map from the 256 byte values to printable characters: bytes that are
    printable Latin-1 stand for themselves, the others take code points from 256 on."""
    kept = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    out, extra = {}, 0
    for b in range(256):
        if b in kept:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def learn_merges(words, n):
    """Greedy BPE: merge the most frequent adjacent pair (ties: the smallest pair), n times."""
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(n):
        pairs = Counter()
        for w, count in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append((a, b))
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def write_tokenizer_files(d):
    symbols = byte_symbols()
    assert sorted(symbols.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(piece for text in CORPUS for piece, _ in pre.pre_tokenize_str(text))
    merges = learn_merges(words, NUM_MERGES)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for b in range(256):
        vocab[symbols[b]] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    def token(content):
        return {"content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": True, "__type": "AddedToken"}

    specials = {"bos_token": token("</s>"), "eos_token": token("</s>"), "unk_token": token("</s>"),
                "pad_token": token("<pad>")}
    config = {"errors": "replace", **specials, "add_prefix_space": False, "add_bos_token": True,
              "special_tokens_map_file": None, "name_or_path": "tiny-opt-bpe"}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump({k: {kk: vv for kk, vv in v.items() if kk != "__type"} for k, v in specials.items()},
                  f, indent=2)
    return len(vocab), len(merges)


def assembled(d):
    """OPT's tokenizer from the `tokenizers` package's parts, as GPT2Tokenizer builds it."""
    tok = Tokenizer(BPE.from_file(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"),
                                  continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken("</s>", special=True, normalized=False),
                            tokenizers.AddedToken("<pad>", special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="</s>:0 $A:0", pair="</s>:0 $A:0 </s>:1 $B:1", special_tokens=[("</s>", 2)])
    return tok


def byte_offsets(enc, texts):
    out = []
    for (s, e), seq in zip(enc.offsets, enc.sequence_ids):
        if seq is None:
            out.append([0, 0])
        else:
            t = texts[seq]
            out.append([len(t[:s].encode()), len(t[:e].encode())])
    return out


def record(enc, first, second, max_length=None, untruncated=None):
    rec = {"first": first, "second": second, "max_length": max_length,
           "ids": enc.ids, "type_ids": enc.type_ids, "tokens": enc.tokens,
           "offsets": byte_offsets(enc, [first, second]), "sequence_ids": enc.sequence_ids}
    if max_length is not None:
        rec["truncated"] = len(untruncated.ids) > max_length
    return rec


def cases(d):
    tok = assembled(d)
    hf = AutoTokenizer.from_pretrained(d)
    assert type(hf).__name__ == "GPT2Tokenizer", type(hf)
    assert (hf.pad_token_id, hf.bos_token_id, hf.add_bos_token) == (1, 2, True)
    out = []
    for first, second in [(s, None) for s in SINGLES] + PAIRS:
        enc = tok.encode(first, second)
        want = hf(first, second, return_token_type_ids=True)
        assert enc.ids == want["input_ids"], (first, second, enc.ids, want["input_ids"])
        assert enc.type_ids == want["token_type_ids"], (first, second)
        out.append(record(enc, first, second))
    for first, second, n in TRUNCATED:
        full = tok.encode(first, second)
        tok.enable_truncation(max_length=n, strategy="longest_first")
        enc = tok.encode(first, second)
        tok.no_truncation()
        want = hf(first, second, truncation="longest_first", max_length=n)["input_ids"]
        assert enc.ids == want, (first, second, n, enc.ids, want)
        assert len(enc.ids) == n
        out.append(record(enc, first, second, n, full))
    windows = []
    for question, context, n, stride in WINDOWS:
        tok.enable_truncation(max_length=n, stride=stride, strategy="only_second")
        enc = tok.encode(question, context)
        tok.no_truncation()
        got = [enc] + enc.overflowing
        want = hf(question, context, truncation="only_second", max_length=n, stride=stride,
                  return_overflowing_tokens=True)["input_ids"]
        assert [e.ids for e in got] == want, "windows differ"
        windows.append({"question": question, "context": context, "max_length": n, "stride": stride,
                        "windows": [record(e, question, context) for e in got]})
    return out, windows


def tiny_model(d, vocab_size):
    cfg = OPTConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                    ffn_dim=24, max_position_embeddings=64, do_layer_norm_before=True,
                    word_embed_proj_dim=16, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                    dropout=0.0, attention_dropout=0.0, attn_implementation="eager")
    torch.manual_seed(11)
    model = OPTModel(cfg)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "layer_norm.weight" in name else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(d, "model.safetensors"))
    cfg.to_json_file(os.path.join(d, "config.json"))
    hf = AutoTokenizer.from_pretrained(d)
    out = []
    for text, pair in ENCODE:
        enc = hf(text, pair, return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out.append({"text": text, "pair": pair, "ids": enc["input_ids"][0].tolist(),
                    "last_hidden_state": hidden[0].tolist()})
    return out


def make(d):
    os.makedirs(d, exist_ok=True)
    vocab_size, num_merges = write_tokenizer_files(d)
    # config.json first: transformers picks the tokenizer class from its model_type.
    encode = tiny_model(d, vocab_size)
    singles, windows = cases(d)
    expected = {
        "made_by": "tools/reference/opt_tokenizer_fixtures.py",
        "tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
        "vocab_size": vocab_size, "merges": num_merges,
        "cases": singles, "windows": windows, "encode": encode,
    }
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{d}: vocab {vocab_size}, {num_merges} merges, {len(singles)} cases, "
          f"{sum(len(w['windows']) for w in windows)} windows")


if __name__ == "__main__":
    make(sys.argv[1] if len(sys.argv) > 1 else "crates/lpeft-model/tests/fixtures/tiny-opt-bpe")
