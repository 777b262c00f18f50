"""
The reconnection log of :py:class:`twistedq.amqp.broker.BrokerConnection`
counts one thing: the attempts failed since the last connection, whether
the TCP connection failed or logging in did (Twisted's own "Scheduling
retry N" counted TCP connections only, and started again at 1 after a
connection made whose login failed).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import BrokerAddress, BrokerConnection


class SilentBrokerTransport(StringTransport):
    """
    A connection made to a broker that never answers the login; aborting
    it loses it at once.
    """

    def __init__(self, protocol: Any) -> None:
        StringTransport.__init__(self)
        self.protocol = protocol

    def abortConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class Endpoint:
    """
    Refuses connections, or, with ``silent``, makes ones whose login never
    finishes.
    """

    def __init__(self, silent: bool) -> None:
        self.silent = silent

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if not self.silent:
            return defer.fail(ConnectionRefusedError("Connection refused"))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(SilentBrokerTransport(protocol))
        return defer.succeed(protocol)


class RetryLogTests(SynchronousTestCase):
    def test_one_count(self) -> None:
        """
        Across nodes that refuse and a node that connects but never logs
        in, each "Cannot connect" line and each "next attempt" line carry
        the same, rising count, and Twisted's own retry line is not logged.
        """
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        clock = Clock()
        addresses = [BrokerAddress(host=f"n{i}", connect_timeout=1.0) for i in range(3)]
        endpoints = [Endpoint(silent=False), Endpoint(silent=True), Endpoint(silent=False)]
        connection = BrokerConnection(addresses, clock, endpoint=endpoints)
        connection.startService()
        self.addCleanup(connection.stopService)
        for _ in range(120):
            clock.advance(0.5)
        self.assertEqual([line for line in lines if "Scheduling retry" in line], [])
        failed = [line for line in lines if line.startswith("Cannot connect")]
        retries = [line for line in lines if line.startswith("Next attempt")]
        self.assertGreater(len(failed), 6)
        self.assertIn("logging in did not finish", "".join(failed))
        for number, (cannot, retry) in enumerate(zip(failed, retries, strict=False), start=1):
            self.assertIn(f"({number} failed attempts)", cannot)
            self.assertIn(f"after {number} failed attempts", retry)
