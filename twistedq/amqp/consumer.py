"""
The consuming side of the broker: a consumer with manual acks and
``basic.qos``, the deliveries it hands out, and the window that merges
their acks.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.message import Message

from twistedq.amqp.broker import BrokerConnection, Topology
from twistedq.amqp.deadletters import DeadLetterPublisher
from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol

__all__ = ["AckWindow", "Consumer", "Delivery"]

log = Logger()


class Delivery:
    """
    One message received from the queue, to be acked or rejected once.

    :ivar body: the message body, always ``bytes``.
    :ivar redelivered: the broker delivered it before.
    """

    __slots__ = (
        "_dead_letters",
        "_window",
        "body",
        "channel",
        "delivery_tag",
        "properties",
        "redelivered",
    )

    def __init__(
        self,
        channel: BrokerChannel,
        delivery_tag: int,
        body: bytes,
        properties: dict[str, Any],
        redelivered: bool,
        window: AckWindow,
        dead_letters: DeadLetterPublisher | None = None,
    ) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.body = body
        self.properties = properties
        self.redelivered = redelivered
        self._window = window
        self._dead_letters = dead_letters

    @property
    def headers(self) -> dict[str, Any] | None:
        """
        The message's headers, if it has any.
        """
        return self.properties.get("headers")

    def dead_letter(self, reason: str, detail: str) -> defer.Deferred[None]:
        """
        Move it to the dead-letter queue with ``reason`` (a short code) and
        ``detail`` (a sentence) in its headers; fires once it is settled
        (see :py:class:`~twistedq.amqp.deadletters.DeadLetterPublisher`).
        Without a dead-letter publisher it is rejected into the queue's
        dead-letter exchange, without the reason.
        """
        if self._dead_letters is None:
            self.reject(requeue=False)
            return defer.succeed(None)
        return self._dead_letters.send(self, reason, detail)

    def ack(self) -> None:
        """
        Acknowledge it; consecutive acks are merged into one ``multiple`` ack.
        """
        self._window.complete(self.delivery_tag)

    def reject(self, requeue: bool) -> None:
        """
        Reject it: back to the queue, or (``requeue=False``) to the
        dead-letter queue.
        """
        self._window.reject(self.delivery_tag, requeue)


class AckWindow:
    """
    The unacknowledged deliveries of one channel, in delivery order.

    Acks are sent as one ``basic.ack`` with ``multiple`` for the longest run of
    completed deliveries at the head of the window; a completed delivery
    behind a running one is acked alone at once, so a long task never holds
    finished ones back (and never fills the prefetch window with them).
    """

    RUNNING, DONE, SETTLED = 0, 1, 2

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._tags: deque[int] = deque()
        self._state: dict[int, int] = {}

    def add(self, delivery_tag: int) -> None:
        self._tags.append(delivery_tag)
        self._state[delivery_tag] = self.RUNNING

    def __len__(self) -> int:
        return len(self._state)

    def complete(self, delivery_tag: int) -> None:
        if self._state.get(delivery_tag) != self.RUNNING:
            return
        self._state[delivery_tag] = self.DONE
        self.flush()

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        if self._state.get(delivery_tag) != self.RUNNING:
            return
        self._state[delivery_tag] = self.SETTLED
        if not self.channel.closed:
            self.channel.basic_reject(delivery_tag=delivery_tag, requeue=requeue)
        self.flush()

    def flush(self) -> None:
        """
        Send the acks that can be sent now.
        """
        tags, state = self._tags, self._state
        last_done = None
        while tags and state[tags[0]] != self.RUNNING:
            tag = tags.popleft()
            if state.pop(tag) == self.DONE:
                last_done = tag
        closed = self.channel.closed
        if last_done is not None and not closed:
            self.channel.basic_ack(delivery_tag=last_done, multiple=True)
        for tag, value in state.items():
            if value == self.DONE:
                state[tag] = self.SETTLED
                if not closed:
                    self.channel.basic_ack(delivery_tag=tag, multiple=False)


class Consumer:
    """
    Consumes the task queue with manual acks and ``basic.qos``; hands each
    :py:obj:`Delivery` to ``on_delivery``.  A second channel, in confirm
    mode, publishes the dead letters (:py:meth:`Delivery.dead_letter`).
    """

    def __init__(
        self,
        connection: BrokerConnection,
        topology: Topology,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.prefetch = prefetch
        self.on_delivery = on_delivery
        self._channel: BrokerChannel | None = None
        self._window: AckWindow | None = None
        self._dead_letters: DeadLetterPublisher | None = None
        self._tag: str | None = None
        self.consuming = False
        connection.add_connect_hook(self._connected)

    async def _connected(self, protocol: BrokerProtocol) -> None:
        channel = await protocol.open_channel()
        await self.topology.declare(channel)
        await channel.basic_qos(prefetch_count=self.prefetch)
        dead = self._dead_letters
        if dead is None or dead.channel.closed or dead.channel.client is not protocol:
            dead_channel = await protocol.open_channel()
            await dead_channel.enable_confirms()
            self._dead_letters = DeadLetterPublisher(
                dead_channel,
                self.topology.dead_letter_exchange,
                self.topology.routing_key,
                self.connection.reactor,
            )
        self._channel = channel
        self._window = AckWindow(channel)
        self._tag = f"twistedq-{uuid.uuid4()}"
        protocol.consumers[self._tag] = self
        await channel.basic_consume(queue=self.topology.queue, consumer_tag=self._tag, no_ack=False)
        self.consuming = True
        log.info(
            "Consuming {queue} with prefetch {prefetch}",
            queue=self.topology.queue,
            prefetch=self.prefetch,
        )

    # called by the delegate

    def deliver(self, channel: BrokerChannel, message: Message) -> None:
        window = self._window
        assert window is not None
        tag = message.delivery_tag
        window.add(tag)
        content = message.content
        self.on_delivery(
            Delivery(
                channel,
                tag,
                content.body,
                content.properties,
                message.redelivered,
                window,
                self._dead_letters,
            )
        )

    def cancelled(self, channel: BrokerChannel, message: Message) -> None:
        """
        The broker cancelled us (the queue was deleted): declare the
        topology again and consume anew.
        """
        self.consuming = False
        protocol = channel.client

        def again() -> defer.Deferred[None]:
            return defer.Deferred.fromCoroutine(self._connected(protocol))

        d = again()
        d.addErrback(lambda f: log.failure("Could not consume again", f))

    def connection_lost(self, reason: Any) -> None:
        self.consuming = False

    async def stop(self) -> None:
        """
        Stop receiving new deliveries; those already received stay ours to
        finish and ack.
        """
        channel, tag = self._channel, self._tag
        self.consuming = False
        if channel is not None and tag is not None and not channel.closed:
            channel.client.consumers.pop(tag, None)
            try:
                await channel.basic_cancel(consumer_tag=tag)
            except Exception:
                log.failure("basic.cancel failed")
