"""
Events on the broker: what happens to each task and to each daemon,
published as small JSON documents on the topic exchange
``<exchange>.events`` (:py:func:`events_exchange`), and the receiving
side (:py:class:`EventReceiver`).

One AMQP message is a JSON list of documents that share one routing key:
``task.<kind>`` (the values of :py:class:`~twistedq.daemon.events.EventKind`),
``daemon.online``, ``daemon.heartbeat`` or ``daemon.offline``.  Messages
are non-persistent and go only to the queues bound at that moment.

Nothing is built or sent when nobody listens.  Each receiver announces
itself on the same exchange (``listener.hello``, with its binding
patterns, every :py:data:`HELLO_EVERY` seconds, and ``listener.bye`` when
it stops); each daemon's :py:class:`EventPublisher` reads those on a tiny
queue of its own bound to ``listener.#`` and publishes only the routing
keys some live listener's patterns match.  A daemon that connects asks
(``listener.query``) and the receivers answer at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.message import Message

from twistedq import __version__
from twistedq.amqp.broker import BrokerConnection
from twistedq.amqp.protocol import BrokerChannel, BrokerProtocol
from twistedq.daemon.events import Event, EventKind, Events
from twistedq.daemon.identity import DaemonIdentity
from twistedq.daemon.job import arguments_preview

__all__ = [
    "CONTENT_TYPE",
    "HELLO_EVERY",
    "LISTENER_BYE",
    "LISTENER_HELLO",
    "LISTENER_QUERY",
    "LISTENER_TTL",
    "MAX_LISTENED_PATTERNS",
    "MAX_LISTENERS",
    "MAX_QUEUED_EVENTS",
    "EventPublisher",
    "EventReceiver",
    "daemon_document",
    "declare_events_exchange",
    "events_exchange",
    "task_document",
    "task_key",
    "topic_matches",
    "valid_pattern",
]

log = Logger()

#: The content type of every event message.
CONTENT_TYPE = "application/json"
#: Non-persistent: nothing of an event is written to the broker's disk.
TRANSIENT = 1
#: What a receiver publishes when it starts listening, and every
#: :py:data:`HELLO_EVERY` seconds: ``{"type", "listener", "patterns", "ttl"}``.
LISTENER_HELLO = "listener.hello"
#: What a receiver publishes when it stops: ``{"type", "listener"}``.
LISTENER_BYE = "listener.bye"
#: What a daemon publishes when it connects: every receiver answers with
#: a hello.
LISTENER_QUERY = "listener.query"
#: Seconds between two hellos of a receiver.
HELLO_EVERY = 5.0
#: Seconds after its last hello that a listener is forgotten.
LISTENER_TTL = 15.0
#: The most event messages a receiver's queue holds (the oldest are dropped).
MAX_QUEUED_EVENTS = 10_000
#: Seconds before a channel the broker closed alone (its connection
#: staying up) is opened again.
REOPEN_PAUSE = 5.0
#: The longest ttl a listener's hello may ask for, in seconds.
LONGEST_TTL = 300.0
#: The largest listener message (hello or goodbye) read, in bytes; a
#: larger one is ignored unread.
LARGEST_HELLO = 4096
#: The largest event message a receiver reads, in bytes (a daemon's
#: batches of 500 documents stay far below); larger ones, and bodies that
#: are not JSON documents or lists of them, are ignored and counted in
#: :py:attr:`EventReceiver.ignored`.
LARGEST_EVENT_MESSAGE = 1024 * 1024
#: The most patterns one hello may announce.
MAX_HELLO_PATTERNS = 16
#: The longest pattern (and listener name) a hello may announce.
LONGEST_PATTERN = 255
#: The most listeners a daemon publishes for (newer ones are ignored).
MAX_LISTENERS = 256
#: The most distinct patterns across all the listeners (a hello that
#: would bring more is ignored).
MAX_LISTENED_PATTERNS = 512
#: The shortest time between two computations of the keys listened to,
#: in seconds: changes in between are computed together after it.
RECOMPUTE_EVERY = 0.5
#: The shortest time between two warnings about listener messages ignored.
WARN_EVERY = 10.0
#: Seconds after a daemon is first online during which its task events are
#: kept, whoever listens, for the listeners that answer its query.
EARLY_WINDOW = 2.0
#: The most task events kept in that window (the later ones are not).
EARLY_KEPT = 1000

_DUMPS = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
_RUNTIME_KINDS = (EventKind.SUCCEEDED, EventKind.FAILED)
_EXCEPTION_KINDS = (EventKind.FAILED, EventKind.RETRIED, EventKind.DEAD_LETTERED)
_ARGS_KINDS = (EventKind.RECEIVED, EventKind.STARTED)
_CHILD_KINDS = (EventKind.STARTED, EventKind.SUCCEEDED, EventKind.FAILED)
_TASK_KEYS = {id(kind): f"task.{kind.value}" for kind in EventKind}


def events_exchange(exchange: str) -> str:
    """
    The name of the events exchange of the task exchange ``exchange``
    (``Settings.exchange``): ``twistedq`` gives ``twistedq.events``.
    """
    return f"{exchange}.events"


def _events_exchange_of(exchange: str) -> str:
    """
    ``exchange`` if it already names an events exchange, else the events
    exchange of that task exchange.
    """
    return exchange if exchange.endswith(".events") else events_exchange(exchange)


def declare_events_exchange(channel: BrokerChannel, name: str) -> defer.Deferred[Any]:
    """
    Declare the events exchange ``name``, with the arguments every
    declarer uses: topic, durable, not auto-deleted.
    """
    return channel.exchange_declare(exchange=name, type="topic", durable=True, auto_delete=False)


def task_key(kind: EventKind) -> str:
    """
    The routing key of a task event: ``task.<kind>``.
    """
    return f"task.{kind.value}"


def topic_matches(pattern: str, key: str) -> bool:
    """
    Whether the binding ``pattern`` of a topic exchange matches the
    routing ``key`` (``*`` one word, ``#`` zero or more); in time
    proportional to the product of their numbers of words, whatever the
    pattern.
    """
    words = key.split(".")
    count = len(words)
    reached = {0}  # how many words of the key the pattern read so far can match
    for head in pattern.split("."):
        if head == "#":
            reached = set(range(min(reached), count + 1)) if reached else reached
        else:
            reached = {i + 1 for i in reached if i < count and (head == "*" or head == words[i])}
        if not reached:
            return False
    return count in reached


def valid_pattern(pattern: object) -> bool:
    """
    Whether ``pattern`` is a topic pattern a listener may announce: a
    string of at most :py:data:`LONGEST_PATTERN` characters, of non-empty
    dot-separated words, each ``*``, ``#`` or a word without either.
    """
    if not isinstance(pattern, str) or not 0 < len(pattern) <= LONGEST_PATTERN:
        return False
    return all(
        word in ("*", "#") or (word and "*" not in word and "#" not in word)
        for word in pattern.split(".")
    )


def _exception_name(fields: Mapping[str, Any]) -> str | None:
    """
    The exception type name of a task event: given as ``exception``, or
    that of ``error`` (an exception), or read from ``outcome`` (a stored
    document).
    """
    name = fields.get("exception")
    if name is not None:
        return str(name)
    error = fields.get("error")
    if isinstance(error, BaseException):
        return type(error).__name__
    outcome = fields.get("outcome")
    if isinstance(outcome, bytes) and b'"exc"' in outcome:
        try:
            exc = json.loads(outcome).get("exc")
        except ValueError:
            return None
        if isinstance(exc, dict) and exc.get("type") is not None:
            return str(exc["type"])
    return None


def task_document(
    key: str,
    when: float,
    event: Event,
    base: Mapping[str, Any],
    runtime: float | None = None,
    child: str | None = None,
) -> dict[str, Any]:
    """
    The document of one task event: ``base`` (daemon, host, pid, queue),
    its type, time, task id and name, and the fields known for its kind.

    :param key: its routing key, ``task.<kind>``.
    :param when: when it was reported (Unix seconds).
    :param event: the report; its fields may hold ``job`` or ``message``
        (whose arguments are previewed), ``reason``, ``child``, and
        ``exception``, ``error`` or ``outcome`` (for the exception type).
    :param runtime: seconds since the task started, on succeeded/failed.
    :param child: the child that ran it, if not in the event's fields.
    """
    document = dict(base)
    document["type"] = key
    document["time"] = when
    document["id"] = event.task_id
    document["name"] = event.task_name
    fields = event.fields
    kind = event.kind
    if runtime is not None:
        document["runtime"] = runtime
    reason = fields.get("reason")
    if reason is not None:
        document["reason"] = reason
    if kind in _EXCEPTION_KINDS:
        exception = _exception_name(fields)
        if exception is not None:
            document["exception"] = exception
    child = fields.get("child") or child
    if child is not None and kind in _CHILD_KINDS:
        document["child"] = child
    message = fields.get("message")
    if message is None:
        job = fields.get("job")
        message = getattr(job, "message", None)
    if message is not None:
        if event.task_name is None:
            document["name"] = message.task
        if kind in _ARGS_KINDS:
            document["args"] = arguments_preview(message.args, message.kwargs)
        if message.taskset is not None:
            document["taskset"] = message.taskset
        if message.eta is not None and kind in (EventKind.RECEIVED, EventKind.RETRIED):
            document["eta"] = message.eta
    return document


def daemon_document(
    key: str,
    when: float,
    base: Mapping[str, Any],
    load: Mapping[str, Any],
    uptime: float,
    interval: float,
) -> dict[str, Any]:
    """
    The document of a daemon event: ``base`` (daemon, host, pid, queue),
    its type and time, the daemon's ``load`` (concurrency, children, busy,
    held, processed, rss_kib, children_rss_kib), its uptime, heartbeat
    interval and version.
    """
    document = dict(base)
    document["type"] = key
    document["time"] = when
    document.update(load)
    document["uptime"] = uptime
    document["interval"] = interval
    document["version"] = __version__
    return document


def _consumer_tag(kind: str) -> str:
    return f"twistedq-{kind}-{uuid.uuid4().hex}"


def _reopen_when_closed(
    channel: BrokerChannel, clock: IReactorTime, reopen: Callable[[], object]
) -> None:
    """
    When the broker closes ``channel`` alone (the events exchange was
    deleted, say), call ``reopen`` after :py:data:`REOPEN_PAUSE` seconds;
    a channel lost with its connection is opened again by the connect
    hook instead.
    """

    def closed(reason: Any) -> None:
        code = getattr(reason, "reply_code", None)
        if code is None or code == 200:
            return
        log.warn(
            "The broker closed an events channel: {code} {text}; opening it again in {pause} s",
            code=code,
            text=getattr(reason, "reply_text", ""),
            pause=REOPEN_PAUSE,
        )
        clock.callLater(REOPEN_PAUSE, reopen)

    channel.on_close(closed)


class _Consumer:
    """
    What the delegate hands the deliveries of one consumer tag to.
    """

    def __init__(self, deliver: Callable[[str, bytes], None]) -> None:
        self._deliver = deliver

    def deliver(self, channel: BrokerChannel, message: Message) -> None:
        try:
            self._deliver(message.routing_key, message.content.body)
        except Exception:
            log.failure("Could not take an event message")

    def cancelled(self, channel: BrokerChannel, message: Message) -> None:
        pass

    def connection_lost(self, reason: Any) -> None:
        pass


class EventReceiver:
    """
    Receives the events of every daemon of a cluster: binds a queue of its
    own (server-named, exclusive, auto-deleted, at most
    :py:data:`MAX_QUEUED_EVENTS` messages, the oldest dropped) to the
    events exchange with ``patterns``, consumes it without acks, and calls
    ``on_events`` with each message's list of documents.  It binds again
    after the broker connection is made again, and announces itself
    (``listener.hello``) so that the daemons publish what it listens to.

    :param connection: the broker connection (started by the caller).
    :param exchange: the task exchange (``Settings.exchange``), or the
        events exchange's own name (ending in ``.events``).
    :param on_events: called with each list of event documents.
    :param patterns: the topic patterns bound: ``#`` (everything),
        ``task.*``, ``task.failed``, ``daemon.#``...
    :ivar ignored: messages ignored: over
        :py:data:`LARGEST_EVENT_MESSAGE` bytes, or not JSON documents (or
        lists of them): anyone who may publish on the exchange can send
        them.
    """

    def __init__(
        self,
        connection: BrokerConnection,
        exchange: str,
        on_events: Callable[[list[dict[str, Any]]], None],
        patterns: Sequence[str] = ("#",),
    ) -> None:
        self.connection = connection
        self.exchange = _events_exchange_of(exchange)
        self.on_events = on_events
        self.patterns = list(patterns)
        self.clock: IReactorTime = connection.reactor
        self.ignored = 0
        self.queue: str | None = None
        self._channel: BrokerChannel | None = None
        self._protocol: BrokerProtocol | None = None
        self._tag: str | None = None
        self._hooked = False
        self._stopped = False
        self._hello = LoopingCall(self._announce)
        self._hello.clock = self.clock

    def start(self) -> defer.Deferred[None]:
        """
        Bind and consume; fires once the queue is bound and consumed (on
        the connection there is, or the next one made).
        """
        self._stopped = False
        if not self._hooked:
            self._hooked = True
            self.connection.add_connect_hook(self._connected)

        async def started() -> None:
            protocol = await self.connection.when_connected()
            if self._protocol is not protocol:
                await self._bind(protocol)

        return defer.Deferred.fromCoroutine(started())

    async def _connected(self, protocol: BrokerProtocol) -> None:
        if self._stopped:
            return
        try:
            await self._bind(protocol)
        except Exception as e:  # the connection is shared: never fail it
            log.warn("Could not bind the event receiver's queue: {why}", why=repr(e))

    def _reopen(self, protocol: BrokerProtocol) -> None:
        if not self._stopped and protocol is self._protocol and not protocol.closed:
            defer.Deferred.fromCoroutine(self._connected(protocol))

    async def _bind(self, protocol: BrokerProtocol) -> None:
        self._protocol = protocol
        channel = await protocol.open_channel()
        await declare_events_exchange(channel, self.exchange)
        declared = await channel.queue_declare(
            queue="",
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": MAX_QUEUED_EVENTS, "x-overflow": "drop-head"},
        )
        queue = declared.queue
        for pattern in [*self.patterns, LISTENER_QUERY]:
            await channel.queue_bind(queue=queue, exchange=self.exchange, routing_key=pattern)
        tag = _consumer_tag("events")
        protocol.consumers[tag] = _Consumer(self._received)
        await channel.basic_consume(queue=queue, consumer_tag=tag, no_ack=True)
        self._channel, self.queue, self._tag = channel, queue, tag
        _reopen_when_closed(channel, self.clock, lambda: self._reopen(protocol))
        self._announce()
        if not self._hello.running:
            self._hello.start(HELLO_EVERY, now=False)

    def _received(self, key: str, body: bytes) -> None:
        if key.startswith("listener."):
            if key == LISTENER_QUERY:
                self._announce()
            return
        if len(body) > LARGEST_EVENT_MESSAGE:
            self.ignored += 1
            return
        try:
            documents = json.loads(body)
        except (ValueError, RecursionError):
            self.ignored += 1
            return
        if isinstance(documents, dict):
            documents = [documents]
        if not isinstance(documents, list):
            self.ignored += 1
            return
        documents = [document for document in documents if isinstance(document, dict)]
        try:
            self.on_events(documents)
        except Exception:
            log.failure("An events callback failed")

    def _send(self, key: str, document: dict[str, Any]) -> None:
        channel = self._channel
        if channel is None or channel.closed or channel.client.closed:
            return
        sent = channel.publish(
            self.exchange,
            key,
            _DUMPS(document).encode(),
            {"content-type": CONTENT_TYPE, "delivery-mode": TRANSIENT},
        )
        sent.addErrback(lambda _: None)

    def _announce(self) -> None:
        """
        Tell the daemons this receiver listens (and to what).
        """
        if self.queue is None or self._stopped:
            return
        self._send(
            LISTENER_HELLO,
            {
                "type": LISTENER_HELLO,
                "listener": self.queue,
                "patterns": self.patterns,
                "ttl": LISTENER_TTL,
            },
        )

    def stop(self) -> defer.Deferred[None]:
        """
        Say goodbye to the daemons, stop consuming and close the channel
        (the broker deletes the queue).
        """
        self._stopped = True
        if self._hello.running:
            self._hello.stop()
        channel, tag, queue = self._channel, self._tag, self.queue
        self._channel = self._tag = self.queue = None
        self._protocol = None  # a start() binds anew
        if channel is None or channel.closed or channel.client.closed:
            return defer.succeed(None)
        if queue is not None:
            self._channel = channel
            self._send(LISTENER_BYE, {"type": LISTENER_BYE, "listener": queue})
            self._channel = None
        if tag is not None:
            channel.client.consumers.pop(tag, None)

        async def close() -> None:
            try:
                await channel.channel_close(reply_code=200, reply_text="done")
            except Exception:  # closed meanwhile: so much the better
                pass

        return defer.Deferred.fromCoroutine(close())


class IgnoredHello(ValueError):
    """
    A listener message that is ignored: too large, not JSON, or not a
    hello or goodbye within the bounds.
    """


def parse_listener_message(key: str, body: bytes) -> tuple[str, list[str], float]:
    """
    The listener name, patterns and ttl (clamped to 1 s ..
    :py:data:`LONGEST_TTL`) of a hello, or the name of a goodbye (with no
    patterns), read within bounds: at most :py:data:`LARGEST_HELLO` bytes,
    at most :py:data:`MAX_HELLO_PATTERNS` valid patterns
    (:py:func:`valid_pattern`), a numeric ttl.

    :raises IgnoredHello: saying why, when the message is out of bounds.
    """
    if len(body) > LARGEST_HELLO:
        raise IgnoredHello(f"{len(body)} bytes, more than {LARGEST_HELLO}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise IgnoredHello(f"not JSON ({type(e).__name__})") from None
    if not isinstance(document, dict):
        raise IgnoredHello("not a JSON object")
    name = document.get("listener")
    if not isinstance(name, str) or not 0 < len(name) <= LONGEST_PATTERN:
        raise IgnoredHello("no valid listener name")
    if key == LISTENER_BYE:
        return name, [], 0.0
    patterns = document.get("patterns", ["#"])
    if not isinstance(patterns, list) or not 0 < len(patterns) <= MAX_HELLO_PATTERNS:
        raise IgnoredHello(f"patterns not a list of 1 to {MAX_HELLO_PATTERNS}")
    if not all(valid_pattern(pattern) for pattern in patterns):
        raise IgnoredHello("a pattern is not a valid topic pattern")
    ttl = document.get("ttl", LISTENER_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl != ttl:
        raise IgnoredHello("ttl is not a number")
    return name, list(dict.fromkeys(patterns)), min(max(float(ttl), 1.0), LONGEST_TTL)


class _Listeners:
    """
    The receivers that announced themselves, each with its patterns and
    until when it counts (its last hello plus its ttl): at most
    :py:data:`MAX_LISTENERS`, with at most :py:data:`MAX_LISTENED_PATTERNS`
    distinct patterns between them.
    """

    def __init__(self) -> None:
        self._patterns: dict[str, list[str]] = {}
        self._until: dict[str, float] = {}
        self._users: dict[str, int] = {}  # pattern: how many listeners announce it

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, name: str) -> bool:
        return name in self._until

    def hello(self, name: str, patterns: list[str], until: float) -> bool:
        """
        Note a hello (of distinct ``patterns``); true when it changes what
        is listened to.

        :raises IgnoredHello: when it would bring more listeners or
            distinct patterns than the bounds.
        """
        old = self._patterns.get(name)
        if old == patterns:
            self._until[name] = until
            return False
        if old is None and len(self._until) >= MAX_LISTENERS:
            raise IgnoredHello(f"already {MAX_LISTENERS} listeners")
        users = self._users
        leaving = {p for p in old or () if users[p] == 1 and p not in patterns}
        coming = [p for p in patterns if p not in users]
        if len(users) - len(leaving) + len(coming) > MAX_LISTENED_PATTERNS:
            raise IgnoredHello(f"more than {MAX_LISTENED_PATTERNS} distinct patterns")
        self._forget_patterns(name)
        for pattern in patterns:
            users[pattern] = users.get(pattern, 0) + 1
        self._patterns[name] = patterns
        self._until[name] = until
        return True

    def _forget_patterns(self, name: str) -> None:
        for pattern in self._patterns.pop(name, ()):
            left = self._users[pattern] - 1
            if left:
                self._users[pattern] = left
            else:
                del self._users[pattern]

    def bye(self, name: str) -> bool:
        self._forget_patterns(name)
        return self._until.pop(name, None) is not None

    def expire(self, now: float) -> bool:
        """
        Forget the listeners not heard of in time; true if any was.
        """
        gone = [name for name, until in self._until.items() if until <= now]
        for name in gone:
            self.bye(name)
        return bool(gone)

    def listened(self, keys: Iterable[str]) -> set[str]:
        """
        Which of ``keys`` some listener's distinct patterns match.
        """
        patterns = list(self._users)
        return {key for key in keys if any(topic_matches(p, key) for p in patterns)}


class EventPublisher(Service):
    """
    Publishes the daemon's events on the events exchange, on a channel of
    its own of the daemon's connection (opened again after a reconnect).

    Reports of the keys some listener listens to are kept, per routing
    key, and sent as one message per key every ``flush_interval`` seconds
    or once ``max_batch`` are kept.  While nobody listens it does not even
    observe the daemon's events.  While the broker is unreachable (or
    blocks publishing) events are dropped and counted: nothing piles up
    and nothing waits.

    From its start until :py:data:`EARLY_WINDOW` seconds after it is first
    online (its query sent), it keeps its task events (at most
    :py:data:`EARLY_KEPT`), whoever listens, then publishes those of the
    keys listened to by then: the first tasks of a daemon that starts with
    work waiting reach the listeners that answer its query.

    ``daemon.online`` is published once consuming started and
    ``daemon.offline`` on a clean stop, whoever listens; ``daemon.heartbeat``
    every ``heartbeat_interval`` seconds, and at once to a new listener.

    Listener messages are read within bounds (:py:func:`parse_listener_message`,
    :py:data:`MAX_LISTENERS`, :py:data:`MAX_LISTENED_PATTERNS`); those out of
    them are ignored with a warning (one per :py:data:`WARN_EVERY` seconds at
    most).  The keys listened to are computed again from the distinct
    patterns at most once per :py:data:`RECOMPUTE_EVERY` seconds.

    :param load: the daemon's load fields for its daemon documents.
    :ivar published: events published.
    :ivar dropped: events dropped (no channel, or the broker blocked).
    :ivar recomputed: how many times the keys listened to were computed.
    :ivar ignored: listener messages ignored (out of bounds).
    """

    def __init__(
        self,
        connection: BrokerConnection | None,
        exchange: str,
        events: Events,
        identity: DaemonIdentity,
        clock: IReactorTime,
        queue: str,
        load: Callable[[], Mapping[str, Any]] = dict,
        heartbeat_interval: float = 2.0,
        flush_interval: float = 0.1,
        max_batch: int = 500,
    ) -> None:
        self.exchange = _events_exchange_of(exchange)
        self.events = events
        self.identity = identity
        self.clock = clock
        self.load = load
        self.heartbeat_interval = heartbeat_interval
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.queue = queue
        self.base = {**identity.fields(), "queue": queue}
        self.published = 0
        self.dropped = 0
        self.online = False
        self.recomputed = 0
        self.ignored = 0
        self._listeners = _Listeners()
        self._recomputed_at = float("-inf")
        self._recompute_call: IDelayedCall | None = None
        self._greet = False
        self._warned_at = float("-inf")
        self._unwarned = 0
        self._early: list[tuple[str, Any]] | None = None
        self._early_end: IDelayedCall | None = None
        self._keys: dict[int, str] = {}
        self._daemon_keys: set[str] = set()
        self._observing = False
        self._channel: BrokerChannel | None = None
        self._protocol: BrokerProtocol | None = None
        self._batches: dict[str, list[Any]] = {}
        self._flush_call: IDelayedCall | None = None
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = clock
        self._expiry = LoopingCall(self.expire)
        self._expiry.clock = clock
        self._started_at = clock.seconds()
        if connection is not None:
            connection.add_connect_hook(self._connected)

    # the broker

    async def _connected(self, protocol: BrokerProtocol) -> None:
        self._protocol = protocol
        try:
            await self._open(protocol)
        except Exception as e:  # the daemon's connection must not fail for events
            log.warn("Could not open the events channel: {why}; no events now", why=repr(e))

    def _reopen(self, protocol: BrokerProtocol) -> None:
        if self.running and protocol is self._protocol and not protocol.closed:
            defer.Deferred.fromCoroutine(self._connected(protocol))

    async def _open(self, protocol: BrokerProtocol) -> None:
        channel = await protocol.open_channel()
        await declare_events_exchange(channel, self.exchange)
        declared = await channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        await channel.queue_bind(
            queue=declared.queue, exchange=self.exchange, routing_key="listener.#"
        )
        tag = _consumer_tag("listeners")
        protocol.consumers[tag] = _Consumer(self.listener_message)
        await channel.basic_consume(queue=declared.queue, consumer_tag=tag, no_ack=True)
        _reopen_when_closed(channel, self.clock, lambda: self._reopen(protocol))
        self.attach(channel)
        self._send(LISTENER_QUERY, _DUMPS({"type": LISTENER_QUERY, **self.base}).encode())

    def attach(self, channel: BrokerChannel) -> None:
        """
        Publish on ``channel`` from now on; the first time, the daemon is
        online.
        """
        self._channel = channel
        if not self.online and self.running:
            self.online = True
            self._add("daemon.online", self._daemon_document("daemon.online"))
            self.flush()
            if self._early is not None and self._early_end is None:
                self._early_end = self.clock.callLater(EARLY_WINDOW, self._end_early)

    def _end_early(self) -> None:
        """
        End the early window: publish the task events kept in it whose keys
        are listened to now, and observe only those from now on.
        """
        if self._early_end is not None and self._early_end.active():
            self._early_end.cancel()
        self._early_end = None
        early, self._early = self._early, None
        self._apply_listened()
        listened = set(self._keys.values())
        for key, entry in early or ():
            if key in listened:
                self._add(key, entry)

    def listener_message(self, key: str, body: bytes) -> None:
        """
        Take a hello or goodbye of a receiver (or another daemon's query,
        ignored); one out of bounds is ignored with a warning.
        """
        if key not in (LISTENER_HELLO, LISTENER_BYE):
            return
        try:
            name, patterns, ttl = parse_listener_message(key, body)
            if key == LISTENER_BYE:
                if self._listeners.bye(name):
                    self._listened_changed()
                return
            new = name not in self._listeners
            if self._listeners.hello(name, patterns, self.clock.seconds() + ttl):
                self._greet = self._greet or new  # a new listener sees this daemon at once
                self._listened_changed()
        except IgnoredHello as e:
            self._ignore(key, str(e))

    def _ignore(self, key: str, why: str) -> None:
        """
        Count a listener message ignored; warn at most once per
        :py:data:`WARN_EVERY` seconds.
        """
        self.ignored += 1
        self._unwarned += 1
        now = self.clock.seconds()
        if now - self._warned_at < WARN_EVERY:
            return
        log.warn(
            "Ignored {count} {key} message(s) out of bounds (the last: {why})",
            count=self._unwarned,
            key=key,
            why=why,
        )
        self._warned_at, self._unwarned = now, 0

    def _listened_changed(self) -> None:
        """
        Compute the keys listened to again: now if the last time was
        :py:data:`RECOMPUTE_EVERY` seconds ago, else once that time has come.
        """
        if self._recompute_call is not None:
            return
        wait = self._recomputed_at + RECOMPUTE_EVERY - self.clock.seconds()
        if wait <= 0:
            self._recompute()
        else:
            self._recompute_call = self.clock.callLater(wait, self._recompute)

    def _recompute(self) -> None:
        """
        Compute the keys listened to, as the listeners changed.
        """
        if self._recompute_call is not None and self._recompute_call.active():
            self._recompute_call.cancel()
        self._recompute_call = None
        self._recomputed_at = self.clock.seconds()
        self._apply_listened()

    def _apply_listened(self) -> None:
        """
        Work out the keys the listeners' distinct patterns match, and
        observe the daemon's events while some task key is wanted (or in
        the early window).
        """
        self.recomputed += 1
        listened = self._listeners.listened(
            [task_key(kind) for kind in EventKind] + ["daemon.heartbeat"]
        )
        self._keys = {id(kind): task_key(kind) for kind in EventKind if task_key(kind) in listened}
        self._daemon_keys = {key for key in listened if key.startswith("daemon.")}
        observe = (bool(self._keys) or self._early is not None) and bool(self.running)
        if observe and not self._observing:
            self.events.subscribe(self.observe)
        elif self._observing and not observe:
            self.events.unsubscribe(self.observe)
        self._observing = observe
        if self._greet:
            self._greet = False
            self.beat()

    def listening(self) -> int:
        """
        How many listeners this daemon publishes for now.
        """
        return len(self._listeners)

    # reports

    def observe(self, event: Event) -> None:
        """
        Keep one report of the daemon's events, if its key is listened to
        (or, in the early window, whatever its key).
        """
        early = self._early
        if early is not None:
            if len(early) < EARLY_KEPT:
                early.append((_TASK_KEYS[id(event.kind)], self._entry(event)))
            return
        key = self._keys.get(id(event.kind))
        if key is None:
            return
        self._add(key, self._entry(event))

    def _entry(self, event: Event) -> tuple[float, Event, float | None, str | None]:
        """
        What is kept of a report: when, the event, and the runtime and
        child of a succeeded or failed task.
        """
        runtime: float | None = None
        child: str | None = None
        if event.kind in _RUNTIME_KINDS:
            job = event.fields.get("job")
            started = getattr(job, "started_at", None)
            if started:
                runtime = self.clock.seconds() - started
            child = getattr(job, "child", None)
        return (self.clock.seconds(), event, runtime, child)

    def _add(self, key: str, entry: Any) -> None:
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = []
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(self.flush_interval, self.flush)
        batch.append(entry)
        if len(batch) >= self.max_batch:
            del self._batches[key]
            self._publish(key, batch)

    def flush(self) -> None:
        """
        Publish what is kept, one message per routing key.
        """
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        batches, self._batches = self._batches, {}
        for key, batch in batches.items():
            self._publish(key, batch)

    def _publish(self, key: str, batch: list[Any]) -> None:
        channel = self._channel
        if channel is None or channel.closed or channel.client.closed or channel.client.blocked:
            self.dropped += len(batch)
            return
        base = self.base
        documents = [
            entry
            if type(entry) is dict
            else task_document(key, entry[0], entry[1], base, *entry[2:])
            for entry in batch
        ]
        if self._send(key, _DUMPS(documents).encode()):
            self.published += len(batch)
        else:
            self.dropped += len(batch)

    def _send(self, key: str, body: bytes) -> bool:
        channel = self._channel
        if channel is None or channel.closed or channel.client.closed:
            return False
        sent = channel.publish(
            self.exchange, key, body, {"content-type": CONTENT_TYPE, "delivery-mode": TRANSIENT}
        )
        if sent.called and isinstance(sent.result, Failure):
            sent.addErrback(lambda _: None)
            return False
        return True

    # the daemon's own events

    def _daemon_document(self, key: str) -> dict[str, Any]:
        now = self.clock.seconds()
        return daemon_document(
            key, now, self.base, self.load(), now - self._started_at, self.heartbeat_interval
        )

    def expire(self) -> None:
        """
        Forget the listeners not heard of in time (every
        :py:data:`HELLO_EVERY` seconds).
        """
        if self._listeners.expire(self.clock.seconds()):
            self._listened_changed()

    def beat(self) -> None:
        """
        Publish a heartbeat if one listens to it.
        """
        if "daemon.heartbeat" in self._daemon_keys and self.running:
            self._add("daemon.heartbeat", self._daemon_document("daemon.heartbeat"))

    def stats(self) -> dict[str, int]:
        """
        Events published and dropped, and the listeners heard of.
        """
        return {
            "published": self.published,
            "dropped": self.dropped,
            "listeners": self.listening(),
        }

    def startService(self) -> None:
        Service.startService(self)
        # Read again: twistd forks into the background after the daemon
        # was built, and the pid (and the default name) are the child's.
        self.base = {**self.identity.fields(), "queue": self.queue}
        self._started_at = self.clock.seconds()
        if not self.online:
            self._early = []
        self._apply_listened()
        self._heartbeat.start(self.heartbeat_interval, now=False)
        self._expiry.start(HELLO_EVERY, now=False)
        if self._channel is not None and not self._channel.closed:
            self.attach(self._channel)

    def stopService(self) -> None:
        """
        Publish what is kept and ``daemon.offline`` (before the connection
        closes: this service stops before it).
        """
        for loop in (self._heartbeat, self._expiry):
            if loop.running:
                loop.stop()
        if self._recompute_call is not None and self._recompute_call.active():
            self._recompute_call.cancel()
        self._recompute_call = None
        if self._early is not None:
            self._end_early()
        if self._observing:
            self.events.unsubscribe(self.observe)
            self._observing = False
        if self.online:
            self._add("daemon.offline", self._daemon_document("daemon.offline"))
        self.flush()
        Service.stopService(self)
