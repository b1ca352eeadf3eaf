"""The objects of the fjord API (docs/protocol.md §5-§6) as dataclasses.

Each is built from the daemon's JSON with ``from_dict``, which ignores fields
it does not know (a newer daemon may add some) and keeps the whole object in
``raw``; ``to_dict()`` gives the JSON shape back. A reply that is not the
shape the protocol says raises :class:`fjord.InternalError` naming the field.

These objects are inert: they hold data and never a client, and this module
imports nothing of the SDK but its errors. The jobs and pages that a Client
returns are :class:`fjord.jobs.BoundJob` / :class:`fjord.jobs.BoundJobPage`,
subclasses that add the methods which talk to the daemon (``job.wait()``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Dict, Iterator, List, Optional, Union

from .errors import InternalError, InvalidArgumentError, NotFoundError

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
    "Candidate",
    "EvaluationSettings",
    "Model",
    "PingInfo",
    "JobRef",
    "FileRef",
    "PathLike",
    "job_id_of",
    "file_id_of",
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


def _int(d: Any, key: str, default: int, what: str) -> int:
    """``int(d[key])`` (``default`` when absent or null); InternalError naming
    ``what``.``key`` when the value is not a number."""
    v = _get(d, key, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InternalError(f"malformed reply: {what}.{key} is {v!r}, not an integer") from None


def _object(d: Any, key: str, what: str) -> Dict[str, Any]:
    """``dict(d[key])`` ({} when absent or null); InternalError when it is not an object."""
    v = _get(d, key, {})
    if not isinstance(v, dict):
        raise InternalError(f"malformed reply: {what}.{key} is {v!r}, not an object")
    return dict(v)


def _str(d: Any, key: str, default: str, what: str) -> str:
    """``d[key]`` (``default`` when absent or null); InternalError naming
    ``what``.``key`` when the value is not a string."""
    v = _get(d, key, default)
    if not isinstance(v, str):
        raise InternalError(f"malformed reply: {what}.{key} is {v!r}, not a string")
    return v


def _bool(d: Any, key: str, default: bool, what: str) -> bool:
    """``d[key]`` (``default`` when absent or null); InternalError naming
    ``what``.``key`` when the value is not a bool."""
    v = _get(d, key, default)
    if not isinstance(v, bool):
        raise InternalError(f"malformed reply: {what}.{key} is {v!r}, not a bool")
    return v


def _optional_int(d: Dict[str, Any], key: str) -> Optional[int]:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _optional_str(d: Dict[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    return v if isinstance(v, str) else None


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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LoraConfig:
    """LoRA settings. Defaults are the daemon's."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: List[str] = dataclasses.field(default_factory=lambda: ["all-linear"])

    @classmethod
    def from_dict(cls, d: Any) -> "LoraConfig":
        c = cls()
        if isinstance(d, dict):
            for f in dataclasses.fields(cls):
                if d.get(f.name) is not None:
                    setattr(c, f.name, list(d[f.name]) if f.name == "target_modules" else d[f.name])
        return c

    def to_dict(self) -> Dict[str, Any]:
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
            param=_optional_str(d, "param"),
            user_error=bool(_get(d, "user_error", False)),
        )


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint directory on the daemon's storage root."""

    step: int
    path: str

    @classmethod
    def from_dict(cls, d: Any) -> Optional["Checkpoint"]:
        """None for anything but an object (a listing skips it)."""
        if not isinstance(d, dict):
            return None
        return cls(step=_int(d, "step", 0, "checkpoint"), path=str(_get(d, "path", "")))


@dataclasses.dataclass
class Event:
    """One event of a job: ``type`` is ``status`` (``data`` = ``{"status",
    "previous"}``) or the worker's ``start``, ``step``, ``eval``,
    ``checkpoint``, ``log``, ``done``, ``error``, ``validation``."""

    seq: int
    time_ms: int
    type: str
    message: str = ""
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> "Event":
        if not isinstance(d, dict):
            raise InternalError("malformed reply: event is not an object")
        data = d.get("data")
        return cls(
            seq=_int(d, "seq", 0, "event"),
            time_ms=_int(d, "time_ms", 0, "event"),
            type=str(_get(d, "type", "")),
            message=str(_get(d, "message", "")),
            data=data if isinstance(data, dict) else {},
        )

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FileObject:
    """An uploaded file. ``path`` (relative to the tenant's area) and ``id``
    both work as a job's ``training_file`` / ``validation_file`` / ``heldout_file``."""

    id: str
    filename: str
    bytes: int
    sha256: str
    created_at_ms: int
    path: str
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> "FileObject":
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise InternalError("malformed reply: file has no id")
        return cls(
            id=d["id"],
            filename=str(_get(d, "filename", "")),
            bytes=_int(d, "bytes", 0, "file"),
            sha256=str(_get(d, "sha256", "")),
            created_at_ms=_int(d, "created_at_ms", 0, "file"),
            path=str(_get(d, "path", "")),
            raw=d,
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.raw)


def _count(d: Dict[str, Any], key: str, what: str = "byte count") -> Optional[int]:
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

    @classmethod
    def from_dict(cls, d: Any, command: str = "adapter.files") -> "AdapterFile":
        """InternalError for a file without a name (``command``: the reply it came in,
        ``adapter.files`` or ``report.files``)."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise InternalError(f"malformed reply to {command}: a file without a name")
        return cls(d["name"], _int(d, "bytes", 0, "adapter file"), str(_get(d, "sha256", "")))


#: What a candidate's name may hold (docs/protocol.md §5, Evaluation jobs).
_CANDIDATE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The two files of a PEFT adapter directory.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def valid_candidate_name(name: Any) -> bool:
    """True for 1..64 bytes of letters, digits, ``.``, ``_``, ``-``."""
    return isinstance(name, str) and _CANDIDATE_NAME.fullmatch(name) is not None


@dataclasses.dataclass
class Candidate:
    """One candidate of an evaluation job: the base model alone (``job`` and the
    adapter files None), the base with the adapter of one of your succeeded
    fine-tune jobs (``job``), or the base with an uploaded PEFT adapter
    (``adapter_config`` and ``adapter_model``: file ids or tenant paths).

    ``adapter_dir`` is a local PEFT adapter directory not uploaded yet
    (:meth:`from_adapter_dir`): ``client.evaluations.create`` uploads its two
    files and sends their ids; it is never sent itself.
    """

    name: str
    job: Optional[str] = None
    adapter_config: Optional[str] = None
    adapter_model: Optional[str] = None
    adapter_dir: Optional[pathlib.Path] = dataclasses.field(default=None, compare=False)
    # None: the evaluation's model; else another model name of the node, the
    # base this candidate runs on (alone, or under its adapter).
    model: Optional[str] = None

    @classmethod
    def base(cls, name: str = "base", model: Optional[str] = None) -> "Candidate":
        """A base model itself: the evaluation's, or ``model`` (another model of
        the node; its losses are compared only with candidates whose bases
        share its tokenizer)."""
        return cls(name=name, model=model)

    @classmethod
    def from_job(cls, name: str, job: Any) -> "Candidate":
        """The adapter of a succeeded fine-tune job (its id or a Job)."""
        return cls(name=name, job=job_id_of(job))

    @classmethod
    def from_adapter_dir(cls, name: str, path: "PathLike") -> "Candidate":
        """A local PEFT adapter directory (``adapter_config.json`` and
        ``adapter_model.safetensors``), uploaded when the evaluation is created.

        NotFoundError (param ``candidates``) naming the path when the directory or
        one of its two files is missing.
        """
        d = pathlib.Path(path)
        if not d.is_dir():
            raise NotFoundError(f"candidate '{name}': {d} is not a directory (a PEFT adapter directory holds "
                                f"{' and '.join(ADAPTER_FILES)})", param="candidates")
        for f in ADAPTER_FILES:
            if not (d / f).is_file():
                raise NotFoundError(f"candidate '{name}': {d} has no {f} (a PEFT adapter directory holds "
                                    f"{' and '.join(ADAPTER_FILES)})", param="candidates")
        return cls(name=name, adapter_dir=d)

    @classmethod
    def from_dict(cls, d: Any) -> "Candidate":
        """A candidate of a job object; InternalError for one without a name."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise InternalError("malformed reply: job.candidates[] has no name")
        return cls(name=d["name"], job=_optional_str(d, "job"), adapter_config=_optional_str(d, "adapter_config"),
                   adapter_model=_optional_str(d, "adapter_model"), model=_optional_str(d, "model"))

    def to_dict(self) -> Dict[str, Any]:
        """The candidate as job.create takes it. InvalidArgumentError while
        ``adapter_dir`` has not been uploaded."""
        if self.adapter_dir is not None and self.adapter_config is None:
            raise InvalidArgumentError(f"candidate '{self.name}': the adapter in {self.adapter_dir} is not "
                                       "uploaded yet (client.evaluations.create uploads it)", param="candidates")
        d: Dict[str, Any] = {"name": self.name}
        for key in ("job", "adapter_config", "adapter_model", "model"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


@dataclasses.dataclass
class EvaluationSettings:
    """How an evaluation job scores its candidates. Defaults are the daemon's
    (docs/protocol.md §5, Evaluation jobs)."""

    metrics: List[str] = dataclasses.field(default_factory=list)  # empty: all of them
    max_new_tokens: int = 64  # per reply
    batch_size: int = 8  # prompts per generation batch
    samples: int = 5  # replies shown side by side per dataset
    bootstrap: int = 2000  # resamples per interval
    seed: int = 0  # the bootstrap's seed: the same seed, the same report
    chat_template: str = "auto"
    judge: Optional[str] = None  # a model that judges every pair of candidates' replies

    @classmethod
    def from_dict(cls, d: Any) -> "EvaluationSettings":
        e = cls()
        if isinstance(d, dict):
            for f in dataclasses.fields(cls):
                if d.get(f.name) is not None:
                    setattr(e, f.name, list(d[f.name]) if f.name == "metrics" else d[f.name])
        return e

    def to_dict(self) -> Dict[str, Any]:
        """The ``evaluation`` object (``judge`` only when set)."""
        d = dataclasses.asdict(self)
        if d["judge"] is None:
            del d["judge"]
        return d


@dataclasses.dataclass
class Model:
    """A base model the operator configured (names only)."""

    name: str

    @classmethod
    def from_dict(cls, d: Any) -> Optional["Model"]:
        """None for an entry without a name (a listing skips it)."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            return None
        return cls(d["name"])


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
    limits: Dict[str, Any]
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PingInfo":
        principal = _get(d, "principal", {})
        return cls(
            protocol=_int(d, "protocol", 0, "ping"),
            daemon=str(_get(d, "daemon", "")),
            version=str(_get(d, "version", "")),
            node=str(_get(d, "node", "")),
            tenant=str(_get(principal, "tenant", "")),
            role=str(_get(principal, "role", "")),
            heartbeat_interval_ms=_int(d, "heartbeat_interval_ms", 0, "ping"),
            liveness=_int(d, "liveness", 0, "ping"),
            limits=_object(d, "limits", "ping"),
            raw=d,
        )


@dataclasses.dataclass
class Job:
    """A job (docs/protocol.md §6): a fine-tune, or an evaluation
    (``type == "evaluation"``). Times are Unix milliseconds.

    An evaluation job has ``candidates``, ``datasets``, ``evaluation`` and, once
    succeeded, ``result_report`` (the report's directory on the daemon's
    storage); its ``training_file`` is ``""`` (null on the wire), its
    ``hyperparameters`` and ``lora`` are the defaults (it has none) and its
    ``result_adapter`` None. A fine-tune's ``candidates`` and ``datasets`` are
    empty and its ``evaluation`` None.

    The data only. A Job returned by a :class:`fjord.Client` is a
    :class:`fjord.BoundJob`, which adds ``job.wait()``, ``job.refresh()``,
    ``job.cancel()`` and the like; ``client.jobs.bind(job)`` makes one of a
    Job built here.
    """

    id: str
    status: str
    model: str
    training_file: str
    tenant: str = ""
    validation_file: Optional[str] = None
    heldout_file: Optional[str] = None
    hyperparameters: Hyperparameters = dataclasses.field(default_factory=Hyperparameters)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    priority: int = 0
    gpus: int = 1
    quantization: str = "none"  # the frozen base: "none" (bf16) or "nf4" (4-bit, QLoRA)
    shard_base: bool = False  # each of the job's GPUs holds 1/gpus of the base (not all of it)
    method: str = "sft"  # or a preference method: "dpo", "orpo", "simpo"
    preference: Dict[str, Any] = dataclasses.field(default_factory=dict)  # its settings; {} for sft
    max_restarts: int = 3
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
    idempotency_key: Optional[str] = None
    queue_position: Optional[int] = None
    created_at_ms: int = 0
    started_at_ms: Optional[int] = None
    finished_at_ms: Optional[int] = None
    step: int = 0
    total_steps: int = 0
    trained_tokens: int = 0
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    error: Optional[JobError] = None
    latest_checkpoint: Optional[Checkpoint] = None
    result_adapter: Optional[str] = None  # the adapter directory on the daemon's storage
    restarts: int = 0
    node: str = ""  # where it runs: the node, or a Slurm job's node list
    gpu_ids: List[int] = dataclasses.field(default_factory=list)
    # Under fjordd's Slurm executor: the Slurm job running it, and while it
    # waits there, what Slurm says ("Slurm job 12 pending: Resources").
    slurm_job_id: Optional[str] = None
    queue_detail: Optional[str] = None
    type: str = "fine_tune"  # or "evaluation"
    candidates: List[Candidate] = dataclasses.field(default_factory=list)
    datasets: List[str] = dataclasses.field(default_factory=list)
    evaluation: Optional[EvaluationSettings] = None
    result_report: Optional[str] = None  # the report directory (report.json, report.html)
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> "Job":
        """The job of a reply; InternalError for one without an id, with an unknown
        status, or with a field of the wrong type."""
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not d["id"]:
            raise InternalError("malformed reply: job has no id")
        status = d.get("status")
        if status not in JOB_STATUSES:
            raise InternalError(f"malformed reply: unknown job status {status!r}")
        adapter = d.get("result_adapter")
        gpu_ids = _get(d, "gpu_ids", [])
        if not isinstance(gpu_ids, list):
            raise InternalError(f"malformed reply: job.gpu_ids is {gpu_ids!r}, not an array")
        candidates = _get(d, "candidates", [])
        datasets = _get(d, "datasets", [])
        if not isinstance(candidates, list):
            raise InternalError(f"malformed reply: job.candidates is {candidates!r}, not an array")
        if not isinstance(datasets, list) or not all(isinstance(x, str) for x in datasets):
            raise InternalError(f"malformed reply: job.datasets is {datasets!r}, not an array of strings")
        evaluation = d.get("evaluation")
        if evaluation is not None and not isinstance(evaluation, dict):
            raise InternalError(f"malformed reply: job.evaluation is {evaluation!r}, not an object")
        report = d.get("result_report")
        return cls(
            id=d["id"],
            status=status,
            model=str(_get(d, "model", "")),
            training_file=str(_get(d, "training_file", "")),
            tenant=str(_get(d, "tenant", "")),
            validation_file=_optional_str(d, "validation_file"),
            heldout_file=_optional_str(d, "heldout_file"),
            hyperparameters=Hyperparameters.from_dict(d.get("hyperparameters")),
            lora=LoraConfig.from_dict(d.get("lora")),
            priority=_int(d, "priority", 0, "job"),
            gpus=_int(d, "gpus", 1, "job"),
            quantization=_str(d, "quantization", "none", "job"),
            shard_base=_bool(d, "shard_base", False, "job"),
            method=_str(d, "method", "sft", "job"),
            preference=_object(d, "preference", "job"),
            max_restarts=_int(d, "max_restarts", 0, "job"),
            metadata=_object(d, "metadata", "job"),
            idempotency_key=_optional_str(d, "idempotency_key"),
            queue_position=_optional_int(d, "queue_position"),
            created_at_ms=_int(d, "created_at_ms", 0, "job"),
            started_at_ms=_optional_int(d, "started_at_ms"),
            finished_at_ms=_optional_int(d, "finished_at_ms"),
            step=_int(d, "step", 0, "job"),
            total_steps=_int(d, "total_steps", 0, "job"),
            trained_tokens=_int(d, "trained_tokens", 0, "job"),
            metrics=_object(d, "metrics", "job"),
            error=JobError.from_dict(d.get("error")),
            latest_checkpoint=Checkpoint.from_dict(d.get("latest_checkpoint")),
            result_adapter=_get(adapter, "path") if isinstance(adapter, dict) else None,
            restarts=_int(d, "restarts", 0, "job"),
            node=str(_get(d, "node", "")),
            gpu_ids=list(gpu_ids),
            slurm_job_id=_optional_str(d, "slurm_job_id"),
            queue_detail=_optional_str(d, "queue_detail"),
            type=_str(d, "type", "fine_tune", "job"),
            candidates=[Candidate.from_dict(c) for c in candidates],
            datasets=list(datasets),
            evaluation=EvaluationSettings.from_dict(evaluation) if evaluation is not None else None,
            result_report=_get(report, "path") if isinstance(report, dict) else None,
            raw=d,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The job object as the daemon sent it."""
        return dict(self.raw)

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def is_evaluation(self) -> bool:
        """True for an evaluation job (``type == "evaluation"``)."""
        return self.type == "evaluation"


@dataclasses.dataclass
class JobPage:
    """One page of ``jobs.list``: ``data`` (newest first), ``has_more``.
    Iterating it yields its jobs. The page a Client returns is a
    :class:`fjord.BoundJobPage`, whose ``auto_paging_iter()`` fetches the next
    pages."""

    data: List[Job]
    has_more: bool

    @classmethod
    def from_dict(cls, d: Any) -> "JobPage":
        """The page of a ``job.list`` reply (``{"jobs": [...], "has_more": bool}``)."""
        jobs = _get(d, "jobs", [])
        if not isinstance(jobs, list):
            raise InternalError(f"malformed reply to job.list: jobs is {jobs!r}, not an array")
        return cls(data=[Job.from_dict(j) for j in jobs], has_more=bool(_get(d, "has_more", False)))

    def __iter__(self) -> Iterator[Job]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Job:
        return self.data[i]


#: A job named by its id or by the object.
JobRef = Union[str, Job]
#: A file named by its id or by the object.
FileRef = Union[str, FileObject]
#: A local path.
PathLike = Union[str, "os.PathLike[str]"]


def job_id_of(job: Any) -> str:
    """The id of a Job or a job id; InvalidArgumentError (param ``job_id``) for
    anything else, an empty id included."""
    job_id = job.id if isinstance(job, Job) else job
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgumentError(f"job must be a job id or a Job, got {job!r}", param="job_id")
    return job_id


def file_id_of(file: Any) -> str:
    """The id of a FileObject or a file id; InvalidArgumentError (param
    ``file_id``) for anything else, an empty id included."""
    file_id = file.id if isinstance(file, FileObject) else file
    if not isinstance(file_id, str) or not file_id:
        raise InvalidArgumentError(f"file must be a file id or a FileObject, got {file!r}", param="file_id")
    return file_id
