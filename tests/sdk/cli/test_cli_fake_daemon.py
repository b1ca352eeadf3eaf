"""The `fjord` CLI (//sdk/cpp/cli:fjord, built on the C++ client) against a
scripted FJD01 peer: output for people and --json for scripts, exit codes,
uploads of local files named in job.yaml, deleting files and jobs and the
storage usage line, progress while following, the SVG plot, adapter downloads, a
daemon that is down, a refused key.

    bazel build //sdk/cpp/cli:fjord
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/cli/test_cli_fake_daemon.py
"""

import hashlib
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import fjord
from sdk_testenv import BIN_DIR
from fake_daemon import FakeDaemon, FakeFiles, FakeJobs, job_body
from fjord._wire import MessageType

FJORD = BIN_DIR / "sdk" / "cpp" / "cli" / "fjord"


def run(args, env=None, timeout=60, cwd=None):
    if not FJORD.exists():
        raise FileNotFoundError(f"{FJORD} not built: run `bazel build //sdk/cpp/cli:fjord`")
    e = {k: v for k, v in os.environ.items() if not k.startswith("FJORD_")}
    e["HOME"] = e.get("FJORD_TEST_HOME", "/nonexistent-home")
    e.update(env or {})
    return subprocess.run([str(FJORD), *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout,
                          cwd=cwd)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return {"HOME": str(h)}


def ping_handler(peer):
    m = peer.message
    if m.type == MessageType.REQUEST and m.command == "ping":
        peer.ok({"protocol": 1, "daemon": "fjordd", "version": "0.1.0", "node": "node-1", "heartbeat_interval_ms": 2000,
                 "liveness": 3, "principal": {"tenant": "acme", "role": "tenant", "key_name": "ci"}, "limits": {}})


def test_ping_human_and_json(home):
    with FakeDaemon(ping_handler) as d:
        r = run(["--endpoint", d.endpoint, "ping"], home)
        assert r.returncode == 0, r.stderr
        assert "fjordd 0.1.0 at " + d.endpoint in r.stdout
        assert "you are tenant acme (role tenant, key ci)" in r.stdout
        r = run(["ping", "--json"], {**home, "FJORD_ENDPOINT": d.endpoint})
        assert r.returncode == 0
        assert json.loads(r.stdout)["principal"]["tenant"] == "acme"


def test_unknown_job_exit_4_and_json_error(home):
    def handler(peer):
        if peer.message.command == "job.get":
            peer.error("NOT_FOUND", f"job {peer.message.body['job_id']} not found", "job_id")

    with FakeDaemon(handler) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "get", "job-404"], home)
        assert r.returncode == 4
        assert r.stderr.startswith("fjord: NOT_FOUND: job job-404 not found (field job_id)")
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "get", "job-404"], home)
        assert r.returncode == 4
        assert json.loads(r.stdout) == {"error": {"code": "NOT_FOUND", "message": "job job-404 not found",
                                                  "param": "job_id"}}


def upload_and_create_handler(files, created, create_reply=None):
    def handler(peer):
        m = peer.message
        if m.command == "file.upload.begin":
            files.append({"name": m.body["filename"], "data": b"", "sha256": m.body["sha256"]})
            peer.ok({"upload_id": f"upl-{len(files)}", "chunk_bytes": 1 << 20})
        elif m.command == "file.upload.chunk":
            files[-1]["data"] += m.data
            peer.ok({"received": len(files[-1]["data"])})
        elif m.command == "file.upload.finish":
            f = files[-1]
            assert hashlib.sha256(f["data"]).hexdigest() == f["sha256"]
            peer.ok({"id": f"file-{len(files):016x}", "filename": f["name"], "bytes": len(f["data"]),
                     "sha256": f["sha256"], "created_at_ms": 1, "path": f"files/file-{len(files):016x}"})
        elif m.command == "job.create":
            created.append(m.body)
            if create_reply is not None:
                create_reply(peer)
            else:
                peer.ok(job_body("job-00000000000000aa", "validating", idempotency_key=m.body["idempotency_key"]))
    return handler


JOB_YAML = """\
# a customer's job
model: demo
training_file: data/train.jsonl
validation_file: files/already-there.jsonl
suffix: capitals
hyperparameters:
  epochs: 2
  learning_rate: 2.0e-3
lora:
  r: 8
metadata:
  team: "007"
"""


def test_create_from_job_yaml_uploads_local_files(tmp_path, home):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "Oslo is the capital of Norway."}\n')
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    files, created = [], []
    with FakeDaemon(upload_and_create_handler(files, created)) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml", "--seed", "7",
                 "--metadata", "run=nightly"], home, cwd="/")
        assert r.returncode == 0, r.stderr
        assert f"uploaded {tmp_path}/data/train.jsonl as file-0000000000000001" in r.stdout
        assert "created job-00000000000000aa (validating)" in r.stdout
    assert [f["name"] for f in files] == ["train.jsonl"]  # files/... is the daemon's, not uploaded
    body = created[0]
    assert body["model"] == "demo"
    assert body["training_file"] == "file-0000000000000001"
    assert body["validation_file"] == "files/already-there.jsonl"
    assert body["hyperparameters"]["epochs"] == 2
    assert body["hyperparameters"]["learning_rate"] == 2e-3
    assert body["hyperparameters"]["seed"] == 7
    assert body["hyperparameters"]["batch_size"] == 4  # the C++ client sends every field
    assert body["lora"]["r"] == 8
    assert body["metadata"] == {"team": "007", "suffix": "capitals", "run": "nightly"}
    assert len(body["idempotency_key"]) == 32


def test_create_uploads_a_local_heldout_file(tmp_path, home):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heldout.jsonl").write_text('{"prompt": "Capital of Peru?", "answer": "Lima"}\n')
    (tmp_path / "job.yaml").write_text("model: demo\ntraining_file: files/t.jsonl\nheldout_file: data/heldout.jsonl\n")
    files, created = [], []
    with FakeDaemon(upload_and_create_handler(files, created)) as d:
        # In the job file: relative to the file.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml"], home, cwd="/")
        assert r.returncode == 0, r.stderr
        assert f"uploaded {tmp_path}/data/heldout.jsonl as file-0000000000000001" in r.stdout
        # As a flag: relative to the working directory.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "--model", "demo", "--training-file", "files/t.jsonl",
                 "--heldout-file", "data/heldout.jsonl"], home, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        # A path in the tenant's area is the daemon's to resolve.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "--model", "demo", "--training-file", "files/t.jsonl",
                 "--heldout-file", "files/h.jsonl"], home, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert [f["name"] for f in files] == ["heldout.jsonl", "heldout.jsonl"]
    assert [b["heldout_file"] for b in created] == ["file-0000000000000001", "file-0000000000000002", "files/h.jsonl"]
    assert all(b["training_file"] == "files/t.jsonl" for b in created)


def test_create_errors_locate_the_field(tmp_path, home):
    (tmp_path / "job.yaml").write_text("model: gpt-9\ntraining_file: files/t.jsonl\n")

    def bad_model(peer):
        peer.error("INVALID_ARGUMENT", "unknown model 'gpt-9'", "model")

    with FakeDaemon(upload_and_create_handler([], [], bad_model)) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml"], home)
        assert r.returncode == 3
        assert f"fjord: INVALID_ARGUMENT: {tmp_path}/job.yaml:1: unknown model 'gpt-9'" in r.stderr
        # A bad hyperparameter never reaches the daemon: the same checks run locally.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml", "--learning-rate", "-1"], home)
        assert r.returncode == 3
        assert "hyperparameters.learning_rate must be in (0, 1], got -1" in r.stderr
        assert len(d.requests("job.create")) == 1
        r = run(["--endpoint", d.endpoint, "jobs", "create", "--model", "demo", "--training-file", tmp_path / "none.jsonl"],
                home)
        assert r.returncode == 3  # not a local file, so the daemon judges the path


def test_create_quantization_from_the_job_file_and_the_flag(tmp_path, home):
    (tmp_path / "job.yaml").write_text("model: llama-3.1-8b\ntraining_file: files/t.jsonl\nquantization: nf4\n")
    (tmp_path / "bf16.yaml").write_text("model: llama-3.1-8b\ntraining_file: files/t.jsonl\nquantization: none\n")

    def too_big_in_bf16(peer):
        body = peer.message.body
        if body.get("quantization", "none") == "none":
            peer.error("INVALID_ARGUMENT", "model 'llama-3.1-8b' (8.0 B parameters) needs 16.1 GB for its frozen "
                       "base in bf16 alone (2 B x 8,030,261,248); this node's GPUs have 16 GB each (14.4 GB usable "
                       "after 10% for the CUDA context, activations and the adapter); with quantization: nf4 it "
                       "needs 5.7 GB", "quantization")
        else:
            peer.ok(job_body("job-00000000000000aa", "validating", quantization=body["quantization"]))

    created = []
    with FakeDaemon(upload_and_create_handler([], created, too_big_in_bf16)) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml"], home)
        assert r.returncode == 0, r.stderr
        # The flag overrides the file; the daemon's refusal points at the file's line.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "bf16.yaml"], home)
        assert r.returncode == 3
        assert (f"fjord: INVALID_ARGUMENT: {tmp_path}/bf16.yaml:3: model 'llama-3.1-8b' (8.0 B parameters) needs "
                "16.1 GB for its frozen base in bf16 alone") in r.stderr
        assert "with quantization: nf4 it needs 5.7 GB" in r.stderr
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "bf16.yaml", "--quantization", "nf4"],
                home)
        assert r.returncode == 0, r.stderr
        # A value other than none or nf4 never reaches the daemon.
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml", "--quantization", "int4"],
                home)
        assert r.returncode == 3
        assert "quantization must be none or nf4, got 'int4'" in r.stderr
        assert len(d.requests("job.create")) == 3
    assert [b.get("quantization") for b in created] == ["nf4", None, "nf4"]  # "none" is not sent


def test_create_shard_base_from_the_job_file_and_the_flag(tmp_path, home):
    (tmp_path / "job.yaml").write_text("model: llama-3.3-70b\ntraining_file: files/t.jsonl\ngpus: 8\nshard_base: true\n")
    (tmp_path / "whole.yaml").write_text("model: llama-3.3-70b\ntraining_file: files/t.jsonl\ngpus: 8\n")

    def too_big_unsharded(peer):
        body = peer.message.body
        if not body.get("shard_base", False):
            peer.error("INVALID_ARGUMENT", "model 'llama-3.3-70b' (70.6 B parameters) needs 141.1 GB for its frozen "
                       "base in bf16 alone (2 B x 70,553,706,496); this node's GPUs have 80 GB each (72 GB usable "
                       "after 10% for the CUDA context, activations and the adapter), and each of the job's 8 GPUs "
                       "holds the whole base (data parallel); with quantization: nf4 it needs 39.5 GB; with "
                       "shard_base over the job's 8 GPUs it needs 19.6 GB on each", "quantization")
        else:
            peer.ok(job_body("job-00000000000000aa", "validating", model=body["model"], gpus=body["gpus"],
                             shard_base=True))

    created = []
    with FakeDaemon(upload_and_create_handler([], created, too_big_unsharded)) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml"], home)
        assert r.returncode == 0, r.stderr
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "create", "-f", tmp_path / "job.yaml"], home)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["shard_base"] is True
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "whole.yaml"], home)
        assert r.returncode == 3
        assert "with shard_base over the job's 8 GPUs it needs 19.6 GB on each" in r.stderr
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "whole.yaml", "--shard-base"], home)
        assert r.returncode == 0, r.stderr
        # With nf4 as well: sent (sharded in 4 bits).
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "job.yaml", "--quantization", "nf4"],
                home)
        assert r.returncode == 0, r.stderr
        # Not a boolean: refused before the daemon is asked, at the file's line.
        (tmp_path / "bad.yaml").write_text("model: demo\ntraining_file: files/t.jsonl\nshard_base: 1\n")
        r = run(["--endpoint", d.endpoint, "jobs", "create", "-f", tmp_path / "bad.yaml"], home)
        assert r.returncode == 3
        assert f"{tmp_path}/bad.yaml:3: shard_base must be true or false, got number" in r.stderr
        assert len(d.requests("job.create")) == 5
    assert [b.get("shard_base") for b in created] == [True, True, None, True, True]  # false is not sent
    assert created[-1]["quantization"] == "nf4"


def test_files_delete_human_json_and_exit_codes(home):
    store = FakeFiles()
    a = store.add("train.jsonl", b"x" * 123)
    b = store.add("valid.jsonl", b"y" * 7)
    busy = store.add("busy.jsonl", b"z")
    store.live_jobs["job-0000000000000007"] = ("running", busy["id"])
    with FakeDaemon(store.handle) as d:
        r = run(["--endpoint", d.endpoint, "files", "delete", a["id"]], home)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"deleted {a['id']} (train.jsonl, 123 bytes)\n"
        assert d.requests("file.delete")[0].body == {"file_id": a["id"]}
        assert a["id"] not in store.files
        r = run(["--endpoint", d.endpoint, "files", "delete", a["id"]], home)  # deleted already
        assert r.returncode == 4
        assert r.stderr.startswith(f"fjord: NOT_FOUND: no file '{a['id']}' (field file_id)")
        r = run(["--endpoint", d.endpoint, "--json", "files", "delete", b["id"]], home)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == b
        r = run(["--endpoint", d.endpoint, "--json", "files", "delete", b["id"]], home)
        assert r.returncode == 4
        assert json.loads(r.stdout)["error"] == {"code": "NOT_FOUND", "message": f"no file '{b['id']}'",
                                                 "param": "file_id"}
        r = run(["--endpoint", d.endpoint, "files", "delete", busy["id"]], home)
        assert r.returncode == 9
        assert "FAILED_PRECONDITION" in r.stderr and "job-0000000000000007" in r.stderr
        assert list(store.files) == [busy["id"]]


def test_files_list_shows_the_storage_usage(home):
    store = FakeFiles(quota_bytes=10 << 30, other_bytes=1258291 - 100)
    f = store.add("train.jsonl", b"x" * 100)
    with FakeDaemon(store.handle) as d:
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["ID", "FILENAME", "BYTES", "CREATED"]
        assert lines[1].split()[:3] == [f["id"], "train.jsonl", "100"]
        assert lines[-1] == "usage 1.2 MiB of 10 GiB quota, 1 of 100000 files"
        r = run(["--endpoint", d.endpoint, "--json", "files", "list"], home)
        assert json.loads(r.stdout) == {"files": [f], "usage_bytes": 1258291, "quota_bytes": 10 << 30,
                                        "usage_files": 1, "quota_files": 100000}
        store.quota_bytes = store.quota_files = 0
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.stdout.splitlines()[-1] == "usage 1.2 MiB (no quota), 1 file (no limit)"
        store.quota_bytes = 1258291
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.stdout.splitlines()[-1].startswith("usage 1.2 MiB of 1.2 MiB quota, 1 file (no limit) (full: ")
        store.quota_bytes, store.quota_files = 0, 1
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.stdout.splitlines()[-1].startswith("usage 1.2 MiB (no quota), 1 of 1 files (file limit reached: ")
        store.paging = False  # a daemon older than paging: no file counts
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "usage 1.2 MiB (no quota)"
        r = run(["--endpoint", d.endpoint, "--json", "files", "list"], home)
        assert json.loads(r.stdout) == {"files": [f], "usage_bytes": 1258291, "quota_bytes": 0}
        store.report_usage = False  # an older daemon: no usage line, no usage fields, no error
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == 2 and "usage" not in r.stdout
        r = run(["--endpoint", d.endpoint, "--json", "files", "list"], home)
        assert json.loads(r.stdout) == {"files": [f]}


def test_files_list_shows_every_page(home):
    store = FakeFiles(page_size=2, other_files=3)
    added = [store.add(f"f{i}.jsonl", b"x" * i) for i in range(5)]
    with FakeDaemon(store.handle) as d:
        r = run(["--endpoint", d.endpoint, "files", "list"], home)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert [line.split()[0] for line in lines[1:-1]] == [f["id"] for f in reversed(added)]
        assert lines[-1] == "usage 10 B (no quota), 8 of 100000 files"
        assert [m.body for m in d.requests("file.list")] == [{}, {"after": added[3]["id"]},
                                                              {"after": added[1]["id"]}]
        r = run(["--endpoint", d.endpoint, "--json", "files", "list"], home)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert [f["id"] for f in out["files"]] == [f["id"] for f in reversed(added)]
        assert "has_more" not in out and out["usage_files"] == 8


def test_jobs_delete_human_json_and_exit_codes(home):
    files = FakeFiles()
    jobs = FakeJobs(files)
    done = jobs.add("succeeded", bytes_on_storage=1 << 20)
    cancelled = jobs.add("cancelled", bytes_on_storage=10)
    running = jobs.add("running", bytes_on_storage=100)
    with FakeDaemon(lambda p: files.handle(p) or jobs.handle(p)) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "delete", done["id"]], home)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"deleted {done['id']} (succeeded; its checkpoints, adapter and logs are gone)\n"
        assert d.requests("job.delete")[0].body == {"job_id": done["id"]}
        assert done["id"] not in jobs.jobs
        assert json.loads(run(["--endpoint", d.endpoint, "--json", "files", "list"], home).stdout)["usage_bytes"] == 110
        r = run(["--endpoint", d.endpoint, "jobs", "delete", done["id"]], home)  # deleted already
        assert r.returncode == 4
        assert r.stderr.startswith(f"fjord: NOT_FOUND: no job '{done['id']}' (field job_id)")
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "delete", cancelled["id"]], home)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["id"], out["status"], out["created_at_ms"]) == (cancelled["id"], "cancelled",
                                                                   cancelled["created_at_ms"])
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "delete", cancelled["id"]], home)
        assert r.returncode == 4
        assert json.loads(r.stdout)["error"] == {"code": "NOT_FOUND", "message": f"no job '{cancelled['id']}'",
                                                 "param": "job_id"}
        r = run(["--endpoint", d.endpoint, "jobs", "delete", running["id"]], home)
        assert r.returncode == 9
        assert r.stderr.startswith(f"fjord: FAILED_PRECONDITION: job {running['id']} is running: ")
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "delete", running["id"]], home)
        assert r.returncode == 9 and json.loads(r.stdout)["error"]["code"] == "FAILED_PRECONDITION"
        assert list(jobs.jobs) == [running["id"]]
        r = run(["--endpoint", d.endpoint, "jobs", "list"], home)
        assert r.returncode == 0 and running["id"] in r.stdout and cancelled["id"] not in r.stdout
        jobs.jobs[running["id"]]["status"] = "failed"  # it ended, with no adapter
        r = run(["--endpoint", d.endpoint, "jobs", "delete", running["id"]], home)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"deleted {running['id']} (failed; its checkpoints and logs are gone)\n"


def test_upload_over_the_storage_quota_exits_8(tmp_path, home):
    store = FakeFiles(quota_bytes=100, other_bytes=90)
    (tmp_path / "big.jsonl").write_bytes(b"x" * 11)
    with FakeDaemon(store.handle) as d:
        r = run(["--endpoint", d.endpoint, "files", "upload", tmp_path / "big.jsonl"], home)
        assert r.returncode == 8
        assert r.stderr.startswith("fjord: RESOURCE_EXHAUSTED: ") and "over its quota" in r.stderr
        assert store.files == {} and d.requests("file.upload.chunk") == []


EVENTS = [
    {"seq": 1, "time_ms": 1, "type": "status", "message": "", "data": {"status": "running", "previous": "queued"}},
    {"seq": 2, "time_ms": 2, "type": "eval", "message": "", "data": {"step": 0, "total_steps": 4, "eval_loss": 2.0}},
    {"seq": 3, "time_ms": 3, "type": "step", "message": "",
     "data": {"step": 1, "total_steps": 4, "loss": 2.5, "tokens_per_s": 900.0, "eta_s": 3.0}},
    {"seq": 4, "time_ms": 4, "type": "step", "message": "",
     "data": {"step": 2, "total_steps": 4, "loss": 2.0, "tokens_per_s": 950.0, "eta_s": 2.0}},
    {"seq": 5, "time_ms": 5, "type": "step", "message": "",
     "data": {"step": 4, "total_steps": 4, "loss": 1.5, "tokens_per_s": 1000.0, "eta_s": 0.0}},
    {"seq": 6, "time_ms": 6, "type": "eval", "message": "", "data": {"step": 4, "total_steps": 4, "eval_loss": 1.25}},
]


def events_handler(final_status="succeeded"):
    def handler(peer):
        m = peer.message
        if m.type != MessageType.REQUEST:
            return
        if m.command == "ping":  # the C++ client asks for the heartbeat interval before a stream
            ping_handler(peer)
        elif m.command == "job.subscribe":
            for e in EVENTS:
                if e["seq"] > m.body["after_seq"]:
                    peer.ok({"event": e}, final=False)
            extra = {"result_adapter": {"path": "/s/acme/jobs/job-1/adapter"}} if final_status == "succeeded" else {
                "error": {"code": "INVALID_ARGUMENT", "message": "line 3: bad role", "param": "training_file",
                          "user_error": True}}
            peer.ok({"job": job_body("job-1", final_status, **extra)})
        elif m.command == "job.events":
            page = [e for e in EVENTS if e["seq"] > m.body["after_seq"]][: m.body["limit"]]
            peer.ok({"events": page, "has_more": False})
    return handler


def test_events_follow_progress_and_exit_codes(home, tmp_path):
    with FakeDaemon(events_handler()) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "events", "job-1", "-f"], home)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "status: queued -> running"
        assert "eval  step 0/4  loss 2.0000" in lines
        assert "1/4  loss 2.5000  eval 2.0000  900 tok/s  ETA 3s" in lines
        assert lines[-1] == "job job-1 succeeded: adapter at /s/acme/jobs/job-1/adapter"
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "events", "job-1", "--follow"], home)
        docs = [json.loads(line) for line in r.stdout.splitlines()]
        assert [x["event"]["seq"] for x in docs[:-1]] == [1, 2, 3, 4, 5, 6]
        assert docs[-1]["job"]["status"] == "succeeded"
        r = run(["--endpoint", d.endpoint, "jobs", "events", "job-1"], home)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 6
        assert "step 2/4  loss 2.0000" in r.stdout
        # The plot: a well-formed SVG with both curves.
        out = tmp_path / "loss.svg"
        r = run(["--endpoint", d.endpoint, "jobs", "plot", "job-1", "-o", out], home)
        assert r.returncode == 0, r.stderr
        assert "3 training-loss points, 2 eval-loss points" in r.stdout
        root = ET.parse(out).getroot()
        lines = root.findall("{http://www.w3.org/2000/svg}polyline")
        assert [pl.get("data-name") for pl in lines] == ["training loss", "eval loss"]
        assert len(lines[0].get("points").split()) == 3
    with FakeDaemon(events_handler("failed")) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "events", "job-1", "-f"], home)
        assert r.returncode == 2
        assert "job job-1 failed: INVALID_ARGUMENT: line 3: bad role" in r.stdout


def test_list_table_and_json(home):
    def handler(peer):
        if peer.message.command == "job.list":
            peer.ok({"jobs": [job_body("job-2", "running", step=5, total_steps=10, metrics={"loss": 1.5}),
                              job_body("job-1", "queued", queue_position=1)], "has_more": False})

    with FakeDaemon(handler) as d:
        r = run(["--endpoint", d.endpoint, "jobs", "list", "--status", "running,queued", "--limit", "5"], home)
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()
        assert rows[0].split() == ["ID", "STATUS", "MODEL", "STEP", "LOSS", "EVAL", "LOSS", "CREATED"]
        assert rows[1].split()[:5] == ["job-2", "running", "demo", "5/10", "1.5000"]
        assert rows[2].split()[:3] == ["job-1", "queued", "#1"]
        assert d.requests("job.list")[0].body == {"limit": 5, "status": ["running", "queued"]}
        r = run(["--endpoint", d.endpoint, "--json", "jobs", "list"], home)
        doc = json.loads(r.stdout)
        assert [j["id"] for j in doc["jobs"]] == ["job-2", "job-1"] and doc["has_more"] is False


def adapter_handler(files, corrupt=False):
    def handler(peer):
        m = peer.message
        if m.command == "adapter.files":
            peer.ok({"files": [{"name": n, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                               for n, b in files.items()]})
        elif m.command == "adapter.download":
            b = files[m.body["name"]]
            chunk = b[m.body["offset"]:m.body["offset"] + m.body["length"]]
            if corrupt:
                chunk = b"!" + chunk[1:]
            peer.ok({"name": m.body["name"], "offset": m.body["offset"], "bytes": len(chunk), "total_bytes": len(b),
                     "eof": True}, data=chunk)
    return handler


def test_adapter_download(tmp_path, home):
    files = {"adapter_config.json": b'{"peft_type": "LORA"}', "adapter_model.safetensors": os.urandom(64)}
    with FakeDaemon(adapter_handler(files)) as d:
        r = run(["--endpoint", d.endpoint, "adapters", "download", "job-1", "-o", tmp_path / "a"], home)
        assert r.returncode == 0, r.stderr
        assert "SHA-256 checked" in r.stdout and "PeftModel.from_pretrained" in r.stdout
        assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == files
    with FakeDaemon(adapter_handler(files, corrupt=True)) as d:
        r = run(["--endpoint", d.endpoint, "--json", "adapters", "download", "job-1", "-o", tmp_path / "b"], home)
        assert r.returncode == 13
        assert json.loads(r.stdout)["error"]["code"] == "DATA_LOSS"


def test_daemon_down_is_exit_11_within_the_timeout(tmp_path, home):
    t0 = time.monotonic()
    r = run(["--endpoint", "tcp://127.0.0.1:9", "--timeout", "1", "jobs", "list"], home)
    assert r.returncode == 11
    assert r.stderr.splitlines() == ["fjord: UNAVAILABLE: no reply from tcp://127.0.0.1:9 within 1 s: is fjordd running?",
                                     "  endpoint: tcp://127.0.0.1:9 (from --endpoint)"]
    assert time.monotonic() - t0 < 4


def test_wrong_key_is_exit_7(tmp_path, home):
    server = fjord.generate_keypair()
    allowed = fjord.write_key_files(tmp_path / "allowed")
    fjord.write_key_files(tmp_path / "stranger")
    (tmp_path / "server.pub").write_text(server.public_key + "\n")
    cfg = tmp_path / "client.yaml"
    with FakeDaemon(ping_handler, curve_secret=server.secret_key, allowed_keys={allowed.public_key}) as d:
        cfg.write_text(f"endpoint: {d.endpoint}\nserver_public_key: server.pub\nkeys: allowed.key\n")
        r = run(["--config", cfg, "ping"], home)
        assert r.returncode == 0, r.stderr
        r = run(["ping"], {**home, "FJORD_CONFIG": str(cfg), "FJORD_KEYS": str(tmp_path / "stranger.key")})
        assert r.returncode == 7
        assert "refused this client's CURVE key" in r.stderr
        assert f"(from FJORD_KEYS)" in r.stderr and "keys file" in r.stderr


def test_keys_generate_files_work_with_the_python_sdk(tmp_path, home):
    r = run(["keys", "generate", tmp_path / "ci", "--tenant", "acme", "--json"], home)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    pair = fjord.load_secret_key_file(tmp_path / "ci.key")
    assert doc["public_key"] == pair.public_key
    assert doc["keys_file_entry"] == {"name": "ci", "public_key": pair.public_key, "tenant": "acme", "role": "tenant"}
    assert oct(os.stat(tmp_path / "ci.key").st_mode & 0o777) == "0o600"
    assert "secret" not in json.dumps(doc).replace("secret_key_file", "")
