"""tools/bench/train_bench.py, the side-by-side training benchmark, as a program.

What a GPU run of the benchmark depends on, checked here on the CPU:
  * the FLOP count behind its MFU: N (the parameters in matrix products) and
    N_lora for every preset, the GPU ones included, against the models
    transformers and peft build (on the meta device: no memory, no time), and
    the GPU presets' shapes against the released models' parameter counts;
  * the dry run (--dry-run): the whole harness on the tiny CPU preset with
    checkpointing off and on — the random checkpoint, each side in its own
    process (transformers + peft with SDPA and with eager attention, fjord's
    //lora/cli:train_bench), Liger and Unsloth skipped with their reasons
    where they cannot run, the correctness guard, the JSON and the tables,
    with packed rows (fjord's per-sequence attention against transformers'
    mask from restarting position ids) as the second table;
  * the Qwen2 layout (q/k/v biases) through make, transformers and fjord;
  * the correctness guard's bounds, its verdict on a diverging side, the
    max-batch search and e2e_gpu.sh's plan (--estimate: nothing runs).
This is not a timed test: the numbers it prints are not asserted.

    bazel build //lora/cli:train_bench
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q tests/bench
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


def run_script(*args, env=None):
    env = {**os.environ, "FJORD_BIN_DIR": str(BIN_DIR), **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def table_lines(stdout, preset):
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [preset]
            and line.split()[1] in ("off", "on")]


@pytest.mark.parametrize("preset", sorted(train_bench.PRESETS))
def test_flop_count_matches_the_models(preset):
    from peft import LoraConfig, get_peft_model

    p = train_bench.PRESETS[preset]
    with torch.device("meta"):
        model = train_bench.hf_model_class(p)(train_bench.hf_config(p))
    matmul = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    if p["tie"]:  # the lm_head is a matrix product whether or not it shares the embedding
        assert model.lm_head.weight is model.model.embed_tokens.weight
    n_matmul = sum(matmul.values())
    n_frozen = sum(x.numel() for x in model.parameters())
    n_bias = sum(x.numel() for name, x in model.named_parameters() if name.endswith(".bias"))
    model = get_peft_model(model, LoraConfig(r=p["rank"], lora_alpha=2 * p["rank"], lora_dropout=0.0,
                                             target_modules="all-linear"))
    n_lora = sum(x.numel() for x in model.parameters() if x.requires_grad)

    fpt, got_matmul, got_lora = train_bench.flops_per_token(p)
    assert got_matmul == n_matmul
    assert got_lora == n_lora
    c, L, T = p["hidden"], p["layers"], p["seq"]
    assert fpt == 4 * n_matmul + 3 * (2 * L * T * c) + 6 * n_lora
    # The embedding lookup, the norms and Qwen2's biases are not in N.
    assert n_bias == train_bench.bias_params(p)
    norms = (2 * L + 1) * c
    assert n_frozen == n_matmul + norms + n_bias + (0 if p["tie"] else p["vocab"] * c)
    assert train_bench.model_bytes(p) >= n_frozen * (2 if p["dtype"] == "bfloat16" else 4)
    # Checkpointing runs the decoder's forward again: more work, same MFU count.
    assert train_bench.executed_flops_per_token(p, False) == fpt
    assert fpt < train_bench.executed_flops_per_token(p, True) < 1.6 * fpt


@pytest.mark.parametrize("preset, params, lora", [
    ("gpu-1b", 1_235_814_400, 11_272_192),        # Llama-3.2-1B (tied embeddings)
    ("gpu-8b", 8_030_261_248, 41_943_040),        # Llama-3.1-8B
    ("gpu-qwen7b", 7_615_616_512, 40_370_176),    # Qwen2.5-7B
])
def test_the_gpu_presets_are_the_released_models(preset, params, lora):
    p = train_bench.PRESETS[preset]
    _, n_matmul, n_lora = train_bench.flops_per_token(p)
    untied_embedding = 0 if p["tie"] else p["vocab"] * p["hidden"]
    n_params = n_matmul + untied_embedding + (2 * p["layers"] + 1) * p["hidden"] + train_bench.bias_params(p)
    assert n_params == params
    assert n_lora == lora
    assert (p["seq"], p["dtype"], p["rank"], p["device"]) == (2048, "bfloat16", 16, "cuda")
    # The correctness guard sees at least its 10 steps.
    assert p["warmup"] + p["steps"] >= 10


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    exe = BIN_DIR / "lora" / "cli" / "train_bench"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: bazel build //lora/cli:train_bench")
    out = tmp_path_factory.mktemp("bench")
    proc = run_script("--dry-run", "--threads", "1", "--json", str(out / "r.json"), "--markdown", str(out / "r.md"))
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "r.json").read_text()), proc.stdout, (out / "r.md").read_text()


def test_the_dry_run_runs_every_side_with_checkpointing_off_and_on(dry_run):
    data, _, _ = dry_run
    p = train_bench.PRESETS["cpu-tiny"]
    rows = data["results"]
    assert [(r["preset"], r["checkpointing"], r.get("segments", 1)) for r in rows] == [
        ("cpu-tiny", False, 1), ("cpu-tiny", True, 1), ("cpu-tiny", False, 2), ("cpu-tiny", True, 2)]
    for row in rows:
        assert list(row["impls"]) == list(train_bench.PEERS)
        for impl in ("hf-sdpa", "fjord", "hf-eager"):
            r = row["impls"][impl]
            assert "error" not in r and "diverged" not in r, (impl, r)
            assert len(r["step_s"]) == p["steps"]
            assert len(r["losses"]) == p["warmup"] + p["steps"]
            assert r["tokens_per_s"] > 0 and r["tokens_per_cpu_s"] > 0 and r["peak_bytes"] > 0
            assert math.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["losses"][-1], abs=1e-5)
            assert "mfu" not in r and "joules_per_mtok" not in r  # CPU: no peak, no NVML
            # Every side trains exactly the adapter the FLOP count assumes.
            assert r["lora_params"] == row["lora_params"]
            assert r["threads"] == 1
        assert row["impls"]["hf-sdpa"]["attn"] == "sdpa"
        assert row["impls"]["hf-eager"]["attn"] == "eager"
    # Checkpointing recomputes; it changes no number.
    for impl in ("hf-sdpa", "fjord"):
        for pair in (rows[:2], rows[2:]):
            off, on = (row["impls"][impl]["losses"] for row in pair)
            assert on == pytest.approx(off, abs=2e-5), impl
    # Packed rows are another function of the same batches: K-1 fewer targets
    # per row, positions restarting.
    assert abs(rows[2]["impls"]["fjord"]["losses"][0] - rows[0]["impls"]["fjord"]["losses"][0]) > 1e-4


def test_liger_is_skipped_on_cpu_and_unsloth_where_missing(dry_run):
    data, stdout, _ = dry_run
    for row in data["results"]:
        assert "Triton has no CPU backend" in row["impls"]["hf-liger"]["skipped"]
        unsloth = row["impls"]["unsloth"]
        if importlib.util.find_spec("unsloth") is None:
            assert "not installed" in unsloth["skipped"]
    assert "cpu-tiny      off  hf-liger skipped: Liger Kernel's ops are Triton kernels" in stdout


def test_the_guard_compares_every_side_with_transformers_sdpa(dry_run):
    data, _, _ = dry_run
    p = train_bench.PRESETS["cpu-tiny"]
    for row in data["results"]:
        assert row["guard_reference"] == "hf-sdpa"
        assert set(row["guard"]) == {"fjord", "hf-eager"}
        for impl, g in row["guard"].items():
            assert g["ok"] and g["steps"] == p["warmup"] + p["steps"], (impl, g)
        # Same weights, same batches, B = 0 at the start, lr 1e-4 for 4 steps:
        # fjord's losses differ from transformers' only by the adapters' random
        # A and fp32 rounding; at step 0 by rounding alone.
        f, h = row["impls"]["fjord"]["losses"], row["impls"]["hf-sdpa"]["losses"]
        assert abs(f[0] - h[0]) < 2e-5
        assert max(abs(a - b) for a, b in zip(f, h)) < 1e-3
        # Uniform logits: ln 320 = 5.77.
        assert abs(h[0] - math.log(p["vocab"])) < 0.5
        assert row["guard_note"].startswith("correctness guard: first 4 losses against hf-sdpa's")


def test_the_tables(dry_run):
    _, stdout, md = dry_run
    lines = table_lines(stdout, "cpu-tiny")
    # The headline, then the packed rows' table under its title.
    want = [[ck, impl] for ck in ("off", "on") for impl in train_bench.PEERS]
    assert [line[1:3] for line in lines] == want + want
    text = stdout.splitlines()
    title = next(i for i, x in enumerate(text) if x.startswith("Packed rows: 2 sequences per row"))
    rows_at = [i for i, x in enumerate(text) if x.split()[:1] == ["cpu-tiny"]]
    assert rows_at[len(want) - 1] < title < rows_at[len(want)]
    for sdpa in (lines[0], lines[len(want)]):
        assert sdpa[4] == "1.00x" and sdpa[-1] == "ref"
    assert md.count("| preset | ckpt | impl | tokens/s | vs hf-sdpa |") == 2
    assert md.count("| cpu-tiny |") == 4 * len(train_bench.PEERS)
    assert "Packed rows: 2 sequences per row" in md
    assert "energy not measured: CPU run" in md


def test_qwen2_through_make_transformers_and_fjord(tmp_path):
    # The Qwen2.5-7B preset's layout (q/k/v biases, drawn at random so that the
    # guard covers them), tiny, checkpointing off.
    proc = run_script("--preset", "cpu-tiny-qwen", "--peers", "hf-sdpa,fjord", "--threads", "1",
                      "--json", str(tmp_path / "q.json"))
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "q.json").read_text())["results"][0]
    embedding, norms = row["vocab"] * row["hidden"], (2 * row["layers"] + 1) * row["hidden"]
    assert row["params"] == row["matmul_params"] + embedding + norms + train_bench.bias_params(row)
    for impl in ("hf-sdpa", "fjord"):
        assert "error" not in row["impls"][impl], row["impls"][impl]
        assert row["impls"][impl]["lora_params"] == row["lora_params"]
    # Every step, not only step 0: all sides start from the harness's adapter.
    assert row["guard"]["fjord"]["ok"] and row["guard"]["fjord"]["max_abs_diff"] < 1e-4, row["guard"]


def test_lora_on_lm_head_too_through_transformers_and_fjord(tmp_path):
    # --lm-head: every side adapts lm_head as well (peft's target list, fjord's
    # --lm_head), the FLOP count's N_lora counts it, and every step agrees.
    proc = run_script("--preset", "cpu-tiny", "--peers", "hf-sdpa,fjord", "--threads", "1", "--lm-head",
                      "--json", str(tmp_path / "h.json"))
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "h.json").read_text())["results"][0]
    assert row["lm_head"] is True
    without = train_bench.flops_per_token(dict(row, lm_head=False))[2]
    assert row["lora_params"] == without + row["rank"] * (row["hidden"] + row["vocab"])
    for impl in ("hf-sdpa", "fjord"):
        assert "error" not in row["impls"][impl], row["impls"][impl]
        assert row["impls"][impl]["lora_params"] == row["lora_params"]
    # From the same adapter (the harness's, --init_from), every step agrees.
    assert row["guard"]["fjord"]["ok"] and row["guard"]["fjord"]["max_abs_diff"] < 1e-4, row["guard"]


def test_a_failing_side_is_reported_not_fatal(tmp_path):
    # fjord's program missing: its row says why (no process is started), and
    # the table prints the reason where the numbers would be.
    p = train_bench.PRESETS["cpu-tiny"]
    args = type("A", (), {"threads": 1, "child_timeout": 60})()
    r = train_bench.run_side("fjord", p, "model", False, args, str(tmp_path / "nowhere"),
                             train_bench.EnergyMeter("cpu"), str(tmp_path))
    assert "nowhere" in r["error"] and "bazel build //lora/cli:train_bench" in r["error"], r
    row = {"preset": "cpu-tiny", "checkpointing": False, "dtype": "float32", "impls": {"fjord": r}}
    train_bench.apply_guard(row, 10)
    head, packed, _ = train_bench.tables([row], [])
    assert head == [["cpu-tiny", "off", "fjord", f"error: {r['error']}"]] and packed == []


def test_the_step_0_bound_separates_bf16_rounding_from_a_missing_mask():
    # TOLERANCE's claim at the tiny preset's shape: two bf16 implementations
    # (SDPA and eager attention) agree at step 0 well inside the bound, and a
    # missing causal mask or unshifted labels move the loss well outside it.
    p = train_bench.PRESETS["cpu-tiny"]
    cls, cfg = train_bench.hf_model_class(p), train_bench.hf_config(p)
    torch.manual_seed(0)
    fp32 = cls._from_config(cfg, attn_implementation="sdpa")
    with torch.no_grad():
        for name, prm in fp32.named_parameters():
            prm.fill_(1.0) if name.endswith("norm.weight") else prm.normal_(0.0, 0.02)
    x = torch.randint(0, p["vocab"], (p["batch"], p["seq"]), generator=torch.Generator().manual_seed(1))

    def loss(attn, **kw):
        model = cls._from_config(cfg, attn_implementation=attn)
        model.load_state_dict(fp32.state_dict())
        model = model.to(torch.bfloat16).eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(input_ids=x, labels=x, **kw).loss.item()

    first, _ = train_bench.TOLERANCE["bfloat16"]
    sdpa = loss("sdpa")
    assert abs(loss("eager") - sdpa) < first / 4
    no_mask = torch.zeros(p["batch"], 1, p["seq"], p["seq"], dtype=torch.bfloat16)
    assert abs(loss("eager", attention_mask=no_mask) - sdpa) > 2 * first
    with torch.no_grad():
        logits = fp32(input_ids=x).logits
    unshifted = torch.nn.functional.cross_entropy(logits.reshape(-1, p["vocab"]), x.reshape(-1)).item()
    assert abs(unshifted - sdpa) > 2 * first


def test_the_packed_rows_sides_agree_and_fjord_gets_its_segments(dry_run):
    data, _, _ = dry_run
    for row in data["results"][2:]:
        assert row["segments"] == 2 and row["guard"]["fjord"]["ok"], row["guard"]
        f, h = row["impls"]["fjord"]["losses"], row["impls"]["hf-sdpa"]["losses"]
        assert abs(f[0] - h[0]) < 2e-5
    # fjord's program was given the segments (its packed path), the unpacked
    # rows' command has none.
    p = dict(train_bench.PRESETS["cpu-tiny"], segments=4)
    args = type("A", (), {"threads": 1})()
    cmd, _ = train_bench.side_command("fjord", p, "m", False, args, str(BIN_DIR))
    assert cmd[cmd.index("--segments") + 1] == "4"
    cmd, _ = train_bench.side_command("fjord", train_bench.PRESETS["cpu-tiny"], "m", False, args, str(BIN_DIR))
    assert "--segments" not in cmd
    # Attention over a packed row costs one sequence's span per token.
    fpt1, _, _ = train_bench.flops_per_token(train_bench.PRESETS["cpu-tiny"])
    fpt4, _, _ = train_bench.flops_per_token(p)
    c, L, T = p["hidden"], p["layers"], p["seq"]
    assert fpt1 - fpt4 == pytest.approx(3 * 2 * L * c * (T - T / 4))


def test_transformers_packed_path_is_per_sequence():
    # The peers' packed rows rest on transformers building a per-sequence mask
    # from restarting position ids (and no attention mask): with weights large
    # enough for attention to matter, a packed row's loss equals the separate
    # sequences' and differs from the same row attended across the boundary.
    from transformers import masking_utils

    p = dict(train_bench.PRESETS["cpu-tiny"], segments=3)
    cls, cfg = train_bench.hf_model_class(p), train_bench.hf_config(p)
    torch.manual_seed(0)
    model = cls._from_config(cfg, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.fill_(1.0) if name.endswith("norm.weight") else prm.normal_(0.0, 0.3)
    T = p["seq"]
    starts = train_bench.segment_starts(T, 3)
    assert starts == [0, T // 3, 2 * (T // 3)]
    x = torch.randint(0, p["vocab"], (1, T), generator=torch.Generator().manual_seed(1))
    pos = torch.cat([torch.arange(b - a) for a, b in zip(starts, starts[1:] + [T])]).unsqueeze(0)
    y = x.clone()
    y[:, starts[1:]] = -100
    with torch.no_grad():
        # use_cache=False as the harness passes it: with a cache transformers
        # takes position ids as a continuation and makes no packed mask.
        packed = model(input_ids=x, labels=y, position_ids=pos, use_cache=False).loss.item()
        total = 0.0
        for a, b in zip(starts, starts[1:] + [T]):
            total += model(input_ids=x[:, a:b], labels=x[:, a:b], use_cache=False).loss.item() * (b - a - 1)
        separate = total / (T - 3)
        original = masking_utils.find_packed_sequence_indices
        try:
            masking_utils.find_packed_sequence_indices = lambda position_ids: None
            across = model(input_ids=x, labels=y, position_ids=pos, use_cache=False).loss.item()
        finally:
            masking_utils.find_packed_sequence_indices = original
    assert packed == pytest.approx(separate, abs=1e-5)
    assert abs(across - packed) > 1e-3, (across, packed)


def test_the_guard_reports_a_diverging_side_instead_of_its_speed():
    ok = dict(tokens_per_s=100.0, tokens_per_cpu_s=100.0, peak_bytes=2**30, loss=11.7, mfu=0.4321,
              joules_per_mtok=123456.0)
    ref = [11.76, 11.75, 11.74]
    row = {"preset": "gpu-8b", "checkpointing": True, "dtype": "bfloat16", "impls": {
        "hf-sdpa": dict(ok, losses=ref),
        "fjord": dict(ok, losses=[11.7615, 11.755, 11.735]),   # inside: 1.5e-3 at step 0, 5e-3 after
        "hf-liger": dict(ok, losses=[11.765, 11.75, 11.74]),  # 5e-3 at step 0: outside
        "unsloth": dict(ok, losses=[11.76, float("nan"), 11.74]),
        "hf-eager": {"skipped": "not asked for"}}}
    train_bench.apply_guard(row, 10)
    assert row["guard"]["fjord"]["ok"] and "diverged" not in row["impls"]["fjord"]
    assert "at step 0" in row["impls"]["hf-liger"]["diverged"]
    assert "at step 1" in row["impls"]["unsloth"]["diverged"]
    head, _, _ = train_bench.tables([row], [])
    assert head[2][3].startswith("diverged: loss 11.76500 at step 0 against hf-sdpa's 11.76000")
    assert head[1][3:] == ["100.0", "1.00x", "100.0", "1024", "43.2%", "123456", "11.7000", "0.005"]
    # No transformers reference: nothing is judged, and the note says so.
    row = {"preset": "x", "checkpointing": False, "dtype": "float32",
           "impls": {"fjord": dict(ok, losses=ref), "hf-sdpa": {"error": "boom"}}}
    train_bench.apply_guard(row, 10)
    assert row["guard"] == {} and "not applied" in row["guard_note"]


def test_energy_from_nvidia_smi_where_nvml_is_missing(tmp_path, monkeypatch):
    # A stand-in nvidia-smi that reports 100 W every 10 ms: the meter
    # integrates it (the CPU venv has no pynvml, so the fallback is taken).
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nwhile :; do echo 100.00; sleep 0.01; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = train_bench.EnergyMeter("cuda")
    try:
        assert meter.how.startswith("nvidia-smi"), meter.skipped
        import time
        time.sleep(0.3)
        t0, e0 = time.monotonic(), meter.read()
        time.sleep(0.5)
        t1, e1 = time.monotonic(), meter.read()
        # 100 W over the interval, give or take a few samples' lag.
        assert abs((e1 - e0) - 100 * (t1 - t0)) < 100 * 0.2, (e1 - e0, t1 - t0)
    finally:
        meter.close()
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    meter = train_bench.EnergyMeter("cuda")
    assert meter.read() is None and "pynvml" in meter.skipped and "nvidia-smi" in meter.skipped
    assert train_bench.EnergyMeter("cpu").skipped == "CPU run"


@pytest.mark.parametrize("limit", [1, 5, 64])
@pytest.mark.parametrize("start", [1, 2, 8])
def test_the_max_batch_search_is_bounded(start, limit):
    for largest in range(0, 70):
        calls = []
        got = train_bench.search_max_batch(lambda b: calls.append(b) or b <= largest, start, limit)
        assert got == min(largest, limit), (largest, calls)
        assert len(calls) <= 2 * math.ceil(math.log2(limit)) + 2
        assert all(1 <= b <= limit for b in calls)


def test_the_max_batch_table_from_a_search(monkeypatch):
    # One process per try; a try that runs out of memory says so, another
    # failure ends the search with its message.
    def fake_side(impl, q, *args):
        if impl == "hf-eager":
            return {"error": "Traceback: boom"}
        if q["batch"] > 5:
            return {"error": "out of memory at step 0: CUDA out of memory. Tried to allocate 2.00 GiB"}
        return {"peak_bytes": q["batch"] * 2**30, "tokens_per_s": 1.0}

    monkeypatch.setattr(train_bench, "run_side", fake_side)
    p = dict(train_bench.PRESETS["gpu-8b"])
    row = {"impls": {"unsloth": {"skipped": "not installed"}}}
    args = type("A", (), {"max_batch": 64})()
    found = [train_bench.max_batch_search(impl, "gpu-8b", p, True, row, "m", args, "b", "s")
             for impl in ("fjord", "hf-eager", "unsloth")]
    assert found[0]["max_batch"] == 5 and found[0]["peak_bytes"] == 5 * 2**30
    assert "boom" in found[1]["error"] and "not installed" in found[2]["skipped"]
    _, _, mb = train_bench.tables([], found)
    assert mb[0] == ["gpu-8b", "on", "fjord", "5", "10240", "5.0", str(found[0]["tries"])]


def test_e2e_gpu_sh_plans_the_default_cut(tmp_path):
    # What gpu_check.sh's e2e step runs, estimated without running it.
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, FJORD_E2E_INSTALL="0")
    proc = subprocess.run(["bash", str(REPO / "tools" / "bench" / "e2e_gpu.sh"), "--estimate"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("gpu-8b")]
    # The headline's four sides, then the packed rows' (4 sequences of 512).
    assert [r[1:-2] for r in rows] == [["-", "make", "model"]] + [
        ["on", x] for x in ("hf-sdpa", "fjord", "hf-liger", "unsloth")] + [
        ["on", "hf-sdpa", "packed", "x4"], ["on", "fjord", "packed", "x4"]]
    assert "total" in proc.stdout
    full = subprocess.run(["bash", str(REPO / "tools" / "bench" / "e2e_gpu.sh"), "full", "--estimate"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert full.returncode == 0, full.stderr
    lines = [line.split() for line in full.stdout.splitlines()]
    assert sum(x[2:3] == ["hf-eager"] for x in lines) == 6  # 3 shapes x 2, unpacked rows only
    assert sorted({x[2] for x in lines if x[3:5] == ["packed", "x4"]}) == ["fjord", "hf-liger", "hf-sdpa"]
