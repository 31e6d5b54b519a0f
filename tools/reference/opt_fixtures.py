"""OPT reference outputs for lpeft-model's parity tests (crates/lpeft-model/tests/opt.rs).

Run with a Python that has torch and transformers (no network needed: the models are tiny,
random, and built here):
    python tools/reference/opt_fixtures.py crates/lpeft-model/tests/fixtures

tiny-opt-full/  a tiny random pre-LayerNorm OPT (as opt-125m) in transformers' own layout and
                code, unpruned, saved as OPTForSequenceClassification (`model.` prefix, `score`).
tiny-opt-post/  the same kind of model post-LayerNorm (do_layer_norm_before false, as opt-350m;
                no final LayerNorm), saved as OPTModel (no prefix), so no logits.
tiny-opt/       pre-LayerNorm, cut to uneven layers: heads [4, 0, 2] (layer 2 keeps the original
                heads 1 and 3) and FFN widths [24, 7, 0], by replacing modules inside
                transformers' model (its attention reshapes by `num_heads`, set per layer).
Each has config.json, model.safetensors and reference.safetensors (inputs, last hidden state
of OPTModel, and OPTForSequenceClassification's logits where the model has a head);
tiny-opt-full's also OPTForCausalLM's logits and loss on the same decoder.

The inputs are right-padded (pad id 1, attention mask 0) with one left-padded row, which moves
that row's positions (they come from the attention mask) and its last real token.
"""
import os
import sys

import torch
from linear_cuts import cut_cols, cut_rows
from safetensors.torch import save_file
from transformers import OPTConfig, OPTForCausalLM, OPTForSequenceClassification


class NoHeads(torch.nn.Module):
    """`self_attn` of a layer whose every head is pruned: only `out_proj`'s bias remains."""

    def __init__(self, hidden):
        super().__init__()
        self.q_proj = torch.nn.Linear(hidden, 0)
        self.k_proj = torch.nn.Linear(hidden, 0)
        self.v_proj = torch.nn.Linear(hidden, 0)
        self.out_proj = torch.nn.Linear(0, hidden)

    def forward(self, hidden_states, *args, **kwargs):
        return self.out_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


def prune(decoder, kept_heads, ffn, head_dim):
    """Layer i keeps heads `kept_heads[i]` (original ids) and its first `ffn[i]` neurons."""
    hidden = decoder.config.hidden_size
    for i, layer in enumerate(decoder.layers):
        heads = kept_heads[i]
        if not heads:
            layer.self_attn = NoHeads(hidden)
        elif len(heads) < decoder.config.num_attention_heads:
            attn = layer.self_attn
            units = [h * head_dim + j for h in heads for j in range(head_dim)]
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(attn, name, cut_rows(getattr(attn, name), units))
            attn.out_proj = cut_cols(attn.out_proj, units)
            attn.num_heads = len(heads)
        layer.fc1 = cut_rows(layer.fc1, list(range(ffn[i])))
        layer.fc2 = cut_cols(layer.fc2, list(range(ffn[i])))


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def inputs():
    """Four rows of 12: full, right-padded (two lengths), and one left-padded. No real token is
    the pad id 1, so transformers' last non-pad token is the last position with mask 1."""
    t = 12
    full = [2] + list(range(10, 21))
    mid = [2] + list(range(30, 37))
    short = [2, 41, 42]
    rows = [full, mid + [1] * (t - len(mid)), short + [1] * (t - len(short))]
    left = [2, 44, 45, 46, 47]
    rows.append([1] * (t - len(left)) + left)
    ids = torch.tensor(rows)
    return ids, (ids != 1).long()


def tiny(out_dir, name, seed, pre_norm=True, kept_heads=None, ffn=None, head=True, lm=False):
    cfg = OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                    ffn_dim=24, max_position_embeddings=32, do_layer_norm_before=pre_norm,
                    word_embed_proj_dim=16, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                    dropout=0.0, attention_dropout=0.0, num_labels=3,
                    attn_implementation="eager")
    model = OPTForSequenceClassification(cfg)
    randomize(model, seed)
    if kept_heads is not None:
        prune(model.model.decoder, kept_heads, ffn, head_dim=4)
    model.eval()
    input_ids, attention_mask = inputs()
    with torch.no_grad():
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    if head:
        state = model.state_dict()
    else:
        state = {k[len("model."):]: v for k, v in model.state_dict().items()
                 if k.startswith("model.")}
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, os.path.join(d, "model.safetensors"))
    cfg.to_json_file(os.path.join(d, "config.json"))
    ref = {
        "input_ids": input_ids, "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "last_hidden_state": hidden.contiguous(),
    }
    if head:
        ref["logits"] = logits.contiguous()
    if lm:
        # OPTForCausalLM on the same decoder: logits through the tied embedding matrix, and
        # its loss with the padded positions' labels set to -100 (ignored).
        causal = OPTForCausalLM(cfg)
        causal.model.load_state_dict(model.model.state_dict())
        assert causal.lm_head.weight.data_ptr() == causal.model.decoder.embed_tokens.weight.data_ptr()
        causal.eval()
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        with torch.no_grad():
            out = causal(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        ref["lm_logits"] = out.logits.contiguous()
        ref["lm_loss"] = out.loss.reshape(1).contiguous()
    save_file(ref, os.path.join(d, "reference.safetensors"))
    print(f"{name}: pre_norm {pre_norm} heads {kept_heads} ffn {ffn} -> {d}")


def make(out_dir):
    tiny(out_dir, "tiny-opt-full", 5, lm=True)
    tiny(out_dir, "tiny-opt-post", 6, pre_norm=False, head=False)
    tiny(out_dir, "tiny-opt", 7, kept_heads=[[0, 1, 2, 3], [], [1, 3]], ffn=[24, 7, 0])


if __name__ == "__main__":
    make(sys.argv[1] if len(sys.argv) > 1 else "crates/lpeft-model/tests/fixtures")
