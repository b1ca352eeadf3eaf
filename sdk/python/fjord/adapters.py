"""``client.adapters``: a succeeded job's PEFT adapter, listed and downloaded
chunk by chunk, each file checked against its size and SHA-256
(docs/protocol.md §5, Adapter)."""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import List

from . import _wire
from .connection import Connection
from .errors import DataLossError, InternalError, PermissionDeniedError
from .types import AdapterFile, JobRef, PathLike, job_id_of

__all__ = ["Adapters"]


class Adapters:
    """Jobs' adapters (``client.adapters``)."""

    def __init__(self, connection: Connection):
        self._conn = connection

    def files(self, job_id: JobRef) -> List[AdapterFile]:
        """The files of a succeeded job's PEFT adapter (a job id or a Job;
        FailedPreconditionError before it succeeded)."""
        body = self._conn.call("adapter.files", {"job_id": job_id_of(job_id)}).body
        files = body.get("files")
        if not isinstance(files, list):
            raise InternalError(f"malformed reply to adapter.files: files is {files!r}, not an array")
        return [AdapterFile.from_dict(f) for f in files]

    def download(self, job_id: JobRef, dest: PathLike) -> pathlib.Path:
        """Downloads the job's PEFT adapter (a job id or a Job) into directory ``dest``
        (created if missing).

        Each file is checked against the daemon's size and SHA-256 (DataLossError on a
        mismatch; nothing half-written is left under its real name). Returns ``dest``,
        ready for ``peft.PeftModel.from_pretrained(base, dest)``.
        """
        job = job_id_of(job_id)
        dest_dir = pathlib.Path(dest)
        files = self.files(job)
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
                    m = self._conn.call("adapter.download", {"job_id": job, "name": af.name, "offset": offset,
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
