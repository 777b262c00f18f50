"""
Tests for tasks whose results are ignored: the ``ignore_result`` field of
the task message, and a daemon that writes nothing to the store for them.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import (
    NOW,
    START,
    FakeBroker,
    FakeClient,
    FakeDelivery,
    FakePool,
    committed,
    delivery,
    iso,
    put,
    task_id,
)
from twistedq.backends.memory import MemoryBackend
from twistedq.client import set_default_client
from twistedq.conf import Settings
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.job import Job
from twistedq.exceptions import ResultIgnored
from twistedq.message import MessageError, TaskMessage
from twistedq.outcome import (
    failure_document,
    retry_document,
    revoked_document,
    success_document,
)
from twistedq.registry import NotRegistered, TaskRegistry
from twistedq.scheduler import Scheduler
from twistedq.task import IgnoredResult, PeriodicTask, Task, delay_task, publish_task, task

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class MessageFieldTests(SynchronousTestCase):
    """
    The optional ``ignore_result`` field of a version 1 message.
    """

    def test_absent_by_default(self):
        """
        A message that stores its result has no ``ignore_result`` field, so
        daemons that do not know the field take it.
        """
        document = json.loads(TaskMessage(id=TASK_ID, task="add").encode())
        self.assertNotIn("ignore_result", document)

    def test_round_trip(self):
        """
        ``ignore_result=True`` is encoded as ``"ignore_result": true`` and
        decoded back.
        """
        message = TaskMessage(id=TASK_ID, task="add", ignore_result=True)
        body = message.encode()
        self.assertIs(json.loads(body)["ignore_result"], True)
        self.assertEqual(TaskMessage.decode(body), message)

    def test_false_accepted(self):
        """
        An explicit ``false`` is the default.
        """
        body = json.dumps({"v": 1, "id": TASK_ID, "task": "add", "ignore_result": False}).encode()
        self.assertIs(TaskMessage.decode(body).ignore_result, False)

    def test_not_boolean(self):
        """
        Anything but true or false is malformed.
        """
        for value in (1, "true", None, [True]):
            body = json.dumps(
                {"v": 1, "id": TASK_ID, "task": "add", "ignore_result": value}
            ).encode()
            error = self.assertRaises(MessageError, TaskMessage.decode, body)
            self.assertIn("ignore_result", str(error))
            self.assertEqual(error.task_id, TASK_ID)


#: The store calls that only read.
READS = frozenset(("get_result", "get_results", "get_taskset"))


class DaemonTestCase(SynchronousTestCase):
    """
    A dispatcher that checks duplicates under claims (the memory store has
    them), with a fake pool of two children.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.pool = FakePool(idle=2)
        self.store = MemoryBackend(self.clock)
        self.events = Events()
        self.reported = []
        self.events.subscribe(self.reported.append)
        self.published = []
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(check_duplicates=True, give_back_after=None),
            events=self.events,
            publish_later=self.publish_later,
        )

    async def publish_later(self, message, seconds):
        self.published.append(message)

    def writes(self):
        """
        The names of the store calls that write, in order.
        """
        return [call.name for call in self.store.calls if call.name not in READS]

    def kinds(self):
        return [event.kind for event in self.reported]

    def run_one(self, outcome=None, **fields):
        """
        Deliver task 1 ignoring its result, let it run and answer
        ``outcome`` (a success by default); returns its delivery.
        """
        ignored = delivery(1, ignore_result=True, **fields)
        self.dispatcher.deliver(ignored)
        self.clock.advance(0)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.pool.finish(0, None if outcome is None else [outcome])
        self.clock.advance(0)
        return ignored


class DaemonTests(DaemonTestCase):
    """
    A daemon writes nothing to the store for a task that ignores its
    result: no claim, no outcome, no RETRY, no REVOKED.
    """

    def test_success(self):
        """
        A success is acked and reported, and nothing is written.
        """
        ignored = self.run_one()
        self.assertEqual(ignored.settled, ["ack"])
        self.assertIn(EventKind.SUCCEEDED, self.kinds())
        self.assertNotIn(EventKind.CLAIMED, self.kinds())
        self.assertEqual(self.writes(), [])
        self.assertEqual(self.store.results, {})

    def test_failure(self):
        """
        A failure is acked and reported, and nothing is written.
        """
        outcome = failure_document(task_id(1), "add", ValueError("no"), traceback="")
        ignored = self.run_one(outcome)
        self.assertEqual(ignored.settled, ["ack"])
        self.assertIn(EventKind.FAILED, self.kinds())
        self.assertEqual(self.writes(), [])

    def test_unknown_task(self):
        """
        A task no child registered is dead-lettered, and nothing is written.
        """
        error = NotRegistered("add")
        outcome = failure_document(task_id(1), "add", error, traceback="")
        ignored = self.run_one(outcome)
        self.assertEqual(ignored.settled, [("dead-letter", "unknown-task")])
        self.assertEqual(self.writes(), [])

    def test_retry(self):
        """
        A retry publishes the next attempt, still ignoring its result,
        then acks, without storing the RETRY.
        """
        outcome = retry_document(task_id(1), "add", ValueError("again"), retries=0, countdown=5)
        ignored = self.run_one(outcome)
        self.assertEqual(ignored.settled, ["ack"])
        [attempt] = self.published
        self.assertEqual(
            (attempt.id, attempt.retries, attempt.ignore_result), (task_id(1), 1, True)
        )
        self.assertEqual(self.writes(), [])

    def test_expired(self):
        """
        An expired task is acked without running, and no REVOKED is stored.
        """
        expired = delivery(1, ignore_result=True, expires=iso(NOW - 1))
        self.dispatcher.deliver(expired)
        self.clock.advance(0)
        self.assertEqual(expired.settled, ["ack"])
        self.assertEqual(self.pool.ids(), [])
        self.assertIn(EventKind.REVOKED, self.kinds())
        self.assertEqual(self.writes(), [])

    def test_revoked_in_store_not_run(self):
        """
        A task revoked in the store before it ran is acked without running:
        the daemon reads the store for it (it does not claim it).
        """
        put(self.store, task_id(1), revoked_document(task_id(1), "add", "revoked"))
        self.store.calls.clear()
        revoked = delivery(1, ignore_result=True)
        self.dispatcher.deliver(revoked)
        self.clock.advance(0)
        self.assertEqual(revoked.settled, ["ack"])
        self.assertEqual(self.pool.ids(), [])
        self.assertEqual(self.writes(), [])

    def test_beside_stored_results(self):
        """
        Beside a task that stores its result, only that one is claimed and
        stored.
        """
        stored, ignored = delivery(1), delivery(2, ignore_result=True)
        self.dispatcher.deliver(stored)
        self.dispatcher.deliver(ignored)
        self.clock.advance(0)
        self.assertEqual(
            sorted(i for batch in self.pool.ids() for i in batch), [task_id(1), task_id(2)]
        )
        for index in range(len(self.pool.batches)):
            self.pool.finish(index)
        self.clock.advance(0)
        self.assertEqual((stored.settled, ignored.settled), (["ack"], ["ack"]))
        self.assertEqual(list(self.store.results), [task_id(1)])
        self.assertEqual(committed(self.store), [(task_id(1), 1)])

    def test_mixed_batch_stores_one(self):
        """
        In one batch with a task that stores its result, only that one's
        outcome is written.
        """
        settlement = self.dispatcher.settlement
        jobs = [self.job(1), self.job(2, ignore_result=True)]
        outcomes = [success_document(task_id(n), "add", n) for n in (1, 2)]
        settlement.ran(outcomes, jobs)
        self.assertEqual([job.delivery.settled for job in jobs], [["ack"], ["ack"]])
        self.assertEqual(list(self.store.results), [task_id(1)])

    def job(self, number, **fields):
        message = TaskMessage(id=task_id(number), task="add", args=(number,), **fields)
        return Job(FakeDelivery(message.encode()), message)

    def test_child_deaths(self):
        """
        A task whose child died on each attempt is dead-lettered, and no
        FAILURE is stored.
        """
        self.pool.idle = 1
        deaths = delivery(1, ignore_result=True)
        self.dispatcher.deliver(deaths)
        for attempt in range(self.dispatcher.settings.max_attempts):
            self.clock.advance(0)
            self.assertEqual(len(self.pool.batches), attempt + 1)
            self.pool.lose(attempt, "died")
            self.clock.advance(0)
        self.assertEqual(deaths.settled, [("dead-letter", "attempts-exhausted")])
        self.assertEqual(self.writes(), [])


class IgnoringTask(Task):
    name = "tests.ignoring"
    ignore_result = True


class PublishTests(SynchronousTestCase):
    """
    Where a published message gets its ``ignore_result`` from: the call,
    else the task, else the setting ``TWISTEDQ_IGNORE_RESULT``.
    """

    def published(self, client):
        [(message, _)] = client.published
        return message.ignore_result

    def test_default_stores(self):
        client = FakeClient()
        publish_task("add", (1,), client=client)
        self.assertIs(self.published(client), False)

    def test_per_call(self):
        client = FakeClient()
        result = publish_task("add", (1,), ignore_result=True, client=client)
        self.assertIs(self.published(client), True)
        self.assertIsInstance(result, IgnoredResult)

    def test_per_task(self):
        """
        ``Task.ignore_result`` applies, and a call's option beats it.
        """
        client = FakeClient()
        IgnoringTask.apply_async((1,), client=client)
        self.assertIs(self.published(client), True)
        client = FakeClient()
        IgnoringTask.apply_async((1,), ignore_result=False, client=client)
        self.assertIs(self.published(client), False)

    def test_decorator(self):
        """
        ``@task(ignore_result=True)`` sets it on the function's task.
        """
        registry = TaskRegistry()

        @task(name="tests.fire", ignore_result=True, registry=registry)
        def fire():
            pass

        client = FakeClient()
        fire.apply_async(client=client)
        self.assertIs(self.published(client), True)

    def test_setting(self):
        """
        The setting applies to tasks that say nothing; a task saying False
        still stores.
        """
        client = FakeClient()
        client.settings = Settings(ignore_result=True)
        publish_task("add", client=client)
        self.assertIs(self.published(client), True)

        class Storing(Task):
            name = "tests.storing"
            ignore_result = False

        client.published.clear()
        Storing.apply_async(client=client)
        self.assertIs(self.published(client), False)

    def test_get_raises(self):
        """
        ``get()`` of a task that stores nothing raises ResultIgnored at
        once instead of waiting for ever, without reading the store;
        ``ready()`` reads it and is False.
        """
        client = FakeClient()
        result = publish_task("add", ignore_result=True, client=client)
        error = self.assertRaises(ResultIgnored, result.get, timeout=60)
        self.assertIn(result.task_id, str(error))
        self.assertIn("ignore_result", str(error))
        self.assertEqual(client.get_outcome_calls, 0)
        self.assertFalse(result.ready())


class PeriodicTests(SynchronousTestCase):
    """
    A periodic task declared with ``ignore_result`` publishes its slots
    saying so (its slots are still claimed in the store: that is what
    runs each once).
    """

    def test_spec_says_so(self):
        class Beat(PeriodicTask):
            name = "tests.beat"
            run_every = 1
            ignore_result = True

        class Plain(PeriodicTask):
            name = "tests.plain"
            run_every = 1

        self.assertIs(Beat.schedule_spec()["ignore_result"], True)
        self.assertNotIn("ignore_result", Plain.schedule_spec())

    def test_scheduler_publishes_so(self):
        clock = Clock()
        broker = FakeBroker()
        scheduler = Scheduler(
            MemoryBackend(clock),
            broker.publish,
            clock,
            wall=lambda: START + clock.seconds(),
            monotonic=clock.seconds,
        )
        spec = {"every": 1.0, "catch_up": "once", "queue": None}
        scheduler.add_tasks({"ignored": {**spec, "ignore_result": True}, "stored": spec})
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        for _ in range(8):
            clock.advance(0.25)
        flags = {(m.task, m.ignore_result) for m in broker.messages}
        self.assertEqual(flags, {("ignored", True), ("stored", False)})


class DelayTaskTests(SynchronousTestCase):
    """
    ``delay_task(name, ...)`` follows ``TWISTEDQ_IGNORE_RESULT`` too.
    """

    def test_setting(self):
        client = FakeClient()
        client.settings = Settings(ignore_result=True)
        set_default_client(client)
        self.addCleanup(set_default_client, None)
        result = delay_task("add", 1, 2)
        [(message, _)] = client.published
        self.assertIs(message.ignore_result, True)
        self.assertIsInstance(result, IgnoredResult)
