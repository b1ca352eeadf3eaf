"""The Python SDK and the fjord CLI against a real fjordd (a process, CURVE on
loopback, temp dirs), with the daemon's scripted fake worker standing in for
fjord-train so that these run in seconds: upload, create, follow to success,
download, idempotent retries, cancel, pause/resume, deleting files and jobs
and the storage usage, and the errors a customer
meets (a missing file, a bad hyperparameter, an unknown model or job, bad
data, a wrong key, a daemon that is down). Real training is
test_sdk_e2e_training.py.

    bazel build //daemon/server:fjordd //daemon/worker:fake_worker //sdk/cpp/cli:fjord
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/e2e/test_sdk_e2e_daemon.py
"""

import hashlib
import json
import os
import time
import xml.etree.ElementTree as ET

import pytest

import fjord
from fjordd import FAKE_WORKER, Fjordd, fake_data


@pytest.fixture(scope="module")
def daemon():
    with Fjordd(worker=FAKE_WORKER, cpu_slots=2) as d:
        yield d


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def wait_until(predicate, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = predicate()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_delete_a_file_frees_its_storage(daemon, client, tmp_path):
    # First in the module: no job of this tenant is writing checkpoints or logs,
    # so the usage moves only with the file.
    data = tmp_path / "to-delete.jsonl"
    data.write_bytes(b'{"text": "delete me"}\n' * 500)
    before = client.files.usage()
    assert before.usage_bytes is not None and before.quota_bytes == 0  # the fixture sets no quota
    f = client.files.upload(data)
    on_disk = os.path.join(daemon.dir, "storage", "acme", f.path)
    assert os.path.getsize(on_disk) == f.bytes == os.path.getsize(data)
    assert f.id in [x.id for x in client.files.list()]
    with_file = client.files.usage()
    assert with_file.usage_bytes >= before.usage_bytes + f.bytes

    gone = client.files.delete(f)
    assert (gone.id, gone.bytes, gone.sha256) == (f.id, f.bytes, f.sha256)
    assert f.id not in [x.id for x in client.files.list()]
    assert not os.path.exists(on_disk)
    assert client.files.usage().usage_bytes <= with_file.usage_bytes - f.bytes
    with pytest.raises(fjord.NotFoundError) as e:
        client.files.delete(f.id)  # deleted already
    assert e.value.param == "file_id"

    # The CLI (the C++ client) against the same daemon.
    g = client.files.upload(data)
    r = daemon.cli("--json", "files", "list")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert g.id in [x["id"] for x in listing["files"]] and listing["usage_bytes"] >= g.bytes
    usage_line = daemon.cli("files", "list").stdout.splitlines()[-1]
    assert "(no quota)" in usage_line and usage_line.endswith(" of 100000 files"), usage_line
    r = daemon.cli("files", "delete", g.id)
    assert r.returncode == 0 and r.stdout.startswith(f"deleted {g.id} "), r.stderr
    r = daemon.cli("files", "delete", g.id)
    assert r.returncode == 4 and "NOT_FOUND" in r.stderr


def test_a_job_over_the_storage_quota_pauses_and_resumes_once_space_is_freed(tmp_path):
    # Its own daemon, with a quota: 40 KiB of other data, then 30 KiB
    # checkpoints (the last 3 kept) take the tenant over 128 KiB at the third.
    with Fjordd(worker=FAKE_WORKER, limits={"max_tenant_storage_bytes": 131072}) as d, d.client() as c:
        extra = tmp_path / "extra.bin"
        extra.write_bytes(b"x" * 40 * 1024)
        spare = c.files.upload(extra)
        f = c.files.upload(fake_data(tmp_path / "t.jsonl", steps=2000, step_ms=20, checkpoint_every=2,
                                     checkpoint_bytes=30720))
        job = c.jobs.create(model="demo", training_file=f.id)
        paused = wait_until(lambda: (j := job.refresh()).status == "paused" and j, timeout=60, what="the pause")
        assert paused.error.code == "RESOURCE_EXHAUSTED" and paused.error.param == "tenant"
        assert "of its 131072 bytes of storage" in paused.error.message
        assert paused.latest_checkpoint is not None and paused.latest_checkpoint.step >= 6
        with pytest.raises(fjord.ResourceExhaustedError) as e:
            job.resume()
        assert e.value.param == "tenant"
        r = d.cli("jobs", "resume", job.id)
        assert r.returncode == 8 and "RESOURCE_EXHAUSTED" in r.stderr, r.stderr
        shown = d.cli("jobs", "get", job.id)
        assert "RESOURCE_EXHAUSTED: paused: tenant 'acme' uses" in shown.stdout and "resubmit" not in shown.stdout
        c.files.delete(spare)
        resumed = job.resume()
        assert resumed.error is None
        wait_until(lambda: (j := job.refresh()).status == "running" and j.step >= paused.step + 6, timeout=60,
                   what="the resumed run")
        job.cancel()
        assert job.wait().status == "cancelled"


def tree_bytes(path):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def test_delete_an_ended_job_frees_its_storage(daemon, client, tmp_path):
    # Early in the module: no other job of this tenant is writing checkpoints or
    # logs, so the usage moves only with the deleted job.
    long = running_job(client, tmp_path)
    with pytest.raises(fjord.FailedPreconditionError) as e:
        client.jobs.delete(long)  # running: not ended
    assert e.value.param == "job_id"
    r = daemon.cli("jobs", "delete", long.id)
    assert r.returncode == 9 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    long.cancel()
    assert long.wait().status == "cancelled"

    f = client.files.upload(fake_data(tmp_path / "short.jsonl", steps=4, step_ms=10, checkpoint_every=2))
    final = client.jobs.create(model="demo", training_file=f.id).wait()
    assert final.status == "succeeded", daemon.worker_log("acme", final.id)
    job_dir = os.path.join(daemon.dir, "storage", "acme", "jobs", final.id)
    in_dir = tree_bytes(job_dir)
    assert in_dir > 0 and os.path.isdir(final.result_adapter)
    before = client.files.usage().usage_bytes

    gone = client.jobs.delete(final.id)
    assert (gone.id, gone.status, gone.result_adapter) == (final.id, "succeeded", final.result_adapter)
    assert not os.path.exists(job_dir) and not os.path.exists(final.result_adapter)
    assert client.files.usage().usage_bytes <= before - in_dir
    with pytest.raises(fjord.NotFoundError) as e:
        client.jobs.get(final.id)
    assert e.value.param == "job_id"
    assert final.id not in [j.id for j in client.jobs.list(limit=100).auto_paging_iter()]
    with pytest.raises(fjord.NotFoundError) as e:
        client.jobs.delete(final)  # deleted already: what a retry after a lost reply sees
    assert e.value.param == "job_id"

    # The CLI (the C++ client) against the same daemon: the cancelled job.
    r = daemon.cli("jobs", "delete", long.id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"deleted {long.id} (cancelled; ")
    r = daemon.cli("--json", "jobs", "delete", long.id)
    assert r.returncode == 4 and json.loads(r.stdout)["error"]["code"] == "NOT_FOUND"
    r = daemon.cli("jobs", "get", long.id)
    assert r.returncode == 4 and "NOT_FOUND" in r.stderr


def test_upload_create_follow_download(daemon, client, tmp_path):
    data = fake_data(tmp_path / "train.jsonl", steps=6, step_ms=30, checkpoint_every=2)
    f = client.files.upload(data)
    assert f.id.startswith("file-") and f.bytes == os.path.getsize(data)
    assert f.sha256 == hashlib.sha256(open(data, "rb").read()).hexdigest()
    assert f.id in [x.id for x in client.files.list()]
    job = client.jobs.create(model="demo", training_file=f, validation_file=f.path, suffix="e2e",
                             hyperparameters={"epochs": 2, "learning_rate": 1e-3}, lora={"r": 8})
    assert job.status == "validating"
    assert job.metadata == {"suffix": "e2e"}
    assert job.hyperparameters.epochs == 2 and job.lora.r == 8 and job.hyperparameters.batch_size == 4
    seen = []
    final = job.wait(on_event=seen.append)
    assert final.status == "succeeded", daemon.worker_log("acme", job.id)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # dense, in order, none repeated
    statuses = [e.data["status"] for e in seen if e.type == "status"]
    assert statuses == ["validating", "queued", "running", "succeeded"]
    assert [e.data["step"] for e in seen if e.type == "step"] == [1, 2, 3, 4, 5, 6]
    assert final.step == final.total_steps == 6 and final.finished_at_ms >= final.started_at_ms
    # The stored events page the same way.
    assert [e.seq for e in client.jobs.events(job.id, page_size=4)] == [e.seq for e in seen]
    assert [c.step for c in client.jobs.checkpoints(job.id)] == [2, 4]
    out = client.adapters.download(job.id, tmp_path / "adapter")
    for af in client.adapters.files(job.id):
        local = (out / af.name).read_bytes()
        assert hashlib.sha256(local).hexdigest() == af.sha256
        assert local == open(os.path.join(final.result_adapter, af.name), "rb").read()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    page = client.jobs.list(status="succeeded", limit=100)
    assert job.id in [j.id for j in page]


def test_idempotency_key_makes_retries_safe(client, tmp_path):
    f = client.files.upload(fake_data(tmp_path / "t.jsonl", steps=1, step_ms=1))
    a = client.jobs.create(model="demo", training_file=f.id, idempotency_key="nightly-1")
    b = client.jobs.create(model="demo", training_file=f.id, idempotency_key="nightly-1")
    assert a.id == b.id
    with pytest.raises(fjord.AlreadyExistsError) as e:
        client.jobs.create(model="demo", training_file=f.id, idempotency_key="nightly-1", hyperparameters={"epochs": 3})
    assert e.value.param == "idempotency_key"
    assert client.jobs.wait(a.id).status == "succeeded"


def running_job(client, tmp_path, steps=400, step_ms=25):
    f = client.files.upload(fake_data(tmp_path / "slow.jsonl", steps=steps, step_ms=step_ms, checkpoint_every=5))
    job = client.jobs.create(model="demo", training_file=f.id)
    with client.jobs.events(job.id, follow=True) as stream:
        for e in stream:
            if e.type == "step" and e.data["step"] >= 6:
                break
    return job


def test_cancel_a_running_job(client, tmp_path):
    job = running_job(client, tmp_path)
    after = job.cancel()
    assert after.status in ("cancelling", "cancelled")
    final = job.wait()
    assert final.status == "cancelled"
    assert final.step < 400
    assert client.jobs.cancel(job.id).status == "cancelled"  # a no-op now
    with pytest.raises(fjord.FailedPreconditionError, match="cancelled"):
        client.jobs.resume(job.id)
    with pytest.raises(fjord.FailedPreconditionError):
        client.adapters.files(job.id)


def test_pause_then_resume_continues_from_the_checkpoint(client, tmp_path):
    job = running_job(client, tmp_path, steps=30)
    assert job.pause().status in ("pausing", "paused")
    paused = wait_until(lambda: (j := client.jobs.get(job.id)).status == "paused" and j, what="paused")
    assert paused.latest_checkpoint is not None and paused.latest_checkpoint.step >= 5
    assert client.jobs.resume(job.id).status == "queued"
    seen = []
    final = client.jobs.wait(job.id, on_event=seen.append)
    assert final.status == "succeeded"
    starts = [e for e in client.jobs.events(job.id) if e.type == "start"]
    assert len(starts) == 2 and f"resumed from step {paused.latest_checkpoint.step}" in starts[1].message


def test_errors_name_the_field(daemon, client, tmp_path):
    f = client.files.upload(fake_data(tmp_path / "t.jsonl", steps=1))
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="demo", training_file="file-0000000000000000")
    assert e.value.param == "training_file" and "no uploaded file" in e.value.message
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="demo", training_file="../../etc/passwd")
    assert e.value.param == "training_file"
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="demo", training_file=f.id, hyperparameters={"learning_rate": -1})
    assert e.value.param == "hyperparameters.learning_rate"
    assert "hyperparameters.learning_rate must be in (0, 1], got -1" in e.value.message
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="demo", training_file=f.id, hyperparameters={"epoch": 2})
    assert e.value.param == "hyperparameters.epoch"
    with pytest.raises(fjord.InvalidArgumentError) as e:
        client.jobs.create(model="gpt-9", training_file=f.id)
    assert e.value.param == "model" and "gpt-9" in e.value.message and "demo" in e.value.message
    with pytest.raises(fjord.NotFoundError) as e:
        client.jobs.get("job-00000000deadbeef")
    assert e.value.param == "job_id"
    with pytest.raises(fjord.NotFoundError):
        client.files.upload(tmp_path / "missing.jsonl")
    # Another tenant's job does not exist for us.
    with daemon.client(keys=daemon.other) as other:
        theirs = other.jobs.create(model="demo", training_file=other.files.upload(fake_data(tmp_path / "o.jsonl")).id)
    with pytest.raises(fjord.NotFoundError):
        client.jobs.get(theirs.id)


def test_bad_data_fails_the_job_with_the_line(client, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\nnot json at all\n')
    job = client.jobs.create(model="demo", training_file=client.files.upload(path).id)
    final = job.wait()
    assert final.status == "failed"
    assert final.error.user_error is True and final.error.param == "training_file"
    assert "line 2" in final.error.message
    with pytest.raises(fjord.JobFailedError, match="failed"):
        job.wait(raise_on_failure=True)


def test_wrong_key_and_daemon_down(daemon, tmp_path):
    with daemon.client(keys=daemon.stranger, timeout=3) as c:
        t0 = time.monotonic()
        with pytest.raises(fjord.UnauthenticatedError, match="refused this client's CURVE key"):
            c.ping()
        assert time.monotonic() - t0 < 2
    with daemon.client(endpoint=daemon.ipc) as c:  # the ipc endpoint works too
        assert c.ping().tenant == "acme"
    with daemon.client(endpoint=f"ipc://{tmp_path}/nobody.sock", timeout=1) as c:
        t0 = time.monotonic()
        with pytest.raises(fjord.UnavailableError, match=r"within 1 s: is fjordd running\?"):
            c.jobs.list()
        assert time.monotonic() - t0 < 2.5


# ---- the CLI against the same daemon ----------------------------------------------------

JOB_YAML = """\
model: demo
training_file: train.jsonl      # a local file: uploaded first
suffix: cli
hyperparameters:
  epochs: 1
lora:
  r: 4
"""


def test_cli_create_wait_events_plot_download(daemon, client, tmp_path):
    fake_data(tmp_path / "train.jsonl", steps=5, step_ms=20, checkpoint_every=2)
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    r = daemon.cli("jobs", "create", "-f", tmp_path / "job.yaml", "--wait")
    assert r.returncode == 0, r.stderr + daemon.output()
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"uploaded {tmp_path}/train.jsonl as file-")
    job_id = lines[1].split()[1]
    assert lines[1] == f"created {job_id} (validating)"
    assert "status: queued -> running (started on CPU)" in lines
    assert "5/5  loss 0.4000  1000 tok/s  ETA 0s" in lines
    assert lines[-1].startswith(f"job {job_id} succeeded: adapter at ")
    # The same job seen from Python: one tenant, two front ends.
    job = client.jobs.get(job_id)
    assert job.status == "succeeded" and job.lora.r == 4 and job.metadata["suffix"] == "cli"

    r = daemon.cli("--json", "jobs", "get", job_id)
    assert json.loads(r.stdout)["id"] == job_id
    r = daemon.cli("--json", "jobs", "events", job_id)
    events = [json.loads(x)["event"] for x in r.stdout.splitlines()]
    assert [e["seq"] for e in events] == [e.seq for e in client.jobs.events(job_id)]
    r = daemon.cli("--json", "jobs", "checkpoints", job_id)
    assert [c["step"] for c in json.loads(r.stdout)["checkpoints"]] == [2, 4]
    r = daemon.cli("jobs", "plot", job_id, "-o", tmp_path / "loss.svg")
    assert r.returncode == 0, r.stderr
    svg = ET.parse(tmp_path / "loss.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    r = daemon.cli("adapters", "download", job_id, "-o", tmp_path / "adapter")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    r = daemon.cli("jobs", "list", "--status", "succeeded")
    assert job_id in r.stdout


def test_cli_cancel_and_exit_codes(daemon, client, tmp_path):
    job = running_job(client, tmp_path)
    r = daemon.cli("jobs", "cancel", job.id)
    assert r.returncode == 0 and r.stdout.split()[1] in ("cancelling", "cancelled")
    r = daemon.cli("jobs", "events", job.id, "-f")
    assert r.returncode == 2  # followed to the end, and it did not succeed
    assert r.stdout.splitlines()[-1] == f"job {job.id} cancelled"
    r = daemon.cli("jobs", "resume", job.id)
    assert r.returncode == 9 and "FAILED_PRECONDITION" in r.stderr
    r = daemon.cli("jobs", "get", "job-00000000deadbeef")
    assert r.returncode == 4 and "NOT_FOUND" in r.stderr
    (tmp_path / "bad-model.yaml").write_text("model: gpt-9\ntraining_file: files/x.jsonl\n")
    r = daemon.cli("jobs", "create", "-f", tmp_path / "bad-model.yaml")
    assert r.returncode == 3
    assert f"{tmp_path}/bad-model.yaml:1: " in r.stderr and "gpt-9" in r.stderr
    r = daemon.cli("jobs", "create", "--model", "demo", "--training-file", "file-0000000000000000")
    assert r.returncode == 3 and "no uploaded file" in r.stderr
    r = daemon.cli("ping", env=daemon.cli_env(FJORD_KEYS=os.path.join(daemon.dir, "keys", "stranger.key")))
    assert r.returncode == 7 and "refused this client's CURVE key" in r.stderr
    r = daemon.cli("--endpoint", f"ipc://{tmp_path}/nobody.sock", "--timeout", "1", "jobs", "list")
    assert r.returncode == 11
    assert r.stderr.startswith(f"fjord: UNAVAILABLE: no reply from ipc://{tmp_path}/nobody.sock within 1 s: "
                               "is fjordd running?")


def test_cli_listing_commands_and_pause_resume(daemon, client, tmp_path):
    r = daemon.cli("models", "list")
    assert r.returncode == 0 and r.stdout.split() == ["demo"]
    r = daemon.cli("--json", "files", "upload", fake_data(tmp_path / "p.jsonl", steps=40, step_ms=25,
                                                           checkpoint_every=5), "--name", "pausable.jsonl")
    f = json.loads(r.stdout)
    assert f["filename"] == "pausable.jsonl"
    r = daemon.cli("--json", "files", "list")
    assert f["id"] in [x["id"] for x in json.loads(r.stdout)["files"]]
    # Every page of jobs, one at a time, is what the Python SDK pages through too.
    r = daemon.cli("--json", "jobs", "list", "--limit", "1", "--all")
    assert r.returncode == 0, r.stderr
    assert [j["id"] for j in json.loads(r.stdout)["jobs"]] == [j.id for j in client.jobs.list(limit=1).auto_paging_iter()]
    job = client.jobs.create(model="demo", training_file=f["id"])
    wait_until(lambda: any(e.type == "step" for e in client.jobs.events(job.id)), what="a step")
    r = daemon.cli("jobs", "pause", job.id)
    assert r.returncode == 0 and r.stdout.split()[1] in ("pausing", "paused"), r.stderr
    wait_until(lambda: client.jobs.get(job.id).status == "paused", what="paused")
    r = daemon.cli("jobs", "resume", job.id)
    assert r.returncode == 0 and r.stdout.split()[1] == "queued", r.stderr
    r = daemon.cli("jobs", "events", job.id, "-f")
    assert r.returncode == 0 and f"job {job.id} succeeded" in r.stdout
    r = daemon.cli("--json", "adapters", "files", job.id)
    names = [x["name"] for x in json.loads(r.stdout)["files"]]
    assert names == ["adapter_config.json", "adapter_model.safetensors"]
