"""
The status resource, read from the result backend:

* ``GET /celery/<task_id>/status/`` answers
  ``{"task": {"id": ..., "status": ..., "result": ...}}``;
* ``GET /celery/taskset/<taskset_id>/status/`` answers
  ``{"taskset": {"id", "total", "completed", "failed", "ready"}}`` from one
  store read, for progress bars;
* ``GET /celery/taskset/<taskset_id>/status/stream`` is its Server-Sent
  Events twin: the same document at once and on each change (the store
  read at most every ``progress_interval`` seconds), the stream ending once
  the taskset is ready; 404 for an unknown taskset;
* ``GET /`` is the health check: 200, or 503 while the daemon finds the
  store unavailable;
* ``GET /stats`` answers the daemon's figures, 200 even while the store is
  unavailable (``store_available`` says so);
* ``GET /metrics`` answers them in the Prometheus text format
  (:py:mod:`twistedq.metrics`), 200 during an outage too.

A failure's traceback is left out of the status unless the site is made
with ``tracebacks``: the URLs are public to anyone holding an id.  An id
that is not a UUID gets 404 without touching the store, and so does an
unknown taskset after one read; a store that fails or stays silent gets 503.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twistedq.backends.base import IResultBackend
from twistedq.dashboard.sse import EventStream
from twistedq.message import is_task_id
from twistedq.outcome import Outcome, status_document, taskset_status_document

__all__ = [
    "MAX_REQUEST_BODY",
    "BoundedRequest",
    "StatsResource",
    "StatusRoot",
    "StoreRead",
    "TasksetStream",
    "make_site_root",
    "make_status_site",
    "public_status_document",
    "write_json",
]

#: The longest request body the status site reads, in bytes (the
#: dashboard's actions take at most 64 KiB); a longer one is answered 413
#: and its connection closed, its body never kept.
MAX_REQUEST_BODY = 1024 * 1024

log = Logger()


def write_json(request: Request, document: Any, code: int = 200) -> None:
    """
    Answer ``document`` as JSON, never cached.
    """
    body = json.dumps(document).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


class StoreRead(Resource):
    """
    A JSON document made from one read of the store, answered 503 when the
    read fails or takes longer than ``timeout`` seconds, or at once while
    ``available()`` says the daemon found the store unavailable.  A read
    that finds nothing (``None``) answers 404 with ``missing`` as its body.
    """

    isLeaf = True

    def __init__(
        self,
        read: Callable[[], defer.Deferred[dict[str, Any] | None]],
        what: str,
        clock: IReactorTime,
        timeout: float,
        available: Callable[[], bool] | None = None,
        missing: dict[str, Any] | None = None,
    ) -> None:
        Resource.__init__(self)
        self.read = read
        self.what = what
        self.clock = clock
        self.timeout = timeout
        self.available = available
        self.missing = missing if missing is not None else {"error": f"unknown {what}"}

    def render_GET(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        if self.available is not None and not self.available():
            write_json(request, {"error": "result store unavailable"}, code=503)
            return NOT_DONE_YET
        gone: list[Any] = []
        request.notifyFinish().addErrback(gone.append)
        d = self.read()
        d.addTimeout(self.timeout, self.clock)

        def found(document: dict[str, Any] | None) -> None:
            if gone:
                return
            if document is None:
                write_json(request, self.missing, code=404)
            else:
                write_json(request, document)

        def failed(failure: Any) -> None:
            log.failure("Reading the status of {what} failed", failure, what=self.what)
            if not gone:
                write_json(request, {"error": "result store unavailable"}, code=503)

        d.addCallbacks(found, failed)
        return NOT_DONE_YET


#: The id of a taskset stream's last event, the document of the taskset
#: ready: a browser that reconnects with it as ``Last-Event-ID`` is
#: answered 204, which stops an ``EventSource`` for good.
READY_EVENT_ID = b"ready"


class TasksetStream(Resource):
    """
    The progress of a taskset as Server-Sent Events: the status document
    (``{"taskset": {...}}``) first, then again each time it changes, read
    from the store at most every ``interval`` seconds; the stream ends once
    the taskset is ready, its last event with the id ``ready`` (a
    reconnection that sends it back is answered 204).  An unknown taskset
    answers 404 as the JSON URL does, a store that fails at first 503; a failed read later is tried
    again at the next interval.  A comment every ``keep_alive`` seconds
    keeps the connection through proxies.
    """

    isLeaf = True

    def __init__(
        self,
        read: Callable[[], defer.Deferred[dict[str, Any] | None]],
        missing: dict[str, Any],
        clock: IReactorTime,
        timeout: float,
        available: Callable[[], bool] | None = None,
        interval: float = 0.5,
        keep_alive: float = 15.0,
    ) -> None:
        Resource.__init__(self)
        self.read = read
        self.missing = missing
        self.clock = clock
        self.timeout = timeout
        self.available = available
        self.interval = interval
        self.keep_alive = keep_alive

    def _read(self) -> defer.Deferred[dict[str, Any] | None]:
        d = self.read()
        d.addTimeout(self.timeout, self.clock)
        return d

    def render_GET(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        if request.getHeader(b"last-event-id") == READY_EVENT_ID:
            # The browser reconnects after the stream ended: it has the
            # final document already; 204 stops an EventSource for good.
            request.setResponseCode(204)
            return b""
        if self.available is not None and not self.available():
            write_json(request, {"error": "result store unavailable"}, code=503)
            return NOT_DONE_YET
        gone: list[Any] = []
        request.notifyFinish().addErrback(gone.append)

        def first(document: dict[str, Any] | None) -> None:
            if gone:
                return
            if document is None:
                write_json(request, self.missing, code=404)
                return
            stream = EventStream(request)
            if document["taskset"]["ready"]:
                stream.send(document, event_id=READY_EVENT_ID.decode())
                stream.close()
            else:
                stream.send(document)
                self._follow(stream, document)

        def failed(failure: Any) -> None:
            log.failure("Reading the progress of a taskset failed", failure)
            if not gone:
                write_json(request, {"error": "result store unavailable"}, code=503)

        self._read().addCallbacks(first, failed)
        return NOT_DONE_YET

    def _follow(self, stream: EventStream, sent: dict[str, Any]) -> None:
        """
        Read again every interval while the client stays; send what
        changed; end when ready.
        """
        last_document, last_at = sent, self.clock.seconds()

        def again() -> None:
            if stream.open:
                self._read().addCallbacks(got, lambda failure: schedule())

        def got(document: dict[str, Any] | None) -> None:
            nonlocal last_document, last_at
            if not stream.open:
                return
            now = self.clock.seconds()
            if document is not None and document != last_document:
                last_document, last_at = document, now
                if document["taskset"]["ready"]:
                    stream.send(document, event_id=READY_EVENT_ID.decode())
                    stream.close()
                    return
                stream.send(document)
            elif now - last_at >= self.keep_alive:
                last_at = now
                stream.comment()
            schedule()

        def schedule() -> None:
            if stream.open:
                self.clock.callLater(self.interval, again)

        schedule()


class _CelerySegment(Resource):
    """
    ``/celery/<task_id>/status/`` and ``/celery/taskset/<id>/status/``.
    """

    def __init__(
        self,
        backend: IResultBackend,
        clock: IReactorTime,
        timeout: float,
        seed_states: bool,
        available: Callable[[], bool] | None = None,
        tracebacks: bool = False,
        progress_interval: float = 0.5,
    ) -> None:
        Resource.__init__(self)
        self.backend = backend
        self.clock = clock
        self.timeout = timeout
        self.seed_states = seed_states
        self.available = available
        self.tracebacks = tracebacks
        self.progress_interval = progress_interval

    def _take_id(self, path: bytes, request: Request) -> str | None:
        """
        The id in ``path`` if it is a UUID followed by ``status``.
        """
        try:
            text = path.decode("ascii")
        except UnicodeDecodeError:
            return None
        prepath, postpath = request.prepath, request.postpath
        if prepath is None or postpath is None:  # only before the request is received
            return None
        if not is_task_id(text) or postpath[:1] != [b"status"]:
            return None
        prepath.append(postpath.pop(0))
        return text

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"taskset" and request.postpath:
            taskset_id = self._take_id(request.postpath.pop(0), request)
            if taskset_id is None:
                return pages.notFound()

            def read_taskset() -> defer.Deferred[dict[str, Any] | None]:
                d = self.backend.get_taskset(taskset_id)
                return d.addCallback(
                    lambda state: (
                        None if state is None else taskset_status_document(taskset_id, state)
                    )
                )

            missing = {"error": "unknown taskset", "taskset": {"id": taskset_id}}
            postpath = request.postpath or []
            if postpath[:1] == [b"stream"]:
                request.prepath.append(postpath.pop(0))  # type: ignore[union-attr]
                return TasksetStream(
                    read_taskset,
                    missing,
                    self.clock,
                    self.timeout,
                    self.available,
                    interval=self.progress_interval,
                )
            return StoreRead(
                read_taskset,
                f"taskset {taskset_id}",
                self.clock,
                self.timeout,
                self.available,
                missing=missing,
            )
        task_id = self._take_id(path, request)
        if task_id is None:
            return pages.notFound()

        def read_task() -> defer.Deferred[dict[str, Any] | None]:
            d = self.backend.get_result(task_id)
            return d.addCallback(
                lambda data: public_status_document(
                    Outcome.from_bytes(task_id, data), self.seed_states, self.tracebacks
                )
            )

        return StoreRead(read_task, f"task {task_id}", self.clock, self.timeout, self.available)


class StatusRoot(Resource):
    """
    The root of the status site.
    """

    def __init__(
        self,
        backend: IResultBackend,
        clock: IReactorTime,
        timeout: float,
        seed_states: bool = False,
        available: Callable[[], bool] | None = None,
        tracebacks: bool = False,
        progress_interval: float = 0.5,
        unhealthy: Callable[[], str | None] | None = None,
    ) -> None:
        Resource.__init__(self)
        self.available = available
        self.unhealthy = unhealthy
        self.putChild(
            b"celery",
            _CelerySegment(
                backend, clock, timeout, seed_states, available, tracebacks, progress_interval
            ),
        )
        self.putChild(b"", self)

    def render_GET(self, request: Request) -> Any:
        if self.available is not None and not self.available():
            write_json(
                request, {"service": "twistedq", "error": "result store unavailable"}, code=503
            )
            return NOT_DONE_YET
        problem = self.unhealthy() if self.unhealthy is not None else None
        if problem is not None:
            write_json(request, {"service": "twistedq", "error": problem}, code=503)
        else:
            write_json(request, {"service": "twistedq"})
        return NOT_DONE_YET


class StatsResource(Resource):
    """
    ``GET /stats``: the daemon's figures (pool, dispatcher) as JSON, always
    with status 200, so that an operator reads them during an outage too:
    ``store_available`` says whether the daemon finds the result store
    available, and ``store_unavailable_since`` since when it does not (ISO
    8601, UTC; null while it is available, or when unknown).
    """

    isLeaf = True

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        available: Callable[[], bool] | None = None,
        down_since: Callable[[], float | None] | None = None,
    ) -> None:
        Resource.__init__(self)
        self.stats = stats
        self.available = available
        self.down_since = down_since

    def render_GET(self, request: Request) -> Any:
        document = dict(self.stats())
        available = self.available is None or self.available()
        since = None
        if not available and self.down_since is not None:
            seconds = self.down_since()
            if seconds is not None:
                since = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()
        document["store_available"] = available
        document["store_unavailable_since"] = since
        write_json(request, document)
        return NOT_DONE_YET


def public_status_document(
    outcome: Outcome, seed_states: bool = False, tracebacks: bool = False
) -> dict[str, Any]:
    """
    :py:func:`~twistedq.outcome.status_document` as the public status URLs
    answer it: a failure's ``traceback`` is left out unless ``tracebacks``
    (its type, ``exc``, and message, ``result``, stay).
    """
    document = status_document(outcome, seed_states)
    if not tracebacks:
        document["task"].pop("traceback", None)
    return document


def make_site_root(
    backend: IResultBackend,
    clock: IReactorTime,
    timeout: float = 5.0,
    seed_states: bool = False,
    stats: Callable[[], dict[str, Any]] | None = None,
    available: Callable[[], bool] | None = None,
    down_since: Callable[[], float | None] | None = None,
    tracebacks: bool = False,
    metrics: IResource | None = None,
    dashboard: IResource | None = None,
    progress_interval: float = 0.5,
    unhealthy: Callable[[], str | None] | None = None,
) -> Resource:
    """
    The resource tree the daemon serves.  A store that does not answer
    within ``timeout`` seconds gets the request a 503.  With
    ``seed_states``, SUCCESS is reported as ``DONE``.  With ``tracebacks``,
    a failure's status carries its traceback.  With ``stats``, ``/stats``
    answers what it returns.  While ``available()`` is false (the daemon
    found the store unavailable), ``/`` and the status URLs answer 503;
    ``/stats`` answers 200 with ``store_available`` false and, from
    ``down_since()`` (seconds since the epoch), since when.  With
    ``metrics`` (a :py:class:`~twistedq.metrics.MetricsResource`),
    ``/metrics`` serves it.  With ``dashboard`` (a
    :py:class:`~twistedq.dashboard.resources.DashboardResource`),
    ``/dashboard/`` serves it.  The progress stream of a taskset reads the
    store at most every ``progress_interval`` seconds.  While
    ``unhealthy()`` returns a text (e.g. the daemon has not been consuming
    its queues for a while), ``/`` answers 503 with it as ``error``.
    """
    root = StatusRoot(
        backend, clock, timeout, seed_states, available, tracebacks, progress_interval, unhealthy
    )
    if stats is not None:
        root.putChild(b"stats", StatsResource(stats, available, down_since))
    if metrics is not None:
        root.putChild(b"metrics", metrics)
    if dashboard is not None:
        root.putChild(b"dashboard", dashboard)
    return root


class BoundedRequest(Request):
    """
    A request whose body may not pass :py:data:`MAX_REQUEST_BODY` bytes:
    the status site has no login, and Twisted keeps (and, for a form,
    parses) any body it is sent.  A longer one, by its ``Content-Length``
    or as it arrives, is answered ``413`` at once, its connection closed,
    and nothing of it is kept or rendered.
    """

    refused = False
    _body_size = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_REQUEST_BODY:
            self._refuse()
            length = 0
        Request.gotLength(self, length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._body_size += len(data)
        if self._body_size > MAX_REQUEST_BODY:
            self._refuse()
            return
        Request.handleContentChunk(self, data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        Request.requestReceived(self, command, path, version)

    def _refuse(self) -> None:
        self.refused = True
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        transport.loseConnection()


def make_status_site(root: IResource) -> Site:
    """
    The daemon's status site over ``root``: bodies bounded
    (:py:class:`BoundedRequest`), requests not logged one by one.
    """
    site = Site(root, requestFactory=BoundedRequest)
    site.noisy = False
    return site
