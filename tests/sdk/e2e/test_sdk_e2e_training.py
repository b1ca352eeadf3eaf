"""Real fine-tunes end to end: fjordd runs fjord-train on the demo model
(tools/demo: a tiny Llama-architecture model, tokenizer.json, instruction
data), driven by the Python SDK and by the fjord CLI (built on the C++
client). The adapters they download load with peft on the demo base model;
the eval loss falls; a running job cancels with a checkpoint; bad data, an
unknown model and a model directory that is not there fail with errors that
say so.

    bazel build //daemon/server:fjordd //sdk/cpp/cli:fjord //lora/cli:fjord-train //tools/demo:demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/e2e/test_sdk_e2e_training.py
"""

import json
import os
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import fjord
from fjordd import DEMO, FJORD_CLI, FJORD_TRAIN, Fjordd, require, require_trainer

SHORT = {"epochs": 1, "max_steps": 12, "batch_size": 1, "learning_rate": 2e-3, "warmup_steps": 2,
         "max_length": 256, "eval_every_steps": 6, "checkpoint_every_steps": 6}


@pytest.fixture(scope="module")
def daemon():
    require_trainer()
    require(FJORD_CLI, DEMO / "model" / "config.json", DEMO / "data" / "train.jsonl")
    with Fjordd(worker=FJORD_TRAIN, models={"demo": str(DEMO / "model"), "gone": "/nonexistent/fjord-model"}) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="module")
def data(client):
    return (client.files.upload(DEMO / "data" / "train.jsonl"), client.files.upload(DEMO / "data" / "valid.jsonl"))


def load_adapter(path):
    base = AutoModelForCausalLM.from_pretrained(DEMO / "model")
    model = PeftModel.from_pretrained(base, str(path))
    return base, model


def check_adapter_loads_and_changes_the_model(path, r):
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == r
    tensors = load_file(path / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items()), "LoRA B is all zeros: not trained"
    base_logits_model = AutoModelForCausalLM.from_pretrained(DEMO / "model")
    _, model = load_adapter(path)
    ids = torch.tensor([[0, 10, 20, 30, 40, 50]])
    with torch.no_grad():
        a = base_logits_model(ids).logits
        b = model(ids).logits
    assert not torch.allclose(a, b), "the adapter does not change the model's output"


def test_python_sdk_fine_tune_follow_download_load_with_peft(daemon, client, data, tmp_path):
    train, valid = data
    seen = []
    job = client.jobs.create(model="demo", training_file=train, validation_file=valid, hyperparameters=SHORT,
                             lora={"r": 8, "alpha": 16}, suffix="e2e")
    job = job.wait(on_event=seen.append)
    assert job.status == "succeeded", f"{job.error}\n{daemon.worker_log('acme', job.id)}"
    steps = [e.data for e in seen if e.type == "step"]
    assert [s["step"] for s in steps] == list(range(1, 13)) and steps[-1]["total_steps"] == 12
    assert all(s["loss"] > 0 and s["tokens_per_s"] > 0 for s in steps)
    evals = [(e.data["step"], e.data["eval_loss"]) for e in seen if e.type == "eval"]
    assert [s for s, _ in evals] == [0, 6, 12]
    assert evals[-1][1] < evals[0][1] * 0.9, f"eval loss did not fall: {evals}"
    assert job.metrics["eval_loss"] == pytest.approx(evals[-1][1])
    assert [c.step for c in client.jobs.checkpoints(job.id)] == [6, 12]
    out = client.adapters.download(job.id, tmp_path / "adapter")
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    check_adapter_loads_and_changes_the_model(out, r=8)


def test_python_sdk_heldout_answers_before_and_after(client, data, tmp_path):
    """heldout_file through fjordd: the base model's held-out answer accuracy in
    the step-0 eval event, the fine-tuned one's in done and the job's metrics;
    a malformed held-out file fails the job in validation, naming it."""
    train, valid = data
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join((DEMO / "data" / "heldout.jsonl").read_text().splitlines(keepends=True)[:4]))
    seen = []
    job = client.jobs.create(model="demo", training_file=train, validation_file=valid, heldout_file=heldout,
                             hyperparameters={**SHORT, "max_steps": 4, "checkpoint_every_steps": 0})
    assert job.heldout_file.startswith("file-")  # a pathlib.Path is uploaded first
    job = job.wait(on_event=seen.append)
    assert job.status == "succeeded", job.error
    evals = [e.data for e in seen if e.type == "eval"]
    assert evals[0]["step"] == 0 and 0 <= evals[0]["heldout_accuracy"] <= 1
    assert all("heldout_accuracy" not in e for e in evals[1:])
    done = next(e.data for e in seen if e.type == "done")
    assert 0 <= done["heldout_accuracy"] <= 1
    assert job.metrics["heldout_accuracy"] == done["heldout_accuracy"]

    heldout.write_text('{"prompt": "What is the capital of Peru?", "answer": "Lima"}\n{"prompt": "x?"}\n')
    job = client.jobs.create(model="demo", training_file=train, heldout_file=heldout,
                             hyperparameters={"max_length": 256}).wait(timeout=120)
    assert job.status == "failed" and job.error.user_error
    assert job.error.param == "heldout_file"
    assert "line 2 (answer): missing field 'answer'" in job.error.message, job.error
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="demo", training_file=train, heldout_file="files/none.jsonl")
    assert e.value.param == "heldout_file"


JOB_YAML = """\
model: demo
training_file: train.jsonl
validation_file: valid.jsonl
hyperparameters:
  max_steps: 8
  batch_size: 1
  learning_rate: 2.0e-3
  max_length: 256
lora:
  r: 4
  target_modules: [q_proj, v_proj]
"""


def test_cli_fine_tune_wait_plot_download(daemon, tmp_path):
    shutil.copy(DEMO / "data" / "train.jsonl", tmp_path / "train.jsonl")
    shutil.copy(DEMO / "data" / "valid.jsonl", tmp_path / "valid.jsonl")
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    r = daemon.cli("jobs", "create", "-f", "job.yaml", "--wait", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("created "))
    assert f"job {job_id} succeeded: adapter at" in r.stdout
    assert "8/8  loss " in r.stdout and "tok/s" in r.stdout
    r = daemon.cli("jobs", "plot", job_id, "-o", tmp_path / "loss.svg")
    assert r.returncode == 0 and "8 training-loss points, 2 eval-loss points" in r.stdout, r.stdout + r.stderr
    r = daemon.cli("adapters", "download", job_id, "-o", tmp_path / "adapter")
    assert r.returncode == 0, r.stderr
    check_adapter_loads_and_changes_the_model(tmp_path / "adapter", r=4)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]


def test_cancel_a_training_job_keeps_its_checkpoint(client, data):
    train, valid = data
    job = client.jobs.create(model="demo", training_file=train, validation_file=valid,
                             hyperparameters={**SHORT, "max_steps": 0, "epochs": 50, "eval_every_steps": 0,
                                              "checkpoint_every_steps": 0})
    with client.jobs.events(job.id, follow=True) as stream:
        for e in stream:
            if e.type == "step" and e.data["step"] >= 3:
                break
    assert job.cancel().status in ("cancelling", "cancelled")
    final = job.wait(timeout=120)
    assert final.status == "cancelled"
    assert 3 <= final.step < final.total_steps
    assert final.latest_checkpoint is not None and final.latest_checkpoint.step >= 3  # checkpointed on SIGTERM
    with pytest.raises(fjord.FailedPreconditionError):
        client.adapters.download(job.id, "/tmp/never")


def test_errors_bad_data_unknown_model_missing_model_dir(daemon, client, data, tmp_path):
    train, _ = data
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                   '{"messages": [{"role": "robot", "content": "beep"}]}\n')
    job = client.jobs.create(model="demo", training_file=client.files.upload(bad), hyperparameters={"max_length": 256})
    job = job.wait(timeout=120)
    assert job.status == "failed" and job.error.user_error
    assert "line 2" in job.error.message and "robot" in job.error.message, job.error
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="llama-9000", training_file=train)
    assert e.value.param == "model"
    # The operator's model directory is missing: the job fails in validation, saying which path.
    job = client.jobs.create(model="gone", training_file=train, hyperparameters={"max_length": 256}).wait(timeout=120)
    assert job.status == "failed"
    assert "/nonexistent/fjord-model" in job.error.message, job.error
    r = daemon.cli("jobs", "get", job.id)
    assert r.returncode == 0 and "/nonexistent/fjord-model" in r.stdout
