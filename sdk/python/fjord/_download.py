"""Chunked, checked downloads of a job's result files: ``adapter.files`` /
``adapter.download`` (a fine-tune's PEFT adapter) and ``report.files`` /
``report.download`` (an evaluation's report) are the same protocol
(docs/protocol.md §5): list the files with their size and SHA-256, ask for
one chunk at a time, check each whole file against the listing."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from typing import BinaryIO, List

from . import _wire
from .connection import Connection
from .errors import DataLossError, InternalError, PermissionDeniedError
from .types import AdapterFile

__all__ = ["list_files", "fetch", "fetch_bytes", "download_all"]


def list_files(conn: Connection, command: str, job_id: str) -> List[AdapterFile]:
    """The files ``command`` (``adapter.files``, ``report.files``) lists for the job."""
    body = conn.call(command, {"job_id": job_id}).body
    files = body.get("files")
    if not isinstance(files, list):
        raise InternalError(f"malformed reply to {command}: files is {files!r}, not an array")
    return [AdapterFile.from_dict(f, command) for f in files]


def fetch(conn: Connection, command: str, job_id: str, f: AdapterFile, out: BinaryIO) -> None:
    """Writes file ``f`` to ``out``, chunk by chunk through ``command``
    (``adapter.download``, ``report.download``); DataLossError when what came is
    not the listing's size and SHA-256 (``out`` then holds it all the same)."""
    h = hashlib.sha256()
    offset = 0
    while True:
        m = conn.call(command, {"job_id": job_id, "name": f.name, "offset": offset,
                                "length": _wire.DEFAULT_UPLOAD_CHUNK_BYTES})
        data = m.data or b""
        h.update(data)
        out.write(data)
        offset += len(data)
        if m.body.get("eof", True):
            break
        if not data:
            raise InternalError(f"{command} returned an empty chunk before eof")
    got = h.hexdigest()
    if got != f.sha256 or offset != f.bytes:
        raise DataLossError(f"downloaded {f.name} ({offset} bytes, sha256 {got}) does not match the daemon's "
                            f"({f.bytes} bytes, {f.sha256})")


def fetch_bytes(conn: Connection, command: str, job_id: str, f: AdapterFile) -> bytes:
    """File ``f`` in memory (see :func:`fetch`)."""
    buf = io.BytesIO()
    fetch(conn, command, job_id, f, buf)
    return buf.getvalue()


def download_all(conn: Connection, command: str, job_id: str, files: List[AdapterFile],
                 dest: pathlib.Path) -> pathlib.Path:
    """Downloads ``files`` into directory ``dest`` (created if missing), each to
    ``NAME.part`` first and renamed once checked: nothing half-written is left
    under its real name. PermissionDeniedError when ``dest`` cannot be made,
    InternalError for a name that is not a plain file name."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionDeniedError(f"cannot create {dest}: {e.strerror}", param="dest") from None
    for f in files:
        if not f.name or "/" in f.name or f.name in (".", ".."):
            raise InternalError(f"the daemon named a file {f.name!r}")
        part = dest / (f.name + ".part")
        try:
            with open(part, "wb") as out:
                fetch(conn, command, job_id, f, out)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest / f.name)
    return dest
