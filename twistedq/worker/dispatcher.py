"""
The dispatcher: from a delivery to a stored, acknowledged outcome.

For each delivery: validate it, queue it, hand batches to idle children,
store the outcomes (one pipelined write per batch) and only then ack.  A
message that is not a valid task message (or, with signing keys, not
signed by one of them) goes to the dead-letter queue with one log line and
its reason in its headers; when its task id can be read, a FAILURE is
stored for it first.  A task no child registered fails with NotRegistered
and is dead-lettered too.  The tasks of a batch whose child died run again
one by one; a task whose child dies on each of ``max_attempts`` runs fails
with WorkerLostError and is dead-lettered, and one killed at its hard limit
fails with TimeLimitExceeded.

The reasons, in the ``x-twistedq-reason`` header: ``not-json``,
``malformed``, ``too-large`` (:py:mod:`twistedq.message`), ``unsigned``,
``bad-signature`` (:py:mod:`twistedq.signing`), :py:data:`UNKNOWN_TASK`
and :py:data:`ATTEMPTS_EXHAUSTED`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import (
    ClaimState,
    IClaimStore,
    IResultBackend,
    OutcomeRecord,
    ParkedTask,
    TaskClaim,
    gather,
)
from twistedq.conf import DEFAULT_MAX_MESSAGE_SIZE
from twistedq.exceptions import TimeLimitExceeded, WorkerLostError
from twistedq.message import MessageError, TaskMessage
from twistedq.outcome import (
    Outcome,
    dead_letter_reason,
    failure_document,
    mark_dead_lettered,
    retry_document,
    retry_failed,
    revoked_document,
    schedule_retry,
)
from twistedq.signing import SignatureError, SigningKeys
from twistedq.states import FAILURE, READY_STATES, RETRY

if TYPE_CHECKING:
    from twistedq.worker.reactor_tasks import ReactorTaskRunner

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "DEFAULT_HOLD_ETA",
    "DEFAULT_PARK_AFTER",
    "UNKNOWN_TASK",
    "Dispatcher",
]

#: Reason of a task that no child registered.
UNKNOWN_TASK = "unknown-task"
#: Reason of a task whose child died on each of its attempts.
ATTEMPTS_EXHAUSTED = "attempts-exhausted"

#: The key read to learn whether an unavailable store is back (no task has it).
STORE_PROBE_ID = "00000000-0000-0000-0000-000000000000"

#: Tasks due within this many seconds are held in memory, later ones go to
#: a delay queue of the broker.
DEFAULT_HOLD_ETA = 60.0

#: Seconds after which a claimed task's message is parked in the store and
#: acknowledged: well under RabbitMQ's default consumer timeout (30 min).
DEFAULT_PARK_AFTER = 20 * 60.0

#: First and largest pause before writing outcomes again to a failing store.
STORE_RETRY_START = 0.5
STORE_RETRY_MAX = 60.0

log = Logger()


class _Delivery(Protocol):
    body: bytes
    redelivered: bool

    @property
    def headers(self) -> Mapping[str, Any] | None: ...

    def ack(self) -> None: ...

    def reject(self, requeue: bool) -> None: ...

    def dead_letter(self, reason: str, detail: str) -> defer.Deferred[None]: ...


class _Pool(Protocol):
    @property
    def idle_count(self) -> int: ...

    @property
    def task_limits(self) -> dict[str, tuple[float | None, float | None]]: ...

    def run_batch(
        self, bodies: list[bytes], time_limit: float | None = None
    ) -> defer.Deferred[list[bytes]]: ...


class Dispatcher:
    """
    Feeds the pool from the deliveries and settles each delivery after its
    outcome is stored.

    :ivar max_batch: the most tasks sent to one child in one call.
    :ivar max_body_size: the largest message body taken, in bytes.
    :ivar signing: the keys a message must be signed with, or :py:obj:`None`
        to take unsigned messages.
    :ivar publish_later: publishes a task message to come back to the
        queue after about the given seconds (into a delay queue; at once
        under a second) and fires once the broker confirmed, as
        :py:meth:`twistedq.amqp.broker.Publisher.publish_later` does; or
        :py:obj:`None`: every ETA is then held in memory, and a task that
        asks to retry fails.
    :ivar hold_eta: a task due within this many seconds is held in memory
        until its ETA; one due later goes to a delay queue.
    """

    publish_later: Callable[[TaskMessage, float], Awaitable[None]] | None = None
    hold_eta: float = DEFAULT_HOLD_ETA
    #: Seconds after which a claimed task's message is parked in the store
    #: and acknowledged (None: never), under the broker's consumer timeout.
    park_after: float | None = DEFAULT_PARK_AFTER
    #: The queue this daemon consumes, recorded with parked messages.
    home_queue: str = "celery"
    #: ``republish(message, queue)``: publishes an orphaned parked message.
    republish: Callable[[TaskMessage, str | None], Awaitable[None]] | None = None
    #: Tasks sent to a delay queue, and retries published.
    delayed = 0
    retried = 0

    def __init__(
        self,
        pool: _Pool,
        backend: IResultBackend,
        clock: IReactorTime,
        max_batch: int = 8,
        max_body_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        time_limit: float | None = None,
        max_attempts: int = 3,
        check_duplicates: bool = False,
        signing: SigningKeys | None = None,
        claim_lease: float = 15.0,
        owner: str | None = None,
    ) -> None:
        self.pool = pool
        self.backend = backend
        self.clock = clock
        self.max_batch = max_batch
        self.max_body_size = max_body_size
        self.signing = signing
        self._pending: deque[tuple[_Delivery, TaskMessage]] = deque()
        self._waiting: dict[IDelayedCall, tuple[_Delivery, TaskMessage]] = {}
        self.time_limit = time_limit
        self.max_attempts = max_attempts
        self._attempts: dict[str, int] = {}
        self._suspects: set[str] = set()
        self.stopping = False
        self.reactor_runner: ReactorTaskRunner | None = None
        self.store_retries = 0
        #: When the result store was found unavailable (clock seconds), or
        #: None while it answers.  No new task starts meanwhile.
        self.store_down_since: float | None = None
        self._probe_call: IDelayedCall | None = None
        self.check_duplicates = check_duplicates
        #: The store's claims, used when it has them and the check is on:
        #: a task runs only under a claim, and its outcome is committed
        #: only while the claim's fencing token is the latest.
        self.claims: IClaimStore | None = (
            backend if check_duplicates and IClaimStore.providedBy(backend) else None  # type: ignore[assignment]
        )
        self.claim_lease = claim_lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        #: Task id to the fencing token of the claim this daemon holds, and
        #: until when (by this daemon's clock) its lease surely holds.
        self._tokens: dict[str, int] = {}
        self._lease_until: dict[str, float] = {}
        #: Claimed tasks: when claimed, and their delivery (for parking).
        self._claimed: dict[str, tuple[float, _Delivery]] = {}
        self._parked: set[str] = set()
        self.parked = 0
        self.recovered = 0
        self._held: dict[IDelayedCall, tuple[_Delivery, TaskMessage]] = {}
        self._renewal = LoopingCall(self._renew)
        self._renewal.clock = clock
        self.held_elsewhere = 0
        self.fenced_off = 0
        self.duplicates = 0
        self._unchecked: list[tuple[_Delivery, TaskMessage]] = []
        self._check_call: IDelayedCall | None = None
        self._in_flight: set[defer.Deferred[None]] = set()
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        self.dead_lettered = 0

    def stats(self) -> dict[str, Any]:
        """
        The dispatcher's figures for the status resource.
        """
        return {
            "completed": self.completed,
            "failed": self.failed,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
            "pending": len(self._pending),
            "held_for_eta": len(self._waiting),
            "in_flight": len(self._in_flight),
            "retrying": len(self._suspects),
            "store_retries": self.store_retries,
            "store_available": self.store_down_since is None,
            "duplicates_suppressed": self.duplicates,
            "claimed": len(self._tokens),
            "parked": self.parked,
            "recovered": self.recovered,
            "held_elsewhere": self.held_elsewhere,
            "fenced_off": self.fenced_off,
        }

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def deliver(self, delivery: _Delivery) -> None:
        """
        Take one delivery from the consumer.
        """
        if self.signing is not None:
            try:
                self.signing.verify(delivery.body, delivery.headers)
            except SignatureError as e:
                # Its id is not to be trusted: no FAILURE is stored for it.
                self._refuse(delivery, e.reason, str(e))
                return
        try:
            message = TaskMessage.decode(delivery.body, self.max_body_size)
        except MessageError as e:
            self._refuse(delivery, e.reason, str(e), e)
            return
        if not self.check_duplicates or (
            self.claims is not None
            and message.eta is not None
            and _timestamp(message.eta) > self.clock.seconds()
        ):
            # Not checked yet; under claims an early task is claimed when due.
            self._admit(delivery, message)
            return
        self._to_check(delivery, message)

    def _to_check(self, delivery: _Delivery, message: TaskMessage) -> None:
        """
        Have the store read for this task's outcome in this reactor turn's
        one read, before it is admitted.
        """
        self._unchecked.append((delivery, message))
        if self._check_call is None:
            self._check_call = self.clock.callLater(0, self._check)

    def _refuse(
        self, delivery: _Delivery, reason: str, detail: str, error: MessageError | None = None
    ) -> None:
        """
        Dead-letter a message that cannot run; when its task id can be
        read from it, store a FAILURE with ``error`` first.
        """
        self.rejected += 1
        log.error("Dead-lettered a message ({reason}): {why}", reason=reason, why=detail)
        if error is None or error.task_id is None:
            self._track(self._dead_letter(delivery, reason, detail))
            return
        task_id = error.task_id
        document = failure_document(
            task_id, error.task or "", error, traceback="", dead_letter=reason
        )
        d = self.backend.store_results([OutcomeRecord(task_id, document, None, True)])
        d.addErrback(
            lambda f: log.failure("Could not store the failure of task {id}", f, id=task_id)
        )
        d.addCallback(lambda _: self._dead_letter(delivery, reason, detail))
        self._track(d)

    def _dead_letter(self, delivery: _Delivery, reason: str, detail: str) -> defer.Deferred[None]:
        self.dead_lettered += 1
        return delivery.dead_letter(reason, detail)

    def _unknown_task(self, message: TaskMessage, outcome: bytes) -> bool:
        """
        Whether a failure is the child's NotRegistered for a task that no
        child reported at start (and no task raising NotRegistered itself).
        """
        if message.task in self.pool.task_limits:
            return False
        if self.reactor_runner is not None and self.reactor_runner.handles(message.task):
            return False
        exc = Outcome.from_bytes(message.id, outcome).exc or {}
        return exc.get("module") == "twistedq.registry" and exc.get("type") == "NotRegistered"

    def _check(self) -> None:
        """
        One read of the store for the deliveries of this reactor turn: a
        task whose outcome is already committed (a redelivery after a crash,
        or a publish repeated after PublishUncertain) or that was revoked is
        acked without running.
        """
        self._check_call = None
        batch, self._unchecked = self._unchecked, []
        if self.claims is not None:
            self._claim(batch)
            return
        d = self.backend.get_results([message.id for _, message in batch])

        def checked(found: list[bytes | None]) -> None:
            self._store_available()
            for (delivery, message), document in zip(batch, found, strict=True):
                if (
                    document is not None
                    and _top_status(document) in READY_STATES
                    and dead_letter_reason(document) is None
                ):
                    self.duplicates += 1
                    log.info(
                        "Task {task}[{id}] is already {status}: acked without running",
                        task=message.task,
                        id=message.id,
                        status=_top_status(document),
                    )
                    delivery.ack()
                elif self.stopping:
                    delivery.reject(requeue=True)
                else:
                    self._admit(delivery, message)

        def unchecked(failure: Failure) -> None:
            log.failure("Could not check for committed outcomes", failure)
            self._store_unavailable()
            for delivery, message in batch:
                if self.stopping:
                    delivery.reject(requeue=True)
                else:
                    self._admit(delivery, message)

        d.addCallbacks(checked, unchecked)
        self._track(d)

    def _claim(self, batch: list[tuple[_Delivery, TaskMessage]]) -> None:
        """
        Claim the deliveries of this reactor turn in one store call: a task
        done already is acked without running, one held by a live claim
        elsewhere waits for that lease and is claimed again, and a claimed
        one is admitted with its fencing token.
        """
        assert self.claims is not None
        mine = [(d, m) for d, m in batch if m.id in self._tokens]
        for delivery, message in mine:
            # A second copy of a task this daemon holds: it waits for the
            # first to finish, then finds the task done.
            self._hold(delivery, message, self.claim_lease)
        batch = [(d, m) for d, m in batch if m.id not in self._tokens]
        if not batch:
            return
        asked_at = self.clock.seconds()
        d = self.claims.claim_tasks(
            [message.id for _, message in batch],
            self.owner,
            self.claim_lease,
            [message.retries for _, message in batch],
        )

        def claimed(claims: list[TaskClaim]) -> None:
            self._store_available()
            for (delivery, message), claim in zip(batch, claims, strict=True):
                if self.stopping:
                    if claim.state is ClaimState.CLAIMED:
                        self._release([(message.id, claim.token)])
                    delivery.reject(requeue=True)
                elif claim.state is ClaimState.DONE:
                    self.duplicates += 1
                    log.info(
                        "Task {task}[{id}] is already done: acked without running",
                        task=message.task,
                        id=message.id,
                    )
                    delivery.ack()
                elif claim.state is ClaimState.HELD:
                    self.held_elsewhere += 1
                    log.info(
                        "Task {task}[{id}] is claimed by another attempt: looking again "
                        "in {lease} s",
                        task=message.task,
                        id=message.id,
                        lease=self.claim_lease,
                    )
                    self._hold(delivery, message, self.claim_lease)
                elif message.eta is not None and _timestamp(message.eta) > self.clock.seconds():
                    # Due later after all (the clock stepped back): it waits
                    # unclaimed and is claimed when due.
                    self.claims.release_claims([(message.id, claim.token)]).addErrback(
                        lambda f: None
                    )
                    self._admit(delivery, message)
                else:
                    self._tokens[message.id] = claim.token
                    self._lease_until[message.id] = asked_at + self.claim_lease
                    self._claimed[message.id] = (asked_at, delivery)
                    if not self._renewal.running:
                        self._renewal.start(self.claim_lease / 3, now=False)
                    self._admit(delivery, message)

        def unclaimed(failure: Failure) -> None:
            log.failure("Could not claim {count} tasks", failure, count=len(batch))
            self._store_unavailable()
            for delivery, message in batch:
                if self.stopping:
                    delivery.reject(requeue=True)
                else:
                    # Claimed again later; none starts while the store is down.
                    self._hold(delivery, message, STORE_RETRY_START)

        d.addCallbacks(claimed, unclaimed)
        self._track(d)

    def _hold(self, delivery: _Delivery, message: TaskMessage, delay: float) -> None:
        """
        Keep a delivery, unacknowledged, and claim it again after ``delay``.
        """

        def again() -> None:
            del self._held[call]
            self._to_check(delivery, message)

        call = self.clock.callLater(delay, again)
        self._held[call] = (delivery, message)

    def _renew(self) -> defer.Deferred[None] | None:
        """
        Renew the leases of every task this daemon holds claimed.
        """
        if not self._tokens:
            self._renewal.stop()
            return None
        assert self.claims is not None
        held = list(self._tokens.items())
        asked_at = self.clock.seconds()

        def renewed(answers: list[bool]) -> None:
            for (task_id, token), kept in zip(held, answers, strict=True):
                if self._tokens.get(task_id) != token:
                    continue
                if kept:
                    self._lease_until[task_id] = asked_at + self.claim_lease
                else:
                    self._lease_until.pop(task_id, None)
                    log.warn(
                        "The claim on task {id} lapsed (a pause?) or was taken over; its "
                        "outcome is committed only if no other attempt claimed it since",
                        id=task_id,
                    )

        d = self.claims.renew_claims(held, self.claim_lease)
        d.addCallbacks(
            renewed, lambda f: log.warn("Could not renew claims: {why}", why=str(f.value))
        )
        d.addCallback(lambda _: self._park_long_running())
        return d

    def _park_long_running(self) -> defer.Deferred[None] | None:
        """
        Park in the store the messages of claimed tasks held for longer
        than ``park_after``, then acknowledge them: the broker would close
        the channel of a delivery left unacknowledged past its consumer
        timeout.  From then on the claim alone guards the task; if this
        daemon dies, the recovery job publishes the parked message again.
        """
        if self.park_after is None or self.claims is None:
            return None
        now = self.clock.seconds()
        due = [
            (task_id, delivery)
            for task_id, (since, delivery) in self._claimed.items()
            if now - since >= self.park_after and task_id not in self._parked
        ]
        if not due:
            return None
        parking = [
            ParkedTask(task_id, self._tokens[task_id], self.home_queue, delivery.body)
            for task_id, delivery in due
        ]

        def parked(answers: list[bool]) -> None:
            for (task_id, delivery), ok in zip(due, answers, strict=True):
                if ok and task_id in self._claimed:
                    self._parked.add(task_id)
                    self.parked += 1
                    delivery.ack()
                    log.info(
                        "Task {id} held for over {seconds} s: its message is parked in the "
                        "result store and acknowledged",
                        id=task_id,
                        seconds=self.park_after,
                    )

        d = self.claims.park_tasks(parking)
        d.addCallbacks(parked, lambda f: log.warn("Could not park: {why}", why=str(f.value)))
        return d

    async def recover_parked(self) -> None:
        """
        Publish again the parked messages whose daemon died (their claim
        lapsed without an outcome), then forget them.  Run as the periodic
        job ``twistedq.recover_parked_tasks``.
        """
        if self.claims is None or self.republish is None:
            return
        for orphan in await self.claims.parked_orphans(100):
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
                    continue
                self.recovered += 1
                log.warn(
                    "Task {task}[{id}] was parked by a daemon that stopped: published again",
                    task=message.task,
                    id=message.id,
                )
            try:
                await self.claims.drop_parked([orphan.task_id])
            except Exception as e:
                log.error("Could not forget parked task {id}: {why}", id=orphan.task_id, why=str(e))

    def _give_back(self, batch: list[tuple[_Delivery, TaskMessage]]) -> None:
        """
        Send admitted deliveries back to the queue, giving up their claims
        so that their next delivery, here or elsewhere, can claim them.
        """
        self._release([(m.id, self._tokens[m.id]) for _, m in batch if m.id in self._tokens])
        for delivery, _message in batch:
            delivery.reject(requeue=True)

    def _forget_claim(self, task_id: str) -> None:
        self._tokens.pop(task_id, None)
        self._lease_until.pop(task_id, None)
        self._claimed.pop(task_id, None)
        self._parked.discard(task_id)

    def _release(self, claims: list[tuple[str, int]]) -> None:
        # A parked message given back stays parked: once its claim is
        # released it is an orphan, published again by the recovery job.
        for task_id, _token in claims:
            self._forget_claim(task_id)
        if self.claims is not None and claims:
            self.claims.release_claims(claims).addErrback(lambda f: None)

    def _write(self, records: list[OutcomeRecord]) -> defer.Deferred[Any]:
        """
        Store outcomes: those of claimed tasks committed with their fencing
        tokens (an outcome fenced off by a newer claim is dropped and
        logged), the others as they are.
        """
        tokens = self._tokens
        fenced = [record for record in records if record.task_id in tokens]
        if not fenced:
            return self.backend.store_results(records)
        assert self.claims is not None
        claims = self.claims
        plain = [record for record in records if record.task_id not in tokens]

        def commit(_: Any = None) -> defer.Deferred[list[bool]]:
            return claims.commit_outcomes(fenced, [tokens[record.task_id] for record in fenced])

        def committed(answers: list[bool]) -> None:
            for record, ok in zip(fenced, answers, strict=True):
                self._forget_claim(record.task_id)
                if not ok:
                    self.fenced_off += 1
                    log.warn(
                        "The outcome of task {id} was not committed: a newer claim owns it",
                        id=record.task_id,
                    )

        # The plain records first: if their write fails, the tokens are
        # still there when the whole batch is written again.
        first = self.backend.store_results(plain) if plain else defer.succeed(None)
        return first.addCallback(commit).addCallback(committed)

    def _admit(self, delivery: _Delivery, message: TaskMessage) -> None:
        """
        A task checked and due or not: hold it until its ETA, revoke it if
        it expired, else queue it.
        """
        if message.expires is not None or message.eta is not None:
            now = self.clock.seconds()
            if self._expired(message):
                self._revoke(delivery, message, f"expired at {message.expires}")
                return
            if message.eta is not None:
                left = _timestamp(message.eta) - now
                if left > 0:
                    if left > self.hold_eta and self.publish_later is not None:
                        self._send_to_delay_queue(delivery, message, left)
                    else:
                        self._wait_for_eta(delivery, message, left)
                    return
        self._queue(delivery, message)

    def _send_to_delay_queue(self, delivery: _Delivery, message: TaskMessage, left: float) -> None:
        """
        Publish a task due in ``left`` seconds (more than ``hold_eta``) into
        a delay queue of the broker, which brings it back to the queue
        later, and ack it once the broker confirmed: no daemon holds it
        meanwhile.  When the publish fails it is held here instead.
        """
        assert self.publish_later is not None
        self.delayed += 1
        d = defer.ensureDeferred(self.publish_later(message, left))

        def sent(_: None) -> None:
            delivery.ack()

        def not_sent(failure: Failure) -> None:
            log.warn(
                "Could not move task {task}[{id}] to a delay queue ({why}); holding it here",
                task=message.task,
                id=message.id,
                why=str(failure.value) or failure.type.__name__,
            )
            if self.stopping:
                delivery.reject(requeue=True)
            else:
                eta = _timestamp(message.eta) if message.eta is not None else 0.0
                self._wait_for_eta(delivery, message, max(0.0, eta - self.clock.seconds()))

        d.addCallbacks(sent, not_sent)
        self._track(d)

    def _queue(self, delivery: _Delivery, message: TaskMessage) -> None:
        """
        Run a task that is due: on the reactor if it is a reactor task,
        else on the next idle child.
        """
        runner = self.reactor_runner
        if runner is not None and runner.handles(message.task):
            if self.store_down_since is not None:
                # As for children: nothing starts while the store is down.
                def later() -> None:
                    del self._waiting[call]
                    self._queue(delivery, message)

                call = self.clock.callLater(STORE_RETRY_START, later)
                self._waiting[call] = (delivery, message)
                return
            if self._set_aside(delivery, message):
                return
            d = runner.run_message(message)
            d.addCallback(lambda outcome: self._ran([outcome], [(delivery, message)]))
            self._track(d)
            return
        self._pending.append((delivery, message))
        self.pump()

    def _expired(self, message: TaskMessage) -> bool:
        if message.expires is None:
            return False
        return self.clock.seconds() >= _timestamp(message.expires)

    def _wait_for_eta(self, delivery: _Delivery, message: TaskMessage, delay: float) -> None:
        """
        Hold a task (unacknowledged, so the broker still owns it) until its
        ETA, then queue it to run.
        """

        def due() -> None:
            del self._waiting[call]
            if self._expired(message):
                self._revoke(delivery, message, f"expired at {message.expires}")
            elif self.check_duplicates:
                self._to_check(delivery, message)  # revoked while it waited?
            else:
                self._admit(delivery, message)  # still early if the clock stepped back

        call = self.clock.callLater(delay, due)
        self._waiting[call] = (delivery, message)

    def _revoke(self, delivery: _Delivery, message: TaskMessage, reason: str) -> None:
        log.info(
            "Task {task}[{id}] revoked: {reason}", task=message.task, id=message.id, reason=reason
        )
        record = OutcomeRecord(
            message.id, revoked_document(message.id, message.task, reason), message.taskset
        )
        d = self._write([record])
        d.addCallbacks(lambda _: delivery.ack(), lambda _: self._give_back([(delivery, message)]))
        self._track(d)

    def pump(self) -> None:
        """
        Hand queued tasks to idle children, spread evenly over them; none
        while the result store is unavailable (their outcomes could not be
        stored: they wait, unacknowledged, until it is back).
        """
        pending = self._pending
        while pending and self.store_down_since is None:
            idle = self.pool.idle_count
            if idle <= 0:
                return
            delivery, message = pending[0]
            if self._set_aside(delivery, message):
                pending.popleft()
                continue
            limit = self._time_limit(message)
            if limit is not None or message.id in self._suspects:
                # Alone: its time limit is its batch's, or it may be the
                # one that killed a child.
                self._run([pending.popleft()], limit)
                continue
            size = min(self.max_batch, -(-len(pending) // idle))
            batch: list[tuple[_Delivery, TaskMessage]] = []
            while pending and len(batch) < size:
                delivery, message = pending[0]
                if self._set_aside(delivery, message):
                    pending.popleft()
                    continue
                if self._time_limit(message) is not None or message.id in self._suspects:
                    break
                batch.append(pending.popleft())
            if batch:
                self._run(batch, None)

    def _set_aside(self, delivery: _Delivery, message: TaskMessage) -> bool:
        """
        Whether a queued task must not start now: it expired (it is
        revoked), or its claim may have lapsed while it waited (the daemon
        was paused, or a renewal failed): it is claimed again first, so it
        never starts after another attempt committed it.
        """
        if self._expired(message):
            self._revoke(delivery, message, f"expired at {message.expires}")
            return True
        if self.claims is None:
            return False
        token = self._tokens.get(message.id)
        if token is not None and self.clock.seconds() < self._lease_until.get(message.id, 0):
            return False
        log.info("The claim on task {id} may have lapsed: claiming it again", id=message.id)
        if token is not None:
            self._release([(message.id, token)])
        self._to_check(delivery, message)
        return True

    def _time_limit(self, message: TaskMessage) -> float | None:
        hard = self.pool.task_limits.get(message.task, (None, None))[1]
        return hard or self.time_limit

    def _run(self, batch: list[tuple[_Delivery, TaskMessage]], limit: float | None) -> None:
        d = self.pool.run_batch([delivery.body for delivery, _ in batch], limit)
        d.addCallbacks(self._ran, self._lost, callbackArgs=(batch,), errbackArgs=(batch,))
        self._track(d)

    def _track(self, d: defer.Deferred[Any]) -> None:
        self._in_flight.add(d)

        def done(result: Any) -> Any:
            self._in_flight.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("Unexpected dispatcher error", f))

    def _ran(
        self, outcomes: list[bytes], batch: list[tuple[_Delivery, TaskMessage]]
    ) -> defer.Deferred[None]:
        if len(outcomes) != len(batch):
            log.error(
                "A child answered {got} outcomes for {sent} tasks; they go back to the queue",
                got=len(outcomes),
                sent=len(batch),
            )
            self._give_back(batch)
            return defer.succeed(None)
        records = []
        retrying: list[tuple[_Delivery, TaskMessage, bytes]] | None = None
        for (delivery, message), outcome in zip(batch, outcomes, strict=True):
            status = _top_status(outcome)
            if status == RETRY:
                if retrying is None:
                    retrying = []
                retrying.append((delivery, message, outcome))
                continue
            failed = status == FAILURE
            if failed and self._unknown_task(message, outcome):
                outcome = mark_dead_lettered(outcome, UNKNOWN_TASK)
            records.append(OutcomeRecord(message.id, outcome, message.taskset, failed))
        if retrying is None:
            return self._store(batch, records, STORE_RETRY_START)
        return self._split_retries(batch, records, retrying)

    def _split_retries(
        self,
        batch: list[tuple[_Delivery, TaskMessage]],
        records: list[OutcomeRecord],
        retrying: list[tuple[_Delivery, TaskMessage, bytes]],
    ) -> defer.Deferred[None]:
        """
        Store the outcomes of a batch in which some tasks asked to retry
        (``records`` are those of the others, in order): the others as
        usual, the retries through :py:meth:`_store` with the
        messages of their next attempt (``retries`` one more, the ETA their
        countdown gives).  Without a publisher a retry is a failure.
        """
        retried = {id(message) for _, message, _ in retrying}
        writes = []
        if records:
            kept = [entry for entry in batch if id(entry[1]) not in retried]
            writes.append(self._store(kept, records, STORE_RETRY_START))
        now = self.clock.seconds()
        retry_batch = []
        retry_records = []
        attempts = []
        for delivery, message, outcome in retrying:
            self._forget_attempts(message.id)
            if self.publish_later is None:
                log.error(
                    "Task {task}[{id}] asked to retry, but this daemon cannot publish: it fails",
                    task=message.task,
                    id=message.id,
                )
                failure = retry_failed(outcome)
                writes.append(
                    self._store(
                        [(delivery, message)],
                        [OutcomeRecord(message.id, failure, message.taskset, True)],
                        STORE_RETRY_START,
                    )
                )
                continue
            document, eta = schedule_retry(outcome, now)
            retry_batch.append((delivery, message))
            # A retry is not counted in its taskset: the task is not done.
            retry_records.append(OutcomeRecord(message.id, document, None, False))
            attempts.append(dataclasses.replace(message, retries=message.retries + 1, eta=eta))
        if retry_batch:
            writes.append(self._store(retry_batch, retry_records, STORE_RETRY_START, attempts))
        return gather(writes).addCallback(lambda _: None)

    def _publish_retry(
        self, delivery: _Delivery, attempt: TaskMessage, pause: float = STORE_RETRY_START
    ) -> defer.Deferred[None]:
        """
        Publish the next attempt of a task whose RETRY is stored (into a
        delay queue when it is due in more than ``hold_eta`` seconds), then
        ack the delivery of this attempt once the broker confirmed.  When
        the publish fails it is tried again after a pause that doubles up
        to a minute (a copy of this attempt delivered again meanwhile is
        superseded by the stored RETRY, so the next attempt must go out).
        When the daemon stops first, the RETRY is stored again for this
        attempt, so that its delivery, back in the queue, runs again.
        """
        assert self.publish_later is not None and attempt.eta is not None
        left = _timestamp(attempt.eta) - self.clock.seconds()
        d = defer.ensureDeferred(self.publish_later(attempt, left if left > self.hold_eta else 0.0))

        def published(_: None) -> None:
            self.retried += 1
            log.info(
                "Task {task}[{id}] retries ({n}) at {eta}",
                task=attempt.task,
                id=attempt.id,
                n=attempt.retries,
                eta=attempt.eta,
            )
            delivery.ack()

        def not_published(failure: Failure) -> defer.Deferred[None] | None:
            if not self.stopping:
                log.failure(
                    "Could not publish the retry of task {task}[{id}]; trying again in {p} s",
                    failure,
                    task=attempt.task,
                    id=attempt.id,
                    p=pause,
                )
                return deferLater(self.clock, pause, lambda: None).addCallback(
                    lambda _: self._publish_retry(
                        delivery, attempt, min(pause * 2, STORE_RETRY_MAX)
                    )
                )
            log.failure(
                "Could not publish the retry of task {task}[{id}]; it goes back to the queue",
                failure,
                task=attempt.task,
                id=attempt.id,
            )
            current = retry_document(
                attempt.id, attempt.task, RuntimeError("retry not published"), attempt.retries - 1
            )
            d = self.backend.store_results([OutcomeRecord(attempt.id, current, attempt.taskset)])
            d.addBoth(lambda _: delivery.reject(requeue=True))
            return d

        return d.addCallbacks(published, not_published)

    def _store(
        self,
        batch: list[tuple[_Delivery, TaskMessage]],
        records: list[OutcomeRecord],
        pause: float,
        attempts: list[TaskMessage] | None = None,
    ) -> defer.Deferred[None]:
        """
        Store a batch's outcomes, then ack.  While the store fails, the
        outcomes are kept and written again after a pause that doubles up
        to a minute: the tasks do not run again, their messages stay
        unacknowledged.  When the daemon stops meanwhile they go back to
        the queue.

        :param attempts: the next attempts of a batch of retries, published
            once their RETRY outcomes are stored (see
            :py:meth:`_publish_retry`); each delivery is acked after that.
        """
        d = self._write(records)

        def stored(_: None) -> defer.Deferred[Any] | None:
            self._store_available()
            if attempts is not None:
                return gather(
                    [
                        self._publish_retry(delivery, attempt)
                        for (delivery, _), attempt in zip(batch, attempts, strict=True)
                    ]
                )
            dead = []
            for (delivery, message), record in zip(batch, records, strict=True):
                if message.id in self._suspects:
                    self._forget_attempts(message.id)
                if not record.failed:
                    delivery.ack()
                    continue
                self.failed += 1
                if dead_letter_reason(record.document) == UNKNOWN_TASK:
                    detail = f"task {message.task}[{message.id}]: no child registered it"
                    log.error(
                        "Dead-lettered a message ({reason}): {why}", reason=UNKNOWN_TASK, why=detail
                    )
                    dead.append(self._dead_letter(delivery, UNKNOWN_TASK, detail))
                else:
                    delivery.ack()
                    self._log_failure(message, record.document)
            self.completed += len(batch)
            return gather(dead) if dead else None

        def not_stored(failure: Failure) -> defer.Deferred[None] | None:
            if self.stopping:
                log.failure(
                    "Could not store {count} outcomes; their messages go back to the queue",
                    failure,
                    count=len(batch),
                )
                self._give_back(batch)
                return None
            log.failure(
                "Could not store {count} outcomes; trying again in {pause} s",
                failure,
                count=len(batch),
                pause=pause,
            )
            self.store_retries += 1
            self._store_unavailable()
            return deferLater(self.clock, pause, lambda: None).addCallback(
                lambda _: self._store(batch, records, min(pause * 2, STORE_RETRY_MAX), attempts)
            )

        return d.addCallbacks(stored, not_stored)

    def _log_failure(self, message: TaskMessage, outcome: bytes) -> None:
        parsed = Outcome.from_bytes(message.id, outcome)
        exc = parsed.exc or {}
        log.warn(
            "Task {task}[{id}] raised {type}: {text}",
            task=message.task,
            id=message.id,
            type=exc.get("type"),
            text=exc.get("message"),
        )

    def _lost(
        self, failure: Failure, batch: list[tuple[_Delivery, TaskMessage]]
    ) -> defer.Deferred[None] | None:
        """
        A child died running ``batch``.  Killed at its time limit: the task
        fails with TimeLimitExceeded.  Otherwise the tasks run again, each
        alone on the next idle child, so the one that kills children is found;
        after ``max_attempts`` deaths it fails with WorkerLostError and its
        message goes to the dead-letter queue.
        """
        lost = failure.value
        reason = getattr(lost, "reason", str(lost))
        if self.stopping:
            log.error("{count} tasks go back to the queue: {why}", count=len(batch), why=str(lost))
            self._give_back(batch)
            return None
        if reason == "time-limit" and len(batch) == 1:
            delivery, message = batch[0]
            error = TimeLimitExceeded(
                f"task {message.task} ran past its time limit of {lost.time_limit} s"
            )
            return self._fail(delivery, message, error, requeue_dead=False)
        if len(batch) > 1:
            log.warn("{count} tasks run again one by one: {why}", count=len(batch), why=str(lost))
            for delivery, message in reversed(batch):
                self._suspects.add(message.id)
                self._pending.appendleft((delivery, message))
            self.pump()
            return None
        delivery, message = batch[0]
        attempts = self._attempts[message.id] = self._attempts.get(message.id, 0) + 1
        if attempts >= self.max_attempts:
            error = WorkerLostError(
                f"the child running task {message.task} died ({reason}) "
                f"on each of {attempts} attempts"
            )
            return self._fail(delivery, message, error, requeue_dead=True)
        log.warn(
            "Task {task}[{id}] killed its child ({why}); attempt {n} of {most} next",
            task=message.task,
            id=message.id,
            why=reason,
            n=attempts + 1,
            most=self.max_attempts,
        )
        self._suspects.add(message.id)
        self._pending.appendleft((delivery, message))
        self.pump()
        return None

    def _fail(
        self, delivery: _Delivery, message: TaskMessage, error: Exception, requeue_dead: bool
    ) -> defer.Deferred[None]:
        """
        Store a failure the daemon decided on; then ack the message, or
        dead-letter it (``requeue_dead``).
        """
        self._forget_attempts(message.id)
        document = failure_document(
            message.id,
            message.task,
            error,
            traceback="",
            dead_letter=ATTEMPTS_EXHAUSTED if requeue_dead else None,
        )
        record = OutcomeRecord(message.id, document, message.taskset, True)
        self.failed += 1
        self.completed += 1
        self._log_failure(message, document)

        def settle(_: None) -> defer.Deferred[None] | None:
            if requeue_dead:
                return self._dead_letter(delivery, ATTEMPTS_EXHAUSTED, str(error))
            delivery.ack()
            return None

        return self._write([record]).addCallbacks(
            settle, lambda f: self._give_back([(delivery, message)])
        )

    def _forget_attempts(self, task_id: str) -> None:
        self._attempts.pop(task_id, None)
        self._suspects.discard(task_id)

    def _store_unavailable(self) -> None:
        """
        The store failed a read or a write: start no new task until it
        answers again (a write retried or a probe read succeeds).
        """
        if self.store_down_since is not None or self.stopping:
            return
        self.store_down_since = self.clock.seconds()
        log.warn("The result store is unavailable: no new task starts until it is back")
        self._probe_call = self.clock.callLater(STORE_RETRY_START, self._probe, STORE_RETRY_START)

    def _store_available(self) -> None:
        if self.store_down_since is None:
            return
        log.info(
            "The result store is back after {seconds:.1f} s: starting tasks again",
            seconds=self.clock.seconds() - self.store_down_since,
        )
        self.store_down_since = None
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        self._probe_call = None
        self.pump()

    def _probe(self, pause: float) -> None:
        """
        Read the store (one key that is never written) to learn when it is
        back, with a pause that doubles up to a minute between reads.
        """
        self._probe_call = None
        if self.store_down_since is None or self.stopping:
            return

        def still_down(failure: Failure) -> None:
            if self.store_down_since is not None and not self.stopping:
                following = min(pause * 2, STORE_RETRY_MAX)
                self._probe_call = self.clock.callLater(following, self._probe, following)

        d = self.backend.get_result(STORE_PROBE_ID)
        d.addCallbacks(lambda _: self._store_available(), still_down)
        self._track(d)

    def drain(self) -> defer.Deferred[None]:
        """
        Fire when every batch handed out so far is stored and settled.
        Tasks still queued here are returned to the broker.
        """
        self.stopping = True
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
            self._probe_call = None
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
            self._check_call = None
        for delivery, _message in self._unchecked:
            delivery.reject(requeue=True)
        self._unchecked = []
        returned = []
        while self._pending:
            delivery, message = self._pending.popleft()
            returned.append(message.id)
            delivery.reject(requeue=True)
        for call, (delivery, message) in list(self._waiting.items()):
            call.cancel()
            returned.append(message.id)
            delivery.reject(requeue=True)
        self._waiting.clear()
        for call, (delivery, _message) in list(self._held.items()):
            call.cancel()  # copies held here own no claim
            delivery.reject(requeue=True)
        self._held.clear()
        # Their claims are released so that another daemon runs them at once.
        self._release([(i, self._tokens[i]) for i in returned if i in self._tokens])
        if self._renewal.running and not self._tokens:
            self._renewal.stop()

        def settled(_: Any) -> None:
            if self._renewal.running:
                self._renewal.stop()

        return defer.DeferredList(list(self._in_flight)).addCallback(settled)


def _top_status(outcome: bytes) -> str:
    """
    The status of an outcome document without parsing it: the first
    ``"status"`` key is the top-level one (values before it are strings,
    whose quotes are escaped).
    """
    start = outcome.find(b'"status":"')
    if start < 0:
        start = outcome.find(b'"status": "')
        if start < 0:
            return ""
        start += len(b'"status": "')
    else:
        start += len(b'"status":"')
    return outcome[start : outcome.find(b'"', start)].decode("ascii", "replace")


def _timestamp(text: str) -> float:
    """
    Seconds since the epoch of an ISO 8601 time; one without a zone is UTC.
    """
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
