"""A scripted FJD01 peer: a ZeroMQ ROUTER in a thread that decodes what the
client sends (with the SDK's own codec, checked against the shared vectors)
and answers through a handler. Used by the SDK's unit tests until, and
besides, the end-to-end tests against a real fjordd. FakeFiles keeps the file
commands' state (uploads, paged list with usage, delete) and FakeJobs the jobs'
(get, list, delete) for handlers to delegate to.
"""

from __future__ import annotations

import hashlib
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
