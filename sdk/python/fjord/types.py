"""The objects of the fjord API (docs/protocol.md §5-§6) as dataclasses.

Each is built from the daemon's JSON with ``from_dict``, which ignores fields
it does not know (a newer daemon may add some) and keeps the whole object in
``raw``; ``to_dict()`` gives the JSON shape back.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = [
    "JOB_STATUSES",
    "FINAL_STATUSES",
    "Hyperparameters",
    "LoraConfig",
    "JobError",
    "Checkpoint",
    "Job",
    "JobPage",
    "Event",
    "FileObject",
    "StorageUsage",
    "AdapterFile",
    "Model",
    "PingInfo",
]

#: Every job status, in the order of a job's life (docs/protocol.md §6).
JOB_STATUSES = (
    "validating",
    "queued",
    "running",
    "pausing",
    "paused",
    "cancelling",
    "requeued",
    "succeeded",
    "failed",
    "cancelled",
)
#: Statuses a job never leaves.
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def _get(d: Any, key: str, default: Any = None) -> Any:
    if not isinstance(d, dict):
        return default
    v = d.get(key, default)
    return default if v is None else v


@dataclasses.dataclass
class Hyperparameters:
    """Training settings. Defaults are the daemon's (docs/protocol.md §5)."""

    epochs: int = 1
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 4  # rows per micro-batch
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # <= 0: no clipping
    max_length: int = 1024  # tokens per packed row
    seed: int = 42
    checkpoint_every_steps: int = 0  # 0: only at the end
    eval_every_steps: int = 0  # 0: only at the end

    @classmethod
    def from_dict(cls, d: Any) -> "Hyperparameters":
        h = cls()
        if isinstance(d, dict):
            for f in dataclasses.fields(cls):
                if d.get(f.name) is not None:
                    setattr(h, f.name, d[f.name])
        return h

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LoraConfig:
    """LoRA settings. Defaults are the daemon's."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list = dataclasses.field(default_factory=lambda: ["all-linear"])

    @classmethod
    def from_dict(cls, d: Any) -> "LoraConfig":
        c = cls()
        if isinstance(d, dict):
            for f in dataclasses.fields(cls):
                if d.get(f.name) is not None:
                    setattr(c, f.name, list(d[f.name]) if f.name == "target_modules" else d[f.name])
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class JobError:
    """Why a job failed, or why a paused one was paused (``RESOURCE_EXHAUSTED``,
    param ``tenant``: its checkpoints took the tenant over its storage quota;
    free space, then resume). ``user_error``: the input or the tenant's own use
    was at fault, not the node."""

    code: str
    message: str
    param: Optional[str] = None
    user_error: bool = False

    @classmethod
    def from_dict(cls, d: Any) -> Optional["JobError"]:
        if not isinstance(d, dict):
            return None
        return cls(
            code=str(_get(d, "code", "INTERNAL")),
            message=str(_get(d, "message", "")),
            param=d.get("param") if isinstance(d.get("param"), str) else None,
            user_error=bool(_get(d, "user_error", False)),
        )


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint directory on the daemon's storage root."""

    step: int
    path: str

    @classmethod
    def from_dict(cls, d: Any) -> Optional["Checkpoint"]:
        if not isinstance(d, dict):
            return None
        return cls(step=int(_get(d, "step", 0)), path=str(_get(d, "path", "")))


@dataclasses.dataclass
class Event:
    """One event of a job: ``type`` is ``status`` (``data`` = ``{"status",
    "previous"}``) or the worker's ``start``, ``step``, ``eval``,
    ``checkpoint``, ``log``, ``done``, ``error``, ``validation``."""

    seq: int
    time_ms: int
    type: str
    message: str = ""
    data: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Event":
        from .errors import InternalError

        if not isinstance(d, dict):
            raise InternalError("malformed reply: event is not an object")
        data = d.get("data")
        return cls(
            seq=int(_get(d, "seq", 0)),
            time_ms=int(_get(d, "time_ms", 0)),
            type=str(_get(d, "type", "")),
            message=str(_get(d, "message", "")),
            data=data if isinstance(data, dict) else {},
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FileObject:
    """An uploaded file. ``path`` (relative to the tenant's area) and ``id``
    both work as a job's ``training_file`` / ``validation_file``."""

    id: str
    filename: str
    bytes: int
    sha256: str
    created_at_ms: int
    path: str
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> "FileObject":
        from .errors import InternalError

        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise InternalError("malformed reply: file has no id")
        return cls(
            id=d["id"],
            filename=str(_get(d, "filename", "")),
            bytes=int(_get(d, "bytes", 0)),
            sha256=str(_get(d, "sha256", "")),
            created_at_ms=int(_get(d, "created_at_ms", 0)),
            path=str(_get(d, "path", "")),
            raw=d,
        )

    def to_dict(self) -> dict:
        return dict(self.raw)


def _count(d: dict, key: str, what: str = "byte count") -> Optional[int]:
    from .errors import InternalError

    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InternalError(f"malformed reply to file.list: {key} is {v!r}, not a {what}")
    return v


@dataclasses.dataclass
class StorageUsage:
    """A tenant's use of the daemon's storage, from ``file.list``.

    ``usage_bytes``: what the tenant's area holds (files, uploads in progress,
    its jobs' checkpoints, adapters and logs). ``quota_bytes``: the daemon's
    ``limits.max_tenant_storage_bytes``, 0 when there is no quota.
    ``usage_files``: how many files and directories the same area holds
    (directories included). ``quota_files``: the daemon's
    ``limits.max_tenant_files``, 0 when there is no limit. Each is None when
    the daemon does not report it: one older than the quota reports none, one
    older than ``file.list`` paging only the two byte counts.
    """

    usage_bytes: Optional[int]
    quota_bytes: Optional[int]
    usage_files: Optional[int] = None
    quota_files: Optional[int] = None

    @classmethod
    def from_dict(cls, d: Any) -> "StorageUsage":
        if not isinstance(d, dict):
            return cls(None, None)
        return cls(
            usage_bytes=_count(d, "usage_bytes"),
            quota_bytes=_count(d, "quota_bytes"),
            usage_files=_count(d, "usage_files", "file count"),
            quota_files=_count(d, "quota_files", "file count"),
        )

    @property
    def available_bytes(self) -> Optional[int]:
        """Bytes an upload may still take under the quota (0 at or over it); None
        without a quota or without a report."""
        if not self.quota_bytes or self.usage_bytes is None:
            return None
        return max(0, self.quota_bytes - self.usage_bytes)

    @property
    def available_files(self) -> Optional[int]:
        """Files and directories the tenant's area may still gain under the limit
        (0 at or over it); None without a limit or without a report."""
        if not self.quota_files or self.usage_files is None:
            return None
        return max(0, self.quota_files - self.usage_files)


@dataclasses.dataclass
class AdapterFile:
    """One file of a finished job's PEFT adapter."""

    name: str
    bytes: int
    sha256: str


@dataclasses.dataclass
class Model:
    """A base model the operator configured (names only)."""

    name: str


@dataclasses.dataclass
class PingInfo:
    protocol: int
    daemon: str
    version: str
    node: str
    tenant: str
    role: str
    heartbeat_interval_ms: int
    liveness: int
    limits: dict
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict) -> "PingInfo":
        principal = _get(d, "principal", {})
        return cls(
            protocol=int(_get(d, "protocol", 0)),
            daemon=str(_get(d, "daemon", "")),
            version=str(_get(d, "version", "")),
            node=str(_get(d, "node", "")),
            tenant=str(_get(principal, "tenant", "")),
            role=str(_get(principal, "role", "")),
            heartbeat_interval_ms=int(_get(d, "heartbeat_interval_ms", 0)),
            liveness=int(_get(d, "liveness", 0)),
            limits=dict(_get(d, "limits", {})),
            raw=d,
        )


@dataclasses.dataclass
class Job:
    """A fine-tuning job (docs/protocol.md §6). Times are Unix milliseconds.

    A Job returned by a :class:`fjord.Client` remembers it, so ``job.wait()``,
    ``job.refresh()``, ``job.cancel()`` work on the object directly.
    """

    id: str
    status: str
    model: str
    training_file: str
    tenant: str = ""
    validation_file: Optional[str] = None
    hyperparameters: Hyperparameters = dataclasses.field(default_factory=Hyperparameters)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    priority: int = 0
    gpus: int = 1
    max_restarts: int = 3
    metadata: dict = dataclasses.field(default_factory=dict)
    idempotency_key: Optional[str] = None
    queue_position: Optional[int] = None
    created_at_ms: int = 0
    started_at_ms: Optional[int] = None
    finished_at_ms: Optional[int] = None
    step: int = 0
    total_steps: int = 0
    trained_tokens: int = 0
    metrics: dict = dataclasses.field(default_factory=dict)
    error: Optional[JobError] = None
    latest_checkpoint: Optional[Checkpoint] = None
    result_adapter: Optional[str] = None  # the adapter directory on the daemon's storage
    restarts: int = 0
    node: str = ""
    gpu_ids: list = dataclasses.field(default_factory=list)
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _client: Optional["Client"] = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, client: Optional["Client"] = None) -> "Job":
        from .errors import InternalError

        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not d["id"]:
            raise InternalError("malformed reply: job has no id")
        status = d.get("status")
        if status not in JOB_STATUSES:
            raise InternalError(f"malformed reply: unknown job status {status!r}")
        adapter = d.get("result_adapter")
        return cls(
            id=d["id"],
            status=status,
            model=str(_get(d, "model", "")),
            training_file=str(_get(d, "training_file", "")),
            tenant=str(_get(d, "tenant", "")),
            validation_file=d.get("validation_file") if isinstance(d.get("validation_file"), str) else None,
            hyperparameters=Hyperparameters.from_dict(d.get("hyperparameters")),
            lora=LoraConfig.from_dict(d.get("lora")),
            priority=int(_get(d, "priority", 0)),
            gpus=int(_get(d, "gpus", 1)),
            max_restarts=int(_get(d, "max_restarts", 0)),
            metadata=dict(_get(d, "metadata", {})),
            idempotency_key=d.get("idempotency_key") if isinstance(d.get("idempotency_key"), str) else None,
            queue_position=d.get("queue_position") if isinstance(d.get("queue_position"), int) else None,
            created_at_ms=int(_get(d, "created_at_ms", 0)),
            started_at_ms=d.get("started_at_ms") if isinstance(d.get("started_at_ms"), int) else None,
            finished_at_ms=d.get("finished_at_ms") if isinstance(d.get("finished_at_ms"), int) else None,
            step=int(_get(d, "step", 0)),
            total_steps=int(_get(d, "total_steps", 0)),
            trained_tokens=int(_get(d, "trained_tokens", 0)),
            metrics=dict(_get(d, "metrics", {})),
            error=JobError.from_dict(d.get("error")),
            latest_checkpoint=Checkpoint.from_dict(d.get("latest_checkpoint")),
            result_adapter=_get(adapter, "path") if isinstance(adapter, dict) else None,
            restarts=int(_get(d, "restarts", 0)),
            node=str(_get(d, "node", "")),
            gpu_ids=list(_get(d, "gpu_ids", [])),
            raw=d,
            _client=client,
        )

    def to_dict(self) -> dict:
        """The job object as the daemon sent it."""
        return dict(self.raw)

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def _need_client(self) -> "Client":
        if self._client is None:
            raise RuntimeError("this Job was not returned by a fjord.Client; use client.jobs.* instead")
        return self._client

    def refresh(self) -> "Job":
        """The job as the daemon sees it now (a new object)."""
        return self._need_client().jobs.get(self.id)

    def cancel(self) -> "Job":
        return self._need_client().jobs.cancel(self.id)

    def pause(self) -> "Job":
        return self._need_client().jobs.pause(self.id)

    def resume(self) -> "Job":
        return self._need_client().jobs.resume(self.id)

    def delete(self) -> "Job":
        """Deletes the job (it must have ended) with its checkpoints, adapter and logs."""
        return self._need_client().jobs.delete(self.id)

    def events(self, follow: bool = False, after_seq: int = 0) -> Iterator[Event]:
        return self._need_client().jobs.events(self.id, follow=follow, after_seq=after_seq)

    def checkpoints(self) -> list:
        return self._need_client().jobs.checkpoints(self.id)

    def download_adapter(self, dest: str) -> Any:
        return self._need_client().adapters.download(self.id, dest)

    def wait(
        self,
        progress: bool | TextIO = False,
        on_event: Optional[Callable[[Event], None]] = None,
        timeout: Optional[float] = None,
        raise_on_failure: bool = False,
    ) -> "Job":
        """Follows the job's events until it is final; returns the final job.

        progress: True draws a progress line on stderr (step/total, loss,
        eval loss, tokens/s, ETA); a file object draws it there.
        on_event: called with every event as it arrives.
        timeout: seconds to wait at most (DeadlineExceededError after).
        raise_on_failure: raise JobFailedError if the job failed or was cancelled.
        """
        return self._need_client().jobs.wait(
            self.id, progress=progress, on_event=on_event, timeout=timeout, raise_on_failure=raise_on_failure
        )


@dataclasses.dataclass
class JobPage:
    """One page of ``jobs.list``: ``data`` (newest first), ``has_more``.
    Iterating it yields its jobs; ``auto_paging_iter()`` fetches the next pages."""

    data: list
    has_more: bool
    _fetch_next: Optional[Callable[[str], "JobPage"]] = dataclasses.field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Job:
        return self.data[i]

    def auto_paging_iter(self) -> Iterator[Job]:
        page: Optional[JobPage] = self
        while page is not None:
            yield from page.data
            if not page.has_more or not page.data or page._fetch_next is None:
                return
            page = page._fetch_next(page.data[-1].id)
