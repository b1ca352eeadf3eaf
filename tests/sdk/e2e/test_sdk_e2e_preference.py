"""A preference-tuning (DPO) job end to end through a real fjordd running
fjord-train: the demo's preference pairs uploaded, `method: dpo` with its
settings in job.create, TRL's metrics (rewards/accuracies, ...) in the job's
metrics and events, the held-out reward accuracy raised, and a PEFT adapter
out (docs/user-guide.md, "Preference tuning").

    bazel build //daemon/server:fjordd //lora/cli:fjord-train //tools/demo:demo //tools/demo:demo_preference
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/e2e/test_sdk_e2e_preference.py
"""

import json

import pytest

import fjord
from fjordd import DEMO, FJORD_TRAIN, Fjordd, require, require_trainer

# configs/dpo_quickstart.yaml's plan, as job fields.
PLAN = {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "lr_scheduler": "constant", "max_length": 64}


def test_dpo_job_through_fjordd(tmp_path):
    require_trainer()
    require(DEMO / "model" / "config.json", DEMO / "preference" / "train.jsonl", DEMO / "preference" / "valid.jsonl")
    with Fjordd(worker=FJORD_TRAIN, models={"demo": str(DEMO / "model")}) as d, d.client() as client:
        job = client.jobs.create(model="demo", training_file=DEMO / "preference" / "train.jsonl",
                                 validation_file=DEMO / "preference" / "valid.jsonl", hyperparameters=PLAN,
                                 lora={"dropout": 0.0}, method="dpo", preference={"beta": 0.1})
        assert job.method == "dpo" and job.preference["beta"] == 0.1 and job.preference["loss_type"] == "sigmoid"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            client.jobs.create(model="demo", training_file=job.training_file, method="dpo",
                               heldout_file=DEMO / "data" / "heldout.jsonl")
        assert e.value.param == "heldout_file"
        job = job.wait(timeout=600, raise_on_failure=True)
        m = job.metrics
        for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                     "logps/chosen", "logps/rejected", "eval_rewards/accuracies"):
            assert name in m, (name, m)
        evals = [e for e in job.events() if e.type == "eval"]
        assert evals[0].data["eval_rewards/accuracies"] == 0.0  # at step 0 the policy is the reference
        assert m["eval_rewards/accuracies"] >= 0.7 and m["eval_loss"] < evals[0].data["eval_loss"]
        adapter = client.adapters.download(job.id, tmp_path / "adapter")
        assert (adapter / "adapter_model.safetensors").exists()
        # The CLI's flags say the same (the job object carries them).
        r = d.cli("--json", "jobs", "create", "--model", "demo", "--training-file", job.training_file,
                  "--method", "orpo", "--beta", "0.2", "--max-steps", "2", "--max-length", "64")
        assert r.returncode == 0, r.stderr
        created = json.loads(r.stdout.splitlines()[-1])
        created = created.get("job", created)
        assert created["method"] == "orpo" and created["preference"]["beta"] == 0.2
        client.jobs.cancel(created["id"])
