"""
Tests for the health check ``GET /`` and the broker: a daemon that has
not been consuming its queues for longer than
:py:data:`~twistedq.daemon.health.NOT_CONSUMING_LIMIT` seconds is unhealthy
(503), as one whose result store is unavailable; ``/stats`` is unchanged.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twistedq.amqp.broker import Topology
from twistedq.amqp.consumer import Consumer
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.health import NOT_CONSUMING_LIMIT, ConsumingWatch
from twistedq.web import make_site_root


class FakeConnection:
    def __init__(self, reactor):
        self.reactor = reactor

    def add_connect_hook(self, hook):
        pass


def consumer_of(clock, queues):
    """
    A real :py:class:`Consumer` of ``queues`` whose queues are told by
    hand whether they consume.
    """
    topologies = [Topology(queue=name) for name in queues]
    return Consumer(FakeConnection(clock), topologies, 1, lambda delivery: None)


class ConsumingHealthTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.consumer = consumer_of(self.clock, ["q1", "q2"])
        self.watch = ConsumingWatch(self.consumer, self.clock)
        self.store_up = [True]
        self.root = make_site_root(
            MemoryBackend(self.clock),
            self.clock,
            stats=lambda: {"consuming": self.consumer.consuming},
            available=lambda: self.store_up[0],
            unhealthy=self.watch.problem,
        )

    def get(self, path):
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.method = b"GET"
        result = getChildForRequest(self.root, request).render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return request.responseCode or 200, json.loads(b"".join(request.written))

    def consume(self, now, queues=(0, 1)):
        for index in queues:
            self.consumer.queues[index].consuming = now

    def advance(self, seconds):
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def test_starting(self):
        """
        A daemon not yet consuming is healthy for its first
        NOT_CONSUMING_LIMIT seconds, unhealthy after, and healthy again as
        soon as it consumes.
        """
        self.advance(NOT_CONSUMING_LIMIT - 1)
        self.assertEqual(self.get("/"), (200, {"service": "twistedq"}))
        self.advance(2)
        code, document = self.get("/")
        self.assertEqual(code, 503)
        self.assertEqual(
            document,
            {
                "service": "twistedq",
                "error": f"not consuming its queues for {NOT_CONSUMING_LIMIT + 1:.0f} s",
            },
        )
        self.consume(True)
        self.assertEqual(self.get("/"), (200, {"service": "twistedq"}))

    def test_stopped_consuming(self):
        """
        A daemon that consumed and stopped (a queue refused, the broker
        gone) is unhealthy NOT_CONSUMING_LIMIT seconds after it stopped,
        however long it consumed before and whether or not / was asked
        meanwhile; /stats still answers 200 with ``consuming`` false.
        """
        self.consume(True)
        self.advance(10 * NOT_CONSUMING_LIMIT)
        self.consume(False, [1])
        self.advance(NOT_CONSUMING_LIMIT - 2)
        self.assertEqual(self.get("/")[0], 200)
        self.advance(3)
        self.assertEqual(self.get("/")[0], 503)
        self.consume(True, [1])
        self.assertEqual(self.get("/")[0], 200)
        self.consume(False, [1])
        self.assertEqual(
            self.get("/stats"),
            (200, {"consuming": False, "store_available": True, "store_unavailable_since": None}),
        )

    def test_store_first(self):
        """
        With both wrong, the store's error is the one answered.
        """
        self.store_up[0] = False
        self.advance(NOT_CONSUMING_LIMIT + 1)
        self.assertEqual(
            self.get("/"), (503, {"service": "twistedq", "error": "result store unavailable"})
        )

    def test_one_queue_never_consumed(self):
        """
        One queue of two consumed, the other never (refused at its
        declare): unhealthy NOT_CONSUMING_LIMIT seconds after the start.
        """
        self.consume(True, [0])
        self.advance(NOT_CONSUMING_LIMIT + 1)
        self.assertEqual(self.get("/")[0], 503)
