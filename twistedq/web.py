"""
The status resource: ``GET /celery/<task_id>/status/`` answers
``{"task": {"id": ..., "status": ..., "result": ...}}`` as JSON, read from the
result backend.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from twistedq.backends.base import IResultBackend
from twistedq.message import is_task_id
from twistedq.outcome import Outcome, status_document

__all__ = ["StatusRoot", "TaskStatus", "make_site_root"]

log = Logger()


def _write_json(request: Request, document: Any, code: int = 200) -> None:
    body = json.dumps(document).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


class TaskStatus(Resource):
    """
    The status of one task, read from the backend on every request.
    """

    isLeaf = True

    def __init__(
        self, backend: IResultBackend, task_id: str, clock: IReactorTime, timeout: float
    ) -> None:
        Resource.__init__(self)
        self.backend = backend
        self.task_id = task_id
        self.clock = clock
        self.timeout = timeout

    def render_GET(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        gone: list[Any] = []
        request.notifyFinish().addErrback(gone.append)
        d = self.backend.get_result(self.task_id)
        d.addTimeout(self.timeout, self.clock)

        def found(data: bytes | None) -> None:
            if not gone:
                outcome = Outcome.from_bytes(self.task_id, data)
                _write_json(request, status_document(outcome))

        def failed(failure: Any) -> None:
            log.failure("Reading the status of {id} failed", failure, id=self.task_id)
            if not gone:
                _write_json(request, {"error": "result store unavailable"}, code=503)

        d.addCallbacks(found, failed)
        return NOT_DONE_YET


class _TaskSegment(Resource):
    """
    ``/celery/<task_id>/...``: refuses anything that is not a UUID without
    touching the store.
    """

    def __init__(self, backend: IResultBackend, clock: IReactorTime, timeout: float) -> None:
        Resource.__init__(self)
        self.backend = backend
        self.clock = clock
        self.timeout = timeout

    def getChild(self, path: bytes, request: Request) -> IResource:
        try:
            task_id = path.decode("ascii")
        except UnicodeDecodeError:
            return pages.notFound()
        if not is_task_id(task_id) or request.postpath[:1] != [b"status"]:
            return pages.notFound()
        request.prepath.append(request.postpath.pop(0))
        return TaskStatus(self.backend, task_id, self.clock, self.timeout)


class StatusRoot(Resource):
    """
    The root of the status site.
    """

    def __init__(self, backend: IResultBackend, clock: IReactorTime, timeout: float) -> None:
        Resource.__init__(self)
        self.putChild(b"celery", _TaskSegment(backend, clock, timeout))
        self.putChild(b"", self)

    def render_GET(self, request: Request) -> Any:
        _write_json(request, {"service": "twistedq"})
        return NOT_DONE_YET


def make_site_root(backend: IResultBackend, clock: IReactorTime, timeout: float = 5.0) -> Resource:
    """
    The resource tree the daemon serves.  A store that does not answer
    within ``timeout`` seconds gets the request a 503.
    """
    return StatusRoot(backend, clock, timeout)
