"""
The broker as twistedq uses it: a connection that stays up, the topology,
and a publisher with confirms (the consumer is in
:py:mod:`twistedq.amqp.consumer`).

Everything that touches txAMQP goes through :py:obj:`twistedq.amqp.protocol`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from twistedq.amqp.protocol import (
    BrokerChannel,
    BrokerDelegate,
    BrokerProtocol,
    load_spec,
)
from twistedq.message import CONTENT_TYPE, TOO_LARGE, MessageError, TaskMessage
from twistedq.signing import SigningKeys

__all__ = [
    "DELAY_EXPONENT_MAX",
    "BrokerAddress",
    "BrokerConnection",
    "BrokerURLError",
    "BrokerUnavailable",
    "PublishTimeout",
    "PublishUncertain",
    "Publisher",
    "Topology",
    "delay_step",
]

log = Logger()

PERSISTENT = 2

#: The longest delay queue waits 2 ** 20 s (about 12 days).
DELAY_EXPONENT_MAX = 20


def delay_step(seconds: float) -> int | None:
    """
    The wait of the longest delay queue not longer than ``seconds``: a
    power of two from 1 to 2 ** :py:data:`DELAY_EXPONENT_MAX`, or
    :py:obj:`None` under a second.
    """
    if seconds < 1:
        return None
    return 1 << min(DELAY_EXPONENT_MAX, int(seconds).bit_length() - 1)


class BrokerURLError(ValueError):
    """
    A broker URL could not be understood.
    """


class PublishUncertain(Exception):
    """
    The broker did not confirm a publish in time (it may be under a memory
    or disk alarm, or unreachable).  The message may or may not have been
    taken: publish it again with the same task id to be sure.

    :ivar task_id: the id of the task whose publish is uncertain.
    """

    def __init__(self, task_id: str, seconds: float) -> None:
        super().__init__(f"no confirm for task {task_id} within {seconds} s")
        self.task_id = task_id


#: The earlier name of :py:class:`PublishUncertain`.
PublishTimeout = PublishUncertain


class BrokerUnavailable(Exception):
    """
    The broker could not be reached in time; nothing was published.
    """


@dataclass(frozen=True)
class BrokerAddress:
    """
    Where the broker is and how to log in.
    """

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    heartbeat: int = 30
    connect_timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """
        Parse ``amqp://user:password@host:port/vhost?heartbeat=30``.  The
        vhost is the path without its leading slash, percent-decoded; an
        empty path means ``/``.

        :raises BrokerURLError: the URL is not an amqp URL.
        """
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            raise BrokerURLError(f"broker URL must start with amqp://, not {url!r}")
        if not parts.hostname:
            raise BrokerURLError(f"broker URL {url!r} names no host")
        try:
            port = parts.port or 5672
        except ValueError:
            raise BrokerURLError(f"broker URL {url!r} has a bad port") from None
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        query = parse_qs(parts.query)
        try:
            heartbeat = int(query.get("heartbeat", ["30"])[0])
            connect_timeout = float(query.get("connect_timeout", ["10"])[0])
        except ValueError:
            raise BrokerURLError(f"broker URL {url!r} has a bad query value") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=vhost,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
        )

    def __str__(self) -> str:
        return f"amqp://{self.username}@{self.host}:{self.port}/{self.vhost}"


ConnectHook = Callable[[BrokerProtocol], Awaitable[Any]]


class _ProtocolFactory(Factory):
    noisy = False

    def __init__(self, address: BrokerAddress, clock: Any) -> None:
        self.address = address
        self.clock = clock
        self.spec = load_spec()

    def buildProtocol(self, addr: Any) -> BrokerProtocol:
        protocol = BrokerProtocol(
            BrokerDelegate(),
            self.address.vhost,
            self.spec,
            heartbeat=self.address.heartbeat,
            clock=self.clock,
        )
        protocol.factory = self
        return protocol


class BrokerConnection(Service):
    """
    A connection to the broker that reconnects with backoff.  Each time it
    connects it logs in and runs the connect hooks in order (declare the
    topology, open channels, start consuming); only then is it handed out by
    :py:obj:`when_connected`.
    """

    def __init__(self, address: BrokerAddress, reactor: Any) -> None:
        self.address = address
        self.reactor = reactor
        self._hooks: list[ConnectHook] = []
        self._protocol: BrokerProtocol | None = None
        endpoint = HostnameEndpoint(
            reactor, address.host, address.port, timeout=address.connect_timeout
        )
        self._client_service = ClientService(
            endpoint,
            _ProtocolFactory(address, reactor),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """
        Run ``hook(protocol)`` on every new connection, after logging in.
        """
        self._hooks.append(hook)

    def _prepare(self, connected: IProtocol) -> defer.Deferred[None]:
        # ClientService knows protocols as IProtocol; _ProtocolFactory builds ours.
        protocol = cast(BrokerProtocol, connected)

        async def prepare() -> None:
            await protocol.authenticate(self.address.username, self.address.password)
            for hook in self._hooks:
                await hook(protocol)
            self._protocol = protocol
            protocol.disconnected.wait().addBoth(self._lost, protocol)
            log.info("Connected to {broker}", broker=str(self.address))

        d = defer.Deferred.fromCoroutine(prepare())
        d.addErrback(self._prepare_failed)
        return d

    def _lost(self, result: Any, protocol: BrokerProtocol) -> Any:
        if self._protocol is protocol:
            self._protocol = None
        return result

    def _prepare_failed(self, failure: Any) -> Any:
        log.failure("Setting up the broker connection failed", failure)
        return failure

    def when_connected(self, fail_after: int | None = None) -> defer.Deferred[BrokerProtocol]:
        """
        A Deferred that fires with the connected, prepared protocol.

        :param fail_after: fail after this many failed connection attempts
            instead of waiting for ever.
        """
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return defer.succeed(protocol)
        connecting = self._client_service.whenConnected(failAfterFailures=fail_after)
        # As in _prepare: the protocol _ProtocolFactory built.
        return cast("defer.Deferred[BrokerProtocol]", connecting)

    def startService(self) -> None:
        Service.startService(self)
        self._client_service.startService()

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        self._protocol = None
        return self._client_service.stopService()


@dataclass(frozen=True)
class Topology:
    """
    The exchange, queue and dead-letter queue that tasks travel through.
    Declaring it is idempotent, so both the client and the daemon do it.
    """

    exchange: str = "twistedq"
    queue: str = "twistedq"

    @property
    def routing_key(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dead"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    async def declare(self, channel: BrokerChannel) -> None:
        """
        Declare the durable exchange and queue, bound by the queue's name,
        and the dead-letter exchange and queue that rejected messages go to.
        """
        await channel.exchange_declare(
            exchange=self.dead_letter_exchange, type="direct", durable=True
        )
        await channel.queue_declare(queue=self.dead_letter_queue, durable=True)
        await channel.queue_bind(
            queue=self.dead_letter_queue,
            exchange=self.dead_letter_exchange,
            routing_key=self.routing_key,
        )
        await channel.exchange_declare(exchange=self.exchange, type="direct", durable=True)
        await channel.queue_declare(
            queue=self.queue,
            durable=True,
            arguments={"x-dead-letter-exchange": self.dead_letter_exchange},
        )
        await channel.queue_bind(
            queue=self.queue, exchange=self.exchange, routing_key=self.routing_key
        )

    def delay_queue(self, seconds: int) -> str:
        """
        The name of the delay queue whose messages wait ``seconds``.
        """
        return f"{self.queue}.delay.{seconds}"

    async def declare_delay_queue(self, channel: BrokerChannel, seconds: int) -> str:
        """
        Declare the durable delay queue of ``seconds``; return its name.
        Its messages expire after ``seconds`` (``x-message-ttl``) and are
        then dead-lettered back to the task queue through the exchange.
        All of its messages wait the same time, so they expire in order.
        """
        name = self.delay_queue(seconds)
        await channel.queue_declare(
            queue=name,
            durable=True,
            arguments={
                "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": self.exchange,
                "x-dead-letter-routing-key": self.routing_key,
            },
        )
        return name


class Publisher:
    """
    Publishes task messages as persistent messages on a channel in confirm
    mode: :py:obj:`publish` fires once the broker has taken responsibility.

    :ivar signing: the keys that sign each message, or :py:obj:`None`.
    :ivar max_message_size: the largest body published, in bytes, or
        :py:obj:`None` for no limit.
    """

    def __init__(
        self,
        connection: BrokerConnection,
        topology: Topology,
        confirm_timeout: float = 30.0,
        signing: SigningKeys | None = None,
        max_message_size: int | None = None,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.confirm_timeout = confirm_timeout
        self.signing = signing
        self.max_message_size = max_message_size
        self._channel: BrokerChannel | None = None
        self._declared: set[str] = set()
        connection.add_connect_hook(self._connected)

    async def _connected(self, protocol: BrokerProtocol) -> None:
        channel = await protocol.open_channel()
        await channel.enable_confirms()
        await self.topology.declare(channel)
        self._declared = {self.topology.queue}
        self._channel = channel

    async def _channel_for(self, queue: str) -> BrokerChannel:
        """
        The publishing channel, once ``queue`` is declared on this
        connection (queues other than the default one on first use).
        """
        channel = self._channel
        assert channel is not None
        if queue not in self._declared:
            await Topology(exchange=self.topology.exchange, queue=queue).declare(channel)
            self._declared.add(queue)
        return channel

    async def _connected_in_time(self) -> None:
        connected = self.connection.when_connected()
        connected.addTimeout(self.confirm_timeout, self.connection.reactor)
        try:
            await connected
        except defer.TimeoutError:
            raise BrokerUnavailable(
                f"could not reach the broker at {self.connection.address} "
                f"within {self.confirm_timeout} s"
            ) from None

    async def purge(self, queue: str | None = None) -> int:
        """
        Delete every message waiting in ``queue`` (by default the
        topology's); return how many there were.
        """
        await self._connected_in_time()
        channel = await self._channel_for(queue or self.topology.queue)
        purged = await channel.queue_purge(queue=queue or self.topology.queue)
        return int(purged.message_count)

    async def publish_later(self, message: TaskMessage, delay: float) -> None:
        """
        Publish a task message for the topology's queue into the longest
        delay queue not longer than ``delay`` seconds (declared on first
        use), and wait for the broker's confirm; under a second, into the
        queue itself.  When the message comes back to the queue it may
        need another hop: the daemon that receives it decides.

        :raises: as :py:meth:`publish` does.
        """
        step = delay_step(delay)
        if step is None:
            await self.publish(message)
            return
        body, properties = self._encode(message)
        await self._connected_in_time()
        channel = self._channel
        assert channel is not None
        name = self.topology.delay_queue(step)
        if name not in self._declared:
            await self.topology.declare_delay_queue(channel, step)
            self._declared.add(name)
        # The default exchange routes to the queue of that name.
        await self._confirmed(channel, "", name, message.id, body, properties)
        log.info(
            "Task {task}[{id}] waits {seconds} s in {queue}",
            task=message.task,
            id=message.id,
            seconds=step,
            queue=name,
        )

    async def publish(self, message: TaskMessage, queue: str | None = None) -> None:
        """
        Publish one task message to ``queue`` (by default the topology's)
        and wait for the broker's confirm.

        :raises BrokerUnavailable: no connection within ``confirm_timeout``
            seconds; nothing was sent.
        :raises PublishUncertain: no confirm within ``confirm_timeout`` seconds.
        :raises twistedq.amqp.protocol.Unroutable: no queue takes the message.
        :raises twistedq.amqp.protocol.PublishNacked: the broker refused it.
        :raises twistedq.message.MessageError: an argument is not a JSON
            value, or the message is over ``max_message_size``; nothing
            was sent.
        """
        body, properties = self._encode(message)
        await self._connected_in_time()
        queue = queue or self.topology.queue
        channel = await self._channel_for(queue)
        await self._confirmed(channel, self.topology.exchange, queue, message.id, body, properties)

    def _encode(self, message: TaskMessage) -> tuple[bytes, dict[str, Any]]:
        """
        The body and properties of a message, signed with the first key.
        """
        body = message.encode()
        if self.max_message_size is not None and len(body) > self.max_message_size:
            raise MessageError(
                f"task {message.task} is {len(body)} bytes encoded, over the limit of "
                f"{self.max_message_size}",
                TOO_LARGE,
                message.id,
                message.task,
            )
        properties: dict[str, Any] = {
            "content-type": CONTENT_TYPE,
            "delivery-mode": PERSISTENT,
            "message-id": message.id,
        }
        if self.signing is not None:
            properties["headers"] = self.signing.sign(body)
        return body, properties

    async def _confirmed(
        self,
        channel: BrokerChannel,
        exchange: str,
        routing_key: str,
        task_id: str,
        body: bytes,
        properties: dict[str, Any],
    ) -> None:
        """
        Publish and wait for the broker's confirm, at most ``confirm_timeout``.
        """
        confirmed = channel.publish(exchange, routing_key, body, properties, mandatory=True)
        timeout = self.connection.reactor.callLater(self.confirm_timeout, confirmed.cancel)
        try:
            await confirmed
        except defer.CancelledError:
            raise PublishUncertain(task_id, self.confirm_timeout) from None
        finally:
            if timeout.active():
                timeout.cancel()
