"""
The result size limit: an outcome document over ``max_result_size`` is
replaced in the child (or in the daemon, for a reactor task) by a FAILURE
``ResultTooLarge`` that names the task, the size and the limit, so the
value never crosses the pipe to the daemon nor reaches a store.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeStarter
from twistedq.exceptions import ResultTooLarge
from twistedq.message import TaskMessage
from twistedq.outcome import DEFAULT_MAX_RESULT_SIZE, Outcome
from twistedq.registry import TaskRegistry
from twistedq.task import retry, task
from twistedq.worker.child import ChildLocator, TaskRunner
from twistedq.worker.commands import RunTasks, pack, unpack
from twistedq.worker.pool import ProcessPool
from twistedq.worker.reactor_tasks import ReactorTaskRunner

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
LIMIT = 10_000


def big_string(size: int) -> str:
    return "x" * size


def raise_big(size: int) -> None:
    raise ValueError("y" * size)


def retry_big(size: int) -> None:
    retry(exc=ValueError("z" * size), countdown=1)


def registry() -> TaskRegistry:
    tasks = TaskRegistry()
    tasks.register(big_string, "big_string")
    tasks.register(raise_big, "raise_big")
    tasks.register(retry_big, "retry_big")
    return tasks


def body(name: str, *args: Any) -> bytes:
    return TaskMessage(id=TASK_ID, task=name, args=args).encode()


class RunnerLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runner = TaskRunner(registry())
        self.runner.max_result_size = LIMIT

    def test_default(self) -> None:
        """
        A runner has the default limit, 8 MiB, unless told otherwise.
        """
        self.assertEqual(DEFAULT_MAX_RESULT_SIZE, 8 * 1024 * 1024)
        self.assertEqual(TaskRunner(registry()).max_result_size, DEFAULT_MAX_RESULT_SIZE)

    def test_under_limit_kept(self) -> None:
        """
        A value whose outcome fits is a SUCCESS, unchanged.
        """
        outcome = Outcome.from_bytes(TASK_ID, self.runner.run(body("big_string", 9_000)))
        self.assertEqual((outcome.status, len(outcome.result)), ("SUCCESS", 9_000))

    def test_return_value_over_limit(self) -> None:
        """
        A return value whose outcome is over the limit gives a small
        FAILURE ResultTooLarge naming the task, the size and the limit;
        the exception rebuilt on the client's side keeps both numbers.
        """
        document = self.runner.run(body("big_string", 20_000))
        self.assertLess(len(document), 2_000)
        outcome = Outcome.from_bytes(TASK_ID, document)
        self.assertEqual(outcome.status, "FAILURE")
        self.assertEqual(outcome.exc["type"], "ResultTooLarge")
        self.assertEqual(outcome.exc["module"], "twistedq.exceptions")
        message = outcome.exc["message"]
        self.assertIn("big_string", message)
        self.assertIn("20,", message)  # the size, in bytes
        self.assertIn("10,000", message)
        self.assertIn("returned a str", message)
        error = outcome.exception()
        self.assertIsInstance(error, ResultTooLarge)
        self.assertEqual(str(error), message)
        self.assertEqual(error.limit, LIMIT)
        self.assertGreater(error.size, 20_000)

    def test_exception_over_limit(self) -> None:
        """
        An exception whose message and traceback make the outcome too large
        gives ResultTooLarge too; its message names the exception and its
        beginning, and the traceback kept is cut to fit.
        """
        outcome = Outcome.from_bytes(TASK_ID, self.runner.run(body("raise_big", 50_000)))
        self.assertEqual(outcome.status, "FAILURE")
        self.assertEqual(outcome.exc["type"], "ResultTooLarge")
        self.assertIn("raised ValueError: yyyy", outcome.exc["message"])
        self.assertIn("raise_big", outcome.exc["message"])
        self.assertIn("raise_big", outcome.traceback)  # the frames, not the message
        self.assertLess(len(json.dumps(outcome.traceback)), LIMIT)

    def test_retry_over_limit(self) -> None:
        """
        A RETRY outcome over the limit fails the same way, rather than
        carry the value on.
        """
        outcome = Outcome.from_bytes(TASK_ID, self.runner.run(body("retry_big", 50_000)))
        self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "ResultTooLarge"))

    def test_no_limit(self) -> None:
        """
        ``None`` means no limit.
        """
        self.runner.max_result_size = None
        outcome = Outcome.from_bytes(TASK_ID, self.runner.run(body("big_string", 20_000)))
        self.assertEqual(outcome.status, "SUCCESS")


class ChildLimitTests(SynchronousTestCase):
    def test_limit_from_the_command(self) -> None:
        """
        The child applies the limit the daemon sends with the batch, before
        the answer is written to the pipe.
        """
        locator = ChildLocator(TaskRunner(registry()), lambda: None)
        client, _server, pump = iosim.connectedServerAndClient(
            lambda: amp.AMP(locator=locator), amp.AMP
        )
        d = client.callRemote(
            RunTasks, bodies=pack([body("big_string", 200_000)]), max_result_size=LIMIT
        )
        pump.flush()
        response = self.successResultOf(d)
        self.assertLess(len(response["outcomes"]), 2_000)
        [document] = unpack(response["outcomes"])
        self.assertEqual(json.loads(document)["exc"]["type"], "ResultTooLarge")

    def test_pool_sends_its_limit(self) -> None:
        """
        The pool sends ``max_result_size`` with every batch: the default
        unless given, nothing for ``None``.
        """
        for given, sent in ((LIMIT, LIMIT), (DEFAULT_MAX_RESULT_SIZE, DEFAULT_MAX_RESULT_SIZE)):
            starter = FakeStarter()
            if given == DEFAULT_MAX_RESULT_SIZE:
                pool = ProcessPool(starter, 1, Clock())
            else:
                pool = ProcessPool(starter, 1, Clock(), max_result_size=given)
            self.successResultOf(pool.startService())
            pool.run_batch([b"x"])
            [(_, kwargs, _)] = starter.children[0].protocol.calls
            self.assertEqual(kwargs["max_result_size"], sent)
        starter = FakeStarter()
        pool = ProcessPool(starter, 1, Clock(), max_result_size=None)
        self.successResultOf(pool.startService())
        pool.run_batch([b"x"])
        [(_, kwargs, _)] = starter.children[0].protocol.calls
        self.assertNotIn("max_result_size", kwargs)


class ReactorTaskLimitTests(SynchronousTestCase):
    def test_reactor_task_over_limit(self) -> None:
        """
        A reactor task's value over the limit is not stored either.
        """
        tasks = TaskRegistry()

        @task(name="big_async", on_reactor=True)
        def big_async(size: int) -> defer.Deferred[str]:
            return defer.succeed("x" * size)

        tasks.register(big_async)
        runner = ReactorTaskRunner(tasks, Clock(), max_result_size=LIMIT)
        message = TaskMessage(id=TASK_ID, task="big_async", args=(20_000,))
        document = self.successResultOf(runner.run_message(message))
        outcome = Outcome.from_bytes(TASK_ID, document)
        self.assertEqual(outcome.exc["type"], "ResultTooLarge")
