"""runtime/model/generation.h against transformers' generate.

Tiny random models of every supported architecture (test_model_parity's
cases: GQA, sliding windows, Phi3's fused projections and LongRoPE, Gemma 3's
local and global layers and soft-capped logits) generate greedily through
`//lora/cli:adapter_tool generate` (KV cache, one left-padded batch of
prompts of different lengths); transformers generates each prompt alone
(`do_sample=False`, fp32, eager attention) with the same model, with and
without a peft LoRA adapter. The new ids must be equal. Plus: seeded sampling
through the tool is reproducible, and stop tokens end a row.

    bazel build //lora/cli:adapter_tool
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_generation.py
"""

import json
import subprocess

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from test_model_parity import BIN_DIR, VOCAB, build_model, save

TOOL = BIN_DIR / "lora" / "cli" / "adapter_tool"
PROMPTS = [[5, 17, 3, 44, 9], [7, 7, 21, 0, 56, 12, 40, 3, 19, 25, 60, 2], [33]]
NEW = 24


def fjord_generate(model_dir, prompts, adapter=None, **options):
    assert TOOL.exists(), f"{TOOL} missing: bazel build //lora/cli:adapter_tool"
    cmd = [str(TOOL), "generate", "--model", str(model_dir),
           "--ids", ";".join(",".join(map(str, p)) for p in prompts), "--max-new", str(NEW)]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def hf_generate(model, prompt):
    with torch.no_grad():
        # An explicit attention mask: the prompts hold token 0, which generate
        # would otherwise take for padding.
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW,
                             min_new_tokens=NEW, eos_token_id=None, pad_token_id=0, use_cache=True)
    return out[0, len(prompt):].tolist()


CASES = ["llama_gqa_llama3", "qwen2", "qwen3_tied_bias", "mistral_window", "phi3_window", "phi3_longrope_short",
         "gemma3", "gemma3_softcap"]


@pytest.mark.parametrize("case", CASES)
def test_greedy_ids_equal_transformers_generate(case, tmp_path):
    model_dir = save(build_model(case, seed=21), tmp_path / "model", torch.float32, False)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    got = fjord_generate(model_dir, PROMPTS)
    for prompt, row in zip(PROMPTS, got):
        assert row["finish_reason"] == "length"
        assert row["ids"] == hf_generate(hf, prompt), f"{case}: prompt {prompt}"

    # The same with a LoRA adapter on every linear layer (B drawn non-zero).
    peft_model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.eval()
    got = fjord_generate(model_dir, PROMPTS, adapter=tmp_path / "adapter")
    base = fjord_generate(model_dir, PROMPTS)
    assert any(a["ids"] != b["ids"] for a, b in zip(got, base)), "the adapter changed nothing"
    for prompt, row in zip(PROMPTS, got):
        assert row["ids"] == hf_generate(peft_model, prompt), f"{case} + adapter: prompt {prompt}"


def test_sampling_is_seeded_and_stop_tokens_end_rows(tmp_path):
    model_dir = save(build_model("qwen2", seed=22), tmp_path / "model", torch.float32, False)
    a = fjord_generate(model_dir, PROMPTS, temperature=1.2, top_k=20, top_p=0.9, seed=5)
    b = fjord_generate(model_dir, PROMPTS, temperature=1.2, top_k=20, top_p=0.9, seed=5)
    assert a == b
    others = [fjord_generate(model_dir, PROMPTS, temperature=1.2, seed=s) for s in (6, 7, 8)]
    assert any(o != a for o in others)
    greedy = fjord_generate(model_dir, PROMPTS)
    stop = greedy[1]["ids"][4]
    stopped = fjord_generate(model_dir, PROMPTS, stop_ids=stop)
    row = stopped[1]
    assert row["finish_reason"] == "stop_token"
    assert row["ids"] == greedy[1]["ids"][:greedy[1]["ids"].index(stop)]
    assert all(0 <= i < VOCAB for r in a for i in r["ids"])
