"""fjord-compare (lora/cli/compare_main.cc): the demo's base against the adapter
configs/quickstart.yaml trains on it, on the demo's held-out questions.

  * the report (docs/comparison.md): every candidate, every metric, a pair
    per metric with its bootstrap interval, ranks, samples side by side;
  * the scores are real: the answer loss and token accuracy equal what
    transformers + peft compute for the same prompt and answer tokens (the
    prompt through the tokenizer's own chat template, as fjord renders it);
    the replies' scores follow from the replies in the report;
  * the fine-tune is judged better where the interval says so (contains),
    and the same seed gives the same report;
  * bad input (a malformed line, an unknown adapter directory) is a clear
    error and no report.

    bazel build //lora/cli:fjord-compare //lora/cli:fjord-train //tools/demo:demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_compare.py
"""

import json
import math
import subprocess

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from test_fjord_train import BIN_DIR, DEMO, REPO, TRAIN

COMPARE = BIN_DIR / "lora" / "cli" / "fjord-compare"

pytestmark = pytest.mark.skipif(not (DEMO / "model" / "config.json").exists(),
                                reason="bazel build //tools/demo first")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "out"
    r = subprocess.run([str(TRAIN), "--config", str(REPO / "configs" / "quickstart.yaml"), "--progress", "none",
                        "--set", f"model.path={DEMO}/model", "--set", f"data.train={DEMO}/data/train.jsonl",
                        "--set", f"data.validation={DEMO}/data/valid.jsonl", "--set", f"output.dir={out}",
                        "--set", "training.device=cpu"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "adapter"


def compare(*args, check=True):
    assert COMPARE.exists(), f"{COMPARE} missing: bazel build //lora/cli:fjord-compare"
    r = subprocess.run([str(COMPARE), "--model", str(DEMO / "model"), *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_base_against_the_fine_tune(adapter, tmp_path):
    data = DEMO / "data" / "heldout.jsonl"
    compare("--adapter", f"demo={adapter}", "--data", data, "--out", tmp_path / "r.json", "--seed", "3")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "fjord.compare/1"
    questions = [json.loads(x) for x in data.read_text().splitlines()]
    assert report["examples"] == len(questions)
    names = [c["name"] for c in report["candidates"]]
    assert names == ["base", "demo"]
    metrics = ["loss", "token_accuracy", "exact_match", "normalized_exact_match", "contains", "token_f1"]
    for c in report["candidates"]:
        assert set(metrics + ["perplexity"]) <= set(c["metrics"])
        assert c["speed"]["generated_tokens_per_s"] > 0 and c["peak_rss_bytes"] > 0
    assert sorted(p["metric"] for p in report["pairs"]) == sorted(metrics)
    for p in report["pairs"]:
        assert p["low"] <= p["mean_difference"] <= p["high"]
        assert p["verdict"] in ("better", "worse", "tie")
        if p["verdict"] != "tie":
            assert p["low"] > 0 or p["high"] < 0
    # The fine-tune names the capital in its replies (the demo's answers are
    # whole sentences): contains separates it from the base.
    contains = next(p for p in report["pairs"] if p["metric"] == "contains")
    assert contains["verdict"] == "worse", contains  # base against demo
    assert {r["name"]: r["rank"] for r in report["ranking"]["contains"]} == {"base": 2, "demo": 1}
    # Replies side by side, and their scores follow from them.
    assert len(report["samples"]) == 5
    demo = report["candidates"][1]["metrics"]
    assert demo["contains"] >= 0.5
    for s in report["samples"]:
        assert set(s["replies"]) == {"base", "demo"}

    # The answer loss as transformers + peft compute it on the same tokens.
    tok = AutoTokenizer.from_pretrained(DEMO / "model")
    for i in range(2):
        # A fresh base each time: PeftModel injects its layers into the model it wraps.
        model = AutoModelForCausalLM.from_pretrained(DEMO / "model", dtype=torch.float32).eval()
        if i == 1:
            model = PeftModel.from_pretrained(model, adapter).eval()
        losses, right = [], []
        for q in questions:
            prompt = tok.apply_chat_template([{"role": "user", "content": q["prompt"]}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
            answer = tok.encode(q["answer"], add_special_tokens=False)
            ids = torch.tensor([prompt + answer])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            target = torch.tensor(answer)
            losses.append(torch.nn.functional.cross_entropy(logits, target).item())
            right.append((logits.argmax(-1) == target).float().mean().item())
        got = report["candidates"][i]["metrics"]
        assert got["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-4), names[i]
        assert got["token_accuracy"] == pytest.approx(sum(right) / len(right), abs=1e-6), names[i]

    # Seeded: the same report again.
    compare("--adapter", f"demo={adapter}", "--data", data, "--out", tmp_path / "again.json", "--seed", "3")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["pairs"] == report["pairs"] and again["samples"] == report["samples"]


def test_bad_inputs_are_named(adapter, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is the capital of Peru?", "answer": "Lima"}\n{"prompt": "x"}\n')
    r = compare("--adapter", f"demo={adapter}", "--data", bad, "--out", tmp_path / "r.json", check=False)
    assert r.returncode == 1 and "bad.jsonl" in r.stderr and "line 2" in r.stderr and "answer" in r.stderr
    assert not (tmp_path / "r.json").exists()
    r = compare("--adapter", f"x={tmp_path / 'none'}", "--data", DEMO / "data" / "heldout.jsonl",
                "--out", tmp_path / "r.json", check=False)
    assert r.returncode == 1 and "adapter_config.json" in r.stderr
    assert compare("--data", bad, check=False).returncode == 1
    assert compare("--no-base", "--data", bad, check=False).returncode == 2


def test_training_data_is_scored_on_its_trained_tokens(adapter, tmp_path):
    """A dataset in a training format (here chat messages) beside the
    questions: its examples are scored by loss, perplexity and token accuracy
    on the assistant turns' tokens (what training would train), equal to
    transformers + peft's on the same tokens; no replies, no reply metrics."""
    chat = DEMO / "data" / "valid.jsonl"
    compare("--adapter", f"demo={adapter}", "--data", DEMO / "data" / "heldout.jsonl", "--data", chat,
            "--out", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "fjord.evaluation/1"
    answers, data = report["datasets"]
    assert answers["kind"] == "answers" and data["kind"] == "training_data"
    assert data["metrics"] == ["loss", "perplexity", "token_accuracy"] and data["samples"] == []
    assert {p["metric"] for p in data["pairs"]} == {"loss", "token_accuracy"}
    loss = next(p for p in data["pairs"] if p["metric"] == "loss")
    assert loss["verdict"] == "worse"  # the base's loss is higher: worse than the fine-tune
    tok = AutoTokenizer.from_pretrained(DEMO / "model")
    rows = [json.loads(x)["messages"] for x in chat.read_text().splitlines()]
    for i in range(2):
        model = AutoModelForCausalLM.from_pretrained(DEMO / "model", dtype=torch.float32).eval()
        if i == 1:
            model = PeftModel.from_pretrained(model, adapter).eval()
        losses = []
        for messages in rows:
            prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                             return_dict=False)
            full = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
            assert full[:len(prompt)] == prompt
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([full])).logits[0, len(prompt) - 1:-1]
            losses.append(torch.nn.functional.cross_entropy(logits, torch.tensor(full[len(prompt):])).item())
        got = data["candidates"][i]["metrics"]
        assert got["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-4), i
        assert got["perplexity"] == pytest.approx(math.exp(got["loss"]), rel=1e-12)
        low, high = data["candidates"][i]["intervals"]["loss"]["low"], data["candidates"][i]["intervals"]["loss"]["high"]
        assert low <= got["loss"] <= high


def test_other_bases_are_candidates_too(adapter, tmp_path):
    """--base NAME=DIR: another model folder is a candidate of its own, read
    once and scored on the same questions with its own tokenizer. Its losses
    are compared only with candidates whose tokenizer.json is the same bytes
    (tokens of different tokenizers are different units); replies are
    compared with every candidate."""
    import shutil
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(DEMO / "model", same)
    shutil.copytree(DEMO / "model", other)
    t = json.loads((other / "tokenizer.json").read_text())
    (other / "tokenizer.json").write_text(json.dumps(t, indent=1))  # same tokenizer, other bytes
    compare("--adapter", f"demo={adapter}", "--base", f"same={same}", "--base", f"other={other}",
            "--data", DEMO / "data" / "heldout.jsonl", "--out", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    by = {c["name"]: c for c in report["candidates"]}
    assert by["same"]["model"] == str(same) and by["other"]["model"] == str(other)
    assert by["same"]["metrics"] == by["base"]["metrics"] == by["other"]["metrics"]  # the same weights
    # Identical candidates are never told apart: every pair of them is a tie.
    identical = [p for p in report["pairs"] if {p["a"], p["b"]} <= {"base", "same", "other"}]
    assert identical and all(p["verdict"] == "tie" and p["low"] == p["high"] == 0 for p in identical)
    loss_pairs = {(p["a"], p["b"]) for p in report["pairs"] if p["metric"] == "loss"}
    assert loss_pairs == {("base", "demo"), ("base", "same"), ("demo", "same")}
    contains_pairs = {(p["a"], p["b"]) for p in report["pairs"] if p["metric"] == "contains"}
    assert ("demo", "other") in contains_pairs and len(contains_pairs) == 6
