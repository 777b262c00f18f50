"""
Results in Tokyo Tyrant, through its own binary protocol
(:py:mod:`twistedq.backends.tyrant_protocol`): ``tyrant://host:port``.

Tyrant keeps records until they are deleted and has no expiry, no
compare-and-set and no transaction.  So:

* every value but the counters starts with its deadline (milliseconds
  since the epoch, 0 for never, then a newline), and a record past its
  deadline reads as absent; the daemon's clean-up job
  (:py:meth:`TyrantBackend.delete_expired`) removes such records, found
  through an index of deadlines (keys ``exp:<deadline>:<key>``, in key
  order on a B+ tree database);
* a claim (of a task, or of a periodic slot) is a *generation*: the
  record ``claim:<task id>:<n>`` made with ``putkeep``, which only one
  writer can make, holding the lease's end.  The highest generation is the
  fence, its number the token.  A lapsed lease is taken over by making
  the next generation, never by changing or deleting the old one, so two
  attempts cannot both take it, and a claim whose reply was lost lapses
  like any other;
* what needs a compare-and-set is best effort: renewing a lease and
  committing an outcome read the fence and then write, so an attempt
  whose lease lapsed in between may still renew or commit once.

The server must serve a B+ tree database (a ``.tcb`` file, or ``+`` for
one in memory): prefix listings (``fwmkeys``) scan a whole hash database,
and the clean-up needs their key order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
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
    TasksetState,
    gather,
)
from twistedq.backends.claims import FencedClaims, holds_any, parked_from_value, parked_value
from twistedq.backends.limits import MiB, check_sizes, fitted_id
from twistedq.backends.tyrant_protocol import TyrantError, TyrantProtocol

__all__ = ["DEFAULT_MAX_DOCUMENT", "NotATree", "TyrantBackend"]

#: ttserver refuses (by closing the connection) an argument over 256 MiB;
#: room is left for the deadline.
DEFAULT_MAX_DOCUMENT = 256 * MiB - 512

#: A taskset id that can be part of a key as it is (no ``:``, which
#: separates the parts of a key).
_KEY_TEXT = re.compile(r"[!-9;-~]+")

#: The most records one request reads or removes.
_BATCH = 1000


class NotATree(TyrantError):
    """
    The server does not serve a B+ tree database, which the store needs.
    """


def _frame(deadline_ms: int, payload: bytes) -> bytes:
    return b"%d\n%s" % (deadline_ms, payload)


def _unframe(value: bytes | None, now_ms: int) -> bytes | None:
    """
    The payload of a stored value, or None if absent or past its deadline.
    """
    if value is None:
        return None
    cut = value.find(b"\n")
    if cut < 0:
        return None
    try:
        deadline = int(value[:cut])
    except ValueError:
        return None
    if deadline and deadline <= now_ms:
        return None
    return value[cut + 1 :]


def _deadline_of(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value[: value.find(b"\n")])
    except ValueError:
        return None


def _generations(keys: Sequence[bytes], prefix: bytes) -> list[int]:
    """
    The generation numbers among ``keys`` listed under ``prefix``, in
    order (keys of other ids that share the prefix are left out).
    """
    numbers = []
    for key in keys:
        rest = key[len(prefix) :]
        if rest.isdigit():
            numbers.append(int(rest))
    return sorted(numbers)


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases)
class TyrantBackend(FencedClaims):
    """
    A result backend on a Tokyo Tyrant server (``ttserver``) serving a
    B+ tree database.

    :ivar max_document_size: the largest document it sends, in bytes.
    """

    def __init__(
        self,
        reactor: Any,
        host: str = "127.0.0.1",
        port: int = 1978,
        ttl: int = DEFAULT_RESULT_TTL,
        prefix: str = "twistedq:",
        max_document_size: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.url = f"tyrant://{host}:{port}"
        self.ttl = ttl
        self.prefix = prefix.encode()
        self.max_document_size = max_document_size or DEFAULT_MAX_DOCUMENT
        self.timeout = timeout
        self._protocol: TyrantProtocol | None = None
        self._refusal: Exception | None = None
        self._service = ClientService(
            HostnameEndpoint(reactor, host, port, timeout=timeout),
            Factory.forProtocol(functools.partial(TyrantProtocol, timeout=timeout)),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            clock=reactor,
            prepareConnection=self._prepared,
        )

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> TyrantBackend:
        """
        Build from ``tyrant://host:port`` (port 1978 by default).
        """
        parts = urlsplit(url)
        try:
            port = parts.port or 1978
        except ValueError:
            raise BackendURLError(f"bad tyrant URL {url!r}") from None
        return cls(reactor, parts.hostname or "127.0.0.1", port, ttl)

    # plumbing

    def _prepared(self, protocol: IProtocol) -> None:
        self._protocol = cast(TyrantProtocol, protocol)

    async def _client(self) -> TyrantProtocol:
        if self._refusal is not None:
            raise self._refusal
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        while True:
            connected = self._service.whenConnected()
            connected.addTimeout(self.timeout, self.reactor)
            found = cast(TyrantProtocol, await connected)
            if not found.lost:
                return found
            # Lost an instant ago: the service learns it on the next turn.
            await deferLater(self.reactor, 0, lambda: None)

    def _do(self, work: Callable[[TyrantProtocol], Awaitable[Any]]) -> defer.Deferred[Any]:
        async def run() -> Any:
            return await work(await self._client())

        return defer.Deferred.fromCoroutine(run())

    def _key(self, *parts: str | bytes) -> bytes:
        return self.prefix + b":".join(
            part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass")
            for part in parts
        )

    def _now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def _expiry(self, seconds: float) -> int:
        return self._now_ms() + int(seconds * 1000)

    def _index_key(self, deadline_ms: int, key: bytes) -> bytes:
        return self._key(b"exp", b"%013d" % deadline_ms, key[len(self.prefix) :])

    def connect(self) -> defer.Deferred[None]:
        self._service.startService()
        return self._do(self._check_server)

    async def _check_server(self, client: TyrantProtocol) -> None:
        status = await client.stat()
        kind = status.get("type", "")
        if kind not in ("B+ tree", "on-memory tree"):
            self._refusal = NotATree(
                f"{self.url} serves a {kind or 'unknown'} database; the Tyrant store needs a"
                " B+ tree database: start ttserver on a file whose name ends in .tcb"
            )
            raise self._refusal

    def close(self) -> defer.Deferred[None]:
        self._protocol = None
        return self._service.stopService()

    async def _put_all(
        self, client: TyrantProtocol, records: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """
        Write the ``(key, value)`` records, one pipelined ``put`` each
        (``misc putlist`` adds duplicates on a B+ tree instead of
        replacing).
        """
        await gather([client.put(key, value) for key, value in records])

    async def _out_all(self, client: TyrantProtocol, keys: Sequence[bytes]) -> None:
        for start in range(0, len(keys), _BATCH):
            await client.misc(b"outlist", list(keys[start : start + _BATCH]))

    def _expiring(self, key: bytes, payload: bytes, seconds: float) -> list[tuple[bytes, bytes]]:
        """
        The records writing ``payload`` under ``key`` for ``seconds``: the
        framed value and its entry in the deadline index.
        """
        deadline = self._expiry(seconds)
        return [(key, _frame(deadline, payload)), (self._index_key(deadline, key), b"")]

    async def _get_live(self, client: TyrantProtocol, key: bytes) -> bytes | None:
        return _unframe(await client.get(key), self._now_ms())

    async def _get_many(self, client: TyrantProtocol, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        reads = [
            client.mget(list(keys[start : start + _BATCH])) for start in range(0, len(keys), _BATCH)
        ]
        for read in reads:
            found.update(await read)
        now = self._now_ms()
        live = {}
        for key, value in found.items():
            payload = _unframe(value, now)
            if payload is not None:
                live[key] = payload
        return live

    # IResultBackend

    def _taskset(self, taskset_id: str) -> str:
        return fitted_id(taskset_id, 100, _KEY_TEXT)

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        return self._do(lambda client: self._store_on(client, records))

    def _outcome_records(self, records: Sequence[OutcomeRecord]) -> list[tuple[bytes, bytes]]:
        check_sizes(
            ((record.task_id, record.document) for record in records),
            self.max_document_size,
            self.url,
        )
        writes = []
        for record in records:
            writes += self._expiring(self._key("result", record.task_id), record.document, self.ttl)
            if record.taskset is not None:
                taskset = self._taskset(record.taskset)
                kinds = ["done", "failed"] if record.failed else ["done"]
                for kind in kinds:
                    key = self._key("ts", taskset, kind, record.task_id)
                    writes += self._expiring(key, b"", self.ttl)
        return writes

    async def _store_on(self, client: TyrantProtocol, records: Sequence[OutcomeRecord]) -> None:
        await self._put_all(client, self._outcome_records(records))

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        async def mark(client: TyrantProtocol) -> None:
            check_sizes(records, self.max_document_size, self.url)
            keys = [self._key("result", task_id) for task_id, _ in records]
            deadline = self._expiry(self.ttl)
            kept = [
                client.putkeep(key, _frame(deadline, document))
                for key, (_, document) in zip(keys, records, strict=True)
            ]
            index = []
            for key, (_, document), write in zip(keys, records, kept, strict=True):
                if await write:
                    index.append((self._index_key(deadline, key), b""))
                elif await self._get_live(client, key) is None:
                    # An expired record the clean-up has not removed yet:
                    # replaced (no compare-and-set: best effort).
                    await self._put_all(client, self._expiring(key, document, self.ttl))
            await self._put_all(client, index)

        return self._do(mark)

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self.get_results([task_id]).addCallback(lambda found: found[0])

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        ids = list(task_ids)

        async def read(client: TyrantProtocol) -> list[bytes | None]:
            if not ids:
                return []
            keys = [self._key("result", task_id) for task_id in ids]
            found = await self._get_many(client, keys)
            return [found.get(key) for key in keys]

        return self._do(read)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        return self._do(
            lambda client: self._out_all(
                client, [self._key("result", task_id) for task_id in task_ids]
            )
        )

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        key = self._key("ts", self._taskset(taskset_id), "total")
        return self._do(
            lambda client: self._put_all(client, self._expiring(key, b"%d" % total, self.ttl))
        )

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        async def read(client: TyrantProtocol) -> TasksetState | None:
            taskset = self._taskset(taskset_id)
            total = client.get(self._key("ts", taskset, "total"))
            done = client.fwmkeys(self._key("ts", taskset, "done", b""))
            failed = client.fwmkeys(self._key("ts", taskset, "failed", b""))
            value = _unframe(await total, self._now_ms())
            counts = len(await done), len(await failed)
            if value is None:
                return None
            return TasksetState(int(value), *counts)

        return self._do(read)

    def delete_expired(self) -> defer.Deferred[int]:
        """
        Remove the records past their deadline, in batches of a thousand
        read from the deadline index; fires with how many outcomes were
        removed.  A record written again since its index entry keeps its
        later deadline and stays.
        """

        async def clean(client: TyrantProtocol) -> int:
            removed = 0
            start = self._key(b"exp", b"")
            result_prefix = self._key("result", b"")
            while True:
                now = self._now_ms()
                entries = await client.fwmkeys(start, _BATCH)
                due = []
                for entry in entries:
                    deadline, _, key = entry[len(start) :].partition(b":")
                    if not deadline.isdigit() or int(deadline) > now:
                        break
                    due.append((entry, self.prefix + key))
                if not due:
                    return removed
                found = await client.mget([key for _, key in due])
                gone = []
                for key, value in found.items():
                    deadline_ms = _deadline_of(value)
                    if deadline_ms and deadline_ms <= now:
                        gone.append(key)
                        removed += key.startswith(result_prefix)
                await self._out_all(client, gone + [entry for entry, _ in due])
                if len(due) < len(entries):
                    return removed

        return self._do(clean)

    # Leases as generations: records ``<kind>:<id>:<n>`` made with
    # ``putkeep``, each holding its lease's end in milliseconds (0 once
    # ended).  The highest is the fence.

    async def _fence(self, client: TyrantProtocol, base: bytes) -> tuple[int, int, list[int]]:
        """
        The fence under ``base`` (0 if none), its lease's end (0 if ended,
        lapsed or gone) and the older generations.
        """
        numbers = _generations(await client.fwmkeys(base), base)
        if not numbers:
            return 0, 0, []
        fence = numbers[-1]
        payload = await self._get_live(client, base + b"%d" % fence)
        until = int(payload.split(b" ", 1)[0]) if payload else 0
        return fence, (until if until > self._now_ms() else 0), numbers[:-1]

    async def _next_generation(
        self, client: TyrantProtocol, base: bytes, lease: float, owner: bytes, keep: float
    ) -> int | None:
        """
        Lease ``base`` for ``lease`` seconds as its next generation, unless
        its fence holds a live lease or another writer makes that
        generation first; answers the new generation.  The record lasts
        ``keep`` seconds past the lease.
        """
        fence, live, older = await self._fence(client, base)
        if live:
            return None
        until = self._expiry(lease)
        key = base + b"%d" % (fence + 1)
        deadline = self._expiry(lease + keep)
        payload = b"%d %s" % (until, owner)
        if not await client.putkeep(key, _frame(deadline, payload)):
            return None
        await self._put_all(client, [(self._index_key(deadline, key), b"")])
        # The generations before are no fence any more.
        await self._out_all(client, [base + b"%d" % number for number in [*older, fence] if number])
        return fence + 1

    async def _set_lease(
        self,
        client: TyrantProtocol,
        base: bytes,
        number: int,
        until: int,
        owner: bytes,
        keep: float,
    ) -> None:
        key = base + b"%d" % number
        deadline = self._expiry(keep) + max(until - self._now_ms(), 0)
        await self._put_all(
            client,
            [
                (key, _frame(deadline, b"%d %s" % (until, owner))),
                (self._index_key(deadline, key), b""),
            ],
        )

    # IScheduleStore

    def _slot_base(self, key: str) -> bytes:
        return self._key("slot", key, b"")

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        base = self._slot_base(key)

        async def claim(client: TyrantProtocol) -> SlotClaim:
            if await self._get_live(client, base + b"done") is not None:
                return SlotClaim.DONE
            won = await self._next_generation(client, base, lease, owner.encode(), self.ttl)
            if won is None:
                done = await self._get_live(client, base + b"done") is not None
                return SlotClaim.DONE if done else SlotClaim.HELD
            return SlotClaim.WON

        return self._do(claim)

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        base = self._slot_base(key)

        async def release(client: TyrantProtocol) -> None:
            fence, live, _ = await self._fence(client, base)
            if not live:
                return
            payload = await self._get_live(client, base + b"%d" % fence)
            if payload is not None and payload.split(b" ", 1)[1:] == [owner.encode()]:
                await self._set_lease(client, base, fence, 0, owner.encode(), self.ttl)

        return self._do(release)

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        async def commit(client: TyrantProtocol) -> None:
            await self._put_all(client, self._expiring(self._slot_base(key) + b"done", b"", keep))
            await client.addint(self._key("periodic", name, "count"), 1)
            last = await self._get_live(client, self._key("periodic", name, "last"))
            writes = [(self._key("periodic", name, "next"), _frame(0, b"%r" % next_run_at))]
            if last is None or float(last) < slot:
                writes.append((self._key("periodic", name, "last"), _frame(0, b"%r" % slot)))
            await self._put_all(client, writes)

        return self._do(commit)

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        return self._do(
            lambda client: client.put(
                self._key("periodic", name, "next"), _frame(0, b"%r" % next_run_at)
            )
        )

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        return self._do(
            lambda client: client.put(
                self._key("periodic", name, "enabled"), _frame(0, b"1" if enabled else b"0")
            )
        )

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        fields = ("enabled", "last", "next", "count")

        async def read(client: TyrantProtocol) -> dict[str, PeriodicState]:
            keys = {
                name: [self._key("periodic", name, field) for field in fields] for name in names
            }
            found = await client.mget([key for row in keys.values() for key in row]) if keys else {}
            states = {}
            for name, (enabled, last, next_at, count) in keys.items():
                if not any(key in found for key in (enabled, last, next_at, count)):
                    continue
                now = self._now_ms()
                flag, ran, due = (_unframe(found.get(key), now) for key in (enabled, last, next_at))
                # Read back through addint: its reply is big-endian, the
                # record itself is in the server's byte order.
                runs = await client.addint(count, 0) if count in found else 0
                states[name] = PeriodicState(
                    name,
                    flag != b"0",
                    float(ran) if ran is not None else None,
                    runs,
                    float(due) if due is not None else None,
                )
            return states

        return self._do(read)

    # IFencedLeases: a task's generations are ``claim:<task id>:<n>``.

    def _claim_base(self, task_id: str) -> bytes:
        return self._key("claim", task_id, b"")

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        async def take_one(client: TyrantProtocol, task_id: str) -> tuple[int | None, bytes | None]:
            result_key = self._key("result", task_id)
            document = await self._get_live(client, result_key)
            if holds_any(document, unless):
                return None, document
            base = self._claim_base(task_id)
            token = await self._next_generation(client, base, lease, b"", self.ttl)
            if token is not None:  # read again: a commit may have ended the last lease
                document = await self._get_live(client, result_key)
                if holds_any(document, unless):
                    await self._set_lease(client, base, token, 0, b"", self.ttl)
                    token = None
            return token, document

        async def take(client: TyrantProtocol) -> list[tuple[int | None, bytes | None]]:
            return await gather(
                [defer.Deferred.fromCoroutine(take_one(client, task_id)) for task_id in task_ids]
            )

        return self._do(take)

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        async def extend(client: TyrantProtocol) -> list[bool]:
            answers = []
            for task_id, token in claims:
                base = self._claim_base(task_id)
                fence, live, _ = await self._fence(client, base)
                if fence != token or not live:
                    answers.append(False)
                    continue
                await self._set_lease(client, base, token, self._expiry(lease), b"", self.ttl)
                # A newer generation made meanwhile wins over this renewal.
                newest = _generations(await client.fwmkeys(base), base)
                answers.append(newest[-1:] == [token])
            return answers

        return self._do(extend)

    async def _end_on(self, client: TyrantProtocol, claims: Sequence[tuple[str, int]]) -> None:
        for task_id, token in claims:
            base = self._claim_base(task_id)
            fence, live, _ = await self._fence(client, base)
            if fence == token and live:
                await self._set_lease(client, base, token, 0, b"", self.ttl)

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        return self._do(lambda client: self._end_on(client, claims))

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        async def commit(client: TyrantProtocol) -> list[bool]:
            check_sizes(
                ((record.task_id, record.document) for record in records),
                self.max_document_size,
                self.url,
            )
            answers = []
            for record, token in zip(records, tokens, strict=True):
                fence, _, _ = await self._fence(client, self._claim_base(record.task_id))
                answers.append(fence == token)
            done = [record for record, ok in zip(records, answers, strict=True) if ok]
            if done:
                await self._store_on(client, done)
                ended = [
                    (record.task_id, token)
                    for record, token, ok in zip(records, tokens, answers, strict=True)
                    if ok
                ]
                await self._end_on(client, ended)
                await client.misc(
                    b"outlist", [self._key("parked", record.task_id) for record in done]
                )
            return answers

        return self._do(commit)

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        async def park(client: TyrantProtocol) -> list[bool]:
            answers = []
            writes: list[tuple[bytes, bytes]] = []
            for task in parked:
                fence, live, _ = await self._fence(client, self._claim_base(task.task_id))
                held = fence == task.token and bool(live)
                if held:
                    key = self._key("parked", task.task_id)
                    writes += self._expiring(key, parked_value(task), self.ttl)
                answers.append(held)
            await self._put_all(client, writes)
            return answers

        return self._do(park)

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        async def find(client: TyrantProtocol) -> list[tuple[ParkedTask, bytes | None]]:
            base = self._key("parked", b"")
            keys = await client.fwmkeys(base)
            values = await self._get_many(client, keys)
            found: list[tuple[ParkedTask, bytes | None]] = []
            for key in keys:
                value = values.get(key)
                if value is None:  # expired: the clean-up removes it
                    continue
                task_id = key[len(base) :].decode("utf-8", "surrogatepass")
                _, live, _ = await self._fence(client, self._claim_base(task_id))
                if live:
                    continue
                document = await self._get_live(client, self._key("result", task_id))
                found.append((parked_from_value(task_id, value), document))
                if len(found) >= most:
                    break
            return found

        return self._do(find)

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        return self._do(
            lambda client: self._out_all(
                client, [self._key("parked", task_id) for task_id in task_ids]
            )
        )
