"""
Server-Sent Events on a twisted.web request: ``text/event-stream``, one
``data:`` line per event (JSON has no newline), comments to keep idle
connections open through proxies.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

__all__ = ["EventStream"]


class EventStream:
    """
    An open Server-Sent Events response.

    :ivar open: false once the request finished or the client left.
    """

    def __init__(self, request: Request, retry_ms: int = 2000) -> None:
        self.request = request
        self.open = True
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # nginx buffers responses unless told not to.
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addBoth(self._gone)
        request.write(b"retry: %d\n\n" % retry_ms)

    def _gone(self, _: Any) -> None:
        self.open = False

    def send(self, document: Any, event: str | None = None, event_id: str | None = None) -> None:
        """
        Send ``document`` as JSON, as an event named ``event`` (the
        default ``message`` if none), with the id ``event_id`` if given
        (the browser sends the last one back, as ``Last-Event-ID``, when
        it reconnects).
        """
        if not self.open:
            return
        head = b"event: %s\n" % event.encode("ascii") if event else b""
        if event_id is not None:
            head += b"id: %s\n" % event_id.encode("ascii")
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        self.request.write(head + b"data: " + body + b"\n\n")

    def comment(self, text: str = "keep-alive") -> None:
        """
        A comment line, which the browser ignores.
        """
        if self.open:
            self.request.write(b": " + text.encode("utf-8") + b"\n\n")

    def close(self) -> None:
        """
        End the response.
        """
        if self.open:
            self.open = False
            self.request.finish()
