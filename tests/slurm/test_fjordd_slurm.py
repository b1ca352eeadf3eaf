"""fjordd in front of a real Slurm cluster (executor: slurm): customers use the
SDK as ever; each job becomes one Slurm batch job whose ranks srun starts,
and whose rank 0 reports to fjordd over tcp with CURVE (a key pair of its own,
in its job directory). Against the single-node cluster of slurm_cluster.py:

- a 2-rank job trains through fjordd, streams its events, and its adapter
  equals the one `fjord-train --nproc-per-node 2` trains from the same job;
- cancel, pause and resume (a new Slurm job, resumed from the checkpoint);
- `scontrol requeue` mid-run: back to waiting, then resumed from the
  checkpoint, one adapter;
- fjordd killed with -9 mid-run: the next fjordd adopts the Slurm job, which
  was never stopped nor started twice;
- scancel outside fjord: the job fails and says so;
- a job no node of the partition can hold: refused at job.create with
  Slurm's reason.

The quick cases run the daemon's fake worker (daemon/worker/fake_worker.cc)
as the trainer; the first runs fjord-train on the demo model.

    bazel build //daemon/server:fjordd //daemon/worker:fake_worker //lora/cli:fjord-train //tools/demo:demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/slurm
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (REPO / "sdk" / "python", REPO / "tests" / "sdk", REPO / "tests" / "sdk" / "e2e", REPO / "tests" / "interop"):
    sys.path.insert(0, str(p))

import fjord  # noqa: E402
from fjordd import DEMO, FAKE_WORKER, FJORD_TRAIN, Fjordd, fake_data, require  # noqa: E402
from ports import free_port  # noqa: E402
from slurm_cluster import slurm_missing  # noqa: E402

pytestmark = pytest.mark.skipif(bool(slurm_missing()), reason=slurm_missing() or "-")


def slurm(env, *args):
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def slurm_state(env, slurm_id):
    r = slurm(env, "scontrol", "show", "job", "--oneliner", slurm_id)
    for word in r.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return r.stderr.strip()


def executor(env, **more):
    return {"kind": "slurm",
            "slurm": {"report_listen": f"tcp://127.0.0.1:{free_port()}", "slurm_conf": env["SLURM_CONF"],
                      "ranks_per_node": 2, "cpus_per_task": 1, "poll_interval_s": 0.2,
                      "signal_before_limit_s": 0, **more}}


def wait_for(job, predicate, timeout=120, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job.refresh()
        if predicate(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: job is {job.status}, {job.error}")


@pytest.fixture(scope="module")
def daemon(cluster):
    env, _ = cluster
    require(FAKE_WORKER)
    with Fjordd(worker=FAKE_WORKER, executor=executor(env)) as d:
        yield d, env


@pytest.fixture(scope="module")
def client(daemon):
    d, _ = daemon
    with d.client() as c:
        yield c


def fake_job(client, tmp_path, name, gpus=1, **script):
    train = client.files.upload(pathlib.Path(fake_data(tmp_path / f"{name}.jsonl", **script)))
    return client.jobs.create(model="demo", training_file=train, gpus=gpus, max_restarts=2)


def events_of(client, job):
    return list(client.jobs.events(job.id))


def test_a_two_rank_job_trains_through_slurm_and_equals_local_training(cluster, tmp_path):
    env, _ = cluster
    require(FJORD_TRAIN, DEMO / "model" / "config.json", DEMO / "data" / "train.jsonl")
    with Fjordd(worker=FJORD_TRAIN, models={"demo": str(DEMO / "model")}, executor=executor(env),
                worker_env={"OMP_NUM_THREADS": "1"}) as d, d.client() as c:
        train = c.files.upload(DEMO / "data" / "train.jsonl")
        seen = []
        job = c.jobs.create(model="demo", training_file=train, gpus=2,
                            hyperparameters={"max_steps": 4, "batch_size": 2, "max_length": 128,
                                             "checkpoint_every_steps": 2, "eval_every_steps": 0})
        job = job.wait(on_event=seen.append, timeout=300)
        job_dir = pathlib.Path(d.dir) / "storage" / "acme" / "jobs" / job.id
        log = (job_dir / "worker.log").read_text(errors="replace") if (job_dir / "worker.log").exists() else ""
        assert job.status == "succeeded", f"{job.error}\n{log[-3000:]}\n{d.output()}"
        messages = [e.message for e in seen]
        slurm_id = job.slurm_job_id
        assert f"submitted to Slurm as job {slurm_id}" in messages
        assert any(m.startswith(f"Slurm started job {slurm_id} on ") for m in messages), messages
        assert job.node and job.node != "e2e"  # the Slurm node list, not fjordd's node
        start = [e for e in seen if e.type == "start"]
        assert len(start) == 1 and "2 data-parallel ranks (gloo)" in start[0].message, start
        assert [e.data["step"] for e in seen if e.type == "step"] == [1, 2, 3, 4]
        # The report keys are the job's own, private to it.
        assert (job_dir / "report.keys").stat().st_mode & 0o777 == 0o600
        assert "secret_key=" not in log and "report.keys" not in json.dumps(job.raw)
        out = c.adapters.download(job.id, tmp_path / "slurm_adapter")

        # The same job.yaml, trained by fjord-train's own launcher on 2 local ranks.
        local = tmp_path / "local"
        r = subprocess.run([str(FJORD_TRAIN), "--config", str(job_dir / "job.yaml"), "--progress", "none",
                            "--set", f"output.dir={local}", "--nproc-per-node", "2"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-3000:]
        a = load_file(out / "adapter_model.safetensors")
        b = load_file(local / "adapter" / "adapter_model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_cancel_pause_and_resume(daemon, client, tmp_path):
    d, env = daemon
    job = fake_job(client, tmp_path, "pause", steps=60, step_ms=100, checkpoint_every=5)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 6, what="running past step 6")
    first = job.slurm_job_id
    job = job.pause()
    job = wait_for(job, lambda j: j.status == "paused", what="paused")
    assert job.latest_checkpoint is not None and job.latest_checkpoint.step >= 5
    assert slurm_state(env, first) in ("FAILED", "COMPLETED")  # every rank checkpointed and exited 75
    job = job.resume()
    job = wait_for(job, lambda j: j.status == "running", what="running again")
    assert job.slurm_job_id != first  # a new Slurm job, from the checkpoint
    job = job.wait(timeout=120)
    assert job.status == "succeeded", job.error
    starts = [e.message for e in events_of(client, job) if e.type == "start"]
    assert starts[0] == "started" and starts[1].startswith("resumed from step "), starts

    other = fake_job(client, tmp_path, "cancel", steps=600, step_ms=100)
    other = wait_for(other, lambda j: j.status == "running", what="running")
    sid = other.slurm_job_id
    other = other.cancel()
    other = wait_for(other, lambda j: j.status == "cancelled", what="cancelled")
    assert slurm_state(env, sid) in ("FAILED", "CANCELLED", "COMPLETED")


def test_scontrol_requeue_resumes_from_the_checkpoint(daemon, client, tmp_path):
    d, env = daemon
    job = fake_job(client, tmp_path, "requeue", steps=40, step_ms=100, checkpoint_every=5)
    job = wait_for(job, lambda j: j.status == "running" and (j.latest_checkpoint or None) is not None
                   and j.latest_checkpoint.step >= 5, what="a checkpoint")
    sid = job.slurm_job_id
    r = slurm(env, "scontrol", "requeue", sid)
    assert r.returncode == 0, r.stderr
    job = wait_for(job, lambda j: j.status == "requeued", what="requeued by Slurm")
    assert "requeued by Slurm" in job.error.message
    # Slurm holds a requeued job until its begin time; release it now.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.status != "running":
        slurm(env, "scontrol", "update", f"JobId={sid}", "StartTime=now")
        slurm(env, "scontrol", "release", sid)
        time.sleep(0.5)
        job = job.refresh()
    job = job.wait(timeout=180)
    assert job.status == "succeeded", job.error
    assert job.slurm_job_id == sid and job.restarts == 1
    starts = [e.message for e in events_of(client, job) if e.type == "start"]
    assert len(starts) == 2 and starts[1].startswith("resumed from step "), starts
    files = client.adapters.files(job.id)
    assert sorted(f.name for f in files) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_killed_fjordd_adopts_its_running_slurm_job(daemon, client, tmp_path):
    d, env = daemon
    job = fake_job(client, tmp_path, "adopt", steps=50, step_ms=100, checkpoint_every=10)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 3, what="running")
    sid = job.slurm_job_id
    d.kill()
    time.sleep(1.0)
    assert slurm_state(env, sid) == "RUNNING"  # Slurm's job ran on without fjordd
    d.start()
    with d.client() as c2:
        job = c2.jobs.get(job.id)
        assert job.status == "running" and job.slurm_job_id == sid, job
        job = job.wait(timeout=120)
        assert job.status == "succeeded", job.error
        assert job.restarts == 0 and job.slurm_job_id == sid
        starts = [e.message for e in events_of(c2, job) if e.type == "start"]
        assert starts == ["started"]  # never started twice
        steps = [e.data["step"] for e in events_of(c2, job) if e.type == "step"]
        assert steps[-1] == 50  # reports reached the new fjordd


def test_a_slurm_job_cancelled_outside_fjord_fails_the_job(daemon, client, tmp_path):
    d, env = daemon
    job = fake_job(client, tmp_path, "outside", steps=600, step_ms=100)
    job = wait_for(job, lambda j: j.status == "running", what="running")
    sid = job.slurm_job_id
    assert slurm(env, "scancel", sid).returncode == 0
    job = job.wait(timeout=60)
    assert job.status == "failed"
    assert f"Slurm job {sid} was cancelled outside fjord" in job.error.message, job.error


def test_a_job_no_node_can_hold_is_refused_at_submission(daemon, client, tmp_path):
    train = client.files.upload(pathlib.Path(fake_data(tmp_path / "big.jsonl", steps=2)))
    with pytest.raises(fjord.FailedPreconditionError) as e:
        client.jobs.create(model="demo", training_file=train, gpus=4)  # 2 nodes of 2 ranks; there is 1
    assert e.value.param == "gpus"
    assert "Slurm would refuse the job (2 node(s) x 2 rank(s))" in str(e.value), e.value
    assert not [j for j in client.jobs.list() if j.training_file == train.id]
