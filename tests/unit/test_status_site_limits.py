"""
The status site's limits seen from a client: bodies past
:py:data:`twistedq.web.MAX_REQUEST_BODY`, the dashboard's static files
and its page's headers.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twistedq.dashboard.resources import PAGE_HEADERS, STATIC, _Page, _StaticFiles
from twistedq.web import MAX_REQUEST_BODY, make_status_site


class _Echo(Resource):
    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.rendered = 0

    def render_POST(self, request):
        self.rendered += 1
        return b"read %d" % len(request.content.read())


class BodyLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = Resource()
        self.echo = _Echo()
        root.putChild(b"echo", self.echo)
        root.putChild(b"static", _StaticFiles(str(STATIC)))
        root.putChild(b"page", _Page())
        self.site = make_status_site(root)

    def send(self, *chunks: bytes) -> StringTransport:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        for chunk in chunks:
            channel.dataReceived(chunk)
        self.addCleanup(channel.connectionLost, None)
        return transport

    def post(self, length: int, body: bytes, kind: bytes = b"application/x-www-form-urlencoded"):
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
        return self.send(head % (kind, length), body)

    def test_small_body_read(self) -> None:
        """
        A body within the limit is read and rendered as usual.
        """
        transport = self.post(5, b"a=123")
        self.assertIn(b"200 OK", transport.value())
        self.assertIn(b"read 5", transport.value())

    def test_announced_too_long(self) -> None:
        """
        A body announced longer than the limit is refused with 413 at once,
        its connection closed, nothing rendered.
        """
        transport = self.post(300_000_000, b"a=" + b"0" * 65536)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.echo.rendered, 0)

    def test_chunked_too_long(self) -> None:
        """
        A chunked body that grows past the limit is refused as it arrives.
        """
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (65536, b"0" * 65536)
        transport = self.send(head, *([chunk] * (MAX_REQUEST_BODY // 65536 + 2)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(self.echo.rendered, 0)

    def test_static_no_listing_no_null(self) -> None:
        """
        The static folder lists nothing; a name with a null byte is not
        found (it was a 500 with a logged traceback).
        """
        listing = self.send(b"GET /static/ HTTP/1.1\r\nHost: x\r\n\r\n").value()
        self.assertIn(b"404", listing.split(b"\r\n")[0])
        null = self.send(b"GET /static/dashboard.js%00.html HTTP/1.1\r\nHost: x\r\n\r\n").value()
        self.assertIn(b"404", null.split(b"\r\n")[0])
        script = _StaticFiles(str(STATIC)).getChild(b"dashboard.js", None)
        self.assertIsInstance(script, _StaticFiles)
        self.assertTrue(script.exists())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_page_headers(self) -> None:
        """
        The page forbids framing, inline scripts and styles, and sniffing.
        """
        page = self.send(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").value().lower()
        for name, value in PAGE_HEADERS.items():
            self.assertIn(name + b": " + value.lower(), page)
