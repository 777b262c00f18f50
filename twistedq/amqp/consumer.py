"""
The consuming side of the broker: a consumer of one or several queues,
each on a channel of its own with manual acks and its own ``basic.qos``
(so a slow queue never takes another's prefetch window), the deliveries
they hand out, and the window that merges their acks.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from txamqp.message import Message

from twistedq.amqp.broker import BrokerConnection, Topology
from twistedq.amqp.deadletters import DeadLetterPublisher
from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol

__all__ = ["AckWindow", "Consumer", "Delivery", "QueueConsumer", "merged_acks"]

log = Logger()


class Delivery:
    """
    One message received from the queue, to be acked or rejected once.

    :ivar body: the message body, always ``bytes``.
    :ivar redelivered: the broker delivered it before.
    :ivar queue: the queue it came from.
    """

    __slots__ = (
        "_dead_letters",
        "_window",
        "body",
        "channel",
        "delivery_tag",
        "properties",
        "queue",
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
        queue: str | None = None,
    ) -> None:
        self.channel = channel
        self.queue = queue
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
    completed deliveries at the head of the window.  A completed delivery
    behind a running one waits :py:obj:`SINGLE_ACK_DELAY` for a ``multiple``
    ack to cover it (with no clock: not at all), then is acked alone, so a
    long task never holds finished ones back (and never fills the prefetch
    window with them).  Deliveries completed inside :py:func:`merged_acks`
    are acked when it ends, together.

    :param clock: what times the wait; None acks those behind a running
        delivery at once.
    """

    RUNNING, DONE, SETTLED = 0, 1, 2

    #: Seconds a completed delivery behind a running one waits to be
    #: covered by a ``multiple`` ack before it is acked alone.
    SINGLE_ACK_DELAY = 0.05

    def __init__(self, channel: Any, clock: IReactorTime | None = None) -> None:
        self.channel = channel
        self._clock = clock
        self._tags: deque[int] = deque()
        self._state: dict[int, int] = {}
        self._done = 0  # completed, not acked yet
        self._singles: IDelayedCall | None = None

    def add(self, delivery_tag: int) -> None:
        self._tags.append(delivery_tag)
        self._state[delivery_tag] = self.RUNNING

    def __len__(self) -> int:
        return len(self._state)

    def complete(self, delivery_tag: int) -> None:
        if self._state.get(delivery_tag) != self.RUNNING:
            return
        self._state[delivery_tag] = self.DONE
        self._done += 1
        if _merging:
            _merging[-1].add(self)
        else:
            self.flush()

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        if self._state.get(delivery_tag) != self.RUNNING:
            return
        self._state[delivery_tag] = self.SETTLED
        if not self.channel.closed:
            self.channel.basic_reject(delivery_tag=delivery_tag, requeue=requeue)
        if _merging:
            _merging[-1].add(self)
        else:
            self.flush()

    def flush(self) -> None:
        """
        Send the ``multiple`` ack the head of the window allows now; ack
        the completed deliveries behind a running one alone, now (with no
        clock) or after :py:obj:`SINGLE_ACK_DELAY`.
        """
        self._ack_head()
        if self._done and self._singles is None:
            if self._clock is None:
                self._ack_singles()
            else:
                self._singles = self._clock.callLater(self.SINGLE_ACK_DELAY, self._singles_due)

    def _ack_head(self) -> None:
        """
        Ack the run of settled deliveries at the head with one ``multiple``
        ack, and drop them from the window.
        """
        tags, state = self._tags, self._state
        last_done = None
        while tags and state[tags[0]] != self.RUNNING:
            tag = tags.popleft()
            if state.pop(tag) == self.DONE:
                last_done = tag
                self._done -= 1
        if last_done is not None and not self.channel.closed:
            self.channel.basic_ack(delivery_tag=last_done, multiple=True)

    def _singles_due(self) -> None:
        self._singles = None
        self._ack_head()
        self._ack_singles()

    def ack_now(self) -> None:
        """
        Send every ack held back, now: before the channel closes, so
        that nothing completed goes back to the queue.
        """
        if self._singles is not None:
            if self._singles.active():
                self._singles.cancel()
            self._singles = None
        self._ack_head()
        self._ack_singles()

    def _ack_singles(self) -> None:
        """
        Ack alone each completed delivery still behind a running one.
        """
        closed = self.channel.closed
        state = self._state
        for tag, value in state.items():
            if value == self.DONE:
                state[tag] = self.SETTLED
                if not closed:
                    self.channel.basic_ack(delivery_tag=tag, multiple=False)
        self._done = 0


#: The windows with acks held back, one set per :py:func:`merged_acks` open.
_merging: list[set[AckWindow]] = []


@contextmanager
def merged_acks() -> Iterator[None]:
    """
    Hold back the acks of the deliveries completed inside, and send them
    when it ends: one ``multiple`` ack for a batch settled in one loop,
    instead of one ack frame per delivery.
    """
    windows: set[AckWindow] = set()
    _merging.append(windows)
    try:
        yield
    finally:
        _merging.pop()
        for window in windows:
            window.flush()


class QueueConsumer:
    """
    Consumes one task queue with manual acks and ``basic.qos``; hands each
    :py:obj:`Delivery` to ``on_delivery``.  A second channel, in confirm
    mode, publishes the dead letters (:py:meth:`Delivery.dead_letter`).

    When the broker closes the consuming channel while the connection
    stays up (a ``406`` after its consumer timeout, a ``404`` for a queue
    deleted under it), the broker has put the channel's unacknowledged
    deliveries back in the queue: the consumer opens a new channel and
    consumes again, at once and then after doubling pauses up to
    :py:obj:`LONGEST_REOPEN_PAUSE` while that fails.

    :ivar consuming: the broker is delivering to it now (false from the
        moment the channel or connection is lost until it consumes again).
    :ivar stopped_at: when (clock seconds) it last stopped consuming, or
        None if it never consumed.
    """

    #: The first pause before consuming again after a failed attempt.
    FIRST_REOPEN_PAUSE = 0.5
    #: The longest pause between attempts to consume again.
    LONGEST_REOPEN_PAUSE = 30.0

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
        self._stopped = False
        self._reopening: Any = None
        self._consuming = False
        self.stopped_at: float | None = None
        connection.add_connect_hook(self._connected)

    @property
    def consuming(self) -> bool:
        return self._consuming

    @consuming.setter
    def consuming(self, now: bool) -> None:
        if self._consuming and not now:
            self.stopped_at = self.connection.reactor.seconds()
        self._consuming = now

    async def _connected(self, protocol: BrokerProtocol) -> None:
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
        if not self._stopped:  # a connection made while draining takes no new work
            await self._consume(protocol)

    async def _consume(
        self, protocol: BrokerProtocol, channel: BrokerChannel | None = None
    ) -> None:
        """
        Consume the queue: on ``channel`` when it is given (still open,
        with its deliveries), else on a new channel with a new ack window.
        """
        if channel is None:
            channel = await protocol.open_channel()
            await self.topology.declare(channel)
            await channel.basic_qos(prefetch_count=self.prefetch)
            self._channel = channel
            self._window = AckWindow(channel, self.connection.reactor)
            opened = channel
            channel.on_close(lambda reason: self._channel_closed(opened, reason))
        else:
            await self.topology.declare(channel)
        tag = self._tag = f"twistedq-{uuid.uuid4()}"
        protocol.consumers[tag] = self
        await channel.basic_consume(queue=self.topology.queue, consumer_tag=tag, no_ack=False)
        self.consuming = True
        log.info(
            "Consuming {queue} with prefetch {prefetch}",
            queue=self.topology.queue,
            prefetch=self.prefetch,
        )

    def _channel_closed(self, channel: BrokerChannel, reason: Any) -> None:
        if channel is not self._channel:
            return
        self.consuming = False
        if self._tag is not None:
            channel.client.consumers.pop(self._tag, None)
        if self._stopped:
            return
        code = getattr(reason, "reply_code", None)
        if code is not None:  # the broker closed this channel alone
            log.warn(
                "The broker closed the consuming channel: {code} {text}; its unacknowledged "
                "deliveries went back to the queue. Consuming again on a new channel",
                code=code,
                text=getattr(reason, "reply_text", ""),
            )
        # With the connection, the connect hook consumes again on the next
        # connection; this attempt then finds its protocol closed.
        self._reopen_after(channel.client, 0.0)

    def _reopen_after(self, protocol: BrokerProtocol, pause: float) -> None:
        clock = self.connection.reactor

        def attempt() -> None:
            self._reopening = None
            if self._stopped or protocol.closed or protocol.transport is None:
                return
            d = defer.Deferred.fromCoroutine(self._consume(protocol))

            def failed(failure: Any) -> None:
                longer = min(max(pause * 2, self.FIRST_REOPEN_PAUSE), self.LONGEST_REOPEN_PAUSE)
                log.warn(
                    "Could not consume {queue} again: {why}; next attempt in {pause} s",
                    queue=self.topology.queue,
                    why=str(failure.value),
                    pause=longer,
                )
                self._reopen_after(protocol, longer)

            d.addErrback(failed)

        self._reopening = clock.callLater(pause, attempt)

    # called by the delegate

    def deliver(self, channel: BrokerChannel, message: Message) -> None:
        window = self._window
        if window is None or channel is not self._channel:
            return  # a channel closed since: the broker delivers it again
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
                self.topology.queue,
            )
        )

    def cancelled(self, channel: BrokerChannel, message: Message) -> None:
        """
        The broker cancelled us (the queue was deleted): declare the
        topology again and consume anew on the same channel, whose
        deliveries are still ours to ack.
        """
        self.consuming = False
        if self._stopped:
            return
        d = defer.Deferred.fromCoroutine(self._consume(channel.client, channel))
        d.addErrback(lambda f: log.failure("Could not consume again", f))

    def connection_lost(self, reason: Any) -> None:
        self.consuming = False

    def ack_now(self) -> None:
        """
        Send the acks its window holds back (:py:meth:`AckWindow.ack_now`).
        """
        if self._window is not None:
            self._window.ack_now()

    async def stop(self) -> None:
        """
        Stop receiving new deliveries; those already received stay ours to
        finish and ack.
        """
        channel, tag = self._channel, self._tag
        self.consuming = False
        self._stopped = True
        if self._reopening is not None and self._reopening.active():
            self._reopening.cancel()
        if channel is not None and tag is not None and not channel.closed:
            channel.client.consumers.pop(tag, None)
            try:
                await channel.basic_cancel(consumer_tag=tag)
            except Exception:
                log.failure("basic.cancel failed")


class Consumer:
    """
    Consumes one or several task queues (a :py:class:`QueueConsumer`
    each, on a channel of its own with ``prefetch`` unacknowledged
    deliveries at most) and hands every :py:obj:`Delivery` to
    ``on_delivery``; its :py:attr:`Delivery.queue` names its queue.

    :ivar queues: the consumer of each queue, in the order given.
    """

    def __init__(
        self,
        connection: BrokerConnection,
        topology: Topology | Sequence[Topology],
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
    ) -> None:
        topologies = [topology] if isinstance(topology, Topology) else list(topology)
        self.connection = connection
        self.topology = topologies[0]
        self.prefetch = prefetch
        self.queues = [
            QueueConsumer(connection, each, prefetch, on_delivery) for each in topologies
        ]

    @property
    def consuming(self) -> bool:
        """
        Every queue is being consumed now.
        """
        return all(queue.consuming for queue in self.queues)

    def not_consuming_since(self, started: float) -> float | None:
        """
        Since when (clock seconds) some queue has not been consumed: the
        earliest moment one of those not consumed now stopped, ``started``
        for one never consumed; None while every queue is consumed.
        """
        idle = [queue for queue in self.queues if not queue.consuming]
        if not idle:
            return None
        return min(started if queue.stopped_at is None else queue.stopped_at for queue in idle)

    async def stop(self) -> None:
        """
        Stop receiving new deliveries from every queue; those already
        received stay ours to finish and ack.
        """
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(queue.stop()) for queue in self.queues]
        )

    def ack_now(self) -> None:
        """
        Send the acks held back on every queue's channel: once drained,
        before the connection closes.
        """
        for queue in self.queues:
            queue.ack_now()
