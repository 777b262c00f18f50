"""
The txAMQP 0.8.2 defects measured on this project's machines, each shown
mended against a real RabbitMQ.  The numbers are those of the module
docstring of :py:mod:`twistedq.amqp.protocol`.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.servers import REQUIRE, ROOT, amqp_url, unique_queue
from twistedq.amqp.broker import BrokerAddress, BrokerConnection, Topology
from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol


def rabbitmqctl(*args: str) -> None:
    """
    Run rabbitmqctl against the node ``scripts/services`` started; skip the
    test when that is not possible (the tests point at someone else's
    broker), unless the servers are required.
    """
    completed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services"), "rabbitmqctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        message = f"rabbitmqctl {' '.join(args)} failed: {completed.stderr.strip()[-500:]}"
        if REQUIRE:
            raise AssertionError(message)
        raise SkipTest(message)


class _Collector:
    """
    A consumer that collects what the broker sends it.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.waiting: list[defer.Deferred[Any]] = []
        self.cancellations: list[Any] = []
        self.cancelled_d: defer.Deferred[Any] = defer.Deferred()
        self.lost: list[Any] = []

    def deliver(self, channel: BrokerChannel, message: Any) -> None:
        self.messages.append(message)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(message)

    def next(self, timeout: float = 10.0) -> defer.Deferred[Any]:
        if len(self.messages) > len(self._taken):
            message = self.messages[len(self._taken)]
            self._taken.append(message)
            return defer.succeed(message)
        d: defer.Deferred[Any] = defer.Deferred()

        def taken(message: Any) -> Any:
            self._taken.append(message)
            return message

        d.addCallback(taken)
        self.waiting.append(d)
        return d.addTimeout(timeout, reactor)

    _taken: list[Any]

    def cancelled(self, channel: BrokerChannel, message: Any) -> None:
        self.cancellations.append(message)
        self.cancelled_d.callback(message)

    def connection_lost(self, reason: Any) -> None:
        self.lost.append(reason)


class AdapterTests(TestCase):
    """
    A connection, a publishing channel in confirm mode and a consuming
    channel on a queue of the test's own.
    """

    timeout = 60

    async def _connect(self) -> None:
        self.connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)
        self.protocol: BrokerProtocol = await self.connection.when_connected(fail_after=3)
        self.queue = unique_queue()
        self.topology = Topology(exchange=f"{self.queue}-x", queue=self.queue)
        self.publish_channel = await self.protocol.open_channel()
        await self.publish_channel.enable_confirms()
        await self.topology.declare(self.publish_channel)
        self.consume_channel = await self.protocol.open_channel()
        self.collector = _Collector()
        self.collector._taken = []
        self.protocol.consumers["collector"] = self.collector
        await self.consume_channel.basic_consume(
            queue=self.queue, consumer_tag="collector", no_ack=True
        )
        self.addCleanup(self._delete_queues)

    async def _delete_queues(self) -> None:
        if self.protocol.closed:
            return
        channel = await self.protocol.open_channel()
        for queue in (self.topology.queue, self.topology.dead_letter_queue):
            await channel.queue_delete(queue=queue)
        for exchange in (self.topology.exchange, self.topology.dead_letter_exchange):
            await channel.exchange_delete(exchange=exchange)

    def setUp(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._connect())

    def publish(self, body: bytes, **properties: Any) -> defer.Deferred[None]:
        return self.publish_channel.publish(
            self.topology.exchange, self.topology.routing_key, body, properties
        )

    async def test_spec_is_packaged(self) -> None:
        """
        (1) The connection is made with twistedq's own packaged spec; the
        broker accepted the handshake and a queue declare.
        """
        self.assertEqual((self.protocol.spec.major, self.protocol.spec.minor), (0, 9))
        self.assertTrue(self.protocol.spec.file.endswith("amqp0-9-1.xml"))
        self.assertFalse(self.protocol.closed)

    async def test_publisher_confirms(self) -> None:
        """
        (2) 500 publishes in confirm mode are all confirmed by the broker's
        ``basic.ack`` (single and ``multiple``) and the connection stays up.
        """
        await defer.gatherResults([self.publish(b"%d" % i) for i in range(500)])
        self.assertEqual(self.publish_channel.unconfirmed, {})
        self.assertEqual(self.publish_channel.publish_seq, 500)
        self.assertFalse(self.protocol.closed)

    async def test_bodies_are_bytes(self) -> None:
        """
        (3) A body that happens to be valid UTF-8 arrives as ``bytes``, like
        any other.
        """
        await self.publish(b"plain ascii")
        message = await self.collector.next()
        self.assertIsInstance(message.content.body, bytes)
        self.assertEqual(message.content.body, b"plain ascii")

    async def test_multi_frame_body_intact(self) -> None:
        """
        (4) A 300,100-byte body whose later frames are not valid UTF-8
        arrives whole, byte for byte.
        """
        body = b"a" * 200_000 + bytes(range(256)) * 390 + b"\xff" * 260
        self.assertEqual(len(body), 300_100)
        await self.publish(body)
        message = await self.collector.next()
        self.assertEqual(len(message.content.body), 300_100)
        self.assertEqual(message.content.body, body)

    async def test_non_ascii_and_str_bodies(self) -> None:
        """
        (5) Non-ASCII bytes travel with their byte length; a ``str`` body is
        refused before anything is written, and the connection stays up.
        """
        text = "héllo wörld ✓".encode()
        await self.publish(text)
        message = await self.collector.next()
        self.assertEqual(message.content.body, text)
        self.assertRaises(TypeError, self.publish_channel.publish, "x", "y", "str body", {})
        await self.publish(b"after")
        self.assertEqual((await self.collector.next()).content.body, b"after")

    async def test_field_tables(self) -> None:
        """
        (6) Headers with None, lists, nested tables, 64-bit and negative
        integers, floats and booleans round-trip through the broker.
        """
        headers = {
            "none": None,
            "list": [1, "two", [3.5, False]],
            "nested": {"deep": {"deeper": "yes"}},
            "big": 2**40,
            "negative": -7,
            "float": 0.25,
            "flag": True,
            "text": "ünïcode",
        }
        await self.publish(b"h", headers=headers)
        message = await self.collector.next()
        self.assertEqual(message.content.properties["headers"], headers)

    async def test_dead_letter_x_death_header(self) -> None:
        """
        (6) A message rejected into the dead-letter queue arrives with
        RabbitMQ's ``x-death`` header (a list of tables with a 64-bit count
        and a timestamp), decoded, without closing the connection.
        """
        await self.consume_channel.basic_cancel(consumer_tag="collector")
        await self.publish(b"doomed")
        channel = await self.protocol.open_channel()
        got = await channel.basic_get(queue=self.queue, no_ack=False)
        self.assertEqual(got.content.body, b"doomed")
        await channel.basic_reject(delivery_tag=got.delivery_tag, requeue=False)
        for _ in range(100):
            dead = await channel.basic_get(queue=self.topology.dead_letter_queue, no_ack=True)
            if dead.method.name == "get-ok":
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(dead.content.body, b"doomed")
        death = dead.content.properties["headers"]["x-death"][0]
        self.assertEqual(death["reason"], "rejected")
        self.assertEqual(death["queue"], self.queue)
        self.assertEqual(death["count"], 1)
        self.assertFalse(self.protocol.closed)

    async def test_consumer_cancel_notification(self) -> None:
        """
        (7) Capabilities are sent, so deleting the queue under a consumer
        reaches it as ``basic.cancel``.
        """
        properties = self.protocol.server_properties
        self.assertTrue(properties["capabilities"]["consumer_cancel_notify"])
        channel = await self.protocol.open_channel()
        await channel.queue_delete(queue=self.queue)
        message = await self.collector.cancelled_d.addTimeout(10, reactor)
        self.assertEqual(message.consumer_tag, "collector")
        self.assertNotIn("collector", self.protocol.consumers)

    async def test_connection_blocked_notification(self) -> None:
        """
        (7) Capabilities are sent, so a memory alarm reaches the connection
        as ``connection.blocked`` (a publish then waits for its confirm),
        and the end of the alarm as ``connection.unblocked``, after which
        the held publish is confirmed.
        """
        rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
        try:
            published = self.publish(b"held back")
            for _ in range(200):
                if self.protocol.blocked:
                    break
                await deferLater(reactor, 0.05, lambda: None)
            self.assertTrue(self.protocol.blocked)
            self.assertFalse(published.called)
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        await published
        for _ in range(200):
            if self.protocol.blocked is None:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(self.protocol.blocked)

    async def test_dispatch_error_is_logged(self) -> None:
        """
        (8) An exception while handling a delivery is logged with its
        traceback and the connection goes on delivering.
        """
        original = self.collector.deliver
        calls: list[Any] = []

        def broken(channel: BrokerChannel, message: Any) -> None:
            if not calls:
                calls.append(message)
                raise ZeroDivisionError("handler bug")
            original(channel, message)

        self.collector.deliver = broken  # type: ignore[method-assign]
        await self.publish(b"first")
        await self.publish(b"second")
        message = await self.collector.next()
        self.assertEqual(message.content.body, b"second")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertFalse(self.protocol.closed)

    async def test_no_deprecation_warnings(self) -> None:
        """
        (9) Connecting, declaring, publishing and consuming emit no
        DeprecationWarning (txAMQP's ``defer.returnValue``).
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
            connection.startService()
            try:
                protocol = await connection.when_connected(fail_after=3)
                channel = await protocol.open_channel()
                await channel.enable_confirms()
                await self.topology.declare(channel)
                await channel.publish(self.topology.exchange, self.topology.routing_key, b"w", {})
                await self.collector.next()
            finally:
                await connection.stopService()
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        self.assertEqual(deprecations, [], [str(w.message) for w in deprecations])
        self.assertEqual(self.flushWarnings(), [])


class PublishFailureTests(TestCase):
    """
    A publish the broker cannot route, and one it does not confirm in time.
    """

    timeout = 60

    async def test_unroutable(self) -> None:
        """
        A task published to a queue that was deleted after it was declared
        fails with Unroutable naming the task, instead of vanishing.
        """
        from twistedq.amqp.broker import Publisher
        from twistedq.amqp.protocol import Unroutable
        from twistedq.message import TaskMessage, new_task_id

        connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        queue = unique_queue()
        topology = Topology(exchange=f"{queue}-x", queue=queue)
        publisher = Publisher(connection, topology, confirm_timeout=10)
        connection.startService()
        self.addCleanup(connection.stopService)
        protocol = await connection.when_connected(fail_after=3)
        channel = await protocol.open_channel()
        await channel.queue_delete(queue=queue)
        message = TaskMessage(id=new_task_id(), task="add")
        with self.assertRaises(Unroutable) as caught:
            await publisher.publish(message)
        self.assertEqual(caught.exception.message_id, message.id)
        await channel.queue_delete(queue=topology.dead_letter_queue)
        await channel.exchange_delete(exchange=topology.exchange)
        await channel.exchange_delete(exchange=topology.dead_letter_exchange)

    async def test_alarm_makes_publish_uncertain_within_timeout(self) -> None:
        """
        Under a memory alarm a publish fails with PublishUncertain within
        its timeout instead of hanging the caller.
        """
        from twistedq.amqp.broker import Publisher, PublishUncertain
        from twistedq.message import TaskMessage, new_task_id

        connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        queue = unique_queue()
        publisher = Publisher(connection, Topology(queue=queue), confirm_timeout=1.0)
        connection.startService()
        self.addCleanup(connection.stopService)
        await connection.when_connected(fail_after=3)
        rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
        try:
            started = time.monotonic()
            message = TaskMessage(id=new_task_id(), task="add")
            with self.assertRaises(PublishUncertain) as caught:
                await publisher.publish(message)
            self.assertLess(time.monotonic() - started, 3)
            self.assertEqual(caught.exception.task_id, message.id)
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
