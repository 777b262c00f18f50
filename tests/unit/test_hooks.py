"""
Tests for :py:mod:`twistedq.hooks`: connecting receivers, sending, the
child's task signals around a task and the daemon's signals.
"""

import logging

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq import hooks
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher
from twistedq.message import TaskMessage
from twistedq.outcome import Outcome
from twistedq.registry import TaskRegistry
from twistedq.task import task
from twistedq.worker.child import TaskRunner


class SignalTests(SynchronousTestCase):
    def setUp(self):
        self.signal = hooks.Signal("test_signal", hooks.CHILD, ("value",))
        self.calls = []

    def test_connect_as_decorator(self):
        """
        ``connect`` works bare and called, returns the function, and
        connects a receiver once; ``send`` calls each with ``sender``,
        ``signal`` and the arguments, and returns what they returned.
        """

        @self.signal.connect
        def first(sender, signal, value):
            self.calls.append(("first", sender, signal, value))
            return 1

        @self.signal.connect()
        def second(sender, **rest):
            self.calls.append(("second", sender, rest["value"]))

        self.signal.connect(first)
        answers = self.signal.send("me", value=5)
        self.assertEqual(answers, [(first, 1), (second, None)])
        self.assertEqual(self.calls, [("first", "me", self.signal, 5), ("second", "me", 5)])
        self.assertTrue(callable(first))

    def test_sender(self):
        """
        A receiver connected for a sender is called for it alone; a task's
        name stands for the task.
        """
        add = task(name="hooks.add", registry=TaskRegistry())(lambda x, y: x + y)
        self.signal.connect(lambda sender, **rest: self.calls.append(sender), sender="hooks.add")
        self.signal.send(add, value=1)
        self.signal.send("other", value=1)
        self.assertEqual(self.calls, [add])

    def test_disconnect(self):
        def receiver(**rest):
            self.calls.append(rest)

        self.signal.connect(receiver)
        self.assertTrue(self.signal.disconnect(receiver))
        self.assertFalse(self.signal.disconnect(receiver))
        self.assertEqual(self.signal.send(None, value=1), [])
        self.assertEqual(self.calls, [])

    def test_receiver_error_logged(self):
        """
        A receiver that raises is logged; the next one is still called and
        ``send`` does not raise.
        """
        error = RuntimeError("bad receiver")

        def bad(**rest):
            raise error

        self.signal.connect(bad)
        self.signal.connect(lambda **rest: self.calls.append("after"))
        with self.assertLogs("twistedq.hooks", logging.ERROR) as logged:
            answers = self.signal.send(None, value=1)
        self.assertIs(answers[0][1], error)
        self.assertEqual(self.calls, ["after"])
        self.assertIn("A receiver of test_signal failed", logged.output[0])

    def test_daemon_receiver_error_level(self):
        """
        A failed receiver of a daemon's signal is logged at ERROR with its
        traceback, as in a child (it was CRITICAL).
        """
        from twisted.logger import LogLevel, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        signal = hooks.Signal("test_daemon_signal", hooks.DAEMON, ("value",))

        def bad(**rest):
            raise RuntimeError("bad receiver")

        signal.connect(bad)
        signal.send(None, value=1)
        [event] = [e for e in events if e.get("signal") == "test_daemon_signal"]
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)


def divide(a, b):
    return a / b


class ChildSignalTests(SynchronousTestCase):
    """
    The signals a child sends around a task.
    """

    def setUp(self):
        self.registry = TaskRegistry()
        self.divide = task(name="divide", registry=self.registry)(divide)
        self.flaky = task(name="flaky", registry=self.registry, autoretry_for=(KeyError,))(
            self.raise_key_error
        )
        self.runner = TaskRunner(self.registry)
        self.seen = []
        for signal in (
            hooks.task_prerun,
            hooks.task_success,
            hooks.task_failure,
            hooks.task_retry,
            hooks.task_postrun,
        ):
            receiver = self.recorder(signal.name)
            signal.connect(receiver)
            self.addCleanup(signal.disconnect, receiver)

    @staticmethod
    def raise_key_error():
        raise KeyError("missing")

    def recorder(self, name):
        def receive(sender, signal, **arguments):
            self.seen.append((name, sender, arguments))

        return receive

    def run_task(self, name, *args):
        message = TaskMessage(id=task_id(1), task=name, args=args)
        return Outcome.from_bytes(message.id, self.runner.run(message.encode()))

    def test_success(self):
        """
        On success: prerun, success with the result, postrun with the
        result and SUCCESS; the sender is the task.
        """
        outcome = self.run_task("divide", 6, 3)
        self.assertEqual(outcome.result, 2)
        self.assertEqual(
            [name for name, _, _ in self.seen], ["task_prerun", "task_success", "task_postrun"]
        )
        self.assertTrue(all(sender is self.divide for _, sender, _ in self.seen))
        self.assertEqual(
            self.seen[0][2],
            {"task_id": task_id(1), "task": self.divide, "args": (6, 3), "kwargs": {}},
        )
        self.assertEqual(self.seen[1][2], {"task_id": task_id(1), "result": 2.0})
        self.assertEqual((self.seen[2][2]["retval"], self.seen[2][2]["state"]), (2.0, "SUCCESS"))

    def test_failure(self):
        """
        On failure: task_failure with the exception and its traceback;
        postrun says FAILURE.
        """
        outcome = self.run_task("divide", 1, 0)
        self.assertEqual(outcome.status, "FAILURE")
        names = [name for name, _, _ in self.seen]
        self.assertEqual(names, ["task_prerun", "task_failure", "task_postrun"])
        failure = self.seen[1][2]
        self.assertIsInstance(failure["exception"], ZeroDivisionError)
        self.assertIsNotNone(failure["traceback"])
        self.assertEqual(self.seen[2][2]["state"], "FAILURE")

    def test_prerun_kwargs_change_the_call(self):
        """
        ``task_prerun`` gets ``args`` as a tuple and the task's own
        ``kwargs``: a receiver that changes them changes the call.
        """

        def double_b(sender, kwargs, args, **rest):
            self.assertIsInstance(args, tuple)
            kwargs["b"] = 2

        hooks.task_prerun.connect(double_b)
        self.addCleanup(hooks.task_prerun.disconnect, double_b)
        message = TaskMessage(id=task_id(1), task="divide", args=(6,), kwargs={"b": 1})
        outcome = Outcome.from_bytes(message.id, self.runner.run(message.encode()))
        self.assertEqual(outcome.result, 3)

    def test_retry(self):
        """
        A task that retries sends task_retry with the reason.
        """
        outcome = self.run_task("flaky")
        self.assertEqual(outcome.status, "RETRY")
        names = [name for name, _, _ in self.seen]
        self.assertEqual(names, ["task_prerun", "task_retry", "task_postrun"])
        self.assertIsInstance(self.seen[1][2]["reason"], KeyError)
        self.assertEqual(self.seen[1][2]["retries"], 0)

    def test_receiver_error_changes_nothing(self):
        """
        A receiver that raises, before or after the task, changes nothing
        of its outcome.
        """

        def bad(**rest):
            raise RuntimeError("receiver bug")

        hooks.task_prerun.connect(bad)
        hooks.task_postrun.connect(bad)
        self.addCleanup(hooks.task_prerun.disconnect, bad)
        self.addCleanup(hooks.task_postrun.disconnect, bad)
        with self.assertLogs("twistedq.hooks", logging.ERROR):
            outcome = self.run_task("divide", 8, 2)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", 4))

    def test_none_connected_none_sent(self):
        """
        With no receiver, the runner sends nothing (one check per task).
        """
        for signal in hooks._TASK_SIGNALS:
            signal.receivers, saved = [], signal.receivers
            self.addCleanup(setattr, signal, "receivers", saved)
        self.assertFalse(hooks.task_signals_connected())
        self.assertEqual(self.run_task("divide", 1, 1).result, 1)
        self.assertEqual(self.seen, [])


class DaemonSignalTests(SynchronousTestCase):
    """
    The daemon's signals, sent by :py:class:`~twistedq.hooks.DaemonHooks`.
    """

    def setUp(self):
        self.clock = Clock()
        self.dispatcher = Dispatcher(FakePool(idle=1), MemoryBackend(self.clock), self.clock)
        self.service = hooks.DaemonHooks(self.dispatcher.events, lambda: "d1@host")
        self.seen = []

    def connect(self, signal):
        def receive(sender, signal, **arguments):
            self.seen.append((signal.name, sender, arguments))

        signal.connect(receive)
        self.addCleanup(signal.disconnect, receive)

    def test_received_and_revoked(self):
        """
        task_received for each task taken, task_revoked for one that
        expired, with the reason.
        """
        self.connect(hooks.task_received)
        self.connect(hooks.task_revoked)
        self.service.startService()
        self.dispatcher.deliver(delivery(1, "add", expires="1970-01-01T00:00:00+00:00"))
        names = [(name, sender) for name, sender, _ in self.seen]
        self.assertEqual(names, [("task_received", "add"), ("task_revoked", "add")])
        self.assertIsInstance(self.seen[0][2]["message"], TaskMessage)
        revoked = self.seen[1][2]
        self.assertEqual(
            (revoked["task_id"], revoked["expired"], revoked["terminated"]),
            (task_id(1), True, False),
        )

    def test_no_receiver_no_observer(self):
        """
        Without a receiver of the task signals, the events seam is not
        observed at all.
        """
        self.service.startService()
        self.assertFalse(self.service.observing)

    def test_ready_and_shutting_down(self):
        """
        worker_ready when told, worker_shutting_down when it stops; the
        sender is the daemon's name.
        """
        self.connect(hooks.worker_ready)
        self.connect(hooks.worker_shutting_down)
        self.service.startService()
        self.service.ready()
        self.service.stopService()
        self.assertEqual(
            self.seen, [("worker_ready", "d1@host", {}), ("worker_shutting_down", "d1@host", {})]
        )

    def test_imports_modules(self):
        """
        The hook modules are imported when it starts.
        """
        service = hooks.DaemonHooks(self.dispatcher.events, lambda: "d", ["no_such_hooks_module"])
        self.assertRaises(ModuleNotFoundError, service.startService)


class RetriesRunOutTests(SynchronousTestCase):
    """
    When a task's retries run out, ``task_failure`` (and ``task_postrun``)
    get the exception its outcome stores, not the ``Retry``.
    """

    def setUp(self):
        from twistedq.task import retry

        self.registry = TaskRegistry()

        def again():
            retry(exc=ValueError("again"), countdown=1)

        def bare():
            retry(countdown=1)

        for name, function in (("again", again), ("bare", bare)):
            task(name=name, registry=self.registry, max_retries=2)(function)
        self.runner = TaskRunner(self.registry)
        self.seen = []

        def receive(sender, signal, **arguments):
            self.seen.append((signal.name, arguments))

        for signal in (hooks.task_failure, hooks.task_postrun):
            signal.connect(receive)
            self.addCleanup(signal.disconnect, receive)

    def run_task(self, name, retries):
        message = TaskMessage(id=task_id(1), task=name, retries=retries)
        return Outcome.from_bytes(message.id, self.runner.run(message.encode()))

    def test_original_exception(self):
        outcome = self.run_task("again", 2)
        self.assertEqual(outcome.status, "FAILURE")
        (_, failure), (_, postrun) = self.seen
        self.assertIsInstance(failure["exception"], ValueError)
        self.assertEqual(str(failure["exception"]), "again")
        self.assertIs(postrun["retval"], failure["exception"])
        self.assertEqual(postrun["state"], "FAILURE")
        # It was never raised: the traceback is the retry's.
        self.assertIsNotNone(failure["traceback"])

    def test_bare_retry(self):
        from twistedq.exceptions import MaxRetriesExceededError

        outcome = self.run_task("bare", 2)
        self.assertEqual(outcome.status, "FAILURE")
        self.assertIsInstance(self.seen[0][1]["exception"], MaxRetriesExceededError)
        self.assertIn("MaxRetriesExceededError", repr(outcome.exc))
