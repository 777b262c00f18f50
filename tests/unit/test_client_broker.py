"""
Tests for :py:class:`twistedq.amqp.broker.BrokerConnection` and
:py:class:`~twistedq.amqp.broker.Publisher` while the broker cannot be
reached (issue #13, points 8 and 12): failures are logged with their
reason, as WARNINGs at first and every minute; a publisher with
``connect_attempts`` fails fast with the reason.
"""

import itertools

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import (
    WARN_EVERY,
    BrokerAddress,
    BrokerConnection,
    BrokerUnavailable,
    Publisher,
    Topology,
)
from twistedq.message import TaskMessage, new_task_id


class RefusingEndpoint:
    """
    An endpoint whose every connection is refused.
    """

    def __init__(self):
        self.attempts = 0

    def connect(self, factory):
        self.attempts += 1
        return defer.fail(ConnectionRefusedError("Connection refused"))


class ConnectionTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.endpoint = RefusingEndpoint()
        self.connection = BrokerConnection(
            BrokerAddress(host="broker.example", port=5999), self.clock, endpoint=self.endpoint
        )
        self.events = []

        def observe(event):
            self.events.append({**event, "clock": self.clock.seconds()})

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)

    def failures(self):
        return [e for e in self.events if e.get("log_format", "").startswith("Cannot connect")]

    def test_first_failure_and_every_minute_warn(self):
        """
        The first failed attempt is a WARNING with the address and the
        reason; the next ones are INFO until a minute has passed, then a
        WARNING again.
        """
        for _ in range(300):
            self.clock.advance(1)
        failures = self.failures()
        self.assertGreater(len(failures), 20)
        self.assertEqual(failures[0]["log_level"], LogLevel.warn)
        self.assertEqual(failures[0]["broker"], "amqp://guest@broker.example:5999//")
        self.assertIn("ConnectionRefusedError", failures[0]["reason"])
        self.assertEqual(failures[1]["log_level"], LogLevel.info)
        warned = [e["clock"] for e in failures if e["log_level"] == LogLevel.warn]
        self.assertGreaterEqual(len(warned), 4)
        gaps = [later - earlier for earlier, later in itertools.pairwise(warned)]
        self.assertTrue(all(WARN_EVERY <= gap <= WARN_EVERY + 12 for gap in gaps), gaps)
        self.assertEqual({e["log_level"] for e in failures}, {LogLevel.warn, LogLevel.info})

    def test_when_connected_fails_with_the_reason(self):
        """
        ``when_connected(fail_after=1)`` fails with the next attempt's
        reason; ``retry_now()`` makes that attempt at once instead of after
        the backoff.
        """
        self.assertEqual(self.endpoint.attempts, 1)
        waiting = self.connection.when_connected(fail_after=1)
        self.assertNoResult(waiting)
        self.connection.retry_now()
        self.clock.advance(0)
        self.assertEqual(self.endpoint.attempts, 2)
        self.failureResultOf(waiting, ConnectionRefusedError)
        self.assertEqual(self.connection.failures, 2)
        self.assertIn("ConnectionRefusedError", self.connection.last_failure)

    def test_stop_fails_waiters(self):
        """
        Stopping the connection fails what waits for it, instead of leaving
        it waiting for ever.
        """
        waiting = self.connection.when_connected()
        self.connection.stopService()
        self.failureResultOf(waiting)


class FailFastPublishTests(SynchronousTestCase):
    """
    A publisher with ``connect_attempts`` fails a publish once that many
    attempts failed, the first made at once, with BrokerUnavailable and
    the reason.
    """

    def test_refused(self):
        clock = Clock()
        endpoint = RefusingEndpoint()
        connection = BrokerConnection(BrokerAddress(port=5999), clock, endpoint=endpoint)
        publisher = Publisher(connection, Topology(), confirm_timeout=30, connect_attempts=2)
        connection.startService()
        self.addCleanup(connection.stopService)
        clock.advance(5)
        before = endpoint.attempts
        message = TaskMessage(id=new_task_id(), task="add")
        publishing = defer.Deferred.fromCoroutine(publisher.publish(message))
        self.assertEqual(endpoint.attempts, before)
        clock.advance(0)
        self.assertEqual(endpoint.attempts, before + 1)
        self.assertNoResult(publishing)
        clock.advance(0.1)
        clock.advance(0)
        self.assertEqual(endpoint.attempts, before + 2)
        error = self.failureResultOf(publishing, BrokerUnavailable).value
        self.assertIn("could not reach the broker at amqp://guest@127.0.0.1:5999//", str(error))
        self.assertIn("ConnectionRefusedError", str(error))
        self.assertIsInstance(error.__cause__, ConnectionRefusedError)

    def test_without_attempts_waits_for_the_timeout(self):
        """
        Without ``connect_attempts`` (the daemon's publisher) a publish
        waits up to ``confirm_timeout``, then names the last reason.
        """
        clock = Clock()
        connection = BrokerConnection(BrokerAddress(port=5999), clock, endpoint=RefusingEndpoint())
        publisher = Publisher(connection, Topology(), confirm_timeout=30)
        connection.startService()
        self.addCleanup(connection.stopService)
        message = TaskMessage(id=new_task_id(), task="add")
        publishing = defer.Deferred.fromCoroutine(publisher.publish(message))
        for _ in range(29):
            clock.advance(1)
        self.assertNoResult(publishing)
        clock.advance(1)
        error = self.failureResultOf(publishing, BrokerUnavailable).value
        self.assertIn("within 30 s", str(error))
        self.assertIn("the last with ConnectionRefusedError", str(error))


class LifecycleTests(SynchronousTestCase):
    def test_waits_before_start_fails_after_stop(self):
        """
        ``when_connected()`` asked before the service starts waits for the
        first attempts; asked after it stopped, it fails at once.
        """
        clock = Clock()
        endpoint = RefusingEndpoint()
        connection = BrokerConnection(BrokerAddress(port=5999), clock, endpoint=endpoint)
        early = connection.when_connected(fail_after=1)
        self.assertNoResult(early)
        connection.startService()
        self.failureResultOf(early, ConnectionRefusedError)
        connection.stopService()
        self.failureResultOf(connection.when_connected(), ConnectionDone)
