"""
``twistedq status``'s look at the delay queues on a real RabbitMQ: the
delay queues that exist, their messages, and the age of the oldest from
the time stamp the publisher put on it; looking leaves the message where
it was.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.integration.servers import amqp_url, unique_queue
from twistedq.amqp.broker import BrokerAddress, BrokerConnection, Publisher, Topology
from twistedq.cli.session import DelayQueue, Session
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id


class DelayQueueLookTests(TestCase):
    timeout = 60

    async def _publish(self) -> None:
        self.queue = unique_queue()
        self.topology = Topology(exchange=self.queue, queue=self.queue)
        connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        self.publisher = Publisher(connection, self.topology)
        connection.startService()
        self.addCleanup(connection.stopService)
        self.addCleanup(self._delete, connection)
        await connection.when_connected(fail_after=3)
        for _ in range(2):
            await self.publisher.publish_later(TaskMessage(id=new_task_id(), task="t"), 100)

    async def _delete(self, connection: BrokerConnection) -> None:
        protocol = await connection.when_connected(fail_after=3)
        channel = await protocol.open_channel()
        for name in (self.queue, self.topology.dead_letter_queue, self.topology.delay_queue(64)):
            await channel.queue_delete(queue=name)
        for exchange in (self.topology.exchange, self.topology.dead_letter_exchange):
            await channel.exchange_delete(exchange=exchange)

    def setUp(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._publish())

    async def look(self) -> list[DelayQueue]:
        settings = Settings(broker_url=amqp_url(), queue=self.queue, exchange=self.queue)
        session = Session(settings, reactor, timeout=10.0)
        try:
            return await session.delay_queues(session.topology)
        finally:
            await session.close()

    async def test_listed_with_age(self) -> None:
        """
        The one delay queue used (64 s) is listed with its two messages,
        the oldest seconds old, not overdue; a second look finds them both
        still there.
        """
        found = await self.look()
        self.assertEqual(
            [(d.name, d.seconds, d.ready) for d in found], [(f"{self.queue}.delay.64", 64, 2)]
        )
        age = found[0].oldest_age
        assert age is not None
        self.assertLess(age, 30)
        self.assertFalse(found[0].overdue)
        again = await self.look()
        self.assertEqual(again[0].ready, 2)
