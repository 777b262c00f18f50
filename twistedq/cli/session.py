"""
What the subcommands of ``twistedq`` talk to: the broker (queues, remote
control, events) and the result store, each reached within the command's
timeout, or an :py:class:`~twistedq.cli.errors.Unreachable` naming its URL.

Unit tests replace a :py:class:`Session` with a fake that has the same
methods; nothing else in the command touches the network.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from twistedq.amqp.broker import (
    DELAY_EXPONENT_MAX,
    BrokerConnection,
    BrokerURLError,
    Topology,
    broker_addresses,
    describe,
)
from twistedq.cli.errors import CommandFailed, Unreachable, UsageError
from twistedq.conf import Settings
from twistedq.signing import SigningKeyError, SigningKeys

if TYPE_CHECKING:
    from twistedq.amqp.deadletters import DeadLetterQueue
    from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol
    from twistedq.client import AsyncClient
    from twistedq.control import ControlClient
    from twistedq.outcome import Outcome

__all__ = ["QueueCounts", "Session", "reason", "redact"]

T = TypeVar("T")

#: A queue's ready messages and consumers, from a passive declare.
QueueCounts = tuple[int, int]

#: How much longer than its wait a delay queue's oldest message may be
#: there before ``twistedq status`` calls the queue overdue.
OVERDUE_MARGIN = 60.0


@dataclass(frozen=True)
class DelayQueue:
    """
    A delay queue as ``twistedq status`` shows it.

    :ivar name: its name, ``<queue>.delay.<seconds>``.
    :ivar seconds: how long its messages wait (its message TTL).
    :ivar ready: how many messages it holds.
    :ivar oldest_age: how long its oldest message has been there
        (seconds), or None when it is empty or its messages carry no
        time stamp (put there by a daemon before this version).
    """

    name: str
    seconds: int
    ready: int
    oldest_age: float | None

    @property
    def overdue(self) -> bool:
        """
        Its oldest message is there longer than its wait plus
        :py:data:`OVERDUE_MARGIN`: the broker does not release it.
        """
        return self.oldest_age is not None and self.oldest_age > self.seconds + OVERDUE_MARGIN


#: How many failed attempts to connect make the broker unreachable before
#: the timeout (a refused connection fails at once; the second attempt
#: comes 0.2 s later).
CONNECT_ATTEMPTS = 2

#: The AMQP reply code of a passive declare (or purge) of a queue that
#: does not exist.
NOT_FOUND = 404

#: How the Redis client logs a connection it gave up (a refused login, a
#: database it may not select); it keeps no error a caller could wait on.
REDIS_REFUSAL = "Redis error: "


def redact(url: str) -> str:
    """
    ``url`` without its password, to be printed: each URL's password, when
    ``url`` lists several (broker addresses), and with several hosts in
    one URL (``redis+sentinel://:pw@h1:26379,h2:26379/name``).
    """
    return _PASSWORD.sub(r"\g<head>:***@", url)


#: The password of a URL's user information, up to the ``@`` before its host.
_PASSWORD = re.compile(r"(?P<head>://[^/@:,]*):[^/@]*@")


def reason(error: BaseException) -> str:
    """
    Why a call to the broker or the store failed, on one line: the
    broker's reply code and text when it closed the channel or the
    connection, else the exception's class and message.
    """
    text = describe(error)
    for argument in getattr(error, "args", ()):
        if isinstance(argument, Failure):
            text = describe(argument)
            break
        fields = getattr(argument, "fields", None)
        if fields and len(fields) > 1:
            text = f"{fields[0]} {fields[1]}"
            break
    return " ".join(text.split())


def _reply_code(error: BaseException) -> int | None:
    """
    The AMQP reply code carried by the error of a closed channel, if any.
    """
    for argument in getattr(error, "args", ()):
        fields = getattr(argument, "fields", None)
        if fields:
            try:
                return int(fields[0])
            except (TypeError, ValueError):
                return None
    return None


def _first(*waited: defer.Deferred[T]) -> defer.Deferred[T]:
    """
    What the first of ``waited`` to fire gives, its value or its error;
    cancelling it cancels them all.
    """

    def cancel(_: object) -> None:
        for one in waited:
            one.cancel()

    first: defer.Deferred[T] = defer.Deferred(cancel)

    def settle(result: T | Failure) -> None:
        if first.called:
            return
        if isinstance(result, Failure):
            first.errback(result)
        else:
            first.callback(result)

    for one in waited:
        one.addBoth(settle)
    return first


class Session:
    """
    The broker connection, the remote-control client, the event receiver
    and the result store of one run of the command, made on first use and
    closed by :py:meth:`close`.

    :ivar settings: where the broker, the queue and the store are.
    :ivar reactor: the running reactor.
    :ivar timeout: how long to wait for the broker or the store, in seconds.
    :ivar interrupted: fires when the user interrupts the command (Ctrl-C);
        a command that runs until then (``events``) waits on it.
    """

    def __init__(self, settings: Settings, reactor: Any, timeout: float) -> None:
        self.settings = settings
        self.reactor = reactor
        self.timeout = timeout
        self.interrupted: defer.Deferred[None] = defer.Deferred()
        self._connection: BrokerConnection | None = None
        self._client: AsyncClient | None = None
        self._control: ControlClient | None = None
        self._closing: list[Callable[[], Any]] = []

    @property
    def topology(self) -> Topology:
        """
        The task queue and exchange of the settings.
        """
        return Topology(exchange=self.settings.exchange, queue=self.settings.queue)

    def signing(self) -> SigningKeys | None:
        """
        The keys control requests are signed with, if signing is on.

        :raises UsageError: ``TWISTEDQ_SIGNING_KEYS`` cannot be understood.
        """
        try:
            return self.settings.signing()
        except SigningKeyError as e:
            raise UsageError(f"TWISTEDQ_SIGNING_KEYS: {e}") from None

    def interrupt(self) -> None:
        """
        The user interrupted the command: fire :py:attr:`interrupted`.
        """
        if not self.interrupted.called:
            self.interrupted.callback(None)

    async def _in_time(self, waited: defer.Deferred[T], what: str) -> T:
        waited.addTimeout(self.timeout, self.reactor)
        try:
            return await waited
        except defer.TimeoutError:
            raise Unreachable(f"{what} did not answer within {self.timeout:g} s") from None

    async def connection(self) -> BrokerConnection:
        """
        The broker connection, connected.

        The broker URL may name the nodes of a cluster, comma-separated:
        the connection moves to the next node when one fails.

        :raises Unreachable: not connected within the timeout, or two
            attempts failed (a refused connection, a refused login).
        :raises UsageError: the broker URL is not one.
        """
        if self._connection is None:
            try:
                addresses = broker_addresses(self.settings.broker_url)
            except BrokerURLError as e:
                raise UsageError(str(e)) from None
            connection = BrokerConnection(addresses, self.reactor)
            connection.startService()
            self._connection = connection
            self._closing.append(connection.stopService)
        connection = self._connection
        where = f"the broker at {connection.address}"
        try:
            await self._in_time(connection.when_connected(fail_after=CONNECT_ATTEMPTS), where)
        except Unreachable:
            raise
        except Exception as e:
            raise Unreachable(f"cannot reach {where}: {reason(e)}") from None
        return connection

    async def protocol(self) -> BrokerProtocol:
        """
        The connected broker protocol.
        """
        connection = await self.connection()
        return await connection.when_connected()

    async def _channel(self) -> BrokerChannel:
        protocol = await self.protocol()
        return await self._in_time(
            protocol.open_channel(), f"the broker at {self._connection_address()}"
        )

    def _connection_address(self) -> str:
        return str(self._connection.address) if self._connection is not None else "?"

    async def _on_queue(self, queue: str, call: Callable[[BrokerChannel], Any]) -> Any:
        """
        Run ``call(channel)`` on a channel of its own (a missing queue
        closes it); a 404 becomes :py:class:`CommandFailed`.
        """
        channel = await self._channel()
        try:
            return await self._in_time(
                defer.maybeDeferred(call, channel), f"the broker at {self._connection_address()}"
            )
        except Exception as e:
            if _reply_code(e) == NOT_FOUND:
                raise CommandFailed(f"there is no queue {queue!r} on the broker") from None
            raise
        finally:
            if not channel.closed:
                await channel.channel_close()

    async def queue_counts(self, queue: str) -> QueueCounts:
        """
        How many messages are ready in ``queue`` and how many consumers it
        has, without declaring it.

        :raises CommandFailed: there is no such queue.
        """
        declared = await self._on_queue(
            queue, lambda channel: channel.queue_declare(queue=queue, passive=True)
        )
        return int(declared.message_count), int(declared.consumer_count)

    async def delay_queues(self, topology: Topology) -> list[DelayQueue]:
        """
        The delay queues of ``topology`` that exist, shortest wait first:
        each with its messages and the age of its oldest (the one at its
        head, which the daemons stamped when they put it there; None when
        empty or unstamped).  The head is looked at with a ``basic.get``
        on a channel of its own, closed without an ack, so the message
        stays, first, in the queue.
        """
        found = []
        for exponent in range(DELAY_EXPONENT_MAX + 1):
            seconds = 1 << exponent
            name = topology.delay_queue(seconds)
            channel = await self._channel()
            channel.expects_not_found = True  # most do not exist: no warning
            address = f"the broker at {self._connection_address()}"
            try:
                declared = await self._in_time(
                    channel.queue_declare(queue=name, passive=True), address
                )
                ready = int(declared.message_count)
                stamped = None
                if ready:
                    got = await self._in_time(channel.basic_get(queue=name, no_ack=False), address)
                    if got.method.name == "get-ok":
                        stamped = got.content.properties.get("timestamp")
            except Exception as e:
                if _reply_code(e) == NOT_FOUND:
                    continue
                raise
            finally:
                if not channel.closed:
                    await channel.channel_close()
            age = None if stamped is None else max(0.0, self.reactor.seconds() - stamped)
            found.append(DelayQueue(name, seconds, ready, age))
        return found

    async def purge_queue(self, queue: str) -> int:
        """
        Delete the messages ready in ``queue``; return how many.

        :raises CommandFailed: there is no such queue.
        """
        purged = await self._on_queue(queue, lambda channel: channel.queue_purge(queue=queue))
        return int(purged.message_count)

    async def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply_timeout: float = 1.0,
    ) -> list[dict[str, Any]]:
        """
        Send a remote-control request to the daemons (those named in
        ``destination``, or all) and gather their replies for
        ``reply_timeout`` seconds (less once every named daemon answered).
        """
        from twistedq.control import ControlClient

        connection = await self.connection()
        if self._control is None:
            self._control = ControlClient(
                connection, self.settings.exchange, self.reactor, self.signing()
            )
            self._closing.insert(0, self._control.close)
        replies = await self._control.broadcast(
            command,
            arguments,
            list(destination) if destination else None,
            timeout=reply_timeout,
            limit=len(destination) if destination else None,
        )
        return list(replies)

    async def receive_events(
        self,
        patterns: Sequence[str],
        on_events: Callable[[list[dict[str, Any]]], None],
        note: Callable[[str], None] | None = None,
    ) -> Callable[[], defer.Deferred[None]]:
        """
        Consume the events whose routing keys match ``patterns`` (AMQP
        topic patterns), passing each batch to ``on_events``, from when
        this returns, across reconnections; return the function that
        stops.

        :param note: told, in a sentence, when the connection is lost and
            when the events come again.
        """
        from twistedq.amqp.events import EventReceiver

        connection = await self.connection()
        receiver = EventReceiver(connection, self.settings.exchange, on_events, patterns)
        await self._in_time(receiver.start(), f"the broker at {connection.address}")
        self._closing.insert(0, receiver.stop)
        if note is not None:
            self._watch_connection(connection, await connection.when_connected(), note)
        return receiver.stop

    def _watch_connection(
        self, connection: BrokerConnection, protocol: BrokerProtocol, note: Callable[[str], None]
    ) -> None:
        """
        Tell ``note`` when ``protocol`` is lost, and when a new connection
        is ready (its connect hooks, the receiver's binding among them,
        have run).
        """
        where = f"the broker at {connection.address}"

        def lost(_: object) -> None:
            if connection.running:
                note(f"lost the connection to {where}; connecting again")

        async def again(protocol: BrokerProtocol) -> None:
            note(f"connected to {where} again")
            protocol.disconnected.wait().addBoth(lost)

        protocol.disconnected.wait().addBoth(lost)
        connection.add_connect_hook(again)

    def client(self) -> AsyncClient:
        """
        The client that reads and revokes outcomes in the result store.
        """
        if self._client is None:
            from twistedq.client import AsyncClient

            try:
                client = AsyncClient(self.settings, self.reactor, confirm_timeout=self.timeout)
            except (ValueError, KeyError) as e:
                raise UsageError(
                    f"result backend {redact(self.settings.result_backend)}: {e}"
                ) from None
            self._client = client
            self._closing.append(client.close)
        return self._client

    def _store(self) -> str:
        return f"the result store at {redact(self.settings.result_backend)}"

    def _refusal(self, text: str) -> str:
        """
        What a store said, without the password of its URL.
        """
        password = urlsplit(self.settings.result_backend).password
        if password:
            text = text.replace(password, "***")
        return " ".join(text[len(REDIS_REFUSAL) :].split())

    async def _from_store(self, call: Callable[[], defer.Deferred[T]]) -> T:
        """
        The answer of ``call()`` to the store, within the timeout.

        :raises Unreachable: the store did not answer in time, refused the
            login (as soon as it did), or cannot be used (an SQLite file
            that cannot be opened).
        """
        where = self._store()
        refused: defer.Deferred[T] = defer.Deferred()

        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event) or ""
            if text.startswith(REDIS_REFUSAL) and not refused.called:
                refused.errback(Unreachable(f"{where} refused: {self._refusal(text)}"))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        try:
            return await self._in_time(_first(defer.maybeDeferred(call), refused), where)
        except sqlite3.Error as e:
            raise Unreachable(f"cannot use {where}: {reason(e)}") from None
        finally:
            globalLogPublisher.removeObserver(observer)

    async def outcome(self, task_id: str, wait: float | None = None) -> Outcome:
        """
        The stored outcome of a task; with ``wait``, once it is ready or
        when ``wait`` seconds have passed.

        :raises Unreachable: the store did not answer within the timeout.
        """
        client = self.client()
        (outcome,) = await self._from_store(lambda: client.get_outcomes([task_id]))
        if outcome.ready or not wait:
            return outcome
        try:
            return await client.wait_outcome(task_id, timeout=wait)
        except TimeoutError:
            # Not ready in time (or the store stopped answering meanwhile):
            # what it said last.
            return outcome

    async def outcomes(self, task_ids: Sequence[str]) -> list[Outcome]:
        """
        The stored outcomes of several tasks.
        """
        client = self.client()
        return await self._from_store(lambda: client.get_outcomes(task_ids))

    async def revoke(self, task_ids: Sequence[str]) -> list[str]:
        """
        Revoke tasks durably in the store (those not taken by a daemon);
        return the ids revoked.
        """
        client = self.client()
        return await self._from_store(lambda: client.revoke(task_ids))

    async def dead_letters(self, confirm_timeout: float) -> DeadLetterQueue:
        """
        The reader of the task queue's dead letters.
        """
        from twistedq.amqp.deadletters import DeadLetterQueue

        protocol = await self.protocol()
        return DeadLetterQueue(protocol, self.topology, confirm_timeout=confirm_timeout)

    async def close(self) -> None:
        """
        Stop consuming and close the connections, at most ``timeout``
        seconds each.
        """
        closing, self._closing = self._closing, []
        for close in closing:
            d = defer.maybeDeferred(close)
            d.addTimeout(self.timeout, self.reactor)
            # Closing is best-effort: the process ends next.
            d.addErrback(lambda failure: None)
            await d
