"""
Tests of publishing a batch in one write with its confirms tracked together
(:py:meth:`BrokerChannel.publish_batch`, :py:meth:`Publisher.publish_batch`),
the client's publish path (issue #14).
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from txamqp.client import Closed

from tests.unit.test_protocol import ProtocolTestCase
from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerConnection,
    BrokerUnavailable,
    Publisher,
    PublishRefused,
    PublishUncertain,
    Topology,
)
from twistedq.amqp.codec import FRAME_METHOD
from twistedq.amqp.protocol import PublishNacked, Unroutable
from twistedq.message import TaskMessage, new_task_id


class CountingTransportMixin:
    def count_writes(self):
        writes = []
        original = self.transport.write

        def write(data):
            writes.append(data)
            original(data)

        self.transport.write = write
        return writes


class ChannelBatchTests(ProtocolTestCase, CountingTransportMixin):
    def setUp(self):
        super().setUp()
        self.handshake()
        self.channel = self.successResultOf(self.protocol.channel(1))
        self.channel.confirming = True

    def contents(self, count):
        return [(b"body %d" % i, {"delivery-mode": 2, "message-id": f"m{i}"}) for i in range(count)]

    def test_one_write_same_frames(self):
        """
        A batch is written in one write, frame for frame what publishing
        each message alone writes.
        """
        writes = self.count_writes()
        batch = self.channel.publish_batch("ex", "rk", self.contents(3), mandatory=True)
        self.assertEqual(len(writes), 1)
        together = self.transport.value()
        self.transport.clear()
        for body, properties in self.contents(3):
            self.channel.publish("ex", "rk", body, properties, mandatory=True)
        self.assertEqual(together, self.transport.value())
        self.assertEqual(batch.left, 3)
        self.assertEqual(sorted(self.channel.unconfirmed)[:3], [1, 2, 3])

    def test_settled_together(self):
        """
        The batch's Deferred fires once every message is settled, with
        None for each confirmed one and the error of each refused one: a
        nack, a return (Unroutable) and confirms, by single and multiple
        acks, mixed with a single publish on the same channel.
        """
        before = self.channel.publish("ex", "rk", b"alone", {})
        batch = self.channel.publish_batch("ex", "rk", self.contents(4), mandatory=True)
        after = self.channel.publish("ex", "rk", b"after", {})
        self.receive(1, "basic", "ack", 2, True)  # before and m0
        self.successResultOf(before)
        self.assertNoResult(batch.done)
        self.channel.note_return("m2", 312, "NO_ROUTE", "rk")
        self.receive(1, "basic", "nack", 3, False, False)  # m1
        self.receive(1, "basic", "ack", 5, True)  # m2 (returned), m3
        results = self.successResultOf(batch.done)
        self.assertIsNone(results[0])
        self.assertIsInstance(results[1], PublishNacked)
        self.assertIsInstance(results[2], Unroutable)
        self.assertIsNone(results[3])
        self.assertNoResult(after)
        self.assertEqual(list(self.channel.unconfirmed), [6])
        self.assertEqual(self.channel._mandatory, {})
        self.assertEqual(self.channel._mandatory_ids, {})

    def test_close_fails_unsettled(self):
        """
        When the connection is lost, the messages not yet settled fail
        with the closed error; those settled keep their result.
        """
        batch = self.channel.publish_batch("ex", "rk", self.contents(2))
        self.receive(1, "basic", "ack", 1, False)
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))
        results = self.successResultOf(batch.done)
        self.assertIsNone(results[0])
        self.assertIsInstance(results[1], Closed)

    def test_closed_channel_raises(self):
        """
        On a closed channel nothing is written: the call raises the closed
        error.
        """
        self.receive(1, "channel", "close", 406, "PRECONDITION_FAILED", 60, 40)
        self.transport.clear()
        self.assertRaises(Closed, self.channel.publish_batch, "ex", "rk", self.contents(2))
        self.assertEqual(self.transport.value(), b"")

    def test_not_confirming(self):
        """
        On a channel not in confirm mode the batch is settled at once.
        """
        self.channel.confirming = False
        batch = self.channel.publish_batch("ex", "rk", self.contents(2))
        self.assertEqual(self.successResultOf(batch.done), [None, None])
        methods = [kind for kind, _, _ in self.written_frames() if kind == FRAME_METHOD]
        self.assertEqual(len(methods), 2)

    def test_empty(self):
        """
        An empty batch writes nothing that matters and is settled.
        """
        batch = self.channel.publish_batch("ex", "rk", [])
        self.assertEqual(self.successResultOf(batch.done), [])


class PublisherBatchTests(ProtocolTestCase):
    """
    :py:meth:`Publisher.publish_batch` on a connected channel.
    """

    def setUp(self):
        super().setUp()
        self.handshake()
        self.channel = self.successResultOf(self.protocol.channel(1))
        self.channel.confirming = True
        self.connection = BrokerConnection(BrokerAddress(), self.clock, endpoint=object())
        self.publisher = Publisher(self.connection, Topology(), confirm_timeout=5)

        async def ready(queue):
            return self.channel

        self.publisher._ready_channel = ready

    def encoded(self, count):
        messages = [TaskMessage(id=new_task_id(), task="noop") for _ in range(count)]
        return [(m, m.encode()) for m in messages]

    def test_timeout_uncertain_for_unsettled(self):
        """
        After ``confirm_timeout`` the messages without a confirm are
        uncertain, those confirmed are not; one timer for the batch.
        """
        encoded = self.encoded(3)
        heartbeats = len(self.clock.getDelayedCalls())
        d = defer.Deferred.fromCoroutine(self.publisher.publish_batch(encoded))
        self.assertEqual(len(self.clock.getDelayedCalls()), heartbeats + 1)
        self.receive(1, "basic", "ack", 2, True)
        self.assertNoResult(d)
        self.clock.advance(5)
        results = self.successResultOf(d)
        self.assertEqual(results[:2], [None, None])
        self.assertIsInstance(results[2], PublishUncertain)
        self.assertEqual(results[2].task_id, encoded[2][0].id)

    def test_confirmed_cancels_timer(self):
        """
        A batch confirmed in time leaves no timer behind.
        """
        heartbeats = self.clock.getDelayedCalls()
        d = defer.Deferred.fromCoroutine(self.publisher.publish_batch(self.encoded(2)))
        self.receive(1, "basic", "ack", 2, True)
        self.assertEqual(self.successResultOf(d), [None, None])
        self.assertEqual(self.clock.getDelayedCalls(), heartbeats)

    def test_nack_refused_naming_the_task(self):
        """
        A message the broker refuses (basic.nack) is PublishRefused naming
        its task, the others of the batch confirmed.
        """
        encoded = self.encoded(2)
        d = defer.Deferred.fromCoroutine(self.publisher.publish_batch(encoded))
        self.receive(1, "basic", "ack", 1, False)
        self.receive(1, "basic", "nack", 2, False, False)
        first, second = self.successResultOf(d)
        self.assertIsNone(first)
        self.assertIsInstance(second, PublishRefused)
        self.assertEqual(second.task_id, encoded[1][0].id)

    def test_lost_connection_uncertain(self):
        """
        A message sent but not confirmed when the connection is lost is
        uncertain, with the reason.
        """
        encoded = self.encoded(1)
        d = defer.Deferred.fromCoroutine(self.publisher.publish_batch(encoded))
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))
        (result,) = self.successResultOf(d)
        self.assertIsInstance(result, PublishUncertain)
        self.assertIn("closed after it was sent", str(result))

    def test_closed_channel_unavailable(self):
        """
        A channel closed before the batch was written: every message is
        surely not published.
        """
        self.receive(1, "channel", "close", 406, "PRECONDITION_FAILED", 60, 40)
        results = self.successResultOf(
            defer.Deferred.fromCoroutine(self.publisher.publish_batch(self.encoded(2)))
        )
        self.assertEqual([type(r) for r in results], [BrokerUnavailable, BrokerUnavailable])


class OpenChannelTests(ProtocolTestCase):
    """
    A publish on the open channel of a connection in service writes at
    once, without waiting for the connection.
    """

    def setUp(self):
        super().setUp()
        self.handshake()
        self.channel = self.successResultOf(self.protocol.channel(1))
        self.channel.confirming = True
        self.connection = BrokerConnection(BrokerAddress(), self.clock, endpoint=object())
        self.publisher = Publisher(self.connection, Topology(), confirm_timeout=5)
        self.publisher._channel = self.channel
        self.publisher._declared = {"twistedq"}

    def encoded(self, count):
        messages = [TaskMessage(id=new_task_id(), task="noop") for _ in range(count)]
        return [(m, m.encode()) for m in messages]

    def test_written_at_once(self):
        """
        The batch is written in the call, with the confirm's timer as the
        only delayed call added.
        """
        self.connection.running = True
        heartbeats = len(self.clock.getDelayedCalls())
        d = defer.Deferred.fromCoroutine(self.publisher.publish_batch(self.encoded(2)))
        methods = [kind for kind, _, _ in self.written_frames() if kind == FRAME_METHOD]
        self.assertEqual(len(methods), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), heartbeats + 1)
        self.receive(1, "basic", "ack", 2, True)
        self.assertEqual(self.successResultOf(d), [None, None])

    def test_stopped_connection_not_used(self):
        """
        Once the connection is stopped its channel is not used, even if
        still open: nothing is written, the messages are unavailable.
        """
        self.connection.running = False
        self.connection._stopping = True
        results = self.successResultOf(
            defer.Deferred.fromCoroutine(self.publisher.publish_batch(self.encoded(1)))
        )
        self.assertIsInstance(results[0], BrokerUnavailable)
        self.assertEqual(self.transport.value(), b"")

    def test_queue_not_declared_waits(self):
        """
        A queue not declared on this connection yet is not published to
        without the declaration.
        """
        self.connection.running = True
        self.assertIsNone(self.publisher._open_channel("other"))
        self.assertIs(self.publisher._open_channel("twistedq"), self.channel)
