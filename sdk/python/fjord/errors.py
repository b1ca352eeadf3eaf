"""Errors raised by the fjord SDK.

Every error the daemon returns (docs/protocol.md §4) is raised as the
subclass of :class:`FjordError` for its code, carrying the daemon's
``code``, ``message`` and ``param`` (the request field at fault, as a dotted
path such as ``"hyperparameters.learning_rate"``, or ``None``)::

    try:
        client.jobs.create(model="demo", training_file=f.id,
                           hyperparameters={"learning_rate": -1})
    except fjord.InvalidArgumentError as e:
        print(e.param)    # "hyperparameters.learning_rate"

Errors the client itself detects use the same classes:
:class:`DeadlineExceededError` (no reply within the timeout),
:class:`UnavailableError` (nothing listening at the endpoint),
:class:`UnauthenticatedError` (the daemon refused this client's CURVE key),
:class:`DataLossError` (a download that does not match its SHA-256).
A job that fails is not an error reply: it is a job with ``status ==
"failed"``; :meth:`fjord.Job.wait` raises :class:`JobFailedError` only when
asked to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .types import Job

__all__ = [
    "FjordError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "UnimplementedError",
    "UnavailableError",
    "InternalError",
    "DeadlineExceededError",
    "DataLossError",
    "JobFailedError",
    "error_for_code",
]


class FjordError(Exception):
    """Base class: ``code`` (e.g. ``"NOT_FOUND"``), ``message``, ``param``."""

    code: str = "UNKNOWN"
    #: True when repeating the same request later may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 request_id: Optional[str] = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.param = param
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (param {self.param})" if self.param else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, param={self.param!r})"

    def to_dict(self) -> Dict[str, Optional[str]]:
        """``{"code", "message", "param"}``, the shape of the daemon's error object."""
        return {"code": self.code, "message": self.message, "param": self.param}


class InvalidArgumentError(FjordError):
    """The request is malformed or a field is invalid: fix the request."""

    code = "INVALID_ARGUMENT"


class NotFoundError(FjordError):
    """The job, file, checkpoint or adapter does not exist (or is another tenant's)."""

    code = "NOT_FOUND"


class AlreadyExistsError(FjordError):
    """An idempotency key reused with a different request."""

    code = "ALREADY_EXISTS"


class PermissionDeniedError(FjordError):
    """This principal may not do that."""

    code = "PERMISSION_DENIED"


class UnauthenticatedError(FjordError):
    """The daemon does not know this client's key (or the handshake failed)."""

    code = "UNAUTHENTICATED"


class ResourceExhaustedError(FjordError):
    """A limit (sizes, queued jobs, peers, streams)."""

    code = "RESOURCE_EXHAUSTED"
    retryable = True


class FailedPreconditionError(FjordError):
    """The job is not in a state that allows this."""

    code = "FAILED_PRECONDITION"


class UnimplementedError(FjordError):
    """The daemon does not know the command."""

    code = "UNIMPLEMENTED"


class UnavailableError(FjordError):
    """The daemon is unreachable, shutting down, or its storage is."""

    code = "UNAVAILABLE"
    retryable = True


class InternalError(FjordError):
    """A bug or unexpected failure in the daemon, or a malformed reply."""

    code = "INTERNAL"


class DeadlineExceededError(FjordError):
    """No reply within the client's timeout (after its retries)."""

    code = "DEADLINE_EXCEEDED"
    retryable = True


class DataLossError(FjordError):
    """Downloaded bytes do not match the daemon's size or SHA-256."""

    code = "DATA_LOSS"


class JobFailedError(FjordError):
    """Raised by ``Job.wait(raise_on_failure=True)`` for a failed or cancelled job."""

    code = "JOB_FAILED"

    def __init__(self, job: "Job"):
        err = job.error
        if job.status == "cancelled":
            message = f"job {job.id} was cancelled"
        elif err is not None:
            message = f"job {job.id} failed: {err.code}: {err.message}"
        else:
            message = f"job {job.id} ended {job.status}"
        super().__init__(message, param=err.param if err is not None else None)
        self.job = job


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        UnimplementedError,
        UnavailableError,
        InternalError,
        DeadlineExceededError,
        DataLossError,
    )
}


def error_for_code(code: str, message: str, param: Optional[str] = None,
                   request_id: Optional[str] = None) -> FjordError:
    """The exception for a wire error code (unknown codes: FjordError with that code)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return FjordError(message, param=param, code=code, request_id=request_id)
    return cls(message, param=param, request_id=request_id)
