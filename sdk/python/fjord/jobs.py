"""``client.jobs``: submit, inspect, control, follow and delete fine-tuning
jobs (docs/protocol.md §5-§6).

Every method that names a job takes its id or a :class:`fjord.Job`. The jobs
it returns are :class:`BoundJob`: a :class:`fjord.Job` (the inert data, same
fields, ``isinstance(job, fjord.Job)`` holds) that also remembers this
resource, so ``job.wait()``, ``job.refresh()``, ``job.cancel()`` work on the
object. The binding lives here, not in :mod:`fjord.types`, so the data
classes never hold a client and import nothing above the errors.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, TextIO, Tuple, Type, Union

from . import _wire
from ._progress import Progress
from .adapters import Adapters
from .connection import Connection, now
from .errors import InternalError, InvalidArgumentError, JobFailedError
from .events import EventStream
from .files import Files
from .types import (
    JOB_STATUSES,
    Checkpoint,
    Event,
    FileObject,
    Hyperparameters,
    Job,
    JobPage,
    JobRef,
    LoraConfig,
    PathLike,
    job_id_of,
)

__all__ = ["Jobs", "BoundJob", "BoundJobPage"]

#: What ``training_file`` / ``validation_file`` / ``heldout_file`` accept.
FileArgument = Union[str, FileObject, "os.PathLike[str]"]

# Fields a Job is compared by (the dataclass's own choice: not ``raw``).
_COMPARED = tuple(f.name for f in dataclasses.fields(Job) if f.compare)


class BoundJob(Job):
    """A :class:`fjord.Job` returned by a Client, with methods that ask the daemon.

    Each method is the :class:`Jobs` (or :class:`fjord.Adapters`) method of the
    same name applied to this job's id; the job object itself is not updated
    (``refresh()`` returns a new one). Compares equal to a Job with the same
    data. ``client.jobs.bind(job)`` makes one of a Job built elsewhere.
    """

    # Set by Jobs.bind; a class attribute, not a dataclass field (asdict() and
    # fields() see the job's data only). None: made without a Client.
    _jobs: Optional["Jobs"] = None

    def _resource(self) -> "Jobs":
        if self._jobs is None:
            raise RuntimeError("this BoundJob was not returned by a fjord.Client; use client.jobs.bind(job)")
        return self._jobs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    __hash__ = None  # type: ignore[assignment]  # mutable, like Job

    def refresh(self) -> "BoundJob":
        """The job as the daemon sees it now (a new object)."""
        return self._resource().get(self.id)

    def cancel(self) -> "BoundJob":
        """See :meth:`Jobs.cancel`."""
        return self._resource().cancel(self.id)

    def pause(self) -> "BoundJob":
        """See :meth:`Jobs.pause`."""
        return self._resource().pause(self.id)

    def resume(self) -> "BoundJob":
        """See :meth:`Jobs.resume`."""
        return self._resource().resume(self.id)

    def delete(self) -> "BoundJob":
        """Deletes the job (it must have ended) with its checkpoints, adapter and logs."""
        return self._resource().delete(self.id)

    def events(self, follow: bool = False, after_seq: int = 0) -> EventStream["BoundJob"]:
        """See :meth:`Jobs.events`."""
        return self._resource().events(self.id, follow=follow, after_seq=after_seq)

    def checkpoints(self) -> List[Checkpoint]:
        """See :meth:`Jobs.checkpoints`."""
        return self._resource().checkpoints(self.id)

    def download_adapter(self, dest: PathLike) -> pathlib.Path:
        """See :meth:`fjord.Adapters.download`."""
        return self._resource()._adapters.download(self.id, dest)

    def wait(
        self,
        progress: Union[bool, TextIO] = False,
        on_event: Optional[Callable[[Event], None]] = None,
        timeout: Optional[float] = None,
        raise_on_failure: bool = False,
    ) -> "BoundJob":
        """Follows the job's events until it is final; returns the final job.

        progress: True draws a progress line on stderr (step/total, loss,
        eval loss, tokens/s, ETA); a file object draws it there.
        on_event: called with every event as it arrives.
        timeout: seconds to wait at most (DeadlineExceededError after).
        raise_on_failure: raise JobFailedError if the job failed or was cancelled.
        """
        return self._resource().wait(
            self.id, progress=progress, on_event=on_event, timeout=timeout, raise_on_failure=raise_on_failure
        )


class BoundJobPage(JobPage):
    """A :class:`fjord.JobPage` returned by ``client.jobs.list``: its jobs are
    BoundJobs and ``auto_paging_iter()`` fetches the pages after it."""

    data: List[BoundJob]  # type: ignore[assignment]  # narrowed: the jobs of a Client
    _fetch_next: Optional[Callable[[str], "BoundJobPage"]] = None

    def __iter__(self) -> Iterator[BoundJob]:
        return iter(self.data)

    def __getitem__(self, i: int) -> BoundJob:
        return self.data[i]

    def auto_paging_iter(self) -> Iterator[BoundJob]:
        """Every job of this page and of the pages after it, asking the daemon
        for the next page (after this page's last job) when one is needed."""
        page: Optional[BoundJobPage] = self
        while page is not None:
            yield from page.data
            if not page.has_more or not page.data or page._fetch_next is None:
                return
            page = page._fetch_next(page.data[-1].id)


def _file_ref(value: Optional[FileArgument], field: str, files: Files) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, FileObject):
        return value.id
    if isinstance(value, os.PathLike):
        return files.upload(value).id  # a local file: upload it first
    if isinstance(value, str):
        return value
    raise InvalidArgumentError(
        f"{field} must be a file id, a tenant path, a FileObject or a pathlib.Path, got {type(value).__name__}",
        param=field,
    )


def _section(value: Union[Dict[str, Any], Hyperparameters, LoraConfig, None],
             cls: Type[Union[Hyperparameters, LoraConfig]], field: str) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if isinstance(value, cls):
        return value.to_dict()
    if isinstance(value, dict):
        return dict(value)
    raise InvalidArgumentError(f"{field} must be a dict or a {cls.__name__}, got {type(value).__name__}", param=field)


def _statuses(status: Union[str, Iterable[str]]) -> List[str]:
    statuses = [status] if isinstance(status, str) else list(status)
    for s in statuses:
        if s not in JOB_STATUSES:
            raise InvalidArgumentError(f"unknown job status '{s}' (one of {', '.join(JOB_STATUSES)})", param="status")
    return statuses


class Jobs:
    """Your fine-tuning jobs (``client.jobs``).

    ``files`` uploads a ``pathlib.Path`` given as a job's training or validation
    file; ``adapters`` serves :meth:`BoundJob.download_adapter`.
    """

    def __init__(self, connection: Connection, files: Files, adapters: Adapters):
        self._conn = connection
        self._files = files
        self._adapters = adapters

    def bind(self, job: Job) -> BoundJob:
        """``job`` as a BoundJob of this client (a copy; the data is shared)."""
        bound = BoundJob(**{f.name: getattr(job, f.name) for f in dataclasses.fields(Job)})
        bound._jobs = self
        return bound

    def _job(self, d: Any) -> BoundJob:
        return self.bind(Job.from_dict(d))

    def _on_job(self, command: str, job_id: JobRef) -> BoundJob:
        return self._job(self._conn.call(command, {"job_id": job_id_of(job_id)}).body)

    def create(
        self,
        *,
        model: str,
        training_file: FileArgument,
        validation_file: Optional[FileArgument] = None,
        heldout_file: Optional[FileArgument] = None,
        hyperparameters: Union[Dict[str, Any], Hyperparameters, None] = None,
        lora: Union[Dict[str, Any], LoraConfig, None] = None,
        suffix: Optional[str] = None,
        seed: Optional[int] = None,
        priority: Optional[int] = None,
        gpus: Optional[int] = None,
        quantization: Optional[str] = None,
        shard_base: Optional[bool] = None,
        method: Optional[str] = None,
        preference: Optional[Dict[str, Any]] = None,
        max_restarts: Optional[int] = None,
        metadata: Optional[Dict[str, str]] = None,
        idempotency_key: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> BoundJob:
        """Submits a fine-tune (``job.create``); returns the job, normally ``validating``.

        training_file / validation_file / heldout_file: a file id (``file-…``), a path in
        your tenant's area (``files/…``), a FileObject, or a ``pathlib.Path`` to a local
        file (uploaded first). heldout_file: JSONL of ``{"prompt": ..., "answer": ...}``;
        the trainer asks the model each prompt (greedily) before and after the fine-tune,
        and reports the fraction of replies that contain the answer as
        ``heldout_accuracy`` (the step-0 ``eval`` event: before; ``done`` and
        ``job.metrics``: after). hyperparameters / lora: dicts (or dataclasses) of the fields of
        docs/protocol.md §5; fields left out take the daemon's defaults. suffix: a name
        for the result, kept as ``metadata["suffix"]``. seed: sets
        ``hyperparameters.seed``. quantization: ``"nf4"`` holds the frozen base in 4-bit
        NF4 (QLoRA: about a quarter of its bf16 memory); ``"none"`` (the daemon's default)
        keeps it in bf16. shard_base: ``True`` makes each of the job's ``gpus`` hold
        1/gpus of the frozen base instead of all of it, for a model too big for one GPU
        (no effect with one GPU; with ``quantization="nf4"`` the shards are in 4 bits);
        ``False`` / omitted: every GPU holds the whole base. method: ``"sft"`` (the
        default) or a preference method, ``"dpo"``, ``"orpo"`` or ``"simpo"``, whose
        training and validation files hold preference pairs; preference: its settings
        (``beta``, ``loss_type``, ``label_smoothing``, ``simpo_gamma``, ``cpo_alpha``,
        ``precompute_ref``; docs/user-guide.md, "Preference tuning"). idempotency_key: repeat a
        create safely (the same key and body return the first job); a random one is used
        when omitted.

        Errors: InvalidArgumentError with ``param`` naming the field (an unknown model,
        a bad hyperparameter, a missing file, a quantization other than none or nf4, a
        shard_base that is not a bool; on a node that knows its GPUs' memory, a base too
        big for each GPU: param ``quantization`` when nf4 would fit (sharded or not),
        ``shard_base`` when only sharding it over the GPUs would, ``gpus`` when a sharded
        base needs more of them, ``model`` when nothing fits; the message shows the
        arithmetic and what would fit), ResourceExhaustedError (queue full),
        AlreadyExistsError (the key was used with another body).
        """
        body: Dict[str, Any] = {"model": model,
                                "training_file": _file_ref(training_file, "training_file", self._files)}
        vf = _file_ref(validation_file, "validation_file", self._files)
        if vf is not None:
            body["validation_file"] = vf
        hf = _file_ref(heldout_file, "heldout_file", self._files)
        if hf is not None:
            body["heldout_file"] = hf
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
        options: Tuple[Tuple[str, Any], ...] = (("priority", priority), ("gpus", gpus),
                                                ("quantization", quantization), ("shard_base", shard_base),
                                                ("method", method), ("preference", preference),
                                                ("max_restarts", max_restarts), ("tenant", tenant))
        for key, value in options:
            if value is not None:
                body[key] = value
        if idempotency_key is None:
            idempotency_key = secrets.token_hex(16)
        elif not _wire.valid_idempotency_key(idempotency_key):
            raise InvalidArgumentError("idempotency_key must be 1..128 printable ASCII bytes", param="idempotency_key")
        body["idempotency_key"] = idempotency_key
        return self._job(self._conn.call("job.create", body).body)

    def get(self, job_id: JobRef) -> BoundJob:
        """The job (NotFoundError if it does not exist or is another tenant's)."""
        return self._on_job("job.get", job_id)

    def list(
        self,
        status: Union[str, Iterable[str], None] = None,
        limit: int = 20,
        after: Optional[JobRef] = None,
        tenant: Optional[str] = None,
    ) -> BoundJobPage:
        """One page of jobs, newest first. ``status``: one status or several;
        ``after``: the page starts after this job. ``page.auto_paging_iter()`` walks
        every page."""
        body: Dict[str, Any] = {"limit": limit}
        if status is not None:
            body["status"] = _statuses(status)
        if after is not None:
            body["after"] = job_id_of(after)
        if tenant is not None:
            body["tenant"] = tenant
        page = JobPage.from_dict(self._conn.call("job.list", body).body)
        bound = BoundJobPage(data=[self.bind(j) for j in page.data], has_more=page.has_more)
        bound._fetch_next = lambda last: self.list(status=status, limit=limit, after=last, tenant=tenant)
        return bound

    def cancel(self, job_id: JobRef) -> BoundJob:
        """Cancels (running jobs go through ``cancelling``); a no-op on cancelled jobs.
        FailedPreconditionError for a finished one."""
        return self._on_job("job.cancel", job_id)

    def pause(self, job_id: JobRef) -> BoundJob:
        """Pauses (a running job checkpoints first: ``pausing`` then ``paused``)."""
        return self._on_job("job.pause", job_id)

    def resume(self, job_id: JobRef) -> BoundJob:
        """Queues a paused job again; it continues from its newest checkpoint."""
        return self._on_job("job.resume", job_id)

    def delete(self, job: JobRef) -> BoundJob:
        """Deletes an ended job (a job id or a Job); returns the job as it was.

        Its directory on the daemon's storage (checkpoints, adapter, logs) goes at
        once, then its record and events: download the adapter first. Only a job that
        has ended (succeeded, failed, cancelled) can be deleted: FailedPreconditionError
        otherwise (cancel it and wait). NotFoundError when you have no such job, which
        includes one deleted already: a delete retried after a lost reply raises
        NotFoundError although the job is gone.
        """
        return self._on_job("job.delete", job)

    def checkpoints(self, job_id: JobRef) -> List[Checkpoint]:
        """The job's checkpoints, oldest first."""
        body = self._conn.call("job.checkpoints", {"job_id": job_id_of(job_id)}).body
        raw = body.get("checkpoints")
        if raw is not None and not isinstance(raw, list):
            raise InternalError(f"malformed reply to job.checkpoints: checkpoints is {raw!r}, not an array")
        return [c for c in (Checkpoint.from_dict(x) for x in raw or []) if c is not None]

    def events(self, job_id: JobRef, follow: bool = False, after_seq: int = 0,
               page_size: int = 100) -> EventStream[BoundJob]:
        """The job's events with ``seq > after_seq``, oldest first, as an iterator.

        follow=False: the events stored so far (paged through ``job.events``).
        follow=True: also each new one as it happens (``job.subscribe``), until the job
        is final; the stream's ``job`` is then the final job. ``close()`` (or leaving a
        ``with`` block, or ``break`` + garbage collection) ends it early.
        """
        return EventStream(self._conn, job_id_of(job_id), self._job, follow=follow, after_seq=after_seq,
                           page_size=page_size)

    def wait(
        self,
        job_id: JobRef,
        progress: Union[bool, TextIO] = False,
        on_event: Optional[Callable[[Event], None]] = None,
        timeout: Optional[float] = None,
        raise_on_failure: bool = False,
    ) -> BoundJob:
        """Follows the job until it is final and returns the final job (see
        :meth:`BoundJob.wait`)."""
        printer: Optional[Progress] = None
        if progress:
            printer = Progress(None if isinstance(progress, bool) else progress)
        deadline = None if timeout is None else now() + timeout
        with EventStream(self._conn, job_id_of(job_id), self._job, follow=True, deadline=deadline) as stream:
            for ev in stream:
                if printer is not None:
                    printer.on_event(ev)
                if on_event is not None:
                    on_event(ev)
            job = stream.job
        if job is None:
            raise InternalError(f"the event stream of {stream.job_id} ended without the final job")
        if printer is not None:
            printer.finish(job)
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job
