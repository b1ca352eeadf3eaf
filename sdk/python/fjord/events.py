"""A job's events as an iterator: the stored ones paged through ``job.events``,
or, followed, each new one as it happens through ``job.subscribe``
(docs/protocol.md §3, §5).

A followed stream runs on its own socket (a :class:`fjord.connection.Link`):
it sends heartbeats at the daemon's interval while it waits, and when the
daemon falls silent for ``liveness`` intervals it reconnects and subscribes
again after the last event it saw (so no event is lost or repeated), up to
``retries`` times in a row. It also subscribes again, silently, when the code
consuming the events kept it away longer than the daemon waits for a silent
peer (the daemon has then dropped the stream), and when ZeroMQ reconnected to
a restarted daemon (which knows nothing of the stream).

The stream turns the final job into an object with ``make_job`` (the Jobs
resource passes one that binds it to the client), so this module needs
nothing above the connection.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from . import _wire
from .connection import Connection, Link, format_seconds, now, raise_for_error
from .errors import DeadlineExceededError, FjordError, InternalError, UnauthenticatedError, UnavailableError
from .types import Event, Job

__all__ = ["EventStream"]

J = TypeVar("J", bound=Job)


class EventStream(Generic[J]):
    """Iterator over a job's events, oldest first (see :meth:`fjord.Jobs.events`).

    ``job`` is the final job once a followed stream has ended, or the job as it
    was when ``close()`` ended it early; None before. ``close()`` (or leaving a
    ``with`` block) ends a followed stream with CANCEL. The stream belongs to
    the thread that iterates it.
    """

    def __init__(self, connection: Connection, job_id: str, make_job: Callable[[Any], J], *,
                 follow: bool = False, after_seq: int = 0, page_size: int = 100,
                 deadline: Optional[float] = None):
        self._conn = connection
        self._make_job = make_job
        self.job_id = job_id
        self.follow = follow
        self.last_seq = after_seq
        self.page_size = page_size
        self.deadline = deadline  # now()-based; DeadlineExceededError once passed while following
        #: The final job once a followed stream has ended (or the job at close()).
        self.job: Optional[J] = None
        self._link: Optional[Link] = None
        self._rid: Optional[str] = None
        self._iter: Optional[Iterator[Event]] = None
        self._closed = False

    def __enter__(self) -> "EventStream[J]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._link is not None:
                self._link.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass

    def __iter__(self) -> Iterator[Event]:
        if self._iter is None:
            self._iter = self._follow() if self.follow else self._pages()
        return self._iter

    def __next__(self) -> Event:
        return next(iter(self))

    def _pages(self) -> Iterator[Event]:
        while not self._closed:
            body = self._conn.call("job.events", {"job_id": self.job_id, "after_seq": self.last_seq,
                                                  "limit": self.page_size}).body
            raw = body.get("events")
            if raw is not None and not isinstance(raw, list):
                raise InternalError(f"malformed reply to job.events: events is {raw!r}, not an array")
            events = [Event.from_dict(e) for e in raw or []]
            for e in events:
                if e.seq > self.last_seq:
                    self.last_seq = e.seq
                    yield e
            if not body.get("has_more") or not events:
                return

    def _subscribe(self) -> Link:
        link = self._conn.open_link()
        self._link = link
        self._rid = self._conn.request_id()
        link.send(_wire.request(self._rid, "job.subscribe", {"job_id": self.job_id, "after_seq": self.last_seq}))
        return link

    def _final_job(self, m: _wire.ServerMessage) -> J:
        return self._make_job(m.body.get("job"))

    def _follow(self) -> Iterator[Event]:
        interval, liveness = self._conn.heartbeat()
        silence_limit = interval * liveness
        failures = 0
        while not self._closed:
            link = self._subscribe()
            last_heard = last_sent = now()
            next_beat = last_heard + interval
            dropped = False  # the daemon forgot this peer while the consumer had control
            while True:
                t = now()
                if self.deadline is not None and t >= self.deadline:
                    self.close()
                    raise DeadlineExceededError(f"job {self.job_id} was not final within the wait's timeout")
                if t >= next_beat:
                    link.send(_wire.heartbeat())
                    last_sent = t
                    next_beat = t + interval
                until = min(next_beat, last_heard + silence_limit)
                if self.deadline is not None:
                    until = min(until, self.deadline)
                try:
                    m = link.receive(until)
                except UnauthenticatedError:
                    self._drop()
                    raise
                if link.handshakes > 1:
                    # ZeroMQ reconnected under us: a restarted daemon, which knows nothing of
                    # this stream (and would only answer our heartbeats). Subscribe again.
                    dropped = True
                    break
                if m is None:
                    if now() - last_heard < silence_limit:
                        continue  # time to send a heartbeat
                    break  # the daemon went silent
                last_heard = now()
                if m.type == _wire.MessageType.HEARTBEAT or m.request_id != self._rid:
                    continue
                if m.type == _wire.MessageType.FINAL:
                    self._drop()
                    raise_for_error(m, m.request_id)
                    self.job = self._final_job(m)
                    return
                ev = m.body.get("event")
                if not isinstance(ev, dict):
                    continue
                e = Event.from_dict(ev)
                if e.seq <= self.last_seq:
                    continue  # seen before a resubscribe
                self.last_seq = e.seq
                failures = 0
                yield e
                last_heard = now()  # the consumer's time is not the daemon's silence
                if self._closed:
                    return
                if last_heard - last_sent >= silence_limit:
                    # We sent nothing for as long as the daemon waits: it has dropped our
                    # stream (and would only answer heartbeats now). Subscribe again.
                    dropped = True
                    break
            # Silent daemon (or a dropped stream): reconnect and resubscribe from last_seq.
            never = not link.ever_ready
            self._drop()
            if dropped:
                continue
            if never:
                raise link.unreachable_error(silence_limit)
            failures += 1
            if failures > self._conn.retries:
                raise UnavailableError(
                    f"the daemon at {self._conn.endpoint} went silent for {format_seconds(silence_limit)} during "
                    f"the event stream of {self.job_id} ({failures} attempts)"
                )

    def _drop(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def close(self) -> None:
        """Ends a followed stream early (CANCEL); ``job`` is then the job as it is."""
        if self._closed:
            return
        self._closed = True
        link, rid = self._link, self._rid
        if link is None or rid is None:
            return
        try:
            link.send(_wire.cancel(rid))
            deadline = now() + min(self._conn.timeout_s, 5.0)
            while True:
                m = link.receive(deadline)
                if m is None:
                    break
                if m.type == _wire.MessageType.FINAL and m.request_id == rid:
                    if m.ok and isinstance(m.body.get("job"), dict):
                        self.job = self._final_job(m)
                    break
        except FjordError:
            pass
        finally:
            self._drop()
