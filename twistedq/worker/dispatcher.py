"""
The dispatcher: from a delivery to a stored, acknowledged outcome.

For each delivery: validate it, queue it, hand batches to idle children,
store the outcomes (one pipelined write per batch) and only then ack.  A
message that is not a valid task message goes to the dead-letter queue
with one log line; a batch whose child died goes back to the queue.
"""

from __future__ import annotations

import datetime
from collections import deque
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.message import MAX_BODY_SIZE, MessageError, TaskMessage
from twistedq.outcome import Outcome, revoked_document

__all__ = ["Dispatcher"]

log = Logger()


class _Delivery(Protocol):
    body: bytes
    redelivered: bool

    def ack(self) -> None: ...

    def reject(self, requeue: bool) -> None: ...


class _Pool(Protocol):
    @property
    def idle_count(self) -> int: ...

    def run_batch(self, bodies: list[bytes]) -> defer.Deferred[list[bytes]]: ...


class Dispatcher:
    """
    Feeds the pool from the deliveries and settles each delivery after its
    outcome is stored.

    :ivar max_batch: the most tasks sent to one child in one call.
    """

    def __init__(
        self,
        pool: _Pool,
        backend: IResultBackend,
        clock: IReactorTime,
        max_batch: int = 8,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        self.pool = pool
        self.backend = backend
        self.clock = clock
        self.max_batch = max_batch
        self.max_body_size = max_body_size
        self._pending: deque[tuple[_Delivery, TaskMessage]] = deque()
        self._waiting: dict[IDelayedCall, tuple[_Delivery, TaskMessage]] = {}
        self._in_flight: set[defer.Deferred[None]] = set()
        self.completed = 0
        self.failed = 0
        self.rejected = 0

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def deliver(self, delivery: _Delivery) -> None:
        """
        Take one delivery from the consumer.
        """
        try:
            message = TaskMessage.decode(delivery.body, self.max_body_size)
        except MessageError as e:
            self.rejected += 1
            log.error("Dead-lettered a malformed message: {why}", why=str(e))
            delivery.reject(requeue=False)
            return
        if message.expires is not None or message.eta is not None:
            now = self.clock.seconds()
            if self._expired(message):
                self._revoke(delivery, message, f"expired at {message.expires}")
                return
            if message.eta is not None and _timestamp(message.eta) > now:
                self._wait_for_eta(delivery, message, _timestamp(message.eta) - now)
                return
        self._pending.append((delivery, message))
        self.pump()

    def _expired(self, message: TaskMessage) -> bool:
        return message.expires is not None and self.clock.seconds() >= _timestamp(message.expires)

    def _wait_for_eta(self, delivery: _Delivery, message: TaskMessage, delay: float) -> None:
        """
        Hold a task (unacknowledged, so the broker still owns it) until its
        ETA, then queue it to run.
        """

        def due() -> None:
            del self._waiting[call]
            if self._expired(message):
                self._revoke(delivery, message, f"expired at {message.expires}")
                return
            self._pending.append((delivery, message))
            self.pump()

        call = self.clock.callLater(delay, due)
        self._waiting[call] = (delivery, message)

    def _revoke(self, delivery: _Delivery, message: TaskMessage, reason: str) -> None:
        log.info(
            "Task {task}[{id}] revoked: {reason}", task=message.task, id=message.id, reason=reason
        )
        record = OutcomeRecord(
            message.id, revoked_document(message.id, message.task, reason), message.taskset
        )
        d = self.backend.store_results([record])
        d.addCallbacks(lambda _: delivery.ack(), lambda _: delivery.reject(requeue=True))
        self._track(d)

    def pump(self) -> None:
        """
        Hand queued tasks to idle children, spread evenly over them.
        """
        pending = self._pending
        while pending:
            idle = self.pool.idle_count
            if idle <= 0:
                return
            size = min(self.max_batch, -(-len(pending) // idle))
            batch = []
            while pending and len(batch) < size:
                delivery, message = pending.popleft()
                if message.expires is not None and self._expired(message):
                    self._revoke(delivery, message, f"expired at {message.expires}")
                else:
                    batch.append((delivery, message))
            if not batch:
                continue
            d = self.pool.run_batch([delivery.body for delivery, _ in batch])
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
            for delivery, _message in batch:
                delivery.reject(requeue=True)
            return defer.succeed(None)
        records = [
            OutcomeRecord(message.id, outcome, message.taskset, _is_failure(outcome))
            for (_, message), outcome in zip(batch, outcomes, strict=True)
        ]
        d = self.backend.store_results(records)

        def stored(_: None) -> None:
            for delivery, _message in batch:
                delivery.ack()
            self.completed += len(batch)
            for (_, message), record in zip(batch, records, strict=True):
                if record.failed:
                    self.failed += 1
                    self._log_failure(message, record.document)

        def not_stored(failure: Failure) -> None:
            log.failure(
                "Could not store {count} outcomes; their messages go back to the queue",
                failure,
                count=len(batch),
            )
            for delivery, _message in batch:
                delivery.reject(requeue=True)

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

    def _lost(self, failure: Failure, batch: list[tuple[_Delivery, TaskMessage]]) -> None:
        log.error(
            "{count} tasks go back to the queue: {why}",
            count=len(batch),
            why=str(failure.value),
        )
        for delivery, _message in batch:
            delivery.reject(requeue=True)

    def drain(self) -> defer.Deferred[None]:
        """
        Fire when every batch handed out so far is stored and settled.
        Tasks still queued here are returned to the broker.
        """
        while self._pending:
            delivery, _message = self._pending.popleft()
            delivery.reject(requeue=True)
        for call, (delivery, _message) in list(self._waiting.items()):
            call.cancel()
            delivery.reject(requeue=True)
        self._waiting.clear()
        return defer.DeferredList(list(self._in_flight)).addCallback(lambda _: None)


def _is_failure(outcome: bytes) -> bool:
    # The top-level status is the first "status" key of the document.
    return outcome.find(b'"status":"') == outcome.find(b'"status":"FAILURE"')


def _timestamp(text: str) -> float:
    """
    Seconds since the epoch of an ISO 8601 time; one without a zone is UTC.
    """
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
