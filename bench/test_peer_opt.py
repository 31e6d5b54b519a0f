"""The training-step peer on the OPT shapes (bench/peers/hf_peft_train_step.py), on opt-tiny on
the CPU: the models it builds, their pruned shape, LoRA sites and dtypes, and a step of each
task. Needs torch, transformers and peft (skipped without them; `make test`'s python3 has none):
    /work/venv-torch/bin/python -m unittest discover -s bench -p 'test_peer_opt.py'
"""
import os
import sys
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
try:
    import torch
    import hf_peft_train_step as peer
except ImportError as e:  # no torch, transformers or peft here
    peer = None
    missing = str(e)


def args(**kw):
    a = dict(shape="opt-tiny", peft="lora-all", batch=2, seq=12, iters=1, warmup=0, device="cpu", threads=0,
             inference=False, precision="fp32", task="seq-cls", attn="sdpa")
    a.update(kw)
    return types.SimpleNamespace(**a)


@unittest.skipIf(peer is None, "needs torch, transformers and peft")
class OptPeer(unittest.TestCase):
    def test_pruned_causal_lm_is_built_in_bf16_with_its_head_tied(self):
        m = peer.build_opt("opt-tiny", "sdpa", "causal-lm", torch.device("cpu"), torch.bfloat16, prune=True)
        layer = m.model.decoder.layers[0]
        # 4 heads of 16 → 3, FFN 256 → 171: a third off, as lpeft-bench's pruned shape.
        self.assertEqual((layer.self_attn.num_heads, layer.self_attn.q_proj.out_features), (3, 48))
        self.assertEqual((layer.fc1.out_features, layer.fc2.in_features), (171, 171))
        self.assertIs(m.lm_head.weight, m.model.decoder.embed_tokens.weight)
        self.assertTrue(all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in m.parameters()))
        self.assertTrue(all(torch.isfinite(p.float()).all() for p in m.parameters()))

    def test_lora_sites_and_a_step_of_each_task(self):
        for kw, trainable in [
            # 2 layers x (q, k, v, out: 8 x (64 + 64); fc1, fc2: 8 x (64 + 256)) + score 2 x 64
            (dict(), 2 * (4 * 8 * 128 + 2 * 8 * 320) + 128),
            (dict(task="causal-lm"), 2 * (4 * 8 * 128 + 2 * 8 * 320)),
            (dict(task="causal-lm", peft="light-lora", precision="bf16-pure"), None),
            (dict(peft="light-r2", precision="bf16-pure"), None),
        ]:
            t = peer.TrainStep(args(**kw))
            names = [n for n, p in t.model.named_parameters() if p.requires_grad]
            if trainable is not None:
                self.assertEqual(sum(p.numel() for p in t.params), trainable, kw)
            if kw.get("precision") == "bf16-pure":
                self.assertTrue(all(p.dtype == torch.bfloat16 for p in t.params), kw)
            if kw.get("peft") == "light-lora":
                # Every fourth of the 12 (layer, site) modules: layer 0 q, out; layer 1 v.
                lora_a = sorted(n.split(".base_model.model.")[-1] for n in names if "lora_A" in n)
                self.assertEqual(len(lora_a), 3, lora_a)
            t.step()
            self.assertTrue(all(torch.isfinite(p.float()).all() for p in t.params), kw)


if __name__ == "__main__":
    unittest.main()
