"""
Tests for :py:obj:`twistedq.dashboard.resources` and the taskset progress
stream of :py:obj:`twistedq.web`, rendered with :py:obj:`DummyRequest`
over the memory store.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.unit.fakes import put, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.dashboard.actions import OperatorActions
from twistedq.dashboard.resources import DashboardResource
from twistedq.dashboard.watch import ClusterWatch
from twistedq.outcome import failure_document, success_document
from twistedq.web import make_site_root

TOKEN = "s3cret-token"


class FakeReceiver:
    def __init__(self, on_events: Any) -> None:
        self.on_events = on_events
        self.running = False

    def start(self) -> defer.Deferred[None]:
        self.running = True
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        self.running = False
        return defer.succeed(None)


def events_of(request: DummyRequest) -> list[tuple[str | None, Any]]:
    """
    The (event name, JSON data) pairs written to an SSE response so far.
    """
    found = []
    for block in b"".join(request.written).decode().split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            found.append((name, data))
    return found


class SiteTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryBackend(self.clock)
        self.receivers: list[FakeReceiver] = []
        self.revoked: list[list[str]] = []

        def receiver(on_events: Any) -> FakeReceiver:
            self.receivers.append(FakeReceiver(on_events))
            return self.receivers[-1]

        def revoke(ids: list[str]) -> defer.Deferred[Any]:
            self.revoked.append(ids)
            return defer.succeed({"revoked": ids})

        self.watch = ClusterWatch(self.clock, self.clock.seconds, receiver, backend=self.store)
        self.actions = OperatorActions(TOKEN, revoke=revoke)
        self.root = make_site_root(
            self.store,
            self.clock,
            dashboard=DashboardResource(self.watch, self.store, self.clock, self.actions),
        )

    def request(
        self, path: str, method: bytes = b"GET", body: bytes = b"", token: str | None = None
    ) -> DummyRequest:
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.method = method
        request.content = io.BytesIO(body)
        if token is not None:
            request.requestHeaders.setRawHeaders(b"x-twistedq-token", [token.encode()])
        resource = getChildForRequest(self.root, request)
        result = resource.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return request

    def json_of(self, request: DummyRequest) -> Any:
        return json.loads(b"".join(request.written))


class DashboardResourceTests(SiteTestCase):
    """
    ``/dashboard/``: the page, its snapshot, its stream and its actions.
    """

    def test_page_and_relative_urls(self) -> None:
        """
        The page is served at ``dashboard/`` and uses only relative URLs;
        ``dashboard`` without the slash redirects to it.
        """
        page = self.request("/dashboard/")
        html = b"".join(page.written)
        self.assertIn(b"<title>twistedq dashboard</title>", html)
        self.assertIn(b'src="static/dashboard.js"', html)
        self.assertNotIn(b'="/', html)
        redirect = self.request("/dashboard")
        self.assertEqual(redirect.responseCode, 302)
        self.assertEqual(redirect.responseHeaders.getRawHeaders(b"location"), [b"dashboard/"])

    def test_state_is_a_snapshot(self) -> None:
        """
        ``dashboard/state`` answers every section as JSON, without starting
        the receiver.
        """
        snapshot = self.json_of(self.request("/dashboard/state"))
        self.assertEqual(snapshot["kind"], "snapshot")
        self.assertFalse(snapshot["live"])
        self.assertEqual(
            set(snapshot["sections"]),
            {
                "daemons",
                "running",
                "running_count",
                "running_dropped",
                "rates",
                "failures",
                "tasksets",
                "queues",
                "periodic",
            },
        )
        self.assertEqual(self.receivers, [])

    def test_stream_runs_receiver_while_open(self) -> None:
        """
        ``dashboard/stream`` is an event stream: the snapshot first, then
        the changes; the receiver runs while it is open and stops when the
        client leaves.
        """
        request = self.request("/dashboard/stream")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/event-stream; charset=utf-8"],
        )
        self.assertEqual(events_of(request)[0][0], "snapshot")
        self.assertTrue(self.receivers[0].running)
        self.receivers[0].on_events(
            [
                {
                    "type": "task.started",
                    "id": task_id(1),
                    "name": "sleep",
                    "time": self.clock.seconds(),
                    "daemon": "d1",
                }
            ]
        )
        self.clock.advance(0.25)
        name, patch = events_of(request)[-1]
        self.assertEqual(name, "patch")
        self.assertEqual(patch["sections"]["running"][0]["id"], task_id(1))
        request.processingFailed(Failure(ConnectionLost()))
        self.assertFalse(self.receivers[0].running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_actions_need_the_token(self) -> None:
        """
        An action without the token, or with another, is refused with 403
        and not run; with it, it runs.
        """
        body = json.dumps({"ids": [task_id(1)]}).encode()
        self.assertEqual(self.request("/dashboard/actions/revoke", b"POST", body).responseCode, 403)
        self.assertEqual(
            self.request("/dashboard/actions/revoke", b"POST", body, "wrong").responseCode, 403
        )
        self.assertEqual(self.revoked, [])
        done = self.request("/dashboard/actions/revoke", b"POST", body, TOKEN)
        self.assertEqual(self.json_of(done), {"revoked": [task_id(1)]})
        self.assertEqual(self.revoked, [[task_id(1)]])

    def test_bad_action_arguments(self) -> None:
        """
        An unknown action or ids that are not task ids answer 400.
        """
        bad = json.dumps({"ids": ["../etc"]}).encode()
        self.assertEqual(
            self.request("/dashboard/actions/revoke", b"POST", bad, TOKEN).responseCode, 400
        )
        self.assertEqual(
            self.request("/dashboard/actions/terminate", b"POST", b"{}", TOKEN).responseCode, 400
        )
        self.assertEqual(self.revoked, [])

    def test_read_only_without_actions(self) -> None:
        """
        Without an operator token the config offers no action and every
        action is refused.
        """
        root = make_site_root(
            self.store,
            self.clock,
            dashboard=DashboardResource(self.watch, self.store, self.clock),
        )
        self.root = root
        self.assertEqual(self.json_of(self.request("/dashboard/config"))["actions"], [])
        self.assertEqual(
            self.request("/dashboard/actions/revoke", b"POST", b"{}", "").responseCode, 403
        )

    def test_failure_traceback_for_operators(self) -> None:
        """
        A failure's traceback is shown to a request with the token only.
        """
        failed = task_id(5)
        try:
            raise ValueError("bad input")
        except ValueError as error:
            put(self.store, failed, failure_document(failed, "parse", error))
        anyone = self.json_of(self.request(f"/dashboard/failure/{failed}"))
        self.assertEqual((anyone["exception"], anyone["message"]), ("ValueError", "bad input"))
        self.assertIsNone(anyone["traceback"])
        operator = self.json_of(self.request(f"/dashboard/failure/{failed}", token=TOKEN))
        self.assertIn("Traceback", operator["traceback"])


class TasksetStreamTests(SiteTestCase):
    """
    ``/celery/taskset/<id>/status/stream``: the taskset status as events.
    """

    def test_unknown_taskset(self) -> None:
        """
        An unknown taskset answers 404 as the JSON URL does.
        """
        request = self.request(f"/celery/taskset/{task_id(7)}/status/stream")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(self.json_of(request)["error"], "unknown taskset")

    def test_progress_until_ready(self) -> None:
        """
        The status document comes at once, then again on each change, and
        the stream ends once the taskset is ready.
        """
        taskset = task_id(8)
        self.store.create_taskset(taskset, 2)
        request = self.request(f"/celery/taskset/{taskset}/status/stream")
        self.assertEqual([data["taskset"]["completed"] for _, data in events_of(request)], [0])
        self.clock.advance(0.5)
        self.assertEqual(len(events_of(request)), 1)
        put(self.store, task_id(1), success_document(task_id(1), "add", 1), taskset)
        self.clock.advance(0.5)
        put(self.store, task_id(2), success_document(task_id(2), "add", 2), taskset)
        self.assertFalse(request.finished)
        self.clock.advance(0.5)
        documents = [data for _, data in events_of(request)]
        self.assertEqual([d["taskset"]["completed"] for d in documents], [0, 1, 2])
        self.assertTrue(documents[-1]["taskset"]["ready"])
        self.assertTrue(request.finished)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reconnect_after_ready(self) -> None:
        """
        The document of a ready taskset is the stream's last event, with
        the id ``ready``; a browser reconnecting with it as Last-Event-ID
        is answered 204 (an EventSource then stops for good), without a
        read of the store.
        """
        taskset = task_id(10)
        self.store.create_taskset(taskset, 1)
        put(self.store, task_id(1), success_document(task_id(1), "add", 1), taskset)
        path = f"/celery/taskset/{taskset}/status/stream"
        first = self.request(path)
        self.assertIn(b"id: ready\ndata: ", b"".join(first.written))
        self.assertTrue(first.finished)
        reads = len(self.store.calls)
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.requestHeaders.setRawHeaders(b"last-event-id", [b"ready"])
        resource = getChildForRequest(self.root, request)
        self.assertEqual(resource.render(request), b"")
        self.assertEqual(request.responseCode, 204)
        self.assertEqual(len(self.store.calls), reads)
        # The JSON status URL pays no heed to the header.
        plain = DummyRequest(f"celery/taskset/{taskset}/status/".encode().split(b"/"))
        plain.requestHeaders.setRawHeaders(b"last-event-id", [b"ready"])
        resource = getChildForRequest(self.root, plain)
        self.assertEqual(resource.render(plain), NOT_DONE_YET)
        self.assertEqual(json.loads(b"".join(plain.written))["taskset"]["ready"], True)

    def test_client_leaving_stops_reads(self) -> None:
        """
        Once the client leaves, the store is not read again.
        """
        taskset = task_id(9)
        self.store.create_taskset(taskset, 2)
        request = self.request(f"/celery/taskset/{taskset}/status/stream")
        request.processingFailed(Failure(ConnectionLost()))
        reads = len(self.store.calls)
        self.clock.advance(5)
        self.assertEqual(len(self.store.calls), reads)


class PrefixTests(SiteTestCase):
    """
    Mounted under a path prefix (as a reverse proxy would mount the
    site), the dashboard answers the same.
    """

    def test_under_a_prefix(self) -> None:
        """
        Under ``/ops/twistedq/``, the page, its script and its stream are
        where the page's relative URLs lead.
        """
        from twisted.web.resource import Resource

        site_root = self.root
        ops, twistedq = Resource(), Resource()
        ops.putChild(b"twistedq", twistedq)
        for name in (b"dashboard", b"celery"):
            twistedq.putChild(name, site_root.children[name])
        self.root = Resource()
        self.root.putChild(b"ops", ops)
        page = self.request("/ops/twistedq/dashboard/")
        self.assertIn(b'href="static/dashboard.css"', b"".join(page.written))
        script = self.request("/ops/twistedq/dashboard/static/dashboard.js")
        self.assertIn(b'new EventSource("stream")', b"".join(script.written))
        stream = self.request("/ops/twistedq/dashboard/stream")
        self.assertEqual(events_of(stream)[0][0], "snapshot")
        stream.processingFailed(Failure(ConnectionLost()))


class RunningFromRepliesTests(SynchronousTestCase):
    """
    :py:func:`twistedq.dashboard.daemon.running_from_replies`.
    """

    def test_replies_become_started_events(self) -> None:
        """
        Each task of each ``inspect.active`` reply becomes a
        ``task.started`` document of its daemon; failed replies are left out.
        """
        from twistedq.dashboard.daemon import running_from_replies

        replies = [
            {
                "daemon": "d1",
                "host": "h",
                "pid": 1,
                "ok": True,
                "reply": [{"id": task_id(1), "name": "sleep", "args": "(60,), {}", "runtime": 5.0}],
            },
            {"daemon": "d2", "ok": False, "error": "boom"},
        ]
        (document,) = running_from_replies(replies, 100.0)
        self.assertEqual(
            (document["type"], document["id"], document["daemon"], document["time"]),
            ("task.started", task_id(1), "d1", 95.0),
        )
