"""tools/bench/train_bench.py, the side-by-side training benchmark, as a program.

What a GPU run of the benchmark depends on, checked here on the CPU:
  * the FLOP count behind its MFU: N (the parameters in matrix products) and
    N_lora for every preset, the GPU ones included, against the models
    transformers and peft build (on the meta device: no memory, no time);
  * the whole harness on the tiny CPU preset: the random checkpoint, both
    sides in their own processes (transformers + peft, and fjord's
    //lora/cli:train_bench), the JSON and the table. Both sides fine-tune the
    same weights on the same batches with B = 0 at the start, so their losses
    must agree closely; fjord must train exactly N_lora parameters.
This is not a timed test: the numbers it prints are not asserted.

    bazel build //lora/cli:train_bench
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/bench/test_train_bench.py
"""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
SCRIPT = REPO / "tools" / "bench" / "train_bench.py"

spec = importlib.util.spec_from_file_location("train_bench", SCRIPT)
train_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_bench)


@pytest.mark.parametrize("preset", sorted(train_bench.PRESETS))
def test_flop_count_matches_the_models(preset):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    p = train_bench.PRESETS[preset]
    with torch.device("meta"):
        model = LlamaForCausalLM(train_bench.hf_config(p))
    matmul = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    if p["tie"]:  # the lm_head is a matrix product whether or not it shares the embedding
        assert model.lm_head.weight is model.model.embed_tokens.weight
    n_matmul = sum(matmul.values())
    n_frozen = sum(x.numel() for x in model.parameters())
    model = get_peft_model(model, LoraConfig(r=p["rank"], lora_alpha=2 * p["rank"], lora_dropout=0.0,
                                             target_modules="all-linear"))
    n_lora = sum(x.numel() for x in model.parameters() if x.requires_grad)

    fpt, got_matmul, got_lora = train_bench.flops_per_token(p)
    assert got_matmul == n_matmul
    assert got_lora == n_lora
    c, L, T = p["hidden"], p["layers"], p["seq"]
    assert fpt == 4 * n_matmul + 3 * (2 * L * T * c) + 6 * n_lora
    # The embedding lookup and the norms are not in N.
    norms = (2 * L + 1) * c
    assert n_frozen == n_matmul + norms + (0 if p["tie"] else p["vocab"] * c)
    assert train_bench.model_bytes(p) >= n_frozen * (2 if p["dtype"] == "bfloat16" else 4)


def test_the_8b_preset_is_llama_3_1_8b():
    # The 8B shape: ~8.03 B parameters, r 16 on all linear layers.
    p = train_bench.PRESETS["gpu-8b"]
    _, n_matmul, n_lora = train_bench.flops_per_token(p)
    n_params = n_matmul + p["vocab"] * p["hidden"] + (2 * p["layers"] + 1) * p["hidden"]
    assert n_params == 8_030_261_248
    assert n_lora == 41_943_040
    assert (p["seq"], p["dtype"], p["rank"]) == (2048, "bfloat16", 16)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    exe = BIN_DIR / "lora" / "cli" / "train_bench"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: bazel build //lora/cli:train_bench")
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    env = dict(os.environ, FJORD_BIN_DIR=str(BIN_DIR))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", "cpu-tiny", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_tiny_preset_runs_both_sides(tiny_run):
    results, table = tiny_run
    assert len(results) == 1
    row = results[0]
    p = train_bench.PRESETS["cpu-tiny"]
    assert row["preset"] == "cpu-tiny"
    for impl in ("hf", "fjord"):
        r = row[impl]
        assert "error" not in r, r
        assert len(r["step_s"]) == p["steps"]
        assert r["tokens_per_s"] > 0 and r["tokens_per_cpu_s"] > 0 and r["peak_bytes"] > 0
        assert math.isfinite(r["loss"])
        assert "mfu" not in r  # CPU: no peak to count against
    # fjord trains exactly the adapter the FLOP count assumes.
    assert row["fjord"]["lora_params"] == row["lora_params"]
    assert row["fjord"]["threads"] == 1
    # Same weights, same batches, B = 0 at the start, lr 1e-4 for 4 steps: the
    # losses differ only by the adapters' random A and fp32 rounding. A wrong
    # label shift or normalisation moves them by far more (uniform logits:
    # ln 320 = 5.77).
    assert abs(row["fjord"]["loss"] - row["hf"]["loss"]) < 1e-3, (row["fjord"]["loss"], row["hf"]["loss"])
    assert abs(row["hf"]["loss"] - math.log(p["vocab"])) < 0.5
    # The table has a line per side and the ratio line.
    lines = [line.split() for line in table.splitlines()]
    assert [line[:2] for line in lines if line and line[0] == "cpu-tiny"] == [
        ["cpu-tiny", "hf"], ["cpu-tiny", "fjord"], ["cpu-tiny", "ratio"]]


def test_a_failing_side_is_reported_not_fatal(tmp_path):
    # fjord's program missing: its row says why, the other side still runs.
    env = dict(os.environ, FJORD_BIN_DIR=str(tmp_path / "nowhere"))
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", "cpu-tiny", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())[0]
    assert "error" not in row["hf"]
    assert "nowhere" in row["fjord"]["error"], row["fjord"]
    assert "cpu-tiny fjord  error:" in proc.stdout
