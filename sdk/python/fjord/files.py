"""``client.files``: uploads (chunked, checked with SHA-256), the paged listing,
the tenant's storage usage, deletes (docs/protocol.md §5, Files)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Dict, List, Optional, Set

from . import _wire
from .connection import Connection
from .errors import DataLossError, InternalError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from .types import FileObject, FileRef, PathLike, StorageUsage, file_id_of

__all__ = ["Files"]


class Files:
    """The files of your tenant (``client.files``)."""

    def __init__(self, connection: Connection):
        self._conn = connection

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
            def read(offset: int, n: int) -> bytes:
                f.seek(offset)
                return f.read(n)

            return self._upload(read, size, h.hexdigest(), name)

    def upload_bytes(self, data: bytes, filename: str) -> FileObject:
        """Uploads bytes held in memory as a file called ``filename``."""
        data = bytes(data)
        return self._upload(lambda off, n: data[off : off + n], len(data), hashlib.sha256(data).hexdigest(), filename)

    def _upload(self, read: Callable[[int, int], bytes], size: int, sha: str, filename: str) -> FileObject:
        begin = self._conn.call("file.upload.begin", {"filename": filename, "bytes": size, "sha256": sha}).body
        upload_id = begin.get("upload_id")
        chunk = begin.get("chunk_bytes") or _wire.DEFAULT_UPLOAD_CHUNK_BYTES
        if not isinstance(upload_id, str) or not isinstance(chunk, int) or chunk <= 0:
            raise InternalError(f"malformed reply to file.upload.begin: upload_id {upload_id!r}, "
                                f"chunk_bytes {chunk!r} (expected a string and an integer > 0)")
        offset = 0
        while offset < size:
            data = read(offset, min(chunk, size - offset))
            if len(data) != min(chunk, size - offset):
                raise DataLossError("the local file changed size during the upload")
            self._conn.call("file.upload.chunk", {"upload_id": upload_id, "offset": offset}, data)
            offset += len(data)
        return FileObject.from_dict(self._conn.call("file.upload.finish", {"upload_id": upload_id}).body)

    def list(self) -> List[FileObject]:
        """All your uploaded files, newest first.

        Asks ``file.list`` page by page (up to 1000 files each) while the daemon says
        ``has_more``, each page after the last file of the one before; a daemon older
        than paging sends one page. InternalError when a page that says ``has_more``
        is empty or a file comes twice; NotFoundError (param ``after``) when the last
        file of a page was deleted before the next page was asked for.
        """
        files: List[FileObject] = []
        seen: Set[str] = set()
        body: Dict[str, Any] = {}  # the default limit, 1000: an older daemon refuses a field it does not know
        while True:
            reply = self._conn.call("file.list", body).body
            where = f"the page after {body['after']}" if "after" in body else "the first page"
            has_more = reply.get("has_more")
            if has_more is not None and not isinstance(has_more, bool):
                raise InternalError(f"malformed reply to file.list ({where}): has_more is {has_more!r}, "
                                    "not true or false")
            raw = reply.get("files")
            if raw is not None and not isinstance(raw, list):
                raise InternalError(f"malformed reply to file.list ({where}): files is {raw!r}, not an array")
            page = [FileObject.from_dict(f) for f in raw or []]
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
        return StorageUsage.from_dict(self._conn.call("file.list").body)

    def delete(self, file: FileRef) -> FileObject:
        """Deletes an uploaded file (a file id or a FileObject); returns the file as it was.

        Its bytes leave the daemon's storage at once. NotFoundError when you have no
        such file, which includes one deleted already: a delete retried after a lost
        reply raises NotFoundError although the file is gone. FailedPreconditionError
        while a job that has not ended uses the file (the message names the job).
        InvalidArgumentError (param ``file_id``) for an empty id or another type.
        """
        return FileObject.from_dict(self._conn.call("file.delete", {"file_id": file_id_of(file)}).body)
