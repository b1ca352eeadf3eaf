"""exact_llama: its tiny Llama computes what transformers' LlamaForCausalLM
computes (loss and every gradient), its exp/log/sqrt/RoPE tables are accurate,
and its sums do not depend on the order of the terms.

    ~/.cache/fjord/venv/bin/python tools/demo/exact_llama_test.py     (bazel test //tools/demo:exact_llama_test)
"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exact_llama as X  # noqa: E402

F64 = torch.float64


class ExactLlamaTest(unittest.TestCase):
    def test_loss_and_gradients_match_transformers(self):
        from transformers import LlamaConfig, LlamaForCausalLM
        hf = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=88, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rope_theta=10000.0, tie_word_embeddings=True)
        cfg = X.Config(96, 64, 88, 2, 4, 2, rope_theta=10000.0, rms_norm_eps=hf.rms_norm_eps)
        params = X.init_params(cfg, seed=3)
        ids = torch.randint(0, 96, (3, 16), generator=torch.Generator().manual_seed(1))
        loss, grads = X.loss_and_grads(cfg, params, ids, X.rope_tables(16, cfg.D, cfg.theta))

        model = LlamaForCausalLM(hf).to(F64)
        result = model.load_state_dict({k: v.clone() for k, v in params.items()}, strict=False)
        self.assertEqual(result.missing_keys, ["lm_head.weight"])  # tied to embed_tokens
        ref = model(input_ids=ids, labels=ids).loss
        ref.backward()
        self.assertAlmostEqual(loss, ref.item(), delta=1e-6 * ref.item())
        self.assertEqual(set(grads), {n for n, _ in model.named_parameters()})
        for name, p in model.named_parameters():
            # atol + rtol * |ref|: operands are rounded to 20 bits of their tensor's largest magnitude.
            err = (grads[name] - p.grad).abs().max().item()
            self.assertLessEqual(err, 1e-4 * p.grad.abs().max().item(), name)

    def test_exp_and_log(self):
        x = torch.linspace(-87, 88, 200001, dtype=torch.float32)
        ref = torch.exp(x.double())
        self.assertLess(((X.exp(x).double() - ref) / ref).abs().max().item(), 1e-6)
        y = torch.logspace(-37, 38, 200001, dtype=torch.float32)
        self.assertLess((X.log(y).double() - torch.log(y.double())).abs().max().item(), 1e-5)
        self.assertEqual(X.log(torch.ones(1)).item(), 0.0)

    def test_sqrt_is_correctly_rounded(self):
        import random
        rng = random.Random(0)
        x = torch.tensor([rng.uniform(0, 10) ** rng.choice([1, 3, -3, 9, -9]) for _ in range(100000)]
                         + [0.0, 1e-45, 3e38, 1.0, 4.0], dtype=torch.float32)
        self.assertTrue(torch.equal(X.sqrt(x), torch.sqrt(x.double()).float()))

    def test_rope_tables(self):
        cos, sin = X.rope_tables(64, 32, 10000.0)
        inv = 1.0 / (10000.0 ** (torch.arange(0, 32, 2, dtype=F64) / 32))
        angle = torch.arange(64, dtype=F64)[:, None] * inv
        angle = torch.cat([angle, angle], -1)
        self.assertLess((cos.double() - angle.cos()).abs().max().item(), 1e-7)   # float32 rounding
        self.assertLess((sin.double() - angle.sin()).abs().max().item(), 1e-7)

    def test_sums_do_not_depend_on_order(self):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(48, 2048, generator=g, dtype=F64) * torch.logspace(-3, 3, 2048, dtype=F64)
        b = torch.randn(2048, 40, generator=g, dtype=F64)
        perm = torch.randperm(2048, generator=g)
        self.assertTrue(torch.equal(X.matmul(a, b), X.matmul(a[:, perm], b[perm])))
        self.assertTrue(torch.equal(X.matmul(a, b), X.matmul(b.T, a.T).T))
        self.assertTrue(torch.equal(X.xsum(a, 1), X.xsum(a[:, perm], 1)))
        # ... and the ordinary float sum does: the exactness is what makes the difference.
        self.assertFalse(torch.equal(a.sum(1), a[:, perm].sum(1)))


if __name__ == "__main__":
    unittest.main()
