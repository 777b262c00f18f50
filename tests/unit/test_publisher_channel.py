"""
Tests for :py:class:`twistedq.amqp.broker.Publisher` after the broker
closes its channel with a channel-level error (403 for a queue in the
reserved ``amq.`` prefix, 406, 404): the publish that caused it fails
for good with :py:class:`~twistedq.amqp.broker.ChannelRefused`, and the
next publish opens a new channel instead of failing for ever with
"the publishing channel is closed".
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import ChannelClosed

from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerUnavailable,
    ChannelRefused,
    Publisher,
    Topology,
)
from twistedq.message import MessageError, TaskMessage, new_task_id


class Reply:
    """
    A ``channel.close`` method as txAMQP hands it to ``ChannelClosed``.
    """

    def __init__(self, code, text):
        self.fields = [code, text, 50, 10]


class FakeChannel:
    """
    A publishing channel the broker closes on a declare of a queue named
    in ``refused``.
    """

    def __init__(self, client, refused):
        self.client = client
        self.refused = refused
        self.closed = False
        self.confirming = False
        self.declared = []
        self.published = []

    def enable_confirms(self):
        self.confirming = True
        return defer.succeed(None)

    def exchange_declare(self, **arguments):
        return self._call()

    def queue_bind(self, **arguments):
        return self._call()

    def queue_declare(self, queue, **arguments):
        if queue in self.refused:
            self.closed = True
            text = f"ACCESS_REFUSED - queue name '{queue}' refused"
            return defer.fail(ChannelClosed(Reply(403, text)))
        self.declared.append(queue)
        return self._call()

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        if self.closed:
            return defer.fail(ChannelClosed(Reply(403, "closed")))
        self.published.append(routing_key)
        return defer.succeed(None)

    def _call(self):
        if self.closed:
            return defer.fail(ChannelClosed(Reply(403, "closed")))
        return defer.succeed(None)


class FakeProtocol:
    def __init__(self, refused=()):
        self.closed = False
        self.refused = refused
        self.channels = []

    def open_channel(self):
        channel = FakeChannel(self, self.refused)
        self.channels.append(channel)
        return defer.succeed(channel)


class FakeConnection:
    """
    A connection that is always up on ``protocol``.
    """

    #: In service (a BrokerConnection is a Service).
    running = True

    def __init__(self, protocol):
        self.protocol = protocol
        self.reactor = Clock()
        self.address = BrokerAddress(host="broker.example")
        self.where = str(self.address)
        self.last_failure = None
        self.failures = 0
        self.hooks = []

    def add_connect_hook(self, hook):
        self.hooks.append(hook)

    def retry_now(self):
        pass

    def when_connected(self, fail_after=None):
        return defer.succeed(self.protocol)


def message():
    return TaskMessage(id=new_task_id(), task="add")


class ChannelRefusedTests(SynchronousTestCase):
    def setUp(self):
        # A queue the fake broker refuses, though the client's rules pass it.
        self.protocol = FakeProtocol(refused=("forbidden", "forbidden.dead"))
        self.connection = FakeConnection(self.protocol)
        self.publisher = Publisher(self.connection, Topology(queue_type="classic"))
        self.successResultOf(defer.ensureDeferred(self.connection.hooks[0](self.protocol)))

    def publish(self, queue=None):
        return defer.ensureDeferred(self.publisher.publish(message(), queue))

    def test_refused_then_a_new_channel(self):
        """
        The publish whose declare made the broker close the channel fails
        with ChannelRefused, which names the queue and the broker's reply;
        the next publish opens a new channel in confirm mode and succeeds.
        """
        failure = self.failureResultOf(self.publish("forbidden"), ChannelRefused)
        self.assertNotIsInstance(failure.value, BrokerUnavailable)
        self.assertIn("forbidden", str(failure.value))
        self.assertIn("403", str(failure.value))
        self.assertIn("ACCESS_REFUSED", str(failure.value))
        self.successResultOf(self.publish())
        self.successResultOf(self.publish("other"))
        self.assertEqual(len(self.protocol.channels), 2)
        second = self.protocol.channels[1]
        self.assertTrue(second.confirming)
        self.assertEqual(second.published, ["twistedq", "other"])

    def test_refused_again(self):
        """
        The refused queue is not taken as declared: publishing to it again
        is refused again, and each time a new channel serves the others.
        """
        self.failureResultOf(self.publish("forbidden"), ChannelRefused)
        self.failureResultOf(self.publish("forbidden"), ChannelRefused)
        self.successResultOf(self.publish())
        self.assertEqual(len(self.protocol.channels), 3)

    def test_closed_otherwise(self):
        """
        A channel the broker closed for another reason (a publish it
        refused) is replaced on the next publish.
        """
        self.protocol.channels[0].closed = True
        self.successResultOf(self.publish())
        self.assertEqual(len(self.protocol.channels), 2)

    def test_connection_closed(self):
        """
        With its connection closed, a publish still fails with
        BrokerUnavailable (nothing sent, publishing again is safe).
        """
        self.protocol.closed = True
        self.protocol.channels[0].closed = True
        self.failureResultOf(self.publish(), BrokerUnavailable)

    def test_bad_queue_name(self):
        """
        A queue name the broker would refuse or could not declare
        (reserved prefix, too long) is refused as a MessageError before
        anything is sent, as publish and publish_later document.
        """
        for queue in ("amq.typo", "q" * 251):
            failure = self.failureResultOf(self.publish(queue), MessageError)
            self.assertIn("is not a queue name", str(failure.value))
        self.assertEqual(len(self.protocol.channels), 1)
        self.assertEqual(self.protocol.channels[0].published, [])
