"""`fjord compare` (//sdk/cpp/cli:fjord) against the fake daemon's evaluation
jobs (fake_daemon.FakeEvaluations): argument errors and their exit codes,
candidates (base, NAME=job-…, NAME=DIR uploaded as its two files), local
data uploaded, --wait following the job then showing the report's tables,
--json, --out and --html, and `fjord compare show`.

    bazel build //sdk/cpp/cli:fjord
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/cli/test_cli_compare.py
"""

import json

import pytest

from fake_daemon import FakeDaemon, FakeEvaluations, FakeFiles, FakeJobs
from fjord._wire import MessageType
from test_cli_fake_daemon import home, ping_handler, run  # noqa: F401 - home is a fixture


@pytest.fixture
def daemon():
    files = FakeFiles()
    jobs = FakeJobs(files)
    evals = FakeEvaluations(files, jobs)

    def handler(peer):
        m = peer.message
        if m.type != MessageType.REQUEST:
            return
        if m.command == "ping":
            ping_handler(peer)
        elif m.command == "job.subscribe":
            # The job runs to the end while it is followed.
            jid = m.body["job_id"]
            peer.ok({"event": {"seq": 1, "time_ms": 1, "type": "log", "message": "base on d: contains 0.100",
                               "data": {"step": 1, "total_steps": 2}}}, final=False)
            peer.ok({"job": evals.finish(jid, d.final_status)})
        else:
            files.handle(peer) or evals.handle(peer) or jobs.handle(peer)

    with FakeDaemon(handler) as d:
        d.files, d.jobs, d.evals, d.final_status = files, jobs, evals, "succeeded"
        yield d


def adapter_dir(tmp_path, name="adapter"):
    a = tmp_path / name
    a.mkdir()
    (a / "adapter_config.json").write_text('{"r": 8, "peft_type": "LORA"}')
    (a / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return a


def test_argument_errors_exit_before_connecting(home, tmp_path):
    endpoint = "ipc:///nonexistent/fjord.sock"  # nothing is asked of it
    base = ["--endpoint", endpoint, "compare"]
    r = run(base + ["--candidate", "base", "--data", "file-1"], home)
    assert r.returncode == 1 and "missing --model" in r.stderr
    r = run(base + ["--model", "demo", "--data", "file-1"], home)
    assert r.returncode == 1 and "missing --candidate" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", "base"], home)
    assert r.returncode == 1 and "missing --data" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", "base", "--data", "f", "--out", "x"], home)
    assert r.returncode == 1 and "--out and --html need --wait" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", "base", "--data", "f", "--samples", "x"], home)
    assert r.returncode == 1 and "--samples must be an integer" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", "bad name", "--data", "f"], home)
    assert r.returncode == 3 and "the name 'bad name' must be" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(base + ["--model", "demo", "--candidate", "base", "--candidate", f"mine={empty}", "--data", "f"], home)
    assert r.returncode == 4
    assert f"{empty} has no adapter_config.json" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", f"mine={tmp_path / 'nope'}", "--data", "f"], home)
    assert r.returncode == 4 and "is not a directory" in r.stderr
    # What the daemon would refuse is refused here first, with its field.
    r = run(base + ["--model", "demo", "--candidate", "base", "--data", "f", "--metric", "bleu"], home)
    assert r.returncode == 3 and "unknown metric 'bleu'" in r.stderr and "evaluation.metrics" in r.stderr
    r = run(base + ["--model", "demo", "--candidate", "a", "--candidate", "a", "--data", "f"], home)
    assert r.returncode == 3 and "earlier candidate" in r.stderr
    r = run(["--endpoint", endpoint, "compare", "show"], home)
    assert r.returncode == 1 and "missing the job id" in r.stderr
    r = run(["compare", "--help"], home)
    assert r.returncode == 0 and "--candidate NAME[=job-…|=DIR]" in r.stdout


def test_create_uploads_adapters_and_data_then_returns(daemon, home, tmp_path):
    ft = daemon.jobs.add("succeeded")
    data = tmp_path / "heldout.jsonl"
    data.write_text('{"prompt": "p", "answer": "a"}\n')
    known = daemon.files.add("other.jsonl", b"{}\n")
    r = run(["--endpoint", daemon.endpoint, "compare", "--model", "demo", "--candidate", "base",
             "--candidate", f"ft={ft['id']}", "--candidate", f"mine={adapter_dir(tmp_path)}",
             "--data", data, "--data", known["id"], "--samples", "3", "--judge", "judge-model"], home)
    assert r.returncode == 0, r.stderr
    (body,) = daemon.evals.created
    by_name = {f["filename"]: f["id"] for f in daemon.files.files.values()}
    assert body["candidates"] == [
        {"name": "base"}, {"name": "ft", "job": ft["id"]},
        {"name": "mine", "adapter_config": by_name["adapter_config.json"],
         "adapter_model": by_name["adapter_model.safetensors"]}]
    assert body["datasets"] == [by_name["heldout.jsonl"], known["id"]]
    assert body["evaluation"]["samples"] == 3 and body["evaluation"]["judge"] == "judge-model"
    assert f"uploaded {data} as {by_name['heldout.jsonl']}" in r.stdout
    assert "uploaded " + str(tmp_path / "adapter" / "adapter_model.safetensors") in r.stdout
    job_id = next(iter(j for j in daemon.jobs.jobs if j != ft["id"]))
    assert f"created {job_id} (validating)" in r.stdout
    assert f"fjord compare show {job_id}" in r.stdout
    # The daemon's error keeps its field.
    r = run(["--endpoint", daemon.endpoint, "compare", "--model", "demo", "--candidate", "base",
             "--data", "file-nope"], home)
    assert r.returncode == 3 and "datasets[0]" in r.stderr


def test_wait_follows_and_shows_the_tables(daemon, home, tmp_path):
    ft = daemon.jobs.add("succeeded")
    f = daemon.files.add("d.jsonl", b"{}\n")
    out, html = tmp_path / "out", tmp_path / "r.html"
    r = run(["--endpoint", daemon.endpoint, "compare", "--model", "demo", "--candidate", "base",
             "--candidate", f"ft={ft['id']}", "--data", f["id"], "--judge", "judge-model", "--wait",
             "--out", out, "--html", html], home)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    job_id = [j for j in daemon.jobs.jobs if j != ft["id"]][0]
    assert "log: base on d: contains 0.100" in text
    assert f"job {job_id} succeeded: report at /mnt/fjord/acme/jobs/{job_id}/report" in text
    assert f"evaluation {job_id} of model demo" in text
    assert f"dataset {f['id']} (20 examples)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("CANDIDATE"))
    assert header.split() == ["CANDIDATE", "LOSS", "PERPLEXITY", "EXACT_MATCH", "CONTAINS"]
    ft_row = next(line for line in lines if line.startswith("ft "))
    assert "4.500 [4.250, 4.750]" in ft_row and "0.900 [0.800, 1.000]" in ft_row
    assert "  contains: base worse than ft (A - B -0.800 [-0.850, -0.750])" in lines
    assert not any("exact_match: base" in line for line in lines)  # a tie: no verdict line
    assert "  contains: 1 ft, 2 base" in lines
    assert "  exact_match: 1 base, 1 ft" in lines
    assert any(line.startswith("  base vs ft: base worse, win rate of base 0.200 [0.080, 0.350] (3 wins, 15 losses, "
                               "2 ties; both orders agree on 85%)") for line in lines), text
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    assert json.loads((out / "report.json").read_text())["job"] == job_id
    assert html.read_bytes().startswith(b"<!doctype html>")
    assert f"report: {out}/report.json, {out}/report.html" in text


def test_wait_json_and_a_failed_job(daemon, home):
    f = daemon.files.add("d.jsonl", b"{}\n")
    args = ["--endpoint", daemon.endpoint, "--json", "compare", "--model", "demo", "--candidate", "base",
            "--data", f["id"], "--wait"]
    r = run(args, home)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert docs[0]["created"]["type"] == "evaluation"
    assert docs[-2]["job"]["status"] == "succeeded"
    assert docs[-1]["report"]["schema"] == "fjord.evaluation/1"
    assert docs[-1]["report"]["datasets"][0]["candidates"][0]["name"] == "base"
    asked = len(daemon.requests("report.files"))
    daemon.final_status = "failed"
    r = run(args, home)
    assert r.returncode == 2
    assert len(daemon.requests("report.files")) == asked  # no report to show


def test_show_a_finished_one_and_refusals(daemon, home, tmp_path):
    f = daemon.files.add("d.jsonl", b"{}\n")
    r = run(["--endpoint", daemon.endpoint, "--json", "compare", "--model", "demo", "--candidate", "base",
             "--data", f["id"]], home)
    job_id = json.loads(r.stdout)["id"]
    r = run(["--endpoint", daemon.endpoint, "compare", "show", job_id], home)
    assert r.returncode == 9 and "only a succeeded evaluation job has one" in r.stderr
    daemon.evals.finish(job_id)
    r = run(["--endpoint", daemon.endpoint, "compare", "show", job_id], home)
    assert r.returncode == 0, r.stderr
    assert f"dataset {f['id']} (20 examples)" in r.stdout and "none: no pair" in r.stdout
    r = run(["--endpoint", daemon.endpoint, "compare", "show", job_id, "--json", "--out", tmp_path / "o"], home)
    assert json.loads(r.stdout)["report"]["job"] == job_id
    assert (tmp_path / "o" / "report.json").exists()
    r = run(["--endpoint", daemon.endpoint, "jobs", "get", job_id], home)
    assert "candidates" in r.stdout and f"report           /mnt/fjord/acme/jobs/{job_id}/report" in r.stdout
    r = run(["--endpoint", daemon.endpoint, "compare", "show", "job-nope"], home)
    assert r.returncode == 4
