"""
Results in memcached, through Twisted's own memcache protocol:
``memcached://host:port``.  The blocking client (a Django process) reads
them through pymemcache instead, with the same keys and values
(:py:mod:`twistedq.backends.memcached_blocking`).

Limits, stated: memcached evicts under memory pressure, so an outcome can
vanish before it expires, and taskset progress (a counter per taskset,
raised once per subtask thanks to an ``add`` guard key) is best-effort.  An
outcome larger than one item (the server's ``item_size_max``, 1 MiB by
default, less 512 bytes for the key) is refused with
:py:class:`~twistedq.backends.base.StoreRefused` before it is sent, and so
is one the server refuses as too large itself; values are bytes, kept as
they are.  A taskset id that cannot be part of a key (a space, a control
or non-ASCII character, over 100 characters) is replaced in keys by a
digest of it.

The commands sent are ``set``, ``get`` (and multi-get), ``add``,
``delete`` and ``incr``, ``gets`` and ``cas`` (periodic state, the parked
messages' index, lease renewal), plus ``version`` and ``stats settings``
when connecting.  A server that answers ``stats settings`` without
``item_size_max`` is not memcached (Tokyo Tyrant's memcached interface
lacks ``gets`` and ``cas``, and ignores expiry times): the store refuses
it when connecting, and every request after, with
:py:class:`NotMemcached`; the Tyrant store
(:py:mod:`twistedq.backends.tyrant`) serves Tyrant.  A ``gets`` answered
without a cas id fails alone with the same error, the connection serving
on.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.memcache import ClientError, MemCacheProtocol, NoSuchCommand, ServerError
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
    BackendURLError,
    IClaimStore,
    IFencedLeases,
    IResultBackend,
    IScheduleStore,
    OutcomeRecord,
    ParkedTask,
    PeriodicState,
    SlotClaim,
    StoreRefused,
    TasksetState,
    gather,
)
from twistedq.backends.claims import FencedClaims, holds_any, parked_from_value, parked_value
from twistedq.backends.limits import MiB, check_sizes, fitted_id

__all__ = [
    "DEFAULT_MAX_ITEM",
    "ITEM_ROOM",
    "KEY_PREFIX",
    "MemcachedBackend",
    "NotMemcached",
    "memcached_key",
    "taskset_key_part",
]

#: Room in an item for its key, flags and expiry.
ITEM_ROOM = 512

#: memcached's default largest item (``-I``, ``item_size_max``), less room
#: for the key.
DEFAULT_MAX_ITEM = MiB - ITEM_ROOM

#: The start of every key the memcached store writes.
KEY_PREFIX = "twistedq:"

#: A taskset id that can be part of a key as it is.
_KEY_TEXT = re.compile(r"[!-~]+")


def memcached_key(prefix: str, *parts: str) -> bytes:
    """
    The key of an item: ``prefix`` then ``parts`` joined by colons
    (``twistedq:result:<task id>``), the same for the Twisted store and
    the blocking one (:py:mod:`twistedq.backends.memcached_blocking`).
    """
    return (prefix + ":".join(parts)).encode("ascii")


def taskset_key_part(taskset_id: str) -> str:
    """
    A taskset id as it goes in keys: as it is, or a digest of it when it
    holds a space, a control or non-ASCII character, or passes 100
    characters.
    """
    return fitted_id(taskset_id, 100, _KEY_TEXT)


class NotMemcached(Exception):
    """
    The server does not answer as memcached does (Tokyo Tyrant's memcached
    interface, for one), so the memcached store cannot use it.
    """


class _MemcacheClient(MemCacheProtocol):
    """
    Twisted's memcache protocol, with its reply timeout cancelled once the
    connection is lost (it otherwise lingers, and fires, after the loss),
    and a ``gets`` answered without a cas id failed alone (Twisted's own
    raises inside ``dataReceived``, which drops the connection and every
    request in flight on it).

    :ivar lost: the connection is lost.
    """

    lost = False

    def cmd_VALUE(self, line: bytes) -> None:
        command = self._current[0]
        if command.command == b"gets" and len(line.split()) == 3:
            command.mismatch = NotMemcached(
                f"the server answered gets with {b'VALUE ' + line!r}, without a cas id:"
                " it is not memcached (Tokyo Tyrant answers so; use tyrant://host:port)"
            )
            line += b" 0"
        MemCacheProtocol.cmd_VALUE(self, line)

    def cmd_END(self) -> None:
        mismatch = getattr(self._current[0], "mismatch", None)
        if mismatch is None:
            MemCacheProtocol.cmd_END(self)
            return
        self._current.popleft().fail(mismatch)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.setTimeout(None)
        MemCacheProtocol.connectionLost(self, reason)


def _client_of(protocol: IProtocol) -> _MemcacheClient:
    """
    The protocol ClientService connected: a proxy of a ``_MemcacheClient``
    that forwards every attribute to it.
    """
    return cast(_MemcacheClient, protocol)


async def _increment(client: MemCacheProtocol, key: bytes, expiry: int) -> int:
    """
    Raise the counter item ``key`` by one, creating it (at one) if it
    is missing, unless another writer creates it first.
    """
    value = await client.increment(key)
    if value is False:
        created = await client.add(key, b"1", expireTime=expiry)
        value = 1 if created else await client.increment(key)
    return int(value)


async def _compare_and_set(
    client: MemCacheProtocol, key: bytes, change: Callable[[Any], Any], empty: Any
) -> None:
    """
    Replace the JSON item ``key`` (``empty`` when missing) by
    ``change(value)``, with ``add`` or compare-and-set, trying again
    while other writers get there first.
    """
    for _ in range(50):
        _, cas, value = await client.get(key, withIdentifier=True)
        before = json.loads(value) if value is not None else empty
        after = change(before)
        if after == before:
            return
        encoded = json.dumps(after).encode()
        if value is None:
            if await client.add(key, encoded):
                return
        elif await client.checkAndSet(key, encoded, cas):
            return
    raise RuntimeError(f"could not change {key!r}: too many concurrent changes")


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases)
class MemcachedBackend(FencedClaims):
    """
    A result backend on a memcached server (or anything speaking its text
    protocol's basic commands).

    :ivar max_document_size: the largest document it sends, in bytes: the
        server's ``item_size_max`` less 512 bytes once connected (1 MiB less
        512 where the server does not tell it), unless given.
    """

    def __init__(
        self,
        reactor: Any,
        host: str = "127.0.0.1",
        port: int = 11211,
        ttl: int = DEFAULT_RESULT_TTL,
        prefix: str = KEY_PREFIX,
        max_document_size: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.url = f"memcached://{host}:{port}"
        self.ttl = ttl
        self.prefix = prefix
        self._max_given = max_document_size
        self.max_document_size = max_document_size or DEFAULT_MAX_ITEM
        self.timeout = timeout
        self._protocol: _MemcacheClient | None = None
        self._refusal: NotMemcached | None = None
        self._service = ClientService(
            HostnameEndpoint(reactor, host, port, timeout=timeout),
            Factory.forProtocol(functools.partial(_MemcacheClient, timeOut=timeout)),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            clock=reactor,
            prepareConnection=self._prepared,
        )

    def _prepared(self, protocol: IProtocol) -> None:
        self._protocol = _client_of(protocol)

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> MemcachedBackend:
        """
        Build from ``memcached://host:port``.
        """
        parts = urlsplit(url)
        try:
            port = parts.port or 11211
        except ValueError:
            raise BackendURLError(f"bad memcached URL {url!r}") from None
        return cls(reactor, parts.hostname or "127.0.0.1", port, ttl)

    def _key(self, *parts: str) -> bytes:
        return memcached_key(self.prefix, *parts)

    async def _client(self) -> MemCacheProtocol:
        if self._refusal is not None:
            raise self._refusal
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        connected = self._service.whenConnected()
        connected.addTimeout(self.timeout, self.reactor)
        return _client_of(await connected)

    def _do(self, work: Any) -> defer.Deferred[Any]:
        async def run() -> Any:
            return await work(await self._client())

        return defer.Deferred.fromCoroutine(run())

    # plumbing

    def connect(self) -> defer.Deferred[None]:
        self._service.startService()
        return self._do(self._read_limit)

    async def _read_limit(self, client: MemCacheProtocol) -> None:
        version = await client.version()
        try:
            settings = await client.stats(b"settings")
        except (ServerError, ClientError, NoSuchCommand):
            settings = {}
        if b"item_size_max" not in settings:
            self._refusal = NotMemcached(
                f"{self.url} is not memcached: it answers `stats settings` without"
                f" item_size_max (its version: {version.decode('ascii', 'replace')}), and the"
                " memcached store needs memcached's gets, cas and expiry times.  For Tokyo"
                " Tyrant use tyrant://host:port"
            )
            raise self._refusal
        if self._max_given is None:
            self.max_document_size = int(settings[b"item_size_max"]) - ITEM_ROOM

    def _taskset(self, taskset_id: str) -> str:
        return taskset_key_part(taskset_id)

    def close(self) -> defer.Deferred[None]:
        self._protocol = None
        return self._service.stopService()

    # IResultBackend

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        return self._do(lambda client: self._store_on(client, records))

    async def _store_on(self, client: MemCacheProtocol, records: Sequence[OutcomeRecord]) -> None:
        check_sizes(
            ((record.task_id, record.document) for record in records),
            self.max_document_size,
            self.url,
        )
        ttl = self.ttl
        writes = []
        for record in records:
            key = self._key("result", record.task_id)
            writes.append(self._refused(client.set(key, record.document, expireTime=ttl), record))
            if record.taskset is not None:
                writes.append(
                    defer.Deferred.fromCoroutine(
                        self._count(client, record.taskset, record.task_id, record.failed)
                    )
                )
        await gather(writes)

    def _refused(self, d: defer.Deferred[Any], record: OutcomeRecord) -> defer.Deferred[Any]:
        """
        Make memcached's refusal of the value for its size a StoreRefused.
        """

        def refused(failure: Failure) -> None:
            failure.trap(ServerError)
            if b"too large" not in str(failure.value).encode():
                failure.raiseException()
            raise StoreRefused(
                f"{self.url} refused the outcome of task {record.task_id}"
                f" ({len(record.document)} bytes): {failure.value}",
                record.task_id,
            )

        return d.addErrback(refused)

    async def _count(
        self, client: MemCacheProtocol, taskset: str, task_id: str, failed: bool
    ) -> None:
        """
        Count a finished subtask once: only the first ``add`` of its guard
        key raises the counters.
        """
        taskset = self._taskset(taskset)
        first = await client.add(self._key("member", taskset, task_id), b"1", expireTime=self.ttl)
        if not first:
            return
        for counter in ["done", "failed"] if failed else ["done"]:
            await _increment(client, self._key("taskset", taskset, counter), self.ttl)

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        async def mark(client: MemCacheProtocol) -> None:
            check_sizes(records, self.max_document_size, self.url)
            await gather(
                [
                    client.add(self._key("result", task_id), document, expireTime=self.ttl)
                    for task_id, document in records
                ],
            )

        return self._do(mark)

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self.get_results([task_id]).addCallback(lambda found: found[0])

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        ids = list(task_ids)

        async def read(client: MemCacheProtocol) -> list[bytes | None]:
            if not ids:
                return []
            found: dict[bytes, Any] = {}
            for start in range(0, len(ids), 100):
                keys = [self._key("result", task_id) for task_id in ids[start : start + 100]]
                found.update(await client.getMultiple(keys))
            return [found.get(self._key("result", task_id), (0, None))[1] for task_id in ids]

        return self._do(read)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        async def delete(client: MemCacheProtocol) -> None:
            await gather(
                [client.delete(self._key("result", task_id)) for task_id in task_ids],
            )

        return self._do(delete)

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        async def create(client: MemCacheProtocol) -> None:
            await client.set(
                self._key("taskset", self._taskset(taskset_id), "total"),
                b"%d" % total,
                expireTime=self.ttl,
            )

        return self._do(create)

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        async def read(client: MemCacheProtocol) -> TasksetState | None:
            taskset = self._taskset(taskset_id)
            keys = [self._key("taskset", taskset, name) for name in ("total", "done", "failed")]
            found = await client.getMultiple(keys)
            total, done, failed = (found.get(key, (0, None))[1] for key in keys)
            if total is None:
                return None
            return TasksetState(int(total), int(done or 0), int(failed or 0))

        return self._do(read)

    # periodic schedules: an ``add`` per slot claim; each task's state is a
    # JSON item changed with compare-and-set.  memcached expiry times are
    # whole seconds, so leases are rounded up.

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        slot_key = self._key("slot", key)

        async def claim(client: MemCacheProtocol) -> SlotClaim:
            for _ in range(2):
                if await client.add(slot_key, owner.encode(), expireTime=math.ceil(lease)):
                    return SlotClaim.WON
                _, value = await client.get(slot_key)
                if value == b"done":
                    return SlotClaim.DONE
                if value is not None:
                    return SlotClaim.HELD
            return SlotClaim.HELD  # lapsed and retaken between our add and get

        return self._do(claim)

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        slot_key = self._key("slot", key)

        async def release(client: MemCacheProtocol) -> None:
            _, value = await client.get(slot_key)
            if value == owner.encode():
                await client.delete(slot_key)

        return self._do(release)

    async def _update_state(
        self, client: MemCacheProtocol, name: str, change: Callable[[dict[str, Any]], None]
    ) -> None:
        def changed(state: dict[str, Any]) -> dict[str, Any]:
            state = dict(state)
            change(state)
            return state

        await _compare_and_set(client, self._key("periodic", name), changed, {})

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        def ran(state: dict[str, Any]) -> None:
            last = state.get("last_run_at")
            state["last_run_at"] = slot if last is None else max(last, slot)
            state["total_run_count"] = state.get("total_run_count", 0) + 1
            state["next_run_at"] = next_run_at

        async def commit(client: MemCacheProtocol) -> None:
            await client.set(self._key("slot", key), b"done", expireTime=math.ceil(keep))
            await self._update_state(client, name, ran)

        return self._do(commit)

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        return self._do(
            lambda client: self._update_state(
                client, name, lambda state: state.update(next_run_at=next_run_at)
            )
        )

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        return self._do(
            lambda client: self._update_state(
                client, name, lambda state: state.update(enabled=enabled)
            )
        )

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        async def read(client: MemCacheProtocol) -> dict[str, PeriodicState]:
            keys = {self._key("periodic", name): name for name in names}
            found = await client.getMultiple(list(keys)) if keys else {}
            states = {}
            for key, name in keys.items():
                value = found.get(key, (0, None))[1]
                if value is not None:
                    state = json.loads(value)
                    states[name] = PeriodicState(
                        name,
                        state.get("enabled", True),
                        state.get("last_run_at"),
                        state.get("total_run_count", 0),
                        state.get("next_run_at"),
                    )
            return states

        return self._do(read)

    # task claims: ``add`` of a claim item (the lease) makes one attempt
    # win; a fence counter item holds the latest token.  memcached has no
    # operation over two items, so a commit checks the fence and then
    # writes: an attempt that lost its lease in that instant may still
    # commit; and an evicted claim lets a task run twice.  Parked messages
    # are items listed in an index item changed with compare-and-set.

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        async def take(client: MemCacheProtocol) -> list[tuple[int | None, bytes | None]]:
            answers: list[tuple[int | None, bytes | None]] = []
            for task_id in task_ids:
                _, document = await client.get(self._key("result", task_id))
                if holds_any(document, unless):
                    answers.append((None, document))
                    continue
                token = await self._take_lease(client, task_id, math.ceil(lease))
                if token is not None:  # read again: a commit may have ended the last lease
                    _, document = await client.get(self._key("result", task_id))
                    if holds_any(document, unless):
                        await client.delete(self._key("claim", task_id))
                        token = None
                answers.append((token, document))
            return answers

        return self._do(take)

    async def _take_lease(self, client: MemCacheProtocol, task_id: str, lease: int) -> int | None:
        claim_key = self._key("claim", task_id)
        if not await client.add(claim_key, b"0", expireTime=lease):
            return None
        token = await _increment(client, self._key("fence", task_id), self.ttl)
        await client.set(claim_key, b"%d" % token, expireTime=lease)
        return token

    async def _holds(self, client: MemCacheProtocol, task_id: str, token: int) -> bool:
        _, value = await client.get(self._key("claim", task_id))
        return value is not None and int(value) == token

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        async def extend(client: MemCacheProtocol) -> list[bool]:
            answers = []
            for task_id, token in claims:
                key = self._key("claim", task_id)
                _, cas, value = await client.get(key, withIdentifier=True)
                if value is not None and int(value) == token:
                    kept = await client.checkAndSet(key, value, cas, expireTime=math.ceil(lease))
                else:
                    kept = False
                answers.append(bool(kept))
            return answers

        return self._do(extend)

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        async def end(client: MemCacheProtocol) -> None:
            for task_id, token in claims:
                if await self._holds(client, task_id, token):
                    await client.delete(self._key("claim", task_id))

        return self._do(end)

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        async def commit(client: MemCacheProtocol) -> list[bool]:
            answers = []
            for record, token in zip(records, tokens, strict=True):
                _, fence = await client.get(self._key("fence", record.task_id))
                answers.append(fence is not None and int(fence) == token)
            done = [record for record, ok in zip(records, answers, strict=True) if ok]
            if done:
                await self._store_on(client, done)
                for record in done:
                    await client.delete(self._key("claim", record.task_id))
                await self._drop_parked_on(client, [record.task_id for record in done])
            return answers

        return self._do(commit)

    async def _change_index(
        self, client: MemCacheProtocol, change: Callable[[list[str]], list[str]]
    ) -> None:
        await _compare_and_set(client, self._key("parked-index"), change, [])

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        async def park(client: MemCacheProtocol) -> list[bool]:
            answers = []
            for task in parked:
                held = await self._holds(client, task.task_id, task.token)
                if held:
                    key = self._key("parked", task.task_id)
                    await client.set(key, parked_value(task), expireTime=self.ttl)
                answers.append(held)
            ids = [task.task_id for task, ok in zip(parked, answers, strict=True) if ok]
            if ids:
                await self._change_index(
                    client, lambda index: index + [i for i in ids if i not in index]
                )
            return answers

        return self._do(park)

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        async def find(client: MemCacheProtocol) -> list[tuple[ParkedTask, bytes | None]]:
            _, index = await client.get(self._key("parked-index"))
            found: list[tuple[ParkedTask, bytes | None]] = []
            gone: list[str] = []
            for task_id in json.loads(index) if index is not None else []:
                _, value = await client.get(self._key("parked", task_id))
                if value is None:  # expired or evicted
                    gone.append(task_id)
                    continue
                _, claimed = await client.get(self._key("claim", task_id))
                if claimed is None and len(found) < most:
                    _, document = await client.get(self._key("result", task_id))
                    found.append((parked_from_value(task_id, value), document))
            if gone:
                await self._drop_parked_on(client, gone)
            return found

        return self._do(find)

    async def _drop_parked_on(self, client: MemCacheProtocol, task_ids: Sequence[str]) -> None:
        dropped = set(task_ids)
        for task_id in task_ids:
            await client.delete(self._key("parked", task_id))
        await self._change_index(client, lambda index: [i for i in index if i not in dropped])

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        return self._do(lambda client: self._drop_parked_on(client, task_ids))
