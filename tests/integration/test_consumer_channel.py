"""
The consumer against a real RabbitMQ when the broker closes its channel:
after the consumer timeout (lowered for the test through ``rabbitmqctl
eval``), the consumer consumes again on a new channel, gets the message
that timed out again, and says truthfully whether it consumes.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import amqp_url, unique_queue
from tests.integration.test_amqp_adapter import rabbitmqctl
from twistedq.amqp.broker import BrokerAddress, BrokerConnection, Publisher, Topology
from twistedq.amqp.consumer import Consumer, Delivery
from twistedq.message import TaskMessage

#: RabbitMQ 3.10's defaults, restored after each test.
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
DEFAULT_CHANNEL_TICK_MS = 60_000


def set_consumer_timeout(timeout_ms: int, tick_ms: int) -> None:
    """
    Set the broker's consumer timeout and how often a channel checks it;
    both are read when a channel opens.
    """
    rabbitmqctl(
        "eval",
        f"application:set_env(rabbit, consumer_timeout, {timeout_ms}), "
        f"application:set_env(rabbit, channel_tick_interval, {tick_ms}).",
    )


def lower_consumer_timeout(test: TestCase, timeout_ms: int = 2000) -> None:
    """
    Lower the consumer timeout for channels opened from now on, until
    :py:func:`restore_consumer_timeout` or the end of ``test``.
    """
    set_consumer_timeout(timeout_ms, 500)
    test.addCleanup(restore_consumer_timeout)


def restore_consumer_timeout() -> None:
    set_consumer_timeout(DEFAULT_CONSUMER_TIMEOUT_MS, DEFAULT_CHANNEL_TICK_MS)


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await deferLater(reactor, 0.05, lambda: None)


class ChannelClosedByBrokerTests(TestCase):
    timeout = 60

    async def _start(self) -> None:
        self.connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        self.queue = unique_queue()
        self.topology = Topology(exchange=f"{self.queue}-x", queue=self.queue)
        self.deliveries: list[Delivery] = []
        self.consumer = Consumer(self.connection, self.topology, 10, self.deliveries.append)
        self.publisher = Publisher(self.connection, self.topology, confirm_timeout=10)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)
        self.addCleanup(self._delete)
        await self.connection.when_connected(fail_after=3)
        await until(lambda: self.consumer.consuming, 10, "consuming")

    async def _delete(self) -> None:
        await self.consumer.stop()
        protocol = await self.connection.when_connected(fail_after=3)
        channel = await protocol.open_channel()
        for queue in (self.topology.queue, self.topology.dead_letter_queue):
            await channel.queue_delete(queue=queue)

    @defer.inlineCallbacks
    def test_consumes_again_after_consumer_timeout(self) -> Any:
        """
        A delivery held past the consumer timeout makes the broker close
        the channel (406); ``consuming`` turns false, the consumer opens a
        new channel, the message comes again, and new messages arrive.
        """
        lower_consumer_timeout(self)
        yield defer.ensureDeferred(self._start())
        first = TaskMessage(id="00000000-0000-4000-8000-000000000001", task="t")
        yield defer.ensureDeferred(self.publisher.publish(first))
        yield defer.ensureDeferred(until(lambda: self.deliveries, 10, "first delivery"))
        held = self.deliveries[0]
        # Held unacknowledged: the broker closes the channel.
        yield defer.ensureDeferred(until(lambda: held.channel.closed, 15, "channel closed"))
        restore_consumer_timeout()  # the new channel gets the default
        yield defer.ensureDeferred(
            until(lambda: len(self.deliveries) >= 2, 15, "the message delivered again")
        )
        again = self.deliveries[1]
        self.assertTrue(again.redelivered)
        self.assertEqual(again.body, held.body)
        self.assertIsNot(again.channel, held.channel)
        self.assertTrue(self.consumer.consuming)
        held.ack()  # on the closed channel: nothing is sent, nothing fails
        again.ack()
        second = TaskMessage(id="00000000-0000-4000-8000-000000000002", task="t")
        yield defer.ensureDeferred(self.publisher.publish(second))
        yield defer.ensureDeferred(until(lambda: len(self.deliveries) >= 3, 10, "a new message"))
        self.assertEqual(TaskMessage.decode(self.deliveries[2].body).id, second.id)
        self.deliveries[2].ack()

    @defer.inlineCallbacks
    def test_consuming_is_false_while_the_channel_is_gone(self) -> Any:
        """
        From the broker's close until the consumer consumes again on a new
        channel, ``consuming`` is false.
        """
        lower_consumer_timeout(self)
        yield defer.ensureDeferred(self._start())
        message = TaskMessage(id="00000000-0000-4000-8000-000000000003", task="t")
        yield defer.ensureDeferred(self.publisher.publish(message))
        yield defer.ensureDeferred(until(lambda: self.deliveries, 10, "delivery"))
        held = self.deliveries[0]
        states: list[bool] = []

        def watch(reason: Any) -> None:
            states.append(self.consumer.consuming)

        held.channel.on_close(watch)
        yield defer.ensureDeferred(until(lambda: states, 15, "channel closed"))
        self.assertEqual(states, [False])
        restore_consumer_timeout()
        yield defer.ensureDeferred(until(lambda: self.consumer.consuming, 15, "consuming again"))
        yield defer.ensureDeferred(until(lambda: len(self.deliveries) >= 2, 15, "redelivery"))
        self.deliveries[1].ack()
