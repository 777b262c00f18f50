"""
Publishing tasks and reading their outcomes.

:py:obj:`AsyncClient` is the Twisted API; :py:obj:`Client` is the blocking facade for
Django and scripts, which runs an :py:obj:`AsyncClient` on a reactor in a
background thread (:py:obj:`twistedq.reactor_thread`).  Both use the same AMQP
adapter and result backends as the daemon, except that a :py:obj:`Client` reads
a store that has a blocking reader (memcached, through pymemcache: see
:py:mod:`twistedq.backends.blocking`) in the calling thread, without the
reactor thread.  A :py:obj:`Client` may be shared by any number of threads.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq import context, result
from twistedq.amqp.broker import (
    BrokerConnection,
    BrokerUnavailable,
    Publisher,
    PublishRefused,
    PublishUncertain,
    Topology,
    broker_addresses,
    check_priority,
    describe,
)
from twistedq.backends.base import (
    ClaimState,
    IClaimStore,
    IPendingRecords,
    IResultBackend,
    OutcomeRecord,
    TasksetState,
)
from twistedq.backends.blocking import BlockingReader, blocking_reader_from_url
from twistedq.backends.url import backend_from_url
from twistedq.conf import Settings
from twistedq.context import default_client, set_default_client
from twistedq.message import MessageError, TaskMessage, new_task_id
from twistedq.outcome import Outcome, pending_document, revoked_document
from twistedq.reactor_thread import ReactorThread, reactor_thread
from twistedq.result import AsyncResult
from twistedq.states import READY_STATES

__all__ = ["AsyncClient", "Client", "default_client", "set_default_client"]

log = Logger()


def _drop(waiter: defer.Deferred[Any] | None) -> None:
    """
    Stop waiting on a notification Deferred, quietly.
    """
    if waiter is not None:
        waiter.addErrback(lambda failure: None)
        waiter.cancel()


#: The lease of the claims a revocation takes for an instant.
_REVOKE_LEASE = 30.0

#: How many attempts to connect a publish makes, while the broker cannot
#: be reached, before it fails with BrokerUnavailable (the first at once,
#: then after 0.1 s).
CONNECT_ATTEMPTS = 2

#: The delivery limit of the quorum queues a client declares (those the
#: daemons declare have ``--task-attempts``, 3 by default).
DELIVERY_LIMIT = 3

#: The longest a publish waits for the pending record of what the broker
#: confirmed, in seconds; the write goes on in the background after that.
RECORD_TIMEOUT = 1.0


class AsyncClient:
    """
    Publishes task messages with publisher confirms and reads outcomes, on
    the reactor thread.  The broker connection is made once and kept (and
    re-made after a failure).  With signing keys in ``settings`` every
    message is signed; a message over ``settings.max_message_size`` is
    refused with :py:class:`~twistedq.message.MessageError`.

    ``settings.broker_url`` may name the nodes of a cluster, comma-separated:
    the connection moves to the next one when its node fails, and a publish
    tries each node once before it fails with
    :py:class:`~twistedq.amqp.broker.BrokerUnavailable`.

    The client takes the queues as they exist (the daemons declare them
    with their options); it declares only missing ones:

    :param queue_type: ``"classic"`` (the default) or ``"quorum"``: the
        type of the queues it declares; quorum ones with a delivery limit of
        :py:data:`DELIVERY_LIMIT`, as the daemons' default ``--task-attempts``.
    :param max_priority: declare missing task queues with priorities
        (classic queues: ``x-max-priority``), as the daemons'
        ``--max-priority`` does.
    """

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        confirm_timeout: float = 30.0,
        notify: bool = True,
        record_timeout: float = RECORD_TIMEOUT,
        queue_type: str | None = None,
        max_priority: int | None = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.notify = notify
        self.record_timeout = record_timeout
        #: The reactor's trigger that closes this client before shutdown,
        #: if one was added.
        self.shutdown_trigger: Any = None
        addresses = broker_addresses(settings.broker_url)
        self.connection = BrokerConnection(addresses, reactor)
        self.publisher = Publisher(
            self.connection,
            Topology(
                exchange=settings.exchange,
                queue=settings.queue,
                queue_type=queue_type,
                delivery_limit=DELIVERY_LIMIT if queue_type == "quorum" else None,
                max_priority=max_priority,
                take_existing=True,
            ),
            confirm_timeout=confirm_timeout,
            signing=settings.signing(),
            max_message_size=settings.max_message_size,
            # Each node once, and the first twice.
            connect_attempts=CONNECT_ATTEMPTS + len(addresses) - 1,
        )
        self.backend: IResultBackend = backend_from_url(
            settings.result_backend, reactor, ttl=settings.result_expires
        )
        self.backend.connect().addErrback(lambda f: None)
        self.connection.startService()

    def publish(
        self, message: TaskMessage, queue: str | None = None, priority: int | None = None
    ) -> defer.Deferred[None]:
        """
        Publish one message; fires once the broker confirmed it (see
        :py:meth:`publish_many`).
        """
        return self.publish_many([message], queue, priority)

    def publish_many(
        self,
        messages: Sequence[TaskMessage],
        queue: str | None = None,
        priority: int | None = None,
    ) -> defer.Deferred[None]:
        """
        Publish several messages at once, all confirms awaited together,
        then record them as pending in the result store (one write; none
        for a message that says ``ignore_result``).
        ``priority`` (0 to 9) is each message's priority, for a queue
        declared with priorities (``--max-priority``).

        Once the broker confirmed them, nothing fails the call: the pending
        record is waited for at most ``record_timeout`` seconds, and a
        failure to write it is logged.

        :raises BrokerUnavailable: the first message (in order) that was
            surely not published, when no message's publish was uncertain;
            its ``confirmed_ids`` are those the broker confirmed.
        :raises PublishUncertain: the first message whose publish is
            uncertain, with ``confirmed_ids`` as above.
        :raises twistedq.amqp.broker.PublishRefused: the first message the
            broker refused, when none was uncertain, with ``confirmed_ids``
            as above.
        :raises MessageError: a message breaks a rule of
            :py:meth:`TaskMessage.check`; nothing was published.
        :raises ValueError: ``priority`` is not 0 to 9.
        """
        try:
            check_priority(priority)
            # Encoded (and so validated) once, all before any is published.
            encoded = [(message, message.encode()) for message in messages]
        except (MessageError, ValueError):
            return defer.fail()
        return self.publish_encoded(encoded, queue, priority)

    def publish_encoded(
        self,
        encoded: Sequence[tuple[TaskMessage, bytes]],
        queue: str | None = None,
        priority: int | None = None,
    ) -> defer.Deferred[None]:
        """
        :py:meth:`publish_many` for messages already encoded (and so
        validated) by :py:meth:`TaskMessage.encode`, each with its body.

        On a store that can take pending records back
        (:py:class:`~twistedq.backends.base.IPendingRecords`: Redis, SQLite,
        memory) the records are written while the messages are published,
        not after the confirms, and those of messages surely not published
        (refused, unroutable, or not sent) are taken back before the call
        fails; a message whose publish is uncertain keeps its record.  On
        the other stores only confirmed messages are recorded, after the
        confirms.
        """
        messages = [message for message, _ in encoded]
        publishing = defer.Deferred.fromCoroutine(
            self.publisher.publish_batch(encoded, queue, priority)
        )
        if publishing.called and isinstance(publishing.result, Failure):
            refused = publishing.result  # before anything was published
            publishing.addErrback(lambda _: None)
            return defer.fail(refused)
        sent_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
        # A task that ignores its result has no pending record.
        kept = {m.id for m in messages if not m.ignore_result}
        records = [
            (m.id, pending_document(m.id, m.task, sent_at)) for m in messages if m.id in kept
        ]
        started = self.reactor.seconds()
        early = records and IPendingRecords.providedBy(self.backend)
        written = self._mark(records) if early else None
        return defer.Deferred.fromCoroutine(
            self._confirmed(publishing, messages, kept, records, written, started)
        )

    async def _confirmed(
        self,
        publishing: defer.Deferred[list[Exception | None]],
        messages: list[TaskMessage],
        kept: set[str],
        records: list[tuple[str, bytes]],
        written: defer.Deferred[None] | None,
        started: float,
    ) -> None:
        """
        Wait for a batch's confirms; settle its pending records (take back
        those written early of messages surely not published, or write
        those of the confirmed ones now), and raise the batch's error.
        """
        try:
            errors = await publishing
        except Exception:
            # Raised before the batch was written: nothing was sent.
            if written is not None:
                await self._settle_records(written, started, len(records), records)
            raise
        confirmed = [m for m, error in zip(messages, errors, strict=True) if error is None]
        # Aligned with the records: a task that ignores its result has none.
        outcomes = [error for m, error in zip(messages, errors, strict=True) if m.id in kept]
        if written is not None:
            unsent = [
                record
                for record, error in zip(records, outcomes, strict=True)
                if error is not None and not isinstance(error, PublishUncertain)
            ]
            await self._settle_records(written, started, len(records), unsent)
        else:
            sent = [record for record, error in zip(records, outcomes, strict=True) if not error]
            if sent:
                await self._wait_record(self._mark(sent), self.reactor.seconds(), len(sent))
        failures = [error for error in errors if error is not None]
        if failures:
            error = next((e for e in failures if isinstance(e, PublishUncertain)), failures[0])
            if isinstance(error, (BrokerUnavailable, PublishUncertain, PublishRefused)):
                error.confirmed_ids = [m.id for m in confirmed]
            raise error

    def _mark(self, records: list[tuple[str, bytes]]) -> defer.Deferred[None]:
        """
        Write pending records; the Deferred never fails (a failure is
        logged: the broker may have the tasks, and failing the publish
        would invite a duplicate; without the record they read as unknown
        until they finish).
        """

        def failed(failure: Failure) -> None:
            log.warn(
                "Could not record {count} published tasks as pending: {reason}",
                count=len(records),
                reason=describe(failure),
            )

        return self.backend.mark_sent(records).addErrback(failed)

    async def _settle_records(
        self,
        written: defer.Deferred[None],
        started: float,
        count: int,
        unsent: list[tuple[str, bytes]],
    ) -> None:
        """
        Wait for the pending records written with the publish, then take
        back those of the ``unsent`` messages (surely not published), each
        wait at most ``record_timeout`` seconds.
        """
        await self._wait_record(written, started, count)
        if not unsent:
            return
        taken: defer.Deferred[None] = defer.Deferred()

        def take_back(_: object) -> None:
            # After the write, even one that outlived the wait: it must not
            # land after its undo.
            undo = cast(IPendingRecords, self.backend).unmark_sent(unsent)
            undo.addErrback(
                lambda failure: log.warn(
                    "Could not take back the pending records of {count} tasks that were "
                    "not published: {reason}",
                    count=len(unsent),
                    reason=describe(failure),
                )
            )
            undo.addBoth(lambda _: taken.callback(None))

        written.addCallback(take_back)
        if not await self._within(taken, self.record_timeout):
            log.warn(
                "The result store did not take back the pending records of {count} tasks "
                "that were not published within {seconds} s; the write goes on",
                count=len(unsent),
                seconds=self.record_timeout,
            )

    async def _wait_record(self, written: defer.Deferred[None], started: float, count: int) -> None:
        """
        Wait for pending records written since ``started``, until
        ``record_timeout`` seconds after it; the write goes on after that.
        """
        left = started + self.record_timeout - self.reactor.seconds()
        if not await self._within(written, left):
            log.warn(
                "The result store did not record {count} published tasks as pending "
                "within {seconds} s; the write goes on",
                count=count,
                seconds=self.record_timeout,
            )

    async def _within(self, d: defer.Deferred[Any], seconds: float) -> bool:
        """
        Wait for ``d`` at most ``seconds``; tell whether it fired.  Its
        result is left to the callbacks added after.
        """
        if d.called:
            return True
        waited: defer.Deferred[None] = defer.Deferred()

        def done(result: object = None) -> object:
            if not waited.called:
                waited.callback(None)
            return result

        d.addBoth(done)
        timer = self.reactor.callLater(max(0.0, seconds), done)
        await waited
        if timer.active():
            timer.cancel()
            return True
        return d.called

    def abandon(self, messages: Sequence[TaskMessage], reason: str) -> defer.Deferred[list[str]]:
        """
        Record messages whose publish failed as ``REVOKED`` with ``reason``,
        counted in their tasksets (as failed) so a taskset completes.  A
        message that was queued after all is then acked without running.
        A task that has a final outcome already is left alone.  Fires with
        the ids revoked.
        """
        return defer.Deferred.fromCoroutine(
            self._revoke([m.id for m in messages], reason, {m.id: m for m in messages})
        )

    def wait_outcome(self, task_id: str, timeout: float | None = None) -> defer.Deferred[Outcome]:
        """
        Fire with the task's outcome once it is ready.  A store that
        announces new outcomes (Redis) wakes the wait as soon as the outcome
        lands (and the store is re-read every second in case a notification
        was missed); others are read with a pause doubling from half a
        millisecond to 50 ms.

        :raises TimeoutError: not ready within ``timeout`` seconds.
        """
        # Only some stores announce new outcomes (the Redis one has waiter()).
        waiter_for: Callable[[str], defer.Deferred[None]] | None = (
            getattr(self.backend, "waiter", None) if self.notify else None
        )
        clock = self.reactor

        async def wait() -> Outcome:
            deadline = None if timeout is None else clock.seconds() + timeout
            pause = result.POLL_START  # read now: a benchmark may change it
            while True:
                waiter = waiter_for(task_id) if waiter_for is not None else None
                reading = self.get_outcomes([task_id])
                if deadline is not None:
                    # A store that does not answer does not hold the caller
                    # past its timeout.
                    reading.addTimeout(max(deadline - clock.seconds(), 0.0), clock)
                try:
                    (outcome,) = await reading
                except defer.TimeoutError:
                    _drop(waiter)
                    raise TimeoutError(
                        f"task {task_id} not ready within {timeout} s: the result store "
                        "did not answer in time"
                    ) from None
                if outcome.ready:
                    _drop(waiter)
                    return outcome
                left = None if deadline is None else deadline - clock.seconds()
                if left is not None and left <= 0:
                    _drop(waiter)
                    raise TimeoutError(f"task {task_id} not ready within {timeout} s")
                if waiter is not None:
                    # Woken by the notification; re-read every second in case
                    # one was missed while the subscription reconnected.
                    delay = 1.0 if left is None else min(1.0, left)
                    waiter.addTimeout(delay, clock)
                    try:
                        await waiter
                    except (defer.TimeoutError, defer.CancelledError):
                        pass
                else:
                    delay = pause if left is None else min(pause, left)
                    await deferLater(clock, delay, lambda: None)
                    pause = min(pause * 2, result.POLL_MAX)

        return defer.Deferred.fromCoroutine(wait())

    def purge(self, queue: str | None = None) -> defer.Deferred[int]:
        """
        Delete the tasks waiting in the queue; fires with how many.
        """
        return defer.Deferred.fromCoroutine(self.publisher.purge(queue))

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        """
        Delete stored outcomes.
        """
        return self.backend.forget(list(task_ids))

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        """
        Record a taskset before its subtasks are published.
        """
        return self.backend.create_taskset(taskset_id, total)

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        """
        A taskset's progress, in one read of the store.
        """
        return self.backend.get_taskset(taskset_id)

    def get_outcomes(self, task_ids: Sequence[str]) -> defer.Deferred[list[Outcome]]:
        """
        The outcomes of several tasks (:py:obj:`twistedq.states.PENDING` where none
        is stored).
        """
        ids = list(task_ids)
        d = self.backend.get_results(ids)
        return d.addCallback(
            lambda found: [Outcome.from_bytes(i, data) for i, data in zip(ids, found, strict=True)]
        )

    def revoke(self, task_ids: Sequence[str], reason: str = "revoked") -> defer.Deferred[list[str]]:
        """
        Revoke tasks that have not run: a ``REVOKED`` outcome is stored for
        each id without a final outcome, so a daemon that receives the task
        later, even one that was down when it was revoked, acks it without
        running it.  On a store with claims the revocation claims the task
        first, so it is atomic: a task a daemon has already taken (claimed,
        to run now) is not revoked.  A task already running is not stopped.
        Fires with the ids revoked.
        """
        return defer.Deferred.fromCoroutine(self._revoke(list(task_ids), reason, {}))

    async def _revoke(
        self, ids: list[str], reason: str, messages: dict[str, TaskMessage]
    ) -> list[str]:
        outcomes = await self.get_outcomes(ids)
        records = []
        for outcome in outcomes:
            if outcome.status in READY_STATES:
                continue
            message = messages.get(outcome.task_id)
            name = message.task if message is not None else outcome.task or ""
            records.append(
                OutcomeRecord(
                    outcome.task_id,
                    revoked_document(outcome.task_id, name, reason),
                    message.taskset if message is not None else None,
                    failed=True,
                )
            )
        if not records:
            return []
        if not IClaimStore.providedBy(self.backend):
            await self.backend.store_results(records)
            return [record.task_id for record in records]
        claims = await self.backend.claim_tasks(
            [record.task_id for record in records], _REVOKE_LEASE
        )
        taken = [
            (record, claim.token)
            for record, claim in zip(records, claims, strict=True)
            if claim.state is ClaimState.CLAIMED
        ]
        committed = await self.backend.commit_outcomes(
            [record for record, _ in taken], [token for _, token in taken]
        )
        return [record.task_id for (record, _), ok in zip(taken, committed, strict=True) if ok]

    def close(self) -> defer.Deferred[None]:
        """
        Close the broker connection and the result backend.
        """
        d = self.connection.stopService()
        return d.addBoth(lambda _: self.backend.close())


class Client:
    """
    The blocking client.

    :ivar settings: where tasks and results go.
    :ivar timeout: how long each call may wait for the broker or the store
        (by default ``settings.publish_timeout``: ``TWISTEDQ_PUBLISH_TIMEOUT``
        in the environment or the Django settings, else 30 s).
    :ivar notify: wake waiting ``get()`` calls by the store's notification
        where it has one (Redis); else read with back-off.
    :ivar queue_type: the type of the queues declared when missing (see
        :py:class:`AsyncClient`).
    :ivar max_priority: the priorities of task queues declared when missing.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker_url: str | None = None,
        result_backend: str | None = None,
        queue: str | None = None,
        timeout: float | None = None,
        notify: bool = True,
        thread: ReactorThread = reactor_thread,
        queue_type: str | None = None,
        max_priority: int | None = None,
    ) -> None:
        if settings is None:
            settings = Settings.from_environment(
                broker_url=broker_url, result_backend=result_backend, queue=queue
            )
        broker_addresses(settings.broker_url)
        Topology(queue_type=queue_type, max_priority=max_priority)  # refuse what does not fit
        self.queue_type = queue_type
        self.max_priority = max_priority
        settings.validate()
        self.settings = settings
        self.timeout = settings.publish_timeout if timeout is None else timeout
        self.notify = notify
        self._thread = thread
        self._lock = threading.Lock()
        self._async: AsyncClient | None = None
        self._reader: BlockingReader | None = None
        self._reader_chosen = False

    def _blocking_reader(self) -> BlockingReader | None:
        """
        The store's blocking reader, or :py:obj:`None` when the store is
        read on the reactor thread; chosen at the first read.
        """
        with self._lock:
            if not self._reader_chosen:
                self._reader = blocking_reader_from_url(self.settings.result_backend, self.timeout)
                self._reader_chosen = True
            return self._reader

    @property
    def async_client(self) -> AsyncClient:
        """
        The Twisted half of this client (made on the reactor thread on
        first use), for code that runs on the reactor thread and shares
        its connection and store: call its methods there only.
        """
        return self._client()

    def _client(self) -> AsyncClient:
        with self._lock:
            if self._async is None:
                self._async = self._thread.call(self._start, timeout=self.timeout)
            return self._async

    def _start(self) -> AsyncClient:
        """
        Make the asynchronous client, on the reactor thread; it is closed
        before the reactor stops (at interpreter exit), so the exit is
        quiet.
        """
        reactor = self._thread.reactor
        client = AsyncClient(
            self.settings,
            reactor,
            confirm_timeout=self.timeout,
            notify=self.notify,
            record_timeout=min(RECORD_TIMEOUT, self.timeout),
            queue_type=self.queue_type,
            max_priority=self.max_priority,
        )
        client.shutdown_trigger = reactor.addSystemEventTrigger("before", "shutdown", client.close)
        return client

    def delay_task(self, task_name: str, *args: Any, **kwargs: Any) -> AsyncResult:
        """
        Publish a task by name and return its :py:obj:`AsyncResult`; returns once
        the broker has confirmed the message.
        """
        message = TaskMessage(id=new_task_id(), task=task_name, args=args, kwargs=kwargs)
        self.publish(message)
        return AsyncResult(message.id, self)

    def publish(
        self, message: TaskMessage, queue: str | None = None, priority: int | None = None
    ) -> None:
        """
        Publish one message (to ``queue``, by default the configured one)
        and wait for the broker's confirm.
        """
        self.publish_many([message], queue, priority)

    def publish_many(
        self,
        messages: Iterable[TaskMessage],
        queue: str | None = None,
        priority: int | None = None,
    ) -> None:
        """
        Publish many messages in one go (confirms awaited together); see
        :py:meth:`AsyncClient.publish_many`.  Returns once the broker has
        confirmed them all, whether or not the result store took their
        pending records.  ``priority`` (0 to 9) is each message's
        priority, for a queue declared with priorities.

        :raises BrokerUnavailable: a message was surely not published.
        :raises PublishUncertain: a message may or may not be queued.
        :raises MessageError: a message breaks a rule of
            :py:meth:`TaskMessage.check`; nothing was published.
        """
        check_priority(priority)
        # Encoded (and so validated) once, here, all of them before any is
        # published.
        batch = [(message, message.encode()) for message in messages]
        if not batch:
            return
        client = self._client()
        # The connection and the confirm are bounded on the reactor, each
        # by the timeout, and the pending record and its undo each by
        # RECORD_TIMEOUT: this is only a safety net.
        limit = 2 * self.timeout + 2 * RECORD_TIMEOUT + 5
        try:
            self._thread.call(client.publish_encoded, batch, queue, priority, timeout=limit)
        except TimeoutError:
            raise PublishUncertain(batch[0][0].id, limit) from None

    def abandon(self, messages: Sequence[TaskMessage], reason: str) -> list[str]:
        """
        Record messages whose publish failed as ``REVOKED``, counted in
        their tasksets (:py:meth:`AsyncClient.abandon`); returns the ids
        revoked.
        """
        return self._thread.call(
            self._client().abandon, list(messages), reason, timeout=self.timeout
        )

    def purge(self, queue: str | None = None) -> int:
        """
        Delete the tasks waiting in the queue; return how many there were.
        """
        return self._thread.call(self._client().purge, queue, timeout=self.timeout)

    def forget(self, task_ids: Sequence[str]) -> None:
        """
        Delete the stored outcomes of these tasks.
        """
        self._thread.call(self._client().forget, list(task_ids), timeout=self.timeout)

    def revoke(self, task_ids: Sequence[str], reason: str = "revoked") -> list[str]:
        """
        Revoke tasks that have not run (:py:meth:`AsyncClient.revoke`);
        returns the ids revoked.
        """
        return self._thread.call(
            self._client().revoke, list(task_ids), reason, timeout=self.timeout
        )

    def create_taskset(self, taskset_id: str, total: int) -> None:
        """
        Record a taskset of ``total`` subtasks before they are published.
        """
        self._thread.call(self._client().create_taskset, taskset_id, total, timeout=self.timeout)

    def get_taskset(self, taskset_id: str) -> TasksetState | None:
        """
        A taskset's progress (total, completed, failed), in one store read.
        """
        reader = self._blocking_reader()
        if reader is not None:
            return reader.get_taskset(taskset_id)
        return self._thread.call(self._client().get_taskset, taskset_id, timeout=self.timeout)

    def wait_outcome(self, task_id: str, timeout: float | None = None) -> Outcome:
        """
        Wait for a task's outcome (woken by the store's notification where
        it has one, else reading with back-off) and return it.

        :raises TimeoutError: not ready within ``timeout`` seconds.
        """
        reader = self._blocking_reader()
        if reader is not None:
            if not (self.notify and reader.notifies):
                return self._wait_reading(reader, task_id, timeout)
            # Read in this thread first: an outcome is often ready when
            # get() is called, and the read then costs no thread hop.
            started = time.monotonic()
            outcome = self._first_read(reader, task_id, timeout)
            if outcome.ready:
                return outcome
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
        call_timeout = None if timeout is None else timeout + self.timeout
        return self._thread.call(
            self._client().wait_outcome, task_id, timeout, timeout=call_timeout
        )

    @staticmethod
    def _first_read(reader: BlockingReader, task_id: str, timeout: float | None) -> Outcome:
        """
        Read the outcome once in this thread, waiting for the store at
        most ``timeout`` seconds.

        :raises TimeoutError: the store did not answer in time.
        """
        try:
            if timeout is None:
                found = reader.get_results([task_id])
            else:
                # Only readers of stores that notify (Redis) come here, and
                # they take a timeout.
                found = cast(Any, reader).get_results([task_id], timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"task {task_id} not ready within {timeout} s: the result store "
                "did not answer in time"
            ) from None
        return Outcome.from_bytes(task_id, found[0])

    def _wait_reading(self, reader: BlockingReader, task_id: str, timeout: float | None) -> Outcome:
        """
        Read the outcome in this thread with a pause doubling from
        :py:data:`twistedq.result.POLL_START` to ``POLL_MAX`` until it is
        ready, as :py:meth:`AsyncClient.wait_outcome` reads a store without
        notifications.  Each read waits at most :py:attr:`timeout` for the
        store.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = result.POLL_START
        while True:
            (outcome,) = self._read_outcomes(reader, [task_id])
            if outcome.ready:
                return outcome
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {task_id} not ready within {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, result.POLL_MAX)

    @staticmethod
    def _read_outcomes(reader: BlockingReader, task_ids: list[str]) -> list[Outcome]:
        found = reader.get_results(task_ids)
        return [Outcome.from_bytes(i, data) for i, data in zip(task_ids, found, strict=True)]

    def get_outcome(self, task_id: str) -> Outcome:
        """
        The stored outcome of one task.
        """
        return self.get_outcomes([task_id])[0]

    def get_outcomes(self, task_ids: Sequence[str]) -> list[Outcome]:
        """
        The stored outcomes of several tasks, in order.
        """
        reader = self._blocking_reader()
        if reader is not None:
            return self._read_outcomes(reader, list(task_ids))
        client = self._client()
        return self._thread.call(client.get_outcomes, list(task_ids), timeout=self.timeout)

    def close(self) -> None:
        """
        Close the connections; the client reconnects if used again.
        """
        with self._lock:
            client, self._async = self._async, None
            reader = self._reader
        if reader is not None:
            reader.close()
        if client is not None:
            self._thread.call(self._close, client, timeout=self.timeout)

    def _close(self, client: AsyncClient) -> defer.Deferred[None]:
        if client.shutdown_trigger is not None:
            self._thread.reactor.removeSystemEventTrigger(client.shutdown_trigger)
            client.shutdown_trigger = None
        return client.close()


#: ``AsyncResult(task_id)`` without a client, and the facades of
#: :py:mod:`twistedq.task`, use a client built from the environment.
context.set_client_factory(Client)
