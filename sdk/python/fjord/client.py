"""fjord.Client: the Python SDK for fjordd, written from docs/protocol.md.

    import fjord
    client = fjord.Client("tcp://gpu-node-7:7700",
                          server_public_key="<daemon's Z85 key>",
                          secret_key="~/.fjord/me.key")
    f = client.files.upload("train.jsonl")
    job = client.jobs.create(model="llama-3.2-1b", training_file=f.id)
    job = job.wait(progress=True)
    client.adapters.download(job.id, "my-adapter")

One Client holds one ZeroMQ DEALER connection for calls; each followed event
stream opens its own. Calls are serialised by a lock, so a Client may be
shared by threads (a stream object belongs to the thread that iterates it).

Timeouts and retries (the "lazy pirate" of the ZeroMQ guide): a call waits
``timeout`` seconds for its reply; if the daemon was connected but did not
answer, the client opens a fresh connection and sends the request again, at
most ``retries`` times. Every command is safe to repeat: ``jobs.create``
always carries an idempotency key (a random one unless you pass one) that the
retries reuse, so a retry never makes a second job; a ``files.delete`` or
``jobs.delete`` whose reply was lost raises NotFoundError on the retry (the
file or job is gone all the same). If nothing ever answered the connection
(no fjordd at that endpoint) the call fails after ``timeout`` with
:class:`fjord.UnavailableError` ("... is fjordd running?").
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pathlib
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TextIO, Union

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import _wire
from ._progress import Progress
from .config import Settings, resolve
from .errors import (
    DataLossError,
    DeadlineExceededError,
    FjordError,
    InternalError,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    error_for_code,
)
from .keys import valid_z85_key
from .types import (
    JOB_STATUSES,
    AdapterFile,
    Checkpoint,
    Event,
    FileObject,
    Hyperparameters,
    Job,
    JobPage,
    LoraConfig,
    Model,
    PingInfo,
    StorageUsage,
)

__all__ = ["Client", "EventStream"]

PathLike = Union[str, "os.PathLike[str]"]

_MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _now() -> float:
    return time.monotonic()


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s"


class _NoConnection(UnavailableError):
    """A send that found no connection to queue on before its deadline."""


class _Connection:
    """One DEALER socket (CURVE when keys are set) and its monitor."""

    _ids = itertools.count()

    def __init__(self, settings: Settings, context: zmq.Context):
        self.settings = settings
        self.endpoint = settings.endpoint
        self.transport_up = False  # a TCP/ipc connection exists now
        self.ever_transport = False
        self.ready = False  # the ZMTP/CURVE handshake succeeded and the peer is still there
        self.ever_ready = False
        self.handshakes = 0  # > 1: ZeroMQ reconnected (the daemon restarted: it has forgotten our streams)
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if settings.server_public_key:
            assert settings.client_keys is not None
            self.socket.curve_serverkey = settings.server_public_key.encode("ascii")
            self.socket.curve_publickey = settings.client_keys.public_key.encode("ascii")
            self.socket.curve_secretkey = settings.client_keys.secret_key.encode("ascii")
        self.monitor = self.socket.get_monitor_socket(_MONITOR_EVENTS)
        try:
            self.socket.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.close(disconnect=False)
            raise InvalidArgumentError(f"cannot connect to '{self.endpoint}': {e}", param="endpoint") from None
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        self.closed = False

    def close(self, disconnect: bool = True) -> None:
        if getattr(self, "closed", False):
            return
        self.closed = True
        try:
            if disconnect and self.ready:
                # Tells the daemon to forget this peer now (its streams end).
                self.socket.setsockopt(zmq.LINGER, 200)
                self.socket.send_multipart(_wire.disconnect(), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        self.socket.close()

    def send(self, frames: list, deadline: Optional[float] = None) -> None:
        """Sends by `deadline` (default: the timeout from now). While the socket has no
        connection to queue on (still connecting, or dropped by the daemon after a failed
        handshake) it waits for one, or for the monitor to say why there is none
        (UnauthenticatedError); _NoConnection when neither came in time."""
        if deadline is None:
            deadline = _now() + self.settings.timeout_s
        while True:
            try:
                self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError as e:
                raise UnavailableError(f"send to {self.endpoint}: {e}") from None
            wait_ms = int((deadline - _now()) * 1000)
            if wait_ms <= 0:
                raise _NoConnection(f"no connection to {self.endpoint} to send on within the timeout")
            waiting = zmq.Poller()
            waiting.register(self.socket, zmq.POLLOUT)
            waiting.register(self.monitor, zmq.POLLIN)
            events = dict(waiting.poll(min(wait_ms, 50)))
            if self.monitor in events:
                while True:
                    try:
                        self._monitor_event()
                    except zmq.Again:
                        break

    def _monitor_event(self) -> None:
        ev = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
        kind = ev["event"]
        if kind == zmq.EVENT_CONNECTED:
            self.transport_up = self.ever_transport = True
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.ready = self.ever_ready = True
            self.handshakes += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            self.transport_up = self.ready = False
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise UnauthenticatedError(
                f"the daemon at {self.endpoint} refused this client's CURVE key (ZAP status {ev['value']}): "
                "the key is not in its keys file"
            )
        elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            hint = (
                " (the daemon requires CURVE: set server_public_key and client keys)"
                if not self.settings.server_public_key
                else " (wrong server public key, or the daemon does not use CURVE)"
            )
            raise UnauthenticatedError(f"security handshake with {self.endpoint} failed{hint}")

    def receive(self, deadline: float) -> Optional[_wire.ServerMessage]:
        """The next message from the daemon, or None at the deadline."""
        while True:
            wait_ms = max(0, int((deadline - _now()) * 1000 + 0.999))
            events = dict(self.poller.poll(wait_ms))
            if self.monitor in events:
                while True:
                    try:
                        self._monitor_event()
                    except zmq.Again:
                        break
            if self.socket in events:
                try:
                    frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self.ready = self.ever_ready = True  # a reply proves the connection
                try:
                    return _wire.decode_server_message(frames)
                except _wire.WireError as e:
                    raise InternalError(f"malformed reply from {self.endpoint}: {e.message}") from None
            if _now() >= deadline:
                return None

    def unreachable_error(self, waited: float) -> FjordError:
        """The error for a wait that ended without this socket ever being ready."""
        if self.ever_transport:
            return UnavailableError(
                f"connected to {self.endpoint} but no fjord handshake within {_fmt_s(waited)}: "
                + ("is the server public key right, and is it fjordd?" if self.settings.server_public_key
                   else "is it fjordd, and does it allow plain connections?")
            )
        return UnavailableError(f"no reply from {self.endpoint} within {_fmt_s(waited)}: is fjordd running?")


class Client:
    """A connection to one fjordd.

    Args:
        endpoint: ``tcp://HOST:PORT`` or ``ipc:///PATH``. Default: ``FJORD_ENDPOINT`` or the
            client config file (see :mod:`fjord.config`).
        server_public_key: the daemon's Z85 public key, or a file holding it.
        public_key, secret_key: this client's key pair (Z85). ``secret_key`` may also be
            the path of a secret key file (``PREFIX.key``, mode 0600).
        keys_file: this client's secret key file (same as ``secret_key=PATH``).
        timeout: seconds to wait for each reply (default 10).
        retries: extra attempts after a timeout on a live connection (default 2).
        heartbeat_interval, heartbeat_liveness: followed streams send a heartbeat every interval
            and presume the daemon gone after ``liveness`` silent intervals. Default: the
            daemon's own (``ping`` reports them: 2 s and 3 unless its config says otherwise),
            asked once per Client; a given value is used as it is.
        config_file: a client config file instead of the default one.

    Raises InvalidArgumentError (bad endpoint, malformed keys), NotFoundError /
    PermissionDeniedError (key files). Connecting is asynchronous: an unreachable daemon
    shows at the first call.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        server_public_key: Optional[str] = None,
        public_key: Optional[str] = None,
        secret_key: Optional[str] = None,
        keys_file: Optional[PathLike] = None,
        timeout: Optional[float] = None,
        retries: int = 2,
        heartbeat_interval: Optional[float] = None,
        heartbeat_liveness: Optional[int] = None,
        config_file: Optional[PathLike] = None,
    ):
        if retries < 0 or (heartbeat_interval is not None and heartbeat_interval <= 0) or (
                heartbeat_liveness is not None and heartbeat_liveness <= 0):
            raise InvalidArgumentError("retries must be >= 0, heartbeat_interval and heartbeat_liveness > 0")
        if secret_key is not None and keys_file is not None:
            raise InvalidArgumentError("pass secret_key or keys_file, not both", param="keys_file")
        if isinstance(secret_key, os.PathLike):
            secret_key = os.fspath(secret_key)
        if isinstance(secret_key, str) and not valid_z85_key(secret_key):
            secret_key = os.path.expanduser(secret_key)  # a key file
        self.settings: Settings = resolve(
            endpoint=endpoint,
            server_public_key=server_public_key,
            keys=os.path.expanduser(os.fspath(keys_file)) if keys_file is not None else None,
            timeout_s=timeout,
            config_file=os.fspath(config_file) if config_file is not None else None,
            public_key=public_key,
            secret_key=secret_key,
        )
        self.endpoint = self.settings.endpoint
        self.timeout = self.settings.timeout_s
        self.retries = retries
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self._context = zmq.Context.instance()
        self._lock = threading.RLock()
        self._conn: Optional[_Connection] = None
        self._id_prefix = secrets.token_hex(4)
        self._next_id = itertools.count(1)
        self._daemon_heartbeat: Optional[tuple] = None
        self.files = Files(self)
        self.jobs = Jobs(self)
        self.adapters = Adapters(self)
        self.models = Models(self)

    # -- plumbing ----------------------------------------------------------
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"fjord.Client({self.endpoint!r}, curve={self.settings.server_public_key is not None})"

    def close(self) -> None:
        """Closes the connection (tells the daemon with DISCONNECT)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _new_connection(self) -> _Connection:
        return _Connection(self.settings, self._context)

    def _request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._next_id)}"

    def call(self, command: str, body: Optional[dict] = None, data: Optional[bytes] = None) -> _wire.ServerMessage:
        """One request, one FINAL reply (retried as described above).

        Raises the :class:`fjord.FjordError` subclass for the reply's error code.
        Meant for commands this class does not wrap.
        """
        body = body or {}
        with self._lock:
            for attempt in range(self.retries + 1):
                if self._conn is None:
                    self._conn = self._new_connection()
                conn = self._conn
                rid = self._request_id()
                deadline = _now() + self.timeout
                try:
                    conn.send(_wire.request(rid, command, body, data), deadline)
                    while True:
                        m = conn.receive(deadline)
                        if m is None:
                            break
                        if m.type == _wire.MessageType.FINAL and m.request_id == rid:
                            if not m.ok:
                                code, message, param = _wire.error_of(m)
                                raise error_for_code(code, message, param, rid)
                            return m
                        if m.type == _wire.MessageType.FINAL and m.request_id == _wire.UNKNOWN_REQUEST_ID and not m.ok:
                            code, message, param = _wire.error_of(m)
                            raise error_for_code(code, message, param)
                except UnauthenticatedError:
                    self._drop_connection()
                    raise
                except _NoConnection:
                    pass  # a send that found no connection in time is a timeout like a missing reply
                # Timed out.
                if not conn.ever_ready:
                    err = conn.unreachable_error(self.timeout)
                    self._drop_connection()
                    raise err
                self._drop_connection()  # lazy pirate: a fresh connection for the retry
            raise DeadlineExceededError(
                f"no reply from {self.endpoint} to '{command}' within {_fmt_s(self.timeout)}, "
                f"{self.retries + 1} attempts"
            )

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close(disconnect=False)
            self._conn = None

    def _heartbeat(self) -> tuple:
        """(interval s, liveness) for streams: the given values, else the daemon's."""
        if self.heartbeat_interval is not None and self.heartbeat_liveness is not None:
            return self.heartbeat_interval, self.heartbeat_liveness
        if self._daemon_heartbeat is None:
            info = self.ping()
            self._daemon_heartbeat = (
                (info.heartbeat_interval_ms or _wire.DEFAULT_HEARTBEAT_INTERVAL_MS) / 1000.0,
                info.liveness or _wire.HEARTBEAT_LIVENESS,
            )
        interval, liveness = self._daemon_heartbeat
        return (self.heartbeat_interval or interval, self.heartbeat_liveness or liveness)

    # -- calls -------------------------------------------------------------
    def ping(self) -> PingInfo:
        """The daemon's identity, this client's principal and the limits."""
        return PingInfo.from_dict(self.call("ping").body)


class Models:
    def __init__(self, client: Client):
        self._c = client

    def list(self) -> list:
        """The base models the operator configured (``[Model(name=...)]``)."""
        body = self._c.call("model.list").body
        return [Model(m["name"]) for m in body.get("models", []) if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _id_of(value: Any, kind: type, what: str) -> str:
    """The id of a `kind` object (Job, FileObject) or an id string; InvalidArgumentError
    (param ``<what>_id``) otherwise."""
    value_id = value.id if isinstance(value, kind) else value
    if not isinstance(value_id, str) or not value_id:
        raise InvalidArgumentError(f"{what} must be a {what} id or a {kind.__name__}", param=f"{what}_id")
    return value_id


def _file_ref(value: Any, field: str, client: Client) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, FileObject):
        return value.id
    if isinstance(value, os.PathLike):
        return client.files.upload(value).id  # a local file: upload it first
    if isinstance(value, str):
        return value
    raise InvalidArgumentError(
        f"{field} must be a file id, a tenant path, a FileObject or a pathlib.Path, got {type(value).__name__}",
        param=field,
    )


def _section(value: Any, cls: type, field: str) -> Optional[dict]:
    if value is None:
        return None
    if isinstance(value, cls):
        return value.to_dict()
    if isinstance(value, dict):
        return dict(value)
    raise InvalidArgumentError(f"{field} must be a dict or a {cls.__name__}, got {type(value).__name__}", param=field)


class Jobs:
    def __init__(self, client: Client):
        self._c = client

    def create(
        self,
        *,
        model: str,
        training_file: Union[str, FileObject, "os.PathLike[str]"],
        validation_file: Union[str, FileObject, "os.PathLike[str]", None] = None,
        hyperparameters: Union[dict, Hyperparameters, None] = None,
        lora: Union[dict, LoraConfig, None] = None,
        suffix: Optional[str] = None,
        seed: Optional[int] = None,
        priority: Optional[int] = None,
        gpus: Optional[int] = None,
        max_restarts: Optional[int] = None,
        metadata: Optional[dict] = None,
        idempotency_key: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> Job:
        """Submits a fine-tune (``job.create``); returns the job, normally ``validating``.

        training_file / validation_file: a file id (``file-…``), a path in your tenant's
        area (``files/…``), a FileObject, or a ``pathlib.Path`` to a local file (uploaded
        first). hyperparameters / lora: dicts (or dataclasses) of the fields of
        docs/protocol.md §5; fields left out take the daemon's defaults. suffix: a name
        for the result, kept as ``metadata["suffix"]``. seed: sets
        ``hyperparameters.seed``. idempotency_key: repeat a create safely (the same key
        and body return the first job); a random one is used when omitted.

        Errors: InvalidArgumentError with ``param`` naming the field (an unknown model,
        a bad hyperparameter, a missing file), ResourceExhaustedError (queue full),
        AlreadyExistsError (the key was used with another body).
        """
        body: dict = {"model": model, "training_file": _file_ref(training_file, "training_file", self._c)}
        vf = _file_ref(validation_file, "validation_file", self._c)
        if vf is not None:
            body["validation_file"] = vf
        hp = _section(hyperparameters, Hyperparameters, "hyperparameters")
        if seed is not None:
            hp = dict(hp or {})
            # A dict that names another seed is a contradiction; a Hyperparameters
            # object always carries one (its default), which the argument replaces.
            if isinstance(hyperparameters, dict) and "seed" in hp and hp["seed"] != seed:
                raise InvalidArgumentError("seed given twice, with different values", param="hyperparameters.seed")
            hp["seed"] = seed
        if hp is not None:
            body["hyperparameters"] = hp
        lo = _section(lora, LoraConfig, "lora")
        if lo is not None:
            body["lora"] = lo
        md = dict(metadata or {})
        if suffix is not None:
            md["suffix"] = suffix
        if md:
            body["metadata"] = md
        for key, value in (("priority", priority), ("gpus", gpus), ("max_restarts", max_restarts), ("tenant", tenant)):
            if value is not None:
                body[key] = value
        if idempotency_key is None:
            idempotency_key = secrets.token_hex(16)
        elif not _wire.valid_idempotency_key(idempotency_key):
            raise InvalidArgumentError("idempotency_key must be 1..128 printable ASCII bytes", param="idempotency_key")
        body["idempotency_key"] = idempotency_key
        return Job.from_dict(self._c.call("job.create", body).body, self._c)

    def get(self, job_id: str) -> Job:
        """The job (NotFoundError if it does not exist or is another tenant's)."""
        return Job.from_dict(self._c.call("job.get", {"job_id": job_id}).body, self._c)

    def list(
        self,
        status: Union[str, Iterable[str], None] = None,
        limit: int = 20,
        after: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> JobPage:
        """One page of jobs, newest first. ``status``: one status or several.
        ``page.auto_paging_iter()`` walks every page."""
        body: dict = {"limit": limit}
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                if s not in JOB_STATUSES:
                    raise InvalidArgumentError(
                        f"unknown job status '{s}' (one of {', '.join(JOB_STATUSES)})", param="status"
                    )
            body["status"] = statuses
        if after is not None:
            body["after"] = after
        if tenant is not None:
            body["tenant"] = tenant
        reply = self._c.call("job.list", body).body
        jobs = [Job.from_dict(j, self._c) for j in reply.get("jobs", [])]
        return JobPage(
            data=jobs,
            has_more=bool(reply.get("has_more", False)),
            _fetch_next=lambda last: self.list(status=status, limit=limit, after=last, tenant=tenant),
        )

    def cancel(self, job_id: str) -> Job:
        """Cancels (running jobs go through ``cancelling``); a no-op on cancelled jobs.
        FailedPreconditionError for a finished one."""
        return Job.from_dict(self._c.call("job.cancel", {"job_id": job_id}).body, self._c)

    def pause(self, job_id: str) -> Job:
        """Pauses (a running job checkpoints first: ``pausing`` then ``paused``)."""
        return Job.from_dict(self._c.call("job.pause", {"job_id": job_id}).body, self._c)

    def resume(self, job_id: str) -> Job:
        """Queues a paused job again; it continues from its newest checkpoint."""
        return Job.from_dict(self._c.call("job.resume", {"job_id": job_id}).body, self._c)

    def delete(self, job: Union[str, Job]) -> Job:
        """Deletes an ended job (a job id or a Job); returns the job as it was.

        Its directory on the daemon's storage (checkpoints, adapter, logs) goes at
        once, then its record and events: download the adapter first. Only a job that
        has ended (succeeded, failed, cancelled) can be deleted: FailedPreconditionError
        otherwise (cancel it and wait). NotFoundError when you have no such job, which
        includes one deleted already: a delete retried after a lost reply raises
        NotFoundError although the job is gone.
        """
        return Job.from_dict(self._c.call("job.delete", {"job_id": _id_of(job, Job, "job")}).body, self._c)

    def checkpoints(self, job_id: str) -> list:
        """The job's checkpoints, oldest first (``[Checkpoint(step, path)]``)."""
        body = self._c.call("job.checkpoints", {"job_id": job_id}).body
        return [c for c in (Checkpoint.from_dict(x) for x in body.get("checkpoints", [])) if c is not None]

    def events(self, job_id: str, follow: bool = False, after_seq: int = 0, page_size: int = 100) -> "EventStream":
        """The job's events, oldest first, as an iterator.

        follow=False: the events stored so far (paged through ``job.events``).
        follow=True: also each new one as it happens (``job.subscribe``), until the job
        is final; the stream's ``job`` is then the final job. ``close()`` (or leaving a
        ``with`` block, or ``break`` + garbage collection) ends it early.
        """
        return EventStream(self._c, job_id, follow=follow, after_seq=after_seq, page_size=page_size)

    def wait(
        self,
        job_id: str,
        progress: Union[bool, TextIO] = False,
        on_event: Optional[Callable[[Event], None]] = None,
        timeout: Optional[float] = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Follows the job until it is final and returns the final job (see Job.wait)."""
        printer = None
        if progress:
            printer = Progress(None if progress is True else progress)  # type: ignore[arg-type]
        deadline = None if timeout is None else _now() + timeout
        with EventStream(self._c, job_id, follow=True, deadline=deadline) as stream:
            for ev in stream:
                if printer is not None:
                    printer.on_event(ev)
                if on_event is not None:
                    on_event(ev)
            job = stream.job
        assert job is not None
        if printer is not None:
            printer.finish(job)
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job


class EventStream:
    """Iterator over a job's events (see :meth:`Jobs.events`).

    A followed stream runs on its own connection: it sends heartbeats at the daemon's
    interval while it waits, and when the daemon falls silent for ``heartbeat_liveness``
    intervals it reconnects and subscribes again after the last event it saw (so no event
    is lost or repeated), up to ``retries`` times in a row. It also subscribes again,
    silently, when the code consuming the events kept it away longer than the daemon
    waits for a silent peer (the daemon has then dropped the stream).
    """

    def __init__(self, client: Client, job_id: str, follow: bool, after_seq: int = 0,
                 page_size: int = 100, deadline: Optional[float] = None):
        self._c = client
        self.job_id = job_id
        self.follow = follow
        self.last_seq = after_seq
        self.page_size = page_size
        self.deadline = deadline
        #: The final job once a followed stream has ended (or the job at close()).
        self.job: Optional[Job] = None
        self._conn: Optional[_Connection] = None
        self._rid: Optional[str] = None
        self._iter: Optional[Iterator[Event]] = None
        self._closed = False

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass

    def __iter__(self) -> Iterator[Event]:
        if self._iter is None:
            self._iter = self._follow() if self.follow else self._pages()
        return self._iter

    def __next__(self) -> Event:
        return next(iter(self))

    def _pages(self) -> Iterator[Event]:
        while not self._closed:
            body = self._c.call("job.events", {"job_id": self.job_id, "after_seq": self.last_seq,
                                               "limit": self.page_size}).body
            events = [Event.from_dict(e) for e in body.get("events", [])]
            for e in events:
                if e.seq > self.last_seq:
                    self.last_seq = e.seq
                    yield e
            if not body.get("has_more") or not events:
                return

    def _subscribe(self) -> None:
        self._conn = self._c._new_connection()
        self._rid = self._c._request_id()
        self._conn.send(_wire.request(self._rid, "job.subscribe", {"job_id": self.job_id, "after_seq": self.last_seq}))

    def _follow(self) -> Iterator[Event]:
        interval, liveness = self._c._heartbeat()
        silence_limit = interval * liveness
        failures = 0
        while not self._closed:
            self._subscribe()
            conn = self._conn
            assert conn is not None
            last_heard = last_sent = _now()
            next_beat = last_heard + interval
            dropped = False  # the daemon forgot this peer while the consumer had control
            while True:
                now = _now()
                if self.deadline is not None and now >= self.deadline:
                    self.close()
                    raise DeadlineExceededError(f"job {self.job_id} was not final within the wait's timeout")
                if now >= next_beat:
                    conn.send(_wire.heartbeat())
                    last_sent = now
                    next_beat = now + interval
                until = min(next_beat, last_heard + silence_limit)
                if self.deadline is not None:
                    until = min(until, self.deadline)
                try:
                    m = conn.receive(until)
                except UnauthenticatedError:
                    self._drop()
                    raise
                if conn.handshakes > 1:
                    # ZeroMQ reconnected under us: a restarted daemon, which knows nothing of
                    # this stream (and would only answer our heartbeats). Subscribe again.
                    dropped = True
                    break
                if m is None:
                    if _now() - last_heard < silence_limit:
                        continue  # time to send a heartbeat
                    break  # the daemon went silent
                last_heard = _now()
                if m.type == _wire.MessageType.HEARTBEAT or m.request_id != self._rid:
                    continue
                if m.type == _wire.MessageType.FINAL:
                    self._drop()
                    if not m.ok:
                        code, message, param = _wire.error_of(m)
                        raise error_for_code(code, message, param, m.request_id)
                    self.job = Job.from_dict(m.body.get("job"), self._c)
                    return
                ev = m.body.get("event")
                if not isinstance(ev, dict):
                    continue
                e = Event.from_dict(ev)
                if e.seq <= self.last_seq:
                    continue  # seen before a resubscribe
                self.last_seq = e.seq
                failures = 0
                yield e
                last_heard = _now()  # the consumer's time is not the daemon's silence
                if self._closed:
                    return
                if last_heard - last_sent >= silence_limit:
                    # We sent nothing for as long as the daemon waits: it has dropped our
                    # stream (and would only answer heartbeats now). Subscribe again.
                    dropped = True
                    break
            # Silent daemon (or a dropped stream): reconnect and resubscribe from last_seq.
            never = not conn.ever_ready
            self._drop()
            if dropped:
                continue
            if never:
                raise conn.unreachable_error(silence_limit)
            failures += 1
            if failures > self._c.retries:
                raise UnavailableError(
                    f"the daemon at {self._c.endpoint} went silent for {_fmt_s(silence_limit)} during the "
                    f"event stream of {self.job_id} ({failures} attempts)"
                )

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Ends a followed stream early (CANCEL); ``job`` is then the job as it is."""
        if self._closed:
            return
        self._closed = True
        conn, rid = self._conn, self._rid
        if conn is None or rid is None:
            return
        try:
            conn.send(_wire.cancel(rid))
            deadline = _now() + min(self._c.timeout, 5.0)
            while True:
                m = conn.receive(deadline)
                if m is None:
                    break
                if m.type == _wire.MessageType.FINAL and m.request_id == rid:
                    if m.ok and isinstance(m.body.get("job"), dict):
                        self.job = Job.from_dict(m.body["job"], self._c)
                    break
        except FjordError:
            pass
        finally:
            self._drop()


class Files:
    def __init__(self, client: Client):
        self._c = client

    def upload(self, path: PathLike, filename: Optional[str] = None) -> FileObject:
        """Uploads a local file in chunks, checked with SHA-256; returns the FileObject.

        filename: the name the daemon records (default: the file's base name).
        NotFoundError if the local file does not exist; the daemon's errors otherwise
        (ResourceExhaustedError above ``max_upload_bytes``, or when the upload would
        take the tenant over its storage quota: see :meth:`usage`).
        """
        path = os.fspath(path)
        try:
            size = os.path.getsize(path)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except FileNotFoundError:
            raise NotFoundError(f"cannot open {path}: no such file", param="path") from None
        except IsADirectoryError:
            raise InvalidArgumentError(f"{path} is a directory, not a file", param="path") from None
        except PermissionError as e:
            raise PermissionDeniedError(f"cannot read {path}: {e.strerror}", param="path") from None
        name = filename or os.path.basename(path)
        with open(path, "rb") as f:
            return self._upload(lambda off, n: (f.seek(off), f.read(n))[1], size, h.hexdigest(), name)

    def upload_bytes(self, data: bytes, filename: str) -> FileObject:
        """Uploads bytes held in memory as a file called ``filename``."""
        data = bytes(data)
        return self._upload(lambda off, n: data[off : off + n], len(data), hashlib.sha256(data).hexdigest(), filename)

    def _upload(self, read: Callable[[int, int], bytes], size: int, sha: str, filename: str) -> FileObject:
        begin = self._c.call("file.upload.begin", {"filename": filename, "bytes": size, "sha256": sha}).body
        upload_id = begin.get("upload_id")
        chunk = begin.get("chunk_bytes") or _wire.DEFAULT_UPLOAD_CHUNK_BYTES
        if not isinstance(upload_id, str) or not isinstance(chunk, int) or chunk <= 0:
            raise InternalError("malformed reply to file.upload.begin")
        offset = 0
        while offset < size:
            data = read(offset, min(chunk, size - offset))
            if len(data) != min(chunk, size - offset):
                raise DataLossError("the local file changed size during the upload")
            self._c.call("file.upload.chunk", {"upload_id": upload_id, "offset": offset}, data)
            offset += len(data)
        return FileObject.from_dict(self._c.call("file.upload.finish", {"upload_id": upload_id}).body)

    def list(self) -> list:
        """All your uploaded files, newest first (``[FileObject]``).

        Asks ``file.list`` page by page (up to 1000 files each) while the daemon says
        ``has_more``, each page after the last file of the one before; a daemon older
        than paging sends one page. InternalError when a page that says ``has_more``
        is empty or a file comes twice; NotFoundError (param ``after``) when the last
        file of a page was deleted before the next page was asked for.
        """
        files: list = []
        seen: set = set()
        body: dict = {}  # the default limit, 1000: an older daemon refuses a field it does not know
        while True:
            reply = self._c.call("file.list", body).body
            where = f"the page after {body['after']}" if "after" in body else "the first page"
            has_more = reply.get("has_more")
            if has_more is not None and not isinstance(has_more, bool):
                raise InternalError(f"malformed reply to file.list ({where}): has_more is {has_more!r}, "
                                    "not true or false")
            page = [FileObject.from_dict(f) for f in reply.get("files", [])]
            for f in page:
                if f.id in seen:
                    raise InternalError(f"malformed reply to file.list ({where}): file {f.id} is listed twice")
                seen.add(f.id)
            files.extend(page)
            if not has_more:
                return files
            if not page:
                raise InternalError(f"malformed reply to file.list ({where}): has_more is true but the page "
                                    "has no files")
            body = {"after": page[-1].id}

    def usage(self) -> StorageUsage:
        """Your tenant's storage use and quotas, as the daemon reports them (``file.list``,
        its first page).

        ``usage_bytes`` / ``quota_bytes`` (0: no quota) and ``usage_files`` /
        ``quota_files`` (files and directories; 0: no limit) are None when the daemon
        does not report them. InternalError when one is there but not an integer >= 0.
        """
        return StorageUsage.from_dict(self._c.call("file.list").body)

    def delete(self, file: Union[str, FileObject]) -> FileObject:
        """Deletes an uploaded file (a file id or a FileObject); returns the file as it was.

        Its bytes leave the daemon's storage at once. NotFoundError when you have no
        such file, which includes one deleted already: a delete retried after a lost
        reply raises NotFoundError although the file is gone. FailedPreconditionError
        while a job that has not ended uses the file (the message names the job).
        """
        return FileObject.from_dict(self._c.call("file.delete", {"file_id": _id_of(file, FileObject, "file")}).body)


class Adapters:
    def __init__(self, client: Client):
        self._c = client

    def files(self, job_id: str) -> list:
        """The files of a succeeded job's PEFT adapter (FailedPreconditionError otherwise)."""
        body = self._c.call("adapter.files", {"job_id": job_id}).body
        files = body.get("files")
        if not isinstance(files, list):
            raise InternalError("malformed reply to adapter.files: no files")
        out = []
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise InternalError("malformed reply to adapter.files: a file without a name")
            out.append(AdapterFile(f["name"], int(f.get("bytes") or 0), str(f.get("sha256") or "")))
        return out

    def download(self, job_id: str, dest: PathLike) -> pathlib.Path:
        """Downloads the job's PEFT adapter into directory ``dest`` (created if missing).

        Each file is checked against the daemon's size and SHA-256 (DataLossError on a
        mismatch; nothing half-written is left under its real name). Returns ``dest``,
        ready for ``peft.PeftModel.from_pretrained(base, dest)``.
        """
        dest_dir = pathlib.Path(dest)
        files = self.files(job_id)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionDeniedError(f"cannot create {dest_dir}: {e.strerror}", param="dest") from None
        for af in files:
            if not af.name or "/" in af.name or af.name in (".", ".."):
                raise InternalError(f"the daemon named an adapter file {af.name!r}")
            target = dest_dir / af.name
            part = dest_dir / (af.name + ".part")
            h = hashlib.sha256()
            offset = 0
            with open(part, "wb") as out:
                while True:
                    m = self._c.call("adapter.download", {"job_id": job_id, "name": af.name, "offset": offset,
                                                          "length": self._chunk_bytes()})
                    data = m.data or b""
                    h.update(data)
                    out.write(data)
                    offset += len(data)
                    if m.body.get("eof", True):
                        break
                    if not data:
                        raise InternalError("adapter.download returned an empty chunk before eof")
            got = h.hexdigest()
            if got != af.sha256 or offset != af.bytes:
                part.unlink(missing_ok=True)
                raise DataLossError(
                    f"downloaded {af.name} ({offset} bytes, sha256 {got}) does not match the daemon's "
                    f"({af.bytes} bytes, {af.sha256})"
                )
            os.replace(part, target)
        return dest_dir

    def _chunk_bytes(self) -> int:
        return _wire.DEFAULT_UPLOAD_CHUNK_BYTES
