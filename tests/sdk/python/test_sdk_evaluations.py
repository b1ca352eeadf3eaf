"""client.evaluations against the fake daemon's evaluation jobs
(fake_daemon.FakeEvaluations, written from docs/protocol.md §5 "Evaluation
jobs" and "Report"): the job.create body for each form of candidate and
dataset (local adapter directories and data files uploaded first), errors
before anything is uploaded, evaluation job objects parsed, the report
downloaded with its SHA-256 checked and parsed into dataclasses.

    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/python/test_sdk_evaluations.py
"""

import io
import json

import pytest

import fjord
from fake_daemon import FakeDaemon, FakeEvaluations, FakeFiles, FakeJobs, compare_report, job_body
from fjord._wire import MessageType
from test_sdk_client import fast_client


@pytest.fixture
def daemon():
    files = FakeFiles()
    jobs = FakeJobs(files)
    evals = FakeEvaluations(files, jobs)
    with FakeDaemon(lambda p: files.handle(p) or evals.handle(p) or jobs.handle(p)) as d:
        d.files, d.jobs, d.evals = files, jobs, evals
        yield d


def adapter_dir(tmp_path, name="adapter"):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 8, "peft_type": "LORA"}')
    (d / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return d


def test_create_sends_every_form_of_candidate_and_dataset(daemon, tmp_path):
    ft = daemon.jobs.add("succeeded")
    data = daemon.files.add("heldout.jsonl", b'{"prompt": "p", "answer": "a"}\n')
    local = tmp_path / "more.jsonl"
    local.write_text('{"prompt": "q", "answer": "b"}\n')
    with fast_client(daemon.endpoint) as c:
        job = c.evaluations.create(
            model="demo",
            candidates=["base", f"ft={ft['id']}", f"mine={adapter_dir(tmp_path)}",
                        fjord.Candidate.from_adapter_dir("other", adapter_dir(tmp_path, "b")),
                        {"name": "d", "job": ft["id"]}, fjord.Candidate.from_job("e", ft["id"])],
            datasets=[data["id"], fjord.FileObject.from_dict(data), local],
            metrics=["contains", "loss"], samples=3, bootstrap=500, seed=7, judge="judge-model",
            metadata={"why": "test"})
    (body,) = daemon.evals.created
    uploaded = {f["filename"]: f["id"] for f in daemon.files.files.values()}
    assert body["type"] == "evaluation" and body["model"] == "demo"
    assert body["candidates"][0] == {"name": "base"}
    assert body["candidates"][1] == {"name": "ft", "job": ft["id"]}
    mine, other = body["candidates"][2], body["candidates"][3]
    assert set(mine) == {"name", "adapter_config", "adapter_model"} and mine["name"] == "mine"
    assert mine["adapter_config"] != other["adapter_config"] and mine["adapter_model"] != other["adapter_model"]
    assert {mine["adapter_config"], mine["adapter_model"]} <= set(daemon.files.files)
    assert body["candidates"][4:] == [{"name": "d", "job": ft["id"]}, {"name": "e", "job": ft["id"]}]
    assert body["datasets"] == [data["id"], data["id"], uploaded["more.jsonl"]]
    assert body["evaluation"] == {"metrics": ["contains", "loss"], "samples": 3, "bootstrap": 500, "seed": 7,
                                  "judge": "judge-model"}
    assert body["metadata"] == {"why": "test"} and len(body["idempotency_key"]) == 32
    assert "training_file" not in body and "hyperparameters" not in body
    # The job object of an evaluation: its own fields, no training file.
    assert isinstance(job, fjord.BoundJob) and job.is_evaluation and job.status == "validating"
    assert job.training_file == "" and job.result_report is None and job.result_adapter is None
    assert [x.name for x in job.candidates] == ["base", "ft", "mine", "other", "d", "e"]
    assert job.candidates[1].job == ft["id"] and job.candidates[0].job is None
    assert job.datasets == body["datasets"]
    assert job.evaluation == fjord.EvaluationSettings(metrics=["contains", "loss"], samples=3, bootstrap=500, seed=7,
                                                      judge="judge-model")


def test_candidate_errors_name_the_candidate_before_any_upload(daemon, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "half"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text("{}")
    with fast_client(daemon.endpoint) as c:
        def create(cands, datasets=("file-0000000000000001",)):
            return c.evaluations.create(model="demo", candidates=cands, datasets=list(datasets))

        with pytest.raises(fjord.NotFoundError, match=f"{empty} has no adapter_config.json"):
            create(["base", f"mine={empty}"])
        with pytest.raises(fjord.NotFoundError, match=f"{no_weights} has no adapter_model.safetensors"):
            create(["base", f"mine={no_weights}"])
        with pytest.raises(fjord.NotFoundError, match="is not a directory"):
            create([f"x={tmp_path / 'nope'}"])
        with pytest.raises(fjord.InvalidArgumentError) as e:
            create(["base", "bad name"])
        assert e.value.param == "candidates[1].name"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            create(["x="])
        assert e.value.param == "candidates[0]"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            create([3])
        assert e.value.param == "candidates[0]"
        with pytest.raises(fjord.InvalidArgumentError, match="non-empty list"):
            create("base")
        with pytest.raises(fjord.NotFoundError) as e:
            create(["base", f"ok={adapter_dir(tmp_path)}"], [tmp_path / "missing.jsonl"])
        assert e.value.param == "datasets[0]"
    assert daemon.requests("file.upload.begin") == [] and daemon.requests("job.create") == []


def test_daemon_errors_keep_their_param(daemon):
    running = daemon.jobs.add("running")
    data = daemon.files.add("d.jsonl", b"{}\n")
    with fast_client(daemon.endpoint) as c:
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.evaluations.create(model="demo", candidates=["base", f"ft={running['id']}"], datasets=[data["id"]])
        assert e.value.param == "candidates[1].job" and "only a succeeded job has an adapter" in e.value.message
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.evaluations.create(model="demo", candidates=["base"], datasets=[data["id"], "file-nope"])
        assert e.value.param == "datasets[1]"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.evaluations.create(model="demo", candidates=["base"], datasets=[data["id"]], metrics=["bleu"])
        assert e.value.param == "evaluation.metrics"


def test_report_is_downloaded_checked_and_typed(daemon, tmp_path):
    ft = daemon.jobs.add("succeeded")
    data = daemon.files.add("d.jsonl", b"{}\n")
    with fast_client(daemon.endpoint) as c:
        job = c.evaluations.create(model="demo", candidates=["base", f"ft={ft['id']}"], datasets=[data["id"]],
                                   judge="judge-model")
        with pytest.raises(fjord.FailedPreconditionError) as e:
            c.evaluations.report(job)
        assert e.value.param == "job_id"
        daemon.evals.finish(job.id)
        done = c.evaluations.get(job.id)
        assert done.succeeded and done.result_report == f"/mnt/fjord/acme/jobs/{job.id}/report"
        with pytest.raises(fjord.FailedPreconditionError):
            c.adapters.files(done)
        report = c.evaluations.report(done)
        assert isinstance(report, fjord.EvaluationReport)
        assert (report.job, report.model, len(report.datasets)) == (job.id, "demo", 1)
        ds = report.datasets[0]
        assert isinstance(ds, fjord.DatasetReport) and (ds.data, ds.examples) == (data["id"], 20)
        base, tuned = ds.candidates
        assert (base.name, base.adapter, tuned.name) == ("base", None, "ft")
        assert tuned.metrics["contains"] == 0.9 and tuned.intervals["contains"] == fjord.Interval(0.8, 1.0)
        assert 0.85 in tuned.intervals["contains"]
        assert base.speed["generated_tokens"] == 60 and base.peak_rss_bytes == 407764992
        assert ds.candidate("ft") is tuned
        p = ds.pair("base", "ft", "contains")
        assert (p.verdict, p.mean_difference) == ("worse", -0.8)
        assert ds.pair("base", "ft", "exact_match").verdict == "tie"
        assert [(r.name, r.rank) for r in ds.ranking["contains"]] == [("base", 2), ("ft", 1)]
        assert ds.samples[0].replies == {"base": "base says City1", "ft": "ft says City1"}
        assert ds.judge.model == "judge-model"
        (jp,) = ds.judge.pairs
        assert (jp.a, jp.b, jp.wins_b, jp.verdict) == ("base", "ft", 15, "worse")
        assert jp.win_rate_a == fjord.WinRate(0.2, 0.08, 0.35)
        assert report.to_dict()["schema"] == "fjord.evaluation/1"

        out = c.evaluations.download_report(done, tmp_path / "rep")
        assert out == tmp_path / "rep"
        assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
        assert json.loads((out / "report.json").read_text()) == report.raw
        assert (out / "report.html").read_bytes().startswith(b"<!doctype html>")
        assert [f.name for f in c.evaluations.report_files(done)] == ["report.json", "report.html"]
    # Chunked: the fake sends at most 1000 bytes per chunk.
    assert len(daemon.requests("report.download")) > 2


def test_a_corrupt_report_is_data_loss_and_leaves_nothing(daemon, tmp_path):
    data = daemon.files.add("d.jsonl", b"{}\n")
    with fast_client(daemon.endpoint) as c:
        job = c.evaluations.create(model="demo", candidates=["base"], datasets=[data["id"]])
        daemon.evals.finish(job.id)
        good = daemon.evals.reports[job.id]["report.json"]
        daemon.evals.reports[job.id]["report.json"] = good  # listed with this sha256 ...
        real = daemon.evals.handle

        def corrupt(peer):
            m = peer.message
            if m.type == MessageType.REQUEST and m.command == "report.files":
                real(peer)
                daemon.evals.reports[job.id]["report.json"] = b"X" + good[1:]  # ... served with another
                return True
            return real(peer)

        daemon.evals.handle = corrupt
        with pytest.raises(fjord.DataLossError, match="report.json"):
            c.evaluations.download_report(job, tmp_path / "rep")
        assert list((tmp_path / "rep").iterdir()) == []


def test_report_of_another_schema_is_internal_error():
    with pytest.raises(fjord.InternalError, match="schema is 'fjord.evaluation/9'"):
        fjord.EvaluationReport.from_dict({"schema": "fjord.evaluation/9", "datasets": []})
    bad = compare_report("file-1", ["base", "ft"])
    bad["candidates"][1]["intervals"]["loss"] = {"low": "x", "high": 1}
    with pytest.raises(fjord.InternalError, match=r"datasets\[0\].candidates\[1\].intervals.loss.low"):
        fjord.EvaluationReport.from_dict({"schema": "fjord.evaluation/1", "job": "j", "model": "m",
                                          "datasets": [bad]})


def test_list_keeps_the_evaluation_jobs_and_wait_reports_the_report(daemon):
    data = daemon.files.add("d.jsonl", b"{}\n")
    daemon.jobs.add("succeeded")
    with fast_client(daemon.endpoint) as c:
        ev = c.evaluations.create(model="demo", candidates=["base"], datasets=[data["id"]])
        daemon.jobs.add("running")
        assert [j.id for j in c.evaluations.list()] == [ev.id]
        assert c.evaluations.list(status="succeeded") == []
        assert len(c.jobs.list().data) == 3
    final = daemon.evals.finish(ev.id)

    def subscribe(peer):
        m = peer.message
        if m.type == MessageType.REQUEST and m.command == "job.subscribe":
            peer.ok({"event": {"seq": 1, "time_ms": 1, "type": "log", "message": "base on d: contains 0.100",
                               "data": {"step": 1, "total_steps": 1}}}, final=False)
            peer.ok({"job": final})

    out = io.StringIO()
    with FakeDaemon(subscribe) as d2, fast_client(d2.endpoint) as c:
        job = c.evaluations.wait(ev.id, progress=out)
    assert job.succeeded and job.is_evaluation
    assert "log: base on d: contains 0.100" in out.getvalue()
    assert f"job {ev.id} succeeded: report at /mnt/fjord/acme/jobs/{ev.id}/report" in out.getvalue()


def test_fine_tune_jobs_read_as_before():
    job = fjord.Job.from_dict(job_body("job-1", "succeeded", result_adapter={"path": "/a"}))
    assert (job.type, job.is_evaluation, job.candidates, job.datasets, job.evaluation, job.result_report) == (
        "fine_tune", False, [], [], None, None)
    with pytest.raises(fjord.InternalError, match="job.candidates"):
        fjord.Job.from_dict(job_body("job-1", "queued", type="evaluation", candidates={"name": "x"}))
