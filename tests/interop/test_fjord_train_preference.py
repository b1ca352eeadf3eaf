"""fjord-train with training.method dpo on the demo's preference pairs
(//tools/demo:demo_preference): DPO raises the reward accuracy on held-out
pairs (countries never asked about in training) from 0 (policy = reference
before training) to at least 70%; step and eval events carry TRL's metric
names; `validate` reports bad preference lines with their line and field.

    bazel build //lora/cli:fjord-train //tools/demo:demo //tools/demo:demo_preference
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_fjord_train_preference.py
"""
import json
import os
import pathlib
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TRAIN = BIN_DIR / "lora" / "cli" / "fjord-train"
DEMO = BIN_DIR / "tools" / "demo" / "out"


def job(tmp, **sets):
    if not (DEMO / "preference" / "train.jsonl").exists() or not TRAIN.exists():
        pytest.skip("build //lora/cli:fjord-train //tools/demo:demo //tools/demo:demo_preference first")
    cfg = yaml.safe_load((REPO / "configs" / "dpo_quickstart.yaml").read_text())
    cfg["model"]["path"] = str(DEMO / "model")
    cfg["data"]["train"] = str(DEMO / "preference" / "train.jsonl")
    cfg["data"]["validation"] = str(DEMO / "preference" / "valid.jsonl")
    cfg["output"]["dir"] = str(tmp / "out")
    for key, value in sets.items():
        section, field = key.split("__")
        cfg[section][field] = value
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dpo_raises_heldout_reward_accuracy(tmp_path):
    events = tmp_path / "events.jsonl"
    r = subprocess.run([str(TRAIN), "--config", str(job(tmp_path)), "--progress", "none", "--events", str(events)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    evals = [e for e in lines if e["type"] == "eval"]
    steps = [e for e in lines if e["type"] == "step"]
    assert evals[0]["step"] == 0 and evals[0]["eval_rewards/accuracies"] == 0.0  # policy == reference
    assert abs(evals[0]["eval_loss"] - 0.6931) < 1e-3  # log 2
    assert evals[-1]["eval_rewards/accuracies"] >= 0.7, evals[-1]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    for name in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                 "logps/rejected"]:
        assert name in steps[-1] and ("eval_" + name) in evals[-1]
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_validate_reports_bad_preference_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "a"}\n{"prompt": "hi", "chosen": "a"}\n')
    path = job(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["train"] = str(bad)
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(TRAIN), "validate", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    report = json.loads(r.stdout)
    assert report["valid"] is False and report["train"]["kind"] == "preference"
    errors = report["train"]["errors"]
    assert errors[0]["line"] == 1 and errors[0]["field"] == "rejected" and "identical" in errors[0]["message"]
    assert errors[1]["line"] == 2 and errors[1]["field"] == "rejected" and "missing" in errors[1]["message"]


def run(config, *args, rc=0, timeout=300):
    r = subprocess.run([str(TRAIN), "--config", str(config), "--progress", "none", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == rc, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_stopped_and_resumed_is_bitwise_identical(tmp_path, precompute):
    """A DPO run stopped after 5 steps and resumed from its checkpoint ends
    with the same adapter, byte for byte, as one run straight through (the
    reference log-probs are the base's either way: in each step, or once
    before step 1)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sets = dict(training__max_steps=12, checkpoint__every_steps=5, preference__precompute_ref=precompute)
    run(job(a, **sets))
    r = run(job(b, **sets), "--stop-after-steps", "5", rc=75)
    assert "stopped at step 5" in r.stderr
    r = run(job(b, **sets))
    assert "resumed from" in r.stderr
    wa = (a / "out" / "adapter" / "adapter_model.safetensors").read_bytes()
    wb = (b / "out" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert wa == wb


def test_dpo_on_two_data_parallel_ranks_matches_one(tmp_path):
    """DPO on two Gloo ranks (each its share of the pairs, gradients
    all-reduced, the loss normalised over the global batch) follows the
    one-rank run: the same losses per step and the same adapter, within
    float tolerance."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    sets = dict(training__max_steps=6, training__micro_batch_size=1, training__gradient_accumulation_steps=2)
    run(job(one, **sets), "--events", one / "events.jsonl")
    run(job(two, **dict(sets, training__gradient_accumulation_steps=1)), "--events", two / "events.jsonl",
        "--nproc-per-node", 2, timeout=600)
    def losses(d):
        return [e["loss"] for e in map(json.loads, (d / "events.jsonl").read_text().splitlines())
                if e["type"] == "step"]
    l1, l2 = losses(one), losses(two)
    assert len(l1) == len(l2) == 6
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5), (l1, l2)
    from safetensors.torch import load_file
    w1 = load_file(one / "out" / "adapter" / "adapter_model.safetensors")
    w2 = load_file(two / "out" / "adapter" / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        assert (w1[k] - w2[k]).abs().max().item() < 1e-4, k


def step_events(d):
    return [e for e in map(json.loads, (d / "events.jsonl").read_text().splitlines()) if e["type"] == "step"]


def assert_same_adapter(a, b, atol=1e-4):
    # 1e-4 as test_dpo_on_two_data_parallel_ranks_matches_one: AdamW turns
    # last-bit differences in a near-zero gradient into lr-sized steps
    # (|w| ~ 4e-3 here; 8.5e-5 seen).
    from safetensors.torch import load_file
    wa = load_file(a / "out" / "adapter" / "adapter_model.safetensors")
    wb = load_file(b / "out" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < atol, k


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_on_a_sharded_base_trains_as_on_the_whole_base(tmp_path, precompute):
    """DPO with the frozen base sharded across two Gloo ranks (each rank its
    own pairs, so its own number of sequences: the gathers must not depend on
    them; the reference log-probs, adapter off, through the same sharded
    base) follows the same two-rank run with the base whole on each rank:
    the same losses, reward accuracies, validation and adapter within float
    tolerance (each sequence's log-prob is summed from per-token losses
    instead of its own fused sum)."""
    runs = {}
    for name, shard in (("whole", False), ("sharded", True)):
        d = tmp_path / name
        d.mkdir()
        sets = dict(training__max_steps=4, training__micro_batch_size=1, eval__every_steps=2,
                    preference__precompute_ref=precompute, model__shard_base=shard)
        run(job(d, **sets), "--events", d / "events.jsonl", "--nproc-per-node", 2, timeout=600)
        runs[name] = d
    whole, sharded = step_events(runs["whole"]), step_events(runs["sharded"])
    assert [e["step"] for e in whole] == [e["step"] for e in sharded] == [1, 2, 3, 4]
    for x, y in zip(whole, sharded):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
        assert y["rewards/accuracies"] == pytest.approx(x["rewards/accuracies"], abs=1e-6), (x, y)
        assert "base_gather_bytes" not in x and y["base_gather_bytes"] > 0
    evals = {name: [e["eval_loss"] for e in map(json.loads, (d / "events.jsonl").read_text().splitlines())
                    if e["type"] == "eval"] for name, d in runs.items()}
    assert len(evals["whole"]) == len(evals["sharded"]) >= 2
    assert evals["sharded"] == pytest.approx(evals["whole"], rel=1e-5)
    assert_same_adapter(runs["whole"], runs["sharded"])


def test_dpo_on_a_sharded_base_stopped_on_two_ranks_resumes_on_three(tmp_path):
    """A sharded DPO run stopped on two ranks resumes on three: the step's 4
    micro-batches then fall 2, 1, 1 to the ranks, so ranks 1 and 2 make a
    pass of no pairs to stay in step with rank 0's gathers. It ends where the
    uninterrupted run ends."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir()
    cut.mkdir()
    sets = dict(training__max_steps=6, training__micro_batch_size=1, training__gradient_accumulation_steps=2,
                checkpoint__every_steps=3, preference__precompute_ref=False, model__shard_base=True)
    run(job(full, **sets), "--events", full / "events.jsonl", "--nproc-per-node", 2, timeout=600)
    config = job(cut, **sets)
    r = run(config, "--events", cut / "events.jsonl", "--stop-after-steps", 3, "--nproc-per-node", 2, rc=75,
            timeout=600)
    assert "stopped at step 3" in r.stderr
    run(config, "--events", cut / "events.jsonl", "--nproc-per-node", 3, timeout=600)
    a, b = step_events(full), step_events(cut)
    assert [e["step"] for e in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
    assert_same_adapter(full, cut)
