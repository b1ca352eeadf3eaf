"""fjord.Client: the Python SDK for fjordd, written from docs/protocol.md.

    import fjord
    client = fjord.Client("tcp://gpu-node-7:7700",
                          server_public_key="<daemon's Z85 key>",
                          secret_key="~/.fjord/me.key")
    f = client.files.upload("train.jsonl")
    job = client.jobs.create(model="llama-3.2-1b", training_file=f.id)
    job = job.wait(progress=True)
    client.adapters.download(job.id, "my-adapter")

A Client is a :class:`fjord.connection.Connection` (one socket for calls,
serialised by a lock, retried as that module says) and the resources over
it: ``client.files`` (:mod:`fjord.files`), ``client.jobs`` (:mod:`fjord.jobs`),
``client.adapters`` (:mod:`fjord.adapters`), ``client.models``
(:mod:`fjord.models`), ``client.evaluations`` (:mod:`fjord.evaluations`). A Client may be shared by threads; a followed event
stream (:mod:`fjord.events`) has its own socket and belongs to the thread
that iterates it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from . import _wire
from .adapters import Adapters
from .config import Settings, resolve
from .connection import Connection, check_retry_settings
from .errors import InvalidArgumentError
from .evaluations import Evaluations
from .events import EventStream
from .files import Files
from .jobs import BoundJob, BoundJobPage, Jobs
from .keys import valid_z85_key
from .models import Models
from .types import PathLike, PingInfo

# Files, Jobs, Adapters, Models and EventStream were defined here before the
# resources had modules of their own; they stay importable from here.
__all__ = ["Client", "EventStream", "Files", "Jobs", "Adapters", "Models", "Evaluations", "BoundJob", "BoundJobPage"]


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
        secret_key: Optional[PathLike] = None,
        keys_file: Optional[PathLike] = None,
        timeout: Optional[float] = None,
        retries: int = 2,
        heartbeat_interval: Optional[float] = None,
        heartbeat_liveness: Optional[int] = None,
        config_file: Optional[PathLike] = None,
    ):
        check_retry_settings(retries, heartbeat_interval, heartbeat_liveness)
        if secret_key is not None and keys_file is not None:
            raise InvalidArgumentError("pass secret_key or keys_file, not both", param="keys_file")
        secret: Optional[str] = os.fspath(secret_key) if secret_key is not None else None
        if secret is not None and not valid_z85_key(secret):
            secret = os.path.expanduser(secret)  # a key file
        settings = resolve(
            endpoint=endpoint,
            server_public_key=server_public_key,
            keys=os.path.expanduser(os.fspath(keys_file)) if keys_file is not None else None,
            timeout_s=timeout,
            config_file=os.fspath(config_file) if config_file is not None else None,
            public_key=public_key,
            secret_key=secret,
        )
        self._conn = Connection(settings, retries=retries, heartbeat_interval=heartbeat_interval,
                                heartbeat_liveness=heartbeat_liveness)
        self.files = Files(self._conn)
        self.adapters = Adapters(self._conn)
        self.jobs = Jobs(self._conn, self.files, self.adapters)
        self.models = Models(self._conn)
        self.evaluations = Evaluations(self._conn, self.files, self.jobs)

    # The connection's settings, as attributes of the Client (they always were).
    @property
    def settings(self) -> Settings:
        return self._conn.settings

    @property
    def endpoint(self) -> str:
        return self._conn.endpoint

    @property
    def timeout(self) -> float:
        """Seconds to wait for each reply; may be changed."""
        return self._conn.timeout_s

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._conn.timeout_s = seconds

    @property
    def retries(self) -> int:
        """Extra attempts after a timeout; may be changed."""
        return self._conn.retries

    @retries.setter
    def retries(self, n: int) -> None:
        self._conn.retries = n

    @property
    def heartbeat_interval(self) -> Optional[float]:
        return self._conn.heartbeat_interval

    @heartbeat_interval.setter
    def heartbeat_interval(self, seconds: Optional[float]) -> None:
        self._conn.heartbeat_interval = seconds

    @property
    def heartbeat_liveness(self) -> Optional[int]:
        return self._conn.heartbeat_liveness

    @heartbeat_liveness.setter
    def heartbeat_liveness(self, n: Optional[int]) -> None:
        self._conn.heartbeat_liveness = n

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"fjord.Client({self.endpoint!r}, curve={self.settings.server_public_key is not None})"

    def close(self) -> None:
        """Closes the connection (tells the daemon with DISCONNECT)."""
        self._conn.close()

    def call(self, command: str, body: Optional[Dict[str, Any]] = None,
             data: Optional[bytes] = None) -> _wire.ServerMessage:
        """One request, one FINAL reply (retried as :mod:`fjord.connection` says).

        Raises the :class:`fjord.FjordError` subclass for the reply's error code.
        Meant for commands this class does not wrap.
        """
        return self._conn.call(command, body, data)

    def ping(self) -> PingInfo:
        """The daemon's identity, this client's principal and the limits."""
        return self._conn.ping()
