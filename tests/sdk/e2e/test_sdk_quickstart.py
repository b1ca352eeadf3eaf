"""`fjord quickstart` as a customer runs it: a local fjordd on loopback with
fresh keys, the demo data uploaded, a fine-tune streamed, the adapter
downloaded, the daemon stopped and its temporary state removed. The full demo
recipe takes a few minutes (tools/quickstart.sh); here a short job file keeps
the same path to a few seconds of training.

    bazel build //daemon/server:fjordd //sdk/cpp/cli:fjord //lora/cli:fjord-train //tools/demo:demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/e2e/test_sdk_quickstart.py
"""

import glob
import json
import os
import subprocess

from peft import PeftModel
from transformers import AutoModelForCausalLM

from fjordd import DEMO, FJORD_CLI, FJORD_TRAIN, FJORDD, require, require_trainer


def quickstart(args, env_extra=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FJORD_")}
    env.update(FJORD_FJORDD=str(FJORDD), FJORD_TRAIN=str(FJORD_TRAIN), FJORD_DEMO_DIR=str(DEMO))
    env.update(env_extra or {})
    return subprocess.run([str(FJORD_CLI), "quickstart", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_quickstart_fine_tunes_downloads_and_cleans_up(tmp_path):
    require_trainer()
    require(FJORD_CLI, FJORDD, DEMO / "model" / "config.json")
    (tmp_path / "job.yaml").write_text(
        f"model: demo\ntraining_file: {DEMO}/data/train.jsonl\nvalidation_file: {DEMO}/data/valid.jsonl\n"
        f"heldout_file: {DEMO}/data/heldout.jsonl\n"
        "hyperparameters:\n  max_steps: 10\n  batch_size: 1\n  learning_rate: 2.0e-3\n  max_length: 256\n")
    before = set(glob.glob("/tmp/fjord-quickstart-*"))
    r = quickstart(["--job", tmp_path / "job.yaml", "--dir", tmp_path / "out"])
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    assert "quickstart: starting fjordd on tcp://127.0.0.1:" in text
    assert "status: queued -> running (started on" in text and "10/10  loss " in text
    assert f"PEFT adapter: {tmp_path}/out/adapter/ (adapter_config.json, adapter_model.safetensors)" in text
    assert "  eval loss: " in text and "quickstart: stopped fjordd\n" in text
    first, last = (float(x) for x in text.split("  eval loss: ")[1].split(" (")[0].split(" -> "))
    assert last < first
    # The held-out answers before (the step-0 eval) and after (done); a job
    # file of one's own gets no word about the demo's countries.
    line = [x for x in text.splitlines() if x.startswith("  held-out answers: ")]
    assert len(line) == 1 and line[0].endswith("%"), text
    first_answers, last_answers = (float(x.rstrip("%")) for x in line[0].split(": ")[1].split(" -> "))
    assert 0 <= first_answers <= 100 and 0 <= last_answers <= 100
    assert "eval  step 0/10  loss " in text and "held-out answers " in text.split("eval  step 0/10")[1].splitlines()[0]
    # The second step: the base against the fine-tune, as an evaluation job.
    assert "comparing the base with the fine-tune: job-" in text
    assert "CANDIDATE" in text and "\nfine-tune " in text and "\nbase " in text
    assert f"report: {tmp_path}/out/comparison/report.html" in text
    assert (tmp_path / "out" / "comparison" / "report.html").read_text().startswith("<!DOCTYPE html>")
    # The daemon's state is gone: no state directory made during the run is
    # left (another quickstart running meanwhile may remove its own).
    assert not set(glob.glob("/tmp/fjord-quickstart-*")) - before
    assert not any(FJORDD.name in p for p in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                            text=True).stdout.splitlines()
                   if str(tmp_path) in p)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DEMO / "model"), str(tmp_path / "out" / "adapter"))
    assert model.peft_config["default"].r == 16


def test_quickstart_json_summary(tmp_path):
    require_trainer()
    require(FJORD_CLI, FJORDD, DEMO / "model" / "config.json")
    (tmp_path / "job.yaml").write_text(
        f"model: demo\ntraining_file: {DEMO}/data/train.jsonl\nvalidation_file: {DEMO}/data/valid.jsonl\n"
        f"heldout_file: {DEMO}/data/heldout.jsonl\n"
        "hyperparameters:\n  max_steps: 4\n  batch_size: 1\n  max_length: 256\n")
    r = quickstart(["--json", "--job", tmp_path / "job.yaml", "--dir", tmp_path / "out"])
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert "created" in docs[0] and all("event" in d for d in docs[1:-1])
    summary = docs[-1]
    assert summary["job"]["status"] == "succeeded"
    assert summary["adapter"] == f"{tmp_path}/out/adapter"
    assert summary["eval_loss_last"] < summary["eval_loss_first"]
    # The held-out answer accuracy before (the step-0 eval event's) and after (done's).
    evals = [d["event"] for d in docs[1:-1] if d["event"]["type"] == "eval"]
    done = [d["event"] for d in docs[1:-1] if d["event"]["type"] == "done"][0]
    assert summary["heldout_accuracy_first"] == evals[0]["data"]["heldout_accuracy"]
    assert summary["heldout_accuracy_last"] == done["data"]["heldout_accuracy"]
    assert 0 <= summary["heldout_accuracy_first"] <= 1 and 0 <= summary["heldout_accuracy_last"] <= 1
    assert summary["job"]["heldout_file"].startswith("file-")  # uploaded
    assert summary["job"]["metrics"]["heldout_accuracy"] == summary["heldout_accuracy_last"]
    assert summary["comparison"] == f"{tmp_path}/out/comparison"
    report = json.loads((tmp_path / "out" / "comparison" / "report.json").read_text())
    assert report["schema"] == "fjord.evaluation/1" and report["model"] == "demo"
    assert [c["name"] for c in report["datasets"][0]["candidates"]] == ["base", "fine-tune"]


def test_quickstart_says_what_to_build(tmp_path):
    require(FJORD_CLI)
    r = quickstart(["--dir", tmp_path], env_extra={"FJORD_FJORDD": str(tmp_path / "no-fjordd")})
    assert r.returncode == 9  # FAILED_PRECONDITION
    assert f"FJORD_FJORDD={tmp_path}/no-fjordd is not an executable" in r.stderr
    env = {"FJORD_BIN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "FJORD_FJORDD": "", "FJORD_TRAIN": "",
           "FJORD_DEMO_DIR": ""}
    r = quickstart(["--dir", tmp_path / "x"], env_extra=env)
    assert r.returncode == 9
    assert "fjordd not found" in r.stderr and "bazel build //daemon/server:fjordd" in r.stderr
