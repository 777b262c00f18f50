"""
Tests for :py:obj:`twistedq.worker.child`: the task runner and the child's
AMP responders, driven over an in-memory AMP connection.
"""

import json
import os
import sys

from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome
from twistedq.registry import TaskRegistry
from twistedq.schedules import crontab
from twistedq.task import PeriodicTask
from twistedq.worker.child import ChildLocator, TaskRunner
from twistedq.worker.commands import Hello, RunTasks, Shutdown, pack, unpack

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
OTHER_ID = "ed7b2a51-5b8d-4a61-9f0a-7cf1f5a8e0a4"


def add(a, b):
    return a + b


def explode_in_task(message):
    raise ValueError(message)


def returns_object():
    return object()


def returns_nan():
    return float("nan")


def calls_exit():
    sys.exit(3)


def echo(value):
    return value


class Nightly(PeriodicTask):
    name = "nightly"
    run_every = crontab(minute=30, hour=2, tz="Europe/Paris")
    catch_up = "skip"
    queue = "reports"

    def run(self, **kwargs):
        return None


def make_registry():
    registry = TaskRegistry()
    registry.register(Nightly)
    registry.register(add, "add")
    registry.register(explode_in_task, "explode")
    registry.register(returns_object, "object")
    registry.register(returns_nan, "nan")
    registry.register(calls_exit, "exit")
    registry.register(echo, "echo")
    return registry


def body(task, *args, task_id=TASK_ID, **kwargs):
    return TaskMessage(id=task_id, task=task, args=args, kwargs=kwargs).encode()


def parse(document, task_id=TASK_ID):
    return Outcome.from_bytes(task_id, document)


class TaskRunnerTests(SynchronousTestCase):
    """
    :py:obj:`TaskRunner.run` turns whatever happens into an outcome document
    and never raises.
    """

    def setUp(self):
        self.runner = TaskRunner(make_registry())

    def test_success(self):
        """
        A task that returns gives a SUCCESS document with its value.
        """
        document = json.loads(self.runner.run(body("add", 2, b=3)))
        self.assertEqual(
            (document["id"], document["task"], document["status"], document["result"]),
            (TASK_ID, "add", "SUCCESS", 5),
        )

    def test_raising_task(self):
        """
        A task that raises gives a FAILURE document with the exception and a
        traceback naming the task function.
        """
        outcome = parse(self.runner.run(body("explode", "kaboom")))
        self.assertEqual(outcome.status, "FAILURE")
        self.assertEqual(outcome.task, "explode")
        self.assertEqual(
            outcome.exc,
            {"module": "builtins", "type": "ValueError", "message": "kaboom", "args": ["kaboom"]},
        )
        self.assertIn("explode_in_task", outcome.traceback)
        self.assertIn("ValueError: kaboom", outcome.traceback)

    def test_unknown_task(self):
        """
        A task name not registered gives a FAILURE NotRegistered naming it.
        """
        outcome = parse(self.runner.run(body("nope")))
        self.assertEqual((outcome.status, outcome.task), ("FAILURE", "nope"))
        self.assertEqual(outcome.exc["type"], "NotRegistered")
        self.assertEqual(outcome.exc["module"], "twistedq.registry")
        self.assertEqual(outcome.exc["message"], "no task named 'nope' is registered")

    def test_malformed_body(self):
        """
        A body that is not a task message gives a FAILURE MessageError saying
        why, with an empty id.
        """
        document = json.loads(self.runner.run(b"not json"))
        self.assertEqual(document["status"], "FAILURE")
        self.assertEqual(document["id"], "")
        self.assertEqual(document["exc"]["type"], "MessageError")
        self.assertIn("not JSON", document["exc"]["message"])

    def test_bad_arguments(self):
        """
        Calling a task with the wrong arguments is the task's FAILURE
        (``TypeError``), not a crash.
        """
        outcome = parse(self.runner.run(body("add", 1)))
        self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "TypeError"))

    def test_non_json_result(self):
        """
        A task returning a value that is not JSON gives a FAILURE TypeError.
        """
        for name in ("object", "nan"):
            outcome = parse(self.runner.run(body(name)))
            self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "TypeError"))
            self.assertIn("not a JSON value", outcome.exc["message"])

    def test_sys_exit(self):
        """
        A task calling ``sys.exit`` gives a FAILURE SystemExit; the runner does
        not exit.
        """
        outcome = parse(self.runner.run(body("exit")))
        self.assertEqual(outcome.status, "FAILURE")
        self.assertEqual(outcome.exc["type"], "SystemExit")
        self.assertEqual(outcome.exc["args"], [3])
        self.assertIn("calls_exit", outcome.traceback)


class ChildLocatorTests(SynchronousTestCase):
    """
    The child's responders, called over a real AMP connection in memory.
    """

    def setUp(self):
        self.stops = []
        self.locator = ChildLocator(TaskRunner(make_registry()), lambda: self.stops.append(1))
        self.client, self.server, self.pump = iosim.connectedServerAndClient(
            lambda: amp.AMP(locator=self.locator), amp.AMP
        )

    def call(self, command, **kwargs):
        d = self.client.callRemote(command, **kwargs)
        self.pump.flush()
        return d

    def test_run_tasks_in_order(self):
        """
        A batch of three bodies returns three outcomes, in order.
        """
        bodies = [
            body("add", 1, 2, task_id=TASK_ID),
            body("explode", "x", task_id=OTHER_ID),
            body("add", 10, 20, task_id="7f2d6a3c-3c2e-4b1f-9a1e-5d0c7e3b2a19"),
        ]
        response = self.successResultOf(self.call(RunTasks, bodies=pack(bodies)))
        outcomes = [json.loads(document) for document in unpack(response["outcomes"])]
        self.assertEqual(
            [(o["id"], o["status"], o["result"]) for o in outcomes],
            [
                (TASK_ID, "SUCCESS", 3),
                (OTHER_ID, "FAILURE", None),
                ("7f2d6a3c-3c2e-4b1f-9a1e-5d0c7e3b2a19", "SUCCESS", 30),
            ],
        )

    def test_large_values(self):
        """
        A 200 KB argument and a 200 KB result, each over one AMP value, arrive
        intact.
        """
        big = "".join(chr(0x41 + i % 26) for i in range(200 * 1024)) + "é"
        bodies = [body("echo", big), body("echo", "small", task_id=OTHER_ID)]
        self.assertGreater(len(pack(bodies)), 0xFFFF * 3)
        response = self.successResultOf(self.call(RunTasks, bodies=pack(bodies)))
        outcomes = unpack(response["outcomes"])
        self.assertEqual(len(outcomes), 2)
        self.assertEqual(json.loads(outcomes[0])["result"], big)
        self.assertEqual(json.loads(outcomes[1])["result"], "small")

    def test_empty_batch(self):
        """
        An empty batch returns no outcomes.
        """
        response = self.successResultOf(self.call(RunTasks, bodies=pack([])))
        self.assertEqual(unpack(response["outcomes"]), [])

    def test_hello(self):
        """
        Hello answers the child's pid and every registered task with its
        soft and hard time limits (none for plain functions), and the
        schedules of periodic tasks.
        """
        response = self.successResultOf(self.call(Hello))
        self.assertEqual(response["pid"], os.getpid())
        names = ["add", "echo", "exit", "explode", "nan", "nightly", "object"]
        self.assertEqual(json.loads(response["tasks"]), {name: [None, None] for name in names})
        self.assertEqual(
            json.loads(response["periodic"]),
            {
                "nightly": {
                    "crontab": {
                        "minute": 30,
                        "hour": 2,
                        "day_of_week": "*",
                        "day_of_month": "*",
                        "month_of_year": "*",
                    },
                    "tz": "Europe/Paris",
                    "catch_up": "skip",
                    "queue": "reports",
                }
            },
        )

    def test_shutdown(self):
        """
        Shutdown calls the child's stop function once.
        """
        self.assertIsNone(self.client.callRemote(Shutdown))
        self.pump.flush()
        self.assertEqual(self.stops, [1])


class CommandsTests(SynchronousTestCase):
    """
    ``pack`` and ``unpack`` frame records.
    """

    def test_round_trip(self):
        """
        Records, empty ones included, come back as they were.
        """
        records = [b"", b"a", b"\x00" * 70000, b"end"]
        self.assertEqual(unpack(pack(records)), records)

    def test_truncated(self):
        """
        A truncated length or record raises ``ValueError``.
        """
        data = pack([b"abcdef"])
        self.assertRaises(ValueError, unpack, data[:2])
        self.assertRaises(ValueError, unpack, data[:-1])


class ExtraKeywordTests(SynchronousTestCase):
    """
    The seed's extra keyword arguments reach tasks that accept ``**kwargs``.
    """

    def run_task(self, function, *args, **kwargs):
        registry = TaskRegistry()
        registry.register(function, "t")
        message = TaskMessage(id=new_task_id(), task="t", args=args, kwargs=kwargs)
        outcome = Outcome.from_bytes(message.id, TaskRunner(registry).run(message.encode()))
        return message, outcome

    def test_var_keyword_task_gets_extras(self):
        """
        A task taking ``**kwargs`` receives task_id, task_name, logfile and
        loglevel besides its own keyword arguments.
        """

        def task(x, **kwargs):
            return {"x": x, **{k: kwargs[k] for k in sorted(kwargs)}}

        message, outcome = self.run_task(task, x=1)
        self.assertEqual(
            outcome.result,
            {"x": 1, "task_id": message.id, "task_name": "t", "logfile": None, "loglevel": 20},
        )

    def test_plain_task_gets_none(self):
        """
        A task without ``**kwargs`` is called with its own arguments only.
        """

        def task(x):
            return x

        _, outcome = self.run_task(task, x=5)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", 5))

    def test_positional_argument_wins(self):
        """
        An extra whose name a positional argument already fills is not
        passed: an errback ``on_error(task_id, **kwargs)`` gets the failed
        task's id first (it raised TypeError: multiple values for
        'task_id'), and the other extras still.
        """

        def on_error(task_id, **kwargs):
            return [task_id, sorted(kwargs)]

        failed = new_task_id()
        _, outcome = self.run_task(on_error, failed)
        self.assertEqual(outcome.status, "SUCCESS", outcome.exc)
        self.assertEqual(outcome.result, [failed, ["logfile", "loglevel", "task_name"]])

    def test_caller_keyword_wins(self):
        """
        A keyword argument the caller passed is not replaced by an extra of
        the same name.
        """

        def task(**kwargs):
            return kwargs["loglevel"]

        _, outcome = self.run_task(task, loglevel=10)
        self.assertEqual(outcome.result, 10)
