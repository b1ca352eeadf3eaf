"""The connection to one fjordd: sockets, CURVE, retries, heartbeats, and the
one ``call`` every resource goes through (docs/protocol.md §1-§4).

:class:`Connection` holds one ZeroMQ DEALER socket (a :class:`Link`) for calls;
each followed event stream opens a Link of its own (:mod:`fjord.events`).
Calls are serialised by a lock, so a Connection may be shared by threads.

Timeouts and retries (the "lazy pirate" of the ZeroMQ guide): a call waits
``timeout_s`` seconds for its reply; if the daemon was connected but did not
answer, the connection opens a fresh socket and sends the request again, at
most ``retries`` times. Every command is safe to repeat: ``jobs.create``
always carries an idempotency key that the retries reuse, so a retry never
makes a second job; a ``files.delete`` or ``jobs.delete`` whose reply was lost
raises NotFoundError on the retry (the file or job is gone all the same). If
nothing ever answered the socket (no fjordd at that endpoint) the call fails
after one timeout with :class:`fjord.UnavailableError` ("... is fjordd
running?").

This module knows the wire (:mod:`fjord._wire`) and the settings
(:mod:`fjord.config`), not the resources: it imports no jobs, files or
adapters.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import _wire
from .config import Settings
from .errors import (
    DeadlineExceededError,
    FjordError,
    InternalError,
    InvalidArgumentError,
    UnauthenticatedError,
    UnavailableError,
    error_for_code,
)
from .types import PingInfo

__all__ = ["Connection", "Link", "NoConnection", "check_retry_settings", "raise_for_error", "now", "format_seconds"]

_MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def now() -> float:
    """The clock of every deadline here (monotonic seconds)."""
    return time.monotonic()


def format_seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def check_retry_settings(retries: int, heartbeat_interval: Optional[float],
                         heartbeat_liveness: Optional[int]) -> None:
    """InvalidArgumentError unless retries >= 0 and a given interval and liveness > 0."""
    if retries < 0 or (heartbeat_interval is not None and heartbeat_interval <= 0) or (
            heartbeat_liveness is not None and heartbeat_liveness <= 0):
        raise InvalidArgumentError("retries must be >= 0, heartbeat_interval and heartbeat_liveness > 0")


class NoConnection(UnavailableError):
    """A send that found no connection to queue on before its deadline."""


class Link:
    """One DEALER socket (CURVE when the settings have a server key) and its monitor.

    Not thread-safe: one owner at a time (the Connection under its lock, or one
    event stream). InvalidArgumentError for an endpoint ZeroMQ refuses, or CURVE
    settings without client keys.
    """

    def __init__(self, settings: Settings, context: "zmq.Context[Any]"):
        self.settings = settings
        self.endpoint = settings.endpoint
        self.closed = True  # until the sockets exist
        self.transport_up = False  # a TCP/ipc connection exists now
        self.ever_transport = False
        self.ready = False  # the ZMTP/CURVE handshake succeeded and the peer is still there
        self.ever_ready = False
        self.handshakes = 0  # > 1: ZeroMQ reconnected (the daemon restarted: it has forgotten our streams)
        keys = settings.client_keys
        if settings.server_public_key and keys is None:
            raise InvalidArgumentError("a server public key needs this client's keys too", param="keys")
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if settings.server_public_key and keys is not None:
            self.socket.curve_serverkey = settings.server_public_key.encode("ascii")
            self.socket.curve_publickey = keys.public_key.encode("ascii")
            self.socket.curve_secretkey = keys.secret_key.encode("ascii")
        self.monitor = self.socket.get_monitor_socket(_MONITOR_EVENTS)
        self.closed = False
        try:
            self.socket.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.close(disconnect=False)
            raise InvalidArgumentError(f"cannot connect to '{self.endpoint}': {e}", param="endpoint") from None
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def close(self, disconnect: bool = True) -> None:
        """Closes the sockets; with ``disconnect`` and a live peer, tells the
        daemon first (DISCONNECT: it forgets this peer and its streams now)."""
        if self.closed:
            return
        self.closed = True
        try:
            if disconnect and self.ready:
                self.socket.setsockopt(zmq.LINGER, 200)
                self.socket.send_multipart(_wire.disconnect(), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        self.socket.close()

    def send(self, frames: List[bytes], deadline: Optional[float] = None) -> None:
        """Sends by `deadline` (default: the timeout from now). While the socket has no
        connection to queue on (still connecting, or dropped by the daemon after a failed
        handshake) it waits for one, or for the monitor to say why there is none
        (UnauthenticatedError); NoConnection when neither came in time."""
        if deadline is None:
            deadline = now() + self.settings.timeout_s
        while True:
            try:
                self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError as e:
                raise UnavailableError(f"send to {self.endpoint}: {e}") from None
            wait_ms = int((deadline - now()) * 1000)
            if wait_ms <= 0:
                raise NoConnection(f"no connection to {self.endpoint} to send on within the timeout")
            waiting = zmq.Poller()
            waiting.register(self.socket, zmq.POLLOUT)
            waiting.register(self.monitor, zmq.POLLIN)
            events = dict(waiting.poll(min(wait_ms, 50)))
            if self.monitor in events:
                self._drain_monitor()

    def _drain_monitor(self) -> None:
        while True:
            try:
                self._monitor_event()
            except zmq.Again:
                return

    def _monitor_event(self) -> None:
        ev = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
        kind = ev["event"]
        if kind == zmq.EVENT_CONNECTED:
            self.transport_up = self.ever_transport = True
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.ready = self.ever_ready = True
            self.handshakes += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            self.transport_up = self.ready = False
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise UnauthenticatedError(
                f"the daemon at {self.endpoint} refused this client's CURVE key (ZAP status {ev['value']}): "
                "the key is not in its keys file"
            )
        elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            hint = (
                " (the daemon requires CURVE: set server_public_key and client keys)"
                if not self.settings.server_public_key
                else " (wrong server public key, or the daemon does not use CURVE)"
            )
            raise UnauthenticatedError(f"security handshake with {self.endpoint} failed{hint}")

    def receive(self, deadline: float) -> Optional[_wire.ServerMessage]:
        """The next message from the daemon, or None at the deadline. InternalError
        for a message that does not decode; UnauthenticatedError when the handshake
        failed."""
        while True:
            wait_ms = max(0, int((deadline - now()) * 1000 + 0.999))
            events = dict(self.poller.poll(wait_ms))
            if self.monitor in events:
                self._drain_monitor()
            if self.socket in events:
                try:
                    frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self.ready = self.ever_ready = True  # a reply proves the connection
                try:
                    return _wire.decode_server_message(frames)
                except _wire.WireError as e:
                    raise InternalError(f"malformed reply from {self.endpoint}: {e.message}") from None
            if now() >= deadline:
                return None

    def unreachable_error(self, waited: float) -> FjordError:
        """The error for a wait that ended without this socket ever being ready."""
        if self.ever_transport:
            return UnavailableError(
                f"connected to {self.endpoint} but no fjord handshake within {format_seconds(waited)}: "
                + ("is the server public key right, and is it fjordd?" if self.settings.server_public_key
                   else "is it fjordd, and does it allow plain connections?")
            )
        return UnavailableError(f"no reply from {self.endpoint} within {format_seconds(waited)}: is fjordd running?")


def raise_for_error(m: _wire.ServerMessage, request_id: Optional[str] = None) -> None:
    """Raises the FjordError subclass of an error reply; nothing for an OK one."""
    if not m.ok:
        code, message, param = _wire.error_of(m)
        raise error_for_code(code, message, param, request_id)


class Connection:
    """Calls to one fjordd over one socket, retried (see the module doc).

    Args:
        settings: where and how to connect (:func:`fjord.config.resolve`).
        retries: extra attempts after a timeout on a live connection.
        heartbeat_interval, heartbeat_liveness: for followed streams; None: the
            daemon's (asked with ``ping`` once per Connection).

    InvalidArgumentError for a negative ``retries`` or a non-positive interval
    or liveness. Connecting is asynchronous: an unreachable daemon shows at the
    first call.
    """

    def __init__(self, settings: Settings, *, retries: int = 2, heartbeat_interval: Optional[float] = None,
                 heartbeat_liveness: Optional[int] = None, context: "Optional[zmq.Context[Any]]" = None):
        check_retry_settings(retries, heartbeat_interval, heartbeat_liveness)
        self.settings = settings
        self.timeout_s = settings.timeout_s
        self.retries = retries
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self._context = context or zmq.Context.instance()
        self._lock = threading.RLock()
        self._link: Optional[Link] = None
        self._id_prefix = secrets.token_hex(4)
        self._next_id = itertools.count(1)
        self._daemon_heartbeat: Optional[Tuple[float, int]] = None

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    def close(self) -> None:
        """Closes the calls' socket (tells the daemon with DISCONNECT). A later
        call opens a new one."""
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None

    def open_link(self) -> Link:
        """A new socket of its own (for a followed stream); the caller closes it."""
        return Link(self.settings, self._context)

    def request_id(self) -> str:
        """A request id unique on this Connection."""
        return f"{self._id_prefix}-{next(self._next_id)}"

    def call(self, command: str, body: Optional[Dict[str, Any]] = None,
             data: Optional[bytes] = None) -> _wire.ServerMessage:
        """One request, one FINAL reply (retried as the module doc says).

        Raises the :class:`fjord.FjordError` subclass for the reply's error code,
        DeadlineExceededError after the retries, UnavailableError when nothing ever
        answered, UnauthenticatedError when the daemon refused the key.
        """
        body = body or {}
        with self._lock:
            for _ in range(self.retries + 1):
                if self._link is None:
                    self._link = self.open_link()
                link = self._link
                rid = self.request_id()
                deadline = now() + self.timeout_s
                try:
                    link.send(_wire.request(rid, command, body, data), deadline)
                    while True:
                        m = link.receive(deadline)
                        if m is None:
                            break
                        if m.type == _wire.MessageType.FINAL and m.request_id == rid:
                            raise_for_error(m, rid)
                            return m
                        if m.type == _wire.MessageType.FINAL and m.request_id == _wire.UNKNOWN_REQUEST_ID:
                            raise_for_error(m)
                except UnauthenticatedError:
                    self._drop_link()
                    raise
                except NoConnection:
                    pass  # a send that found no connection in time is a timeout like a missing reply
                # Timed out.
                if not link.ever_ready:
                    err = link.unreachable_error(self.timeout_s)
                    self._drop_link()
                    raise err
                self._drop_link()  # lazy pirate: a fresh socket for the retry
            raise DeadlineExceededError(
                f"no reply from {self.endpoint} to '{command}' within {format_seconds(self.timeout_s)}, "
                f"{self.retries + 1} attempts"
            )

    def _drop_link(self) -> None:
        if self._link is not None:
            self._link.close(disconnect=False)
            self._link = None

    def ping(self) -> PingInfo:
        """The daemon's identity, this client's principal and the limits."""
        return PingInfo.from_dict(self.call("ping").body)

    def heartbeat(self) -> Tuple[float, int]:
        """(interval in seconds, liveness) for streams: the given values, else the
        daemon's, asked with ``ping`` once."""
        if self.heartbeat_interval is not None and self.heartbeat_liveness is not None:
            return self.heartbeat_interval, self.heartbeat_liveness
        if self._daemon_heartbeat is None:
            info = self.ping()
            self._daemon_heartbeat = (
                (info.heartbeat_interval_ms or _wire.DEFAULT_HEARTBEAT_INTERVAL_MS) / 1000.0,
                info.liveness or _wire.HEARTBEAT_LIVENESS,
            )
        interval, liveness = self._daemon_heartbeat
        return (self.heartbeat_interval or interval, self.heartbeat_liveness or liveness)
