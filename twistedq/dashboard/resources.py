"""
The dashboard on the daemon's status site (twisted.web), mounted at
``/dashboard/``:

* ``GET dashboard/``: the page (``static/dashboard.html``);
* ``GET dashboard/config``: what the page may offer (the actions, when an
  operator token is configured);
* ``GET dashboard/state``: the snapshot as JSON;
* ``GET dashboard/stream``: Server-Sent Events, the snapshot first
  (event ``snapshot``), then the sections that changed (event ``patch``),
  with keep-alive comments;
* ``GET dashboard/failure/<id>``: a task's status, with its traceback for
  a request carrying the operator token (or for everyone when the site
  shows tracebacks);
* ``GET dashboard/deadletters``: the first dead letters (operator token);
* ``POST dashboard/actions/<name>``: an action, answered 403 unless the
  request carries the operator token in the ``X-Twistedq-Token`` header.

Every URL the page uses is relative, so the site works behind a reverse
proxy that mounts it under a path prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import pages, static
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from twistedq.backends.base import IResultBackend
from twistedq.dashboard.actions import TOKEN_HEADER, ActionRefused, OperatorActions
from twistedq.dashboard.sse import EventStream
from twistedq.dashboard.watch import ClusterWatch
from twistedq.message import is_task_id
from twistedq.outcome import Outcome
from twistedq.web import write_json

__all__ = ["STATIC", "DashboardResource", "failure_document"]

log = Logger()

#: The folder of the page, its style sheet and its script.
STATIC = Path(__file__).parent / "static"
#: Largest body of an action request.
MAX_ACTION_BODY = 64 * 1024


def failure_document(outcome: Outcome, traceback: bool) -> dict[str, Any]:
    """
    A task's status as the dashboard's failure panel shows it: its
    exception's type and message, and its traceback only if ``traceback``
    (an operator asked, or the site shows tracebacks to all).
    """
    exc = outcome.exc or {}
    return {
        "id": outcome.task_id,
        "status": outcome.status,
        "task": outcome.task,
        "exception": exc.get("type"),
        "message": exc.get("message"),
        "traceback": outcome.traceback if traceback else None,
        "traceback_hidden": not traceback,
    }


def _answer(request: Request, d: defer.Deferred[Any], what: str) -> Any:
    """
    Answer the result of ``d`` as JSON, or 502 if it fails.
    """
    gone: list[Any] = []
    request.notifyFinish().addErrback(gone.append)

    def done(document: Any) -> None:
        if not gone:
            write_json(request, document)

    def failed(failure: Any) -> None:
        log.failure("The dashboard's {what} failed", failure, what=what)
        if not gone:
            write_json(request, {"error": f"{what} failed: {failure.getErrorMessage()}"}, 502)

    d.addCallbacks(done, failed)
    return NOT_DONE_YET


class _StreamWatcher:
    """
    A watcher writing to one SSE response.
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream

    def send(self, message: dict[str, Any]) -> None:
        self.stream.send(message, event=message["kind"])

    def keep_alive(self) -> None:
        self.stream.comment()


#: What the page may load and do: its own script and style sheet, requests
#: to its own site, and nothing framed, nothing inline.
PAGE_HEADERS = {
    b"content-security-policy": b"default-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        for name, value in PAGE_HEADERS.items():
            request.setHeader(name, value)
        return (STATIC / "dashboard.html").read_bytes()


class _StaticFiles(static.File):
    """
    The page's script and style sheet: files only (no listing of the
    folder), and a name Twisted cannot open (a null byte) is not found,
    not an error.
    """

    def directoryListing(self) -> IResource:
        return pages.notFound()

    def getChild(self, path: bytes, request: Request) -> IResource:
        if b"\x00" in path or b"/" in path:
            return pages.notFound()
        child: IResource = static.File.getChild(self, path, request)
        return child

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        return static.File.render_GET(self, request)


class _Config(Resource):
    isLeaf = True

    def __init__(self, actions: OperatorActions | None) -> None:
        Resource.__init__(self)
        self.actions = actions

    def render_GET(self, request: Request) -> Any:
        offered = self.actions.offered() if self.actions is not None else []
        write_json(
            request,
            {"actions": offered, "token_header": TOKEN_HEADER.decode(), "csrf_header": None},
        )
        return NOT_DONE_YET


class _State(Resource):
    isLeaf = True

    def __init__(self, watch: ClusterWatch, clock: IReactorTime, timeout: float) -> None:
        Resource.__init__(self)
        self.watch = watch
        self.clock = clock
        self.timeout = timeout

    def render_GET(self, request: Request) -> Any:
        d = self.watch.refresh()
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(lambda _: None)
        return _answer(request, d.addCallback(lambda _: self.watch.snapshot()), "snapshot")


class _Stream(Resource):
    isLeaf = True

    def __init__(self, watch: ClusterWatch) -> None:
        Resource.__init__(self)
        self.watch = watch

    def render_GET(self, request: Request) -> Any:
        watcher = _StreamWatcher(EventStream(request))
        self.watch.watch(watcher)
        request.notifyFinish().addBoth(lambda _: self.watch.unwatch(watcher))
        return NOT_DONE_YET


def _token_allowed(actions: OperatorActions | None, request: Request) -> bool:
    if actions is None:
        return False
    return actions.allows(request.getHeader(TOKEN_HEADER))


class _Failure(Resource):
    isLeaf = True

    def __init__(
        self,
        backend: IResultBackend,
        actions: OperatorActions | None,
        tracebacks: bool,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        Resource.__init__(self)
        self.backend = backend
        self.actions = actions
        self.tracebacks = tracebacks
        self.clock = clock
        self.timeout = timeout

    def render_GET(self, request: Request) -> Any:
        postpath = request.postpath or []
        task_id = postpath[0].decode("ascii", "replace") if len(postpath) == 1 else ""
        if not is_task_id(task_id):
            return pages.notFound().render(request)
        show = self.tracebacks or _token_allowed(self.actions, request)
        d = self.backend.get_result(task_id)
        d.addTimeout(self.timeout, self.clock)

        def document(data: bytes | None) -> dict[str, Any]:
            return failure_document(Outcome.from_bytes(task_id, data), show)

        return _answer(request, d.addCallback(document), "read of a failure")


class _DeadLetters(Resource):
    isLeaf = True

    def __init__(self, actions: OperatorActions) -> None:
        Resource.__init__(self)
        self.actions = actions

    def render_GET(self, request: Request) -> Any:
        if not _token_allowed(self.actions, request) or self.actions.dead_letters is None:
            write_json(request, {"error": "the operator token is needed"}, 403)
            return NOT_DONE_YET
        return _answer(request, self.actions.dead_letters(50), "read of the dead letters")


class _Actions(Resource):
    isLeaf = True

    def __init__(self, actions: OperatorActions | None) -> None:
        Resource.__init__(self)
        self.actions = actions

    def render_POST(self, request: Request) -> Any:
        postpath = request.postpath or []
        name = postpath[0].decode("ascii", "replace") if len(postpath) == 1 else ""
        if self.actions is None or not _token_allowed(self.actions, request):
            write_json(request, {"error": "the operator token is needed"}, 403)
            return NOT_DONE_YET
        assert request.content is not None
        body = request.content.read(MAX_ACTION_BODY + 1)
        try:
            if len(body) > MAX_ACTION_BODY:
                raise ActionRefused("the request is too large")
            arguments = json.loads(body or b"{}")
            if not isinstance(arguments, dict):
                raise ActionRefused("the body must be a JSON object")
            d = self.actions.run(name, arguments)
        except (ActionRefused, ValueError) as e:
            write_json(request, {"error": str(e)}, 400)
            return NOT_DONE_YET
        log.info("Dashboard action {name} {arguments}", name=name, arguments=arguments)
        return _answer(request, d, f"action {name}")


class DashboardResource(Resource):
    """
    ``/dashboard/``: the page, its data and its actions.

    :param watch: the live state of the cluster.
    :param backend: where failures are read.
    :param actions: what an operator holding the token may do; ``None``
        keeps the dashboard read-only.
    :param tracebacks: show a failure's traceback without the token.
    """

    def __init__(
        self,
        watch: ClusterWatch,
        backend: IResultBackend,
        clock: IReactorTime,
        actions: OperatorActions | None = None,
        tracebacks: bool = False,
        timeout: float = 5.0,
    ) -> None:
        Resource.__init__(self)
        self.watch = watch
        self.putChild(b"", _Page())
        self.putChild(b"config", _Config(actions))
        self.putChild(b"state", _State(watch, clock, timeout))
        self.putChild(b"stream", _Stream(watch))
        self.putChild(b"static", _StaticFiles(str(STATIC)))
        self.putChild(b"failure", _Failure(backend, actions, tracebacks, clock, timeout))
        self.putChild(b"actions", _Actions(actions))
        if actions is not None:
            self.putChild(b"deadletters", _DeadLetters(actions))

    def render_GET(self, request: Request) -> bytes:
        # ".../dashboard" without its slash: the page's relative URLs need it.
        segment = (request.prepath or [b"dashboard"])[-1]
        request.redirect(segment + b"/")
        return b""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()
