"""
Tests for :py:obj:`twistedq.worker.reactor_tasks.ReactorTaskRunner` and the
dispatcher's routing of ``on_reactor`` tasks to it, with a
:py:obj:`Clock`: no reactor, no process, no network.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeDelivery, FakePool, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher
from twistedq.message import TaskMessage
from twistedq.registry import TaskRegistry
from twistedq.task import Task, task
from twistedq.worker.reactor_tasks import ReactorTaskRunner


class RunnerTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = TaskRegistry()
        self.runner = ReactorTaskRunner(self.registry, self.clock)

    def run_task(self, name, *args, number=1, **kwargs):
        message = TaskMessage(id=task_id(number), task=name, args=args, kwargs=kwargs)
        return self.runner.run_message(message)

    def outcome(self, d):
        return json.loads(self.successResultOf(d))


class HandlesTests(RunnerTestCase):
    """
    ``handles`` is true only for tasks marked ``on_reactor``.
    """

    def test_task_class(self):
        """
        A :py:obj:`Task` subclass with ``on_reactor = True`` is handled; one
        without is not.
        """

        class OnReactor(Task):
            name = "class.reactor"
            on_reactor = True

        class InChild(Task):
            name = "class.child"

        self.registry.register(OnReactor)
        self.registry.register(InChild)
        self.assertTrue(self.runner.handles("class.reactor"))
        self.assertFalse(self.runner.handles("class.child"))

    def test_decorator(self):
        """
        ``@task(on_reactor=True)`` is handled, ``@task`` without it is not.
        """
        task(name="deco.reactor", on_reactor=True, registry=self.registry)(lambda: 1)
        task(name="deco.child", registry=self.registry)(lambda: 1)
        self.assertTrue(self.runner.handles("deco.reactor"))
        self.assertFalse(self.runner.handles("deco.child"))

    def test_plain_and_unknown(self):
        """
        A plain registered function, even an ``async def`` one, and an
        unknown name are not handled.
        """

        async def plain():
            return 1

        self.registry.register(plain, "plain")
        self.assertFalse(self.runner.handles("plain"))
        self.assertFalse(self.runner.handles("unknown"))


class SuccessTests(RunnerTestCase):
    """
    A reactor task's result becomes a SUCCESS outcome once it is ready.
    """

    def test_async_def(self):
        """
        An ``async def`` task's result is its outcome once the Deferred it
        awaits fires, and not before.
        """
        waiting = defer.Deferred()

        @task(name="fetch", on_reactor=True, registry=self.registry)
        async def fetch(x):
            value = await waiting
            return value + x

        d = self.run_task("fetch", 2)
        self.assertNoResult(d)
        waiting.callback(40)
        outcome = self.outcome(d)
        self.assertEqual(outcome["status"], "SUCCESS")
        self.assertEqual(outcome["result"], 42)
        self.assertEqual(outcome["id"], task_id(1))
        self.assertEqual(outcome["task"], "fetch")

    def test_deferred_with_limit(self):
        """
        A Deferred-returning task with a time limit succeeds when it fires in
        time, and its timeout is cancelled.
        """
        waiting = defer.Deferred()
        task(name="later", on_reactor=True, time_limit=2, registry=self.registry)(lambda: waiting)
        d = self.run_task("later")
        self.clock.advance(1.5)
        waiting.callback(["ok"])
        self.assertEqual(self.outcome(d)["result"], ["ok"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_plain_value(self):
        """
        A reactor task returning a plain value succeeds at once.
        """
        task(name="now", on_reactor=True, registry=self.registry)(lambda x: x * 2)
        self.assertEqual(self.outcome(self.run_task("now", 21))["result"], 42)

    def test_extra_kwargs(self):
        """
        A reactor task accepting ``**kwargs`` also receives ``task_id`` and
        ``task_name`` beside its own keyword arguments.
        """

        class Extras(Task):
            name = "extras"
            on_reactor = True

            async def run(self, x, **kwargs):
                return {"x": x, "id": kwargs["task_id"], "name": kwargs["task_name"], **kwargs}

        self.registry.register(Extras)
        outcome = self.outcome(self.run_task("extras", 1, number=7, y=2))
        result = outcome["result"]
        self.assertEqual((result["x"], result["y"]), (1, 2))
        self.assertEqual((result["id"], result["name"]), (task_id(7), "extras"))
        self.assertIn("loglevel", result)

    def test_no_extras_for_others(self):
        """
        A reactor task without ``**kwargs`` gets only its own arguments.
        """
        task(name="own", on_reactor=True, registry=self.registry)(lambda x, y=0: [x, y])
        self.assertEqual(self.outcome(self.run_task("own", 1, y=3))["result"], [1, 3])


class TimeLimitTests(RunnerTestCase):
    """
    A reactor task's hard time limit cancels it: it fails with
    ``TimeLimitExceeded``.
    """

    def assertTimedOut(self, d, limit):
        outcome = self.outcome(d)
        self.assertEqual(outcome["status"], "FAILURE")
        self.assertEqual(outcome["exc"]["type"], "TimeLimitExceeded")
        self.assertEqual(outcome["exc"]["module"], "twistedq.exceptions")
        self.assertIn(f"time limit of {limit}", outcome["exc"]["message"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_task_limit(self):
        """
        A Deferred that never fires, with the task's ``time_limit`` of 2:
        no outcome before 2 s, ``TimeLimitExceeded`` naming the limit at 2 s.
        """
        cancelled = []
        never = defer.Deferred(cancelled.append)
        task(name="never", on_reactor=True, time_limit=2, registry=self.registry)(lambda: never)
        d = self.run_task("never")
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertTimedOut(d, 2)
        self.assertEqual(cancelled, [never])

    def test_async_limit(self):
        """
        An ``async def`` task awaiting forever is cancelled at its limit; the
        Deferred it awaited is cancelled too.
        """
        cancelled = []
        never = defer.Deferred(cancelled.append)

        class Slow(Task):
            name = "slow"
            on_reactor = True
            time_limit = 3

            async def run(self):
                await never

        self.registry.register(Slow)
        d = self.run_task("slow")
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertTimedOut(d, 3)
        self.assertEqual(cancelled, [never])

    def test_runner_default(self):
        """
        The runner's own ``time_limit`` applies to a task without one.
        """
        runner = ReactorTaskRunner(self.registry, self.clock, time_limit=5)
        task(name="never", on_reactor=True, registry=self.registry)(defer.Deferred)
        d = runner.run_message(TaskMessage(id=task_id(1), task="never"))
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertTimedOut(d, 5)

    def test_task_limit_wins(self):
        """
        A task's own ``time_limit`` wins over the runner's.
        """
        runner = ReactorTaskRunner(self.registry, self.clock, time_limit=5)
        task(name="never", on_reactor=True, time_limit=1, registry=self.registry)(defer.Deferred)
        d = runner.run_message(TaskMessage(id=task_id(1), task="never"))
        self.clock.advance(1)
        self.assertTimedOut(d, 1)

    def test_no_limit(self):
        """
        Without any limit nothing is scheduled and the task waits.
        """
        task(name="never", on_reactor=True, registry=self.registry)(defer.Deferred)
        d = self.run_task("never")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertNoResult(d)


class FailureTests(RunnerTestCase):
    """
    A reactor task's exception becomes a FAILURE outcome with its type.
    """

    def assertFailed(self, d, kind, text):
        outcome = self.outcome(d)
        self.assertEqual(outcome["status"], "FAILURE")
        self.assertEqual(outcome["exc"]["type"], kind)
        self.assertIn(text, outcome["exc"]["message"])
        return outcome

    def test_raises_synchronously(self):
        """
        A task that raises before returning fails with its exception.
        """

        def boom():
            raise ValueError("bad input")

        task(name="boom", on_reactor=True, registry=self.registry)(boom)
        outcome = self.assertFailed(self.run_task("boom"), "ValueError", "bad input")
        self.assertIn("ValueError", outcome["traceback"])

    def test_errback(self):
        """
        A task whose Deferred fails, fails with that exception.
        """
        waiting = defer.Deferred()
        task(name="errs", on_reactor=True, registry=self.registry)(lambda: waiting)
        d = self.run_task("errs")
        waiting.errback(LookupError("missing"))
        self.assertFailed(d, "LookupError", "missing")

    def test_async_raises(self):
        """
        An ``async def`` task raising after an await fails with its exception.
        """
        waiting = defer.Deferred()

        @task(name="araise", on_reactor=True, registry=self.registry)
        async def araise():
            await waiting
            raise KeyError("k")

        d = self.run_task("araise")
        waiting.callback(None)
        self.assertFailed(d, "KeyError", "k")

    def test_not_json(self):
        """
        A result that is not a JSON value fails with a ``TypeError``, whether
        returned directly or through a Deferred.
        """
        task(name="obj", on_reactor=True, registry=self.registry)(object)
        self.assertFailed(self.run_task("obj"), "TypeError", "JSON")
        waiting = defer.Deferred()
        task(name="aset", on_reactor=True, registry=self.registry)(lambda: waiting)
        d = self.run_task("aset")
        waiting.callback({1, 2})
        self.assertFailed(d, "TypeError", "JSON")


class RoutingTests(SynchronousTestCase):
    """
    A dispatcher with a ``reactor_runner`` sends ``on_reactor`` tasks to it
    and the others to the pool.
    """

    def setUp(self):
        self.clock = Clock()
        self.registry = TaskRegistry()
        self.waiting = defer.Deferred()
        task(name="io", on_reactor=True, registry=self.registry)(lambda x: self.waiting)
        task(name="cpu", registry=self.registry)(lambda x: x)
        self.store = MemoryBackend(self.clock)
        self.pool = FakePool()

    def dispatcher(self, pool):
        runner = ReactorTaskRunner(self.registry, self.clock)
        return Dispatcher(pool, self.store, self.clock, reactor_runner=runner)

    def stored(self):
        return [write.record for write in self.store.writes]

    def test_reactor_task(self):
        """
        An ``on_reactor`` task runs on the runner, never the pool; its
        outcome is stored, then the delivery acked, once its Deferred fires.
        """
        dispatcher = self.dispatcher(self.pool)
        delivery = FakeDelivery(TaskMessage(id=task_id(1), task="io", args=(5,)).encode())
        dispatcher.deliver(delivery)
        self.assertEqual(delivery.settled, [])
        self.assertEqual(self.stored(), [])
        self.assertEqual(dispatcher.stats()["in_flight"], 1)
        self.waiting.callback("done")
        [record] = self.stored()
        self.assertEqual(record.task_id, task_id(1))
        self.assertFalse(record.failed)
        self.assertEqual(json.loads(record.document)["result"], "done")
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual((dispatcher.stats()["completed"], dispatcher.stats()["failed"]), (1, 0))
        self.assertEqual(dispatcher.stats()["in_flight"], 0)
        self.assertEqual(self.pool.batches, [])  # never the pool

    def test_reactor_task_failure(self):
        """
        A failed reactor task's outcome is stored as a failure and acked.
        """
        dispatcher = self.dispatcher(self.pool)
        delivery = FakeDelivery(TaskMessage(id=task_id(2), task="io", args=(5,)).encode())
        dispatcher.deliver(delivery)
        self.waiting.errback(ValueError("no"))
        [record] = self.stored()
        self.assertTrue(record.failed)
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual(dispatcher.stats()["failed"], 1)
        self.assertEqual(self.pool.batches, [])

    def test_other_tasks_to_pool(self):
        """
        A task not marked ``on_reactor`` (and an unknown one) still goes to
        the pool.
        """
        pool = FakePool(idle=2)
        dispatcher = self.dispatcher(pool)
        body = TaskMessage(id=task_id(3), task="cpu", args=(1,)).encode()
        dispatcher.deliver(FakeDelivery(body))
        self.assertEqual([bodies for bodies, _ in pool.batches], [[body]])
        unknown = TaskMessage(id=task_id(4), task="unknown").encode()
        dispatcher.deliver(FakeDelivery(unknown))
        self.assertEqual([bodies for bodies, _ in pool.batches], [[body], [unknown]])
        self.assertEqual(self.stored(), [])

    def test_without_runner(self):
        """
        Without a ``reactor_runner`` an ``on_reactor`` task goes to the pool.
        """
        pool = FakePool()
        dispatcher = Dispatcher(pool, self.store, self.clock)
        body = TaskMessage(id=task_id(5), task="io", args=(1,)).encode()
        dispatcher.deliver(FakeDelivery(body))
        self.assertEqual([bodies for bodies, _ in pool.batches], [[body]])

    def test_drain_waits(self):
        """
        ``drain`` waits for a running reactor task to be stored and acked.
        """
        dispatcher = self.dispatcher(self.pool)
        delivery = FakeDelivery(TaskMessage(id=task_id(6), task="io", args=(5,)).encode())
        dispatcher.deliver(delivery)
        drained = dispatcher.drain()
        self.assertNoResult(drained)
        self.waiting.callback(1)
        self.successResultOf(drained)
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual(self.pool.batches, [])
