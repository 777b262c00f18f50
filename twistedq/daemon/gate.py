"""
The gate: before a task runs, one store call per reactor turn tells which
of the turn's jobs may run.  With claims (stores providing
:py:class:`~twistedq.backends.base.IClaimStore`) a task runs only under a
claim: one done already is acked without running, one held by a live claim
elsewhere waits for that lease, a claimed one passes with its fencing
token.  Without claims, one read tells which tasks have a committed
outcome (a redelivery after a crash, a publish repeated after
PublishUncertain) or were revoked: those are acked without running.  A
task that ignores its result (``ignore_result``) is read for, never
claimed: it writes nothing to the store.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from twistedq.backends.base import ClaimState, IResultBackend, TaskClaim
from twistedq.daemon.backoff import FIRST_PAUSE
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.followups import FollowUps
from twistedq.daemon.health import StoreHealth
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import Job, JobState, few
from twistedq.daemon.leases import LeaseKeeper
from twistedq.outcome import dead_letter_reason, top_status
from twistedq.states import READY_STATES

__all__ = ["Gate"]

log = Logger()


class Gate:
    """
    Checks jobs against the store, in one call per reactor turn, and passes
    on those that may run (to ``admit``).

    :ivar check_duplicates: whether jobs are checked at all.
    """

    def __init__(
        self,
        backend: IResultBackend,
        leases: LeaseKeeper,
        health: StoreHealth,
        clock: IReactorTime,
        events: Events,
        in_flight: InFlight,
        admit: Callable[[Job], None],
        check_duplicates: bool,
    ) -> None:
        self.backend = backend
        self.leases = leases
        self.health = health
        self.clock = clock
        self.events = events
        self.in_flight = in_flight
        self.admit = admit
        self.check_duplicates = check_duplicates
        self._unchecked: list[Job] = []
        self._turn: IDelayedCall | None = None
        #: Jobs held unacknowledged, to be checked again.
        self.held: set[Job] = set()
        #: Every job taken and not yet forgotten (settled ones among them,
        #: until collected).
        self.taken: weakref.WeakSet[Job] = weakref.WeakSet()
        #: Publishes the follow-ups of a workflow's task found done (its
        #: delivery came back after a crash before its ack), or None.
        self.followups = (
            FollowUps(backend, leases.republish, clock, in_flight)
            if leases.republish is not None
            else None
        )

    def take(self, job: Job) -> None:
        """
        Check a new job, or pass it on unchecked: when checks are off, or
        when it is early under claims (it is claimed when due).
        """
        job.delivered_at = self.clock.seconds()
        self.taken.add(job)
        if not self.check_duplicates or (self.leases.enabled and job.early(self.clock.seconds())):
            self.admit(job)
        else:
            self.check(job)

    def check(self, job: Job) -> None:
        """
        Have the store read for this job in this reactor turn's one call.
        """
        job.state = JobState.CHECKING
        self._unchecked.append(job)
        if self._turn is None:
            self._turn = self.clock.callLater(0, self._check_turn)

    def hold(self, job: Job, delay: float) -> None:
        """
        Keep a job, unacknowledged, and check it again after ``delay``.
        """

        def again() -> None:
            self.held.discard(job)
            job.timer = None
            self.check(job)

        job.state = JobState.HELD
        job.timer = self.clock.callLater(delay, again)
        self.held.add(job)

    def holding(self) -> list[Job]:
        """
        The jobs held, and those waiting for this turn's store call.
        """
        return [*self.held, *self._unchecked]

    def withdraw(self, job: Job) -> None:
        """
        Take a job out of :py:meth:`holding`: it is not checked again.
        """
        job.stop_timer()
        self.held.discard(job)
        if job in self._unchecked:
            self._unchecked.remove(job)

    def give_back_all(self) -> None:
        """
        On stopping: return every job not yet checked or held to the queue
        (they own no claim).
        """
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        for job in self._unchecked + list(self.held):
            job.give_back()
        self._unchecked = []
        self.held.clear()

    def _check_turn(self) -> None:
        self._turn = None
        jobs, self._unchecked = self._unchecked, []
        if not self.leases.enabled:
            self._read(jobs)
            return
        # A claim is a store write: a task that ignores its result is read
        # for (revoked?) instead, and runs at least once, not exactly once.
        unclaimed = [job for job in jobs if job.message.ignore_result]
        if unclaimed:
            self._read(unclaimed)
            jobs = [job for job in jobs if not job.message.ignore_result]
        if jobs:
            self._claim(jobs)

    def _read(self, jobs: list[Job]) -> None:
        d = defer.maybeDeferred(self.backend.get_results, [job.task_id for job in jobs])

        def read(found: list[bytes | None]) -> None:
            self.health.answered()
            for job, document in zip(jobs, found, strict=True):
                if (
                    document is not None
                    and top_status(document) in READY_STATES
                    and dead_letter_reason(document) is None
                ):
                    self._done_already(job, top_status(document), document)
                else:
                    self._pass(job)

        def unread(failure: Failure) -> None:
            self._store_failed("check for committed outcomes of", len(jobs), failure)
            for job in jobs:
                self._pass(job)

        d.addCallbacks(read, unread)
        self.in_flight.track(d)

    def _pass(self, job: Job) -> None:
        if self.in_flight.stopping:
            job.give_back()
        else:
            self.admit(job)

    def _done_already(self, job: Job, status: str, document: bytes | None = None) -> None:
        self.events.report(EventKind.DUPLICATE, job.task_id, job.message.task, job=job)
        log.info(
            "Task {task}[{id}] is already {status}: acked without running",
            task=job.message.task,
            id=job.task_id,
            status=status,
        )
        message = job.message
        if self.followups is not None and (message.has_followups or message.taskset is not None):
            # A taskset member may have been revoked by a client, which
            # could not count it: the follow-ups count it.
            self._follow_up(job, self.followups, document)
        else:
            job.ack()

    def _follow_up(self, job: Job, followups: FollowUps, document: bytes | None) -> None:
        """
        Publish the follow-ups of a workflow's task found done, then ack
        it: its daemon may have stopped between storing its outcome and
        publishing them; a taskset member found revoked is counted in its
        taskset.  While the store cannot be read, it is held.
        """
        if document is None:
            d = defer.maybeDeferred(self.backend.get_result, job.task_id)
        else:
            d = defer.succeed(document)

        def unread(failure: Failure) -> None:
            self._store_failed("read the outcome of", 1, failure)
            self.hold(job, FIRST_PAUSE)

        d.addCallbacks(lambda found: followups.settle(job, found), unread)
        self.in_flight.track(d)

    def _claim(self, jobs: list[Job]) -> None:
        leases = self.leases
        unclaimed = []
        for job in jobs:
            if leases.holds(job.task_id):
                # A second copy of a task this daemon holds: it waits for
                # the first to finish, then finds the task done.
                self.hold(job, leases.lease)
            else:
                unclaimed.append(job)
        if not unclaimed:
            return
        asked_at = self.clock.seconds()
        d = defer.maybeDeferred(leases.claim, unclaimed)

        def claimed(claims: list[TaskClaim]) -> None:
            self.health.answered()
            elsewhere = []
            for job, claim in zip(unclaimed, claims, strict=True):
                if self._claimed(job, claim, asked_at):
                    elsewhere.append(job)
            if elsewhere:
                log.info(
                    "{count} tasks are claimed by another attempt, looking again in {lease} s: "
                    "{tasks}",
                    count=len(elsewhere),
                    lease=self.leases.lease,
                    tasks=few(elsewhere),
                )

        def not_claimed(failure: Failure) -> None:
            self._store_failed("claim", len(unclaimed), failure)
            for job in unclaimed:
                if self.in_flight.stopping:
                    job.give_back()
                else:
                    # Claimed again later; none starts while the store is down.
                    self.hold(job, FIRST_PAUSE)

        d.addCallbacks(claimed, not_claimed)
        self.in_flight.track(d)

    def _store_failed(self, what: str, count: int, failure: Failure) -> None:
        """
        A store call of the gate failed: said once as a warning while the
        store was thought up, then quietly (debug) while it stays down.
        """
        if self.health.available:
            log.warn(
                "Could not {what} {count} tasks: {why}",
                what=what,
                count=count,
                why=failure.getErrorMessage() or repr(failure.value),
            )
        else:
            log.failure(
                "Could not {what} {count} tasks",
                failure,
                what=what,
                count=count,
                level=LogLevel.debug,
            )
        self.health.failed()

    def _claimed(self, job: Job, claim: TaskClaim, asked_at: float) -> bool:
        """
        Act on one claim's answer; True when another attempt holds it.
        """
        if self.in_flight.stopping:
            if claim.state is ClaimState.CLAIMED:
                self.leases.release_token(job.task_id, claim.token)
            job.give_back()
        elif claim.state is ClaimState.DONE:
            self._done_already(job, "done")
        elif claim.state is ClaimState.HELD:
            self.events.report(EventKind.HELD_ELSEWHERE, job.task_id, job.message.task, job=job)
            self.hold(job, self.leases.lease)
            return True
        elif job.early(self.clock.seconds()):
            # Due later after all (the clock stepped back): it waits
            # unclaimed and is claimed when due.
            self.leases.release_token(job.task_id, claim.token)
            self.admit(job)
        else:
            self.leases.took(job, claim.token, asked_at)
            self.admit(job)
        return False
