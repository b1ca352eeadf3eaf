"""``client.adapters``: a succeeded job's PEFT adapter, listed and downloaded
chunk by chunk, each file checked against its size and SHA-256
(docs/protocol.md §5, Adapter)."""

from __future__ import annotations

import pathlib
from typing import List

from . import _download
from .connection import Connection
from .types import AdapterFile, JobRef, PathLike, job_id_of

__all__ = ["Adapters"]


class Adapters:
    """Jobs' adapters (``client.adapters``)."""

    def __init__(self, connection: Connection):
        self._conn = connection

    def files(self, job_id: JobRef) -> List[AdapterFile]:
        """The files of a succeeded job's PEFT adapter (a job id or a Job;
        FailedPreconditionError before it succeeded)."""
        return _download.list_files(self._conn, "adapter.files", job_id_of(job_id))

    def download(self, job_id: JobRef, dest: PathLike) -> pathlib.Path:
        """Downloads the job's PEFT adapter (a job id or a Job) into directory ``dest``
        (created if missing).

        Each file is checked against the daemon's size and SHA-256 (DataLossError on a
        mismatch; nothing half-written is left under its real name). Returns ``dest``,
        ready for ``peft.PeftModel.from_pretrained(base, dest)``.
        """
        job = job_id_of(job_id)
        return _download.download_all(self._conn, "adapter.download", job, self.files(job), pathlib.Path(dest))
