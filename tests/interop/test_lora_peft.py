"""fjord's LoRA adapters against Hugging Face peft, both ways, plus merged export.

Tiny random Llama, Qwen2, Qwen3, Mistral, Phi3 and Gemma 3 models are made with transformers
(save_pretrained). Then:
  * peft -> fjord: get_peft_model with various LoraConfigs (lists with
    layers_to_transform, a regex, all-linear, rank/alpha patterns, rsLoRA),
    every A and B redrawn non-zero, save_pretrained; fjord loads the adapter
    (`//lora/cli:adapter_tool logits`) and its logits must match
    PeftModel's within 1e-4 (fp32), merged or not;
  * merged export (`adapter_tool export`) loads in AutoModelForCausalLM with
    the same logits;
  * bad adapters (DoRA, fan_in_fan_out, a tampered rank, a truncated file)
    are refused with the exact error.
The fjord -> peft direction (an adapter trained by fjord-train, loaded with
PeftModel.from_pretrained) is in test_fjord_train.py.

    bazel build //lora/cli:adapter_tool
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_lora_peft.py
"""

import json
import os
import pathlib
import subprocess

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Gemma3ForCausalLM, Gemma3TextConfig, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "lora" / "cli" / "adapter_tool"

TOL = 1e-4
VOCAB = 61
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-5,
              max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
IDS = [[5, 17, 3, 44, 9, 60, 1, 2, 33, 8], [7, 7, 21, 0, 56, 12, 40, 3, 19, 25]]


def make_base(arch, tmp, seed=0):
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=False))
    elif arch == "llama_tied":
        model = LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=True))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**COMMON, tie_word_embeddings=True))
    elif arch == "mistral":  # a window of 4 over rows of 10
        model = MistralForCausalLM(MistralConfig(**COMMON, sliding_window=4, tie_word_embeddings=False))
    elif arch == "gemma3":  # a local layer (window 4 over rows of 10) between global ones
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            **COMMON, pad_token_id=0, query_pre_attn_scalar=16, sliding_window=4,
            layer_types=["full_attention", "sliding_attention", "full_attention"]))
    elif arch == "phi3":  # fused qkv_proj and gate_up_proj, tied, half the head rotates, longrope
        model = Phi3ForCausalLM(Phi3Config(
            **COMMON, tie_word_embeddings=True, pad_token_id=0, sliding_window=None, partial_rotary_factor=0.5,
            original_max_position_embeddings=64,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.5, 2.5], "long_factor": [1.0, 4.0, 16.0]}))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=False))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    d = tmp / f"base_{arch}"
    model.eval().save_pretrained(d, safe_serialization=True)
    return d


def peft_adapter(base_dir, cfg, tmp, name="adapter", seed=1):
    """A PEFT adapter with every A and B random (B non-zero), saved; returns (dir, logits)."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    d = tmp / name
    pm.save_pretrained(d)
    pm.eval()
    with torch.no_grad():
        logits = pm(input_ids=torch.tensor(IDS)).logits.float()
    return d, logits


def fjord_logits(base_dir, adapter_dir, tmp, merged=False):
    out = tmp / ("fjord_merged.safetensors" if merged else "fjord.safetensors")
    cmd = [str(TOOL), "logits", "--model", str(base_dir), "--adapter", str(adapter_dir),
           "--ids", ";".join(",".join(map(str, r)) for r in IDS), "--out", str(out)]
    if merged:
        cmd.append("--merged")
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return load_file(out)["logits"]


def check(base_dir, adapter_dir, tmp):
    return subprocess.run([str(TOOL), "check", "--model", str(base_dir), "--adapter", str(adapter_dir)],
                          capture_output=True, text=True)


CONFIGS = {
    "qv_layers": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                    layers_to_transform=[0, 2]),
    "regex": lambda: LoraConfig(r=3, lora_alpha=5, target_modules=r".*layers\.[01]\.(self_attn\.o_proj|mlp\.up_proj)"),
    "all_linear_patterns": lambda: LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                              rank_pattern={"down_proj": 2, r"layers\.1\.self_attn\.k_proj": 6},
                                              alpha_pattern={"gate_proj": 3}),
    "rslora_dropout": lambda: LoraConfig(r=8, lora_alpha=4, use_rslora=True, lora_dropout=0.1,
                                         target_modules=["k_proj", "gate_proj", "down_proj"]),
    "exclude": lambda: LoraConfig(r=2, lora_alpha=2, target_modules="all-linear", exclude_modules=["o_proj"]),
}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral", "gemma3"])
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_peft_adapter_in_fjord(tmp_path, arch, case):
    base = make_base(arch, tmp_path)
    adapter, ref = peft_adapter(base, CONFIGS[case](), tmp_path)
    got = fjord_logits(base, adapter, tmp_path)
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    assert err < TOL, f"{arch}/{case}: max |fjord - peft| = {err}"
    merged = fjord_logits(base, adapter, tmp_path, merged=True)
    err = (merged - ref).abs().max().item()
    assert err < TOL, f"{arch}/{case} merged in fjord: {err}"
    # The adapter matters: the base alone is far off.
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        base_logits = base_model(input_ids=torch.tensor(IDS)).logits
    assert (base_logits - ref).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("arch", ["llama", "llama_tied", "qwen3", "gemma3"])
def test_peft_adapter_on_lm_head_in_fjord(tmp_path, arch):
    """lm_head among peft's targets: peft's file also holds a copy of
    lm_head's base weight (save_embedding_layers), which fjord checks against
    the base model's. The logits equal peft's; merged too, except where
    lm_head is tied to the embeddings (refused: merging would change them)."""
    base = make_base(arch, tmp_path)
    adapter, ref = peft_adapter(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"]), tmp_path)
    assert "base_model.model.lm_head.base_layer.weight" in load_file(adapter / "adapter_model.safetensors")
    err = (fjord_logits(base, adapter, tmp_path) - ref).abs().max().item()
    assert err < TOL, f"{arch}: max |fjord - peft| = {err}"
    tied = json.loads((base / "config.json").read_text()).get("tie_word_embeddings", False)
    if tied:
        with pytest.raises(subprocess.CalledProcessError) as e:
            fjord_logits(base, adapter, tmp_path, merged=True)
        assert "shares its matrix with the embeddings" in e.value.stderr
    else:
        err = (fjord_logits(base, adapter, tmp_path, merged=True) - ref).abs().max().item()
        assert err < TOL, f"{arch} merged in fjord: {err}"
    # A copy that is not the base's lm_head is refused, with the tensor named.
    weights = load_file(adapter / "adapter_model.safetensors")
    weights["base_model.model.lm_head.base_layer.weight"][3, 5] += 1.0
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    r = check(base, adapter, tmp_path)
    assert r.returncode == 1
    assert "'base_model.model.lm_head.base_layer.weight'" in r.stderr and "differs from this base model's" in r.stderr


# Phi3's linear layers as peft names them: the fused qkv_proj and gate_up_proj
# are one module each (one A and one B over all of q, k and v).
PHI3_CONFIGS = {
    "qkv_o_layers": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"],
                                       layers_to_transform=[0, 2]),
    "regex": lambda: LoraConfig(r=3, lora_alpha=5,
                                target_modules=r".*layers\.[01]\.(self_attn\.qkv_proj|mlp\.gate_up_proj)"),
    "all_linear_patterns": lambda: LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                              rank_pattern={"down_proj": 2, r"layers\.1\.self_attn\.qkv_proj": 6},
                                              alpha_pattern={"gate_up_proj": 3}),
}


@pytest.mark.parametrize("case", sorted(PHI3_CONFIGS))
def test_phi3_peft_adapter_in_fjord(tmp_path, case):
    base = make_base("phi3", tmp_path)
    adapter, ref = peft_adapter(base, PHI3_CONFIGS[case](), tmp_path)
    keys = load_file(adapter / "adapter_model.safetensors").keys()
    assert any(".qkv_proj.lora_A" in k or ".gate_up_proj.lora_A" in k for k in keys), sorted(keys)[:4]
    for merged in (False, True):
        got = fjord_logits(base, adapter, tmp_path, merged=merged)
        err = (got - ref).abs().max().item()
        assert err < TOL, f"phi3/{case} (merged {merged}): max |fjord - peft| = {err}"


@pytest.mark.parametrize("arch", ["llama", "llama_tied", "qwen2", "qwen3", "mistral", "phi3", "gemma3"])
def test_merged_export_loads_in_transformers(tmp_path, arch):
    base = make_base(arch, tmp_path)
    adapter, ref = peft_adapter(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), tmp_path)
    (base / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    out = tmp_path / "merged"
    r = subprocess.run([str(TOOL), "export", "--model", str(base), "--adapter", str(adapter), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "tokenizer_config.json").read_text() == (base / "tokenizer_config.json").read_text()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        got = merged(input_ids=torch.tensor(IDS)).logits
    err = (got - ref).abs().max().item()
    assert err < TOL, f"merged export vs peft: {err}"
    # bf16 export: transformers reads the dtype from config.json.
    out16 = tmp_path / "merged16"
    subprocess.run([str(TOOL), "export", "--model", str(base), "--adapter", str(adapter), "--out", str(out16),
                    "--dtype", "bfloat16"], check=True, capture_output=True)
    m16 = AutoModelForCausalLM.from_pretrained(out16)
    assert next(m16.parameters()).dtype == torch.bfloat16


def test_dora_adapter_is_refused(tmp_path):
    base = make_base("llama", tmp_path)
    adapter, _ = peft_adapter(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True), tmp_path)
    r = check(base, adapter, tmp_path)
    assert r.returncode == 1
    assert f"{adapter}/adapter_config.json: field 'use_dora' is true (DoRA adapters); " \
           "fjord loads plain LoRA adapters only" in r.stderr


def test_edited_adapters_are_refused_with_the_exact_error(tmp_path):
    base = make_base("llama", tmp_path)
    adapter, _ = peft_adapter(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path)
    assert check(base, adapter, tmp_path).stdout.startswith("ok: 6 modules")
    config_path = adapter / "adapter_config.json"
    weights_path = adapter / "adapter_model.safetensors"
    original = config_path.read_text()

    config = json.loads(original)
    config["r"] = 8
    config_path.write_text(json.dumps(config))
    r = check(base, adapter, tmp_path)
    assert r.returncode == 1
    assert (f"{weights_path}: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape "
            "[4, 48], expected [8, 48] (rank 8 from adapter_config.json)") in r.stderr

    config["r"] = 4
    config["fan_in_fan_out"] = True
    config_path.write_text(json.dumps(config))
    assert "field 'fan_in_fan_out' is true" in check(base, adapter, tmp_path).stderr
    config_path.write_text(original)

    tensors = load_file(weights_path)
    key = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"
    del tensors[key]
    save_file(tensors, weights_path, metadata={"format": "pt"})
    r = check(base, adapter, tmp_path)
    assert f"{weights_path}: missing 1 tensor(s) adapter_config.json requires: {key}" in r.stderr

    data = weights_path.read_bytes()
    weights_path.write_bytes(data[:-10])
    r = check(base, adapter, tmp_path)
    assert r.returncode == 1
    assert "DATA_LOSS" in r.stderr and str(weights_path) in r.stderr
