"""
Tests for retries: the retry policy of a task (:py:mod:`twistedq.retries`),
the outcome a child reports for a task that asks to retry
(:py:class:`~twistedq.worker.child.TaskRunner`), the RETRY documents
(:py:mod:`twistedq.outcome`), and what the dispatcher does with them and
with tasks due later than its ``hold_eta``: publish, confirm, then ack.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import (
    NOW,
    TASKSET,
    FakeBroker,
    FakeChannel,
    FakeDelivery,
    FakePool,
    held_writes,
    iso,
    store_calls,
    task_id,
)
from twistedq.amqp.broker import DELAY_EXPONENT_MAX, Topology, delay_step
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.exceptions import MaxRetriesExceededError, Retry
from twistedq.message import TaskMessage
from twistedq.outcome import (
    Outcome,
    retry_document,
    schedule_retry,
    status_document,
    success_document,
)
from twistedq.registry import TaskRegistry
from twistedq.retries import RetryPolicy, retry_outcome, wants_retry
from twistedq.states import FAILURE, RETRY, SUCCESS
from twistedq.task import Task, retry, task
from twistedq.worker.child import TaskRunner


class Flaky(Exception):
    """
    The exception the test tasks retry for.
    """


def message_for(name: str, retries: int = 0, **fields: Any) -> TaskMessage:
    return TaskMessage(id=task_id(1), task=name, retries=retries, **fields)


def outcome_of(document: bytes) -> dict[str, Any]:
    return json.loads(document)


class PolicyTests(SynchronousTestCase):
    """
    The countdown of a retry that gives none.
    """

    def test_defaults(self) -> None:
        """
        A task without retry attributes (a plain function) has three
        retries, no autoretry and waits 180 s.
        """
        policy = RetryPolicy.of(lambda: None)
        self.assertEqual(
            (policy.max_retries, policy.autoretry_for, policy.countdown(0)), (3, (), 180.0)
        )

    def test_exponential_backoff(self) -> None:
        """
        ``retry_backoff`` doubles from its base with each retry, up to
        ``retry_backoff_max``; ``True`` is a base of one second.
        """
        policy = RetryPolicy(retry_backoff=True, retry_jitter=False, retry_backoff_max=600)
        self.assertEqual([policy.countdown(n) for n in range(4)], [1.0, 2.0, 4.0, 8.0])
        self.assertEqual(policy.countdown(12), 600.0)
        policy = RetryPolicy(retry_backoff=3, retry_jitter=False)
        self.assertEqual(policy.countdown(2), 12.0)

    def test_full_jitter(self) -> None:
        """
        With ``retry_jitter`` the wait is drawn between 0 and the backoff.
        """
        policy = RetryPolicy(retry_backoff=2, retry_backoff_max=10)
        drawn = []

        def uniform(low: float, high: float) -> float:
            drawn.append((low, high))
            return high / 4

        self.assertEqual(policy.countdown(3, uniform), 2.5)
        self.assertEqual(drawn, [(0.0, 10.0)])
        for retries in range(8):
            self.assertTrue(0 <= policy.countdown(retries) <= min(10, 2 * 2**retries))


class RunnerTests(SynchronousTestCase):
    """
    A child's outcome for a task that asks to retry.
    """

    def setUp(self) -> None:
        self.registry = TaskRegistry()
        self.runner = TaskRunner(self.registry)

    def run_message(self, message: TaskMessage) -> dict[str, Any]:
        return outcome_of(self.runner.run(message.encode()))

    def test_task_class_retry(self) -> None:
        """
        ``self.retry(exc=..., countdown=...)`` in a Task gives a RETRY
        document with the exception, the countdown and the retries the
        next run will have.
        """

        class Fetch(Task):
            name = "fetch"

            def run(self, url: str) -> None:
                try:
                    raise Flaky(f"no answer from {url}")
                except Flaky as e:
                    self.retry(exc=e, countdown=5)

        self.registry.register(Fetch)
        document = self.run_message(message_for("fetch", retries=1, args=("x",)))
        self.assertEqual(
            (document["status"], document["countdown"], document["retries"]), (RETRY, 5, 2)
        )
        self.assertEqual(document["exc"]["type"], "Flaky")
        self.assertEqual(document["exc"]["message"], "no answer from x")
        self.assertIn("raise Flaky", document["traceback"])

    def test_max_retries_exceeded_with_exc(self) -> None:
        """
        At ``max_retries`` the task fails with the exception it gave.
        """

        class Fetch(Task):
            name = "fetch"
            max_retries = 2

            def run(self) -> None:
                self.retry(exc=Flaky("still down"))

        self.registry.register(Fetch)
        self.assertEqual(self.run_message(message_for("fetch", retries=1))["status"], RETRY)
        document = self.run_message(message_for("fetch", retries=2))
        self.assertEqual(document["status"], FAILURE)
        self.assertEqual(
            (document["exc"]["type"], document["exc"]["message"]), ("Flaky", "still down")
        )

    def test_max_retries_exceeded_without_exc(self) -> None:
        """
        A bare ``retry()`` past ``max_retries`` fails with
        MaxRetriesExceededError; ``max_retries`` of the call wins over the
        task's.
        """

        @task(name="poll", registry=self.registry)
        def poll() -> None:
            retry(max_retries=1)

        self.assertEqual(self.run_message(message_for("poll"))["status"], RETRY)
        document = self.run_message(message_for("poll", retries=1))
        self.assertEqual(document["status"], FAILURE)
        self.assertEqual(document["exc"]["type"], MaxRetriesExceededError.__qualname__)
        self.assertEqual(document["exc"]["module"], "twistedq.exceptions")

    def test_no_limit(self) -> None:
        """
        ``max_retries=None`` retries for ever.
        """

        @task(name="forever", registry=self.registry, max_retries=None, autoretry_for=(Flaky,))
        def forever() -> None:
            raise Flaky("again")

        document = self.run_message(message_for("forever", retries=10_000))
        self.assertEqual((document["status"], document["retries"]), (RETRY, 10_001))

    def test_autoretry_with_backoff(self) -> None:
        """
        An exception of ``autoretry_for`` retries by itself, waiting the
        backoff for the message's retries; another exception fails.
        """

        @task(
            name="sync",
            registry=self.registry,
            autoretry_for=(Flaky,),
            retry_backoff=2,
            retry_jitter=False,
        )
        def sync(kind: str) -> None:
            raise Flaky("down") if kind == "flaky" else ValueError("bad")

        document = self.run_message(message_for("sync", retries=2, args=("flaky",)))
        self.assertEqual((document["status"], document["countdown"]), (RETRY, 8.0))
        self.assertEqual(document["exc"]["type"], "Flaky")
        failed = self.run_message(message_for("sync", args=("other",)))
        self.assertEqual((failed["status"], failed["exc"]["type"]), (FAILURE, "ValueError"))

    def test_autoretry_exhausted_fails_with_the_exception(self) -> None:
        """
        An autoretried exception past ``max_retries`` is the failure.
        """

        @task(name="sync", registry=self.registry, autoretry_for=(Flaky,), max_retries=0)
        def sync() -> None:
            raise Flaky("down")

        document = self.run_message(message_for("sync"))
        self.assertEqual((document["status"], document["exc"]["type"]), (FAILURE, "Flaky"))

    def test_retry_with_eta(self) -> None:
        """
        ``retry(eta=...)`` gives the time of the next run, not a countdown.
        """
        when = datetime.datetime(2027, 1, 15, 8, 0, tzinfo=datetime.timezone.utc)

        @task(name="at", registry=self.registry)
        def at() -> None:
            retry(eta=when.replace(tzinfo=None))

        document = self.run_message(message_for("at"))
        self.assertEqual(datetime.datetime.fromisoformat(document["eta"]), when)
        self.assertNotIn("countdown", document)

    def test_countdown_and_eta_refused(self) -> None:
        """
        ``retry`` takes a countdown or an ETA, not both.
        """
        self.assertRaises(ValueError, retry, countdown=1, eta=NOW)

    def test_wants_retry(self) -> None:
        """
        Retry always asks for a retry; other exceptions when the task
        lists them in ``autoretry_for``.
        """
        self.assertTrue(wants_retry(lambda: None, Retry()))
        self.assertFalse(wants_retry(lambda: None, Flaky()))

        class Listed(Task):
            name = "listed"
            autoretry_for = (Flaky,)

        self.assertTrue(wants_retry(Listed(), Flaky()))
        self.assertFalse(wants_retry(Listed(), ValueError()))

    def test_unknown_decorator_option(self) -> None:
        """
        The retry options of ``@task`` are those of Task; a retry option
        outside them is refused.
        """
        from twistedq.task import FunctionTask

        self.assertRaises(
            TypeError, FunctionTask, lambda: None, "x", retry_options={"max_retry": 1}
        )

    def test_retry_outcome_traceback_given(self) -> None:
        """
        A traceback given (by the reactor runner) is kept when the
        exception carries none of its own.
        """
        document = retry_outcome(
            message_for("x"), lambda: None, Retry(countdown=1), traceback="the traceback"
        )
        self.assertEqual(outcome_of(document)["traceback"], "the traceback")


class DocumentTests(SynchronousTestCase):
    """
    RETRY documents as the store and the status site show them.
    """

    def test_schedule_retry(self) -> None:
        """
        The daemon adds the time of the next run: now plus the countdown,
        or the ETA the task gave, left as it is.
        """
        document = retry_document(task_id(1), "t", Flaky("down"), 1, countdown=30)
        scheduled, eta = schedule_retry(document, NOW)
        self.assertEqual(eta, iso(NOW + 30))
        outcome = Outcome.from_bytes(task_id(1), scheduled)
        self.assertEqual((outcome.status, outcome.eta, outcome.retries), (RETRY, eta, 1))
        self.assertFalse(outcome.ready)
        given = retry_document(task_id(1), "t", Flaky("down"), 1, eta=iso(NOW + 5))
        self.assertEqual(schedule_retry(given, NOW)[1], iso(NOW + 5))

    def test_status_document(self) -> None:
        """
        The status JSON of a retrying task shows the exception, as a
        failure's does.
        """
        document = retry_document(task_id(1), "t", Flaky("down"), 1, countdown=30)
        task_json = status_document(Outcome.from_bytes(task_id(1), document))["task"]
        self.assertEqual(
            (task_json["status"], task_json["exc"], task_json["result"]), (RETRY, "Flaky", "down")
        )


class DispatcherTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.pool = FakePool(idle=2)
        self.store = MemoryBackend(self.clock)
        self.store.pause()  # each test answers the writes
        self.publisher = FakeBroker()
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(hold_eta=60.0, give_back_after=None),
            publish_later=self.publisher.publish_later,
        )


class DispatcherRetryTests(DispatcherTestCase):
    """
    A RETRY outcome: stored, the next attempt published and confirmed,
    then the delivery acked.
    """

    def run_batch(self, *outcome_for: Any) -> list[FakeDelivery]:
        deliveries = [
            FakeDelivery(TaskMessage(id=task_id(n), task="t", args=(n,), taskset=TASKSET).encode())
            for n in range(1, len(outcome_for) + 1)
        ]
        for delivery in deliveries:
            self.dispatcher.deliver(delivery)
        # One idle child takes both when the batch is the pending queue.
        bodies = [body for bodies, _ in self.pool.batches for body in bodies]
        messages = [TaskMessage.decode(body) for body in bodies]
        outcomes = {m.id: make(m) for m, make in zip(messages, outcome_for, strict=True)}
        for bodies, d in self.pool.batches:
            d.callback([outcomes[TaskMessage.decode(body).id] for body in bodies])
        return deliveries

    def test_retry_stored_published_then_acked(self) -> None:
        """
        The RETRY document is stored (with its ETA, outside the taskset's
        count), then the same message (same id) is published with one
        more retry and its ETA; the delivery is acked only after the
        broker's confirm.
        """
        [delivery] = self.run_batch(
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5)
        )
        [(records, stored)] = held_writes(self.store)
        [record] = records
        self.assertEqual((record.task_id, record.taskset, record.failed), (task_id(1), None, False))
        outcome = Outcome.from_bytes(task_id(1), record.document)
        self.assertEqual((outcome.status, outcome.eta), (RETRY, iso(NOW + 5)))
        self.assertEqual(self.publisher.sent, [])
        stored.answer()
        [(attempt, delay, confirmed)] = self.publisher.sent
        self.assertEqual(
            (attempt.id, attempt.retries, attempt.eta, attempt.args, attempt.taskset),
            (task_id(1), 1, iso(NOW + 5), (1,), TASKSET),
        )
        self.assertEqual(delay, 0.0)
        self.assertEqual(delivery.settled, [])
        confirmed.callback(None)
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["retried"], 1)

    def test_far_retry_goes_to_delay_queue(self) -> None:
        """
        A retry due later than ``hold_eta`` is published with its delay.
        """
        self.run_batch(lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=600))
        held_writes(self.store)[0][1].answer()
        [(_, delay, _)] = self.publisher.sent
        self.assertEqual(delay, 600.0)

    def test_publish_failure_tried_again(self) -> None:
        """
        When the next attempt cannot be published it is published again
        after 0.5 s (the stored RETRY supersedes this attempt's message, so
        the next attempt must go out), then the delivery is acked.
        """
        [delivery] = self.run_batch(
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5)
        )
        held_writes(self.store)[0][1].answer()
        self.publisher.sent[0][2].errback(ConnectionError("broker gone"))
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual(delivery.settled, [])
        self.clock.advance(0.5)
        self.publisher.sent[1][2].callback(None)
        self.assertEqual(delivery.settled, ["ack"])

    def test_publish_failure_while_stopping(self) -> None:
        """
        A daemon that stops before the next attempt could be published
        stores the RETRY again for this attempt and gives the delivery
        back, so that it runs again.
        """
        [delivery] = self.run_batch(
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5)
        )
        held_writes(self.store)[0][1].answer()
        self.dispatcher.in_flight.stopping = True  # the daemon drains
        self.publisher.sent[0][2].errback(ConnectionError("broker gone"))
        self.flushLoggedErrors(ConnectionError)
        [(records, stored)] = held_writes(self.store)
        self.assertEqual(len(store_calls(self.store)), 2)
        self.assertEqual(json.loads(records[0].document)["retries"], 0)
        stored.answer()
        self.assertEqual(delivery.settled, [("reject", True)])

    def test_store_failure_publishes_nothing(self) -> None:
        """
        While the RETRY cannot be stored nothing is published; it is
        written again after a pause, then published.
        """
        [delivery] = self.run_batch(
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5)
        )
        held_writes(self.store)[0][1].fail(ConnectionError("store down"))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual((self.publisher.sent, delivery.settled), ([], []))
        self.clock.advance(0.5)
        [(again, stored)] = held_writes(self.store)
        self.assertEqual(again, store_calls(self.store)[0])
        stored.answer()
        self.publisher.sent[0][2].callback(None)
        self.assertEqual(delivery.settled, ["ack"])

    def test_mixed_batch(self) -> None:
        """
        In a batch where one task retries, the other's outcome is stored
        and acked as usual, counted in its taskset.
        """
        done, retrying = self.run_batch(
            lambda m: success_document(m.id, m.task, 2),
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5),
        )
        rows = {
            record.task_id: (record, d)
            for records, d in held_writes(self.store)
            for record in records
        }
        self.assertEqual(rows[task_id(1)][0].taskset, TASKSET)
        self.assertEqual(rows[task_id(2)][0].taskset, None)
        for _, d in rows.values():
            d.answer()
        self.assertEqual(done.settled, ["ack"])
        self.assertEqual(retrying.settled, [])
        self.publisher.sent[0][2].callback(None)
        self.assertEqual(retrying.settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["completed"], 1)

    def test_without_publisher_retry_fails(self) -> None:
        """
        A dispatcher that cannot publish stores a FAILURE for a task that
        asks to retry, with its exception, and acks it.
        """
        self.dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(give_back_after=None)
        )
        [delivery] = self.run_batch(
            lambda m: retry_document(m.id, m.task, Flaky("down"), 1, countdown=5)
        )
        [([record], stored)] = held_writes(self.store)
        outcome = Outcome.from_bytes(task_id(1), record.document)
        self.assertEqual((outcome.status, outcome.exc["type"]), (FAILURE, "Flaky"))
        self.assertTrue(record.failed)
        stored.answer()
        self.assertEqual(delivery.settled, ["ack"])
        self.flushLoggedErrors()

    def test_success_unchanged(self) -> None:
        """
        A batch without retries publishes nothing.
        """
        [delivery] = self.run_batch(lambda m: success_document(m.id, m.task, 2))
        held_writes(self.store)[0][1].answer()
        self.assertEqual((self.publisher.sent, delivery.settled), ([], ["ack"]))
        self.assertEqual(
            Outcome.from_bytes(task_id(1), self.store.results[task_id(1)]).status, SUCCESS
        )


class DelayQueueDispatchTests(DispatcherTestCase):
    """
    A task due later than ``hold_eta`` waits in a delay queue of the
    broker, not in the daemon.
    """

    def deliver(self, seconds: float) -> FakeDelivery:
        delivery = FakeDelivery(
            TaskMessage(id=task_id(1), task="t", eta=iso(NOW + seconds)).encode()
        )
        self.dispatcher.deliver(delivery)
        return delivery

    def test_far_eta_published_then_acked(self) -> None:
        """
        The message is published with the time left and acked once
        confirmed; no timer holds it.
        """
        delivery = self.deliver(3600)
        [(message, delay, confirmed)] = self.publisher.sent
        self.assertEqual((message.id, message.eta, delay), (task_id(1), iso(NOW + 3600), 3600))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(delivery.settled, [])
        confirmed.callback(None)
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["held_for_eta"], 0)

    def test_near_eta_held(self) -> None:
        """
        A task due within ``hold_eta`` is held in memory as before.
        """
        delivery = self.deliver(60)
        self.assertEqual(self.publisher.sent, [])
        self.clock.advance(60)
        self.assertEqual(len(self.pool.batches), 1)
        self.assertEqual(delivery.settled, [])

    def test_publish_failure_holds(self) -> None:
        """
        When the delay queue cannot be published to, the task is held in
        memory until its ETA instead.
        """
        delivery = self.deliver(600)
        self.clock.advance(10)
        self.publisher.sent[0][2].errback(ConnectionError("broker gone"))
        self.assertEqual(delivery.settled, [])
        self.clock.advance(589)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(1)
        self.assertEqual(len(self.pool.batches), 1)

    def test_drain_waits_for_the_confirm(self) -> None:
        """
        ``drain()`` waits for a publish in flight; a failure then hands the
        message back to the queue.
        """
        delivery = self.deliver(600)
        drained = self.dispatcher.drain()
        self.assertNoResult(drained)
        self.publisher.sent[0][2].errback(ConnectionError("broker gone"))
        self.successResultOf(drained)
        self.assertEqual(delivery.settled, [("reject", True)])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DelayTopologyTests(SynchronousTestCase):
    """
    The delay queues: powers of two, whose expired messages go back to
    the task queue.
    """

    def test_delay_step(self) -> None:
        """
        The longest delay queue not longer than the time left; none under
        a second, never longer than 2 ** 20 s.
        """
        self.assertEqual(
            [delay_step(s) for s in (0.5, 1, 1.9, 2, 5, 61, 4096.5)],
            [None, 1, 1, 2, 4, 32, 4096],
        )
        self.assertEqual(delay_step(10**9), 2**DELAY_EXPONENT_MAX)

    def test_declare(self) -> None:
        """
        ``Q.delay.N`` is durable, its messages live N seconds and are then
        dead-lettered through the exchange with the queue's routing key.
        """
        channel = FakeChannel()
        topology = Topology(exchange="ex", queue="jobs")
        name = self.successResultOf(
            defer.ensureDeferred(topology.declare_delay_queue(channel, 8))  # type: ignore[arg-type]
        )
        self.assertEqual(name, "jobs.delay.8")
        self.assertEqual(
            channel.declared,
            [
                {
                    "queue": "jobs.delay.8",
                    "durable": True,
                    "arguments": {
                        "x-message-ttl": 8000,
                        "x-dead-letter-exchange": "ex",
                        "x-dead-letter-routing-key": "jobs",
                    },
                }
            ],
        )
