"""A scripted FJD01 peer: a ZeroMQ ROUTER in a thread that decodes what the
client sends (with the SDK's own codec, checked against the shared vectors)
and answers through a handler. Used by the SDK's unit tests until, and
besides, the end-to-end tests against a real fjordd. FakeFiles keeps the file
commands' state (uploads, paged list with usage, delete) and FakeJobs the jobs'
(get, list, delete) for handlers to delegate to.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from typing import Callable, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from fjord import _wire
from fjord._wire import ClientMessage, MessageType, ServerMessage


class Peer:
    """Replies to one client message (its routing id bound)."""

    def __init__(self, server: "FakeDaemon", routing_id: bytes, message: ClientMessage):
        self.server = server
        self.routing_id = routing_id
        self.message = message

    def send(self, m: ServerMessage) -> None:
        self.server.send(self.routing_id, m)

    def ok(self, body: dict, final: bool = True, data: Optional[bytes] = None) -> None:
        t = MessageType.FINAL if final else MessageType.PARTIAL
        self.send(ServerMessage(t, self.message.request_id, "OK", body, data))

    def error(self, code: str, message: str, param: Optional[str] = None) -> None:
        self.send(ServerMessage(MessageType.FINAL, self.message.request_id, code,
                                {"error": {"code": code, "message": message, "param": param}}))

    def heartbeat(self) -> None:
        self.send(ServerMessage(MessageType.HEARTBEAT))


class _Keys:
    def __init__(self, allowed: set):
        self.allowed = allowed

    def callback(self, domain, key) -> bool:
        k = key.decode("ascii") if isinstance(key, bytes) else key
        return k in self.allowed


class FakeDaemon:
    """handler(peer) is called in the server thread for every decoded message
    (heartbeats included); received messages are kept in ``received``."""

    def __init__(self, handler: Callable[[Peer], None], curve_secret: Optional[str] = None,
                 allowed_keys: Optional[set] = None, endpoint: Optional[str] = None):
        self.handler = handler
        self.ctx = zmq.Context()
        self.dir = tempfile.mkdtemp(prefix="fjord-fake-")
        self.endpoint = endpoint or f"ipc://{self.dir}/d.sock"
        self.received: list = []  # (routing_id, ClientMessage)
        self.auth = None
        if curve_secret is not None:
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve_callback(domain="*", credentials_provider=_Keys(allowed_keys or set()))
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_secret is not None:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret.encode("ascii")
        self.sock.bind(self.endpoint)
        self._lock = threading.Lock()
        self._outbox: list = []
        self._stop = False
        self.errors: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def send(self, routing_id: bytes, m: ServerMessage) -> None:
        with self._lock:
            self._outbox.append([routing_id] + _wire.encode_server_message(m))

    def send_raw(self, routing_id: bytes, frames: list) -> None:
        with self._lock:
            self._outbox.append([routing_id] + frames)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop:
            with self._lock:
                out, self._outbox = self._outbox, []
            for frames in out:
                self.sock.send_multipart(frames)
            if not dict(poller.poll(5)):
                continue
            frames = self.sock.recv_multipart()
            rid, rest = frames[0], frames[1:]
            try:
                m = _wire.decode_client_message(rest)
            except _wire.WireError as e:
                self.errors.append(e)
                continue
            self.received.append((rid, m))
            try:
                self.handler(Peer(self, rid, m))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)

    def requests(self, command: Optional[str] = None) -> list:
        return [m for _, m in self.received
                if m.type == MessageType.REQUEST and (command is None or m.command == command)]

    def of_type(self, t: MessageType) -> list:
        return [m for _, m in self.received if m.type == t]

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def __enter__(self) -> "FakeDaemon":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FakeFiles:
    """The file commands of a daemon, kept in memory, for handlers to delegate
    to: ``file.upload.begin/chunk/finish``, ``file.list`` and ``file.delete``
    (NOT_FOUND for a file it does not have, deleted ones included;
    FAILED_PRECONDITION while a job in ``live_jobs`` names it).

    ``file.list`` pages as docs/protocol.md says: ``limit`` 1..1000 (default
    1000; else INVALID_ARGUMENT param limit), ``after`` a file id it has (else
    NOT_FOUND param after), ``has_more``; each page holds at most
    ``page_size`` files, so a test can page through a few. It reports
    ``usage_bytes`` / ``quota_bytes`` and ``usage_files`` / ``quota_files``
    unless ``report_usage`` is False (a daemon older than the quota: none of
    the four). ``paging`` False is a daemon older than paging: one page of
    everything, no ``has_more``, no file counts (the byte counts still), and
    INVALID_ARGUMENT "unknown field" for ``limit`` or ``after`` (as it refuses
    any field it does not know).

    Usage is the files' bytes, uploads in progress at their announced size, and
    ``other_bytes`` (standing in for checkpoints and logs); the file count is
    the files, the uploads in progress, and ``other_files`` (standing in for
    the directories, checkpoints and logs). With ``quota_bytes`` > 0 an upload
    that would take the usage over it is refused at begin with
    RESOURCE_EXHAUSTED param bytes; with ``quota_files`` > 0 one while the count
    is at or over it, with RESOURCE_EXHAUSTED param tenant.

        files = FakeFiles(quota_bytes=1 << 20)
        with FakeDaemon(files.handle) as d: ...
    """

    def __init__(self, quota_bytes: int = 0, report_usage: bool = True, other_bytes: int = 0,
                 quota_files: int = 100000, other_files: int = 0, page_size: int = 1000, paging: bool = True):
        self.quota_bytes = quota_bytes
        self.report_usage = report_usage
        self.other_bytes = other_bytes
        self.quota_files = quota_files
        self.other_files = other_files
        self.page_size = page_size
        self.paging = paging
        self.files: dict = {}  # id -> FILE object, in upload order
        self.uploads: dict = {}  # upload id -> {"filename", "bytes", "sha256", "data"}
        #: job id -> (status, training_file): jobs that have not ended.
        self.live_jobs: dict = {}
        self._next = 1

    def usage_bytes(self) -> int:
        return (sum(f["bytes"] for f in self.files.values()) + sum(u["bytes"] for u in self.uploads.values())
                + self.other_bytes)

    def usage_files(self) -> int:
        return len(self.files) + len(self.uploads) + self.other_files

    def add(self, filename: str, data: bytes) -> dict:
        """A file as if uploaded; returns its FILE object."""
        fid = f"file-{self._next:016x}"
        self._next += 1
        f = {"id": fid, "filename": filename, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "created_at_ms": 1700000000000 + self._next, "path": f"files/{fid}"}
        self.files[fid] = f
        return f

    def handle(self, peer: Peer) -> bool:
        """Answers a file command and returns True; False for anything else."""
        m = peer.message
        if m.type != MessageType.REQUEST:
            return False
        b = m.body
        if m.command == "file.upload.begin":
            if self.quota_bytes and self.usage_bytes() + b["bytes"] > self.quota_bytes:
                peer.error("RESOURCE_EXHAUSTED", f"the upload of {b['bytes']} bytes would take tenant acme to "
                           f"{self.usage_bytes() + b['bytes']} bytes, over its quota of {self.quota_bytes}", "bytes")
                return True
            if self.paging and self.quota_files and self.usage_files() >= self.quota_files:
                peer.error("RESOURCE_EXHAUSTED", f"tenant 'acme' has {self.usage_files()} of its {self.quota_files} "
                           "files and directories in storage: delete files or ended jobs (file.delete, job.delete) "
                           "first", "tenant")
                return True
            uid = f"upl-{self._next}"
            self._next += 1
            self.uploads[uid] = {"filename": b["filename"], "bytes": b["bytes"], "sha256": b["sha256"], "data": b""}
            peer.ok({"upload_id": uid, "chunk_bytes": 1 << 20})
        elif m.command == "file.upload.chunk":
            u = self.uploads[b["upload_id"]]
            u["data"] += m.data or b""
            peer.ok({"received": len(u["data"])})
        elif m.command == "file.upload.finish":
            u = self.uploads.pop(b["upload_id"])
            if hashlib.sha256(u["data"]).hexdigest() != u["sha256"]:
                peer.error("INVALID_ARGUMENT", "sha256 mismatch", "sha256")
            else:
                peer.ok(self.add(u["filename"], u["data"]))
        elif m.command == "file.list":
            self._list(peer)
        elif m.command == "file.delete":
            fid = b.get("file_id")
            if fid not in self.files:
                peer.error("NOT_FOUND", f"no file '{fid}'", "file_id")
                return True
            for job_id, (status, ref) in self.live_jobs.items():
                if ref in (fid, f"files/{fid}"):
                    peer.error("FAILED_PRECONDITION", f"file {fid} is used by job {job_id} ({status})", "file_id")
                    return True
            peer.ok(self.files.pop(fid))
        else:
            return False
        return True

    def _list(self, peer: Peer) -> None:
        b = peer.message.body
        files = list(reversed(self.files.values()))  # newest first
        if not self.paging:
            for key in b:
                peer.error("INVALID_ARGUMENT", f"unknown field '{key}'", key)
                return
            body: dict = {"files": files[:1000]}
        else:
            limit = b.get("limit", 1000)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
                peer.error("INVALID_ARGUMENT", f"limit must be 1..1000, got {limit!r}", "limit")
                return
            start = 0
            if "after" in b:
                ids = [f["id"] for f in files]
                if b["after"] not in ids:
                    peer.error("NOT_FOUND", f"no file '{b['after']}'", "after")
                    return
                start = ids.index(b["after"]) + 1
            page = files[start:start + min(limit, self.page_size)]
            body = {"files": page, "has_more": start + len(page) < len(files)}
            if self.report_usage:
                body.update(usage_files=self.usage_files(), quota_files=self.quota_files)
        if self.report_usage:
            body.update(usage_bytes=self.usage_bytes(), quota_bytes=self.quota_bytes)
        peer.ok(body)


class FakeJobs:
    """The job commands of a daemon over jobs kept in memory, for handlers to
    delegate to: ``job.get``, ``job.list`` (newest first, ``status`` filter, one
    page) and ``job.delete`` (NOT_FOUND for a job it does not have, deleted ones
    included; FAILED_PRECONDITION param job_id while the job has not ended).

    A job's directory (checkpoints, adapter, logs) holds ``bytes_on_storage``
    in ``files_on_storage`` files and directories; with a FakeFiles they count
    in its ``other_bytes`` and ``other_files``, so file.list's usage falls when
    the job is deleted, as docs/protocol.md says.

        files = FakeFiles()
        jobs = FakeJobs(files)
        with FakeDaemon(lambda p: files.handle(p) or jobs.handle(p)) as d: ...
    """

    FINAL = ("succeeded", "failed", "cancelled")

    def __init__(self, files: Optional[FakeFiles] = None):
        self.files = files
        self.jobs: dict = {}  # id -> JOB object, in creation order
        self.bytes_on_storage: dict = {}  # id -> what its directory holds
        self.files_on_storage: dict = {}  # id -> files and directories in it
        self._next = 1

    def add(self, status: str = "succeeded", bytes_on_storage: int = 0, files_on_storage: int = 0,
            **extra) -> dict:
        """A job in this status; returns its JOB object (the one the fake serves)."""
        jid = f"job-{self._next:016x}"
        self._next += 1
        if status == "succeeded":
            extra.setdefault("result_adapter", {"path": f"/mnt/fjord/acme/jobs/{jid}/adapter"})
        j = job_body(jid, status, created_at_ms=1700000000000 + self._next, **extra)
        self.jobs[jid] = j
        self.bytes_on_storage[jid] = bytes_on_storage
        self.files_on_storage[jid] = files_on_storage
        if self.files is not None:
            self.files.other_bytes += bytes_on_storage
            self.files.other_files += files_on_storage
        return j

    def handle(self, peer: Peer) -> bool:
        """Answers a job command and returns True; False for anything else."""
        m = peer.message
        if m.type != MessageType.REQUEST or m.command not in ("job.get", "job.list", "job.delete"):
            return False
        b = m.body
        if m.command == "job.list":
            statuses = b.get("status")
            jobs = [j for j in reversed(self.jobs.values()) if not statuses or j["status"] in statuses]
            peer.ok({"jobs": jobs, "has_more": False})
            return True
        jid = b.get("job_id")
        j = self.jobs.get(jid)
        if j is None:
            peer.error("NOT_FOUND", f"no job '{jid}'", "job_id")
        elif m.command == "job.get":
            peer.ok(j)
        elif j["status"] not in self.FINAL:
            peer.error("FAILED_PRECONDITION", f"job {jid} is {j['status']}: only a job that has ended can be "
                       "deleted (cancel it and wait for cancelled)", "job_id")
        else:
            del self.jobs[jid]
            if self.files is not None:
                self.files.other_bytes -= self.bytes_on_storage[jid]
                self.files.other_files -= self.files_on_storage[jid]
            del self.bytes_on_storage[jid]
            del self.files_on_storage[jid]
            peer.ok(j)
        return True


def job_body(job_id: str = "job-0000000000000001", status: str = "queued", **extra) -> dict:
    """A job object as the daemon writes it (docs/protocol.md §6)."""
    body = {
        "id": job_id, "tenant": "acme", "model": "demo", "training_file": "file-0000000000000001",
        "validation_file": None, "heldout_file": None,
        "hyperparameters": {"epochs": 1, "max_steps": 0, "batch_size": 4, "gradient_accumulation_steps": 1,
                            "learning_rate": 0.0002, "lr_scheduler": "cosine", "warmup_steps": 0,
                            "weight_decay": 0.0, "max_grad_norm": 1.0, "max_length": 1024, "seed": 42,
                            "checkpoint_every_steps": 0, "eval_every_steps": 0},
        "lora": {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["all-linear"]},
        "priority": 0, "gpus": 1, "max_restarts": 3, "metadata": {}, "idempotency_key": None,
        "status": status, "queue_position": None, "created_at_ms": 1700000000000, "started_at_ms": None,
        "finished_at_ms": None, "step": 0, "total_steps": 0, "trained_tokens": 0, "metrics": {},
        "error": None, "latest_checkpoint": None, "result_adapter": None, "restarts": 0, "node": "node-1",
        "gpu_ids": [],
    }
    body.update(extra)
    return body


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def compare_report(data: str, candidates: list, model: str = "demo", judge: Optional[str] = None) -> dict:
    """A canned ``fjord.compare/1`` report (docs/comparison.md) of ``candidates``
    (names) on ``data``: made-up numbers, the first candidate worst and each
    later one better on ``contains``, ties on ``exact_match``, with intervals,
    pairs, ranks, two samples and (with ``judge``) the judge's pairs."""
    n = len(candidates)
    cands, pairs, samples = [], [], []
    for i, name in enumerate(candidates):
        contains = round(0.1 + 0.8 * i / max(1, n - 1), 4)
        loss = round(5.5 - i, 4)
        cands.append({
            "name": name, "adapter": None if i == 0 else f"/mnt/fjord/acme/adapters/{name}",
            "metrics": {"loss": loss, "perplexity": round(2.718281828 ** loss, 2), "exact_match": 0.0,
                        "contains": contains},
            "intervals": {"loss": {"low": loss - 0.25, "high": loss + 0.25},
                          "perplexity": {"low": 1.0, "high": 400.0},
                          "exact_match": {"low": 0.0, "high": 0.0},
                          "contains": {"low": max(0.0, contains - 0.1), "high": min(1.0, contains + 0.1)}},
            "speed": {"loss_tokens_per_s": 380.2, "generated_tokens_per_s": 311.2, "generated_tokens": 60},
            "peak_rss_bytes": 407764992 + i})
    for i in range(n):
        for j in range(i + 1, n):
            a, b = candidates[i], candidates[j]
            d = round(cands[i]["metrics"]["contains"] - cands[j]["metrics"]["contains"], 4)
            pairs.append({"metric": "contains", "a": a, "b": b, "mean_difference": d, "low": d - 0.05,
                          "high": d + 0.05, "verdict": "worse"})
            pairs.append({"metric": "exact_match", "a": a, "b": b, "mean_difference": 0.0, "low": 0.0, "high": 0.0,
                          "verdict": "tie"})
            pairs.append({"metric": "loss", "a": a, "b": b, "mean_difference": float(j - i), "low": j - i - 0.5,
                          "high": j - i + 0.5, "verdict": "worse"})
    ranking = {
        "contains": [{"name": c, "rank": n - i, "mean": cands[i]["metrics"]["contains"]}
                     for i, c in enumerate(candidates)],
        "exact_match": [{"name": c, "rank": 1, "mean": 0.0} for c in candidates],
        "loss": [{"name": c, "rank": n - i, "mean": cands[i]["metrics"]["loss"]} for i, c in enumerate(candidates)],
        "perplexity": [{"name": c, "rank": 1, "mean": cands[i]["metrics"]["perplexity"]}
                       for i, c in enumerate(candidates)],
    }
    for line in (1, 2):
        samples.append({"line": line, "prompt": f"What is the capital of country {line}?", "answer": f"City{line}",
                        "replies": {c: f"{c} says City{line}" for c in candidates}})
    report = {"schema": "fjord.compare/1", "model": model, "data": data, "examples": 20, "chat_template": "auto",
              "bootstrap": {"iterations": 2000, "confidence": 0.95, "seed": 0},
              "candidates": cands, "pairs": pairs, "ranking": ranking, "samples": samples}
    if judge is not None:
        report["judge"] = {"model": judge, "prompt": "Which reply answers better? Say A, B or tie.",
                           "pairs": [{"a": candidates[0], "b": c, "examples": 20, "wins_a": 3, "wins_b": 15, "ties": 2,
                                      "unparseable": 0, "agreement": 0.85,
                                      "win_rate_a": {"mean": 0.2, "low": 0.08, "high": 0.35}, "verdict": "worse"}
                                     for c in candidates[1:]]}
    return report


class FakeEvaluations:
    """Evaluation jobs over a FakeFiles and a FakeJobs, faithful to
    docs/protocol.md §5 ("Evaluation jobs", "Report"): ``job.create`` with
    ``"type": "evaluation"`` (the request checked as the daemon checks it:
    fine-tuning fields refused by name, 1..16 candidates with valid unique
    names, a ``job`` that is one of the tenant's succeeded fine-tunes of the
    same model, both adapter files or none and each a file the tenant has,
    1..8 datasets that are files it has, known metrics and a known judge;
    each error's param as the protocol names it); the job is then
    ``validating``, and ``finish(job_id)`` makes it ``succeeded`` with a
    ``result_report`` and a canned report (:func:`compare_report` per dataset).
    ``report.files`` / ``report.download`` serve it in chunks of at most
    ``chunk`` bytes (FAILED_PRECONDITION, param job_id, for a job that is not a
    succeeded evaluation), ``adapter.files`` of an evaluation is
    FAILED_PRECONDITION. Other job.create bodies are left to other handlers
    (returns False).

        files = FakeFiles(); jobs = FakeJobs(files); evals = FakeEvaluations(files, jobs)
        with FakeDaemon(lambda p: files.handle(p) or evals.handle(p) or jobs.handle(p)) as d: ...
    """

    METRICS = ("loss", "perplexity", "token_accuracy", "exact_match", "normalized_exact_match", "contains",
               "token_f1")
    FINE_TUNE_FIELDS = ("training_file", "validation_file", "heldout_file", "hyperparameters", "lora",
                        "quantization", "shard_base")
    SETTINGS = {"max_new_tokens": (1, 4096, 64), "batch_size": (1, 256, 8), "samples": (0, 100, 5),
                "bootstrap": (100, 100000, 2000), "seed": (0, 2 ** 63 - 1, 0)}

    def __init__(self, files: FakeFiles, jobs: FakeJobs, models=("demo", "judge-model"), chunk: int = 1000):
        self.files = files
        self.jobs = jobs
        self.models = set(models)
        self.chunk = chunk
        self.reports: dict = {}  # job id -> {"report.json": bytes, "report.html": bytes}
        self.created: list = []  # the job.create bodies accepted

    def _file(self, ref) -> bool:
        if not isinstance(ref, str):
            return False
        return ref in self.files.files or (ref.startswith("files/") and ref[len("files/"):] in self.files.files)

    def _check(self, b: dict):
        """None, or (param, message) of the first thing wrong with the body."""
        for f in self.FINE_TUNE_FIELDS:
            if f in b:
                return f, f"{f} is a fine-tuning field; an evaluation job takes candidates, datasets and evaluation"
        if b.get("model") not in self.models:
            return "model", f"unknown model '{b.get('model')}'"
        cs = b.get("candidates")
        if not isinstance(cs, list) or not 1 <= len(cs) <= 16:
            return "candidates", "candidates must be an array of 1..16 objects"
        names = set()
        for i, c in enumerate(cs):
            p = f"candidates[{i}]"
            if not isinstance(c, dict) or set(c) - {"name", "job", "adapter_config", "adapter_model"}:
                return p, f"{p} must be an object of name, job, adapter_config, adapter_model"
            name = c.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 64 or not all(
                    ch.isalnum() and ch.isascii() or ch in "._-" for ch in name):
                return p + ".name", f"{p}.name '{name}' must be 1..64 bytes of letters, digits, '.', '_', '-'"
            if name in names:
                return p + ".name", f"{p}.name '{name}' is the name of an earlier candidate"
            names.add(name)
            if ("adapter_config" in c) != ("adapter_model" in c):
                missing = "adapter_model" if "adapter_config" in c else "adapter_config"
                return f"{p}.{missing}", (f"{p}: an uploaded adapter needs both adapter_config "
                                          "(adapter_config.json) and adapter_model (adapter_model.safetensors)")
            if "job" in c and "adapter_config" in c:
                return p + ".job", f"{p}: a candidate is a fine-tune job's adapter or an uploaded adapter, not both"
            for key in ("adapter_config", "adapter_model"):
                if key in c and not self._file(c[key]):
                    return f"{p}.{key}", f"no file '{c[key]}'"
            if "job" in c:
                j = self.jobs.jobs.get(c["job"])
                if j is None:
                    return p + ".job", f"no job '{c['job']}'"
                if j.get("type") == "evaluation":
                    return p + ".job", f"job {c['job']} is an evaluation"
                if j["status"] != "succeeded":
                    return p + ".job", f"job {c['job']} is {j['status']}; only a succeeded job has an adapter"
                if j["model"] != b["model"]:
                    return p + ".job", f"job {c['job']} fine-tuned model '{j['model']}', not '{b['model']}'"
        ds = b.get("datasets")
        if not isinstance(ds, list) or not 1 <= len(ds) <= 8:
            return "datasets", "datasets must name 1..8 files"
        for i, d in enumerate(ds):
            if not self._file(d):
                return f"datasets[{i}]", f"no file '{d}'"
        ev = b.get("evaluation", {})
        for i, m in enumerate(ev.get("metrics", [])):
            if m not in self.METRICS:
                return "evaluation.metrics", f"evaluation.metrics[{i}]: unknown metric '{m}'"
        for key, (lo, hi, _) in self.SETTINGS.items():
            v = ev.get(key)
            if v is not None and (not isinstance(v, int) or not lo <= v <= hi):
                return f"evaluation.{key}", f"evaluation.{key} must be in [{lo}, {hi}], got {v}"
        if "judge" in ev and ev["judge"] not in self.models:
            return "evaluation.judge", f"unknown model '{ev['judge']}'"
        if b.get("gpus", 1) != 1:
            return "gpus", f"gpus is {b['gpus']}; an evaluation job runs on one GPU (gpus: 1)"
        return None

    def finish(self, job_id: str, status: str = "succeeded") -> dict:
        """Ends the evaluation job (``succeeded``: with its report); returns the job."""
        j = self.jobs.jobs[job_id]
        j["status"] = status
        if status == "succeeded":
            path = f"/mnt/fjord/acme/jobs/{job_id}/report"
            j["result_report"] = {"path": path, "files": ["report.json", "report.html"]}
            ev = j["evaluation"]
            names = [c["name"] for c in j["candidates"]]
            report = {"schema": "fjord.evaluation/1", "job": job_id, "model": j["model"],
                      "datasets": [compare_report(d, names, j["model"], ev.get("judge")) for d in j["datasets"]]}
            self.reports[job_id] = {"report.json": json.dumps(report, indent=1).encode(),
                                    "report.html": f"<!doctype html><title>{job_id}</title><h1>report</h1>".encode()}
        return j

    def handle(self, peer: Peer) -> bool:
        m = peer.message
        if m.type != MessageType.REQUEST:
            return False
        b = m.body
        if m.command == "job.create":
            if b.get("type", "fine_tune") != "evaluation":
                if b.get("type", "fine_tune") != "fine_tune":
                    peer.error("INVALID_ARGUMENT", f"type must be fine_tune or evaluation, got '{b['type']}'", "type")
                    return True
                return False
            bad = self._check(b)
            if bad is not None:
                peer.error("INVALID_ARGUMENT", bad[1], bad[0])
                return True
            self.created.append(b)
            ev = {key: default for key, (_, _, default) in self.SETTINGS.items()}
            ev.update(metrics=[], chat_template="auto")
            ev.update(b.get("evaluation", {}))
            j = self.jobs.add("validating", type="evaluation", model=b["model"], training_file=None,
                              candidates=b["candidates"], datasets=b["datasets"], evaluation=ev,
                              result_report=None, metadata=b.get("metadata", {}),
                              idempotency_key=b.get("idempotency_key"), priority=b.get("priority", 0))
            for key in ("hyperparameters", "lora", "result_adapter"):
                j.pop(key, None)
            peer.ok(j)
        elif m.command in ("report.files", "report.download", "adapter.files"):
            jid = b.get("job_id")
            j = self.jobs.jobs.get(jid)
            if j is None:
                peer.error("NOT_FOUND", f"no job '{jid}'", "job_id")
            elif m.command == "adapter.files":
                if j.get("type") != "evaluation":
                    return False
                peer.error("FAILED_PRECONDITION", f"job {jid} is an evaluation: it has a report, not an adapter "
                           "(report.files)", "job_id")
            elif j.get("type") != "evaluation" or j["status"] != "succeeded":
                peer.error("FAILED_PRECONDITION", f"job {jid} has no report: only a succeeded evaluation job has "
                           "one", "job_id")
            elif m.command == "report.files":
                peer.ok({"files": [{"name": n, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                                   for n, data in self.reports[jid].items()]})
            else:
                data = self.reports[jid].get(b.get("name"))
                if data is None:
                    peer.error("NOT_FOUND", f"no report file '{b.get('name')}'", "name")
                    return True
                off, n = b["offset"], min(b["length"], self.chunk)
                chunk = data[off:off + n]
                peer.ok({"name": b["name"], "offset": off, "bytes": len(chunk), "total_bytes": len(data),
                         "eof": off + len(chunk) >= len(data)}, data=chunk)
        else:
            return False
        return True
