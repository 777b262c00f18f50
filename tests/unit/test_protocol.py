"""
Tests for :py:obj:`twistedq.amqp.protocol`: the mended txAMQP client driven
frame by frame on a :py:obj:`StringTransport` with a :py:obj:`Clock`.
"""

import struct

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import ChannelClosed, Closed

from twistedq.amqp.codec import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    MethodCodec,
    decode_table,
)
from twistedq.amqp.protocol import (
    CLIENT_CAPABILITIES,
    BrokerDelegate,
    BrokerProtocol,
    ChannelsExhausted,
    PublishNacked,
    load_spec,
)

SERVER_PROPERTIES = {
    "product": "RabbitMQ",
    "version": "3.13.0",
    "capabilities": {"publisher_confirms": True, "consumer_cancel_notify": True},
}


def split_frames(data):
    """
    Split bytes into ``(type, channel, payload)`` frames.
    """
    frames = []
    offset = 0
    while offset < len(data):
        kind, channel, size = struct.unpack_from("!BHI", data, offset)
        offset += 7
        payload = data[offset : offset + size]
        if len(payload) != size:
            raise AssertionError("truncated frame")
        offset += size
        if data[offset] != FRAME_END:
            raise AssertionError("missing frame-end")
        offset += 1
        frames.append((kind, channel, payload))
    return frames


def frame(kind, channel, payload, end=FRAME_END):
    return struct.pack("!BHI", kind, channel, len(payload)) + payload + bytes([end])


class FakeConsumer:
    """
    Records what the protocol hands a consumer.
    """

    def __init__(self, fail=None):
        self.delivered = []
        self.cancels = []
        self.lost = []
        self.fail = fail

    def deliver(self, channel, message):
        if self.fail is not None:
            raise self.fail
        self.delivered.append((channel, message))

    def cancelled(self, channel, message):
        self.cancels.append((channel, message))

    def connection_lost(self, reason):
        self.lost.append(reason)


class ProtocolTestCase(SynchronousTestCase):
    """
    A :py:obj:`BrokerProtocol` connected to a :py:obj:`StringTransport`.
    """

    def setUp(self):
        self.clock = Clock()
        self.spec = load_spec()
        self.codec = MethodCodec(self.spec)
        self.transport = StringTransport()
        self.protocol = BrokerProtocol(
            BrokerDelegate(), "/", self.spec, heartbeat=30, clock=self.clock
        )
        self.protocol.makeConnection(self.transport)

    def method(self, klass, name):
        return self.spec.classes.byname[klass].methods.byname[name]

    def method_frame(self, channel, klass, name, *args):
        return self.codec.encode_method(channel, self.method(klass, name), args)

    def receive(self, channel, klass, name, *args):
        """
        Feed the protocol one method frame from the server.
        """
        self.protocol.dataReceived(self.method_frame(channel, klass, name, *args))

    def written_frames(self):
        """
        The frames written since the last call, protocol header removed.
        """
        data = self.transport.value()
        self.transport.clear()
        if data.startswith(b"AMQP"):
            data = data[8:]
        return split_frames(data)

    def written_methods(self):
        """
        The method frames written since the last call, as
        ``(channel, "class.method", args)``.
        """
        methods = []
        for kind, channel, payload in self.written_frames():
            if kind == FRAME_METHOD:
                method, args = self.codec.decode_method(payload)
                methods.append((channel, f"{method.klass.name}.{method.name}", args))
        return methods

    def start_and_tune(self, heartbeat=10, frame_max=65536):
        """
        Log in and receive connection.start and connection.tune.
        """
        opened = self.protocol.authenticate("guest", "secret")
        self.receive(0, "connection", "start", 0, 9, SERVER_PROPERTIES, b"PLAIN AMQPLAIN", b"en_US")
        self.receive(0, "connection", "tune", 2047, frame_max, heartbeat)
        return opened

    def handshake(self, heartbeat=10, frame_max=65536):
        """
        The whole connection handshake, open-ok included.
        """
        opened = self.start_and_tune(heartbeat, frame_max)
        self.receive(0, "connection", "open-ok", "")
        self.successResultOf(opened)
        self.transport.clear()

    def deliver_frames(self, channel, tag, delivery_tag, body, chunk, properties=None):
        """
        The frames of one basic.deliver whose body is split in ``chunk``-sized
        body frames.
        """
        basic = self.spec.classes.byname["basic"]
        data = self.method_frame(channel, "basic", "deliver", tag, delivery_tag, False, "ex", "rk")
        data += self.codec.encode_content(channel, basic, body, properties or {}, chunk + 8)
        return data


class HandshakeTests(ProtocolTestCase):
    """
    Logging in: start-ok, tune-ok and connection.open.
    """

    def test_protocol_header(self):
        """
        The client opens with the AMQP protocol header.
        """
        self.assertEqual(self.transport.value()[:4], b"AMQP")
        self.assertEqual(len(self.transport.value()), 8)

    def test_start_ok_capabilities(self):
        """
        start-ok carries client properties whose capabilities include
        publisher confirms, consumer cancel notify, connection.blocked and
        basic.nack, all True.
        """
        self.protocol.authenticate("guest", "secret")
        self.transport.clear()
        self.receive(0, "connection", "start", 0, 9, SERVER_PROPERTIES, b"PLAIN", b"en_US")
        [(channel, name, args)] = self.written_methods()
        self.assertEqual((channel, name), (0, "connection.start-ok"))
        client_properties, mechanism, response, locale = args
        self.assertEqual(client_properties["product"], "twistedq")
        capabilities = client_properties["capabilities"]
        for capability in (
            "publisher_confirms",
            "consumer_cancel_notify",
            "connection.blocked",
            "basic.nack",
        ):
            self.assertIs(capabilities[capability], True, capability)
        self.assertEqual(capabilities, CLIENT_CAPABILITIES)
        self.assertEqual((mechanism, response, locale), ("PLAIN", b"\0guest\0secret", "en_US"))
        self.assertEqual(self.protocol.server_properties, SERVER_PROPERTIES)

    def test_start_ok_table_bytes(self):
        """
        The client-properties table written decodes with the codec's own
        ``decode_table`` from the raw frame.
        """
        self.protocol.authenticate("guest", "guest")
        self.transport.clear()
        self.receive(0, "connection", "start", 0, 9, SERVER_PROPERTIES, b"PLAIN", b"en_US")
        [(_, _, payload)] = self.written_frames()
        table, _ = decode_table(payload, 4)
        self.assertIs(table["capabilities"]["publisher_confirms"], True)

    def test_tune_ok(self):
        """
        tune-ok carries the server's frame_max 65536 and heartbeat 10 (both
        smaller than ours), and the protocol adopts the frame_max.
        """
        self.protocol.authenticate("guest", "guest")
        self.receive(0, "connection", "start", 0, 9, {}, b"PLAIN", b"en_US")
        self.transport.clear()
        self.receive(0, "connection", "tune", 0, 65536, 10)
        methods = self.written_methods()
        self.assertEqual(methods[0], (0, "connection.tune-ok", (2047, 65536, 10)))
        self.assertEqual(methods[1], (0, "connection.open", ("/", "", False)))
        self.assertEqual(self.protocol.frame_max, 65536)
        self.assertEqual(self.protocol.heartbeat_interval, 10)

    def test_open(self):
        """
        The Deferred of ``authenticate`` fires with open-ok once the server
        answers connection.open.
        """
        opened = self.start_and_tune()
        self.assertNoResult(opened)
        self.receive(0, "connection", "open-ok", "")
        self.assertEqual(self.successResultOf(opened).method.name, "open-ok")

    def test_no_deprecation_warning(self):
        """
        The handshake emits no DeprecationWarning (no ``defer.returnValue``).
        """
        self.handshake()
        self.successResultOf(self.protocol.channel(1))
        warnings = [
            w for w in self.flushWarnings() if issubclass(w["category"], DeprecationWarning)
        ]
        self.assertEqual(warnings, [])


class DeliveryTests(ProtocolTestCase):
    """
    Content is assembled from its frames and handed to the consumer.
    """

    def setUp(self):
        super().setUp()
        self.handshake()
        self.consumer = FakeConsumer()
        self.protocol.consumers["ctag"] = self.consumer

    def test_multi_frame_body(self):
        """
        A body split over several frames, the last not valid UTF-8, reaches the
        consumer as the exact bytes.
        """
        body = b"0123456789\xff\xfe\xe2"
        data = self.deliver_frames(1, "ctag", 7, body, 5, {"content-type": "application/json"})
        self.assertEqual(
            [kind for kind, _, _ in split_frames(data)],
            [FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_BODY, FRAME_BODY],
        )
        self.protocol.dataReceived(data)
        [(channel, message)] = self.consumer.delivered
        self.assertEqual(channel.id, 1)
        self.assertEqual(message.content.body, body)
        self.assertIsInstance(message.content.body, bytes)
        self.assertEqual(message.delivery_tag, 7)
        self.assertEqual(message.consumer_tag, "ctag")
        self.assertEqual(message.content.properties, {"content-type": "application/json"})

    def test_utf8_body_stays_bytes(self):
        """
        A body that happens to be UTF-8 is still ``bytes``.
        """
        self.protocol.dataReceived(self.deliver_frames(1, "ctag", 1, b'{"a": 1}', 100))
        [(_, message)] = self.consumer.delivered
        self.assertEqual(message.content.body, b'{"a": 1}')
        self.assertIsInstance(message.content.body, bytes)

    def test_empty_body(self):
        """
        A message with an empty body is delivered at its header.
        """
        self.protocol.dataReceived(self.deliver_frames(1, "ctag", 1, b"", 100))
        [(_, message)] = self.consumer.delivered
        self.assertEqual(message.content.body, b"")

    def test_one_byte_at_a_time(self):
        """
        Frames fed one byte at a time are assembled just the same.
        """
        body = b"x" * 50 + b"\x80"
        data = self.deliver_frames(1, "ctag", 3, body, 16)
        data += self.deliver_frames(2, "ctag", 4, b"second", 16)
        for index in range(len(data)):
            self.protocol.dataReceived(data[index : index + 1])
        self.assertEqual(
            [(ch.id, m.delivery_tag, m.content.body) for ch, m in self.consumer.delivered],
            [(1, 3, body), (2, 4, b"second")],
        )

    def test_several_frames_in_one_chunk(self):
        """
        Two whole messages in one read, plus the start of a third, deliver two.
        """
        data = self.deliver_frames(1, "ctag", 1, b"a", 10)
        data += self.deliver_frames(1, "ctag", 2, b"b", 10)
        third = self.deliver_frames(1, "ctag", 3, b"c", 10)
        self.protocol.dataReceived(data + third[:5])
        self.assertEqual([m.delivery_tag for _, m in self.consumer.delivered], [1, 2])
        self.protocol.dataReceived(third[5:])
        self.assertEqual([m.delivery_tag for _, m in self.consumer.delivered], [1, 2, 3])

    def test_interleaved_channels(self):
        """
        Content frames of two channels interleaved are assembled per channel.
        """
        first = split_frames(self.deliver_frames(1, "ctag", 1, b"one-one", 4))
        second = split_frames(self.deliver_frames(2, "ctag", 9, b"two-two", 4))
        for a, b in zip(first, second, strict=True):
            self.protocol.dataReceived(frame(*a) + frame(*b))
        self.assertEqual(
            sorted((ch.id, m.content.body) for ch, m in self.consumer.delivered),
            [(1, b"one-one"), (2, b"two-two")],
        )

    def test_consumer_exception_logged(self):
        """
        An exception raised by a consumer is logged with its traceback and the
        connection stays open and working.
        """
        self.protocol.consumers["bad"] = FakeConsumer(fail=ZeroDivisionError("boom"))
        self.protocol.dataReceived(self.deliver_frames(1, "bad", 1, b"x", 10))
        errors = self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(len(errors), 1)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.dataReceived(self.deliver_frames(1, "ctag", 2, b"y", 10))
        self.assertEqual([m.content.body for _, m in self.consumer.delivered], [b"y"])

    def test_unknown_consumer(self):
        """
        A delivery for an unknown consumer tag reaches no consumer and does not
        drop the connection.
        """
        self.protocol.dataReceived(self.deliver_frames(1, "other", 1, b"x", 10))
        self.assertEqual(self.consumer.delivered, [])
        self.assertFalse(self.transport.disconnecting)

    def test_server_cancel(self):
        """
        basic.cancel from the server calls the consumer's ``cancelled()`` and
        forgets the consumer.
        """
        self.receive(1, "basic", "cancel", "ctag", True)
        [(channel, message)] = self.consumer.cancels
        self.assertEqual((channel.id, message.consumer_tag), (1, "ctag"))
        self.assertNotIn("ctag", self.protocol.consumers)

    def test_connection_lost(self):
        """
        Losing the connection tells every consumer, with the reason.
        """
        reason = Failure(ConnectionLost("gone"))
        self.protocol.connectionLost(reason)
        self.assertEqual(len(self.consumer.lost), 1)
        self.assertEqual(self.protocol.consumers, {})


class ConfirmTests(ProtocolTestCase):
    """
    Publisher confirms settle the Deferreds of :py:obj:`BrokerChannel.publish`.
    """

    def setUp(self):
        super().setUp()
        self.handshake()
        self.channel = self.successResultOf(self.protocol.channel(1))
        self.channel.confirming = True

    def publish(self, count):
        return [
            self.channel.publish("ex", "rk", b"body %d" % i, {"delivery-mode": 2})
            for i in range(count)
        ]

    def test_publish_frames(self):
        """
        ``publish`` writes basic.publish, a header and the body on the channel.
        """
        self.publish(1)
        frames = self.written_frames()
        self.assertEqual([(k, c) for k, c, _ in frames], [(1, 1), (2, 1), (3, 1)])
        method, args = self.codec.decode_method(frames[0][2])
        self.assertEqual((method.name, args), ("publish", (0, "ex", "rk", False, False)))
        self.assertEqual(self.codec.decode_header(frames[1][2])[1:], (6, {"delivery-mode": 2}))
        self.assertEqual(frames[2][2], b"body 0")

    def test_ack_multiple(self):
        """
        basic.ack multiple=True settles every publish up to its tag, and no
        other.
        """
        published = self.publish(3)
        for d in published:
            self.assertNoResult(d)
        self.receive(1, "basic", "ack", 2, True)
        self.assertIsNone(self.successResultOf(published[0]))
        self.assertIsNone(self.successResultOf(published[1]))
        self.assertNoResult(published[2])
        self.assertEqual(sorted(self.channel.unconfirmed), [3])

    def test_ack_single(self):
        """
        basic.ack without multiple settles that publish only.
        """
        published = self.publish(3)
        self.receive(1, "basic", "ack", 2, False)
        self.assertNoResult(published[0])
        self.successResultOf(published[1])
        self.assertNoResult(published[2])

    def test_nack(self):
        """
        basic.nack fails the publishes it covers with :py:obj:`PublishNacked`.
        """
        published = self.publish(3)
        self.receive(1, "basic", "ack", 1, False)
        self.receive(1, "basic", "nack", 3, True, False)
        self.successResultOf(published[0])
        self.failureResultOf(published[1], PublishNacked)
        self.failureResultOf(published[2], PublishNacked)

    def test_ack_other_channel(self):
        """
        A confirm on another channel settles nothing here.
        """
        published = self.publish(1)
        self.receive(2, "basic", "ack", 1, True)
        self.assertNoResult(published[0])

    def test_not_confirming(self):
        """
        On a channel not in confirm mode ``publish`` fires at once.
        """
        self.channel.confirming = False
        [d] = self.publish(1)
        self.assertIsNone(self.successResultOf(d))

    def test_channel_close(self):
        """
        channel.close from the server answers close-ok and fails every
        unconfirmed publish with ``ChannelClosed``.
        """
        published = self.publish(2)
        self.receive(1, "basic", "ack", 1, False)
        self.transport.clear()
        self.receive(1, "channel", "close", 406, "PRECONDITION_FAILED", 60, 40)
        self.successResultOf(published[0])
        self.failureResultOf(published[1], ChannelClosed)
        self.assertEqual(self.written_methods(), [(1, "channel.close-ok", ())])
        self.assertTrue(self.channel.closed)
        self.assertEqual(self.channel.unconfirmed, {})

    def test_channel_numbers_reused(self):
        """
        Once the connection's channel numbers (tuned to 3 here) are used
        up, a new channel takes the number of one the broker closed; with
        none closed, opening one fails with ``ChannelsExhausted``.
        """
        self.protocol.channel_max = 3
        opened = [self.protocol.open_channel() for _ in range(2)]
        for d, number in zip(opened, (2, 3), strict=True):
            self.receive(number, "channel", "open-ok", "")
            self.assertEqual(self.successResultOf(d).id, number)
        self.receive(2, "channel", "close", 403, "ACCESS_REFUSED", 50, 10)
        again = self.protocol.open_channel()
        self.receive(2, "channel", "open-ok", "")
        fresh = self.successResultOf(again)
        self.assertEqual(fresh.id, 2)
        self.assertFalse(fresh.closed)
        self.assertRaises(ChannelsExhausted, self.protocol.open_channel)

    def test_expected_not_found_quiet(self):
        """
        The broker closing with 404 a channel that expects it (a passive
        declare asking whether a queue exists) is no WARNING; any other
        close, and a 404 on another channel, is one.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        logged = []

        def observe(event):
            if event.get("log_namespace") == "twistedq.amqp.protocol":
                logged.append((event["log_level"], event.get("code")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.channel.expects_not_found = True
        self.receive(1, "channel", "close", 404, "NOT_FOUND - no queue 'a.dead'", 50, 10)
        self.assertNotIn((LogLevel.warn, 404), logged)
        self.assertIn((LogLevel.debug, 404), logged)
        other = self.successResultOf(self.protocol.channel(2))
        other.expects_not_found = True
        self.receive(2, "channel", "close", 406, "PRECONDITION_FAILED", 60, 40)
        self.assertIn((LogLevel.warn, 406), logged)

    def test_unexpected_not_found_warns(self):
        """
        A 404 on a channel that does not expect one is a WARNING.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        logged = []

        def observe(event):
            if event.get("log_namespace") == "twistedq.amqp.protocol":
                logged.append((event["log_level"], event.get("code")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.receive(1, "channel", "close", 404, "NOT_FOUND - no queue 'x'", 50, 10)
        self.assertIn((LogLevel.warn, 404), logged)

    def test_publish_after_close(self):
        """
        Publishing on a closed channel fails at once with ``Closed``.
        """
        self.receive(1, "channel", "close", 406, "PRECONDITION_FAILED", 60, 40)
        [d] = self.publish(1)
        self.failureResultOf(d, Closed)

    def test_connection_lost_fails_publishes(self):
        """
        Losing the connection fails every unconfirmed publish.
        """
        published = self.publish(2)
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))
        for d in published:
            self.failureResultOf(d, Closed)


class ConnectionControlTests(ProtocolTestCase):
    """
    connection.blocked/unblocked and protocol errors.
    """

    def setUp(self):
        super().setUp()
        self.handshake()

    def test_blocked(self):
        """
        connection.blocked sets ``blocked`` to the reason, unblocked clears it.
        """
        self.assertIsNone(self.protocol.blocked)
        self.receive(0, "connection", "blocked", "low on memory")
        self.assertEqual(self.protocol.blocked, "low on memory")
        self.receive(0, "connection", "unblocked")
        self.assertIsNone(self.protocol.blocked)

    def test_blocked_without_reason(self):
        """
        connection.blocked with an empty reason still marks the connection
        blocked.
        """
        self.receive(0, "connection", "blocked", "")
        self.assertTrue(self.protocol.blocked)

    def test_missing_frame_end(self):
        """
        A frame without the frame-end octet aborts the connection.
        """
        data = self.method_frame(0, "connection", "blocked", "x")
        self.protocol.dataReceived(data[:-1] + b"\x00")
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.transport.disconnected)
        self.assertIsNone(self.protocol.blocked)

    def test_unknown_frame_type(self):
        """
        A frame of an unknown type aborts the connection.
        """
        self.protocol.dataReceived(frame(42, 0, b"abc"))
        self.assertTrue(self.transport.disconnected)

    def test_body_without_header(self):
        """
        A body frame with no method and header before it aborts the connection.
        """
        self.protocol.dataReceived(frame(FRAME_BODY, 1, b"abc"))
        self.assertTrue(self.transport.disconnected)

    def test_connection_close(self):
        """
        connection.close from the server is answered with close-ok and the
        connection is closed.
        """
        self.receive(0, "connection", "close", 320, "CONNECTION_FORCED", 0, 0)
        self.assertEqual(self.written_methods(), [(0, "connection.close-ok", ())])
        self.assertTrue(self.protocol.closed)
        self.assertTrue(self.transport.disconnecting)


class HeartbeatTests(ProtocolTestCase):
    """
    Heartbeats are sent every half interval; silence for two intervals drops
    the connection.
    """

    def heartbeats(self):
        return [
            (channel, payload)
            for kind, channel, payload in self.written_frames()
            if kind == FRAME_HEARTBEAT
        ]

    def test_heartbeat_sent(self):
        """
        With heartbeat 10, a heartbeat frame is written after 5 s, not before.
        """
        self.handshake(heartbeat=10)
        self.clock.advance(4.9)
        self.assertEqual(self.heartbeats(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.heartbeats(), [(0, b"")])
        self.assertFalse(self.transport.disconnecting)

    def test_silence_aborts(self):
        """
        With no data received for more than 20 s the connection is aborted.
        """
        self.handshake(heartbeat=10)
        self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(5)
        self.assertTrue(self.transport.disconnected)

    def test_data_keeps_alive(self):
        """
        A heartbeat received resets the silence timer.
        """
        self.handshake(heartbeat=10)
        self.clock.advance(15)
        self.protocol.dataReceived(frame(FRAME_HEARTBEAT, 0, b""))
        self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.assertNotEqual(self.heartbeats(), [])

    def test_heartbeat_disabled(self):
        """
        Heartbeat 0 from both sides sends none and never drops.
        """
        self.protocol.requested_heartbeat = 0
        self.handshake(heartbeat=0)
        self.clock.advance(1000)
        self.assertEqual(self.heartbeats(), [])
        self.assertFalse(self.transport.disconnecting)

    def test_connection_lost_stops_heartbeat(self):
        """
        After the connection is lost no more heartbeats are scheduled.
        """
        self.handshake(heartbeat=10)
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(self.clock.getDelayedCalls(), [])
