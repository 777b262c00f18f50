"""
Results in Redis, through txredisapi.

Each outcome is one string key, ``<prefix><task id>``, written with ``SET ...
EX ttl`` so Redis expires it by itself.  Writes of one batch go out in one
reactor turn on one connection, so they travel pipelined.

The store follows a Redis Sentinel set with a
``redis+sentinel://host:port,host:port,host:port/name/db`` URL (see
:py:mod:`twistedq.backends.redis_sentinel`).  With ``?replicas=N`` in the
URL (either scheme), a write that must survive a failover (an outcome, a
task's claim, a periodic slot's claim and commit) counts only once ``N``
replicas have it (``WAIT``): otherwise it fails, and the daemon writes it
again.  (A claim lost in a failover would fence its own outcome off.)

Redis takes any bytes in a value or a key (keys with a taskset id are
encoded from its text losslessly, lone surrogates included), but no value
larger than its ``proto-max-bulk-len`` (512 MiB by default), read from the
server when connecting: a larger document is refused with
:py:class:`~twistedq.backends.base.StoreRefused` before it is sent, since
Redis would answer a protocol error and close the connection, which other
requests in flight on it could fail with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import txredisapi
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
    BackendURLError,
    IClaimStore,
    IFencedLeases,
    IPendingRecords,
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
from twistedq.backends.claims import FencedClaims, parked_from_value, parked_value
from twistedq.backends.limits import MiB, check_sizes
from twistedq.backends.redis_sentinel import SCHEME as SENTINEL_SCHEME
from twistedq.backends.redis_sentinel import (
    NotReplicated,
    SentinelPrimary,
    SentinelURL,
    is_readonly,
    replicas_of,
)
from twistedq.backends.resp import FastCommands

__all__ = ["DEFAULT_MAX_BULK", "SCRIPT_BATCH", "RedisBackend"]

T = TypeVar("T")

#: Redis's largest value unless configured otherwise (``proto-max-bulk-len``).
DEFAULT_MAX_BULK = 512 * MiB

#: Words of Redis's answers that refuse a value for its size.
_SIZE_REFUSALS = (b"invalid bulk length", b"exceeds maximum allowed size")


_CLAIM_SLOT = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'won' end
if redis.call('get', KEYS[1]) == 'done' then return 'done' end
return 'held'
"""

_RELEASE_SLOT = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return 0
"""

_COMMIT_SLOT = """
redis.call('set', KEYS[1], 'done', 'PX', ARGV[1])
local last = tonumber(redis.call('hget', KEYS[2], 'last_run_at'))
if (not last) or tonumber(ARGV[2]) > last then
    redis.call('hset', KEYS[2], 'last_run_at', ARGV[2])
end
redis.call('hincrby', KEYS[2], 'total_run_count', 1)
redis.call('hset', KEYS[2], 'next_run_at', ARGV[3])
return 0
"""


# Pending records of published tasks: written where nothing is stored,
# taken back where the same pending document is still stored.

_MARK_SENT = """
local ttl = ARGV[1]
for i = 1, #KEYS do
    redis.call('set', KEYS[i], ARGV[i + 1], 'NX', 'EX', ttl)
end
return 0
"""

_UNMARK_SENT = """
for i = 1, #KEYS do
    if redis.call('get', KEYS[i]) == ARGV[i] then redis.call('del', KEYS[i]) end
end
return 0
"""

#: The most records one script call writes or takes back (a script holds
#: Redis for its run).
SCRIPT_BATCH = 1000


# Task claims.  Per task: the claim key (the token, expiring with the
# lease) and the fence key (the latest token, kept as long as results).

_TAKE_LEASES = """
local out = {}
local documents = {}
for i = 1, #KEYS, 3 do
    local document = redis.call('get', KEYS[i])
    local free = redis.call('exists', KEYS[i + 1]) == 0
    for j = 3, #ARGV do
        if free and document and string.find(document, ARGV[j], 1, true) then free = false end
    end
    local token = false
    if free then
        token = redis.call('incr', KEYS[i + 2])
        redis.call('expire', KEYS[i + 2], ARGV[2])
        redis.call('set', KEYS[i + 1], token, 'PX', ARGV[1])
        token = tostring(token)
        -- Nothing in the document stopped the lease: it is not sent back.
        if #ARGV > 2 then document = false end
    end
    -- One text of all the answers (token, "+" if a document follows), the
    -- documents after it: one reply element a task costs much to read.
    local answer = token or ''
    if document then
        answer = answer .. '+'
        documents[#documents + 1] = document
    end
    out[#out + 1] = answer
end
table.insert(documents, 1, table.concat(out, ','))
return documents
"""

_EXTEND_LEASES = """
local out = {}
for i = 1, #KEYS, 2 do
    local token = ARGV[(i + 1) / 2 + 2]
    if redis.call('get', KEYS[i]) == token and redis.call('get', KEYS[i + 1]) == token then
        redis.call('set', KEYS[i], token, 'PX', ARGV[1])
        redis.call('expire', KEYS[i + 1], ARGV[2])
        out[#out + 1] = 1
    else
        out[#out + 1] = 0
    end
end
return out
"""

_END_LEASES = """
for i = 1, #KEYS, 2 do
    if redis.call('get', KEYS[i + 1]) == ARGV[(i + 1) / 2] then
        redis.call('del', KEYS[i])
    end
end
return 0
"""

_COMMIT_FENCED = """
local ttl = ARGV[1]
local out = {}
local ids = {}
for i = 1, #KEYS, 3 do
    local a = 4 + (i - 1) / 3 * 5
    local id = ARGV[a + 2]
    if redis.call('get', KEYS[i + 2]) == ARGV[a] then
        redis.call('set', KEYS[i], ARGV[a + 1], 'EX', ttl)
        redis.call('del', KEYS[i + 1])
        redis.call('hdel', ARGV[3], id)
        for _, set in ipairs({ARGV[a + 3], ARGV[a + 4]}) do
            if set ~= '' then
                redis.call('sadd', set, id)
                redis.call('expire', set, ttl)
            end
        end
        out[#out + 1] = '1'
        ids[#ids + 1] = id
    else
        out[#out + 1] = '0'
    end
end
if #ids > 0 then
    redis.call('publish', ARGV[2], table.concat(ids, ','))
end
-- One text of 1s and 0s, not one reply element a task.
return table.concat(out)
"""


# Parked messages: one hash, task id to "<token>\n<queue>\n<body>"; a
# message is parked only under its live claim.

_PARK_LEASED = """
local out = {}
for i = 1, #KEYS do
    local token = ARGV[i * 2]
    if redis.call('get', KEYS[i]) == token then
        redis.call('hset', ARGV[1], ARGV[i * 2 + 1], ARGV[#KEYS * 2 + 1 + i])
        out[#out + 1] = 1
    else
        out[#out + 1] = 0
    end
end
return out
"""

_UNLEASED_PARKED = """
local out = {}
local most = tonumber(ARGV[1]) * 3
local prefix = ARGV[2]
local cursor = '0'
repeat
    local scan = redis.call('hscan', KEYS[1], cursor, 'COUNT', 100)
    cursor = scan[1]
    local fields = scan[2]
    for i = 1, #fields, 2 do
        local id = fields[i]
        if #out < most and redis.call('exists', prefix .. 'claim:' .. id) == 0 then
            out[#out + 1] = id
            out[#out + 1] = fields[i + 1]
            out[#out + 1] = redis.call('get', prefix .. id)
        end
    end
until cursor == '0' or #out >= most
return out
"""


class StoreProtocol(FastCommands, txredisapi.RedisProtocol):
    """
    The store's connections: txredisapi's, with commands built in one pass.
    """


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases, IPendingRecords)
class RedisBackend(FencedClaims):
    """
    A result backend on a Redis server.

    :ivar max_document_size: the largest document it sends, in bytes: the
        server's ``proto-max-bulk-len`` once connected (512 MiB where the
        server does not tell it), unless given.
    :ivar sentinel: where the sentinels are when the primary is found
        through them (``host``, ``port`` and ``password`` are then unused).
    :ivar replicas: how many replicas must have an outcome before it
        counts as written (0: the primary's answer is enough).
    :ivar replica_wait: how long to wait for them, in seconds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        ttl: int = DEFAULT_RESULT_TTL,
        prefix: str = "twistedq:result:",
        pool_size: int = 1,
        timeout: float = 10.0,
        clock: Any = None,
        max_document_size: int | None = None,
        sentinel: SentinelURL | None = None,
        replicas: int = 0,
        replica_wait: float = 1.0,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.timeout = timeout
        self.host, self.port, self.db = host, port, db
        self.url = f"redis://{host}:{port}/{db}"
        self._password = password
        self.sentinel = sentinel
        self._primary: SentinelPrimary | None = None
        if sentinel is not None:
            self.url, self.db, self._password = str(sentinel), sentinel.db, sentinel.password
        self.replicas, self.replica_wait = replicas, replica_wait
        if replicas:
            self.url += f"?replicas={replicas}"
            # WAIT counts the writes of its own connection: one connection.
            self.pool_size = 1
        self.ttl = ttl
        self.prefix = prefix
        self.pool_size = pool_size
        self.channel = f"{prefix}done"
        self._redis: Any = None
        self._subscriber: _DoneSubscriberFactory | None = None
        self._waiters: dict[str, list[defer.Deferred[None]]] = {}
        self._max_given = max_document_size
        self.max_document_size = max_document_size or DEFAULT_MAX_BULK

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> RedisBackend:
        """
        Build from ``redis://[:password@]host[:port][/db]``, or
        ``redis+sentinel://[:password@]host:port,host:port,.../name[/db]``.
        """
        parts = urlsplit(url)
        replicas = replicas_of(url)
        if parts.scheme == SENTINEL_SCHEME:
            sentinel = SentinelURL.parse(url)
            return cls(ttl=ttl, clock=reactor, sentinel=sentinel, replicas=replicas)
        try:
            db = int(parts.path[1:] or 0)
            port = parts.port or 6379
        except ValueError:
            raise BackendURLError(f"bad redis URL {url!r}") from None
        host = parts.hostname or "127.0.0.1"
        return cls(host, port, db, parts.password, ttl=ttl, clock=reactor, replicas=replicas)

    def connect(self) -> defer.Deferred[None]:
        if self.sentinel is not None:
            self._primary = SentinelPrimary(self.sentinel)
            self._redis = self._primary.pool(
                self.pool_size, charset=None, convertNumbers=False, replyTimeout=30
            )
        else:
            self._redis = txredisapi.lazyConnectionPool(
                self.host,
                self.port,
                dbid=self.db,
                poolsize=self.pool_size,
                reconnect=True,
                charset=None,
                password=self._password,
                convertNumbers=False,
                connectTimeout=10,
                replyTimeout=30,
            )
            # Its connections are made later, on the reactor: they are ours.
            self._redis._factory.protocol = StoreProtocol
        return defer.Deferred.fromCoroutine(self._connected())

    async def _connected(self) -> None:
        await self._redis._connected
        await self._read_limit()

    async def _read_limit(self, attempts: int = 1) -> None:
        """
        Learn the server's ``proto-max-bulk-len`` (unless a maximum was
        given): when connecting, and again after the server refused a
        value for its size (the limit was lowered since; the server closed
        that connection, so the read waits for the next, half a second
        apart, ``attempts`` times at most).
        """
        if self._max_given is not None:
            return
        for attempt in range(attempts):
            if attempt:
                await deferLater(self.clock, 0.5, lambda: None)
            try:
                reply = await self._redis.execute_command("CONFIG", "GET", "proto-max-bulk-len")
                self.max_document_size = int(reply[1])
                return
            except txredisapi.ConnectionError:
                continue
            except (txredisapi.ResponseError, ValueError, TypeError, IndexError):
                return  # CONFIG renamed or not allowed: the last limit known stays

    def _taskset_keys(self, taskset_id: str) -> tuple[bytes, bytes, bytes]:
        # Keys are bytes: any text maps to its own key, lone surrogates too.
        base = f"{self.prefix}taskset:{taskset_id}".encode("utf-8", "surrogatepass")
        return base, base + b":done", base + b":failed"

    def _check(self, documents: Sequence[tuple[str, bytes]]) -> None:
        check_sizes(documents, self.max_document_size, self.url)

    def _refused(self, d: defer.Deferred[T], task_ids: Sequence[str]) -> defer.Deferred[T]:
        """
        Make Redis's own refusal of a value for its size (a limit lowered
        since connecting) a StoreRefused, naming the task where the write
        was one task's.
        """

        def refused(failure: Failure) -> Failure:
            failure.trap(txredisapi.ResponseError)
            text = str(failure.value).encode("utf-8", "replace")
            if any(words in text for words in _SIZE_REFUSALS):
                # Checked before sending from now on: the refusal closed the
                # connection under the other requests on it.
                reading = defer.Deferred.fromCoroutine(self._read_limit(attempts=20))
                reading.addErrback(lambda f: None)
                task_id = task_ids[0] if len(task_ids) == 1 else None
                raise StoreRefused(f"{self.url} refused a value: {failure.value}", task_id)
            return failure

        return d.addErrback(refused)

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        try:
            self._check([(record.task_id, record.document) for record in records])
        except StoreRefused:
            return defer.fail()
        redis, prefix, ttl = self._redis, self.prefix, self.ttl
        writes = []
        for record in records:
            writes.append(redis.set(prefix + record.task_id, record.document, expire=ttl))
            if record.taskset is not None:
                _, done, failed = self._taskset_keys(record.taskset)
                writes.append(redis.sadd(done, record.task_id))
                writes.append(redis.expire(done, ttl))
                if record.failed:
                    writes.append(redis.sadd(failed, record.task_id))
                    writes.append(redis.expire(failed, ttl))
        if records:
            writes.append(
                redis.publish(self.channel, ",".join(record.task_id for record in records))
            )
        written = self._replicated(_all(writes))
        return self._timed(self._refused(written, [record.task_id for record in records]))

    def _replicated(self, written: defer.Deferred[T]) -> defer.Deferred[T]:
        """
        ``written``, once ``replicas`` replicas have it (``WAIT``, sent on
        the same connection right after the write).

        :raises NotReplicated: fewer replicas had it after ``replica_wait``.
        """
        if not self.replicas:
            return written
        waited = self._redis.execute_command(
            "WAIT", self.replicas, max(1, int(self.replica_wait * 1000))
        )

        def enough(answers: list[Any]) -> T:
            result, count = answers
            if int(count) < self.replicas:
                raise NotReplicated(
                    f"{self.url}: {int(count)} of {self.replicas} replicas had the write "
                    f"after {self.replica_wait} s"
                )
            return result

        return gather([written, waited]).addCallback(enough)

    def _timed(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        """
        Fail with :py:obj:`twisted.internet.defer.TimeoutError` when Redis
        does not answer within ``timeout`` seconds (txredisapi would hold a
        command until Redis is back).  The command itself is left to finish.
        """
        out: defer.Deferred[Any] = defer.Deferred()

        def timed_out() -> None:
            if not out.called:
                out.errback(defer.TimeoutError(f"{self.url} did not answer in {self.timeout} s"))

        call = self.clock.callLater(self.timeout, timed_out)

        def settle(result: Any) -> None:
            if call.active():
                call.cancel()
            if isinstance(result, Failure) and self._primary is not None and is_readonly(result):
                self._primary.drop_connections()  # a primary no longer
            if out.called:
                return  # timed out already: the late answer is dropped
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)

        d.addBoth(settle)
        return out

    # notifications

    def waiter(self, task_id: str) -> defer.Deferred[None]:
        """
        A Deferred that fires when an outcome for ``task_id`` is stored
        (announced on the ``channel``), starting the subscription on first
        use.  Cancel it to stop waiting.  A notification can be missed while
        the subscription (re)connects: every waiter fires when it is in place
        again (and the first time), so callers read the store after
        registering and again when woken, and re-read now and then.
        """
        if self._subscriber is None:
            self._subscriber = _DoneSubscriberFactory(
                self.channel, self._notify, self._password, self._subscribed
            )
            if self._primary is not None:
                self._primary.follow(self._subscriber)
            else:
                self._subscriber.startConnecting(
                    txredisapi._makeEndpoint(self.host, self.port, 10, None)
                )

        def forget(d: defer.Deferred[None]) -> None:
            waiting = self._waiters.get(task_id)
            if waiting is not None and d in waiting:
                waiting.remove(d)
                if not waiting:
                    del self._waiters[task_id]

        d: defer.Deferred[None] = defer.Deferred(forget)
        self._waiters.setdefault(task_id, []).append(d)
        return d

    def _subscribed(self) -> None:
        """
        The subscription is in place (again): wake every waiter, since its
        outcome may have been announced before, to read the store again.
        """
        waiters, self._waiters = self._waiters, {}
        for waiting in waiters.values():
            for d in waiting:
                d.callback(None)

    def _notify(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            message = message.decode("ascii", "replace")
        for task_id in message.split(","):
            for d in self._waiters.pop(task_id, []):
                d.callback(None)

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        """
        One script call per :py:data:`SCRIPT_BATCH` records (``SET NX EX``
        each).
        """
        try:
            self._check(records)
        except StoreRefused:
            return defer.fail()
        written = self._scripted(_MARK_SENT, records, [self.ttl])
        return self._timed(self._refused(written, [task_id for task_id, _ in records]))

    def unmark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        return self._timed(self._scripted(_UNMARK_SENT, records, []))

    def _scripted(
        self, script: str, records: Sequence[tuple[str, bytes]], head: list[Any]
    ) -> defer.Deferred[None]:
        """
        Run ``script`` with the records' keys and ``head`` then their
        documents as arguments, :py:data:`SCRIPT_BATCH` records a call.
        """
        calls = []
        prefix = self.prefix
        for start in range(0, len(records), SCRIPT_BATCH):
            chunk = records[start : start + SCRIPT_BATCH]
            keys = [prefix + task_id for task_id, _ in chunk]
            calls.append(self._redis.eval(script, keys, [*head, *(doc for _, doc in chunk)]))
        return _all(calls)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        if not task_ids:
            return defer.succeed(None)
        return self._timed(
            _all([self._redis.delete([self.prefix + task_id for task_id in task_ids])])
        )

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        key, _, _ = self._taskset_keys(taskset_id)
        return self._timed(_all([self._redis.set(key, b"%d" % total, expire=self.ttl)]))

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        key, done, failed = self._taskset_keys(taskset_id)
        reads = [self._redis.get(key), self._redis.scard(done), self._redis.scard(failed)]

        def state(values: list[Any]) -> TasksetState | None:
            total, completed, failures = values
            if total is None:
                return None
            return TasksetState(int(total), int(completed), int(failures))

        return self._timed(gather(reads).addCallback(state))

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self._timed(self._redis.get(self.prefix + task_id))

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        if not task_ids:
            return defer.succeed([])
        return self._timed(self._redis.mget([self.prefix + task_id for task_id in task_ids]))

    # task claims

    def _claim_keys(self, task_id: str) -> list[str]:
        prefix = self.prefix
        return [prefix + task_id, f"{prefix}claim:{task_id}", f"{prefix}fence:{task_id}"]

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        keys = [key for task_id in task_ids for key in self._claim_keys(task_id)]
        taken = self._replicated(
            self._redis.eval(_TAKE_LEASES, keys, [_ms(lease), self.ttl, *unless])
        )

        def answers(reply: list[Any]) -> list[tuple[int | None, bytes | None]]:
            documents = iter(reply[1:])
            found: list[tuple[int | None, bytes | None]] = []
            for answer in _text(reply[0]).split(",") if task_ids else ():
                document = None
                if answer.endswith("+"):
                    answer, document = answer[:-1], next(documents)
                found.append((int(answer) if answer else None, document))
            return found

        return self._timed(taken.addCallback(answers))

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        keys = [key for task_id, _ in claims for key in self._claim_keys(task_id)[1:]]
        renewed = self._redis.eval(
            _EXTEND_LEASES, keys, [_ms(lease), self.ttl, *(str(token) for _, token in claims)]
        )
        return self._timed(renewed.addCallback(lambda answers: [bool(a) for a in answers]))

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        keys = [key for task_id, _ in claims for key in self._claim_keys(task_id)[1:]]
        released = self._redis.eval(_END_LEASES, keys, [str(token) for _, token in claims])
        return self._timed(released.addCallback(lambda _: None))

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        try:
            self._check([(record.task_id, record.document) for record in records])
        except StoreRefused:
            return defer.fail()
        keys: list[str] = []
        arguments: list[Any] = [self.ttl, self.channel, self._parked_key]
        for record, token in zip(records, tokens, strict=True):
            keys.extend(self._claim_keys(record.task_id))
            done = failed = b""
            if record.taskset is not None:
                _, done, failed = self._taskset_keys(record.taskset)
                failed = failed if record.failed else b""
            arguments.extend([str(token), record.document, record.task_id, done, failed])
        committed = self._replicated(self._redis.eval(_COMMIT_FENCED, keys, arguments))
        committed = self._refused(committed, [record.task_id for record in records])
        return self._timed(committed.addCallback(lambda answers: _flags(answers, len(records))))

    @property
    def _parked_key(self) -> str:
        return f"{self.prefix}parked"

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        keys = [self._claim_keys(task.task_id)[1] for task in parked]  # the live claim
        arguments: list[Any] = [self._parked_key]
        for task in parked:
            arguments.extend([str(task.token), task.task_id])
        arguments.extend(parked_value(task) for task in parked)
        done = self._redis.eval(_PARK_LEASED, keys, arguments)
        return self._timed(done.addCallback(lambda answers: [bool(a) for a in answers]))

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        found = self._redis.eval(_UNLEASED_PARKED, [self._parked_key], [most, self.prefix])

        def parked(flat: list[Any]) -> list[tuple[ParkedTask, bytes | None]]:
            return [
                (parked_from_value(_text(task_id), value), document)
                for task_id, value, document in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
            ]

        return self._timed(found.addCallback(parked))

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        if not task_ids:
            return defer.succeed(None)
        dropped = self._redis.hdel(self._parked_key, list(task_ids))
        return self._timed(dropped.addCallback(lambda _: None))

    # periodic schedules: a key per claimed slot, a hash per task

    def _slot_key(self, key: str) -> str:
        return f"{self.prefix}slot:{key}"

    def _periodic_key(self, name: str) -> str:
        return f"{self.prefix}periodic:{name}"

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        claimed = self._replicated(
            self._redis.eval(_CLAIM_SLOT, [self._slot_key(key)], [owner, max(1, int(lease * 1000))])
        )
        return self._timed(claimed.addCallback(lambda found: SlotClaim(_text(found))))

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        released = self._redis.eval(_RELEASE_SLOT, [self._slot_key(key)], [owner])
        return self._timed(released.addCallback(lambda _: None))

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        committed = self._replicated(
            self._redis.eval(
                _COMMIT_SLOT,
                [self._slot_key(key), self._periodic_key(name)],
                [max(1, int(keep * 1000)), repr(slot), repr(next_run_at)],
            )
        )
        return self._timed(committed.addCallback(lambda _: None))

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        noted = self._redis.hset(self._periodic_key(name), "next_run_at", repr(next_run_at))
        return self._timed(noted.addCallback(lambda _: None))

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        reads = [self._redis.hgetall(self._periodic_key(name)) for name in names]

        def states(found: list[dict[bytes, bytes]]) -> dict[str, PeriodicState]:
            return {
                name: _periodic_state(name, {_text(k): _text(v) for k, v in fields.items()})
                for name, fields in zip(names, found, strict=True)
                if fields
            }

        return self._timed(gather(reads).addCallback(states))

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        written = self._redis.hset(self._periodic_key(name), "enabled", "1" if enabled else "0")
        return self._timed(written.addCallback(lambda _: None))

    def close(self) -> defer.Deferred[None]:
        if self._subscriber is not None:
            subscriber, self._subscriber = self._subscriber, None
            subscriber.disconnect()
        closing = []
        if self._primary is not None:
            primary, self._primary = self._primary, None
            closing.append(primary.disconnect())
        if self._redis is not None:
            redis, self._redis = self._redis, None
            closing.append(redis.disconnect())
        return gather(closing).addCallback(lambda _: None)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _flags(answer: bytes | str, count: int) -> list[bool]:
    """
    The answers of a script that returns one text of ``1`` and ``0``
    characters, one a record.
    """
    text = _text(answer)
    if len(text) != count:
        raise ValueError(f"the store answered {count} writes with {text!r}")
    return [flag == "1" for flag in text]


def _periodic_state(name: str, fields: dict[str, str]) -> PeriodicState:
    def number(field: str) -> float | None:
        value = fields.get(field)
        return None if value is None else float(value)

    return PeriodicState(
        name,
        enabled=fields.get("enabled", "1") != "0",
        last_run_at=number("last_run_at"),
        total_run_count=int(fields.get("total_run_count", 0)),
        next_run_at=number("next_run_at"),
    )


def _all(writes: list[defer.Deferred[Any]]) -> defer.Deferred[None]:
    return gather(writes).addCallback(lambda _: None)


class _DoneSubscriber(txredisapi.SubscriberProtocol):
    """
    Subscribes to the outcome channel on every (re)connection.
    """

    def connectionMade(self) -> Any:
        d = txredisapi.SubscriberProtocol.connectionMade(self)
        d.addCallback(lambda _: self.subscribe(self.factory.channel))
        d.addCallback(lambda _: self.factory.on_subscribed())
        # The reply to SUBSCRIBE is waited for until the connection
        # closes: a close is no error (it was printed at interpreter exit).
        d.addErrback(lambda failure: failure.trap(txredisapi.ConnectionError) and None)
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.on_message(message)


class _DoneSubscriberFactory(txredisapi.SubscriberFactory):
    protocol = _DoneSubscriber

    def __init__(
        self, channel: str, on_message: Any, password: str | None, on_subscribed: Any
    ) -> None:
        txredisapi.SubscriberFactory.__init__(self, isLazy=True)
        self.password = password
        self.channel = channel
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.continueTrying = True
