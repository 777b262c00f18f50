"""
txAMQP 0.8.2, mended.

This is the only module that subclasses txAMQP.  What it mends (the numbers
are those of the project's notes on txAMQP's defects):

 1. the package ships no protocol spec: :py:obj:`load_spec` loads twistedq's own;
 2. publisher confirms closed the connection: the delegate handles
    ``basic.ack`` and ``basic.nack``, and :py:obj:`BrokerChannel.publish` tracks
    publish sequence numbers per channel;
 3. bodies were ``str`` when they happened to be UTF-8, and
 4. multi-frame bodies could be truncated: frames are decoded by
    :py:obj:`twistedq.amqp.codec`, bodies are always ``bytes``;
 5. ``str`` bodies were framed with their length in characters: only
    ``bytes`` bodies are accepted;
 6. field tables knew four types and could hang the connection: the codec
    handles every type;
 7. no client capabilities were sent: they are, and the delegate handles
    ``basic.cancel``, ``connection.blocked`` and ``connection.unblocked``;
 8. an exception while dispatching a method closed the connection without a
    word: it is logged with its traceback;
 9. ``defer.returnValue`` warned on every connect: nothing here uses it.

Incoming frames are assembled synchronously, without a Deferred per frame,
and each outgoing message is written with one ``transport.write``.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp import spec as txamqp_spec
from txamqp.client import Closed, TwistedDelegate
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQChannel, AMQClient
from txamqp.queue import Closed as QueueClosed

from twistedq import __version__
from twistedq.amqp.codec import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEADER_STRUCT,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FrameError,
    MethodCodec,
    heartbeat_frame,
)

__all__ = [
    "CLIENT_CAPABILITIES",
    "CLOSED_ERRORS",
    "BatchConfirms",
    "BrokerChannel",
    "BrokerDelegate",
    "BrokerProtocol",
    "ChannelsExhausted",
    "PublishNacked",
    "Unroutable",
    "load_spec",
]

log = Logger()

#: What twistedq tells the broker it understands.
CLIENT_CAPABILITIES = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "connection.blocked": True,
    "exchange_exchange_bindings": True,
    "authentication_failure_close": True,
}

#: What txAMQP raises when the channel or the connection closes under a
#: call (``Closed``, its ``ConnectionClosed`` and ``ChannelClosed``, and
#: the ``Closed`` of its queues).
CLOSED_ERRORS: tuple[type[Exception], ...] = (Closed, QueueClosed)

#: The largest frame we ask for (RabbitMQ's default).
FRAME_MAX = 131072


@functools.cache
def load_spec() -> Any:
    """
    Load twistedq's AMQP 0-9-1 spec (with RabbitMQ's extensions), once.
    """
    resource = importlib.resources.files("twistedq.amqp").joinpath("amqp0-9-1.xml")
    with importlib.resources.as_file(resource) as path:
        return txamqp_spec.load(str(path))


class Unroutable(Exception):
    """
    The broker could not route a mandatory message to any queue (the queue
    is missing or unbound): nothing will run it.

    :ivar message_id: the message's id (the task id).
    """

    def __init__(self, message_id: str | None, code: int, text: str, routing_key: str) -> None:
        super().__init__(
            f"the broker could not route message {message_id} (routing key {routing_key!r}): "
            f"{code} {text}"
        )
        self.message_id = message_id


class PublishNacked(Exception):
    """
    The broker refused responsibility for a published message
    (``basic.nack`` in confirm mode).
    """


class ChannelsExhausted(Exception):
    """
    Every channel number the connection may use belongs to an open
    channel: no other can be opened.
    """


#: The reply code of a passive declare of a missing queue.
_NOT_FOUND = 404

#: The most channels a connection asks for (RabbitMQ's default limit).
MAX_CHANNELS = 2047


class BatchConfirms:
    """
    The confirms of a batch of publishes (:py:meth:`BrokerChannel.publish_batch`):
    :py:attr:`done` fires, once every message is settled, with one entry per
    message in order: :py:obj:`None` where the broker confirmed it, else the
    exception that failed it (:py:class:`PublishNacked`,
    :py:class:`Unroutable`, or the closed channel's error).
    """

    __slots__ = ("done", "left", "results", "settled")

    def __init__(self, count: int) -> None:
        self.results: list[Exception | None] = [None] * count
        #: 1 for each message settled, 0 for each still waited for.
        self.settled = bytearray(count)
        self.left = count
        self.done: defer.Deferred[list[Exception | None]] = defer.Deferred()
        if not count:
            self.done.callback([])

    def settle(self, index: int, error: Exception | None) -> None:
        """
        Settle message ``index`` of the batch: confirmed when ``error`` is
        :py:obj:`None`.
        """
        if self.settled[index]:
            return
        self.settled[index] = 1
        self.results[index] = error
        self.left -= 1
        if self.left == 0:
            self.done.callback(self.results)


#: What a channel waits for per publish sequence number: the Deferred of
#: one publish, or a batch and the message's index in it.
_Unconfirmed = defer.Deferred[None] | tuple[BatchConfirms, int]


class BrokerChannel(AMQChannel):
    """
    A channel whose methods are written straight to the transport, with
    publisher-confirm bookkeeping.
    """

    client: BrokerProtocol

    def __init__(self, id: int, outgoing: Any, client: BrokerProtocol) -> None:
        AMQChannel.__init__(self, id, outgoing, client)
        self.confirming = False
        self.publish_seq = 0
        # In publish order, so in ascending sequence numbers.
        self.unconfirmed: dict[int, _Unconfirmed] = {}
        self._mandatory: dict[str, int] = {}
        self._mandatory_ids: dict[int, str] = {}
        self._returned: dict[int, Unroutable] = {}
        self._close_watchers: list[Callable[[Any], None]] = []
        #: The broker may close it with 404 as an answer (a passive declare
        #: asking whether a queue exists): that close is not a WARNING.
        self.expects_not_found = False

    def on_close(self, watcher: Callable[[Any], None]) -> None:
        """
        Call ``watcher`` with the reason once the channel closes: closed by
        the broker (``channel.close``, e.g. 406 after a consumer timeout),
        or with its connection.
        """
        self._close_watchers.append(watcher)

    def invoke(self, method: Any, args: Any, content: Any = None) -> defer.Deferred[Any]:
        """
        Send one method (and its content) and, for a synchronous method,
        return a Deferred that fires with the broker's response.
        """
        if self.closed:
            return defer.fail(self._closed_error())
        codec = self.client.codec
        data = codec.encode_method(self.id, method, args)
        if method.content:
            if content is None:
                content = Content(b"")
            data += codec.encode_content(
                self.id,
                method.klass,
                content.body,
                content.properties,
                self.client.frame_max,
            )
        self.client.write(data)
        if not method.responses or _nowait(method, args):
            return defer.succeed(None)
        d = self.responses.get()

        def check(response: Message) -> Message:
            if response.method not in method.responses:
                raise ValueError(f"unexpected response {response.method.name}")
            return response

        def closed(failure: Failure) -> Failure:
            failure.trap(QueueClosed)
            return Failure(self._closed_error())

        return d.addCallbacks(check, closed)

    def _closed_error(self) -> Exception:
        try:
            self._raise_closed(self.reason)
        except Exception as e:
            return e
        raise AssertionError("unreachable")  # pragma: no cover

    # publisher confirms

    def enable_confirms(self) -> defer.Deferred[Any]:
        """
        Put this channel in confirm mode.
        """
        d = self.confirm_select()

        def enabled(result: Any) -> Any:
            self.confirming = True
            return result

        return d.addCallback(enabled)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Mapping[str, Any],
        mandatory: bool = False,
    ) -> defer.Deferred[None]:
        """
        Publish one message.  On a channel in confirm mode the Deferred fires
        when the broker confirms it and fails with :py:obj:`PublishNacked` when the
        broker refuses it; otherwise it fires at once.
        """
        if not isinstance(body, bytes):
            raise TypeError(f"a message body must be bytes, not {type(body).__name__}")
        d: defer.Deferred[None]
        if self.confirming and not self.closed:
            self.publish_seq += 1
            d = defer.Deferred()
            self.unconfirmed[self.publish_seq] = d
            message_id = properties.get("message-id")
            if mandatory and message_id:
                self._note_mandatory(message_id, self.publish_seq)
        else:
            d = defer.succeed(None)
        sent = self.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            mandatory=mandatory,
            content=Content(body, properties=dict(properties)),
        )
        if sent.called and isinstance(sent.result, Failure):
            if self.confirming:
                self.unconfirmed.pop(self.publish_seq, None)
            return sent
        return d

    def publish_batch(
        self,
        exchange: str,
        routing_key: str,
        contents: Sequence[tuple[bytes, Mapping[str, Any]]],
        mandatory: bool = False,
    ) -> BatchConfirms:
        """
        Publish several messages (body and properties) to one exchange and
        routing key, in one write, tracked together: on a channel in
        confirm mode the batch is settled as the broker confirms or refuses
        each message; otherwise at once, every message confirmed.

        :raises: the closed channel's error (txAMQP's ``Closed``) when the
            channel is closed; nothing was written.
        """
        for body, _ in contents:
            if not isinstance(body, bytes):
                raise TypeError(f"a message body must be bytes, not {type(body).__name__}")
        if self.closed:
            raise self._closed_error()
        client = self.client
        codec = client.codec
        method = _basic_publish(client.spec)
        head = codec.encode_method(self.id, method, (0, exchange, routing_key, mandatory, False))
        frames = []
        for body, properties in contents:
            frames.append(head)
            frames.append(
                codec.encode_content(self.id, method.klass, body, properties, client.frame_max)
            )
        batch = BatchConfirms(len(contents))
        if self.confirming:
            unconfirmed = self.unconfirmed
            seq = self.publish_seq
            for index, (_, properties) in enumerate(contents):
                seq += 1
                unconfirmed[seq] = (batch, index)
                message_id = properties.get("message-id") if mandatory else None
                if message_id:
                    self._note_mandatory(message_id, seq)
            self.publish_seq = seq
        client.write(b"".join(frames))
        if not self.confirming:
            for index in range(len(contents)):
                batch.settle(index, None)
        return batch

    def _note_mandatory(self, message_id: str, tag: int) -> None:
        self._mandatory[message_id] = tag
        self._mandatory_ids[tag] = message_id

    def settle(self, delivery_tag: int, multiple: bool, error: Exception | None) -> None:
        """
        Settle publishes confirmed (or refused) by the broker.
        """
        unconfirmed = self.unconfirmed
        if multiple:
            tags = []
            for tag in unconfirmed:  # ascending
                if tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [delivery_tag] if delivery_tag in unconfirmed else []
        returned = self._returned
        for tag in tags:
            entry = unconfirmed.pop(tag)
            outcome = error
            if returned and error is None:
                outcome = returned.pop(tag, None)
            else:
                returned.pop(tag, None)
            if self._mandatory_ids:
                self._forget_mandatory(tag)
            if isinstance(entry, tuple):
                entry[0].settle(entry[1], outcome)
            elif outcome is None:
                entry.callback(None)
            else:
                entry.errback(outcome)

    def _forget_mandatory(self, tag: int) -> None:
        message_id = self._mandatory_ids.pop(tag, None)
        if message_id is not None and self._mandatory.get(message_id) == tag:
            del self._mandatory[message_id]

    def note_return(self, message_id: str | None, code: int, text: str, routing_key: str) -> None:
        """
        The broker returned a mandatory message it could not route; its
        confirm, which follows, fails with :py:obj:`Unroutable`.
        """
        tag = self._mandatory.pop(message_id, None) if message_id else None
        if tag is not None:
            self._mandatory_ids.pop(tag, None)
            self._returned[tag] = Unroutable(message_id, code, text, routing_key)

    def do_close(self, reason: Any) -> None:
        """
        Close the channel and fail every publish not yet confirmed.
        """
        if self.closed:
            return
        AMQChannel.do_close(self, reason)
        pending, self.unconfirmed = self.unconfirmed, {}
        for entry in pending.values():
            if isinstance(entry, tuple):
                entry[0].settle(entry[1], self._closed_error())
            else:
                entry.errback(self._closed_error())
        watchers, self._close_watchers = self._close_watchers, []
        for watcher in watchers:
            try:
                watcher(reason)
            except Exception:
                log.failure("Error in a watcher of channel {channel}'s close", channel=self.id)


@functools.cache
def _basic_publish(spec: Any) -> Any:
    """
    The spec's ``basic.publish`` method.
    """
    return spec.classes.byname["basic"].methods.byname["publish"]


def _nowait(method: Any, args: Any) -> bool:
    field = method.fields.byname.get("nowait") or method.fields.byname.get("no-wait")
    if field is None:
        return False
    return bool(args[method.fields.index(field)])


class BrokerDelegate(TwistedDelegate):
    """
    Handles the methods the broker sends on its own initiative.
    """

    client: BrokerProtocol

    def connection_start(self, ch: BrokerChannel, msg: Message) -> None:
        self.client.server_properties = msg.server_properties
        ch.connection_start_ok(
            client_properties={
                "product": "twistedq",
                "version": __version__,
                "platform": "Python/Twisted",
                "capabilities": CLIENT_CAPABILITIES,
            },
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def connection_tune(self, ch: BrokerChannel, msg: Message) -> None:
        client = self.client
        client.frame_max = _negotiate(msg.frame_max, FRAME_MAX)
        client.MAX_LENGTH = client.frame_max
        heartbeat = _negotiate(msg.heartbeat, client.requested_heartbeat)
        channel_max = client.channel_max = _negotiate(msg.channel_max, MAX_CHANNELS)
        ch.connection_tune_ok(channel_max, client.frame_max, heartbeat)
        client.start_heartbeat(heartbeat)
        client.started.fire()

    def connection_close(self, ch: BrokerChannel, msg: Message) -> None:
        log.warn(
            "Broker closed the connection: {code} {text}",
            code=msg.reply_code,
            text=msg.reply_text,
        )
        TwistedDelegate.connection_close(self, ch, msg)

    def channel_close(self, ch: BrokerChannel, msg: Message) -> None:
        expected = msg.reply_code == _NOT_FOUND and getattr(ch, "expects_not_found", False)
        (log.debug if expected else log.warn)(
            "Broker closed channel {channel}: {code} {text}",
            channel=ch.id,
            code=msg.reply_code,
            text=msg.reply_text,
        )
        TwistedDelegate.channel_close(self, ch, msg)

    def basic_deliver(self, ch: BrokerChannel, msg: Message) -> None:
        consumer = self.client.consumers.get(msg.consumer_tag)
        if consumer is None:
            log.warn("Delivery for unknown consumer {tag}", tag=msg.consumer_tag)
            return
        consumer.deliver(ch, msg)

    def basic_cancel(self, ch: BrokerChannel, msg: Message) -> None:
        consumer = self.client.consumers.pop(msg.consumer_tag, None)
        log.warn(
            "Broker cancelled consumer {tag} (queue deleted or failed over)",
            tag=msg.consumer_tag,
        )
        if consumer is not None:
            consumer.cancelled(ch, msg)

    def basic_ack(self, ch: BrokerChannel, msg: Message) -> None:
        ch.settle(msg.delivery_tag, msg.multiple, None)

    def basic_nack(self, ch: BrokerChannel, msg: Message) -> None:
        ch.settle(
            msg.delivery_tag,
            msg.multiple,
            PublishNacked("the broker refused the message (basic.nack)"),
        )

    def basic_return_(self, ch: BrokerChannel, msg: Message) -> None:
        properties = msg.content.properties if msg.content is not None else {}
        ch.note_return(
            properties.get("message-id"), msg.reply_code, msg.reply_text, msg.routing_key
        )
        log.warn(
            "Broker returned an unroutable message: {code} {text} "
            "(exchange {exchange!r}, routing key {key!r})",
            code=msg.reply_code,
            text=msg.reply_text,
            exchange=msg.exchange,
            key=msg.routing_key,
        )

    def connection_blocked(self, ch: BrokerChannel, msg: Message) -> None:
        log.warn("Broker blocked publishing: {reason}", reason=msg.reason)
        self.client.blocked = msg.reason or "blocked"

    def connection_unblocked(self, ch: BrokerChannel, msg: Message) -> None:
        log.info("Broker unblocked publishing")
        self.client.blocked = None


def _negotiate(server: int, client: int) -> int:
    """
    Negotiate a limit where 0 means "none": the smaller non-zero value.
    """
    if not server:
        return client
    if not client:
        return server
    return min(server, client)


class BrokerProtocol(AMQClient):
    """
    One connection to the broker.

    :ivar consumers: consumer tag to the object receiving its deliveries
        (with ``deliver(channel, message)`` and ``cancelled(channel, message)``).
    :ivar blocked: the broker's reason while it blocks publishing, else
        :py:obj:`None`.
    """

    channelClass = BrokerChannel

    def __init__(
        self,
        delegate: BrokerDelegate,
        vhost: str,
        spec: Any,
        heartbeat: int = 30,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        AMQClient.__init__(self, delegate, vhost, spec, heartbeat=0, clock=clock)
        self.requested_heartbeat = heartbeat
        self.codec = MethodCodec(spec)
        self.frame_max = 4096
        self.channel_max = MAX_CHANNELS
        self.consumers: dict[str, Any] = {}
        self.blocked: str | None = None
        self.server_properties: dict[str, Any] = {}
        self.last_received = self.clock.seconds()
        self._buffer = b""
        self._content: dict[int, list[Any]] = {}
        self._heartbeat_loop: LoopingCall | None = None

    # outgoing

    def write(self, data: bytes) -> None:
        """
        Write encoded frames, if still connected.
        """
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_frame(self, frame: Any) -> None:
        # txAMQP's own writer is unused: every write goes through write().
        raise NotImplementedError("frames are encoded by twistedq.amqp.codec")

    # heartbeats

    def start_heartbeat(self, interval: int) -> None:
        """
        Send a heartbeat every half ``interval`` and drop the connection when
        nothing arrived for two intervals.
        """
        self.heartbeat_interval = interval
        if interval <= 0:
            return
        self._heartbeat_loop = LoopingCall(self._heartbeat)
        self._heartbeat_loop.clock = self.clock
        self._heartbeat_loop.start(interval / 2.0, now=False).addErrback(
            lambda f: log.failure("heartbeat loop failed", f)
        )

    def _heartbeat(self) -> None:
        if self.clock.seconds() - self.last_received > 2 * self.heartbeat_interval:
            log.warn("No data from the broker for two heartbeat intervals: dropping")
            if self.transport is not None:
                self.transport.abortConnection()
            return
        self.write(heartbeat_frame())

    # incoming

    def connectionMade(self) -> None:
        self.send_init_string()

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.clock.seconds()
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        size = len(buffer)
        header_size = FRAME_HEADER_STRUCT.size
        while size - offset >= header_size + 1:
            kind, channel, length = FRAME_HEADER_STRUCT.unpack_from(buffer, offset)
            end = offset + header_size + length
            if end >= size:
                break
            if buffer[end] != FRAME_END:
                self._protocol_error(f"frame without frame-end octet (type {kind})")
                return
            payload = buffer[offset + header_size : end]
            offset = end + 1
            try:
                self._frame_received(kind, channel, payload)
            except FrameError as e:
                self._protocol_error(str(e))
                return
            if self.transport is None or self.closed:
                return
        self._buffer = buffer[offset:]

    def _protocol_error(self, why: str) -> None:
        log.error("AMQP protocol error, dropping the connection: {why}", why=why)
        self._buffer = b""
        if self.transport is not None:
            self.transport.abortConnection()

    def _frame_received(self, kind: int, channel: int, payload: bytes) -> None:
        if kind == FRAME_METHOD:
            method, args = self.codec.decode_method(payload)
            if method.content:
                self._content[channel] = [method, args, None, 0, None, []]
            else:
                self._method_received(channel, method, args, None)
        elif kind == FRAME_HEADER:
            pending = self._content.get(channel)
            if pending is None or pending[2] is not None:
                raise FrameError(f"unexpected content header on channel {channel}")
            klass, size, properties = self.codec.decode_header(payload)
            pending[2], pending[3], pending[4] = klass, size, properties
            if size == 0:
                del self._content[channel]
                self._method_received(channel, pending[0], pending[1], Content(b"", [], properties))
        elif kind == FRAME_BODY:
            pending = self._content.get(channel)
            if pending is None or pending[2] is None:
                raise FrameError(f"unexpected content body on channel {channel}")
            chunks = pending[5]
            chunks.append(payload)
            pending[3] -= len(payload)
            if pending[3] <= 0:
                del self._content[channel]
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._method_received(
                    channel, pending[0], pending[1], Content(body, [], pending[4])
                )
        elif kind == FRAME_HEARTBEAT:
            pass
        else:
            raise FrameError(f"unknown frame type {kind}")

    def _method_received(
        self, channel_id: int, method: Any, args: tuple[Any, ...], content: Any
    ) -> None:
        channel = self._get_channel(channel_id)
        message = Message(method, args, content)
        if method.response:
            channel.responses.put(message)
            return
        try:
            self.delegate.dispatch(channel, message)
        except Exception:
            log.failure(
                "Error while handling {klass}.{method} from the broker",
                klass=method.klass.name,
                method=method.name,
            )

    def _get_channel(self, channel_id: int) -> BrokerChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            channel = self.channels[channel_id] = self.channelFactory(
                channel_id, self.outgoing, self
            )
        return channel

    # txAMQP entry points, without defer.returnValue

    def channel(self, id: int) -> defer.Deferred[BrokerChannel]:
        return defer.succeed(self._get_channel(id))

    def open_channel(self) -> defer.Deferred[BrokerChannel]:
        """
        Open a new channel with the next free number: one never used, or,
        once they run out (the broker's ``channel_max``, 2047 on
        RabbitMQ), one whose channel the broker closed, so that a daemon
        that keeps opening channels (after refusals, for passive declares)
        never runs out on a long-lived connection.
        """
        number = self._free_channel_number()
        closed = self.channels.get(number)
        if closed is not None and closed.closed:
            del self.channels[number]
        channel = self._get_channel(number)
        return channel.channel_open().addCallback(lambda _: channel)

    def _free_channel_number(self) -> int:
        last = getattr(self, "_last_channel", 0)
        while last < self.channel_max:
            last += 1
            if last not in self.channels:
                self._last_channel = last
                return last
        self._last_channel = last
        for number in range(1, self.channel_max + 1):
            channel = self.channels.get(number)
            if channel is None or channel.closed:
                return number
        raise ChannelsExhausted(f"all {self.channel_max} channels of the connection are open")

    def start(
        self, response: Any, mechanism: str = "AMQPLAIN", locale: str = "en_US"
    ) -> defer.Deferred[Any]:
        self.response = response
        self.mechanism = mechanism
        self.locale = locale

        async def opened() -> Any:
            await self.started.wait()
            return await self._get_channel(0).connection_open(self.vhost)

        return defer.Deferred.fromCoroutine(opened())

    def authenticate(
        self,
        username: str,
        password: str,
        mechanism: str = "PLAIN",
        locale: str = "en_US",
    ) -> defer.Deferred[Any]:
        """
        Log in and open the virtual host.
        """
        if mechanism == "PLAIN":
            response: Any = b"\0" + username.encode() + b"\0" + password.encode()
        elif mechanism == "AMQPLAIN":
            response = {"LOGIN": username, "PASSWORD": password}
        else:
            raise ValueError(f"unknown authentication mechanism {mechanism!r}")
        return self.start(response, mechanism, locale)

    def connectionLost(self, reason: Failure) -> None:
        if self._heartbeat_loop is not None and self._heartbeat_loop.running:
            self._heartbeat_loop.stop()
        self._content.clear()
        if not self.closed:
            self.do_close(reason)
        self.disconnected.fire()

    def do_close(self, reason: Any) -> None:
        AMQClient.do_close(self, reason)
        self.started.fail_if_not_fired(Closed(reason))
        for consumer in list(self.consumers.values()):
            consumer.connection_lost(reason)
        self.consumers.clear()
