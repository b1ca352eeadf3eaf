"""fjord-train end to end, as a process: PEFT interop of what it trains, exact
resume after a stop (--stop-after-steps and SIGTERM), the daemon report
socket, `validate`, exit codes, and learning on the demo data.

Tiny Llama / Qwen2 models are made with transformers (save_pretrained) with a
tokenizer trained here with `tokenizers` (Llama 3 / ChatML special tokens);
the demo (//tools/demo) is the project's own pretrained toy model.

    bazel build //lora/cli:fjord-train //lora/cli:adapter_tool //runtime/data:validate_tool //tools/demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_fjord_train.py
"""

import json
import os
import pathlib
import signal
import subprocess
import time

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TRAIN = BIN_DIR / "lora" / "cli" / "fjord-train"
TOOL = BIN_DIR / "lora" / "cli" / "adapter_tool"
DEMO = BIN_DIR / "tools" / "demo" / "out"

TOL = 1e-4
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
THINGS = ["apple", "sky", "leaf", "sun", "grape", "carrot", "night", "snow"]


def make_tokenizer(arch):
    specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
                if arch == "llama" else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"What color is the {t}? The {t} is {c}." for t, c in zip(THINGS, COLORS)] * 4
    corpus += ["user", "assistant", "system", "\n\n", "\n"] * 10
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if arch == "llama":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def make_job(tmp, arch="llama", **overrides):
    """A tiny model + tokenizer + chat data + job config under tmp; returns (config path, model dir)."""
    tok = make_tokenizer(arch)
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    elif arch == "qwen3":  # per-head q/k norms, an explicit head_dim, tied like the small Qwen3s
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16, tie_word_embeddings=True))
    elif arch == "gemma3":  # local (window 8) and global layers, (1 + w) norms, GeGLU
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=12, pad_token_id=0, query_pre_attn_scalar=12,
                                                   sliding_window=8,
                                                   layer_types=["sliding_attention", "full_attention"]))
    elif arch == "phi3":  # fused qkv_proj / gate_up_proj, half of each head rotates (Phi-4-mini: 3/4)
        model = Phi3ForCausalLM(Phi3Config(**common, tie_word_embeddings=True, pad_token_id=0,
                                           partial_rotary_factor=0.5, sliding_window=None))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    mdir = tmp / "model"
    model.save_pretrained(mdir, safe_serialization=True)
    tok.save(str(mdir / "tokenizer.json"))
    data = tmp / "train.jsonl"
    with open(data, "w") as f:
        for i in range(24):
            t, c = THINGS[i % 8], COLORS[i % 8]
            f.write(json.dumps({"messages": [{"role": "user", "content": f"What color is the {t}?"},
                                             {"role": "assistant", "content": f"The {t} is {c}."}]}) + "\n")
    cfg = {
        "model": {"path": str(mdir)},
        "data": {"train": str(data), "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"},
        "training": {"max_steps": 8, "micro_batch_size": 2, "learning_rate": 5e-3, "warmup_steps": 1,
                     "device": "cpu", "seed": 3, "threads": 1},
        "checkpoint": {"every_steps": 2, "keep_last": 3},
        "output": {"dir": str(tmp / "out")},
    }
    for key, value in overrides.items():
        section, field = key.split("__")
        cfg.setdefault(section, {})[field] = value
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, mdir


def run_train(config, *args, check_rc=0):
    r = subprocess.run([str(TRAIN), "--config", str(config), "--progress", "none", *args],
                       capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert r.returncode == check_rc, f"rc {r.returncode}\n{r.stderr[-3000:]}"
    return r


IDS = [[1, 5, 9, 20, 33, 7, 2, 60], [4, 4, 100, 8, 16, 23, 42, 15]]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "phi3", "gemma3"])
def test_adapter_trained_by_fjord_loads_in_peft(tmp_path, arch):
    config, mdir = make_job(tmp_path, arch)
    run_train(config)
    adapter = tmp_path / "out" / "adapter"
    meta = json.loads((adapter / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA" and meta["task_type"] == "CAUSAL_LM"
    assert meta["r"] == 4 and meta["lora_alpha"] == 8 and meta["bias"] == "none"
    assert meta["base_model_name_or_path"] == str(mdir)
    modules = (["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] if arch == "phi3" else
               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert sorted(meta["target_modules"]) == sorted(modules)
    weights = load_file(adapter / "adapter_model.safetensors")
    assert len(weights) == 2 * len(modules) * 2
    assert all(k.startswith("base_model.model.model.layers.") for k in weights)
    assert max(v.abs().max().item() for k, v in weights.items() if "lora_B" in k) > 1e-3  # it trained

    base = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = peft_model(input_ids=torch.tensor(IDS)).logits
    out = tmp_path / "fjord_logits.safetensors"
    subprocess.run([str(TOOL), "logits", "--model", str(mdir), "--adapter", str(adapter), "--ids",
                    ";".join(",".join(map(str, r)) for r in IDS), "--out", str(out)], check=True)
    got = load_file(out)["logits"]
    err = (got - ref).abs().max().item()
    assert err < TOL, f"fjord vs peft on fjord's adapter: {err}"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # lm_head tied to the embeddings, and not
def test_an_adapted_lm_head_trains_as_in_peft(tmp_path, arch):
    """LoRA on lm_head too (fjord's loss over it runs chunk by chunk:
    model::HeadCrossEntropySum): three optimizer steps of one example each,
    in file order, from the same PEFT adapter (random A and B; fjord-train's
    lora.init_from), give transformers + peft's step losses (on the ids and
    targets fjord's own tokenization gives: validate_tool --examples-out)
    and, after them, the same adapter (AdamW, constant learning rate,
    gradient clipping at 1.0 on both sides)."""
    from peft import LoraConfig, get_peft_model
    modules = ["q_proj", "v_proj", "lm_head"]
    config, mdir = make_job(tmp_path, arch)
    base = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    torch.manual_seed(5)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=modules))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape))
    model.save_pretrained(tmp_path / "init")
    start = load_file(tmp_path / "init" / "adapter_model.safetensors")
    # peft also saves lm_head's base weight when lm_head is a target
    # (save_embedding_layers); fjord checks it is the base model's.
    assert "base_model.model.lm_head.base_layer.weight" in start
    start = {k: v for k, v in start.items() if ".base_layer." not in k}

    cfg = yaml.safe_load(config.read_text())
    cfg["data"].update({"shuffle": False, "packing": False})
    cfg["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": modules, "init_from": str(tmp_path / "init")}
    cfg["training"].update({"max_steps": 3, "micro_batch_size": 1, "learning_rate": 1e-2, "lr_scheduler": "constant",
                            "warmup_steps": 0, "max_grad_norm": 1.0, "weight_decay": 0.0})
    config.write_text(yaml.safe_dump(cfg))
    events = tmp_path / "events.jsonl"
    run_train(config, "--events", str(events))
    steps = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]

    examples_out = tmp_path / "examples.jsonl"
    r = subprocess.run([str(BIN_DIR / "runtime" / "data" / "validate_tool"), str(mdir / "tokenizer.json"),
                        cfg["data"]["train"], "--model-dir", str(mdir), "--max-length", "64",
                        "--examples-out", str(examples_out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    examples = [json.loads(x) for x in examples_out.read_text().splitlines()]
    model.train()
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    for mine, ex in zip(steps, examples):
        targets = torch.tensor(ex["targets"])
        logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0, :len(targets)]
        loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
        loss = loss / (targets != -100).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        assert mine["loss"] == pytest.approx(loss.item(), abs=1e-5), (mine["step"], mine["loss"], loss.item())
    got = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert sorted(got) == sorted(start)
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            assert (got[key] - p.detach()).abs().max().item() < 1e-4, key
    moved = max((got[k] - start[k]).abs().max().item() for k in got if ".lm_head." in k)
    assert moved > 1e-3  # the steps moved lm_head's adapter


def test_stop_after_steps_then_resume_is_bitwise_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    config_a, _ = make_job(a)
    config_b, _ = make_job(b)
    run_train(config_a)
    r = run_train(config_b, "--stop-after-steps", "3", check_rc=75)
    assert "stopped at step 3" in r.stderr
    assert (b / "out" / "checkpoints" / "step-00000003" / "MANIFEST.json").exists()
    assert not (b / "out" / "adapter").exists()
    r = run_train(config_b)
    assert "resumed from" in r.stderr and "at step 3" in r.stderr
    wa = (a / "out" / "adapter" / "adapter_model.safetensors").read_bytes()
    wb = (b / "out" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert wa == wb
    # keep_last 3 of the checkpoints at 2, 4, 6, 8.
    assert sorted(p.name for p in (a / "out" / "checkpoints").iterdir()) == [
        "step-00000004", "step-00000006", "step-00000008"]


def test_sigterm_checkpoints_then_exits_75(tmp_path):
    config, _ = make_job(tmp_path, training__max_steps=100000, checkpoint__every_steps=0)
    events = tmp_path / "events.jsonl"
    p = subprocess.Popen([str(TRAIN), "--config", str(config), "--progress", "none", "--events", str(events)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def reached_step_3():
        if not events.exists():
            return False
        for line in events.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:  # a line still being written
                continue
            if e["type"] == "step" and e["step"] >= 3:
                return True
        return False

    deadline = time.time() + 120
    while not reached_step_3():
        assert time.time() < deadline, "fjord-train did not reach step 3 in 120 s"
        assert p.poll() is None, p.communicate()[1]
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 75, err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    cps = [e for e in lines if e["type"] == "checkpoint"]
    assert len(cps) == 1 and cps[0]["step"] >= 3
    assert pathlib.Path(cps[0]["message"]).exists()


def test_report_socket_gets_events_and_heartbeats(tmp_path):
    zmq = pytest.importorskip("zmq")
    config, _ = make_job(tmp_path, training__max_steps=3)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    endpoint = f"ipc://{tmp_path}/worker.sock"
    pull.bind(endpoint)
    run_train(config, "--report", endpoint)
    types = []
    while pull.poll(1000):
        types.append(json.loads(pull.recv())["type"])
    pull.close()
    ctx.term()
    assert "heartbeat" in types
    assert types.count("step") == 3
    assert "start" in types and types[-1] in ("done", "heartbeat")
    assert "done" in types


def test_validate_and_exit_codes(tmp_path):
    config, _ = make_job(tmp_path)
    r = subprocess.run([str(TRAIN), "validate", "--config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["valid"] and report["train"]["examples"] == 24

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    r = subprocess.run([str(TRAIN), "validate", "--config", str(config), "--set", f"data.train={bad}"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert json.loads(r.stdout)["valid"] is False

    # The held-out prompts (eval.heldout) are checked line by line too.
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text('{"prompt": "What color is the sky?", "answer": "blue"}\n{"prompt": "x?"}\n')
    r = subprocess.run([str(TRAIN), "validate", "--config", str(config), "--set", f"eval.heldout={heldout}"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["valid"] is False and report["train"]["valid"]
    assert report["heldout"]["questions"] == 1
    assert report["heldout"]["errors"] == [{"line": 2, "field": "answer", "message": "missing field 'answer'"}]
    heldout.write_text('{"prompt": "What color is the sky?", "answer": "blue"}\n')
    r = subprocess.run([str(TRAIN), "validate", "--config", str(config), "--set", f"eval.heldout={heldout}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["heldout"]["summary"] == "valid: 1 question"
    r = subprocess.run([str(TRAIN), "validate", "--config", str(config), "--set",
                        f"eval.heldout={tmp_path}/none.jsonl"], capture_output=True, text=True)
    assert r.returncode == 2
    assert json.loads(r.stdout)["heldout"] == {"error": f"cannot open held-out file {tmp_path}/none.jsonl"}

    r = run_train(config, "--set", "lora.r=0", check_rc=2)
    assert "--set: field 'lora.r'" in r.stderr and "out of range" in r.stderr
    r = run_train(config, "--set", "lora.target_modules=[c_attn]", check_rc=2)
    assert "target_modules [c_attn] matched no linear layer" in r.stderr
    text = config.read_text().replace("learning_rate", "learning_rat")
    config.write_text(text)
    r = run_train(config, check_rc=2)
    assert "unknown key" in r.stderr and "learning_rat" in r.stderr


@pytest.mark.skipif(not (DEMO / "model" / "config.json").exists(), reason="bazel build //tools/demo first")
def test_quickstart_config_learns_the_demo(tmp_path):
    """configs/quickstart.yaml on the demo: eval loss falls by half, held-out accuracy rises."""
    out = tmp_path / "out"
    events = tmp_path / "events.jsonl"
    r = subprocess.run([str(TRAIN), "--config", str(REPO / "configs" / "quickstart.yaml"), "--progress", "lines",
                        "--events", str(events),
                        "--set", f"model.path={DEMO}/model", "--set", f"data.train={DEMO}/data/train.jsonl",
                        "--set", f"data.validation={DEMO}/data/valid.jsonl",
                        "--set", f"eval.heldout={DEMO}/data/heldout.jsonl", "--set", f"output.dir={out}",
                        "--set", "training.device=cpu"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [json.loads(x) for x in events.read_text().splitlines() if '"done"' in x][-1]
    evals = [json.loads(x) for x in events.read_text().splitlines() if '"type":"eval"' in x.replace(" ", "")]
    first, last = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert last < 0.5 * first, f"eval loss {first} -> {last}"
    assert "held-out answer accuracy" in r.stderr
    line = [x for x in r.stderr.splitlines() if x.startswith("held-out answer accuracy")][0]
    before, after = [float(v.strip().rstrip("%")) for v in line.split(":")[1].split("->")]
    assert after > before + 20, line
    assert done["heldout_accuracy"] >= 0.5
    # Before training: in the step-0 eval event (and in no other eval event).
    assert evals[0]["step"] == 0 and round(100 * evals[0]["heldout_accuracy"]) == before
    assert all("heldout_accuracy" not in e for e in evals[1:])
    assert f"held-out answers {100 * evals[0]['heldout_accuracy']:.1f}%" in r.stderr
