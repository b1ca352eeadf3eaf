"""runtime/model against transformers' eager forward.

Tiny random Llama, Qwen2, Qwen3, Mistral, Phi3 and Gemma 3 models are built with the venv's transformers,
saved with save_pretrained (one model.safetensors, or sharded through
max_shard_size; float32 or bfloat16), and run through
`//runtime/model:model_tool logits`; its logits must match
`AutoModelForCausalLM.from_pretrained(dir, attn_implementation="eager")` on
the same ids.

Every parameter is redrawn (randn · 0.15, norms 1 + randn · 0.1, biases
too), so norm weights and biases matter, and logits are O(1), not O(0.01).

Tolerances (max |fjord - transformers| over all logits):
  float32 compute (fp32 or bf16 checkpoint loaded as fp32):  1e-4
  bfloat16 compute (bf16 checkpoint, both sides in bf16):    FP32_VS_BF16 below:
    fjord's error against the fp32 reference must stay within 2x transformers'
    own bf16 error + 0.02, and the two bf16 runs within 0.25 of each other
    (bf16 keeps 8 bits of mantissa: 1 ulp at |x| = 4 is 0.03).

    bazel build //runtime/model:model_tool
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_model_parity.py
"""

import json
import os
import pathlib
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          Gemma3ForCausalLM, Gemma3TextConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "model" / "model_tool"

FP32_TOL = 1e-4
BF16_PAIR_TOL = 0.25
BF16_REL_TO_HF = 2.0
BF16_SLACK = 0.02

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2)

# name -> (model class, config)
CASES = {
    # GQA, llama3 RoPE scaling with a short original context so that positions
    # up to 40 span the high/medium/low frequency bands; untied.
    "llama_gqa_llama3": lambda: (LlamaForCausalLM, LlamaConfig(
        **COMMON, rope_theta=10000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    # Tied embeddings, attention and MLP biases, linear RoPE scaling.
    "llama_tied_bias_linear": lambda: (LlamaForCausalLM, LlamaConfig(
        **COMMON, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # Qwen2: q/k/v biases, untied, theta 1e6.
    "qwen2": lambda: (Qwen2ForCausalLM, Qwen2Config(
        **COMMON, rope_theta=1000000.0, tie_word_embeddings=False)),
    # Qwen2 tied (as the small Qwen2 checkpoints are).
    "qwen2_tied": lambda: (Qwen2ForCausalLM, Qwen2Config(**COMMON, tie_word_embeddings=True)),
    # Qwen3: RMSNorm of each head's q and k before RoPE, an explicit head_dim
    # of 24 (not hidden / heads = 16), theta 1e6, untied.
    "qwen3": lambda: (Qwen3ForCausalLM, Qwen3Config(
        **{**COMMON, "head_dim": 24}, rope_theta=1000000.0, tie_word_embeddings=False)),
    # Mistral with a sliding window of 8 tokens over rows of 40 (and packed
    # runs of up to 25): the windowed path, against transformers' own mask.
    "mistral_window": lambda: (MistralForCausalLM, MistralConfig(
        **COMMON, rope_theta=1000000.0, sliding_window=8, tie_word_embeddings=False)),
    # Mistral without a window (v0.2 on), an explicit head_dim as Mistral-Nemo has.
    "mistral_nowindow": lambda: (MistralForCausalLM, MistralConfig(
        **{**COMMON, "head_dim": 24}, sliding_window=None, tie_word_embeddings=False)),
    # Qwen3 tied (the 0.6B-4B checkpoints), with attention_bias (q, k, v and o).
    "qwen3_tied_bias": lambda: (Qwen3ForCausalLM, Qwen3Config(
        **COMMON, tie_word_embeddings=True, attention_bias=True)),
    # Phi-3-mini's layout: fused qkv_proj and gate_up_proj, default RoPE, a
    # sliding window (8 tokens over rows of 40), untied.
    "phi3_window": lambda: (Phi3ForCausalLM, Phi3Config(
        **COMMON, sliding_window=8, tie_word_embeddings=False, pad_token_id=0)),
    # Phi-4-mini's: tied, partial rotary (0.75 of 16: 12 dimensions turn),
    # LongRoPE with a pre-training length of 64: rows of 40 take the short
    # factors, and cos/sin carry the attention factor of 256 / 64.
    "phi3_longrope_short": lambda: (Phi3ForCausalLM, Phi3Config(
        **COMMON, tie_word_embeddings=True, pad_token_id=0, sliding_window=None,
        partial_rotary_factor=0.75, original_max_position_embeddings=64,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0],
                      "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]})),
    # The same with a pre-training length of 32: rows of 40 take the long factors.
    "phi3_longrope_long": lambda: (Phi3ForCausalLM, Phi3Config(
        **COMMON, tie_word_embeddings=True, pad_token_id=0, sliding_window=None,
        partial_rotary_factor=0.75, original_max_position_embeddings=32,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0],
                      "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]})),
    # Gemma 3: scaled embeddings, (1 + w) norms on both sides of attention and
    # the MLP, GeGLU, q/k norms, query_pre_attn_scalar 24 (not head_dim 16),
    # a local layer (window 8, RoPE base 1e4) and a global one (base 1e6,
    # linear scaling 2), tied.
    "gemma3": lambda: (Gemma3ForCausalLM, Gemma3TextConfig(
        **COMMON, pad_token_id=0, query_pre_attn_scalar=24, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})),
    # Gemma 3 with three layers from the default pattern's rule (every second
    # one global here), final logit soft-capping, attention biases, untied.
    "gemma3_softcap": lambda: (Gemma3ForCausalLM, Gemma3TextConfig(
        **{**COMMON, "num_hidden_layers": 3}, pad_token_id=0, query_pre_attn_scalar=16, sliding_window=6,
        sliding_window_pattern=2, final_logit_softcapping=3.0, attention_bias=True, tie_word_embeddings=False)),
}


def build_model(case, seed):
    cls, cfg = CASES[case]()
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model


def save(model, path, dtype, sharded):
    model = model.to(dtype)
    kwargs = {"max_shard_size": "40KB"} if sharded else {}
    model.save_pretrained(path, **kwargs)
    files = sorted(os.listdir(path))
    if sharded:
        assert "model.safetensors.index.json" in files, files
        assert sum(f.endswith(".safetensors") for f in files) > 1, files
    else:
        assert "model.safetensors" in files, files
    return path


def run_tool(*args, check=True):
    assert TOOL.exists(), f"{TOOL} missing: run `bazel build //runtime/model:model_tool` first"
    proc = subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"model_tool {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return proc


def rows_arg(rows):
    return ";".join(",".join(str(int(v)) for v in row) for row in rows)


def fjord_logits(model_dir, ids, tmp_path, dtype="float32", segments=None):
    out = tmp_path / f"logits_{dtype}_{segments is not None}.safetensors"
    args = ["logits", "--model", model_dir, "--ids", rows_arg(ids.tolist()), "--dtype", dtype,
            "--out", out]
    if segments is not None:
        args += ["--segments", rows_arg(segments.tolist())]
    run_tool(*args)
    logits = load_file(str(out))["logits"]
    assert logits.dtype == torch.float32
    assert logits.shape == (ids.shape[0], ids.shape[1], VOCAB)
    return logits


def hf_logits(model_dir, ids, dtype):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def random_ids(seed, batch=2, length=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_fp32_logits_match(case, sharded, tmp_path):
    model_dir = save(build_model(case, seed=1), tmp_path / "model", torch.float32, sharded)
    ids = random_ids(seed=2)
    want = hf_logits(model_dir, ids, torch.float32)
    got = fjord_logits(model_dir, ids, tmp_path)
    assert want.abs().max() > 1.0  # the logits are not trivially small
    diff = (got - want).abs().max().item()
    assert diff <= FP32_TOL, f"{case}: max abs diff {diff}"


@pytest.mark.parametrize("case", ["llama_gqa_llama3", "qwen2_tied", "phi3_longrope_short", "gemma3"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_bf16_checkpoint(case, sharded, tmp_path):
    model_dir = save(build_model(case, seed=3), tmp_path / "model", torch.bfloat16, sharded)
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "bfloat16"
    ids = random_ids(seed=4)

    # bf16 weights computed in fp32 on both sides: fp32 tolerance.
    ref32 = hf_logits(model_dir, ids, torch.float32)
    got32 = fjord_logits(model_dir, ids, tmp_path, dtype="float32")
    diff32 = (got32 - ref32).abs().max().item()
    assert diff32 <= FP32_TOL, f"{case}: fp32 compute, max abs diff {diff32}"

    # Both in bf16, compared in fp32.
    hf16 = hf_logits(model_dir, ids, torch.bfloat16)
    got16 = fjord_logits(model_dir, ids, tmp_path, dtype="bfloat16")
    hf_err = (hf16 - ref32).abs().max().item()
    our_err = (got16 - ref32).abs().max().item()
    pair = (got16 - hf16).abs().max().item()
    assert our_err <= BF16_REL_TO_HF * hf_err + BF16_SLACK, (
        f"{case}: bf16 error vs fp32 {our_err}, transformers' own {hf_err}")
    assert pair <= BF16_PAIR_TOL, f"{case}: bf16 fjord vs transformers max abs diff {pair}"


@pytest.mark.parametrize("case", ["llama_gqa_llama3", "qwen2", "mistral_window", "phi3_window",
                                  "phi3_longrope_short", "gemma3"])
def test_packed_rows_match_separate_forwards(case, tmp_path):
    model_dir = save(build_model(case, seed=5), tmp_path / "model", torch.float32, False)
    g = torch.Generator().manual_seed(6)
    # Row 0: sequences of 7 and 25 tokens, 3 padding tokens (segment 0).
    # Row 1: sequences of 20, 14 and 1 token.
    lengths = [[7, 25], [20, 14, 1]]
    seqs = [[torch.randint(0, VOCAB, (n,), generator=g) for n in row] for row in lengths]
    width = 35
    ids = torch.zeros(2, width, dtype=torch.int64)
    segments = torch.zeros(2, width, dtype=torch.int64)
    for r, row in enumerate(seqs):
        at = 0
        for s, seq in enumerate(row):
            ids[r, at:at + len(seq)] = seq
            segments[r, at:at + len(seq)] = s + 1
            at += len(seq)
    got = fjord_logits(model_dir, ids, tmp_path, segments=segments)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    worst = 0.0
    for r, row in enumerate(seqs):
        at = 0
        for seq in row:
            with torch.no_grad():
                want = model(input_ids=seq.unsqueeze(0)).logits[0].float()
            worst = max(worst, (got[r, at:at + len(seq)] - want).abs().max().item())
            at += len(seq)
    assert worst <= FP32_TOL, f"{case}: packed vs separate max abs diff {worst}"


def test_unknown_architecture_is_refused(tmp_path):
    # A mixture of experts (Mixtral): refused by name, with what is supported.
    cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=2,
                        num_experts_per_tok=1)
    MixtralForCausalLM(cfg).save_pretrained(tmp_path / "mixtral")
    proc = run_tool("logits", "--model", tmp_path / "mixtral", "--ids", "1,2,3", "--out",
                    tmp_path / "out.safetensors", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "MixtralForCausalLM" in proc.stderr
    assert "is not supported" in proc.stderr
    assert "Phi3ForCausalLM" in proc.stderr  # in the list of supported ones
    assert "config.json" in proc.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_deleted_tensor_is_named(tmp_path):
    model_dir = save(build_model("qwen2", seed=7), tmp_path / "model", torch.float32, False)
    weights = load_file(str(model_dir / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    proc = run_tool("logits", "--model", model_dir, "--ids", "1,2,3", "--out",
                    tmp_path / "out.safetensors", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "model.layers.1.mlp.up_proj.weight" in proc.stderr
    assert "NOT_FOUND" in proc.stderr


def test_deleted_tensor_in_sharded_checkpoint_is_named(tmp_path):
    model_dir = save(build_model("llama_gqa_llama3", seed=8), tmp_path / "model", torch.float32,
                     True)
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    victim = "model.layers.0.self_attn.k_proj.weight"
    shard = model_dir / index["weight_map"][victim]
    weights = load_file(str(shard))
    del weights[victim]
    save_file(weights, str(shard), metadata={"format": "pt"})
    proc = run_tool("logits", "--model", model_dir, "--ids", "1,2,3", "--out",
                    tmp_path / "out.safetensors", check=False)
    assert proc.returncode == 1, proc.stderr
    assert victim in proc.stderr

    # Dropped from the index as well: the model reports the tensor missing.
    del index["weight_map"][victim]
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    proc = run_tool("logits", "--model", model_dir, "--ids", "1,2,3", "--out",
                    tmp_path / "out.safetensors", check=False)
    assert proc.returncode == 1, proc.stderr
    assert victim in proc.stderr
    assert "NOT_FOUND" in proc.stderr


def test_bad_usage_exits_2(tmp_path):
    proc = run_tool("logits", "--model", tmp_path, "--ids", "1,x", "--out", tmp_path / "o",
                    check=False)
    assert proc.returncode == 2
    assert "--ids: 'x' is not an integer" in proc.stderr
    proc = run_tool("bogus", check=False)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
