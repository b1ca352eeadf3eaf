"""fjord.Client against a scripted ROUTER (fake_daemon.FakeDaemon): requests
as the protocol says, error mapping, lazy-pirate retries with one idempotency
key, a daemon that is down, CURVE refusal, event streams (heartbeats,
resubscribe after silence, CANCEL), chunked uploads and checked downloads.
The real daemon is driven in tests/integration.

    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/python/test_sdk_client.py
"""

import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time

import pytest

import fjord
import fjord.config
import fjord.connection
from fjord._wire import MessageType, ServerMessage
from fake_daemon import FakeDaemon, FakeFiles, FakeJobs, Peer, job_body, wait_for

PING = {"protocol": 1, "daemon": "fjordd", "version": "0.1.0", "node": "node-1", "time_ms": 1,
        "heartbeat_interval_ms": 2000, "liveness": 3,
        "principal": {"tenant": "acme", "role": "tenant", "key_name": "ci"},
        "limits": {"max_message_bytes": 8388608, "max_body_bytes": 1048576,
                   "upload_chunk_bytes": 4194304, "max_upload_bytes": 1073741824}}


def fast_client(endpoint, **kw):
    kw.setdefault("timeout", 1.0)
    kw.setdefault("heartbeat_interval", 0.5)  # given: no ping to learn the daemon's
    kw.setdefault("heartbeat_liveness", 3)
    return fjord.Client(endpoint, config_file=os.devnull, **kw)


def answer_ping(peer):
    if peer.message.type == MessageType.REQUEST and peer.message.command == "ping":
        peer.ok(PING)


def test_ping_and_request_frames():
    with FakeDaemon(answer_ping) as d, fast_client(d.endpoint) as c:
        info = c.ping()
        assert (info.daemon, info.tenant, info.role, info.heartbeat_interval_ms) == ("fjordd", "acme", "tenant", 2000)
        assert info.limits["upload_chunk_bytes"] == 4194304
        (req,) = d.requests("ping")
        assert req.body == {}
        assert fjord._wire.valid_request_id(req.request_id)


def test_error_reply_becomes_the_class_for_its_code():
    def handler(peer):
        m = peer.message
        if m.command == "job.get":
            peer.error("NOT_FOUND", f"job {m.body['job_id']} not found", "job_id")
        elif m.command == "job.create":
            peer.error("INVALID_ARGUMENT", "hyperparameters.learning_rate must be in (0, 1], got -1",
                       "hyperparameters.learning_rate")
        elif m.command == "job.resume":
            peer.error("FAILED_PRECONDITION", "job job-1 is succeeded; only a paused job can resume")
        elif m.command == "nope":
            peer.error("UNIMPLEMENTED", "unknown command 'nope'", "command")

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.NotFoundError) as e:
            c.jobs.get("job-404")
        assert (e.value.code, e.value.param) == ("NOT_FOUND", "job_id")
        assert "job-404 not found" in e.value.message
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.create(model="demo", training_file="file-1", hyperparameters={"learning_rate": -1})
        assert e.value.param == "hyperparameters.learning_rate"
        assert str(e.value).startswith("INVALID_ARGUMENT: hyperparameters.learning_rate must be")
        with pytest.raises(fjord.FailedPreconditionError, match="only a paused job") as e:
            c.jobs.resume("job-1")
        assert e.value.param is None
        with pytest.raises(fjord.UnimplementedError):
            c.call("nope")
        assert isinstance(e.value, fjord.FjordError)


def test_create_body_and_retry_reuses_idempotency_key():
    seen = []

    def handler(peer):
        m = peer.message
        if m.command != "job.create":
            return
        seen.append(m)
        if len(seen) == 1:
            return  # the reply is "lost": the client must retry on a new connection
        peer.ok(job_body("job-1", "validating", idempotency_key=m.body["idempotency_key"]))

    with FakeDaemon(handler) as d, fast_client(d.endpoint, timeout=0.4) as c:
        job = c.jobs.create(model="demo", training_file=fjord.FileObject("file-9", "t.jsonl", 3, "", 0, "files/file-9"),
                            validation_file="files/valid.jsonl", heldout_file="file-8",
                            hyperparameters={"epochs": 2},
                            lora=fjord.LoraConfig(r=8), suffix="capitals", seed=7, priority=1)
        assert job.id == "job-1" and job.status == "validating"
        assert len(seen) == 2
        assert seen[0].request_id != seen[1].request_id
        assert seen[0].body == seen[1].body
        body = seen[0].body
        assert body["training_file"] == "file-9"
        assert body["validation_file"] == "files/valid.jsonl"
        assert body["heldout_file"] == "file-8"
        assert body["hyperparameters"] == {"epochs": 2, "seed": 7}
        assert body["lora"] == {"r": 8, "alpha": 32.0, "dropout": 0.05, "target_modules": ["all-linear"]}
        assert body["metadata"] == {"suffix": "capitals"}
        assert body["priority"] == 1
        assert "quantization" not in body and "gpus" not in body  # not given: the daemon's defaults
        assert len(body["idempotency_key"]) == 32
        # Two routing ids: the retry came on a fresh connection (lazy pirate).
        ids = {rid for rid, m in d.received if m.type == MessageType.REQUEST and m.command == "job.create"}
        assert len(ids) == 2


def test_seed_argument_and_hyperparameters():
    with FakeDaemon(lambda p: p.ok(job_body("job-4"))) as d, fast_client(d.endpoint) as c:
        c.jobs.create(model="demo", training_file="file-1", hyperparameters=fjord.Hyperparameters(epochs=2), seed=7)
        body = d.requests("job.create")[0].body
        assert body["hyperparameters"]["seed"] == 7 and body["hyperparameters"]["epochs"] == 2
        with pytest.raises(fjord.InvalidArgumentError, match="seed given twice") as e:
            c.jobs.create(model="demo", training_file="file-1", hyperparameters={"seed": 1}, seed=7)
        assert e.value.param == "hyperparameters.seed"


def test_quantization_is_sent_when_given_and_read_back_from_the_job():
    def handler(peer):
        m = peer.message
        if m.command == "job.create":
            if m.body.get("model") == "llama-3.1-8b" and m.body.get("quantization", "none") == "none":
                peer.error("INVALID_ARGUMENT", "model 'llama-3.1-8b' (8.0 B parameters) needs 16.1 GB for its "
                           "frozen base in bf16 alone (2 B x 8,030,261,248); this node's GPUs have 16 GB each "
                           "(14.4 GB usable after 10% for the CUDA context, activations and the adapter); with "
                           "quantization: nf4 it needs 5.7 GB", "quantization")
            elif "quantization" in m.body:
                peer.ok(job_body("job-5", "validating", model=m.body["model"], quantization=m.body["quantization"]))
            else:
                peer.ok(job_body("job-6", "validating"))  # a job object without the field: "none"

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        job = c.jobs.create(model="llama-3.1-8b", training_file="file-1", quantization="nf4", gpus=2)
        assert (job.quantization, job.model) == ("nf4", "llama-3.1-8b")
        body = d.requests("job.create")[0].body
        assert (body["quantization"], body["gpus"]) == ("nf4", 2)
        job = c.jobs.create(model="demo", training_file="file-1")
        assert "quantization" not in d.requests("job.create")[1].body
        assert job.quantization == "none"
        assert fjord.Job.from_dict(job_body("job-7", quantization=None)).quantization == "none"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.create(model="llama-3.1-8b", training_file="file-1", quantization="none")
        assert e.value.param == "quantization"
        assert "needs 16.1 GB for its frozen base in bf16 alone" in e.value.message
        assert "with quantization: nf4 it needs 5.7 GB" in e.value.message
        assert d.requests("job.create")[2].body["quantization"] == "none"  # given: sent as given


def test_shard_base_is_sent_when_given_and_read_back_from_the_job():
    def handler(peer):
        m = peer.message
        if m.command == "job.create":
            if m.body.get("gpus") == 8 and not m.body.get("shard_base", False):
                peer.error("INVALID_ARGUMENT", "model 'llama-3.3-70b' (70.6 B parameters) needs 141.1 GB for its "
                           "frozen base in bf16 alone (2 B x 70,553,706,496); this node's GPUs have 80 GB each (72 GB "
                           "usable after 10% for the CUDA context, activations and the adapter), and each of the "
                           "job's 8 GPUs holds the whole base (data parallel); with quantization: nf4 it needs 39.5 "
                           "GB; with shard_base over the job's 8 GPUs it needs 19.6 GB on each", "quantization")
            elif "shard_base" in m.body:
                peer.ok(job_body("job-5", "validating", gpus=m.body["gpus"], shard_base=m.body["shard_base"]))
            else:
                peer.ok(job_body("job-6", "validating"))  # a job object without the field: False

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        job = c.jobs.create(model="llama-3.3-70b", training_file="file-1", gpus=8, shard_base=True)
        assert (job.shard_base, job.gpus) == (True, 8)
        body = d.requests("job.create")[0].body
        assert (body["shard_base"], body["gpus"]) == (True, 8)
        assert "quantization" not in body
        job = c.jobs.create(model="demo", training_file="file-1")
        assert "shard_base" not in d.requests("job.create")[1].body
        assert job.shard_base is False
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.create(model="llama-3.3-70b", training_file="file-1", gpus=8, shard_base=False)
        assert e.value.param == "quantization"
        assert "with shard_base over the job's 8 GPUs it needs 19.6 GB on each" in e.value.message
        assert d.requests("job.create")[2].body["shard_base"] is False  # given: sent as given
    assert fjord.Job.from_dict(job_body("job-7", shard_base=None)).shard_base is False
    with pytest.raises(fjord.InternalError, match=r"job.shard_base is 'yes', not a bool"):
        fjord.Job.from_dict(job_body("job-7", shard_base="yes"))


def test_given_idempotency_key_is_sent_and_checked():
    with FakeDaemon(lambda p: p.ok(job_body("job-2"))) as d, fast_client(d.endpoint) as c:
        c.jobs.create(model="demo", training_file="file-1", idempotency_key="nightly-2024-05-01")
        assert d.requests("job.create")[0].body["idempotency_key"] == "nightly-2024-05-01"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.create(model="demo", training_file="file-1", idempotency_key="x" * 129)
        assert e.value.param == "idempotency_key"


def test_no_reply_after_retries_is_deadline_exceeded():
    with FakeDaemon(lambda p: None) as d, fast_client(d.endpoint, timeout=0.3, retries=2) as c:
        t0 = time.monotonic()
        with pytest.raises(fjord.DeadlineExceededError, match=r"to 'job.get' within 0.3 s, 3 attempts"):
            c.jobs.get("job-1")
        assert 0.85 < time.monotonic() - t0 < 3.0
        assert len(d.requests("job.get")) == 3


def test_daemon_down_fails_after_one_timeout_with_a_clear_message():
    with tempfile.TemporaryDirectory() as tmp:
        for endpoint in (f"ipc://{tmp}/nobody.sock", "tcp://127.0.0.1:9"):
            with fast_client(endpoint, timeout=0.5, retries=2) as c:
                t0 = time.monotonic()
                with pytest.raises(fjord.UnavailableError) as e:
                    c.ping()
                took = time.monotonic() - t0
                assert str(e.value) == f"UNAVAILABLE: no reply from {endpoint} within 0.5 s: is fjordd running?"
                assert 0.45 < took < 1.4  # one timeout, not three


def test_curve_right_key_works_and_wrong_key_is_unauthenticated():
    server = fjord.generate_keypair()
    good, bad = fjord.generate_keypair(), fjord.generate_keypair()
    with FakeDaemon(answer_ping, curve_secret=server.secret_key, allowed_keys={good.public_key}) as d:
        with fast_client(d.endpoint, server_public_key=server.public_key, secret_key=good.secret_key) as c:
            assert c.ping().tenant == "acme"
        with fast_client(d.endpoint, server_public_key=server.public_key, secret_key=bad.secret_key, timeout=3) as c:
            t0 = time.monotonic()
            with pytest.raises(fjord.UnauthenticatedError, match="refused this client's CURVE key"):
                c.ping()
            assert time.monotonic() - t0 < 2.5  # reported at the handshake, not at the timeout
        # The daemon's key is wrong: the handshake never completes.
        other = fjord.generate_keypair()
        with fast_client(d.endpoint, server_public_key=other.public_key, secret_key=good.secret_key, timeout=0.5) as c:
            with pytest.raises(fjord.UnauthenticatedError, match="wrong server public key"):
                c.ping()
        # A plain client at a CURVE daemon.
        with fast_client(d.endpoint, timeout=0.5) as c:
            with pytest.raises(fjord.UnauthenticatedError, match="the daemon requires CURVE"):
                c.ping()
        assert d.requests() == [d.requests()[0]]  # only the good client's ping got through


def stream_handler(events, final_status="succeeded", silent_after=None, partial_hb=False):
    """Answers job.subscribe with `events` (seq 1..n) then a FINAL job. With
    silent_after=k the first subscription goes silent after k events."""
    state = {"subs": 0}

    def handler(peer):
        m = peer.message
        if m.type == MessageType.HEARTBEAT:
            return
        if m.type == MessageType.CANCEL:
            peer.send(ServerMessage(MessageType.FINAL, m.request_id, "OK", {"job": job_body("job-1", "running")}))
            return
        if m.command != "job.subscribe":
            return
        state["subs"] += 1
        after = m.body["after_seq"]

        def run():
            for e in events:
                if e["seq"] <= after:
                    continue
                if silent_after is not None and state["subs"] == 1 and e["seq"] > silent_after:
                    return  # the daemon "dies" for this subscription
                time.sleep(e.get("_delay", 0))
                ev = {k: v for k, v in e.items() if not k.startswith("_")}
                peer.ok({"event": ev}, final=False)
            if final_status is not None:
                peer.ok({"job": job_body("job-1", final_status, result_adapter={"path": "/s/acme/jobs/job-1/adapter"})})

        threading.Thread(target=run, daemon=True).start()

    return handler, state


def ev(seq, type_, **data):
    return {"seq": seq, "time_ms": 1700000000000 + seq, "type": type_, "message": data.pop("message", ""),
            "data": data}


EVENTS = [
    ev(1, "status", status="queued", previous="validating", message="validation passed"),
    ev(2, "status", status="running", previous="queued"),
    ev(3, "step", step=1, total_steps=4, loss=2.5, tokens_per_s=1000.0, eta_s=3.0),
    ev(4, "step", step=2, total_steps=4, loss=2.0, tokens_per_s=1100.0, eta_s=2.0),
    ev(5, "eval", step=2, total_steps=4, eval_loss=1.9, eval_token_accuracy=0.5),
    ev(6, "step", step=4, total_steps=4, loss=1.5, tokens_per_s=1200.0, eta_s=0.0),
    ev(7, "done", step=4, total_steps=4, eval_loss=1.4, message="adapter written"),
    ev(8, "status", status="succeeded", previous="running"),
]


def test_follow_stream_yields_every_event_then_the_final_job():
    handler, _ = stream_handler(EVENTS)
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        stream = c.jobs.events("job-1", follow=True)
        got = [e.seq for e in stream]
        assert got == list(range(1, 9))
        assert stream.job.status == "succeeded"
        assert stream.job.result_adapter == "/s/acme/jobs/job-1/adapter"
        (sub,) = d.requests("job.subscribe")
        assert sub.body == {"job_id": "job-1", "after_seq": 0}
        assert wait_for(lambda: len(d.of_type(MessageType.DISCONNECT)) == 1)


def test_stream_sends_heartbeats_while_waiting():
    slow = [dict(EVENTS[0], _delay=0.6)] + EVENTS[1:]
    handler, _ = stream_handler(slow)
    with FakeDaemon(handler) as d, fast_client(d.endpoint, heartbeat_interval=0.1, heartbeat_liveness=20) as c:
        assert len(list(c.jobs.events("job-1", follow=True))) == 8
        assert len(d.of_type(MessageType.HEARTBEAT)) >= 3


def test_stream_uses_the_daemons_heartbeat_interval_from_ping():
    slow = [dict(EVENTS[0], _delay=0.7)] + EVENTS[1:]
    handler, _ = stream_handler(slow)

    def with_ping(peer):
        if peer.message.type == MessageType.REQUEST and peer.message.command == "ping":
            peer.ok(dict(PING, heartbeat_interval_ms=100, liveness=3))
        elif peer.message.type == MessageType.HEARTBEAT:
            peer.heartbeat()  # as fjordd does: the client hears it is alive
        else:
            handler(peer)

    with FakeDaemon(with_ping) as d, fjord.Client(d.endpoint, config_file=os.devnull, timeout=1) as c:
        assert len(list(c.jobs.events("job-1", follow=True))) == 8
        assert len(d.requests("ping")) == 1
        assert len(d.of_type(MessageType.HEARTBEAT)) >= 5  # every 0.1 s while it waited 0.7 s
        list(c.jobs.events("job-1", follow=True))
        assert len(d.requests("ping")) == 1  # asked once per Client


def test_stream_resubscribes_when_the_consumer_kept_it_away_too_long():
    events = [ev(i, "log", message=f"m{i}", _delay=0.02) for i in range(1, 6)]
    handler, state = stream_handler(events)
    with FakeDaemon(handler) as d, fast_client(d.endpoint, heartbeat_interval=0.1, heartbeat_liveness=3) as c:
        got = []
        for e in c.jobs.events("job-1", follow=True):
            got.append(e.seq)
            if e.seq == 2:
                time.sleep(0.5)  # > 3 x 0.1 s without a heartbeat: a daemon would have dropped us
        assert got == [1, 2, 3, 4, 5]
        subs = d.requests("job.subscribe")
        assert [s.body["after_seq"] for s in subs] == [0, 2]
        assert len(d.of_type(MessageType.DISCONNECT)) >= 1  # the old stream was let go of


def test_stream_resubscribes_after_the_daemon_restarts():
    """A restarted daemon (same endpoint) has forgotten the stream; ZeroMQ
    reconnects by itself, and the client must notice and subscribe again."""
    first_subs = []

    def first(peer):
        m = peer.message
        if m.type == MessageType.HEARTBEAT:
            peer.heartbeat()
        elif m.command == "job.subscribe":
            first_subs.append(m)
            for e in EVENTS[:3]:
                peer.ok({"event": e}, final=False)

    handler, state = stream_handler(EVENTS)
    d1 = FakeDaemon(first)
    endpoint = d1.endpoint
    got = []
    with fast_client(endpoint, heartbeat_interval=0.1, heartbeat_liveness=30) as c:
        stream = c.jobs.events("job-1", follow=True)
        it = iter(stream)
        for _ in range(3):
            got.append(next(it).seq)
        d1._stop = True  # the daemon dies...
        d1.thread.join()
        d1.sock.close(0)
        d2 = FakeDaemon(handler, endpoint=endpoint)  # ...and a new one comes up at the same endpoint
        try:
            got += [e.seq for e in it]
        finally:
            d2.close()
    d1.ctx.term()
    shutil.rmtree(d1.dir, ignore_errors=True)
    assert got == list(range(1, 9))
    assert [s.body["after_seq"] for s in d2.requests("job.subscribe")] == [3]
    assert stream.job.status == "succeeded"


def test_stream_resubscribes_after_silence_without_losing_or_repeating_events():
    handler, state = stream_handler(EVENTS, silent_after=4)
    with FakeDaemon(handler) as d, fast_client(d.endpoint, heartbeat_interval=0.1, heartbeat_liveness=3) as c:
        stream = c.jobs.events("job-1", follow=True)
        assert [e.seq for e in stream] == list(range(1, 9))
        subs = d.requests("job.subscribe")
        assert [s.body["after_seq"] for s in subs] == [0, 4]
        assert state["subs"] == 2


def test_stream_gives_up_after_retries_of_silence():
    def handler(peer):
        if peer.message.command == "job.subscribe":
            peer.ok({"event": ev(1, "log", message="hello")}, final=False)  # then nothing, ever

    with FakeDaemon(handler) as d, fast_client(d.endpoint, heartbeat_interval=0.05, heartbeat_liveness=2,
                                               retries=1) as c:
        seen = []
        with pytest.raises(fjord.UnavailableError, match="went silent for 0.1 s during the event stream of job-1"):
            for e in c.jobs.events("job-1", follow=True):
                seen.append(e.seq)
        assert seen == [1]
        assert len(d.requests("job.subscribe")) == 2  # the first and one resubscribe (retries=1)


def test_close_cancels_the_stream():
    events = [ev(i, "log", message=f"m{i}", _delay=0.05) for i in range(1, 50)]
    handler, _ = stream_handler(events, final_status=None)
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with c.jobs.events("job-1", follow=True) as stream:
            for e in stream:
                if e.seq == 2:
                    break
        assert stream.job is not None and stream.job.status == "running"
        (cancel,) = d.of_type(MessageType.CANCEL)
        assert cancel.request_id == d.requests("job.subscribe")[0].request_id


def test_stream_error_reply_raises():
    def handler(peer):
        if peer.message.command == "job.subscribe":
            peer.error("NOT_FOUND", "job job-9 not found", "job_id")

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.NotFoundError):
            list(c.jobs.events("job-9", follow=True))


def test_wait_draws_progress_and_returns_the_final_job():
    handler, _ = stream_handler(EVENTS)
    out = io.StringIO()
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        seen = []
        job = c.jobs.bind(fjord.Job.from_dict(job_body("job-1"))).wait(progress=out, on_event=seen.append)
        assert job.status == "succeeded" and len(seen) == 8
        assert isinstance(job, fjord.BoundJob) and job._jobs is c.jobs  # the final job is bound too
    text = out.getvalue()
    assert "status: validating -> queued (validation passed)" in text
    assert "1/4  loss 2.5000  1000 tok/s  ETA 3s" in text
    assert "4/4  loss 1.5000  eval 1.9000  1200 tok/s  ETA 0s" in text
    assert "eval  step 2/4  loss 1.9000  token accuracy 50.0%" in text
    assert "job job-1 succeeded: adapter at /s/acme/jobs/job-1/adapter" in text


def test_progress_shows_the_heldout_answers_of_the_first_eval():
    """The same lines as the CLI's (sdk/cpp/cli/cli_test.cc RenderTest)."""
    from fjord._progress import Progress

    out = io.StringIO()
    p = Progress(out, bar=False)
    for d in [ev(1, "eval", step=0, total_steps=40, eval_loss=2.5, eval_token_accuracy=0.25, heldout_accuracy=0.05),
              ev(2, "eval", step=0, total_steps=40, heldout_accuracy=0.0),
              ev(3, "eval", step=20, total_steps=40, eval_loss=1.5, eval_token_accuracy=0.5),
              ev(4, "eval", step=40, total_steps=40, eval_loss=1.0, heldout_accuracy=-1)]:
        p.on_event(fjord.Event.from_dict(d))
    assert out.getvalue() == ("eval  step 0/40  loss 2.5000  token accuracy 25.0%  held-out answers 5.0%\n"
                              "eval  step 0/40  held-out answers 0.0%\n"
                              "eval  step 20/40  loss 1.5000  token accuracy 50.0%\n"
                              "eval  step 40/40  loss 1.0000\n")
    job = fjord.Job.from_dict(job_body("job-1", heldout_file="file-8"))
    assert job.heldout_file == "file-8"
    assert fjord.Job.from_dict(job_body("job-1")).heldout_file is None


def test_wait_raise_on_failure_and_timeout():
    handler, _ = stream_handler(EVENTS[:2], final_status="failed")
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.JobFailedError, match="job job-1 ended failed") as e:
            c.jobs.wait("job-1", raise_on_failure=True)
        assert e.value.job.status == "failed"
    handler, _ = stream_handler([], final_status=None)
    with FakeDaemon(handler) as d, fast_client(d.endpoint, heartbeat_interval=0.1) as c:
        t0 = time.monotonic()
        with pytest.raises(fjord.DeadlineExceededError, match="not final within"):
            c.jobs.wait("job-1", timeout=0.5)
        assert time.monotonic() - t0 < 2.0


def test_events_without_follow_pages_through_job_events():
    def handler(peer):
        m = peer.message
        if m.command == "job.events":
            after, limit = m.body["after_seq"], m.body["limit"]
            page = [e for e in EVENTS if e["seq"] > after][:limit]
            peer.ok({"events": page, "has_more": page[-1]["seq"] < 8 if page else False})

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        got = list(c.jobs.events("job-1", page_size=3))
        assert [e.seq for e in got] == list(range(1, 9))
        assert got[2].type == "step" and got[2].data["loss"] == 2.5
        assert [r.body["after_seq"] for r in d.requests("job.events")] == [0, 3, 6]


def test_upload_in_chunks_with_sha256(tmp_path):
    content = os.urandom(23) + b"\x00\xff" + b'{"text": "hi"}\n' * 3
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    got = bytearray()

    def handler(peer):
        m = peer.message
        if m.command == "file.upload.begin":
            assert m.body == {"filename": "train.jsonl", "bytes": len(content),
                              "sha256": hashlib.sha256(content).hexdigest()}
            peer.ok({"upload_id": "upl-1", "chunk_bytes": 10})
        elif m.command == "file.upload.chunk":
            assert m.body["offset"] == len(got) and len(m.data) <= 10
            got.extend(m.data)
            peer.ok({"received": len(got)})
        elif m.command == "file.upload.finish":
            peer.ok({"id": "file-1", "filename": "train.jsonl", "bytes": len(got),
                     "sha256": hashlib.sha256(bytes(got)).hexdigest(), "created_at_ms": 5, "path": "files/file-1"})

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        f = c.files.upload(path)
        assert bytes(got) == content
        assert (f.id, f.path, f.bytes) == ("file-1", "files/file-1", len(content))
        assert len(d.requests("file.upload.chunk")) == (len(content) + 9) // 10
        with pytest.raises(fjord.NotFoundError, match="no such file"):
            c.files.upload(tmp_path / "missing.jsonl")
        # A pathlib.Path as training_file is uploaded first.
        d.handler = lambda p: handler(p) if p.message.command != "job.create" else p.ok(job_body("job-3"))
        got.clear()
        c.jobs.create(model="demo", training_file=path)
        assert d.requests("job.create")[0].body["training_file"] == "file-1"
        assert "heldout_file" not in d.requests("job.create")[0].body  # not given: not sent
        got.clear()
        c.jobs.create(model="demo", training_file="files/t.jsonl", heldout_file=path)
        assert d.requests("job.create")[1].body["heldout_file"] == "file-1"
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.create(model="demo", training_file="files/t.jsonl", heldout_file=7)
        assert e.value.param == "heldout_file"


def test_files_delete_returns_the_file_then_not_found():
    store = FakeFiles()
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        a = c.files.upload_bytes(b'{"text": "a"}\n', "a.jsonl")
        b = c.files.upload_bytes(b'{"text": "bb"}\n', "b.jsonl")
        gone = c.files.delete(a.id)
        assert gone == a and gone.raw == a.raw  # the file as it was
        assert d.requests("file.delete")[0].body == {"file_id": a.id}
        assert [f.id for f in c.files.list()] == [b.id]
        with pytest.raises(fjord.NotFoundError) as e:
            c.files.delete(a.id)  # deleted already
        assert (e.value.code, e.value.param) == ("NOT_FOUND", "file_id")
        with pytest.raises(fjord.NotFoundError):
            c.files.delete("file-00000000deadbeef")
        assert c.files.delete(b).id == b.id  # a FileObject works too
        assert c.files.list() == []
        with pytest.raises(fjord.InvalidArgumentError):
            c.files.delete("")
        assert len(d.requests("file.delete")) == 4  # the empty id never reached the daemon


def lose_first_reply(command, backend):
    """A handler for `backend` that carries out the first `command` but loses its reply."""
    lost = []

    def handler(peer):
        if peer.message.command == command and not lost:
            lost.append(peer.message)
            silent = Peer(peer.server, peer.routing_id, peer.message)
            silent.send = lambda m: None  # the daemon acts, its reply is lost
            backend.handle(silent)
        else:
            backend.handle(peer)

    return handler


def test_files_delete_retried_after_a_lost_reply_is_not_found():
    store = FakeFiles()
    f = store.add("t.jsonl", b"x" * 10)
    with FakeDaemon(lose_first_reply("file.delete", store)) as d, fast_client(d.endpoint, timeout=0.3) as c:
        with pytest.raises(fjord.NotFoundError) as e:
            c.files.delete(f["id"])
        assert e.value.param == "file_id"
        assert [m.body for m in d.requests("file.delete")] == [{"file_id": f["id"]}] * 2
        assert store.files == {}


def test_files_delete_of_a_file_a_live_job_uses_is_failed_precondition():
    store = FakeFiles()
    f = store.add("t.jsonl", b"x" * 10)
    store.live_jobs["job-0000000000000007"] = ("running", f["path"])
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.FailedPreconditionError, match="job-0000000000000007") as e:
            c.files.delete(f["id"])
        assert e.value.param == "file_id"
        del store.live_jobs["job-0000000000000007"]  # the job ended
        assert c.files.delete(f["id"]).id == f["id"]


def test_files_usage_reported_and_not():
    store = FakeFiles(quota_bytes=1000, other_bytes=300)
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        f = c.files.upload_bytes(b"y" * 200, "t.jsonl")
        u = c.files.usage()
        assert u == fjord.StorageUsage(usage_bytes=500, quota_bytes=1000, usage_files=1, quota_files=100000)
        assert u.available_bytes == 500
        c.files.delete(f)
        assert c.files.usage().usage_bytes == 300
        store.quota_bytes = 0
        u = c.files.usage()
        assert (u.usage_bytes, u.quota_bytes, u.available_bytes) == (300, 0, None)
        store.report_usage = False  # a daemon older than the quota
        assert c.files.usage() == fjord.StorageUsage(None, None)
        assert c.files.usage().available_bytes is None
        assert c.files.list() == []
    # Over the quota: no bytes left, not a negative number.
    assert fjord.StorageUsage(1200, 1000).available_bytes == 0


def test_files_usage_counts_files_and_directories():
    store = FakeFiles(quota_files=10, other_files=6)
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        f = c.files.upload_bytes(b"y" * 20, "t.jsonl")
        u = c.files.usage()
        assert (u.usage_files, u.quota_files, u.available_files) == (7, 10, 3)
        assert u.usage_bytes == 20
        store.other_files = 9  # a job's checkpoints took the tenant to its limit
        assert c.files.usage().available_files == 0
        with pytest.raises(fjord.ResourceExhaustedError, match="has 10 of its 10 files and directories") as e:
            c.files.upload_bytes(b"z", "more.jsonl")
        assert e.value.param == "tenant"
        assert len(d.requests("file.upload.chunk")) == 1  # the first upload's: refused at begin
        c.files.delete(f)
        assert c.files.usage().available_files == 1
        store.quota_files = 0  # no limit
        u = c.files.usage()
        assert (u.usage_files, u.quota_files, u.available_files) == (9, 0, None)
        store.paging = False  # a daemon older than paging: the byte counts only
        assert c.files.usage() == fjord.StorageUsage(usage_bytes=0, quota_bytes=0)
        assert c.files.usage().available_files is None
    # Over the limit: none left, not a negative number.
    assert fjord.StorageUsage(0, 0, usage_files=12, quota_files=10).available_files == 0


def test_files_list_pages_through_every_file():
    store = FakeFiles(page_size=2)
    added = [store.add(f"f{i}.jsonl", b"x" * i) for i in range(5)]
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        files = c.files.list()
        assert [f.id for f in files] == [f["id"] for f in reversed(added)]  # newest first
        assert [f.bytes for f in files] == [4, 3, 2, 1, 0]
        # The first page at the default limit (a daemon older than paging refuses a
        # field it does not know), then each after the last file of the one before.
        assert [m.body for m in d.requests("file.list")] == [{}, {"after": added[3]["id"]},
                                                              {"after": added[1]["id"]}]
        store.page_size = 5  # exactly one page: one request
        assert len(c.files.list()) == 5 and len(d.requests("file.list")) == 4
        assert c.files.usage().usage_files == 5
        # The fake answers as the daemon does to what the SDK never sends itself.
        with pytest.raises(fjord.NotFoundError) as e:
            c.call("file.list", {"after": "file-00000000deadbeef"})
        assert e.value.param == "after"
        for bad in (0, 1001, "2"):
            with pytest.raises(fjord.InvalidArgumentError) as e:
                c.call("file.list", {"limit": bad})
            assert e.value.param == "limit"
        assert [f["id"] for f in c.call("file.list", {"limit": 2}).body["files"]] == [added[4]["id"], added[3]["id"]]


def test_files_list_from_a_daemon_older_than_paging():
    store = FakeFiles(quota_bytes=100, paging=False)
    a = store.add("a.jsonl", b"aa")
    b = store.add("b.jsonl", b"bbb")
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        assert [f.id for f in c.files.list()] == [b["id"], a["id"]]  # no has_more: one page
        assert [m.body for m in d.requests("file.list")] == [{}]
        u = c.files.usage()
        assert u == fjord.StorageUsage(usage_bytes=5, quota_bytes=100, usage_files=None, quota_files=None)
        assert (u.available_bytes, u.available_files) == (95, None)
        with pytest.raises(fjord.InvalidArgumentError, match="unknown field 'limit'"):
            c.call("file.list", {"limit": 10})  # why the SDK never sends one


@pytest.mark.parametrize("reply, message", [
    # Ignores `after`: the same page again and again.
    ({"files": [{"id": "file-2"}, {"id": "file-1"}], "has_more": True},
     r"\(the page after file-1\): file file-2 is listed twice"),
    ({"files": [], "has_more": True}, r"\(the first page\): has_more is true but the page has no files"),
    ({"files": [{"id": "file-1"}], "has_more": "yes"}, "has_more is 'yes', not true or false"),
])
def test_files_list_stops_at_a_page_that_would_never_end(reply, message):
    with FakeDaemon(lambda p: p.ok(reply)) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.InternalError, match=message):
            c.files.list()
        assert len(d.requests("file.list")) <= 2


def test_files_usage_malformed_is_internal_error():
    with FakeDaemon(lambda p: p.ok({"files": [], "usage_bytes": "lots", "quota_bytes": 0})) as d, \
            fast_client(d.endpoint) as c:
        with pytest.raises(fjord.InternalError, match="usage_bytes is 'lots'"):
            c.files.usage()
        assert c.files.list() == []  # the listing itself does not need the numbers
        d.handler = lambda p: p.ok({"files": [], "usage_bytes": 1, "quota_bytes": 0, "usage_files": -3})
        with pytest.raises(fjord.InternalError, match="usage_files is -3, not a file count"):
            c.files.usage()


def test_upload_over_the_storage_quota_is_resource_exhausted():
    store = FakeFiles(quota_bytes=100, other_bytes=60)
    with FakeDaemon(store.handle) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.ResourceExhaustedError, match="over its quota") as e:
            c.files.upload_bytes(b"z" * 41, "big.jsonl")
        assert e.value.param == "bytes" and e.value.retryable
        assert d.requests("file.upload.chunk") == []  # refused at begin
        assert c.files.upload_bytes(b"z" * 40, "fits.jsonl").bytes == 40


def jobs_and_files():
    files = FakeFiles(other_bytes=50)
    jobs = FakeJobs(files)
    return files, jobs, (lambda p: files.handle(p) or jobs.handle(p))


def test_jobs_delete_returns_the_job_then_not_found():
    files, jobs, handler = jobs_and_files()
    done = jobs.add("succeeded", bytes_on_storage=4000)
    failed = jobs.add("failed", bytes_on_storage=300)
    kept = jobs.add("cancelled", bytes_on_storage=20)
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        assert c.files.usage().usage_bytes == 4370
        gone = c.jobs.delete(done["id"])
        assert gone.id == done["id"] and gone.status == "succeeded" and gone.raw == done  # the job as it was
        assert gone.result_adapter == f"/mnt/fjord/acme/jobs/{done['id']}/adapter"
        assert d.requests("job.delete")[0].body == {"job_id": done["id"]}
        assert c.files.usage().usage_bytes == 370  # its checkpoints, adapter and logs are gone
        assert [j.id for j in c.jobs.list()] == [kept["id"], failed["id"]]
        with pytest.raises(fjord.NotFoundError) as e:
            c.jobs.get(done["id"])
        with pytest.raises(fjord.NotFoundError) as e:
            c.jobs.delete(done["id"])  # deleted already
        assert (e.value.code, e.value.param) == ("NOT_FOUND", "job_id")
        with pytest.raises(fjord.NotFoundError):
            c.jobs.delete("job-00000000deadbeef")
        job = c.jobs.get(failed["id"])
        assert c.jobs.delete(job).id == failed["id"]  # a Job works too
        assert c.jobs.get(kept["id"]).delete().status == "cancelled"  # and its own method
        assert list(c.jobs.list()) == [] and jobs.jobs == {}
        assert c.files.usage().usage_bytes == 50
        with pytest.raises(fjord.InvalidArgumentError) as e:
            c.jobs.delete("")
        assert e.value.param == "job_id"
        assert len(d.requests("job.delete")) == 5  # the empty id never reached the daemon


@pytest.mark.parametrize("status", ["validating", "queued", "running", "pausing", "paused", "cancelling",
                                    "requeued"])
def test_jobs_delete_of_a_job_that_has_not_ended_is_failed_precondition(status):
    files, jobs, handler = jobs_and_files()
    live = jobs.add(status, bytes_on_storage=100)
    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.FailedPreconditionError, match=f"is {status}") as e:
            c.jobs.delete(live["id"])
        assert e.value.param == "job_id"
        assert c.jobs.get(live["id"]).status == status  # still there, storage and all
        assert c.files.usage().usage_bytes == 150
        jobs.jobs[live["id"]]["status"] = "cancelled"  # it ended
        assert c.jobs.delete(live["id"]).status == "cancelled"
        assert c.files.usage().usage_bytes == 50


def test_jobs_delete_retried_after_a_lost_reply_is_not_found():
    _, jobs, _ = jobs_and_files()
    j = jobs.add("succeeded")
    with FakeDaemon(lose_first_reply("job.delete", jobs)) as d, fast_client(d.endpoint, timeout=0.3) as c:
        with pytest.raises(fjord.NotFoundError) as e:
            c.jobs.delete(j["id"])
        assert e.value.param == "job_id"
        assert [m.body for m in d.requests("job.delete")] == [{"job_id": j["id"]}] * 2
        assert jobs.jobs == {}


def adapter_handler(files, corrupt=False):
    def handler(peer):
        m = peer.message
        if m.command == "adapter.files":
            peer.ok({"files": [{"name": n, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                               for n, b in files.items()]})
        elif m.command == "adapter.download":
            b = files[m.body["name"]]
            off, n = m.body["offset"], min(m.body["length"], 7)
            chunk = b[off:off + n]
            if corrupt and off == 0:
                chunk = b"X" + chunk[1:]
            peer.ok({"name": m.body["name"], "offset": off, "bytes": len(chunk), "total_bytes": len(b),
                     "eof": off + len(chunk) >= len(b)}, data=chunk)
    return handler


def test_adapter_download_checks_sha256(tmp_path):
    files = {"adapter_config.json": b'{"r": 8, "peft_type": "LORA"}',
             "adapter_model.safetensors": os.urandom(40)}
    with FakeDaemon(adapter_handler(files)) as d, fast_client(d.endpoint) as c:
        out = c.adapters.download("job-1", tmp_path / "adapter")
        assert out == tmp_path / "adapter"
        for name, b in files.items():
            assert (out / name).read_bytes() == b
        assert sorted(os.listdir(out)) == sorted(files)
    with FakeDaemon(adapter_handler(files, corrupt=True)) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.DataLossError, match="does not match the daemon's"):
            c.adapters.download("job-1", tmp_path / "bad")
        assert os.listdir(tmp_path / "bad") == []


def test_list_pages_and_status_filter():
    jobs = [job_body(f"job-{i}", "succeeded") for i in range(5, 0, -1)]

    def handler(peer):
        m = peer.message
        if m.command == "job.list":
            start = 0 if "after" not in m.body else [j["id"] for j in jobs].index(m.body["after"]) + 1
            page = jobs[start:start + m.body["limit"]]
            peer.ok({"jobs": page, "has_more": start + len(page) < len(jobs)})

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        page = c.jobs.list(limit=2, status="succeeded")
        assert [j.id for j in page] == ["job-5", "job-4"] and page.has_more
        assert [j.id for j in page.auto_paging_iter()] == ["job-5", "job-4", "job-3", "job-2", "job-1"]
        assert d.requests("job.list")[0].body == {"limit": 2, "status": ["succeeded"]}
        with pytest.raises(fjord.InvalidArgumentError, match="unknown job status 'done'"):
            c.jobs.list(status=["done"])


def test_malformed_reply_is_internal_error():
    def handler(peer):
        m = peer.message
        if m.command == "job.get":
            peer.ok({"id": "job-1", "status": "exploded"})
        elif m.command == "ping":
            peer.server.send_raw(peer.routing_id, [b"", b"FJD01", b"\x03", m.request_id.encode(), b"WHAT", b"{}"])

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        with pytest.raises(fjord.InternalError, match="unknown job status 'exploded'"):
            c.jobs.get("job-1")
        with pytest.raises(fjord.InternalError, match="malformed reply .* frame 4: unknown status code"):
            c.ping()


def test_job_methods_use_their_client():
    def handler(peer):
        m = peer.message
        status = {"job.get": "running", "job.cancel": "cancelling", "job.pause": "pausing", "job.resume": "queued"}
        if m.command in status:
            peer.ok(job_body(m.body["job_id"], status[m.command]))
        elif m.command == "job.checkpoints":
            peer.ok({"checkpoints": [{"step": 10, "path": "/s/c/step-00000010"}, {"step": 20, "path": "/s/c/step-00000020"}]})

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        job = c.jobs.get("job-7")
        assert job.refresh().status == "running"
        assert job.cancel().status == "cancelling"
        assert job.pause().status == "pausing"
        assert job.resume().status == "queued"
        assert [cp.step for cp in job.checkpoints()] == [10, 20]
        assert not job.done
    # The data alone has no methods that talk to a daemon; a BoundJob made
    # without a Client says how to get one.
    assert not hasattr(fjord.Job.from_dict(job_body()), "refresh")
    with pytest.raises(RuntimeError, match=r"not returned by a fjord.Client; use client.jobs.bind\(job\)"):
        fjord.BoundJob(**{f.name: getattr(job, f.name) for f in dataclasses.fields(fjord.Job)}).refresh()


def test_client_is_usable_from_threads():
    with FakeDaemon(lambda p: p.ok(job_body(p.message.body["job_id"]))) as d, fast_client(d.endpoint) as c:
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(c.jobs.get(f"job-{i}").id)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == sorted(f"job-{i}" for i in range(8))


def test_every_method_that_names_a_job_takes_the_job_or_its_id(tmp_path):
    """The same request whether a method is given the id, the Job from the
    daemon, or a Job built from data (docs/python-sdk.md, client.jobs)."""
    files = {"adapter_config.json": b'{"r":8}'}  # one chunk of the fake's 7 bytes
    adapter = adapter_handler(files)
    finals = {"job.get": "running", "job.cancel": "cancelling", "job.pause": "pausing", "job.resume": "queued",
              "job.delete": "cancelled"}

    def handler(peer):
        m = peer.message
        if m.type != MessageType.REQUEST:
            return
        if m.command in finals:
            peer.ok(job_body(m.body["job_id"], finals[m.command]))
        elif m.command == "job.list":
            peer.ok({"jobs": [job_body("job-1")], "has_more": False})
        elif m.command == "job.checkpoints":
            peer.ok({"checkpoints": [{"step": 10, "path": "/s/c/step-00000010"}]})
        elif m.command == "job.events":
            peer.ok({"events": [ev(1, "log", message="hi")], "has_more": False})
        elif m.command == "job.subscribe":
            peer.ok({"job": job_body(m.body["job_id"], "succeeded")})
        else:
            adapter(peer)

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        bound = c.jobs.get("job-1")
        plain = fjord.Job.from_dict(job_body("job-1"))
        for job in ("job-1", bound, plain):
            d.received.clear()
            assert c.jobs.get(job).status == "running"
            assert c.jobs.cancel(job).status == "cancelling"
            assert c.jobs.pause(job).status == "pausing"
            assert c.jobs.resume(job).status == "queued"
            assert [cp.step for cp in c.jobs.checkpoints(job)] == [10]
            assert [e.seq for e in c.jobs.events(job)] == [1]
            assert c.jobs.wait(job).status == "succeeded"
            assert c.jobs.delete(job).status == "cancelled"
            assert [f.name for f in c.adapters.files(job)] == ["adapter_config.json"]
            assert c.adapters.download(job, tmp_path / "a") == tmp_path / "a"
            assert [j.id for j in c.jobs.list(after=job)] == ["job-1"]
            ids = [m.body.get("job_id", m.body.get("after")) for _, m in d.received
                   if m.type == MessageType.REQUEST]
            assert len(ids) == 12 and set(ids) == {"job-1"}
        methods = [c.jobs.get, c.jobs.cancel, c.jobs.pause, c.jobs.resume, c.jobs.delete, c.jobs.checkpoints,
                   c.jobs.events, c.jobs.wait, c.adapters.files, lambda j: c.adapters.download(j, tmp_path / "b"),
                   lambda j: c.jobs.list(after=j or "")]  # after=None: from the start
        d.received.clear()
        for method in methods:
            for bad in ("", None, 7, fjord.FileObject("file-1", "t.jsonl", 1, "", 0, "files/file-1")):
                with pytest.raises(fjord.InvalidArgumentError, match="job must be a job id or a Job") as e:
                    method(bad)
                assert e.value.param == "job_id"
        assert d.requests() == []  # none reached the daemon
        with pytest.raises(fjord.InvalidArgumentError, match="file must be a file id or a FileObject") as e:
            c.files.delete(bound)
        assert e.value.param == "file_id"


def test_bound_jobs_are_jobs_with_the_clients_methods(tmp_path):
    with FakeDaemon(adapter_handler({"adapter_config.json": b"{}"})) as d, fast_client(d.endpoint) as c:
        d.handler = lambda p: p.ok(job_body(p.message.body["job_id"], "succeeded")) \
            if p.message.command == "job.get" else adapter_handler({"adapter_config.json": b"{}"})(p)
        job = c.jobs.get("job-1")
        assert isinstance(job, fjord.Job) and isinstance(job, fjord.BoundJob)
        data = fjord.Job.from_dict(job_body("job-1", "succeeded"))
        assert job == data and data == job and job == c.jobs.bind(data)  # equal by their data
        assert job != fjord.Job.from_dict(job_body("job-1", "failed"))
        assert dataclasses.asdict(job) == dataclasses.asdict(data)  # the data only, no client inside
        assert [f.name for f in dataclasses.fields(job)] == [f.name for f in dataclasses.fields(fjord.Job)]
        assert repr(job).startswith("BoundJob(id='job-1', status='succeeded'")
        out = job.download_adapter(tmp_path / "adapter")
        assert out == tmp_path / "adapter" and (out / "adapter_config.json").read_bytes() == b"{}"
        # bind() copies: the data stays the caller's object, with the client's methods.
        bound = c.jobs.bind(data)
        assert bound is not data and bound.refresh().status == "succeeded"
        assert not hasattr(data, "refresh")


def test_malformed_job_fields_are_internal_errors_naming_the_field():
    replies = {
        "job.get": job_body("job-1", step="many"),
        "job.cancel": job_body("job-1", gpu_ids="0,1"),
        "job.pause": job_body("job-1", metadata=["a"]),
        "job.resume": job_body("job-1", quantization=4),
        "job.checkpoints": {"checkpoints": {"step": 1}},
        "job.events": {"events": "none", "has_more": False},
        "adapter.files": {"files": {"name": "x"}},
        "job.subscribe": {"nothing": True},
        "model.list": {"models": "demo"},
        "ping": dict(PING, liveness="three"),
    }

    def handler(peer):
        m = peer.message
        if m.type == MessageType.REQUEST and m.command in replies:
            peer.ok(replies[m.command])

    with FakeDaemon(handler) as d, fast_client(d.endpoint) as c:
        for call, message in [
            (lambda: c.jobs.get("job-1"), r"job.step is 'many', not an integer"),
            (lambda: c.jobs.cancel("job-1"), r"job.gpu_ids is '0,1', not an array"),
            (lambda: c.jobs.pause("job-1"), r"job.metadata is \['a'\], not an object"),
            (lambda: c.jobs.resume("job-1"), r"job.quantization is 4, not a string"),
            (lambda: c.jobs.checkpoints("job-1"), "malformed reply to job.checkpoints: checkpoints is"),
            (lambda: list(c.jobs.events("job-1")), "malformed reply to job.events: events is 'none'"),
            (lambda: c.adapters.files("job-1"), "malformed reply to adapter.files: files is"),
            (lambda: c.jobs.wait("job-1"), "malformed reply: job has no id"),  # a FINAL without the job
            (lambda: c.models.list(), "malformed reply to model.list: models is 'demo'"),
            (lambda: c.ping(), "ping.liveness is 'three', not an integer"),
        ]:
            with pytest.raises(fjord.InternalError, match=message):
                call()


def test_curve_settings_without_client_keys_are_refused_not_asserted():
    server = fjord.generate_keypair()
    settings = fjord.config.Settings("ipc:///nonexistent/x.sock", server.public_key, None, 1.0, {})
    conn = fjord.connection.Connection(settings)
    with pytest.raises(fjord.InvalidArgumentError, match="needs this client's keys") as e:
        conn.call("ping")
    assert e.value.param == "keys"


def test_client_timeout_and_retries_can_be_changed():
    with FakeDaemon(lambda p: None) as d, fast_client(d.endpoint, timeout=5, retries=2) as c:
        c.timeout, c.retries = 0.2, 0
        assert (c.timeout, c.retries, c.settings.endpoint) == (0.2, 0, d.endpoint)
        with pytest.raises(fjord.DeadlineExceededError, match=r"within 0.2 s, 1 attempts"):
            c.jobs.get("job-1")
        assert len(d.requests("job.get")) == 1
