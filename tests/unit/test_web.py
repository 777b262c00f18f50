"""
Tests for :py:obj:`twistedq.web`: the JSON status resource, rendered with
:py:obj:`DummyRequest` over the memory store.
"""

import gc
import json

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.unit.fakes import put, task_id
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.memory import Call, MemoryBackend
from twistedq.outcome import failure_document, success_document
from twistedq.web import make_site_root

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class StatusResourceTests(SynchronousTestCase):
    """
    ``GET /celery/<task_id>/status/`` answers the task's status as JSON.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.root = make_site_root(self.store, self.clock)

    def get(self, path):
        """
        Render ``path`` and return the finished request.
        """
        segments = path.lstrip("/").encode().split(b"/")
        request = DummyRequest(segments)
        request.method = b"GET"
        resource = getChildForRequest(self.root, request)
        result = resource.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return request

    def json_body(self, request):
        self.assertEqual(request.finished, 1)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
        )
        body = b"".join(request.written)
        length = request.responseHeaders.getRawHeaders(b"content-length")
        self.assertEqual(length, [b"%d" % len(body)])
        return json.loads(body)

    def test_pending(self):
        """
        A task the store does not know is PENDING with a null result.
        """
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(
            self.json_body(request),
            {"task": {"id": TASK_ID, "status": "PENDING", "result": None}},
        )
        self.assertEqual(self.store.calls, [Call("get_result", (TASK_ID,))])

    def test_success(self):
        """
        A stored success answers SUCCESS with the result.
        """
        put(self.store, TASK_ID, success_document(TASK_ID, "add", {"sum": 3}))
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual(
            self.json_body(request),
            {"task": {"id": TASK_ID, "status": "SUCCESS", "result": {"sum": 3}}},
        )
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_failure(self):
        """
        A stored failure answers FAILURE with the exception's message and
        class, and no traceback: the URL is public to anyone holding the id,
        and a traceback shows code and server paths.
        """
        put(
            self.store,
            TASK_ID,
            failure_document(TASK_ID, "add", KeyError("k"), traceback="Traceback: /srv/app.py"),
        )
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual(
            self.json_body(request),
            {"task": {"id": TASK_ID, "status": "FAILURE", "result": "'k'", "exc": "KeyError"}},
        )

    def test_failure_with_tracebacks(self):
        """
        With ``tracebacks`` (``twistd twistedq --status-tracebacks``), a
        failure's traceback is in the answer too.
        """
        self.root = make_site_root(self.store, self.clock, tracebacks=True)
        put(
            self.store,
            TASK_ID,
            failure_document(TASK_ID, "add", KeyError("k"), traceback="Traceback: here"),
        )
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual(
            self.json_body(request),
            {
                "task": {
                    "id": TASK_ID,
                    "status": "FAILURE",
                    "result": "'k'",
                    "exc": "KeyError",
                    "traceback": "Traceback: here",
                }
            },
        )

    def test_without_trailing_slash(self):
        """
        ``/celery/<id>/status`` without the trailing slash answers too.
        """
        request = self.get(f"/celery/{TASK_ID}/status")
        self.assertEqual(self.json_body(request)["task"]["status"], "PENDING")

    def test_bad_id(self):
        """
        An id that is not a canonical UUID gets 404 and the backend is never
        asked.
        """
        for bad in ("not-a-uuid", TASK_ID.upper(), TASK_ID[:-1], "%00", ""):
            request = self.get(f"/celery/{bad}/status/")
            self.assertEqual(request.responseCode, 404, bad)
        self.assertEqual(self.store.calls, [])

    def test_missing_status_segment(self):
        """
        ``/celery/<id>/`` and ``/celery/<id>`` get 404 without asking the
        backend.
        """
        for path in (f"/celery/{TASK_ID}/", f"/celery/{TASK_ID}", f"/celery/{TASK_ID}/other/"):
            self.assertEqual(self.get(path).responseCode, 404, path)
        self.assertEqual(self.store.calls, [])

    def test_extra_segment(self):
        """
        A segment after ``status/`` gets 404.
        """
        request = self.get(f"/celery/{TASK_ID}/status/extra")
        self.assertEqual(request.responseCode, 404)

    def test_backend_failure(self):
        """
        A backend failure answers 503 with a JSON error and is logged.
        """
        self.store.set_unavailable(ConnectionError("redis down"))
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(self.json_body(request), {"error": "result store unavailable"})
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_backend_silent(self):
        """
        A store that does not answer within the timeout (5 s) gets the
        request a 503 JSON answer instead of a hang.
        """
        self.store.pause()  # the read is never answered
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertFalse(request.finished)
        self.clock.advance(4.9)
        self.assertFalse(request.finished)
        self.clock.advance(0.2)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(self.json_body(request), {"error": "result store unavailable"})
        self.flushLoggedErrors()

    def test_store_known_down(self):
        """
        While the daemon knows the store is unavailable, the status URLs
        and the health check ``/`` answer 503 at once without reading it;
        ``/stats`` answers 200 with its figures, ``store_available``
        false and since when (UTC); all answer 200 again once it is back.
        """
        down_since = [1_700_000_000.25]
        root = make_site_root(
            self.store,
            self.clock,
            stats=lambda: {"dispatcher": {"completed": 7}},
            available=lambda: down_since[0] is None,
            down_since=lambda: down_since[0],
        )
        self.root = root
        self.store.pause()  # a read would hang
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(self.json_body(request), {"error": "result store unavailable"})
        self.assertEqual(self.get(f"/celery/taskset/{TASK_ID}/status/").responseCode, 503)
        health = self.get("/")
        self.assertEqual(health.responseCode, 503)
        self.assertEqual(
            self.json_body(health), {"service": "twistedq", "error": "result store unavailable"}
        )
        stats = self.get("/stats")
        self.assertEqual(stats.responseCode, 200)
        self.assertEqual(
            self.json_body(stats),
            {
                "dispatcher": {"completed": 7},
                "store_available": False,
                "store_unavailable_since": "2023-11-14T22:13:20.250000+00:00",
            },
        )
        down_since[0] = None
        stats = self.get("/stats")
        self.assertEqual(stats.responseCode, 200)
        self.assertEqual(
            self.json_body(stats),
            {
                "dispatcher": {"completed": 7},
                "store_available": True,
                "store_unavailable_since": None,
            },
        )
        self.assertEqual(self.get("/").responseCode, 200)
        self.assertEqual(self.store.calls, [])

    def test_stats_without_since(self):
        """
        Without ``down_since``, ``/stats`` still answers 200 and
        ``store_available`` while the store is down; its since is null.
        """
        self.root = make_site_root(
            self.store, self.clock, stats=lambda: {"pool": {}}, available=lambda: False
        )
        stats = self.get("/stats")
        self.assertEqual(stats.responseCode, 200)
        self.assertEqual(
            self.json_body(stats),
            {"pool": {}, "store_available": False, "store_unavailable_since": None},
        )

    def test_waits_for_backend(self):
        """
        The response is written only when the backend answers.
        """
        put(self.store, TASK_ID, success_document(TASK_ID, "t", 1))
        self.store.pause()
        request = self.get(f"/celery/{TASK_ID}/status/")
        self.assertEqual((request.finished, request.written), (0, []))
        self.store.resume()
        self.assertEqual(self.json_body(request)["task"]["result"], 1)

    def test_root(self):
        """
        ``GET /`` (postpath ``[b""]``, as :py:obj:`Site` makes it) answers the
        root's small JSON document naming the service.
        """
        request = self.get("/")
        self.assertNotEqual(request.responseCode, 404)
        self.assertEqual(self.json_body(request), {"service": "twistedq"})


class RealRequestTests(SynchronousTestCase):
    """
    The status resource under a real :py:obj:`twisted.web.server.Request`.
    """

    def request(self, store, path):
        channel = DummyChannel()
        channel.site = Site(make_site_root(store, Clock()))
        request = Request(channel)
        request.gotLength(0)
        request.requestReceived(b"GET", path, b"HTTP/1.1")
        return channel, request

    def test_full_response(self):
        """
        A real request gets a 200 response with the JSON body.
        """
        store = MemoryBackend(Clock())
        put(store, TASK_ID, success_document(TASK_ID, "t", [1]))
        channel, _ = self.request(store, b"/celery/%s/status/" % TASK_ID.encode())
        written = channel.transport.written.getvalue()
        self.assertTrue(written.startswith(b"HTTP/1.1 200 OK\r\n"), written[:40])
        head, body = written.split(b"\r\n\r\n", 1)
        self.assertIn(b"Content-Type: application/json", head)
        self.assertEqual(
            json.loads(body), {"task": {"id": TASK_ID, "status": "SUCCESS", "result": [1]}}
        )

    def test_client_gone(self):
        """
        A client that disconnects before the store answers causes no error
        once the store answers.
        """
        store = MemoryBackend(Clock())
        put(store, TASK_ID, success_document(TASK_ID, "t", 1))
        store.pause()
        channel, request = self.request(store, b"/celery/%s/status/" % TASK_ID.encode())
        written = channel.transport.written.getvalue()
        request.connectionLost(Failure(ConnectionLost("client went away")))
        store.resume()
        self.assertEqual(channel.transport.written.getvalue(), written)
        gc.collect()  # an error left in the read's Deferred is logged when it is collected
        self.assertEqual(self.flushLoggedErrors(), [])


class TasksetStatusTests(SynchronousTestCase):
    """
    ``GET /celery/taskset/<taskset_id>/status/`` answers a taskset's
    progress from one store read.
    """

    def setUp(self):
        self.store = MemoryBackend(Clock())
        self.root = make_site_root(self.store, Clock())

    def progress(self, taskset_id, total, completed, failed):
        """
        Record a taskset of ``total`` subtasks, ``completed`` of them
        stored, the first ``failed`` of those failed.
        """
        self.successResultOf(self.store.create_taskset(taskset_id, total))
        records = [
            OutcomeRecord(
                task_id(n), failure_document(task_id(n), "t", ValueError()), taskset_id, True
            )
            if n <= failed
            else OutcomeRecord(task_id(n), success_document(task_id(n), "t", n), taskset_id)
            for n in range(1, completed + 1)
        ]
        self.successResultOf(self.store.store_results(records))
        self.store.calls.clear()

    def get(self, path):
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.uri = path.encode()
        resource = getChildForRequest(self.root, request)
        result = resource.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return request

    def test_progress_in_one_read(self):
        """
        A known taskset answers total, completed, failed and ready, after
        exactly one read of the store.
        """
        self.progress(TASK_ID, 500, 120, 2)
        request = self.get(f"/celery/taskset/{TASK_ID}/status/")
        self.assertEqual(
            json.loads(b"".join(request.written)),
            {
                "taskset": {
                    "id": TASK_ID,
                    "total": 500,
                    "completed": 120,
                    "failed": 2,
                    "ready": False,
                }
            },
        )
        self.assertEqual(self.store.calls, [Call("get_taskset", (TASK_ID,))])

    def test_ready(self):
        """
        A finished taskset is ready.
        """
        self.progress(TASK_ID, 3, 3, 0)
        body = json.loads(b"".join(self.get(f"/celery/taskset/{TASK_ID}/status/").written))
        self.assertTrue(body["taskset"]["ready"])

    def test_unknown_taskset(self):
        """
        A taskset the store does not know (never created, or expired)
        answers 404 with a JSON error, so a progress bar stops polling
        instead of showing 0 of 0 for ever.
        """
        request = self.get(f"/celery/taskset/{TASK_ID}/status/")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            json.loads(b"".join(request.written)),
            {"error": "unknown taskset", "taskset": {"id": TASK_ID}},
        )
        self.assertEqual(self.store.calls, [Call("get_taskset", (TASK_ID,))])

    def test_bad_taskset_id(self):
        """
        A taskset id that is not a UUID gets 404 without touching the store.
        """
        request = self.get("/celery/taskset/nope/status/")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(self.store.calls, [])
