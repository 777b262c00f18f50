"""
The broker as twistedq uses it: a connection that stays up, the topology,
and a publisher with confirms (the consumer is in
:py:mod:`twistedq.amqp.consumer`).

Everything that touches txAMQP goes through :py:obj:`twistedq.amqp.protocol`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit
from weakref import WeakKeyDictionary

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from txamqp.client import ChannelClosed
from zope.interface import implementer

from twistedq.amqp.protocol import (
    CLOSED_ERRORS,
    BrokerChannel,
    BrokerDelegate,
    BrokerProtocol,
    PublishNacked,
    Unroutable,
    load_spec,
)
from twistedq.message import (
    CONTENT_TYPE,
    TOO_LARGE,
    MessageError,
    TaskMessage,
    check_queue_name,
)
from twistedq.signing import SigningKeys

__all__ = [
    "DELAY_EXPONENT_MAX",
    "HOP_HEADER",
    "MAX_PRIORITY",
    "QUEUE_TYPES",
    "QUICK_RETRY",
    "WARN_EVERY",
    "BrokerAddress",
    "BrokerConnection",
    "BrokerURLError",
    "BrokerUnavailable",
    "ChannelRefused",
    "PublishRefused",
    "PublishTimeout",
    "PublishUncertain",
    "Publisher",
    "QueueMismatch",
    "QueueMismatches",
    "Topology",
    "broker_addresses",
    "check_priority",
    "delay_step",
    "describe",
    "queue_exists",
    "reply_of",
]

log = Logger()

PERSISTENT = 2

#: The header of a message the daemon published again unchanged, to come
#: back later (an ETA or a rate limit's wait): the daemon that receives it
#: does not report it as received again (``task_received`` fires once).
HOP_HEADER = "x-twistedq-hop"

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


#: The queue types :py:class:`Topology` declares.
QUEUE_TYPES = ("classic", "quorum")

#: The highest priority a classic queue may be declared with
#: (``x-max-priority``): a task's priority is 0 to this.
MAX_PRIORITY = 9

#: The reply code of a declare whose arguments differ from the queue's.
PRECONDITION_FAILED = 406

#: The reply code of a passive declare of a queue that does not exist.
NOT_FOUND = 404

#: The daemon option behind each queue argument, for the error that names
#: what differs.
_ARGUMENT_OPTIONS = {
    "x-queue-type": "--queue-type",
    "x-overflow": "--queue-type",
    "x-dead-letter-strategy": "--queue-type",
    "x-delivery-limit": "--task-attempts",
    "x-max-priority": "--max-priority",
    "x-message-ttl": "the delay queue's name",
    "x-dead-letter-exchange": "--exchange",
    "x-dead-letter-routing-key": "--queue",
}


def reply_of(error: BaseException) -> tuple[int | None, str]:
    """
    The AMQP reply code and text carried by the error of a channel or
    connection the broker closed, or ``(None, "")``.
    """
    for argument in getattr(error, "args", ()):
        fields = getattr(argument, "fields", None)
        if fields and len(fields) > 1:
            try:
                return int(fields[0]), str(fields[1])
            except (TypeError, ValueError):
                break
    return None, ""


class QueueMismatch(Exception):
    """
    A queue exists on the broker with another type or other arguments than
    those declared (the broker answered 406 PRECONDITION_FAILED and closed
    the channel).  The text names the queue, what differs, and what to do.

    :ivar queue: the queue's name.
    :ivar broker_text: what the broker said.
    :ivar existing_type: the type the queue exists with, when it is not
        the one declared (``"classic"`` or ``"quorum"``), else None.
    :ivar mismatches: every queue found to differ (this one alone here;
        several in :py:class:`QueueMismatches`).
    """

    def __init__(
        self,
        queue: str,
        arguments: dict[str, Any],
        broker_text: str,
        existing_type: str | None = None,
    ) -> None:
        self.queue = queue
        self.arguments = arguments
        self.broker_text = broker_text
        self.existing_type = existing_type
        self.mismatches = [self]
        super().__init__(
            f"{self.what()}. Start with the options the queue was made with, or move "
            f"to the new ones: stop the daemons, drain the queue, delete it (rabbitmqctl "
            f"delete_queue {queue}) and start them again. The broker said: {broker_text}"
        )

    def what(self) -> str:
        """
        The queue and what differs, e.g. ``queue 'jobs' exists as a
        classic queue, declared quorum here (x-queue-type (--queue-type))``.
        """
        if self.existing_type is not None:
            declared = "quorum" if self.existing_type == "classic" else "classic"
            return (
                f"queue {self.queue!r} exists as a {self.existing_type} queue, declared "
                f"{declared} here (x-queue-type (--queue-type))"
            )
        differs = [name for name in _ARGUMENT_OPTIONS if f"'{name}'" in self.broker_text]
        which = ", ".join(f"{name} ({_ARGUMENT_OPTIONS[name]})" for name in differs)
        return (
            f"queue {self.queue!r} exists on the broker with other arguments than declared here "
            f"({which or 'see the broker text'}; declared {_show(self.arguments)})"
        )


class QueueMismatches(QueueMismatch):
    """
    Several queues of a topology differ from what is declared: all are
    named at once, and none was declared.
    """

    def __init__(self, mismatches: list[QueueMismatch]) -> None:
        first = mismatches[0]
        self.queue = first.queue
        self.arguments = first.arguments
        self.broker_text = first.broker_text
        self.existing_type = first.existing_type
        self.mismatches = mismatches
        deletes = "; ".join(f"rabbitmqctl delete_queue {m.queue}" for m in mismatches)
        said = "; ".join(f"{m.queue}: {m.broker_text}" for m in mismatches)
        Exception.__init__(
            self,
            f"{len(mismatches)} queues exist on the broker otherwise than declared here, so "
            f"none was declared: {'; '.join(m.what() for m in mismatches)}. Start with the "
            f"options the queues were made with, or move to the new ones: stop the daemons, "
            f"drain the queues, delete them ({deletes}) and start them again. The broker "
            f"said: {said}",
        )


def check_priority(priority: int | None) -> None:
    """
    Refuse a task priority that is not :py:obj:`None` or an integer from 0
    to :py:data:`MAX_PRIORITY`.

    :raises ValueError: it is not.
    """
    if priority is None:
        return
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"a priority must be an integer from 0 to {MAX_PRIORITY}, not {priority!r}"
        )


def _show(arguments: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(arguments.items())) + "}"


class BrokerURLError(ValueError):
    """
    A broker URL could not be understood.
    """


class PublishUncertain(Exception):
    """
    The broker did not confirm a publish: no confirm came in time (it may
    be under a memory or disk alarm, or unreachable), or the connection was
    lost after the message was sent.  The message may or may not have been
    taken: publish it again with the same task id to be sure.

    :ivar task_id: the id of the task whose publish is uncertain.
    :ivar confirmed_ids: the ids of the other messages of the same call
        that the broker did confirm.
    """

    def __init__(self, task_id: str, seconds: float | None = None, reason: str | None = None):
        if reason is None:
            text = f"no confirm for task {task_id} within {seconds} s"
        else:
            text = (
                f"no confirm for task {task_id}, which may or may not be queued: "
                f"the connection to the broker closed after it was sent ({reason})"
            )
        super().__init__(text)
        self.task_id = task_id
        self.confirmed_ids: list[str] = []


class PublishRefused(PublishNacked):
    """
    The broker refused the message (``basic.nack``): it did not take it.
    A quorum queue refuses publishes while it elects a new leader after its
    leader's node died: publish it again, with the same task id.

    :ivar task_id: the id of the task refused.
    :ivar confirmed_ids: the ids of the other messages of the same call
        that the broker did confirm.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"the broker refused task {task_id} (basic.nack), which is not queued: publish it again"
        )
        self.task_id = task_id
        self.confirmed_ids: list[str] = []


#: The earlier name of :py:class:`PublishUncertain`.
PublishTimeout = PublishUncertain


class BrokerUnavailable(Exception):
    """
    The broker could not be reached, or the connection closed before the
    message was sent: nothing was published.  The text says why (the
    connection refused, an unknown host, a login refused, no answer in
    time).

    :ivar confirmed_ids: the ids of the other messages of the same call
        that the broker did confirm before this failure.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.confirmed_ids: list[str] = []


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

        :raises BrokerURLError: the URL is not an amqp URL, or is several
            (see :py:func:`broker_addresses`).
        """
        if ",amqp://" in url.replace(" ", ""):
            raise BrokerURLError(
                f"{url!r} is several broker URLs where one is expected; the daemon and the "
                "client take such a list"
            )
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


def broker_addresses(urls: str | Sequence[str]) -> list[BrokerAddress]:
    """
    The addresses of the nodes of a cluster, from broker URLs separated by
    commas (``amqp://h1:5672/,amqp://h2:5672/``) or a list of such texts;
    one URL gives one address.

    :raises BrokerURLError: a URL is not an amqp URL, or there is none.
    """
    texts = [urls] if isinstance(urls, str) else list(urls)
    found = [part.strip() for text in texts for part in text.split(",") if part.strip()]
    if not found:
        raise BrokerURLError("no broker URL given")
    return [BrokerAddress.from_url(url) for url in found]


ConnectHook = Callable[[BrokerProtocol], Awaitable[Any]]

#: What a call on a closed channel or connection raises.
_CLOSED: tuple[type[Exception], ...] = (*CLOSED_ERRORS, ConnectionLost, ConnectionDone)

#: The first pause between two quick attempts to connect of a publish
#: (:py:attr:`Publisher.connect_attempts`), in seconds.
QUICK_RETRY = 0.1

#: After the first failed attempt to connect, how long failures are logged
#: at INFO before the next WARNING, in seconds.
WARN_EVERY = 60.0


def describe(failure: Failure | BaseException) -> str:
    """
    The reason of a failure to connect or publish, for a person: the
    exception's class and message (``ConnectionRefusedError: Connection
    was refused by other side: 111: Connection refused.``).
    """
    error = failure.value if isinstance(failure, Failure) else failure
    text = str(error).strip() or "(no message)"
    return f"{type(error).__name__}: {text}"


class _Connection(BrokerProtocol):
    """
    The protocol :py:class:`BrokerConnection` uses: it tells its factory
    once the TCP connection is made, so logging in starts at once, and
    keeps why it was lost.
    """

    factory: _ProtocolFactory
    lost_reason: Failure | None = None

    def connectionMade(self) -> None:
        BrokerProtocol.connectionMade(self)
        self.factory.made(self)

    def connectionLost(self, reason: Failure) -> None:
        self.lost_reason = reason
        BrokerProtocol.connectionLost(self, reason)


class _ProtocolFactory(Factory):
    noisy = False

    def __init__(
        self,
        address: Callable[[], BrokerAddress],
        clock: Any,
        made: Callable[[BrokerProtocol], None],
    ) -> None:
        self.address = address
        self.clock = clock
        self.made = made
        self.spec = load_spec()

    def buildProtocol(self, addr: Any) -> BrokerProtocol:
        address = self.address()
        protocol = _Connection(
            BrokerDelegate(),
            address.vhost,
            self.spec,
            heartbeat=address.heartbeat,
            clock=self.clock,
        )
        protocol.factory = self
        return protocol


@implementer(IStreamClientEndpoint)
class _ObservedEndpoint:
    """
    An endpoint that reports each failed TCP connection attempt (refused,
    unknown host, timed out) before :py:class:`ClientService` retries.
    """

    def __init__(self, endpoint: Any, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def __repr__(self) -> str:
        return repr(self._endpoint)

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        def failed(failure: Failure) -> Failure:
            if not failure.check(defer.CancelledError):
                self._failed(failure)
            return failure

        connecting: defer.Deferred[Any] = self._endpoint.connect(factory)
        return connecting.addErrback(failed)


@implementer(IStreamClientEndpoint)
class _RotatingEndpoint:
    """
    Connects to the endpoint of the connection's current address (one of
    its addresses in turn: see :py:meth:`BrokerConnection.next_address`).
    """

    def __init__(self, endpoints: Sequence[Any], current: Callable[[], int]) -> None:
        self._endpoints = list(endpoints)
        self._current = current

    def __repr__(self) -> str:
        return repr(self._endpoints[self._current()])

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        connecting: defer.Deferred[Any] = self._endpoints[self._current()].connect(factory)
        return connecting


class _RetryClock:
    """
    The clock :py:class:`ClientService` schedules its next attempt on; it
    keeps that call so an attempt can be made at once instead.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.retry: IDelayedCall | None = None

    def seconds(self) -> float:
        return float(self.reactor.seconds())

    def callLater(self, delay: float, function: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
        self.retry = self.reactor.callLater(delay, function, *args, **kwargs)
        return self.retry

    def getDelayedCalls(self) -> Any:
        return self.reactor.getDelayedCalls()


class _QuietClientService(ClientService):
    """
    A :py:class:`ClientService` that does not log its "Scheduling retry N"
    (N counts TCP connections and starts again after one whose login
    failed): :py:class:`BrokerConnection` logs its own, with its count.
    """

    _log = Logger(observer=cast(ILogObserver, lambda event: None))


class BrokerConnection(Service):
    """
    A connection to the broker that reconnects with backoff.  Each time it
    connects it logs in and runs the connect hooks in order (declare the
    topology, open channels, start consuming); only then is it handed out by
    :py:obj:`when_connected`.

    Given several addresses (the nodes of a cluster), it connects to the
    first, and moves to the next one, round robin, after each failed
    attempt and each lost connection; the backoff counts the attempts
    failed on any node since the last success.

    An attempt fails when the TCP connection fails (refused, unknown host,
    timed out after the address's ``connect_timeout``), or when logging in
    or a hook fails or does not finish within ``connect_timeout``.  The
    first failure after a success, and one every :py:data:`WARN_EVERY`
    seconds after it, are WARNINGs with the reason; the others INFO.

    :param address: the broker's address, or the addresses of the nodes
        of a cluster, tried in turn.
    :param endpoint: where to connect, instead of the address's host and
        port (for tests): one endpoint, or one per address.
    :raises ValueError: no address, or not one endpoint per address.
    """

    def __init__(
        self,
        address: BrokerAddress | Sequence[BrokerAddress],
        reactor: Any,
        endpoint: IStreamClientEndpoint | Sequence[IStreamClientEndpoint] | None = None,
    ) -> None:
        addresses = [address] if isinstance(address, BrokerAddress) else list(address)
        if not addresses:
            raise ValueError("no broker address")
        self.addresses: tuple[BrokerAddress, ...] = tuple(addresses)
        self._current = 0
        self.reactor = reactor
        self._hooks: list[ConnectHook] = []
        self._protocol: BrokerProtocol | None = None
        self._waiting: list[tuple[defer.Deferred[BrokerProtocol], int | None]] = []
        self._failures = 0
        self._last_failure: str | None = None
        self._warned_at: float | None = None
        self._stopping = False
        self._clock = _RetryClock(reactor)
        if endpoint is None:
            endpoints: list[Any] = [
                HostnameEndpoint(reactor, each.host, each.port, timeout=each.connect_timeout)
                for each in addresses
            ]
        elif isinstance(endpoint, Sequence):
            endpoints = list(endpoint)
        else:
            endpoints = [endpoint]
        if len(endpoints) != len(addresses):
            raise ValueError(f"{len(endpoints)} endpoints for {len(addresses)} broker addresses")
        self._policy = backoffPolicy(initialDelay=0.2, maxDelay=10.0)
        self._client_service = _QuietClientService(
            _ObservedEndpoint(_RotatingEndpoint(endpoints, lambda: self._current), self._failed),
            _ProtocolFactory(lambda: self.address, reactor, self._made),
            retryPolicy=self._retry_after,
            clock=cast(IReactorTime, self._clock),
        )

    def _retry_after(self, attempt: int) -> float:
        """
        The pause before the next attempt to connect, logged.  The attempts
        that count are those failed since the last success, logging in
        included (ClientService's ``attempt`` counts TCP connections).
        """
        failures = max(attempt, self._failures)
        pause = float(self._policy(failures))
        if self._failures:
            log.info(
                "Next attempt to connect, to {broker}, in {pause:.1f} s "
                "(after {failures} failed attempts)",
                broker=str(self.address),
                pause=pause,
                failures=self._failures,
            )
        else:
            log.info(
                "Connecting again, to {broker}, in {pause:.1f} s",
                broker=str(self.address),
                pause=pause,
            )
        return pause

    @property
    def address(self) -> BrokerAddress:
        """
        The address connected to, or to be tried next.
        """
        return self.addresses[self._current]

    @property
    def where(self) -> str:
        """
        The broker's address for a person (its password hidden), or the
        list of the cluster's addresses.
        """
        if len(self.addresses) == 1:
            return str(self.address)
        return "any of " + ", ".join(str(each) for each in self.addresses)

    def next_address(self) -> None:
        """
        Make the next address, round robin, the one the next attempt tries.
        """
        self._current = (self._current + 1) % len(self.addresses)

    @property
    def failures(self) -> int:
        """
        How many attempts failed since the connection was last ready.
        """
        return self._failures

    @property
    def last_failure(self) -> str | None:
        """
        Why the last attempt failed, while no attempt has succeeded since.
        """
        return self._last_failure if self._failures else None

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """
        Run ``hook(protocol)`` on every new connection, after logging in.
        """
        self._hooks.append(hook)

    def _made(self, protocol: BrokerProtocol) -> None:
        """
        A TCP connection is made: log in and run the hooks, within the
        address's ``connect_timeout``.
        """

        async def prepare() -> None:
            await protocol.authenticate(self.address.username, self.address.password)
            for hook in self._hooks:
                await hook(protocol)

        d = defer.Deferred.fromCoroutine(prepare())
        d.addTimeout(self.address.connect_timeout, self.reactor)
        d.addCallbacks(
            self._prepared,
            self._prepare_failed,
            callbackArgs=(protocol,),
            errbackArgs=(protocol,),
        )

    def _prepared(self, result: Any, protocol: BrokerProtocol) -> None:
        if protocol.closed or self._stopping:
            return
        self._protocol = protocol
        protocol.disconnected.wait().addBoth(self._lost, protocol)
        if self._failures:
            log.info(
                "Connected to {broker} after {failures} failed attempts",
                broker=str(self.address),
                failures=self._failures,
            )
        else:
            log.info("Connected to {broker}", broker=str(self.address))
        self._failures = 0
        self._warned_at = None
        waiting, self._waiting = self._waiting, []
        for d, _ in waiting:
            d.callback(protocol)

    def _prepare_failed(self, failure: Failure, protocol: BrokerProtocol) -> None:
        if self._stopping:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            return
        if failure.check(defer.TimeoutError):
            failure = Failure(
                defer.TimeoutError(
                    f"logging in did not finish within {self.address.connect_timeout} s"
                )
            )
        elif failure.check(QueueMismatch):
            # The reason, not a traceback: it tells the operator what to do.
            log.error(
                "Cannot use the broker at {broker}: {reason}",
                broker=str(self.address),
                reason=str(failure.value),
            )
        elif not failure.check(*_CLOSED):
            log.failure("Setting up the broker connection failed", failure)
        # Counted before the connection is dropped: the retry it schedules
        # then logs the count and the next address.
        self._failed(failure)
        if protocol.transport is not None:
            protocol.transport.abortConnection()

    def _failed(self, failure: Failure) -> None:
        """
        One attempt failed: log it, and fail the waiters that gave up.
        """
        if self._stopping:
            return
        self._failures += 1
        self._last_failure = describe(failure)
        now = self.reactor.seconds()
        warn = self._warned_at is None or now - self._warned_at >= WARN_EVERY
        (log.warn if warn else log.info)(
            "Cannot connect to the broker at {broker} ({failures} failed attempts): {reason}",
            broker=str(self.address),
            failures=self._failures,
            reason=describe(failure),
        )
        if warn:
            self._warned_at = now
        self.next_address()
        still: list[tuple[defer.Deferred[BrokerProtocol], int | None]] = []
        given_up = []
        for d, left in self._waiting:
            if left is not None and left <= 1:
                given_up.append(d)
            else:
                still.append((d, None if left is None else left - 1))
        self._waiting = still
        for d in given_up:
            d.errback(failure)

    def _lost(self, result: Any, protocol: BrokerProtocol) -> Any:
        if self._protocol is protocol:
            self._protocol = None
            if not self._stopping:
                reason = getattr(protocol, "lost_reason", None)
                log.warn(
                    "Lost the connection to the broker at {broker}: {reason}",
                    broker=str(self.address),
                    reason="closed" if reason is None else describe(reason),
                )
                self.next_address()
        return result

    def retry_now(self) -> None:
        """
        Make the next attempt to connect now, if one is waiting for its
        turn of the backoff.
        """
        retry = self._clock.retry
        if retry is not None and retry.active():
            retry.reset(0)

    def when_connected(self, fail_after: int | None = None) -> defer.Deferred[BrokerProtocol]:
        """
        A Deferred that fires with the connected, prepared protocol.

        :param fail_after: fail, with the reason of the last attempt,
            after this many failed attempts from now, instead of waiting
            for ever.
        :raises twisted.internet.error.ConnectionDone: the connection is
            stopped, or stops while waited for.
        """
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return defer.succeed(protocol)
        if self._stopping:
            return defer.fail(ConnectionDone("the broker connection is stopped"))

        def cancel(d: defer.Deferred[BrokerProtocol]) -> None:
            self._waiting = [(w, left) for w, left in self._waiting if w is not d]

        d: defer.Deferred[BrokerProtocol] = defer.Deferred(cancel)
        self._waiting.append((d, fail_after))
        return d

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self._client_service.startService()

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        self._stopping = True
        self._protocol = None
        waiting, self._waiting = self._waiting, []
        for d, _ in waiting:
            d.errback(ConnectionDone("the broker connection was stopped"))
        return self._client_service.stopService()


class ChannelRefused(Exception):
    """
    The broker closed a channel with a channel-level error (``403
    ACCESS_REFUSED``, for instance, for a queue it does not let this user
    declare) while the queues of a message were declared: nothing was
    sent, and publishing the same message again meets the same refusal.
    The connection stays up; the next publish opens a new channel.

    :ivar queue: the queue being declared.
    :ivar code: the broker's reply code, or :py:obj:`None`.
    :ivar reply: the broker's reply text.
    """

    def __init__(self, queue: str, code: int | None, reply: str) -> None:
        super().__init__(
            f"the broker refused to declare queue {queue!r} ({code} {reply}): a message "
            "to it cannot be published"
        )
        self.queue = queue
        self.code = code
        self.reply = reply


@dataclass(frozen=True)
class Topology:
    """
    The exchange, queue and dead-letter queue that tasks travel through.
    Declaring it is idempotent, so both the client and the daemon do it.

    :ivar queue_type: ``"classic"`` or ``"quorum"``: the task, delay and
        dead-letter queues are declared of that type with exactly these
        arguments, and one that exists otherwise raises
        :py:class:`QueueMismatch`.  :py:obj:`None` takes each queue as it
        exists on the broker, and declares a missing one classic (for
        clients and tools that do not know the daemons' options).
    :ivar delivery_limit: quorum queues: how many times the broker puts a
        message of the task queue back (a daemon or its connection died
        holding it) before it dead-letters it (``x-delivery-limit``).
    :ivar max_priority: classic queues: the highest message priority the
        task queue orders by (``x-max-priority``); :py:obj:`None` for no
        priorities.
    :ivar take_existing: take a queue that exists as it is, whatever its
        type and arguments, and declare only missing ones with these (as
        the client does: it does not know the daemons' options); always so
        without a :py:attr:`queue_type`.
    :raises ValueError: an unknown queue type, a delivery limit on a
        classic queue, or priorities on a quorum queue (RabbitMQ 3.10's
        quorum queues have none).
    """

    exchange: str = "twistedq"
    queue: str = "twistedq"
    queue_type: str | None = None
    delivery_limit: int | None = None
    max_priority: int | None = None
    take_existing: bool = False

    def __post_init__(self) -> None:
        if self.queue_type not in (None, *QUEUE_TYPES):
            raise ValueError(
                f"the queue type must be one of {', '.join(QUEUE_TYPES)}, not {self.queue_type!r}"
            )
        if self.delivery_limit is not None and (
            self.queue_type != "quorum" or self.delivery_limit < 1
        ):
            raise ValueError("a delivery limit (at least 1) applies to quorum queues only")
        if self.max_priority is not None:
            if self.queue_type == "quorum":
                raise ValueError(
                    "quorum queues have no priorities on RabbitMQ 3.10 (x-max-priority is "
                    "refused): use classic queues for priorities, or no priorities"
                )
            if not 1 <= self.max_priority <= 255:
                raise ValueError(f"the maximum priority must be 1 to 255, not {self.max_priority}")

    @property
    def routing_key(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dead"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    def _type_arguments(self, dead_lettering: bool) -> dict[str, Any]:
        """
        The arguments of the queue type; a quorum queue that dead-letters
        does it at least once (the broker keeps a message until the
        dead-letter queue confirmed it, instead of at most once).
        """
        if self.queue_type != "quorum":
            return {}
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if dead_lettering:
            arguments["x-dead-letter-strategy"] = "at-least-once"
            # at-least-once needs it; without a length limit it never acts.
            arguments["x-overflow"] = "reject-publish"
        return arguments

    def queue_arguments(self) -> dict[str, Any]:
        """
        The arguments the task queue is declared with.
        """
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.dead_letter_exchange,
            **self._type_arguments(dead_lettering=True),
        }
        if self.delivery_limit is not None:
            arguments["x-delivery-limit"] = self.delivery_limit
        if self.max_priority is not None:
            arguments["x-max-priority"] = self.max_priority
        return arguments

    def delay_queue_arguments(self, seconds: int) -> dict[str, Any]:
        """
        The arguments the delay queue of ``seconds`` is declared with.
        """
        return {
            "x-message-ttl": seconds * 1000,
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": self.routing_key,
            **self._type_arguments(dead_lettering=True),
        }

    async def declare(self, channel: BrokerChannel) -> None:
        """
        Declare the durable exchange and queue, bound by the queue's name,
        and the dead-letter exchange and queue that rejected messages go to.

        With a :py:attr:`queue_type` (and not :py:attr:`take_existing`),
        every queue of the topology that exists (task, dead-letter and
        delay queues) is checked first, once per connection, and nothing
        is declared if one differs.

        :raises QueueMismatch: a queue exists with another type or other
            arguments (only with a :py:attr:`queue_type`);
            :py:class:`QueueMismatches` when several do.
        """
        protocol = getattr(channel, "client", None)
        # (A channel of no real connection, a test's fake, is not checked.)
        if (
            self.queue_type is not None
            and not self.take_existing
            and isinstance(protocol, BrokerProtocol)
        ):
            await self._check_existing(protocol)
        await channel.exchange_declare(
            exchange=self.dead_letter_exchange, type="direct", durable=True
        )
        await self._declare_queue(
            channel, self.dead_letter_queue, self._type_arguments(dead_lettering=False)
        )
        await channel.queue_bind(
            queue=self.dead_letter_queue,
            exchange=self.dead_letter_exchange,
            routing_key=self.routing_key,
        )
        await channel.exchange_declare(exchange=self.exchange, type="direct", durable=True)
        await self._declare_queue(channel, self.queue, self.queue_arguments())
        await channel.queue_bind(
            queue=self.queue, exchange=self.exchange, routing_key=self.routing_key
        )

    def _arguments_of(self, name: str) -> dict[str, Any]:
        """
        The arguments the queue ``name`` of this topology is declared with.
        """
        if name == self.dead_letter_queue:
            return self._type_arguments(dead_lettering=False)
        if name == self.queue:
            return self.queue_arguments()
        return self.delay_queue_arguments(int(name.rsplit(".", 1)[1]))

    def _queue_names(self) -> list[str]:
        """
        Every queue of the topology: dead-letter, task and delay queues.
        """
        delays = [self.delay_queue(1 << e) for e in range(DELAY_EXPONENT_MAX + 1)]
        return [self.dead_letter_queue, self.queue, *delays]

    async def _check_existing(self, protocol: BrokerProtocol) -> None:
        """
        Check every queue of the topology that exists against its
        arguments here, before any is declared.

        :raises QueueMismatch: one differs; :py:class:`QueueMismatches`
            when several do.
        """
        checked = _CHECKED.setdefault(protocol, set())
        if self in checked:
            return
        other = "classic" if self.queue_type == "quorum" else "quorum"
        as_other = replace(self, queue_type=other, delivery_limit=None, max_priority=None)
        mismatches = []
        for name in self._queue_names():
            if not await queue_exists(protocol, name):
                continue
            arguments = self._arguments_of(name)
            text = await _refusal(protocol, name, arguments)
            if text is None:
                continue
            # The broker names one differing argument: learn whether the type differs.
            if (other == "quorum" and _quorum_named(text)) or (
                other == "classic"
                and await _refusal(protocol, name, as_other._arguments_of(name)) is None
            ):
                existing: str | None = other
            else:
                existing = None
            mismatches.append(QueueMismatch(name, arguments, text, existing))
        if len(mismatches) == 1:
            raise mismatches[0]
        if mismatches:
            raise QueueMismatches(mismatches)
        checked.add(self)

    async def _declare_queue(
        self, channel: BrokerChannel, name: str, arguments: dict[str, Any]
    ) -> None:
        """
        Declare one durable queue; without a :py:attr:`queue_type`, or with
        :py:attr:`take_existing`, only when it does not exist yet.

        :raises QueueMismatch: the broker refused the arguments (406).
        """
        # (A channel of no connection, a test's fake, cannot ask.)
        protocol = getattr(channel, "client", None)
        take = self.queue_type is None or self.take_existing
        if take and protocol is not None and await queue_exists(protocol, name):
            return
        try:
            await channel.queue_declare(queue=name, durable=True, arguments=arguments)
        except _CLOSED as e:
            code, text = reply_of(e)
            if code == PRECONDITION_FAILED:
                raise QueueMismatch(name, arguments, text) from None
            raise

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

        :raises QueueMismatch: as :py:meth:`declare`.
        """
        name = self.delay_queue(seconds)
        await self._declare_queue(channel, name, self.delay_queue_arguments(seconds))
        return name


#: The topologies checked on each connection (:py:meth:`Topology.declare`).
_CHECKED: WeakKeyDictionary[BrokerProtocol, set[Topology]] = WeakKeyDictionary()


def _quorum_named(text: str) -> bool:
    """
    Whether the broker's refusal of a classic declaration says the queue
    is a quorum queue: its type, or an argument only quorum queues take
    that the declaration lacks.
    """
    if "current is the value 'quorum'" in text:
        return True
    quorum_only = ("'x-dead-letter-strategy'", "'x-delivery-limit'")
    return "received none" in text and any(name in text for name in quorum_only)


async def _refusal(protocol: BrokerProtocol, name: str, arguments: dict[str, Any]) -> str | None:
    """
    Declare the existing queue ``name`` with ``arguments`` on a channel of
    its own (which changes nothing): the broker's text if it refuses them
    (406), else None.
    """
    channel = await protocol.open_channel()
    try:
        await channel.queue_declare(queue=name, durable=True, arguments=arguments)
    except _CLOSED as e:
        code, text = reply_of(e)
        if code == PRECONDITION_FAILED:
            return text
        raise
    await channel.channel_close()
    return None


async def queue_exists(protocol: BrokerProtocol, name: str) -> bool:
    """
    Whether the queue ``name`` exists, asked on a channel of its own (the
    broker closes the channel of a passive declare of a missing queue).
    """
    probe = await protocol.open_channel()
    probe.expects_not_found = True
    try:
        await probe.queue_declare(queue=name, passive=True)
    except _CLOSED as e:
        if reply_of(e)[0] == NOT_FOUND:
            return False
        raise
    await probe.channel_close()
    return True


class Publisher:
    """
    Publishes task messages as persistent messages on a channel in confirm
    mode: :py:obj:`publish` fires once the broker has taken responsibility.

    :ivar signing: the keys that sign each message, or :py:obj:`None`.
    :ivar max_message_size: the largest body published, in bytes, or
        :py:obj:`None` for no limit.
    :ivar connect_attempts: while the broker cannot be reached, fail a
        publish with :py:class:`BrokerUnavailable` after this many failed
        attempts to connect (the first made at once, the others after
        pauses of :py:data:`QUICK_RETRY` seconds, doubling), instead of
        waiting up to ``confirm_timeout``; :py:obj:`None` waits.  Every
        publish failure is :py:class:`BrokerUnavailable` (nothing sent),
        :py:class:`PublishUncertain` (sent, not confirmed),
        :py:class:`~twistedq.amqp.protocol.Unroutable`,
        :py:class:`PublishRefused` (a
        :py:class:`~twistedq.amqp.protocol.PublishNacked`) or
        :py:class:`~twistedq.message.MessageError`.
    """

    def __init__(
        self,
        connection: BrokerConnection,
        topology: Topology,
        confirm_timeout: float = 30.0,
        signing: SigningKeys | None = None,
        max_message_size: int | None = None,
        connect_attempts: int | None = None,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.confirm_timeout = confirm_timeout
        self.connect_attempts = connect_attempts
        self.signing = signing
        self.max_message_size = max_message_size
        self._channel: BrokerChannel | None = None
        self._reopen_waiters: list[defer.Deferred[BrokerChannel]] = []
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
        connection (queues other than the default one on first use); a
        channel the broker closed is replaced by a new one first.

        :raises ConnectionDone: the connection is closed.
        :raises ChannelRefused: the broker closed the channel when ``queue``
            was declared.
        """
        channel = self._channel
        if channel is None or channel.client.closed:
            raise ConnectionDone("the publishing channel is closed")
        if channel.closed:
            channel = await self._reopen(channel)
        if queue not in self._declared:
            try:
                await replace(self.topology, queue=queue).declare(channel)
            except ChannelClosed as e:
                if channel.client.closed:
                    raise
                raise ChannelRefused(queue, *reply_of(e)) from None
            self._declared.add(queue)
        return channel

    async def _reopen(self, closed: BrokerChannel) -> BrokerChannel:
        """
        A new publishing channel, in confirm mode, in place of ``closed``,
        which the broker closed (a channel error is not a connection
        loss: the queues declared on the connection stay declared).
        Publishes that find it closed at once share one new channel.
        """
        waiter: defer.Deferred[BrokerChannel] = defer.Deferred()
        self._reopen_waiters.append(waiter)
        if len(self._reopen_waiters) == 1:
            log.info("Opening a new publishing channel: the broker closed the last one")

            async def reopen() -> BrokerChannel:
                channel = await closed.client.open_channel()
                await channel.enable_confirms()
                if self._channel is closed:
                    self._channel = channel
                return channel

            defer.ensureDeferred(reopen()).addBoth(self._reopened)
        return await waiter

    def _reopened(self, result: BrokerChannel | Failure) -> None:
        waiters, self._reopen_waiters = self._reopen_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _connected_in_time(self) -> None:
        """
        Wait for the connection, at most ``confirm_timeout`` seconds; with
        ``connect_attempts``, fail as soon as that many attempts failed,
        the first one made at once.

        :raises BrokerUnavailable: not connected; the text says why.
        """
        connection = self.connection
        attempts = self.connect_attempts
        reactor = connection.reactor
        deadline = reactor.seconds() + self.confirm_timeout
        tried = 0
        while True:
            if attempts is not None:
                connection.retry_now()
            connected = connection.when_connected(fail_after=1 if attempts is not None else None)
            connected.addTimeout(max(0.0, deadline - reactor.seconds()), reactor)
            try:
                await connected
                return
            except defer.TimeoutError:
                last = ""
                if connection.last_failure is not None:
                    last = (
                        f" ({connection.failures} attempts failed, the last with "
                        f"{connection.last_failure})"
                    )
                raise BrokerUnavailable(
                    f"could not reach the broker at {connection.where} "
                    f"within {self.confirm_timeout} s{last}"
                ) from None
            except Exception as e:
                tried += 1
                if attempts is None or tried >= attempts:
                    code, text = reply_of(e)
                    if code is not None:  # it answered: say what it said
                        raise BrokerUnavailable(
                            f"the broker answered but refused to set up the queues (at "
                            f"{connection.where}), so nothing was sent: {code} {text}"
                        ) from e
                    raise BrokerUnavailable(
                        f"could not reach the broker at {connection.where}: {describe(e)}"
                    ) from e
            pause = min(QUICK_RETRY * 2 ** (tried - 1), deadline - reactor.seconds())
            if pause > 0:
                await deferLater(reactor, pause, lambda: None)

    def _open_channel(self, queue: str) -> BrokerChannel | None:
        """
        The publishing channel when it is open, on a connection in service,
        with ``queue`` declared: a publish's usual case, with no wait.
        """
        channel = self._channel
        if (
            channel is None
            or channel.closed
            or channel.client.closed
            or not self.connection.running
            or queue not in self._declared
        ):
            return None
        return channel

    async def _ready_channel(self, queue: str) -> BrokerChannel:
        """
        The publishing channel, connected, with ``queue`` declared.

        :raises BrokerUnavailable: no usable connection; nothing was sent.
        """
        channel = self._open_channel(queue)
        if channel is not None:
            return channel
        await self._connected_in_time()
        try:
            channel = await self._channel_for(queue)
        except _CLOSED as e:
            raise BrokerUnavailable(
                f"the connection to the broker at {self.connection.address} closed before "
                f"the message was sent: {describe(e)}"
            ) from e
        return channel

    async def purge(self, queue: str | None = None) -> int:
        """
        Delete every message waiting in ``queue`` (by default the
        topology's); return how many there were.
        """
        channel = await self._ready_channel(queue or self.topology.queue)
        try:
            purged = await channel.queue_purge(queue=queue or self.topology.queue)
        except _CLOSED as e:
            raise BrokerUnavailable(
                f"the connection to the broker at {self.connection.address} closed during "
                f"the purge: {describe(e)}"
            ) from e
        return int(purged.message_count)

    async def publish_later(
        self, message: TaskMessage, delay: float, priority: int | None = None, *, hop: bool = False
    ) -> None:
        """
        Publish a task message for the topology's queue into the longest
        delay queue not longer than ``delay`` seconds (declared on first
        use), and wait for the broker's confirm; under a second, into the
        queue itself.  When the message comes back to the queue it may
        need another hop: the daemon that receives it decides.

        :param hop: the message is one the daemon received before, sent on
            unchanged (an ETA, a rate limit): marked with
            :py:data:`HOP_HEADER`.  A message put in a delay queue carries
            the time it was published (the ``timestamp`` property).
        :raises: as :py:meth:`publish` does.
        """
        step = delay_step(delay)
        body, properties = self._encode(message, priority)
        if hop:
            properties["headers"] = {**properties.get("headers", {}), HOP_HEADER: 1}
        queue = self.topology.queue
        channel = await self._ready_channel(queue)
        if step is None:
            exchange = self.topology.exchange
            await self._confirmed(channel, exchange, queue, message.id, body, properties)
            return
        name = self.topology.delay_queue(step)
        # When it entered the delay queue: twistedq status tells from the
        # head's whether the broker keeps messages past their wait.
        properties["timestamp"] = int(self.connection.reactor.seconds())
        if name not in self._declared:
            try:
                await self.topology.declare_delay_queue(channel, step)
            except _CLOSED as e:
                raise BrokerUnavailable(
                    f"could not declare {name} on the broker at {self.connection.address}: "
                    f"{describe(e)}"
                ) from e
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

    async def publish(
        self,
        message: TaskMessage,
        queue: str | None = None,
        priority: int | None = None,
        body: bytes | None = None,
    ) -> None:
        """
        Publish one task message to ``queue`` (by default the topology's)
        and wait for the broker's confirm.

        :param priority: the message's priority, 0 to :py:data:`MAX_PRIORITY`
            (the AMQP ``priority`` property): a queue declared with a
            maximum priority delivers higher ones first; :py:obj:`None`
            publishes none (0 to the broker).
        :param body: the message as :py:meth:`TaskMessage.encode` encoded
            it, when the caller did already (it is not validated again).

        :raises BrokerUnavailable: no connection within ``confirm_timeout``
            seconds (or, with ``connect_attempts``, after that many failed
            attempts), or it closed before the message was sent; nothing
            was sent.
        :raises PublishUncertain: no confirm within ``confirm_timeout``
            seconds, or the connection closed after the message was sent.
        :raises twistedq.amqp.protocol.Unroutable: no queue takes the message.
        :raises PublishRefused: the broker refused it (``basic.nack``; a
            :py:class:`~twistedq.amqp.protocol.PublishNacked`).
        :raises ChannelRefused: the broker refused to declare ``queue`` (and
            closed the channel, which the next publish replaces); nothing
            was sent, and the same publish would be refused again.
        :raises twistedq.message.MessageError: the message breaks a rule of
            :py:meth:`~twistedq.message.TaskMessage.check`, is over
            ``max_message_size``, or ``queue`` is not a name the broker
            takes (:py:func:`~twistedq.message.queue_name_error`); nothing
            was sent.
        :raises ValueError: ``priority`` is not 0 to :py:data:`MAX_PRIORITY`.
        """
        body, properties = self._encode(message, priority, body)
        if queue is not None:
            check_queue_name(queue, message.id, message.task)
        queue = queue or self.topology.queue
        channel = await self._ready_channel(queue)
        await self._confirmed(channel, self.topology.exchange, queue, message.id, body, properties)

    async def publish_batch(
        self,
        encoded: Sequence[tuple[TaskMessage, bytes]],
        queue: str | None = None,
        priority: int | None = None,
    ) -> list[Exception | None]:
        """
        Publish several task messages to ``queue`` (by default the
        topology's), each with its body as :py:meth:`TaskMessage.encode`
        made it (not validated again), in one write, and wait for the
        broker's confirms, at most ``confirm_timeout`` seconds for all.

        :return: one entry per message, in order: :py:obj:`None` where the
            broker confirmed it, else the exception that failed it, as
            :py:meth:`publish` would raise it (:py:class:`BrokerUnavailable`,
            :py:class:`ChannelRefused`, :py:class:`PublishUncertain`,
            ``Unroutable``, :py:class:`PublishRefused`).
        :raises twistedq.message.MessageError: a message is over
            ``max_message_size``, or ``queue`` is not a name the broker
            takes; nothing was published.
        :raises ValueError: ``priority`` is not 0 to :py:data:`MAX_PRIORITY`.
        """
        contents = [self._encode(message, priority, body) for message, body in encoded]
        if queue is not None and encoded:
            check_queue_name(queue, encoded[0][0].id, encoded[0][0].task)
        queue = queue or self.topology.queue
        try:
            channel = self._open_channel(queue) or await self._ready_channel(queue)
            batch = channel.publish_batch(self.topology.exchange, queue, contents, mandatory=True)
        except (BrokerUnavailable, ChannelRefused) as e:
            return [e] * len(encoded)
        except _CLOSED as e:
            unsent = BrokerUnavailable(
                f"the connection to the broker at {self.connection.address} closed before "
                f"the messages were sent: {describe(e)}"
            )
            return [unsent] * len(encoded)
        if not batch.done.called:
            waited: defer.Deferred[None] = defer.Deferred()

            def wake(_: object = None) -> None:
                if not waited.called:
                    waited.callback(None)

            batch.done.addBoth(wake)
            timer = self.connection.reactor.callLater(self.confirm_timeout, wake)
            await waited
            if timer.active():
                timer.cancel()
        return [
            self._confirm_error(message.id, settled, error)
            for (message, _), settled, error in zip(
                encoded, batch.settled, batch.results, strict=True
            )
        ]

    def _confirm_error(
        self, task_id: str, settled: int, error: Exception | None
    ) -> Exception | None:
        """
        What a publish of a batch failed with, as :py:meth:`publish` would
        raise it, or :py:obj:`None` where it was confirmed.
        """
        if not settled:
            return PublishUncertain(task_id, self.confirm_timeout)
        if error is None or isinstance(error, Unroutable):
            return error
        if isinstance(error, PublishNacked):
            return PublishRefused(task_id)
        return PublishUncertain(task_id, reason=describe(error))

    def _encode(
        self, message: TaskMessage, priority: int | None = None, body: bytes | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """
        The body (``body`` when given, else encoded) and properties of a
        message, signed with the first key.
        """
        check_priority(priority)
        if body is None:
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
        if priority:
            properties["priority"] = priority
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
        if confirmed.called and isinstance(confirmed.result, Failure):
            # Refused before anything was written: the channel is closed.
            refused = confirmed.result
            confirmed.addErrback(lambda failure: None)
            raise BrokerUnavailable(
                f"the connection to the broker at {self.connection.address} closed before "
                f"task {task_id} was sent: {describe(refused)}"
            ) from refused.value
        timeout = self.connection.reactor.callLater(self.confirm_timeout, confirmed.cancel)
        try:
            await confirmed
        except defer.CancelledError:
            raise PublishUncertain(task_id, self.confirm_timeout) from None
        except PublishNacked as e:
            raise PublishRefused(task_id) from e
        except Unroutable:
            raise
        except Exception as e:
            raise PublishUncertain(task_id, reason=describe(e)) from e
        finally:
            if timeout.active():
                timeout.cancel()
