"""
The dead-letter queue: the daemon's publisher of dead letters, and the
reader that lists, republishes and purges them.

The daemon does not reject a message into the dead-letter exchange (that
cannot add headers); it publishes a copy to ``<exchange>.dead`` with
:py:data:`REASON_HEADER`, :py:data:`DETAIL_HEADER` and :py:data:`TIME_HEADER`
added, on a channel in confirm mode, and acknowledges the original only
after the broker confirmed the copy.  A daemon that dies between the two
leaves the original unacknowledged: the broker delivers it again and it is
dead-lettered again (a duplicate, never a loss).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol
from twistedq.message import is_task_id, peek_task

if TYPE_CHECKING:
    from twistedq.amqp.broker import Topology
    from twistedq.amqp.consumer import Delivery

__all__ = [
    "DETAIL_HEADER",
    "REASON_HEADER",
    "TIME_HEADER",
    "DeadLetter",
    "DeadLetterPublisher",
    "DeadLetterQueue",
    "dead_letter_properties",
    "json_document",
    "republish_properties",
]

log = Logger()

#: The header holding the short code of why a message was dead-lettered.
REASON_HEADER = "x-twistedq-reason"
#: The header holding a sentence saying why.
DETAIL_HEADER = "x-twistedq-detail"
#: The header holding when (ISO 8601, UTC).
TIME_HEADER = "x-twistedq-dead-lettered-at"

#: The longest detail kept, in characters.
MAX_DETAIL = 1000

PERSISTENT = 2

# Headers a republished message leaves behind: ours, and the broker's own
# record of earlier dead-letterings.
_DEAD_HEADERS = frozenset(
    (
        REASON_HEADER,
        DETAIL_HEADER,
        TIME_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    )
)


def dead_letter_properties(
    properties: Mapping[str, Any], reason: str, detail: str, when: float
) -> dict[str, Any]:
    """
    The properties of the dead-letter copy of a message: its own, made
    persistent, with the reason, the detail (cut to :py:data:`MAX_DETAIL`
    characters) and the time ``when`` (seconds since the epoch) added to
    its headers.
    """
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    copied = dict(properties)
    headers = dict(copied.get("headers") or {})
    headers[REASON_HEADER] = reason
    headers[DETAIL_HEADER] = detail
    headers[TIME_HEADER] = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat(
        timespec="milliseconds"
    )
    copied["headers"] = headers
    copied["delivery-mode"] = PERSISTENT
    return copied


def republish_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """
    The properties of a dead letter sent back to its task queue: its own,
    without the reason headers and the broker's ``x-death`` record (a
    signature stays: the body is unchanged).
    """
    copied = dict(properties)
    headers = {
        k: v for k, v in (copied.pop("headers", None) or {}).items() if k not in _DEAD_HEADERS
    }
    if headers:
        copied["headers"] = headers
    return copied


class DeadLetterPublisher:
    """
    Publishes dead letters on a channel in confirm mode and settles the
    original delivery once the broker confirmed: ack after the confirm;
    when the publish fails or is not confirmed within ``confirm_timeout``
    seconds, reject the original into the queue's dead-letter exchange (it
    arrives without the reason headers, with the broker's ``x-death``).
    """

    def __init__(
        self,
        channel: BrokerChannel,
        exchange: str,
        routing_key: str,
        clock: IReactorTime,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.channel = channel
        self.exchange = exchange
        self.routing_key = routing_key
        self.clock = clock
        self.confirm_timeout = confirm_timeout

    def send(self, delivery: Delivery, reason: str, detail: str) -> defer.Deferred[None]:
        """
        Dead-letter ``delivery``; fires once it is settled.
        """
        if delivery.channel.closed:
            # The broker took it back when its channel closed.
            return defer.succeed(None)
        properties = dead_letter_properties(
            delivery.properties, reason, detail, self.clock.seconds()
        )
        if not properties.get("message-id"):
            # The broker's basic.return is matched by message id.
            properties["message-id"] = f"dead-letter-{delivery.delivery_tag}-{id(delivery)}"
        confirmed = self.channel.publish(
            self.exchange, self.routing_key, delivery.body, properties, mandatory=True
        )
        timeout = self.clock.callLater(self.confirm_timeout, confirmed.cancel)

        def published(_: None) -> None:
            delivery.ack()

        def not_published(failure: Failure) -> None:
            log.error(
                "Could not publish a dead letter ({reason}): {why}; rejecting it into the "
                "dead-letter exchange without its reason",
                reason=reason,
                why=str(failure.value) or type(failure.value).__name__,
            )
            delivery.reject(requeue=False)

        def done(result: Any) -> Any:
            if timeout.active():
                timeout.cancel()
            return result

        return confirmed.addBoth(done).addCallbacks(published, not_published)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None:
        return None
    return str(value)


def json_document(body: bytes) -> Any:
    """
    The JSON document of a body in UTF-8, or None when it is none (not
    UTF-8, not JSON, or nested deeper than the decoder follows).
    """
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


@dataclass
class DeadLetter:
    """
    One message read from a dead-letter queue.

    :ivar position: its place in the queue, from 1.
    :ivar body: its body.
    :ivar properties: its AMQP properties, ``headers`` among them.
    :ivar delivery_tag: the tag it was read with.
    """

    position: int
    body: bytes
    properties: dict[str, Any]
    delivery_tag: int = field(repr=False)

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.get("headers") or {})

    @cached_property
    def _task(self) -> tuple[str | None, str | None]:
        peeked = peek_task(self.body)
        if peeked is not None:
            return peeked
        document = json_document(self.body)
        task_id = task = None
        if isinstance(document, dict):
            if isinstance(document.get("id"), str) and is_task_id(document["id"]):
                task_id = document["id"]
            if isinstance(document.get("task"), str):
                task = document["task"]
        if task_id is None:
            message_id = _text(self.properties.get("message-id"))
            if message_id is not None and is_task_id(message_id):
                task_id = message_id
        return task_id, task

    @property
    def task_id(self) -> str | None:
        """
        The task id, when the body or the ``message-id`` has one.
        """
        return self._task[0]

    @property
    def task(self) -> str | None:
        """
        The task name, when the body has one.
        """
        return self._task[1]

    def _first_death(self) -> dict[str, Any]:
        deaths = self.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            return deaths[0]
        return {}

    @property
    def reason(self) -> str:
        """
        Why it was dead-lettered: the daemon's :py:data:`REASON_HEADER`, or
        for a message the broker dead-lettered the reason of its
        ``x-death`` record (``rejected``, ``expired``, ``maxlen``,
        ``delivery-limit``), else ``unknown``.
        """
        reason = _text(self.headers.get(REASON_HEADER))
        if reason is not None:
            return reason
        death = _text(self._first_death().get("reason"))
        return death.replace("_", "-") if death else "unknown"

    @property
    def detail(self) -> str:
        """
        The daemon's :py:data:`DETAIL_HEADER`, or a sentence on the broker's
        ``x-death`` record.
        """
        detail = _text(self.headers.get(DETAIL_HEADER))
        if detail is not None:
            return detail
        death = self._first_death()
        if death:
            return f"dead-lettered by the broker from queue {_text(death.get('queue'))}"
        return ""

    @property
    def time(self) -> str | None:
        """
        When it was dead-lettered (ISO 8601), when known.
        """
        when = _text(self.headers.get(TIME_HEADER))
        if when is not None:
            return when
        moment = self._first_death().get("time")
        if isinstance(moment, datetime.datetime):
            return moment.isoformat()
        if isinstance(moment, int):
            return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat()
        return None


class DeadLetterQueue:
    """
    Reads a topology's dead-letter queue without losing what it reads:
    each message is taken with ``basic.get`` and left unacknowledged, so
    the broker puts back every message not explicitly removed when the
    reading channel closes.
    """

    def __init__(
        self, protocol: BrokerProtocol, topology: Topology, confirm_timeout: float = 30.0
    ) -> None:
        self.protocol = protocol
        self.topology = topology
        self.confirm_timeout = confirm_timeout

    async def read(self, visit: Callable[[DeadLetter], Any]) -> int:
        """
        Call ``visit`` with each dead letter in queue order and leave them
        all in the queue; return how many there were.
        """

        async def take(letter: DeadLetter, channel: BrokerChannel) -> bool:
            visit(letter)
            return False

        count, _ = await self._walk(take)
        return count

    async def republish(self, select: Callable[[DeadLetter], bool]) -> list[DeadLetter]:
        """
        Send each dead letter that ``select`` picks back to the task queue
        (without its reason headers), and remove it from the dead-letter
        queue once the broker confirmed the publish; return those sent.

        :raises twistedq.amqp.protocol.PublishNacked: the broker refused
            one; it and those not yet sent stay dead letters.
        """
        publisher = await self.protocol.open_channel()
        await publisher.enable_confirms()
        topology = self.topology

        async def take(letter: DeadLetter, channel: BrokerChannel) -> bool:
            if not select(letter):
                return False
            confirmed = publisher.publish(
                topology.exchange,
                topology.routing_key,
                letter.body,
                republish_properties(letter.properties),
                mandatory=True,
            )
            confirmed.addTimeout(self.confirm_timeout, self.protocol.clock)
            await confirmed
            channel.basic_ack(delivery_tag=letter.delivery_tag, multiple=False)
            return True

        try:
            _, taken = await self._walk(take)
        finally:
            await _close(publisher)
        return taken

    async def purge(self) -> int:
        """
        Delete every dead letter; return how many there were.
        """
        channel = await self.protocol.open_channel()
        try:
            purged = await channel.queue_purge(queue=self.topology.dead_letter_queue)
        finally:
            await _close(channel)
        return int(purged.message_count)

    async def _walk(
        self, take: Callable[[DeadLetter, BrokerChannel], Any]
    ) -> tuple[int, list[DeadLetter]]:
        """
        Read every dead letter, in order, and pass it to ``take``, which
        acknowledges those it removes and answers whether it did; return
        how many were read and those taken.
        """
        channel = await self.protocol.open_channel()
        taken = []
        position = 0
        try:
            await self.topology.declare(channel)
            # Only the letters there now: one republished that fails again
            # comes back behind them, and is not taken a second time.
            declared = await channel.queue_declare(
                queue=self.topology.dead_letter_queue, passive=True
            )
            while position < declared.message_count:
                got = await channel.basic_get(queue=self.topology.dead_letter_queue, no_ack=False)
                if got.method.name != "get-ok":
                    break
                position += 1
                content = got.content
                letter = DeadLetter(
                    position, content.body, dict(content.properties), got.delivery_tag
                )
                if await take(letter, channel):
                    taken.append(letter)
        finally:
            # Closing the channel puts back every message not acked.
            await _close(channel)
        return position, taken


async def _close(channel: BrokerChannel) -> None:
    if not channel.closed:
        await channel.channel_close()
