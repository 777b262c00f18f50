"""
Switching a deployment's queues to another type (``--queue-type``) on a
real RabbitMQ: every queue that exists (task, dead-letter, delay queues)
is checked before any is declared, so a refused switch leaves nothing
half converted, and the error names every queue that differs at once,
with the option behind it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.integration.servers import amqp_url, unique_queue
from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerConnection,
    QueueMismatch,
    Topology,
    queue_exists,
)
from twistedq.amqp.protocol import BrokerProtocol


class ConversionTests(TestCase):
    timeout = 60

    async def _connect(self) -> None:
        self.connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)
        self.protocol: BrokerProtocol = await self.connection.when_connected(fail_after=3)
        self.queue = unique_queue()
        self.addCleanup(self._delete)

    def setUp(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._connect())

    def topology(self, **arguments: Any) -> Topology:
        return Topology(exchange=self.queue, queue=self.queue, **arguments)

    async def _delete(self) -> None:
        if self.protocol.closed:
            return
        channel = await self.protocol.open_channel()
        topology = self.topology()
        names = [self.queue, topology.dead_letter_queue]
        names += [topology.delay_queue(1 << step) for step in range(21)]
        for name in names:
            await channel.queue_delete(queue=name)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(exchange=exchange)

    async def declare(self, topology: Topology, delay: int | None = None) -> None:
        channel = await self.protocol.open_channel()
        await topology.declare(channel)
        if delay is not None:
            await topology.declare_delay_queue(channel, delay)
        await channel.channel_close()

    async def test_classic_to_quorum(self) -> None:
        """
        A classic deployment (task, dead-letter and a delay queue in use)
        restarted with ``--queue-type quorum``: one error names the three
        queues, each as a classic queue declared quorum here through
        ``--queue-type``, and what to do for all of them; nothing was
        declared (after deleting only the dead-letter queue, the next try
        refuses again without re-creating it as quorum).
        """
        await self.declare(self.topology(queue_type="classic"), delay=64)
        quorum = self.topology(queue_type="quorum", delivery_limit=3)
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(quorum)
        text = str(caught.exception)
        dead, delay = f"{self.queue}.dead", f"{self.queue}.delay.64"
        for name in (self.queue, dead, delay):
            self.assertIn(
                f"queue {name!r} exists as a classic queue, declared quorum here "
                "(x-queue-type (--queue-type))",
                text,
            )
            self.assertIn(f"rabbitmqctl delete_queue {name}", text)
        self.assertEqual(
            sorted(m.queue for m in caught.exception.mismatches), sorted([self.queue, dead, delay])
        )
        self.assertFalse(self.protocol.closed)

        channel = await self.protocol.open_channel()
        await channel.queue_delete(queue=dead)
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(quorum)
        self.assertNotIn(repr(dead), str(caught.exception))
        self.assertFalse(await queue_exists(self.protocol, dead))

    async def test_quorum_to_classic(self) -> None:
        """
        The other way: quorum queues refused by a classic daemon, each
        named with ``--queue-type``.
        """
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(self.topology(queue_type="classic"))
        text = str(caught.exception)
        for name in (self.queue, f"{self.queue}.dead"):
            self.assertIn(
                f"queue {name!r} exists as a quorum queue, declared classic here "
                "(x-queue-type (--queue-type))",
                text,
            )

    async def test_same_type_other_limit(self) -> None:
        """
        The same type with another ``--task-attempts``: only the task
        queue differs, named with its option; a matching topology passes.
        """
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3), delay=2)
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(self.topology(queue_type="quorum", delivery_limit=5))
        self.assertEqual([m.queue for m in caught.exception.mismatches], [self.queue])
        self.assertIn("x-delivery-limit (--task-attempts)", str(caught.exception))
