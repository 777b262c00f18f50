"""
The lease keeper: the claims this daemon holds (fencing tokens, renewed
while their tasks wait or run), the fenced commit of their outcomes, and
the parking of messages held longer than the broker's consumer timeout
allows, with the job that publishes again the parked messages of daemons
that died.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedq.backends.base import (
    IClaimStore,
    IResultBackend,
    OutcomeRecord,
    ParkedTask,
    TaskClaim,
)
from twistedq.conf import DEFAULT_MAX_MESSAGE_SIZE
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.job import Job
from twistedq.message import MessageError, TaskMessage

__all__ = ["DEFAULT_PARK_AFTER", "LeaseKeeper"]

#: Seconds after which a claimed task's message is parked in the store and
#: acknowledged: well under RabbitMQ's default consumer timeout (30 min).
DEFAULT_PARK_AFTER = 20 * 60.0

log = Logger()


class LeaseKeeper:
    """
    Holds the claims of this daemon's jobs, one per task id.

    :ivar claims: the store's claims, or None when tasks run unclaimed
        (the store has none, or the duplicate check is off).
    :ivar lease: how long a claim holds without renewal, in seconds.
    :ivar park_after: seconds after which a claimed job's message is
        parked and acknowledged (None: never).
    :ivar home_queue: the queue this daemon consumes first, recorded with parked
        messages.
    :ivar republish: publishes an orphaned parked message to a queue.
    """

    def __init__(
        self,
        backend: IResultBackend,
        claims: IClaimStore | None,
        clock: IReactorTime,
        events: Events,
        lease: float = 15.0,
        park_after: float | None = DEFAULT_PARK_AFTER,
        home_queue: str = "celery",
        republish: Callable[[TaskMessage, str | None], Awaitable[None]] | None = None,
        max_body_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.backend = backend
        self.claims = claims
        self.clock = clock
        self.events = events
        self.lease = lease
        self.park_after = park_after
        self.home_queue = home_queue
        self.republish = republish
        self.max_body_size = max_body_size
        #: Task id to the job whose claim this daemon holds.
        self._held: dict[str, Job] = {}
        self.renewal = LoopingCall(self.renew)
        self.renewal.clock = clock

    @property
    def enabled(self) -> bool:
        return self.claims is not None

    def __len__(self) -> int:
        return len(self._held)

    def jobs(self) -> list[Job]:
        """
        The jobs whose claims this daemon holds.
        """
        return list(self._held.values())

    def holds(self, task_id: str) -> bool:
        return task_id in self._held

    def claim(self, jobs: Sequence[Job]) -> defer.Deferred[list[TaskClaim]]:
        """
        Ask the store for claims on these jobs' tasks, in one call.
        """
        assert self.claims is not None
        return self.claims.claim_tasks(
            [job.task_id for job in jobs], self.lease, [job.message.retries for job in jobs]
        )

    def took(self, job: Job, token: int, asked_at: float) -> None:
        """
        The store gave ``job`` a claim with this fencing token.
        """
        job.token = token
        job.lease_until = asked_at + self.lease
        job.claimed_at = asked_at
        self._held[job.task_id] = job
        self.events.report(EventKind.CLAIMED, job.task_id, job.message.task, job=job)
        if not self.renewal.running:
            self.renewal.start(self.lease / 3, now=False)

    def lease_holds(self, job: Job) -> bool:
        """
        Whether the job may start: it runs unclaimed (no claims, or it
        ignores its result), or its claim surely
        holds now (it may have lapsed while it waited, if the daemon was
        paused or a renewal failed).
        """
        return (
            self.claims is None
            or (job.token is not None and self.clock.seconds() < job.lease_until)
            or job.message.ignore_result
        )

    def forget(self, job: Job) -> None:
        """
        The job's claim ended (committed, released or lost).
        """
        if self._held.get(job.task_id) is job:
            del self._held[job.task_id]
        job.token = None
        job.lease_until = 0.0
        job.parked = False

    def release(self, jobs: Sequence[Job]) -> None:
        """
        Give up the claims of these jobs, so that their next delivery, here
        or elsewhere, can claim them.  A parked message given back stays
        parked: once its claim is released it is an orphan, published again
        by the recovery job.
        """
        released = [(job.task_id, job.token) for job in jobs if job.token is not None]
        for job in jobs:
            self.forget(job)
        self._release(released)

    def release_token(self, task_id: str, token: int) -> None:
        """
        Give up a claim that no job took.
        """
        self._release([(task_id, token)])

    def _release(self, claims: list[tuple[str, int]]) -> None:
        if self.claims is not None and claims:
            self.claims.release_claims(claims).addErrback(lambda f: None)

    def commit(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[set[str]]:
        """
        Store outcomes: those of claimed tasks committed with their fencing
        tokens (an outcome fenced off by a newer claim is dropped, logged
        and reported ``fenced-off``), the others as they are.  The plain
        ones are written first: if their write fails, the tokens are still
        there when the whole batch is written again.  Fires with the ids of
        the tasks whose outcomes were fenced off.
        """
        held = self._held
        fenced = [record for record in records if record.task_id in held]
        if not fenced:
            return self.backend.store_results(records).addCallback(lambda _: set())
        assert self.claims is not None
        claims = self.claims
        plain = [record for record in records if record.task_id not in held]

        def commit(_: Any = None) -> defer.Deferred[list[bool]]:
            tokens = [held[record.task_id].claim_token for record in fenced]
            return claims.commit_outcomes(fenced, tokens)

        def committed(answers: list[bool]) -> set[str]:
            fenced_off = set()
            for record, ok in zip(fenced, answers, strict=True):
                job = held.get(record.task_id)
                if job is not None:
                    self.forget(job)
                if not ok:
                    fenced_off.add(record.task_id)
                    self.events.report(
                        EventKind.FENCED_OFF, record.task_id, job.message.task if job else None
                    )
                    log.warn(
                        "The outcome of task {id} was not committed: a newer claim owns it",
                        id=record.task_id,
                    )
            return fenced_off

        first = self.backend.store_results(plain) if plain else defer.succeed(None)
        return first.addCallback(commit).addCallback(committed)

    def renew(self) -> defer.Deferred[None] | None:
        """
        Renew the leases of every claim this daemon holds, then park the
        messages held too long.
        """
        if not self._held:
            self.renewal.stop()
            return None
        assert self.claims is not None
        held = list(self._held.values())
        tokens = [(job.task_id, job.claim_token) for job in held]
        asked_at = self.clock.seconds()

        def renewed(answers: list[bool]) -> None:
            for job, (_, token), kept in zip(held, tokens, answers, strict=True):
                if job.token != token:
                    continue
                if kept:
                    job.lease_until = asked_at + self.lease
                else:
                    job.lease_until = 0.0
                    log.warn(
                        "The claim on task {id} lapsed (a pause?) or was taken over; its "
                        "outcome is committed only if no other attempt claimed it since",
                        id=job.task_id,
                    )

        d = self.claims.renew_claims(tokens, self.lease)
        d.addCallbacks(
            renewed, lambda f: log.warn("Could not renew claims: {why}", why=str(f.value))
        )
        return d.addCallback(lambda _: self.park_long_running())

    def park_long_running(self) -> defer.Deferred[None] | None:
        """
        Park in the store the messages of claimed jobs held for longer than
        ``park_after``, then acknowledge them: the broker would close the
        channel of a delivery left unacknowledged past its consumer
        timeout.  From then on the claim alone guards the task; if this
        daemon dies, the recovery job publishes the parked message again.
        """
        if self.park_after is None or self.claims is None:
            return None
        now = self.clock.seconds()
        due = [
            job
            for job in self._held.values()
            if now - job.claimed_at >= self.park_after and not job.parked
        ]
        if not due:
            return None
        parking = [
            ParkedTask(
                job.task_id,
                job.claim_token,
                job.delivery.queue or self.home_queue,
                job.delivery.body,
            )
            for job in due
        ]

        def parked(answers: list[bool]) -> None:
            for job, ok in zip(due, answers, strict=True):
                if ok and self._held.get(job.task_id) is job:
                    job.parked = True
                    job.delivery.ack()
                    self.events.report(EventKind.PARKED, job.task_id, job.message.task, job=job)
                    log.info(
                        "Task {id} held for over {seconds} s: its message is parked in the "
                        "result store and acknowledged",
                        id=job.task_id,
                        seconds=self.park_after,
                    )

        return self.claims.park_tasks(parking).addCallbacks(
            parked, lambda f: log.warn("Could not park: {why}", why=str(f.value))
        )

    async def recover_parked(self) -> None:
        """
        Publish again the parked messages whose daemon died (their claim
        lapsed without an outcome), then forget them.  Run as the periodic
        job ``twistedq.recover_parked_tasks``.
        """
        if self.claims is None or self.republish is None:
            return
        for orphan in await self.claims.parked_orphans(100):
            await self._recover(orphan)

    async def _recover(self, orphan: ParkedTask) -> None:
        assert self.claims is not None and self.republish is not None
        try:
            message = TaskMessage.decode(orphan.body, self.max_body_size)
        except MessageError as e:
            log.error("Dropped parked message {id}: {why}", id=orphan.task_id, why=str(e))
        else:
            try:
                await self.republish(message, orphan.queue)
            except Exception as e:  # the next run tries again; the others go on
                log.error(
                    "Could not publish parked task {id} again: {why}",
                    id=orphan.task_id,
                    why=str(e),
                )
                return
            self.events.report(EventKind.RECOVERED, message.id, message.task, message=message)
            log.warn(
                "Task {task}[{id}] was parked by a daemon that stopped: published again",
                task=message.task,
                id=message.id,
            )
        try:
            await self.claims.drop_parked([orphan.task_id])
        except Exception as e:
            log.error("Could not forget parked task {id}: {why}", id=orphan.task_id, why=str(e))
