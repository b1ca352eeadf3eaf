"""``client.evaluations``: evaluation jobs, which compare the base model and
adapters side by side on your prompt/answer files, and their reports
(docs/protocol.md §5, "Evaluation jobs" and "Report"; docs/comparison.md for
what is measured).

    ev = client.evaluations.create(
        model="llama-3.2-1b",
        candidates=["base", f"ft={job.id}", fjord.Candidate.from_adapter_dir("mine", "./my-adapter")],
        datasets=[pathlib.Path("heldout.jsonl")])
    ev = ev.wait(progress=True)
    report = client.evaluations.report(ev)
    for ds in report.datasets:
        print(ds.data, {c.name: c.metrics["contains"] for c in ds.candidates})

An evaluation job is a job like any other: the jobs it returns are
:class:`fjord.BoundJob` (``job.wait()``, ``job.cancel()`` work), with
``type == "evaluation"``.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Union

from . import _download, _wire
from .connection import Connection
from .errors import InternalError, InvalidArgumentError, NotFoundError
from .files import Files
from .jobs import BoundJob, FileArgument, Jobs, _file_ref
from .reports import EvaluationReport
from .types import (
    AdapterFile,
    Candidate,
    Event,
    FileObject,
    Job,
    JobRef,
    PathLike,
    job_id_of,
    valid_candidate_name,
)

__all__ = ["Evaluations", "CandidateArgument"]

#: What ``candidates`` accepts, each: a Candidate, a dict of its fields, ``"base"``
#: (any name alone: the base model under that name), ``"NAME=job-…"`` (a fine-tune's
#: adapter), ``"NAME=model:M"`` (another model of the node, as it is), ``"NAME=DIR"``
#: (a local PEFT adapter directory), or a Job (its adapter, named by its id).
CandidateArgument = Union[Candidate, Dict[str, Any], str, Job]

#: The files of a report.
REPORT_FILES = ("report.json", "report.html")


def parse_candidate(value: CandidateArgument, index: int) -> Candidate:
    """One ``candidates`` entry as a Candidate (see :data:`CandidateArgument`).

    InvalidArgumentError (param ``candidates[i]``) for a bad name or another type,
    NotFoundError naming the path for a ``NAME=DIR`` that is not an adapter
    directory.
    """
    param = f"candidates[{index}]"
    if isinstance(value, Candidate):
        c = value
    elif isinstance(value, Job):
        c = Candidate(name=value.id, job=value.id)
    elif isinstance(value, dict):
        unknown = set(value) - {"name", "job", "adapter_config", "adapter_model", "model"}
        if unknown:
            raise InvalidArgumentError(f"{param}: unknown field '{sorted(unknown)[0]}'", param=param)
        c = Candidate(name=value.get("name", ""), job=value.get("job"), adapter_config=value.get("adapter_config"),
                      adapter_model=value.get("adapter_model"), model=value.get("model"))
    elif isinstance(value, str):
        name, eq, ref = value.partition("=")
        if not eq:
            c = Candidate(name=name)
        elif ref.startswith("job-"):
            c = Candidate(name=name, job=ref)
        elif ref.startswith("model:") and len(ref) > len("model:"):
            c = Candidate(name=name, model=ref[len("model:"):])
        elif not ref:
            raise InvalidArgumentError(f"{param}: '{value}' names nothing after '=' (NAME=job-… or NAME=DIR)",
                                       param=param)
        else:
            c = Candidate.from_adapter_dir(name, ref)
    else:
        raise InvalidArgumentError(f"{param} must be a Candidate, a dict, 'base', 'NAME=job-…', 'NAME=DIR' or a "
                                   f"Job, got {type(value).__name__}", param=param)
    if not valid_candidate_name(c.name):
        raise InvalidArgumentError(f"{param}.name {c.name!r} must be 1..64 bytes of letters, digits, '.', '_', '-'",
                                   param=f"{param}.name")
    return c


class Evaluations:
    """Your evaluation jobs and their reports (``client.evaluations``)."""

    def __init__(self, connection: Connection, files: Files, jobs: Jobs):
        self._conn = connection
        self._files = files
        self._jobs = jobs

    def create(
        self,
        *,
        model: str,
        candidates: Sequence[CandidateArgument],
        datasets: Sequence[FileArgument],
        metrics: Optional[Iterable[str]] = None,
        max_new_tokens: Optional[int] = None,
        batch_size: Optional[int] = None,
        samples: Optional[int] = None,
        bootstrap: Optional[int] = None,
        seed: Optional[int] = None,
        chat_template: Optional[str] = None,
        judge: Optional[str] = None,
        priority: Optional[int] = None,
        max_restarts: Optional[int] = None,
        metadata: Optional[Dict[str, str]] = None,
        idempotency_key: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> BoundJob:
        """Submits an evaluation (``job.create`` with ``"type": "evaluation"``); returns
        the job, normally ``validating``.

        model: the base every candidate runs on. candidates: 1..16, each a
        :class:`fjord.Candidate`, a dict of its fields, ``"base"`` (a name alone: the base
        model itself), ``"NAME=job-…"`` (the adapter of a succeeded fine-tune of yours on
        the same model), ``"NAME=DIR"`` or ``Candidate.from_adapter_dir(NAME, DIR)`` (a
        local PEFT adapter directory: its adapter_config.json and
        adapter_model.safetensors are uploaded first), or a Job (its adapter, named by the
        job's id). datasets: 1..8 files of ``{"prompt", "answer"}`` lines, each a file id, a
        tenant path, a FileObject or a ``pathlib.Path`` (uploaded first).
        metrics: a subset of ``loss``, ``perplexity``, ``token_accuracy``, ``exact_match``,
        ``normalized_exact_match``, ``contains``, ``token_f1`` (default: all).
        max_new_tokens, batch_size, samples, bootstrap, seed, chat_template: as
        docs/protocol.md says (left out: the daemon's defaults). judge: a model name of the
        node that judges every pair of candidates' replies. idempotency_key: repeat a create
        safely (a random one when omitted). Local files are uploaded again on each call, so
        a create repeated with the same key and local paths differs in its file ids and is
        refused (AlreadyExistsError): upload first and pass the ids to repeat one.

        Errors: InvalidArgumentError with ``param`` naming the field (``candidates[2].job``
        for a job that is not a succeeded fine-tune of this model, ``datasets[0]`` for a
        missing file, ``evaluation.metrics`` for an unknown metric, ...); NotFoundError
        naming the path for a local adapter directory or dataset that is not there.
        """
        if isinstance(candidates, (str, dict, Candidate, Job)) or not candidates:
            raise InvalidArgumentError("candidates must be a non-empty list", param="candidates")
        if isinstance(datasets, (str, FileObject, os.PathLike)) or not datasets:
            raise InvalidArgumentError("datasets must be a non-empty list", param="datasets")
        parsed = [parse_candidate(c, i) for i, c in enumerate(candidates)]
        # Everything is checked before the first upload.
        for i, d in enumerate(datasets):
            if isinstance(d, os.PathLike) and not os.path.isfile(d):
                raise NotFoundError(f"datasets[{i}]: {os.fspath(d)} is not a file", param=f"datasets[{i}]")
        body: Dict[str, Any] = {
            "type": "evaluation",
            "model": model,
            "candidates": [self._uploaded(c).to_dict() for c in parsed],
            "datasets": [_file_ref(d, f"datasets[{i}]", self._files) for i, d in enumerate(datasets)],
        }
        settings: Dict[str, Any] = {}
        if metrics is not None:
            if isinstance(metrics, str):
                raise InvalidArgumentError("metrics must be a list of metric names", param="evaluation.metrics")
            settings["metrics"] = list(metrics)
        for key, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("samples", samples),
                           ("bootstrap", bootstrap), ("seed", seed), ("chat_template", chat_template),
                           ("judge", judge)):
            if value is not None:
                settings[key] = value
        if settings:
            body["evaluation"] = settings
        for key, value in (("priority", priority), ("max_restarts", max_restarts), ("tenant", tenant)):
            if value is not None:
                body[key] = value
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if idempotency_key is None:
            idempotency_key = secrets.token_hex(16)
        elif not _wire.valid_idempotency_key(idempotency_key):
            raise InvalidArgumentError("idempotency_key must be 1..128 printable ASCII bytes", param="idempotency_key")
        body["idempotency_key"] = idempotency_key
        return self._jobs._job(self._conn.call("job.create", body).body)

    def _uploaded(self, c: Candidate) -> Candidate:
        """``c`` with its local adapter directory uploaded (its two file ids set)."""
        if c.adapter_dir is None or c.adapter_config is not None:
            return c
        config = self._files.upload(c.adapter_dir / "adapter_config.json")
        weights = self._files.upload(c.adapter_dir / "adapter_model.safetensors")
        return Candidate(name=c.name, adapter_config=config.id, adapter_model=weights.id, adapter_dir=c.adapter_dir)

    def get(self, job_id: JobRef) -> BoundJob:
        """The job (any job: ``job.get`` does not care about its type)."""
        return self._jobs.get(job_id)

    def list(self, status: Union[str, Iterable[str], None] = None, limit: int = 20,
             tenant: Optional[str] = None) -> List[BoundJob]:
        """Your newest evaluation jobs, at most ``limit`` of them, newest first.

        ``job.list`` has no type filter: this walks its pages (newest first, 100 jobs
        each) and keeps the evaluation jobs, so it may ask for several pages, and
        for every page when you have fewer than ``limit`` evaluations.
        """
        out: List[BoundJob] = []
        for job in self._jobs.list(status=status, limit=100, tenant=tenant).auto_paging_iter():
            if job.is_evaluation:
                out.append(job)
                if len(out) >= limit:
                    break
        return out

    def wait(self, job_id: JobRef, progress: Union[bool, TextIO] = False,
             on_event: Optional[Callable[[Event], None]] = None, timeout: Optional[float] = None,
             raise_on_failure: bool = False) -> BoundJob:
        """Follows the job until it is final; returns the final job (see
        :meth:`fjord.BoundJob.wait`). Each (candidate, dataset) pass is a step."""
        return self._jobs.wait(job_id, progress=progress, on_event=on_event, timeout=timeout,
                               raise_on_failure=raise_on_failure)

    def report_files(self, job_id: JobRef) -> List[AdapterFile]:
        """The files of a succeeded evaluation's report (``report.json``, ``report.html``)
        with their sizes and SHA-256 (:class:`fjord.AdapterFile`).
        FailedPreconditionError for any other job."""
        return _download.list_files(self._conn, "report.files", job_id_of(job_id))

    def report(self, job_id: JobRef) -> EvaluationReport:
        """The report of a succeeded evaluation job, downloaded (size and SHA-256
        checked: DataLossError on a mismatch) and parsed.

        FailedPreconditionError for a job that has not succeeded or is not an
        evaluation; InternalError for a report that is not ``fjord.evaluation/1``.
        """
        job = job_id_of(job_id)
        files = {f.name: f for f in self.report_files(job)}
        if "report.json" not in files:
            raise InternalError(f"report.files of {job} lists no report.json (it lists {sorted(files)})")
        data = _download.fetch_bytes(self._conn, "report.download", job, files["report.json"])
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise InternalError(f"report.json of {job} is not JSON: {e}") from None
        return EvaluationReport.from_dict(doc)

    def download_report(self, job_id: JobRef, dest_dir: PathLike) -> pathlib.Path:
        """Downloads the report's files (``report.json``, ``report.html``) into
        ``dest_dir`` (created if missing), each checked against its size and SHA-256;
        returns ``dest_dir``."""
        job = job_id_of(job_id)
        return _download.download_all(self._conn, "report.download", job, self.report_files(job),
                                      pathlib.Path(dest_dir))

