"""
Tests that a task the daemon sends through a delay queue (an ETA past
``--hold-eta``, a rate limit's wait) is received once: the daemon marks
such a hop with :py:data:`~twistedq.amqp.broker.HOP_HEADER` and does not
report it as received again (``task_received`` fired once per hop).
"""

import datetime

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeDelivery, FakePool, task_id
from tests.unit.test_publisher_channel import FakeChannel, FakeConnection, FakeProtocol
from twistedq.amqp.broker import HOP_HEADER, Publisher, Topology
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind
from twistedq.message import TaskMessage


class RecordingChannel(FakeChannel):
    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.client.properties.append((routing_key, properties))
        return super().publish(exchange, routing_key, body, properties, mandatory)


class RecordingProtocol(FakeProtocol):
    def __init__(self):
        super().__init__()
        self.properties = []

    def open_channel(self):
        channel = RecordingChannel(self, self.refused)
        self.channels.append(channel)
        return defer.succeed(channel)


class PublisherHopTests(SynchronousTestCase):
    def test_hop_marked(self):
        """
        ``publish_later(..., hop=True)`` marks the message, into a delay
        queue or (under a second) the queue itself; a retry is not marked.
        """
        protocol = RecordingProtocol()
        connection = FakeConnection(protocol)
        publisher = Publisher(connection, Topology(queue_type="classic"))
        self.successResultOf(defer.ensureDeferred(connection.hooks[0](protocol)))
        message = TaskMessage(id=task_id(1), task="add")
        for delay, hop in ((5.0, True), (0.5, True), (5.0, False)):
            self.successResultOf(
                defer.ensureDeferred(publisher.publish_later(message, delay, hop=hop))
            )
        marks = [(properties.get("headers") or {}).get(HOP_HEADER) for _, properties in
                 protocol.properties]  # fmt: skip
        self.assertEqual(marks, [1, 1, None])
        self.assertEqual(protocol.properties[1][0], "twistedq")


class DaemonHopTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000.0)
        self.pool = FakePool(idle=10)
        self.sent = []
        self.dispatcher = Dispatcher(
            self.pool,
            MemoryBackend(self.clock),
            self.clock,
            DispatchSettings(max_batch=1, hold_eta=10.0),
            publish_later=self.publish_later,
        )
        self.received = []
        self.dispatcher.events.subscribe(
            lambda event: (
                self.received.append(event.task_id) if event.kind is EventKind.RECEIVED else None
            )
        )

    def publish_later(self, message, delay, **options):
        self.sent.append((message.id, options))
        return defer.succeed(None)

    def test_eta_hop_marked_and_received_once(self):
        """
        A task whose ETA is an hour away goes to a delay queue marked as a
        hop; when it comes back with the mark it is not received again.
        """
        eta = datetime.datetime.fromtimestamp(self.clock.seconds() + 3600, datetime.UTC)
        message = TaskMessage(id=task_id(1), task="add", eta=eta.isoformat())
        self.dispatcher.deliver(FakeDelivery(message.encode()))
        self.assertEqual(self.sent, [(task_id(1), {"hop": True})])
        self.clock.advance(3600)
        self.dispatcher.deliver(FakeDelivery(message.encode(), headers={HOP_HEADER: 1}))
        self.assertEqual(self.received, [task_id(1)])
        self.assertEqual(len(self.pool.batches), 1)

    def test_rate_limit_hop_marked(self):
        """
        A task sent to a delay queue for its rate limit is marked too.
        """
        for number in (1, 2):
            message = TaskMessage(id=task_id(number), task="add", rate_limit="1/h")
            self.dispatcher.deliver(FakeDelivery(message.encode()))
        self.assertEqual(self.sent, [(task_id(2), {"hop": True})])
        self.assertEqual(self.received, [task_id(1), task_id(2)])
