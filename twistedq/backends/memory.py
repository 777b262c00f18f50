"""
Results, schedules and claims in this process's memory: ``memory://``.

For tests, demos and embedded use, where outcomes need not outlive the
process nor be seen by other processes: each :py:class:`MemoryBackend` is
a store of its own, shared only by those handed the same object.  Expiry
and leases follow the clock it is given, so a test drives them with
:py:class:`twisted.internet.task.Clock`.

It is also the fake store of the unit tests, with a small control
surface for outages: :py:meth:`MemoryBackend.set_unavailable` makes every
call fail, and :py:meth:`MemoryBackend.pause` holds calls until
:py:meth:`MemoryBackend.resume`, so a test can see a write in flight; one
held call can be answered, or failed, alone
(:py:attr:`MemoryBackend.held`).  :py:meth:`MemoryBackend.refuse` makes it
refuse one task's outcome for good, as a real store refuses a value over
its limit (:py:class:`~twistedq.backends.base.StoreRefused`).  It records
every call made to it
(:py:attr:`MemoryBackend.calls`) and every outcome it wrote
(:py:attr:`MemoryBackend.writes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
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
)
from twistedq.backends.claims import FencedClaims, holds_any
from twistedq.backends.limits import check_sizes

__all__ = ["Call", "HeldCall", "MemoryBackend", "Write"]

T = TypeVar("T")
V = TypeVar("V")


class _Lapsing(Generic[V]):
    """
    Values that lapse at a time of the clock's: a lapsed one reads as
    missing, and is forgotten by :py:meth:`purge`.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._items: dict[str, tuple[V, float]] = {}

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        return item[0] if item is not None and item[1] > self._clock.seconds() else None

    def put(self, key: str, value: V, seconds: float) -> None:
        self._items[key] = (value, self._clock.seconds() + seconds)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def live(self) -> dict[str, V]:
        now = self._clock.seconds()
        return {key: value for key, (value, until) in self._items.items() if until > now}

    def purge(self) -> int:
        """
        Forget the lapsed values; answers how many.
        """
        live = {key: item for key, item in self._items.items() if item[1] > self._clock.seconds()}
        removed = len(self._items) - len(live)
        self._items = live
        return removed


class Call(NamedTuple):
    """
    A call made to a :py:class:`MemoryBackend`: the method's name and its
    arguments as given.  Claims are made of the store's steps, so their
    calls are those of :py:class:`~twistedq.backends.base.IFencedLeases`.
    """

    name: str
    args: tuple[Any, ...]


class Write(NamedTuple):
    """
    An outcome a :py:class:`MemoryBackend` wrote, with the fencing token
    it was committed with (None when stored by ``store_results``).
    """

    record: OutcomeRecord
    token: int | None = None


class HeldCall:
    """
    A call that :py:meth:`MemoryBackend.pause` holds, unrun and unanswered.

    :ivar call: the call's name and arguments.
    """

    def __init__(
        self, store: MemoryBackend, call: Call, step: Callable[[], Any], d: defer.Deferred[Any]
    ) -> None:
        self.call = call
        self._store = store
        self._step = step
        self._d = d

    def __repr__(self) -> str:
        return f"<HeldCall {self.call.name}{self.call.args!r}>"

    def answer(self) -> None:
        """
        Run this call now and answer it (with the error of
        :py:meth:`MemoryBackend.set_unavailable`, if set); the other held
        calls stay held.
        """
        self._store._unhold(self)
        self._store._answer(self._step).chainDeferred(self._d)

    def fail(self, error: BaseException) -> None:
        """
        Answer this call with ``error``, without running it; the other held
        calls stay held.
        """
        self._store._unhold(self)
        self._d.errback(error)


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases, IPendingRecords)
class MemoryBackend(FencedClaims):
    """
    A result store in memory.

    :param clock: times expiry and leases (the global reactor if not given).
    :param ttl: seconds an outcome, a pending record or a taskset is kept.
    :ivar max_document_size: the largest document it takes, in bytes;
        None (the default) for no limit.  A larger one is refused with
        :py:class:`~twistedq.backends.base.StoreRefused`, as the other
        stores refuse a document over their limit.
    :ivar calls: every call made to the store but :py:meth:`close`, in the
        order made, whether answered at once, held or failed.
    :ivar writes: every outcome written, in the order written.
    """

    def __init__(self, clock: IReactorTime | None = None, ttl: int = DEFAULT_RESULT_TTL) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = IReactorTime(reactor)
        self.clock = clock
        self.url = "memory://"
        self.ttl = ttl
        self.max_document_size: int | None = None
        self._results: _Lapsing[bytes] = _Lapsing(clock)
        self._tasksets: _Lapsing[int] = _Lapsing(clock)
        self._members: _Lapsing[dict[str, bool]] = _Lapsing(clock)  # id: failed
        self._slots: _Lapsing[tuple[str, bool]] = _Lapsing(clock)  # owner, done
        self._periodic: dict[str, PeriodicState] = {}
        self._fences: _Lapsing[int] = _Lapsing(clock)
        self._leases: _Lapsing[int] = _Lapsing(clock)
        self._parked: dict[str, ParkedTask] = {}
        self._error: BaseException | None = None
        self._held: list[HeldCall] | None = None
        self._refused: dict[str, tuple[bytes | None, str]] = {}  # id: document, reason
        self.calls: list[Call] = []
        self.writes: list[Write] = []

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> MemoryBackend:
        """
        Build from ``memory://``: a new, empty store timed by ``reactor``.
        """
        return cls(reactor, ttl)

    # the controls

    def set_unavailable(self, error: BaseException) -> None:
        """
        From now on every call but :py:meth:`close` fails with ``error``
        and changes nothing, until :py:meth:`set_available`.
        """
        self._error = error

    def set_available(self) -> None:
        """
        Answer calls again.
        """
        self._error = None

    def refuse(
        self, task_id: str, reason: str = "refused by the test", document: bytes | None = None
    ) -> None:
        """
        Refuse an outcome of ``task_id`` for good: ``document`` or, if not
        given, the first document written for the task from now on.  A
        write of it (``store_results``, ``commit_outcomes``) fails with
        :py:class:`~twistedq.backends.base.StoreRefused` (``reason``, the
        task id) and writes nothing of its batch, however often it is
        written; the store stays available, and another document for the
        task (the FAILURE stored in its place) is written as usual.
        """
        self._refused[task_id] = (document, reason)

    def pause(self) -> None:
        """
        Hold every call but :py:meth:`close`, unrun and unanswered, until
        :py:meth:`resume`.
        """
        if self._held is None:
            self._held = []

    def resume(self) -> None:
        """
        Run the held calls, and those they make meanwhile, in the order they
        were made, answering each (with the error of
        :py:meth:`set_unavailable`, if set by then); then answer calls at
        once again.
        """
        while self._held:
            self._held[0].answer()
        self._held = None

    @property
    def waiting(self) -> int:
        """
        How many calls :py:meth:`pause` holds.
        """
        return len(self._held or ())

    @property
    def held(self) -> list[HeldCall]:
        """
        The calls :py:meth:`pause` holds, in the order made: each can be
        answered, or failed, before the others.
        """
        return list(self._held or ())

    @property
    def results(self) -> dict[str, bytes]:
        """
        The outcomes (and pending records) stored and not expired, by task
        id: a copy, read without going through the controls.
        """
        return self._results.live()

    @property
    def fences(self) -> dict[str, int]:
        """
        The latest fencing token of each task, read as :py:attr:`results` is.
        """
        return self._fences.live()

    @property
    def leases(self) -> dict[str, int]:
        """
        The token of each task's live lease, read as :py:attr:`results` is.
        """
        return self._leases.live()

    @property
    def parked(self) -> dict[str, ParkedTask]:
        """
        The parked messages by task id, read as :py:attr:`results` is.
        """
        return dict(self._parked)

    def _call(self, call: Call, step: Callable[[], T]) -> defer.Deferred[T]:
        self.calls.append(call)
        if self._held is None:
            return self._answer(step)
        d: defer.Deferred[T] = defer.Deferred()
        self._held.append(HeldCall(self, call, step, d))
        return d

    def _unhold(self, held: HeldCall) -> None:
        assert self._held is not None
        self._held.remove(held)

    def _answer(self, step: Callable[[], T]) -> defer.Deferred[T]:
        if self._error is not None:
            return defer.fail(self._error)
        return defer.execute(step)

    # IResultBackend

    def connect(self) -> defer.Deferred[None]:
        return self._call(Call("connect", ()), lambda: None)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        return self._call(Call("store_results", (records,)), lambda: self._store(records))

    def _check(self, records: Sequence[OutcomeRecord]) -> None:
        """
        Raise StoreRefused if a record of the batch is refused.
        """
        check_sizes(
            ((record.task_id, record.document) for record in records),
            self.max_document_size,
            self.url,
        )
        for record in records:
            if record.task_id in self._refused:
                document, reason = self._refused[record.task_id]
                if document is None:
                    document = record.document
                    self._refused[record.task_id] = (document, reason)
                if record.document == document:
                    raise StoreRefused(reason, record.task_id)

    def _store(self, records: Sequence[OutcomeRecord], tokens: Sequence[int] | None = None) -> None:
        self._check(records)
        fences = tokens if tokens is not None else [None] * len(records)
        for record, token in zip(records, fences, strict=True):
            self.writes.append(Write(record, token))
            self._results.put(record.task_id, record.document, self.ttl)
            if record.taskset is not None:
                members = self._members.get(record.taskset) or {}
                members[record.task_id] = members.get(record.task_id, False) or record.failed
                self._members.put(record.taskset, members, self.ttl)

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        def mark() -> None:
            check_sizes(records, self.max_document_size, self.url)
            for task_id, document in records:
                if self._results.get(task_id) is None:
                    self._results.put(task_id, document, self.ttl)

        return self._call(Call("mark_sent", (records,)), mark)

    def unmark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        def unmark() -> None:
            for task_id, document in records:
                if self._results.get(task_id) == document:
                    self._results.pop(task_id)

        return self._call(Call("unmark_sent", (records,)), unmark)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        def delete() -> None:
            for task_id in task_ids:
                self._results.pop(task_id)

        return self._call(Call("forget", (task_ids,)), delete)

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        call = Call("create_taskset", (taskset_id, total))
        return self._call(call, lambda: self._tasksets.put(taskset_id, total, self.ttl))

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        def read() -> TasksetState | None:
            total = self._tasksets.get(taskset_id)
            if total is None:
                return None
            members = self._members.get(taskset_id) or {}
            return TasksetState(total, len(members), sum(members.values()))

        return self._call(Call("get_taskset", (taskset_id,)), read)

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self._call(Call("get_result", (task_id,)), lambda: self._results.get(task_id))

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        call = Call("get_results", (task_ids,))
        return self._call(call, lambda: [self._results.get(task_id) for task_id in task_ids])

    def delete_expired(self) -> defer.Deferred[int]:
        """
        Forget what has lapsed; fires with how many outcomes.
        """

        def purge() -> int:
            for lapsing in (self._tasksets, self._members, self._slots, self._fences):
                lapsing.purge()
            return self._results.purge()

        return self._call(Call("delete_expired", ()), purge)

    # IScheduleStore

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        def claim() -> SlotClaim:
            slot = self._slots.get(key)
            if slot is None:
                self._slots.put(key, (owner, False), lease)
                return SlotClaim.WON
            return SlotClaim.DONE if slot[1] else SlotClaim.HELD

        return self._call(Call("claim_slot", (key, owner, lease)), claim)

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        def release() -> None:
            if self._slots.get(key) == (owner, False):
                self._slots.pop(key)

        return self._call(Call("release_slot", (key, owner)), release)

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        def commit() -> None:
            self._slots.put(key, ("", True), keep)
            state = self._periodic.get(name, PeriodicState(name))
            last = state.last_run_at
            self._periodic[name] = state._replace(
                last_run_at=slot if last is None else max(last, slot),
                total_run_count=state.total_run_count + 1,
                next_run_at=next_run_at,
            )

        return self._call(Call("commit_slot", (key, name, slot, next_run_at, keep)), commit)

    def _change_state(self, call: Call, name: str, **change: Any) -> defer.Deferred[None]:
        def change_state() -> None:
            self._periodic[name] = self._periodic.get(name, PeriodicState(name))._replace(**change)

        return self._call(call, change_state)

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        return self._change_state(
            Call("note_schedule", (name, next_run_at)), name, next_run_at=next_run_at
        )

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        return self._change_state(
            Call("set_periodic_enabled", (name, enabled)), name, enabled=enabled
        )

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        call = Call("get_periodic_states", (names,))
        return self._call(
            call, lambda: {n: self._periodic[n] for n in names if n in self._periodic}
        )

    # IFencedLeases: a fence and a lease per task, each lapsing by the clock

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        def take() -> list[tuple[int | None, bytes | None]]:
            answers: list[tuple[int | None, bytes | None]] = []
            for task_id in task_ids:
                document, token = self._results.get(task_id), None
                if self._leases.get(task_id) is None and not holds_any(document, unless):
                    token = (self._fences.get(task_id) or 0) + 1
                    self._fences.put(task_id, token, self.ttl)
                    self._leases.put(task_id, token, lease)
                answers.append((token, document))
            return answers

        return self._call(Call("take_leases", (task_ids, lease, unless)), take)

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        def extend() -> list[bool]:
            answers = []
            for task_id, token in claims:
                held = self._leases.get(task_id) == token
                if held:
                    self._leases.put(task_id, token, lease)
                    self._fences.put(task_id, token, self.ttl)
                answers.append(held)
            return answers

        return self._call(Call("extend_leases", (claims, lease)), extend)

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        def end() -> None:
            for task_id, token in claims:
                if self._fences.get(task_id) == token:
                    self._leases.pop(task_id)

        return self._call(Call("end_leases", (claims,)), end)

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        def commit() -> list[bool]:
            self._check(records)
            answers = [
                self._fences.get(record.task_id) == token
                for record, token in zip(records, tokens, strict=True)
            ]
            done = [record for record, ok in zip(records, answers, strict=True) if ok]
            self._store(done, [token for token, ok in zip(tokens, answers, strict=True) if ok])
            for record in done:
                self._leases.pop(record.task_id)
                self._parked.pop(record.task_id, None)
            return answers

        return self._call(Call("commit_fenced", (records, tokens)), commit)

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        def park() -> list[bool]:
            answers = []
            for task in parked:
                held = self._leases.get(task.task_id) == task.token
                if held:
                    self._parked[task.task_id] = task
                answers.append(held)
            return answers

        return self._call(Call("park_leased", (parked,)), park)

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        def find() -> list[tuple[ParkedTask, bytes | None]]:
            unleased = [
                task for task in self._parked.values() if self._leases.get(task.task_id) is None
            ]
            return [(task, self._results.get(task.task_id)) for task in unleased[:most]]

        return self._call(Call("unleased_parked", (most,)), find)

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        def drop() -> None:
            for task_id in task_ids:
                self._parked.pop(task_id, None)

        return self._call(Call("drop_parked", (task_ids,)), drop)
