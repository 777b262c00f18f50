"""
Finding the Redis primary through Redis Sentinel.

A store URL ``redis+sentinel://[:password@]host:port,host:port,.../name[/db]``
names the sentinels (any number, usually three), the name they watch the
primary under, and the database.  The password, if any, is the Redis
servers'; the sentinels are asked without one.

Before every connection the sentinels are asked where the primary of
``name`` is: of the answers of a majority of them that name a primary up,
the one with the latest configuration epoch wins (a sentinel that has not
heard of a failover yet names the old primary); a server that turns out
not to be a primary (``ROLE``) is dropped and the question asked again.

The store listens to every sentinel's ``+switch-master`` announcement and
closes its connections when the primary of ``name`` changes: the next ones
reach the new primary, without a restart.  (Without it, a client of a
primary demoted alive, as by ``SENTINEL FAILOVER``, writes on to it until
the sentinels reconfigure it, up to 10 s later, and all of that is lost.)
A write that still reaches a demoted server is answered ``READONLY``,
which also closes the connections.

Redis replicates asynchronously: what the old primary acknowledged but had
not yet sent to the replica is lost in a failover, and so is what it
accepted after the promotion until its clients moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.internet import defer
from twisted.python.failure import Failure

from twistedq.backends.base import BackendURLError
from twistedq.backends.resp import FastCommands

__all__ = ["NotReplicated", "SentinelPrimary", "SentinelURL", "is_readonly", "replicas_of"]

#: The URL scheme of a store found through Sentinel.
SCHEME = "redis+sentinel"

#: How long one question to the sentinels may take, in seconds (txredisapi
#: waits 10 s, and does not ask again meanwhile: a failover that ended in
#: between would be noticed that much later).
DISCOVERY_TIMEOUT = 2.0

#: The longest pause between two attempts to reach the primary, in seconds.
MAX_RETRY_DELAY = 2.0


class NotReplicated(Exception):
    """
    Fewer replicas than asked for acknowledged a write in time: it is on
    the primary, but a failover could lose it.
    """


def replicas_of(url: str) -> int:
    """
    The ``replicas=N`` of a Redis store URL's query (0 without one).

    :raises BackendURLError: another option, or N not a number.
    """
    options = parse_qs(urlsplit(url).query, keep_blank_values=True)
    unknown = set(options) - {"replicas"}
    if unknown:
        raise BackendURLError(f"unknown option {sorted(unknown)[0]!r} in {url!r}: use replicas=N")
    value = options.get("replicas", ["0"])[-1]
    if not value.isdigit():
        raise BackendURLError(f"replicas must be a whole number in {url!r}")
    return int(value)


@dataclass(frozen=True)
class SentinelURL:
    """
    A ``redis+sentinel://`` store URL, understood.

    :ivar sentinels: the sentinels' addresses, as given.
    :ivar service: the name the sentinels watch the primary under.
    :ivar db: the database number on the primary.
    :ivar password: the Redis servers' password, if any.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """
        :raises BackendURLError: not ``redis+sentinel://host:port[,...]/name[/db]``.
        """
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise BackendURLError(f"not a {SCHEME}:// URL: {url!r}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        password = unquote(credentials.partition(":")[2]) if credentials else None
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            host = host.strip("[]")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise BackendURLError(f"bad sentinel address {item!r} in {url!r}: use host:port")
            sentinels.append((host, int(port)))
        service, _, db = parts.path.strip("/").partition("/")
        if not service or (db and not db.isdigit()):
            raise BackendURLError(
                f"bad {SCHEME} URL {url!r}: use {SCHEME}://host:port,host:port,host:port/name/db"
            )
        return cls(tuple(sentinels), unquote(service), int(db or 0), password or None)

    def __str__(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"{SCHEME}://{hosts}/{self.service}/{self.db}"


def is_readonly(failure: Failure) -> bool:
    """
    Whether Redis refused a write because the server is a replica.
    """
    if failure.check(txredisapi.ResponseError) is None:
        return False
    return str(failure.value).startswith("READONLY")


class _PrimaryProtocol(FastCommands, txredisapi.SentinelRedisProtocol):
    """
    A connection that stays only on a primary.  (txredisapi compares the
    ``ROLE`` answer with text, and a connection that answers bytes, as the
    store's do, never matched.)
    """

    def connectionMade(self) -> Any:
        if self.password is not None:
            self.auth(self.password, self.username)

        def check_role(role: Sequence[Any]) -> Any:
            kind = role[0].decode() if isinstance(role[0], bytes) else role[0]
            if self.factory.is_master and kind != "master":
                self.transport.loseConnection()
                return None
            return txredisapi.RedisProtocol.connectionMade(self)

        def failed(failure: Failure) -> None:
            self.transport.loseConnection()

        return self.role().addCallbacks(check_role, failed)


class _PrimaryFactory(txredisapi.SentinelConnectionFactory):
    protocol = _PrimaryProtocol
    maxDelay = MAX_RETRY_DELAY


class _Sentinels(txredisapi.Sentinel):
    """
    The sentinels, asked where the primary is.
    """

    discovery_timeout = DISCOVERY_TIMEOUT

    def __init__(self, addresses: list[tuple[str, int]], **options: Any) -> None:
        txredisapi.Sentinel.__init__(self, addresses, **options)
        self._timers: set[Any] = set()

    def discover_master(self, service_name: str) -> defer.Deferred[tuple[str, int]]:
        """
        The primary a majority of the sentinels name (the latest
        configuration epoch wins), or whichever answered within
        ``discovery_timeout``.

        :raises txredisapi.MasterNotFoundError: no sentinel named a primary up.
        """
        result: defer.Deferred[tuple[str, int]] = defer.Deferred()
        asked, majority = len(self.sentinels), len(self.sentinels) // 2 + 1
        good: list[dict[str, Any]] = []
        replies = [0]

        def settle() -> None:
            if timer.active():
                timer.cancel()
            self._timers.discard(timer)
            if result.called:
                return
            if not good:
                result.errback(
                    txredisapi.MasterNotFoundError(f"no sentinel names a primary of {service_name}")
                )
                return
            best = max(good, key=lambda state: int(state.get("config-epoch", 0)))
            result.callback((best["ip"], int(best["port"])))

        def replied(response: Any) -> None:
            replies[0] += 1
            if isinstance(response, dict):
                state = response.get(service_name)
                if state and self.check_master_state(state):
                    good.append(state)
            if replies[0] == asked or (replies[0] >= majority and good):
                settle()

        from twisted.internet import reactor

        timer = reactor.callLater(self.discovery_timeout, settle)
        self._timers.add(timer)
        for sentinel in self.sentinels:
            sentinel.sentinel_masters().addBoth(replied)
        return result

    def disconnect(self) -> defer.Deferred[Any]:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return txredisapi.Sentinel.disconnect(self)


class _SwitchListener(txredisapi.SubscriberProtocol):
    """
    Listens to a sentinel's ``+switch-master`` announcements.
    """

    def connectionMade(self) -> Any:
        d = txredisapi.SubscriberProtocol.connectionMade(self)
        d.addCallback(lambda _: self.subscribe("+switch-master"))
        # Waited for until the connection closes: a close is no error.
        d.addErrback(lambda failure: failure.trap(txredisapi.ConnectionError) and None)
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.on_switch(message)


class _SwitchListenerFactory(txredisapi.SubscriberFactory):
    protocol = _SwitchListener
    maxDelay = MAX_RETRY_DELAY

    def __init__(self, on_switch: Any) -> None:
        txredisapi.SubscriberFactory.__init__(self, isLazy=True)
        self.on_switch = on_switch
        self.continueTrying = True


class SentinelPrimary:
    """
    Connections to the primary the sentinels of a :py:class:`SentinelURL`
    name, followed across failovers.
    """

    def __init__(self, address: SentinelURL) -> None:
        self.address = address
        self._sentinels: _Sentinels | None = None
        self._factories: list[Any] = []
        self._listeners: list[_SwitchListenerFactory] = []
        #: How many times the primary changed since connecting.
        self.switches = 0

    def _manager(self) -> _Sentinels:
        if self._sentinels is None:
            self._sentinels = _Sentinels(list(self.address.sentinels), connectTimeout=5)
            for host, port in self.address.sentinels:
                listener = _SwitchListenerFactory(self._switched)
                listener.startConnecting(txredisapi._makeEndpoint(host, port, 5, None))
                self._listeners.append(listener)
        return self._sentinels

    def _switched(self, message: str | bytes) -> None:
        """
        A sentinel announced a new primary (``<name> <old ip> <old port>
        <new ip> <new port>``): leave the old one if it is ours.
        """
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        words = message.split()
        if len(words) == 5 and words[0] == self.address.service:
            self.switches += 1
            self.drop_connections()

    def pool(self, poolsize: int, **options: Any) -> Any:
        """
        A lazy txredisapi connection pool (its handler) on the primary:
        commands wait for a connection while there is none.  ``options``
        are txredisapi's (``charset``, ``convertNumbers``, ``replyTimeout``).
        """
        handler = self._manager().master_for(
            self.address.service,
            factory_class=_PrimaryFactory,
            dbid=self.address.db,
            poolsize=poolsize,
            isLazy=True,
            password=self.address.password,
            **options,
        )
        self._factories.append(handler._factory)
        return handler

    def follow(self, factory: Any) -> None:
        """
        Connect ``factory`` (a txredisapi factory, e.g. a subscriber's) to
        the primary, and again to whichever is primary when it reconnects.
        """
        factory.sentinel_manager = self._manager()
        factory.service_name = self.address.service
        factory.is_master = True
        factory.startConnecting(txredisapi._SentinelEndpoint(factory))
        self._factories.append(factory)

    def drop_connections(self) -> None:
        """
        Close the connections to the primary (a new one was announced, or
        it answered ``READONLY``): they reconnect to the one the sentinels
        name.
        """
        for factory in self._factories:
            for connection in list(factory.pool):
                connection.transport.loseConnection()

    def disconnect(self) -> defer.Deferred[None]:
        """
        Close the connections to the sentinels.
        """
        sentinels, self._sentinels = self._sentinels, None
        listeners, self._listeners = self._listeners, []
        self._factories = []
        if sentinels is None:
            return defer.succeed(None)
        closing = [sentinels.disconnect(), *(listener.disconnect() for listener in listeners)]
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)
