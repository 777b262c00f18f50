"""
Settlement: store, then ack.  Outcomes are stored (one pipelined write per
batch, fenced by the claims) and only then is a delivery acknowledged.
While the store fails the outcomes are kept and written again after a
doubling pause: the tasks do not run again, their messages stay
unacknowledged.  A task that asked to retry has its RETRY stored, then its
next attempt published, then its delivery acked.  A task no child
registered fails with NotRegistered and is dead-lettered
(:py:data:`UNKNOWN_TASK`), as is one whose child died on each of its
attempts (:py:data:`ATTEMPTS_EXHAUSTED`).  A task that ignores its result
(``ignore_result``) is settled the same way with nothing written: no
outcome, no RETRY, no REVOKED.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.amqp.consumer import merged_acks
from twistedq.arguments import with_arguments
from twistedq.backends.base import IResultBackend, OutcomeRecord, StoreRefused, gather
from twistedq.daemon.backoff import persist
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.followups import FollowUps
from twistedq.daemon.health import StoreHealth
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import Job, JobState, timestamp
from twistedq.daemon.leases import LeaseKeeper
from twistedq.daemon.timing import PublishLater
from twistedq.message import TaskMessage
from twistedq.outcome import (
    Outcome,
    dead_letter_reason,
    failure_document,
    mark_dead_lettered,
    retry_document,
    retry_failed,
    revoked_document,
    schedule_retry,
    top_status,
)
from twistedq.states import FAILURE, RETRY

__all__ = ["ATTEMPTS_EXHAUSTED", "STORE_REFUSED", "UNKNOWN_TASK", "Settlement"]

#: Reason of a task that no child registered.
UNKNOWN_TASK = "unknown-task"
#: Reason of a task whose child died on each of its attempts.
ATTEMPTS_EXHAUSTED = "attempts-exhausted"
#: Reason of a task whose outcome the store refused for good, and then
#: the FAILURE stored in its place as well.
STORE_REFUSED = "store-refused"

log = Logger()


class Written(NamedTuple):
    """
    What became of a batch's outcomes once written.

    :ivar unstored: the ids of the tasks the store refused even the
        FAILURE in place of their outcome: nothing of theirs is stored.
    :ivar fenced: the ids of the tasks whose outcomes were fenced off (a
        newer claim owns them): nothing of theirs is stored either, and
        they report ``fenced-off`` only.
    """

    unstored: set[str]
    fenced: set[str]


class Settlement:
    """
    Stores outcomes and settles deliveries after them.

    :ivar publish_later: publishes the next attempt of a task that retries
        (into a delay queue when due in more than ``hold_eta`` seconds), or
        None: a task that asks to retry then fails.
    """

    def __init__(
        self,
        backend: IResultBackend,
        leases: LeaseKeeper,
        health: StoreHealth,
        clock: IReactorTime,
        events: Events,
        in_flight: InFlight,
        handles: Callable[[str], bool],
        publish_later: PublishLater | None = None,
        hold_eta: float = 60.0,
    ) -> None:
        self.backend = backend
        self.leases = leases
        self.health = health
        self.clock = clock
        self.events = events
        self.in_flight = in_flight
        self.handles = handles
        self.publish_later = publish_later
        self.hold_eta = hold_eta
        #: Messages given back because their outcomes could not be stored.
        self.returned_unstored = 0
        #: Keep each task's arguments in its outcome, up to this many
        #: characters of their JSON text (0: not kept); see
        #: :py:mod:`twistedq.arguments`.
        self.arguments_in_results = 0
        #: Publishes what workflows make follow a task (with the daemon's
        #: publisher, which the lease keeper holds for orphans), or None.
        self.followups = (
            FollowUps(backend, leases.republish, clock, in_flight)
            if leases.republish is not None
            else None
        )

    def ran(self, outcomes: list[bytes], batch: list[Job]) -> defer.Deferred[None]:
        """
        A batch ran: store its outcomes (and publish the next attempts of
        its retries), then settle each delivery.
        """
        if len(outcomes) != len(batch):
            log.error(
                "A child answered {got} outcomes for {sent} tasks; they go back to the queue",
                got=len(outcomes),
                sent=len(batch),
            )
            self.give_back(batch)
            return defer.succeed(None)
        done: list[Job] = []
        records = []
        retrying: list[tuple[Job, bytes]] = []
        for job, outcome in zip(batch, outcomes, strict=True):
            if self.arguments_in_results:
                outcome = self._with_arguments(job, outcome)
            status = top_status(outcome)
            if status == RETRY:
                retrying.append((job, outcome))
                continue
            failed = status == FAILURE
            if failed and self._unknown_task(job.message, outcome):
                outcome = mark_dead_lettered(outcome, UNKNOWN_TASK)
            done.append(job)
            records.append(OutcomeRecord(job.task_id, outcome, job.message.taskset, failed))
        if not retrying:
            return self.store(done, records)
        writes = [self.store(done, records)] if records else []
        writes.extend(self._retry(retrying))
        return gather(writes).addCallback(lambda _: None)

    def store(self, batch: list[Job], records: list[OutcomeRecord]) -> defer.Deferred[None]:
        """
        Store a batch's outcomes, then ack (or dead-letter an unknown
        task).  When the daemon stops while the store fails, the messages
        go back to the queue.  The outcomes of tasks that ignore their
        results are not written.
        """
        if any(job.message.ignore_result for job in batch):
            return self._store_some(batch, records)
        return self._write(batch, records).addCallbacks(
            lambda written: self._settle(batch, records, written),
            lambda _: self.give_back(batch, unstored=True),
        )

    def _store_some(self, batch: list[Job], records: list[OutcomeRecord]) -> defer.Deferred[None]:
        """
        Settle the jobs of a batch that ignore their results at once, with
        nothing written, and store the others' outcomes.
        """
        ignoring = [job.message.ignore_result for job in batch]
        unwritten = [(j, r) for j, r, no in zip(batch, records, ignoring, strict=True) if no]
        written = [(j, r) for j, r, no in zip(batch, records, ignoring, strict=True) if not no]
        settled = [
            defer.maybeDeferred(
                self._settle,
                [job for job, _ in unwritten],
                [record for _, record in unwritten],
                Written(set(), set()),
            )
        ]
        if written:
            settled.append(self.store([j for j, _ in written], [r for _, r in written]))
        return gather(settled).addCallback(lambda _: None)

    def fail(self, job: Job, error: Exception, dead_letter: bool) -> defer.Deferred[None]:
        """
        Store a failure the daemon decided on; then ack the message, or
        dead-letter it (``dead_letter``: its attempts are exhausted).
        """
        document = failure_document(
            job.task_id,
            job.message.task,
            error,
            traceback="",
            dead_letter=ATTEMPTS_EXHAUSTED if dead_letter else None,
        )
        if self.arguments_in_results:
            document = self._with_arguments(job, document)
        record = OutcomeRecord(job.task_id, document, job.message.taskset, True)
        job.state = JobState.STORING

        def settle(fenced: set[str]) -> defer.Deferred[None] | None:
            if fenced:  # a newer claim owns the task: it reports fenced-off only
                job.ack()
                return None
            self.events.report(
                EventKind.FAILED, job.task_id, job.message.task, job=job, error=error
            )
            self._log_failure(job.message, document)
            if dead_letter:
                detail = f"task {job.message.task}[{job.task_id}]: {error}"
                return self._dead_letter(job, ATTEMPTS_EXHAUSTED, detail, error=error)
            return self._ack(job, document)

        if job.message.ignore_result:
            return settle(set()) or defer.succeed(None)
        return self.leases.commit([record]).addCallbacks(
            settle, lambda f: self.give_back([job], unstored=True)
        )

    def revoke(self, job: Job, reason: str) -> None:
        """
        Store REVOKED for a job that must not run, then ack it.
        """
        message = job.message
        log.info(
            "Task {task}[{id}] revoked: {reason}", task=message.task, id=message.id, reason=reason
        )
        self.events.report(EventKind.REVOKED, message.id, message.task, reason=reason, job=job)
        if message.ignore_result:
            job.ack()
            return
        job.state = JobState.STORING
        document = revoked_document(message.id, message.task, reason)
        if self.arguments_in_results:
            document = self._with_arguments(job, document)
        record = OutcomeRecord(message.id, document, message.taskset)
        d = self.leases.commit([record])
        d.addCallbacks(
            lambda _: self._ack(job, record.document),
            lambda _: self.give_back([job], unstored=True),
        )
        self.in_flight.track(d)

    def _ack(self, job: Job, document: bytes) -> defer.Deferred[None] | None:
        """
        Ack a job whose outcome ``document`` is stored; first publish its
        follow-ups if its message has workflow fields
        (:py:mod:`twistedq.daemon.followups`).
        """
        if self.followups is not None and job.message.has_followups:
            return self.followups.settle(job, document)
        job.ack()
        return None

    def _with_arguments(self, job: Job, document: bytes) -> bytes:
        """
        An outcome document with its task's arguments in it.
        """
        message = job.message
        return with_arguments(document, message.args, message.kwargs, self.arguments_in_results)

    def give_back(self, batch: list[Job], unstored: bool = False) -> None:
        """
        Send jobs back to the queue, giving up their claims so that their
        next delivery, here or elsewhere, can claim them.

        :param unstored: they ran, but their outcomes could not be stored
            (counted for the drain's summary).
        """
        self.leases.release(batch)
        if unstored:
            self.returned_unstored += len(batch)
        for job in batch:
            job.give_back()

    def _write(self, batch: list[Job], records: list[OutcomeRecord]) -> defer.Deferred[Written]:
        """
        Write outcomes until the store takes them, or the daemon stops.

        An outcome the store refuses for good (:py:class:`StoreRefused`:
        too large, text it cannot hold) is no outage: it is replaced, in
        ``records``, by a short FAILURE that says so, and the batch is
        written again at once.  Fires with the ids of the tasks whose
        replacement was refused too, and of those fenced off
        (:py:class:`Written`).
        """
        for job in batch:
            job.state = JobState.STORING
        jobs = {job.task_id: job for job in batch}
        replaced: set[str] = set()
        unstored: set[str] = set()
        fenced: set[str] = set()

        def attempt() -> defer.Deferred[None]:
            writing = [record for record in records if record.task_id not in unstored]
            d = self.leases.commit(writing) if writing else defer.succeed(set())
            return d.addCallback(fenced.update).addErrback(refused)

        def refused(failure: Failure) -> Any:
            failure.trap(StoreRefused)
            error = failure.value
            assert isinstance(error, StoreRefused)
            if not self._replace_refused(error, jobs, records, replaced, unstored):
                # The store did not say which: one at a time.
                return self._write_each(batch, records, unstored, fenced)
            return attempt()

        def again(failure: Failure, pause: float) -> bool:
            if self.in_flight.stopping:
                log.failure(
                    "Could not store {count} outcomes; their messages go back to the queue",
                    failure,
                    count=len(batch),
                )
                return False
            log.failure(
                "Could not store {count} outcomes; trying again in {pause} s",
                failure,
                count=len(batch),
                pause=pause,
            )
            self.events.report(EventKind.STORE_RETRY)
            self.health.failed()
            return True

        def written(_: None) -> Written:
            self.health.answered()
            return Written(unstored, fenced)

        return persist(self.clock, attempt, again).addCallback(written)

    def _replace_refused(
        self,
        error: StoreRefused,
        jobs: dict[str, Job],
        records: list[OutcomeRecord],
        replaced: set[str],
        unstored: set[str],
    ) -> bool:
        """
        Replace, in ``records``, the outcome the store refused by a short
        FAILURE; a FAILURE refused in its turn goes to ``unstored``.
        False when the store did not say which record it refused.
        """
        index = next(
            (i for i, r in enumerate(records) if r.task_id == error.task_id),
            0 if len(records) == 1 else None,
        )
        if index is None:
            return False
        record = records[index]
        job = jobs[record.task_id]
        self.events.report(
            EventKind.STORE_REFUSED, job.task_id, job.message.task, job=job, error=error
        )
        if record.task_id in replaced:
            log.error(
                "The result store refused even the short FAILURE of task {task}[{id}] "
                "({why}): nothing of it is stored",
                task=job.message.task,
                id=job.task_id,
                why=str(error),
            )
            unstored.add(job.task_id)
        else:
            log.error(
                "The result store refused the outcome of task {task}[{id}] for good "
                "({why}): a FAILURE saying so is stored in its place",
                task=job.message.task,
                id=job.task_id,
                why=str(error),
            )
            records[index] = refusal_record(job, error)
            replaced.add(job.task_id)
        return True

    def _write_each(
        self,
        batch: list[Job],
        records: list[OutcomeRecord],
        unstored: set[str],
        fenced: set[str],
    ) -> defer.Deferred[None]:
        """
        Write the outcomes of a batch one at a time (a store refused one of
        them without saying which), each replaced if refused.
        """
        jobs = {job.task_id: job for job in batch}

        async def each() -> None:
            for index, record in enumerate(records):
                if record.task_id in unstored:
                    continue
                one = [record]
                written = await self._write([jobs[record.task_id]], one)
                unstored.update(written.unstored)
                fenced.update(written.fenced)
                records[index] = one[0]

        return defer.Deferred.fromCoroutine(each())

    def _settle(self, batch: list[Job], records: list[OutcomeRecord], written: Written) -> Any:
        """
        Report and settle each job of a batch written: ack it, or
        dead-letter it (nothing stored, or an unknown task).  A job fenced
        off is acked and reports nothing more (it reported ``fenced-off``).
        """
        unstored, fenced = written
        with merged_acks():
            dead = self._settle_each(batch, records, unstored, fenced)
        return gather(dead) if dead else None

    def _settle_each(
        self, batch: list[Job], records: list[OutcomeRecord], unstored: set[str], fenced: set[str]
    ) -> list[defer.Deferred[Any]]:
        dead = []
        for job, record in zip(batch, records, strict=True):
            if job.task_id in fenced:
                job.ack()
                continue
            if job.task_id in unstored:
                detail = (
                    f"task {job.message.task}[{job.task_id}]: the result store refused its "
                    "outcome and the FAILURE in its place"
                )
                dead.append(self._dead_letter(job, STORE_REFUSED, detail))
                continue
            if not record.failed:
                self.events.report(EventKind.SUCCEEDED, job.task_id, job.message.task, job=job)
                acked = self._ack(job, record.document)
                if acked is not None:
                    dead.append(acked)
                continue
            self.events.report(
                EventKind.FAILED, job.task_id, job.message.task, job=job, outcome=record.document
            )
            if dead_letter_reason(record.document) == UNKNOWN_TASK:
                detail = f"task {job.message.task}[{job.task_id}]: no child registered it"
                dead.append(self._dead_letter(job, UNKNOWN_TASK, detail, outcome=record.document))
            else:
                acked = self._ack(job, record.document)
                if acked is not None:
                    dead.append(acked)
                self._log_failure(job.message, record.document)
        return dead

    def _retry(self, retrying: list[tuple[Job, bytes]]) -> list[defer.Deferred[Any]]:
        """
        Store the RETRY of each task that asked to retry, then publish its
        next attempt (``retries`` one more, the ETA its countdown gives).
        Without a publisher a retry is a failure.
        """
        now = self.clock.seconds()
        writes = []
        batch, records, attempts = [], [], []
        for job, outcome in retrying:
            message = job.message
            if self.publish_later is None:
                log.error(
                    "Task {task}[{id}] asked to retry, but this daemon cannot publish: it fails",
                    task=message.task,
                    id=message.id,
                )
                failure = retry_failed(outcome)
                writes.append(
                    self.store([job], [OutcomeRecord(message.id, failure, message.taskset, True)])
                )
                continue
            document, eta = schedule_retry(outcome, now)
            attempt = dataclasses.replace(message, retries=message.retries + 1, eta=eta)
            if message.ignore_result:  # no RETRY stored: published at once
                writes.append(self._publish_retry(job, attempt, document))
                continue
            batch.append(job)
            # A retry is not counted in its taskset: the task is not done.
            records.append(OutcomeRecord(message.id, document, None, False))
            attempts.append(attempt)
        if batch:

            def publish(written: Written) -> defer.Deferred[None]:
                published: list[defer.Deferred[Any]] = []
                refused: list[tuple[Job, OutcomeRecord]] = []
                for j, a, r in zip(batch, attempts, records, strict=True):
                    if j.task_id in written.fenced:  # a newer claim owns it: no next attempt
                        j.ack()
                    elif j.task_id in written.unstored or r.failed:  # refused: it fails instead
                        refused.append((j, r))
                    else:
                        published.append(self._publish_retry(j, a, r.document))
                if refused:
                    jobs, failures = [j for j, _ in refused], [r for _, r in refused]
                    published.append(defer.maybeDeferred(self._settle, jobs, failures, written))
                return gather(published).addCallback(lambda _: None)

            writes.append(
                self._write(batch, records).addCallbacks(
                    publish, lambda _: self.give_back(batch, unstored=True)
                )
            )
        return writes

    def _publish_retry(
        self, job: Job, attempt: TaskMessage, outcome: bytes
    ) -> defer.Deferred[None]:
        """
        Publish the next attempt of a task whose RETRY is stored, then ack
        the delivery of this attempt once the broker confirmed.  While the
        publish fails it is tried again (a copy of this attempt delivered
        again meanwhile is superseded by the stored RETRY, so the next
        attempt must go out).  When the daemon stops first, the RETRY is
        stored again for this attempt, so that its delivery, back in the
        queue, runs again.
        """
        assert self.publish_later is not None and attempt.eta is not None
        publish_later = self.publish_later
        due = timestamp(attempt.eta)

        def publish() -> defer.Deferred[None]:
            left = due - self.clock.seconds()
            return defer.ensureDeferred(
                publish_later(attempt, left if left > self.hold_eta else 0.0)
            )

        def again(failure: Failure, pause: float) -> bool:
            if self.in_flight.stopping:
                return False
            log.failure(
                "Could not publish the retry of task {task}[{id}]; trying again in {p} s",
                failure,
                task=attempt.task,
                id=attempt.id,
                p=pause,
            )
            return True

        def not_published(failure: Failure) -> defer.Deferred[None]:
            log.failure(
                "Could not publish the retry of task {task}[{id}]; it goes back to the queue",
                failure,
                task=attempt.task,
                id=attempt.id,
            )
            if attempt.ignore_result:
                job.give_back()
                return defer.succeed(None)
            current = retry_document(
                attempt.id, attempt.task, RuntimeError("retry not published"), attempt.retries - 1
            )
            d = self.backend.store_results([OutcomeRecord(attempt.id, current, attempt.taskset)])
            return d.addBoth(lambda _: job.give_back())

        return persist(self.clock, publish, again).addCallbacks(
            lambda _: self._retry_published(job, attempt, outcome), not_published
        )

    def _retry_published(self, job: Job, attempt: TaskMessage, outcome: bytes) -> None:
        """
        The next attempt of a task is confirmed by the broker: this one is
        acked.
        """
        self.events.report(
            EventKind.RETRIED, attempt.id, attempt.task, message=attempt, outcome=outcome
        )
        log.info(
            "Task {task}[{id}] retries ({n}) at {eta}",
            task=attempt.task,
            id=attempt.id,
            n=attempt.retries,
            eta=attempt.eta,
        )
        job.ack()

    def _unknown_task(self, message: TaskMessage, outcome: bytes) -> bool:
        """
        Whether a failure is the child's NotRegistered for a task that no
        child reported at start (and no task raising NotRegistered itself).
        """
        if self.handles(message.task):
            return False
        exc = Outcome.from_bytes(message.id, outcome).exc or {}
        return exc.get("module") == "twistedq.registry" and exc.get("type") == "NotRegistered"

    def _dead_letter(
        self, job: Job, reason: str, detail: str, **cause: Any
    ) -> defer.Deferred[None]:
        """
        Dead-letter a job's message; ``cause`` (``error``, an exception, or
        ``outcome``, its stored FAILURE) says which exception, for its event.
        """
        log.error("Dead-lettered a message ({reason}): {why}", reason=reason, why=detail)
        self.events.report(
            EventKind.DEAD_LETTERED, job.task_id, job.message.task, reason=reason, job=job, **cause
        )
        return job.dead_letter(reason, detail)

    def _log_failure(self, message: TaskMessage, outcome: bytes) -> None:
        exc = Outcome.from_bytes(message.id, outcome).exc or {}
        log.warn(
            "Task {task}[{id}] raised {type}: {text}",
            task=message.task,
            id=message.id,
            type=exc.get("type"),
            text=exc.get("message"),
        )


def refusal_record(job: Job, error: StoreRefused) -> OutcomeRecord:
    """
    The short FAILURE stored in place of an outcome the store refused for
    good: the task, the store's reason, nothing of the refused value.
    """
    message = job.message
    reason = StoreRefused(
        f"the result store refused the outcome of task {message.task}[{message.id}] for "
        f"good ({error}); it is not stored",
        message.id,
    )
    document = failure_document(message.id, message.task, reason, traceback="")
    return OutcomeRecord(message.id, document, message.taskset, True)
