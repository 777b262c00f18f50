"""
Remote control over AMQP: a client broadcasts a request on the control
exchange (``<exchange>.control``, fanout), every daemon that the request
names (or every daemon) answers on the client's reply queue, and the client
gathers the answers for a timeout.

The daemon's side is :py:class:`ControlService` (the AMQP part) around
:py:class:`DaemonControl` (the answers); the client's side is
:py:class:`ControlClient`, usable on the reactor or, through
:py:obj:`twistedq.reactor_thread.reactor_thread`, from a blocking program.

A request is a JSON document::

    {"command": "inspect.active", "arguments": {}, "destination": null,
     "id": "5f0c...", "sent": 1764900000.0, "expires": 1764900001.0}

published with ``reply_to`` (the client's server-named, exclusive,
auto-delete queue), ``correlation_id`` and ``expiration`` (the client's
timeout in milliseconds), signed (:py:mod:`twistedq.signing`) when the
cluster has keys.  The body, which is what is signed, carries its own
unique ``id`` and its ``expires`` (unix time): a daemon ignores a request
past its ``expires``, sent more than :py:data:`MAX_CLOCK_AHEAD` seconds
ahead of its clock, expiring more than :py:data:`MAX_REQUEST_LIFETIME`
seconds after it was sent, or whose id it has already seen
(:py:class:`RequestGuard`), so that a signed request cannot be replayed.
An answer, on the default exchange to ``reply_to``::

    {"daemon": "host:1234", "host": "host", "pid": 1234, "ok": true,
     "reply": [...]}

or ``"ok": false`` with an ``"error"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.message import Message

from twistedq.amqp.broker import BrokerConnection
from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol
from twistedq.daemon.identity import DaemonIdentity
from twistedq.signing import SignatureError, SigningKeys

if TYPE_CHECKING:
    from twistedq.client import AsyncClient
    from twistedq.daemon.dispatcher import Dispatcher
    from twistedq.worker.pool import ProcessPool

__all__ = [
    "COMMANDS",
    "ControlClient",
    "ControlError",
    "ControlService",
    "DaemonControl",
    "RateLimitedLog",
    "Request",
    "RequestGuard",
    "control_exchange",
    "revoke_tasks",
]

log = Logger()

CONTENT_TYPE = "application/json"

#: Every command a daemon answers.
COMMANDS = (
    "ping",
    "inspect.active",
    "inspect.reserved",
    "inspect.scheduled",
    "inspect.registered",
    "inspect.stats",
    "revoke",
    "pool.grow",
    "pool.shrink",
    "shutdown",
)

#: How far ahead of a daemon's clock a request's ``sent`` may be, in seconds.
MAX_CLOCK_AHEAD = 30.0

#: How long after its ``sent`` a request may expire, in seconds.
MAX_REQUEST_LIFETIME = 300.0

#: How many request ids a daemon remembers (each until its request expires).
MAX_SEEN_REQUESTS = 10_000

#: The largest request body a daemon reads, in bytes: larger ones are
#: ignored before they are parsed.
MAX_REQUEST_SIZE = 64 * 1024

#: What answers a command: its arguments in, a JSON value (or a Deferred
#: of one) out; it raises :py:class:`ControlError` for bad arguments.
Handler = Callable[[Mapping[str, Any]], Any]


def control_exchange(exchange: str) -> str:
    """
    The name of the control exchange of the cluster whose tasks go through
    ``exchange``.
    """
    return f"{exchange}.control"


async def declare_control_exchange(channel: BrokerChannel, exchange: str) -> str:
    """
    Declare the control exchange (fanout, durable, never auto-deleted:
    every declarer uses these arguments); return its name.
    """
    name = control_exchange(exchange)
    await channel.exchange_declare(exchange=name, type="fanout", durable=True, auto_delete=False)
    return name


#: The names RabbitMQ gives queues declared without one: a request's reply
#: queue must be such a queue (the client declares its own so).
REPLY_QUEUE_PREFIX = "amq.gen-"


def _finite(number: float) -> float:
    """
    ``number``, or :py:exc:`ValueError` if it is infinite or not a number.
    """
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    return number


def _cancel_consumer(channel: BrokerChannel | None, tag: str | None) -> defer.Deferred[None]:
    """
    Stop consuming with ``tag`` on ``channel`` (nothing if either is gone);
    fires once the broker answered, or at once if it cannot.
    """
    if channel is None or tag is None or channel.closed:
        return defer.succeed(None)
    channel.client.consumers.pop(tag, None)
    d = channel.basic_cancel(consumer_tag=tag)
    return d.addErrback(lambda _: None).addCallback(lambda _: None)


class ControlError(Exception):
    """
    A request that cannot be answered: its reason goes back as the
    answer's ``error``.
    """


@dataclass(frozen=True)
class Request:
    """
    One control request as a daemon received it.

    :ivar timeout: the client's timeout in seconds (its ``expiration``), or
        None when it set none.
    :ivar id: its unique id; for a request from an older client that sent
        none, a digest of its body.
    :ivar expires: when it stops being valid (unix time): its ``expires``;
        for an older client's, ``sent`` plus its timeout (or
        :py:data:`MAX_REQUEST_LIFETIME`); None when it has no ``sent``
        either.
    """

    command: str
    arguments: Mapping[str, Any]
    destination: list[str] | None
    sent: float
    reply_to: str | None
    correlation_id: str | None
    timeout: float | None
    id: str = ""
    expires: float | None = None

    @classmethod
    def decode(cls, body: bytes, properties: Mapping[str, Any]) -> Request:
        """
        :raises ValueError: the body is not a control request.
        """
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("command"), str):
            raise ValueError("no command")
        arguments = document.get("arguments") or {}
        destination = document.get("destination")
        if not isinstance(arguments, dict):
            raise ValueError("its arguments are not an object")
        if destination is not None and not (
            isinstance(destination, list) and all(isinstance(d, str) for d in destination)
        ):
            raise ValueError("its destination is not a list of names")
        expiration = properties.get("expiration")
        timeout = _finite(float(expiration) / 1000) if expiration else None
        sent = _finite(float(document.get("sent") or 0.0))
        expires = document.get("expires")
        if expires is not None:
            expires = _finite(float(expires))
        elif sent:
            expires = sent + (timeout if timeout is not None else MAX_REQUEST_LIFETIME)
        request_id = document.get("id")
        if not isinstance(request_id, str) or not request_id:
            request_id = "sha256:" + hashlib.sha256(body).hexdigest()
        reply_to = _text(properties.get("reply-to"))
        if reply_to is not None and not reply_to.startswith(REPLY_QUEUE_PREFIX):
            # Answers go to a client's server-named queue, never into a
            # queue of tasks or of anything else named by the request.
            raise ValueError(f"its reply queue {reply_to[:60]!r} is not a server-named queue")
        return cls(
            command=document["command"],
            arguments=arguments,
            destination=destination,
            sent=sent,
            reply_to=reply_to,
            correlation_id=_text(properties.get("correlation-id")),
            timeout=timeout,
            id=request_id,
            expires=expires,
        )

    def stale(self, now: float) -> bool:
        """
        Whether it expired by ``now`` (by this host's clock: keep the clocks
        of the cluster in step).
        """
        return self.expires is not None and now > self.expires

    def names(self, daemon: str) -> bool:
        return self.destination is None or daemon in self.destination


class RequestGuard:
    """
    Refuses control requests that could be replays: one past its
    ``expires``, one sent more than :py:data:`MAX_CLOCK_AHEAD` seconds
    ahead of this clock, one expiring more than
    :py:data:`MAX_REQUEST_LIFETIME` seconds after it was sent, one with no
    ``sent`` time, and one whose id it has already seen.  Ids are kept
    until their request expires, at most ``max_seen`` of them: when that
    many unexpired requests were accepted, further ones are refused until
    some expire.
    """

    def __init__(self, max_seen: int = MAX_SEEN_REQUESTS) -> None:
        self.max_seen = max_seen
        self._seen: dict[str, float] = {}

    def refuse(self, request: Request, now: float) -> str | None:
        """
        Why ``request`` must be ignored at ``now``, or None (then its id is
        remembered: the same request is refused from now on).
        """
        if not request.sent or request.expires is None:
            return "it has no sent time"
        if now > request.expires:
            return "it expired"
        if request.sent > now + MAX_CLOCK_AHEAD:
            return "it was sent ahead of this daemon's clock"
        if request.expires > request.sent + MAX_REQUEST_LIFETIME:
            return "it expires too long after it was sent"
        if request.id in self._seen:
            return "it was already received (a replay)"
        if len(self._seen) >= self.max_seen:
            self._seen = {i: t for i, t in self._seen.items() if t >= now}
            if len(self._seen) >= self.max_seen:
                return "too many requests are still valid"
        self._seen[request.id] = request.expires
        return None


class RateLimitedLog:
    """
    Warns at most once every ``interval`` seconds per reason, saying how
    many were left out since.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self.clock = clock
        self.interval = interval
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warn(self, reason: str, text: str, **fields: Any) -> None:
        """
        Log ``text`` (a :py:class:`Logger` format) with ``fields``, unless
        ``reason`` was logged less than ``interval`` seconds ago.
        """
        now = self.clock.seconds()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._left_out[reason] = self._left_out.get(reason, 0) + 1
            return
        self._last[reason] = now
        left_out = self._left_out.pop(reason, 0)
        suffix = " ({left_out} more like it left out of the log)" if left_out else ""
        log.warn(text + suffix, left_out=left_out, **fields)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


#: The most children one ``pool.grow`` or ``pool.shrink`` may ask for.
MAX_POOL_STEP = 1000


def _count(arguments: Mapping[str, Any]) -> int:
    n = arguments.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_POOL_STEP:
        raise ControlError(f"n must be a whole number from 1 to {MAX_POOL_STEP}, not {n!r}")
    return n


class DaemonControl:
    """
    One daemon's answers to the control commands (:py:data:`COMMANDS`).

    :param stats: builds the daemon's ``/stats`` document.
    :param shutdown: stops the daemon warmly, as SIGTERM does (twistd's
        ``reactor.stop``); called just after the answer went out.
    """

    def __init__(
        self,
        identity: DaemonIdentity,
        dispatcher: Dispatcher,
        pool: ProcessPool,
        stats: Callable[[], Any],
        shutdown: Callable[[], None],
        clock: IReactorTime,
    ) -> None:
        self.identity = identity
        self.dispatcher = dispatcher
        self.pool = pool
        self.stats = stats
        self.shutdown_daemon = shutdown
        self.clock = clock

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self.ping,
            "inspect.active": lambda _: self.dispatcher.active(),
            "inspect.reserved": lambda _: self.dispatcher.reserved(),
            "inspect.scheduled": lambda _: self.dispatcher.scheduled(),
            "inspect.registered": lambda _: self.dispatcher.feeder.registered(),
            "inspect.stats": lambda _: self.stats(),
            "revoke": self.revoke,
            "pool.grow": self.grow,
            "pool.shrink": lambda arguments: {"concurrency": self.pool.shrink(_count(arguments))},
            "shutdown": self.shutdown,
        }

    def ping(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return {"pong": True, "uptime": round(time.time() - self.identity.started, 3)}

    def grow(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        """
        Grow the pool by ``n``; past its maximum, to it, the answer saying
        so in ``limited_to``.
        """
        n = _count(arguments)
        wanted = self.pool.size + n
        size = self.pool.grow(n)
        if size < wanted:
            return {"concurrency": size, "limited_to": self.pool.max_size}
        return {"concurrency": size}

    def revoke(self, arguments: Mapping[str, Any]) -> dict[str, list[str]]:
        ids = arguments.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ControlError("ids must be a list of task ids")
        return self.dispatcher.revoke(ids, terminate=bool(arguments.get("terminate")))

    def shutdown(self, arguments: Mapping[str, Any]) -> dict[str, bool]:
        log.warn("Shutting down: asked by remote control")
        self.clock.callLater(0, self.shutdown_daemon)
        return {"shutting_down": True}


class ControlService(Service):
    """
    The daemon's side: on every connection of ``connection`` (until
    :py:meth:`stopService`), its own queue (server-named, exclusive,
    auto-delete) bound to the control exchange, consumed without acks;
    each request that names this daemon and is still awaited is answered
    by its handler.  A body over :py:data:`MAX_REQUEST_SIZE` bytes is
    ignored unread.  With ``signing``, an unsigned or badly signed request
    is logged and ignored.  It binds again on every new connection, and
    :py:data:`RELISTEN_PAUSE` seconds after the broker closed its channel
    alone.  Its set-up never holds the connection up: a failure is logged
    and tried again on the next connection.
    """

    #: The pause before listening again on a channel of its own after the
    #: broker closed the one it had, the connection staying up.
    RELISTEN_PAUSE = 1.0

    def __init__(
        self,
        connection: BrokerConnection,
        exchange: str,
        identity: DaemonIdentity,
        handlers: Mapping[str, Handler],
        clock: IReactorTime,
        signing: SigningKeys | None = None,
    ) -> None:
        self.connection = connection
        self.exchange = exchange
        self.identity = identity
        self.handlers = dict(handlers)
        self.clock = clock
        self.signing = signing
        self.queue: str | None = None
        self.guard = RequestGuard()
        self.ignored = RateLimitedLog(clock)
        self._channel: BrokerChannel | None = None
        self._tag: str | None = None
        self._stopped = False
        connection.add_connect_hook(self._connected)

    async def _connected(self, protocol: BrokerProtocol) -> None:
        if self._stopped:
            return
        d = defer.Deferred.fromCoroutine(self._listen(protocol))
        d.addErrback(self._listen_failed)

    def _listen_failed(self, failure: Failure) -> None:
        log.failure("The remote control could not listen; it tries again on reconnecting", failure)

    async def _listen(self, protocol: BrokerProtocol) -> None:
        channel = await protocol.open_channel()
        name = await declare_control_exchange(channel, self.exchange)
        declared = await channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        queue = declared.queue
        await channel.queue_bind(queue=queue, exchange=name, routing_key="")
        tag = f"twistedq-control-{uuid.uuid4().hex}"
        protocol.consumers[tag] = self
        await channel.basic_consume(queue=queue, consumer_tag=tag, no_ack=True)
        self._channel, self._tag, self.queue = channel, tag, queue
        channel.on_close(lambda reason: self._channel_closed(channel, reason))
        log.info("Listening for remote control on {exchange}", exchange=name)

    def _channel_closed(self, channel: BrokerChannel, reason: Any) -> None:
        if channel is not self._channel:
            return
        protocol = channel.client
        if self._tag is not None:
            protocol.consumers.pop(self._tag, None)
        self._channel = self._tag = None
        if self._stopped or protocol.closed:
            return  # with the connection: the next one listens again
        log.warn(
            "The broker closed the remote control's channel ({why}); listening again",
            why=getattr(reason, "reply_text", reason),
        )

        def again() -> None:
            if not self._stopped and not protocol.closed and self._channel is None:
                d = defer.Deferred.fromCoroutine(self._listen(protocol))
                d.addErrback(self._listen_failed)

        self.clock.callLater(self.RELISTEN_PAUSE, again)

    def startService(self) -> None:
        Service.startService(self)
        self._stopped = False

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop answering (the queue goes when its connection closes).
        """
        Service.stopService(self)
        self._stopped = True
        channel, tag = self._channel, self._tag
        self._channel = self._tag = None
        return _cancel_consumer(channel, tag)

    # called by the broker's delegate

    def deliver(self, channel: BrokerChannel, message: Message) -> None:
        request = self._accept(message)
        if request is None:
            return
        log.info("Remote control: {command}", command=request.command)
        d = defer.maybeDeferred(self._answer, request)
        d.addCallbacks(
            lambda reply: {"ok": True, "reply": reply}, self._error, errbackArgs=(request,)
        )
        d.addCallback(lambda answer: self.reply(channel, request, answer))
        d.addErrback(
            lambda f: log.failure("Could not answer {command}", f, command=request.command)
        )

    def _accept(self, message: Message) -> Request | None:
        """
        The request in ``message`` if this daemon must answer it; None (the
        reason logged, rate-limited) if not.
        """
        content = message.content
        properties = content.properties or {}
        if len(content.body) > MAX_REQUEST_SIZE:
            self.ignored.warn(
                "too large",
                "Ignored a remote control request of {size} bytes: over {most}",
                size=len(content.body),
                most=MAX_REQUEST_SIZE,
            )
            return None
        if self.signing is not None:
            try:
                self.signing.verify(content.body, properties.get("headers"))
            except SignatureError as e:
                self.ignored.warn(
                    f"signature: {e.reason}", "Ignored a remote control request: {why}", why=str(e)
                )
                return None
        try:
            request = Request.decode(content.body, properties)
        except (ValueError, TypeError) as e:
            self.ignored.warn(
                "undecodable",
                "Ignored a message that is no remote control request: {why}",
                why=str(e),
            )
            return None
        if not request.names(self.identity.name):
            return None
        why = self.guard.refuse(request, self.clock.seconds())
        if why is not None:
            self.ignored.warn(
                why, "Ignored remote control {command}: {why}", command=request.command, why=why
            )
            return None
        return request

    def _answer(self, request: Request) -> Any:
        handler = self.handlers.get(request.command)
        if handler is None:
            raise ControlError(f"unknown command {request.command!r}")
        return handler(request.arguments)

    def _error(self, failure: Failure, request: Request) -> dict[str, Any]:
        if failure.check(ControlError):
            text = str(failure.value)
        else:
            log.failure("Remote control {command} failed", failure, command=request.command)
            text = f"{type(failure.value).__name__}: {failure.value}"
        return {"ok": False, "error": text}

    def reply(self, channel: BrokerChannel, request: Request, answer: dict[str, Any]) -> None:
        """
        Send ``answer``, with this daemon's name, to the request's reply
        queue (nothing when it named none, or the channel closed).
        """
        if request.reply_to is None or channel.closed:
            return
        document = {**self.identity.fields(), **answer}
        properties: dict[str, Any] = {"content-type": CONTENT_TYPE}
        if request.correlation_id is not None:
            properties["correlation-id"] = request.correlation_id
        body = json.dumps(document, default=str).encode()
        channel.publish("", request.reply_to, body, properties).addErrback(lambda _: None)

    def cancelled(self, channel: BrokerChannel, message: Message) -> None:
        """
        The broker cancelled the consumer (the queue was deleted): listen
        again on a new queue.
        """
        if not self._stopped and not channel.client.closed:
            d = defer.Deferred.fromCoroutine(self._listen(channel.client))
            d.addErrback(self._listen_failed)

    def connection_lost(self, reason: Any) -> None:
        self._channel = self._tag = None


class ControlClient:
    """
    The client's side: broadcasts requests on the control exchange and
    gathers the answers that reach its reply queue (server-named,
    exclusive, auto-delete; made on first use on each connection).

    ``connection`` must be started (``startService``); the client waits
    for it.  On a blocking program, call :py:meth:`broadcast` through
    :py:obj:`twistedq.reactor_thread.reactor_thread`'s ``call``.

    :param signing: signs every request (the daemons with keys ignore
        requests not signed by one of theirs).
    """

    def __init__(
        self,
        connection: BrokerConnection,
        exchange: str,
        clock: IReactorTime,
        signing: SigningKeys | None = None,
    ) -> None:
        self.connection = connection
        self.exchange = exchange
        self.clock = clock
        self.signing = signing
        self._channel: BrokerChannel | None = None
        self._queue: str | None = None
        self._tag: str | None = None
        self._lock = defer.DeferredLock()
        self._gathering: dict[str, _Gathering] = {}

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> defer.Deferred[list[dict[str, Any]]]:
        """
        Send ``command`` to the daemons named in ``destination`` (all of
        them if None) and fire, after ``timeout`` seconds or once ``limit``
        answers came, with the answers in their order of arrival: each
        ``{"daemon", "host", "pid", "ok", "reply"}`` (or ``"error"``).

        The broker is waited for within ``timeout`` too: fails with
        :py:class:`twisted.internet.defer.TimeoutError` when it cannot be
        reached in time.
        """
        deadline = self.clock.seconds() + timeout
        ready = defer.Deferred.fromCoroutine(self._ready())
        ready.addTimeout(timeout, self.clock)
        return ready.addCallback(
            lambda channel: self._send(
                channel, command, arguments, destination, deadline - self.clock.seconds(), limit
            )
        )

    def _send(
        self,
        channel: BrokerChannel,
        command: str,
        arguments: Mapping[str, Any] | None,
        destination: Sequence[str] | None,
        timeout: float,
        limit: int | None,
    ) -> defer.Deferred[list[dict[str, Any]]]:
        timeout = max(timeout, 0.001)
        correlation_id = uuid.uuid4().hex
        sent = time.time()
        document = {
            "command": command,
            "arguments": dict(arguments or {}),
            "destination": list(destination) if destination is not None else None,
            "id": uuid.uuid4().hex,
            "sent": sent,
            "expires": sent + min(timeout, MAX_REQUEST_LIFETIME),
        }
        body = json.dumps(document).encode()
        assert self._queue is not None
        properties: dict[str, Any] = {
            "content-type": CONTENT_TYPE,
            "reply-to": self._queue,
            "correlation-id": correlation_id,
            "expiration": str(max(1, int(timeout * 1000))),
        }
        if self.signing is not None:
            properties["headers"] = self.signing.sign(body)
        gathering = _Gathering(limit)
        self._gathering[correlation_id] = gathering
        timer = self.clock.callLater(timeout, gathering.finish)

        def done(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self._gathering.pop(correlation_id, None)
            if timer.active():
                timer.cancel()
            return replies

        result = gathering.done.addCallback(done)
        channel.publish(control_exchange(self.exchange), "", body, properties).addErrback(
            lambda failure: gathering.finish()
        )
        return result

    async def _ready(self) -> BrokerChannel:
        """
        The channel whose reply queue is consumed, on the current
        connection (set up on first use there).
        """
        protocol = await self.connection.when_connected()
        await self._lock.acquire()
        try:
            channel = self._channel
            if channel is not None and not channel.closed and channel.client is protocol:
                return channel
            channel = await protocol.open_channel()
            await declare_control_exchange(channel, self.exchange)
            declared = await channel.queue_declare(queue="", exclusive=True, auto_delete=True)
            tag = f"twistedq-control-client-{uuid.uuid4().hex}"
            protocol.consumers[tag] = self
            await channel.basic_consume(queue=declared.queue, consumer_tag=tag, no_ack=True)
            self._channel, self._queue, self._tag = channel, declared.queue, tag
            return channel
        finally:
            self._lock.release()

    def close(self) -> defer.Deferred[None]:
        """
        Stop consuming the reply queue (the broker deletes it).
        """
        channel, tag = self._channel, self._tag
        self._channel = self._tag = None
        for gathering in list(self._gathering.values()):
            gathering.finish()
        return _cancel_consumer(channel, tag)

    # called by the broker's delegate

    def deliver(self, channel: BrokerChannel, message: Message) -> None:
        content = message.content
        correlation_id = _text((content.properties or {}).get("correlation-id"))
        gathering = self._gathering.get(correlation_id or "")
        if gathering is None:
            return  # an answer that came too late
        try:
            answer = json.loads(content.body)
        except ValueError:
            log.warn("A remote control answer that is not JSON was ignored")
            return
        if isinstance(answer, dict):
            gathering.add(answer)

    def cancelled(self, channel: BrokerChannel, message: Message) -> None:
        self._channel = None

    def connection_lost(self, reason: Any) -> None:
        self._channel = None


class _Gathering:
    """
    The answers to one request, until its timeout or its ``limit``.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.replies: list[dict[str, Any]] = []
        self.done: defer.Deferred[list[dict[str, Any]]] = defer.Deferred()

    def add(self, answer: dict[str, Any]) -> None:
        if self.done.called:
            return
        self.replies.append(answer)
        if self.limit is not None and len(self.replies) >= self.limit:
            self.finish()

    def finish(self) -> None:
        if not self.done.called:
            self.done.callback(self.replies)


async def revoke_tasks(
    client: AsyncClient,
    control: ControlClient,
    task_ids: Sequence[str],
    terminate: bool = False,
    timeout: float = 1.0,
    destination: Sequence[str] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """
    Revoke tasks everywhere: first durably in the result store
    (:py:meth:`twistedq.client.AsyncClient.revoke`: a task not yet taken by
    a daemon never runs), then by a ``revoke`` broadcast, so that the
    daemons drop the copies they hold and, with ``terminate``, kill the
    children running them (those end REVOKED, their claims committed).
    The answers are gathered as :py:meth:`ControlClient.broadcast` does.

    :return: ``stored``: the ids revoked in the store; ``replies``: the
        daemons' answers (each ``reply`` with ``revoked``, ``terminated``
        and ``running`` ids).
    """
    ids = list(task_ids)
    stored = await client.revoke(ids)
    replies = await control.broadcast(
        "revoke", {"ids": ids, "terminate": terminate}, destination, timeout, limit
    )
    return {"stored": stored, "replies": replies}
