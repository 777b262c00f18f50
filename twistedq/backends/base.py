"""
The result backend interfaces and the values they pass.  A backend is
chosen from a URL by :py:func:`twistedq.backends.url.backend_from_url`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = [
    "DEFAULT_RESULT_TTL",
    "MAX_RESULT_EXPIRES",
    "BackendURLError",
    "ClaimState",
    "IClaimStore",
    "IFencedLeases",
    "IPendingRecords",
    "IResultBackend",
    "IScheduleStore",
    "OutcomeRecord",
    "ParkedTask",
    "PeriodicState",
    "SlotClaim",
    "StoreRefused",
    "TaskClaim",
    "TasksetState",
    "gather",
]

#: Results expire after a day unless configured otherwise.
DEFAULT_RESULT_TTL = 24 * 60 * 60

#: The longest time results may be kept, in seconds: 10 years (longer
#: ones overflow the stores' and the claims' time arithmetic).
MAX_RESULT_EXPIRES = 10 * 365 * 86400


class BackendURLError(ValueError):
    """
    A result backend URL could not be understood.
    """


class StoreRefused(Exception):
    """
    The store refused one write for good: the same write would be refused
    again however long the daemon waited (a value over the store's size
    limit, text the store cannot hold).  Unlike an outage (any other
    failure), it says nothing of the store's health: the daemon stores a
    short FAILURE in the outcome's place and settles the message.

    :ivar task_id: the task whose write was refused, when known.
    """

    def __init__(self, reason: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.task_id = task_id


class OutcomeRecord(NamedTuple):
    """
    One outcome to store.

    :ivar task_id: the task's id, the key.
    :ivar document: the encoded outcome (:py:mod:`twistedq.outcome`).
    :ivar taskset: the taskset the task belongs to, whose progress counts it.
    :ivar failed: the outcome is a failure (counted apart in the taskset).
    """

    task_id: str
    document: bytes
    taskset: str | None = None
    failed: bool = False


class TasksetState(NamedTuple):
    """
    The progress of a taskset, as one read of the store gives it.
    """

    total: int
    completed: int
    failed: int

    @property
    def ready(self) -> bool:
        return self.completed >= self.total


class IResultBackend(Interface):
    """
    A store of task outcomes, keyed by task id.  Values are the encoded
    documents of :py:obj:`twistedq.outcome`; a backend stores and returns them
    as opaque bytes.
    """

    url = Attribute("The URL this backend was made from, password removed.")

    def connect() -> Deferred[None]:
        """
        Start connecting; fires when the store can be used.
        """

    def store_results(records: Sequence[OutcomeRecord]) -> Deferred[None]:
        """
        Store several outcomes at once, as one round trip where the store
        allows it, and count each in its taskset (once, however often it
        is stored).  Fires when all are in the store.
        """

    def mark_sent(records: Sequence[tuple[str, bytes]]) -> Deferred[None]:
        """
        Record pending documents for tasks just published, where no outcome
        is stored yet (an outcome already there is kept), so a reader can
        tell a queued task from an unknown id.
        """

    def forget(task_ids: Sequence[str]) -> Deferred[None]:
        """
        Delete the stored outcomes of these tasks.
        """

    def create_taskset(taskset_id: str, total: int) -> Deferred[None]:
        """
        Record a taskset of ``total`` subtasks, before they are published.
        """

    def get_taskset(taskset_id: str) -> Deferred[TasksetState | None]:
        """
        The progress of a taskset in one read, or None if it is unknown.
        """

    def get_result(task_id: str) -> Deferred[bytes | None]:
        """
        The stored outcome of a task, or :py:obj:`None` if there is none.
        """

    def get_results(task_ids: Sequence[str]) -> Deferred[list[bytes | None]]:
        """
        The stored outcomes of several tasks, in order, :py:obj:`None` where absent.
        """

    def close() -> Deferred[None]:
        """
        Release connections and threads.
        """


class IPendingRecords(Interface):
    """
    A store that can take back pending records atomically: the client then
    writes a message's pending record at the same time as it publishes the
    message, instead of after the broker's confirm, and takes it back when
    the publish surely failed.
    """

    def unmark_sent(records: Sequence[tuple[str, bytes]]) -> Deferred[None]:
        """
        Delete the record of each task that still holds exactly the pending
        document given (as :py:meth:`IResultBackend.mark_sent` wrote it),
        each atomically: an outcome, or any other document, is kept.
        """


class SlotClaim(enum.Enum):
    """
    What claiming a periodic task's slot found.
    """

    #: The slot is ours to publish, under a lease.
    WON = "won"
    #: The slot was published already, by whichever daemon.
    DONE = "done"
    #: Another daemon holds a live lease on the slot.
    HELD = "held"


class PeriodicState(NamedTuple):
    """
    The stored state of one periodic task; times are seconds since the epoch.
    """

    name: str
    enabled: bool = True
    last_run_at: float | None = None
    total_run_count: int = 0
    next_run_at: float | None = None


class IScheduleStore(Interface):
    """
    The part of a result store the scheduler (:py:mod:`twistedq.scheduler`)
    uses: one claim per slot of a periodic schedule, and each periodic
    task's state.  Expiry of claims is the store's (server-side) job.
    """

    def claim_slot(key: str, owner: str, lease: float) -> Deferred[SlotClaim]:
        """
        Claim the slot ``key`` for ``owner`` for ``lease`` seconds, if no
        one holds it and it was not published: atomically, so among any
        number of daemons one wins.
        """

    def release_slot(key: str, owner: str) -> Deferred[None]:
        """
        Give up a claim that ``owner`` still holds (its publish failed), so
        the slot can be claimed again at once.
        """

    def commit_slot(
        key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> Deferred[None]:
        """
        Record that the slot was published: the claim becomes "done" for
        ``keep`` seconds, and the task's state counts one more run, ran at
        ``slot`` (``last_run_at`` never moves back) and runs next at
        ``next_run_at``.
        """

    def note_schedule(name: str, next_run_at: float) -> Deferred[None]:
        """
        Record when the task runs next, creating its state (enabled, never
        run) if it has none.
        """

    def get_periodic_states(names: Sequence[str]) -> Deferred[dict[str, PeriodicState]]:
        """
        The stored states of these tasks; a task without one is absent.
        """

    def set_periodic_enabled(name: str, enabled: bool) -> Deferred[None]:
        """
        Pause (``False``) or resume a periodic task, creating its state if
        it has none.
        """


class ClaimState(enum.Enum):
    """
    What claiming a task found.
    """

    #: The task is ours to run, under a lease and a fencing token.
    CLAIMED = "claimed"
    #: The task has a final outcome (SUCCESS, FAILURE, REVOKED): not to run.
    DONE = "done"
    #: Another attempt holds a live lease on the task.
    HELD = "held"


class TaskClaim(NamedTuple):
    """
    The answer to one claim: its state and, when claimed, the fencing token
    (higher than every token given for the task before).
    """

    state: ClaimState
    token: int = 0


class ParkedTask(NamedTuple):
    """
    A claimed task's message kept in the store: its id, the token of the
    claim that parked it, the queue it came from and its body.
    """

    task_id: str
    token: int
    queue: str
    body: bytes


class IClaimStore(Interface):
    """
    Claims on tasks, so that an attempt runs a task only while no other
    does and commits its outcome only while its claim is the latest.

    A claim is a lease (it lapses unless renewed) with a fencing token: a
    number that grows with each claim of the task.  An outcome is committed
    only with the latest token, so an attempt that lost its lease (paused,
    partitioned) and was overtaken by another cannot overwrite the other's
    outcome.  Leases expire by the store's clock where the store has one
    (Redis), else by the daemons' clocks.
    """

    def claim_tasks(
        task_ids: Sequence[str], lease: float, retries: Sequence[int] | None = None
    ) -> Deferred[list[TaskClaim]]:
        """
        Claim each task for ``lease`` seconds, atomically per task: DONE
        if it has a final outcome (not a failure recorded for a
        dead-lettered message, which may run again) or, given the
        ``retries`` of each message, a RETRY outcome scheduling a later
        attempt than this one (a stale copy of an earlier attempt); HELD if
        a live claim is on it; else CLAIMED with a new token.
        """

    def renew_claims(claims: Sequence[tuple[str, int]], lease: float) -> Deferred[list[bool]]:
        """
        Extend each ``(task id, token)`` claim by ``lease`` seconds from now
        if its token is still the latest; False for each that is not.
        """

    def release_claims(claims: Sequence[tuple[str, int]]) -> Deferred[None]:
        """
        Give up claims whose tasks go back to the queue, so that another
        attempt can claim them at once.
        """

    def commit_outcomes(
        records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> Deferred[list[bool]]:
        """
        Store each outcome as :py:meth:`IResultBackend.store_results` does,
        only if its token is still the task's latest, and end its claim
        (and its parked message, if any).  Fires with which were committed;
        a False one was fenced off by a newer claim and left unwritten.
        """

    def park_tasks(parked: Sequence[ParkedTask]) -> Deferred[list[bool]]:
        """
        Keep the messages of long-running claimed tasks in the store, each
        only if its token is still the latest, so the daemon can
        acknowledge them before the broker's consumer timeout.  A parked
        message whose claim lapses without an outcome is an orphan.
        """

    def parked_orphans(limit: int) -> Deferred[list[ParkedTask]]:
        """
        Up to ``limit`` parked messages whose claim lapsed (no live claim)
        and whose task has no final outcome: their daemon died.  Parked
        messages whose task has an outcome are dropped on the way.
        """

    def drop_parked(task_ids: Sequence[str]) -> Deferred[None]:
        """
        Forget parked messages (published again).
        """


class IFencedLeases(Interface):
    """
    The steps a store takes atomically for claims, each per task of a
    batch (never an empty one).  A lease lapses by the store's clock where
    it has one (Redis), else by the daemons'.
    """

    def take_leases(
        task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> Deferred[list[tuple[int | None, bytes | None]]]:
        """
        For each task without a live lease whose stored document holds
        none of the byte strings ``unless``: raise its fence by one and
        lease the task for ``lease`` seconds to that new token.  Answers,
        per task, the new token (None where it was not taken) and the
        task's stored document as it was when the lease was taken, or not.
        Where a lease was taken although ``unless`` was given, a store may
        answer None for the document (nothing in it stopped the lease, and
        the claim needs no more): the Redis store does, to keep the common
        claim's reply small.
        """

    def extend_leases(claims: Sequence[tuple[str, int]], lease: float) -> Deferred[list[bool]]:
        """
        For each ``(task id, token)`` whose token holds the task's live
        lease, lease it again for ``lease`` seconds from now; answers which.
        """

    def end_leases(claims: Sequence[tuple[str, int]]) -> Deferred[None]:
        """
        End the lease of each ``(task id, token)`` whose token is still the
        task's fence.
        """

    def commit_fenced(
        records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> Deferred[list[bool]]:
        """
        For each record whose token is still its task's fence: store the
        outcome as ``store_results`` does, end the lease and forget the
        task's parked message.  Answers which.
        """

    def park_leased(parked: Sequence[ParkedTask]) -> Deferred[list[bool]]:
        """
        Keep each message whose token holds its task's live lease, in place
        of any message parked for the task before; answers which.
        """

    def unleased_parked(most: int) -> Deferred[list[tuple[ParkedTask, bytes | None]]]:
        """
        Parked messages whose task has no live lease, each with the task's
        stored document; up to ``most`` of them (a store may give more).
        """

    def drop_parked(task_ids: Sequence[str]) -> Deferred[None]:
        """
        Forget the parked messages of these tasks.
        """


def gather(deferreds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """
    Wait for all of ``deferreds``; fail with the first underlying error
    (not :py:obj:`twisted.internet.defer.FirstError`) if any fails.
    """
    from twisted.internet import defer

    def unwrap(failure: Any) -> Any:
        failure.trap(defer.FirstError)
        return failure.value.subFailure

    return defer.gatherResults(deferreds, consumeErrors=True).addErrback(unwrap)
