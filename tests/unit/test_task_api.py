"""
Tests for the task API of :py:mod:`twistedq.task`: publishing ``Task``
subclasses and ``@task`` functions through an in-memory client, countdown,
ETA, expiry and queue options, the extra keyword arguments the
:py:obj:`~twistedq.worker.child.TaskRunner` gives, ``TaskSet``, ``dmap`` and
the module-level facades.
"""

import datetime
import io
import logging

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient, in_child
from twistedq.client import set_default_client
from twistedq.log import TASK_LOGGER_NAME
from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome, failure_document, success_document
from twistedq.registry import TaskRegistry
from twistedq.result import AsyncResult, TaskSetResult, WaitInTaskError
from twistedq.task import (
    FunctionTask,
    Task,
    TaskSet,
    discard_all,
    dmap,
    dmap_async,
    is_done,
    publish_task,
    task,
    tasks,
)
from twistedq.worker.child import TaskRunner

UTC = datetime.timezone.utc


def use_default_client(case, client):
    """
    Make ``client`` the default client until ``case`` ends.
    """
    set_default_client(client)
    case.addCleanup(set_default_client, None)


def parse(text):
    return datetime.datetime.fromisoformat(text)


class Add(Task):
    name = "tests.task.add"

    def run(self, x, y, **kwargs):
        return x + y


class Routed(Task):
    name = "tests.task.routed"
    queue = "special"

    def run(self, **kwargs):
        return "routed"


class Nameless(Task):
    def run(self, **kwargs):
        return None


class WithExtras(Task):
    name = "tests.task.with-extras"

    def run(self, x, **kwargs):
        return {"x": x, **kwargs}


class WithoutExtras(Task):
    name = "tests.task.without-extras"

    def run(self, x, y=0):
        return [x, y]


def module_level(x):
    return x * 3


def function_with_extras(x, **kwargs):
    return {"x": x, **kwargs}


def function_without_extras(x, y=0):
    return [x, y]


def add_runner(message):
    """
    Run ``add`` as a daemon would: a negative argument fails.
    """
    if any(a < 0 for a in message.args):
        return failure_document(message.id, message.task, ValueError(f"negative {message.args}"))
    return success_document(message.id, message.task, sum(message.args))


class TaskClassTests(SynchronousTestCase):
    """
    A Task subclass publishes messages carrying its name and arguments.
    """

    def test_apply_async(self):
        """
        ``apply_async(args, kwargs, client=...)`` publishes one message with
        the class's name, the args and kwargs, no ETA, expiry or taskset,
        and returns its :py:obj:`AsyncResult` bound to that client.
        """
        client = FakeClient()
        result = Add.apply_async((1, 2), {"z": 3}, client=client)
        [(message, queue)] = client.published
        self.assertIsInstance(message, TaskMessage)
        self.assertEqual(message.task, "tests.task.add")
        self.assertEqual(message.args, (1, 2))
        self.assertEqual(message.kwargs, {"z": 3})
        self.assertIsNone(message.eta)
        self.assertIsNone(message.expires)
        self.assertIsNone(message.taskset)
        self.assertIsNone(queue)
        self.assertIsInstance(result, AsyncResult)
        self.assertEqual(result.task_id, message.id)
        self.assertIs(result.client, client)
        self.assertEqual(client.calls, [("publish", message.id, None)])

    def test_message_encodes(self):
        """
        The published message is a valid wire message.
        """
        client = FakeClient()
        Add.apply_async((1, 2), client=client, countdown=5)
        [(message, _)] = client.published
        self.assertEqual(TaskMessage.decode(message.encode()), message)

    def test_delay_default_client(self):
        """
        ``delay(*args, **kwargs)`` publishes through the default client.
        """
        client = FakeClient()
        use_default_client(self, client)
        result = Add.delay(1, 2, z=3)
        [(message, queue)] = client.published
        self.assertEqual((message.task, message.args, message.kwargs), (Add.name, (1, 2), {"z": 3}))
        self.assertIsNone(queue)
        self.assertEqual(result.task_id, message.id)
        self.assertIs(result.client, client)

    def test_task_id(self):
        """
        A given ``task_id`` is used as the message id.
        """
        client = FakeClient()
        task_id = new_task_id()
        result = Add.apply_async((1, 2), task_id=task_id, client=client)
        self.assertEqual(client.published[0][0].id, task_id)
        self.assertEqual(result.task_id, task_id)

    def test_fresh_ids(self):
        """
        Each publish gets a fresh task id.
        """
        client = FakeClient()
        Add.apply_async((1, 2), client=client)
        Add.apply_async((1, 2), client=client)
        self.assertNotEqual(client.published[0][0].id, client.published[1][0].id)

    def test_queue_from_class(self):
        """
        A class's ``queue`` is where its messages go.
        """
        client = FakeClient()
        use_default_client(self, client)
        Routed.delay()
        Routed.apply_async(client=client)
        self.assertEqual([q for _, q in client.published], ["special", "special"])

    def test_queue_argument_wins(self):
        """
        A ``queue`` argument overrides the class's.
        """
        client = FakeClient()
        Routed.apply_async(queue="other", client=client)
        Add.apply_async((1, 2), queue="elsewhere", client=client)
        self.assertEqual([q for _, q in client.published], ["other", "elsewhere"])

    def test_nameless_delay(self):
        """
        ``delay`` of a Task class without a name raises
        :py:obj:`ValueError` and publishes nothing.
        """
        client = FakeClient()
        use_default_client(self, client)
        self.assertRaises(ValueError, Nameless.delay)
        self.assertRaises(ValueError, Nameless.apply_async, client=client)
        self.assertEqual(client.published, [])

    def test_instance_call_runs(self):
        """
        Calling a task instance runs it locally.
        """
        self.assertEqual(Add()(2, 3), 5)

    def test_base_run(self):
        """
        A Task that does not define ``run`` raises
        :py:obj:`NotImplementedError` when called.
        """
        self.assertRaises(NotImplementedError, Task(), 1)

    def test_get_logger(self):
        """
        ``get_logger(**kwargs)`` returns the ``twistedq.task`` logger set up
        from the extra keyword arguments (``loglevel``, ``logfile``).
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        saved = (list(logger.handlers), logger.level, logger.propagate)

        def restore():
            for handler in list(logger.handlers):
                if handler not in saved[0]:
                    logger.removeHandler(handler)
                    handler.close()
            logger.setLevel(saved[1])
            logger.propagate = saved[2]

        self.addCleanup(restore)
        stream = io.StringIO()
        got = Add().get_logger(
            task_id=new_task_id(), task_name=Add.name, logfile=stream, loglevel=logging.DEBUG
        )
        self.assertIs(got, logger)
        self.assertEqual(got.name, "twistedq.task")
        self.assertEqual(got.level, logging.DEBUG)
        got.debug("hello %s", "there")
        self.assertIn("DEBUG", stream.getvalue())
        self.assertIn("hello there", stream.getvalue())


class TimingTests(SynchronousTestCase):
    """
    ``countdown``, ``eta`` and ``expires`` become ISO 8601 UTC times.
    """

    def publish(self, **options):
        client = FakeClient()
        Add.apply_async((1, 2), client=client, **options)
        return client.published[0][0]

    def test_countdown(self):
        """
        ``countdown`` sets the ETA to about now plus that many seconds, in
        UTC.
        """
        before = datetime.datetime.now(UTC)
        message = self.publish(countdown=30)
        after = datetime.datetime.now(UTC)
        eta = parse(message.eta)
        self.assertEqual(eta.utcoffset(), datetime.timedelta(0))
        self.assertLessEqual(before + datetime.timedelta(seconds=30), eta)
        self.assertLessEqual(eta, after + datetime.timedelta(seconds=30))
        self.assertIsNone(message.expires)

    def test_eta_naive_is_utc(self):
        """
        A naive ``eta`` datetime is taken as UTC.
        """
        message = self.publish(eta=datetime.datetime(2030, 1, 2, 3, 4, 5))
        self.assertEqual(parse(message.eta), datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
        self.assertEqual(parse(message.eta).utcoffset(), datetime.timedelta(0))

    def test_eta_aware_converted(self):
        """
        An ``eta`` in another zone is written as the same instant in UTC.
        """
        plus_two = datetime.timezone(datetime.timedelta(hours=2))
        message = self.publish(eta=datetime.datetime(2030, 1, 2, 5, 0, tzinfo=plus_two))
        self.assertEqual(message.eta, "2030-01-02T03:00:00+00:00")

    def test_eta_unix_time(self):
        """
        An ``eta`` given as a Unix time is that instant in UTC.
        """
        message = self.publish(eta=1_800_000_000)
        self.assertEqual(parse(message.eta).timestamp(), 1_800_000_000)
        self.assertEqual(parse(message.eta).utcoffset(), datetime.timedelta(0))

    def test_eta_and_countdown(self):
        """
        ``eta`` and ``countdown`` together raise :py:obj:`ValueError` and
        publish nothing.
        """
        client = FakeClient()
        self.assertRaises(
            ValueError,
            Add.apply_async,
            (1, 2),
            countdown=5,
            eta=datetime.datetime(2030, 1, 1),
            client=client,
        )
        self.assertEqual(client.published, [])

    def test_expires_timedelta(self):
        """
        ``expires`` as a timedelta is that long from now.
        """
        before = datetime.datetime.now(UTC)
        message = self.publish(expires=datetime.timedelta(minutes=5))
        after = datetime.datetime.now(UTC)
        expires = parse(message.expires)
        self.assertLessEqual(before + datetime.timedelta(minutes=5), expires)
        self.assertLessEqual(expires, after + datetime.timedelta(minutes=5))
        self.assertIsNone(message.eta)

    def test_expires_datetime(self):
        """
        ``expires`` as a datetime is that time (naive means UTC).
        """
        message = self.publish(expires=datetime.datetime(2031, 6, 7, 8, 9, 10))
        self.assertEqual(message.expires, "2031-06-07T08:09:10+00:00")

    def test_expires_unix_time(self):
        """
        ``expires`` as a number is a Unix time.
        """
        message = self.publish(expires=1_800_000_000.5)
        self.assertEqual(parse(message.expires).timestamp(), 1_800_000_000.5)

    def test_publish_task_by_name(self):
        """
        ``publish_task`` publishes a task by name with the same options.
        """
        client = FakeClient()
        result = publish_task("by.name", (1,), {"k": 2}, countdown=1, queue="q", client=client)
        [(message, queue)] = client.published
        self.assertEqual((message.task, message.args, message.kwargs), ("by.name", (1,), {"k": 2}))
        self.assertEqual(queue, "q")
        self.assertIsNotNone(message.eta)
        self.assertEqual(result.task_id, message.id)


class FunctionTaskTests(SynchronousTestCase):
    """
    ``@task`` turns a function into a :py:obj:`FunctionTask`.
    """

    def test_bare_decorator(self):
        """
        ``@task`` registers the function in the default registry under its
        module and qualified name; the result is a callable FunctionTask
        that calls the function.
        """

        @task
        def triple(x):
            """Triple it."""
            return x * 3

        name = f"{__name__}.{triple.function.__qualname__}"
        self.addCleanup(tasks.unregister, name)
        self.assertIsInstance(triple, FunctionTask)
        self.assertEqual(triple.name, name)
        self.assertIs(tasks[name], triple)
        self.assertEqual(triple(4), 12)
        self.assertEqual(triple.__doc__, "Triple it.")

    def test_options(self):
        """
        ``@task(name=..., queue=..., registry=...)`` registers the wrapper
        under that name in that registry only, and publishes to that queue.
        """
        registry = TaskRegistry()
        wrapped = task(name="math.triple", queue="maths", registry=registry)(module_level)
        self.assertIs(registry["math.triple"], wrapped)
        self.assertNotIn("math.triple", tasks)
        self.assertEqual(wrapped.name, "math.triple")
        self.assertEqual(wrapped(2), 6)
        client = FakeClient()
        result = wrapped.apply_async((5,), client=client)
        [(message, queue)] = client.published
        self.assertEqual((message.task, message.args, queue), ("math.triple", (5,), "maths"))
        self.assertEqual(result.task_id, message.id)

    def test_default_name(self):
        """
        Without ``name``, the task is named after the function's module and
        qualified name.
        """
        registry = TaskRegistry()
        wrapped = task(registry=registry)(module_level)
        self.assertEqual(wrapped.name, f"{__name__}.module_level")
        self.assertIn(f"{__name__}.module_level", registry)

    def test_delay(self):
        """
        A FunctionTask's ``delay`` publishes through the default client, to
        its queue.
        """
        client = FakeClient()
        use_default_client(self, client)
        wrapped = task(name="math.triple", queue="maths", registry=TaskRegistry())(module_level)
        result = wrapped.delay(7, factor=2)
        [(message, queue)] = client.published
        self.assertEqual(
            (message.task, message.args, message.kwargs, queue),
            ("math.triple", (7,), {"factor": 2}, "maths"),
        )
        self.assertEqual(result.task_id, message.id)

    def test_apply_async_options(self):
        """
        A FunctionTask's ``apply_async`` takes the publishing options: the
        queue argument overrides its own, countdown sets the ETA.
        """
        client = FakeClient()
        wrapped = task(name="math.triple", queue="maths", registry=TaskRegistry())(module_level)
        wrapped.apply_async((1,), queue="fast", countdown=10, client=client)
        [(message, queue)] = client.published
        self.assertEqual(queue, "fast")
        self.assertIsNotNone(message.eta)

    def test_repr(self):
        """
        A FunctionTask shows its task name.
        """
        wrapped = FunctionTask(module_level, "math.triple")
        self.assertEqual(repr(wrapped), "<task math.triple>")


class TaskRunnerExtrasTests(SynchronousTestCase):
    """
    The TaskRunner gives ``task_id``, ``task_name``, ``logfile`` and
    ``loglevel`` only to tasks that accept ``**kwargs``.
    """

    def run_task(self, registered, name, args=(1,), kwargs=None):
        registry = TaskRegistry()
        registry.register(registered, name)
        runner = TaskRunner(registry, loglevel=logging.DEBUG)
        message = TaskMessage(id=new_task_id(), task=name, args=args, kwargs=kwargs or {})
        outcome = Outcome.from_bytes(message.id, runner.run(message.encode()))
        return message, outcome

    def assert_extras(self, message, outcome, **own):
        self.assertEqual(outcome.status, "SUCCESS", outcome.exc)
        self.assertEqual(
            outcome.result,
            {
                "x": 1,
                "task_id": message.id,
                "task_name": message.task,
                "logfile": None,
                "loglevel": logging.DEBUG,
                **own,
            },
        )

    def test_task_class_with_kwargs(self):
        """
        A Task subclass whose ``run`` takes ``**kwargs`` receives the extras
        along with its own keyword arguments.
        """
        message, outcome = self.run_task(WithExtras, WithExtras.name, kwargs={"own": "yes"})
        self.assert_extras(message, outcome, own="yes")

    def test_task_class_without_kwargs(self):
        """
        A Task subclass whose ``run`` takes no ``**kwargs`` gets only its own
        arguments.
        """
        _, outcome = self.run_task(WithoutExtras, WithoutExtras.name, kwargs={"y": 2})
        self.assertEqual(outcome.status, "SUCCESS", outcome.exc)
        self.assertEqual(outcome.result, [1, 2])

    def test_function_task_with_kwargs(self):
        """
        A FunctionTask wrapping a function that takes ``**kwargs`` receives
        the extras.
        """
        wrapped = FunctionTask(function_with_extras, "tests.fn.extras")
        message, outcome = self.run_task(wrapped, "tests.fn.extras")
        self.assert_extras(message, outcome)

    def test_function_task_without_kwargs(self):
        """
        A FunctionTask wrapping a function without ``**kwargs`` gets only its
        own arguments, although ``FunctionTask.run`` itself takes
        ``**kwargs``.
        """
        wrapped = FunctionTask(function_without_extras, "tests.fn.plain")
        _, outcome = self.run_task(wrapped, "tests.fn.plain", kwargs={"y": 5})
        self.assertEqual(outcome.status, "SUCCESS", outcome.exc)
        self.assertEqual(outcome.result, [1, 5])

    def test_plain_function(self):
        """
        A plain registered function is treated the same way.
        """
        message, outcome = self.run_task(function_with_extras, "tests.plain.extras")
        self.assert_extras(message, outcome)
        _, outcome = self.run_task(function_without_extras, "tests.plain.none")
        self.assertEqual(outcome.result, [1, 0])


class TaskSetTests(SynchronousTestCase):
    """
    A TaskSet records its total, then publishes its subtasks under one id.
    """

    def test_run(self):
        """
        ``run()`` records the taskset with its total before publishing,
        publishes every subtask carrying the taskset id, and returns a
        :py:obj:`TaskSetResult` whose subtasks follow the call order.
        """
        client = FakeClient()
        taskset = TaskSet("tests.task.add", [((1, 2), {}), ((3, 4), {"k": 1}), ((5, 6), {})])
        taskset.client = client
        result = taskset.run()
        self.assertIsInstance(result, TaskSetResult)
        self.assertEqual(client.calls[0], ("create_taskset", result.taskset_id, 3))
        self.assertEqual(client.calls[1:], [("publish_many", 3, None)])
        messages = [m for m, _ in client.published]
        self.assertEqual([m.taskset for m in messages], [result.taskset_id] * 3)
        self.assertEqual([m.task for m in messages], ["tests.task.add"] * 3)
        self.assertEqual([m.args for m in messages], [(1, 2), (3, 4), (5, 6)])
        self.assertEqual([m.kwargs for m in messages], [{}, {"k": 1}, {}])
        self.assertEqual([s.task_id for s in result.subtasks], [m.id for m in messages])
        self.assertEqual(len({m.id for m in messages}), 3)
        self.assertEqual(result.total, 3)
        self.assertNotIn(result.taskset_id, [m.id for m in messages])

    def test_run_default_client_and_queue(self):
        """
        Without a client the default one is used; ``run(queue)`` publishes
        to that queue.
        """
        client = FakeClient()
        use_default_client(self, client)
        TaskSet("tests.task.add", [((1, 2), {})]).run("q")
        self.assertEqual(client.published[0][1], "q")

    def test_task_class(self):
        """
        A TaskSet of a Task class publishes under the class's name.
        """
        client = FakeClient()
        TaskSet(Add, [((1, 2), {})], client).run()
        self.assertEqual(client.published[0][0].task, Add.name)

    def test_task_class_queue(self):
        """
        A TaskSet of a Task class with a ``queue`` publishes to that queue,
        as the class's own ``delay`` does.
        """
        client = FakeClient()
        TaskSet(Routed, [((), {})], client).run()
        self.assertEqual(client.published[0][1], "special")

    def test_function_task(self):
        """
        A TaskSet of a FunctionTask publishes under its task name.
        """
        client = FakeClient()
        wrapped = FunctionTask(module_level, "math.triple")
        TaskSet(wrapped, [((1,), {})], client).run()
        self.assertEqual(client.published[0][0].task, "math.triple")

    def test_task_instance(self):
        """
        A TaskSet of a Task instance publishes under its name.
        """
        client = FakeClient()
        TaskSet(Add(), [((1, 2), {})], client).run()
        self.assertEqual(client.published[0][0].task, Add.name)

    def test_not_a_task(self):
        """
        Something that is neither a name nor a named task raises
        :py:obj:`TypeError`.
        """
        self.assertRaises(TypeError, TaskSet, Nameless, [])
        self.assertRaises(TypeError, TaskSet, 42, [])

    def test_many(self):
        """
        More than 1000 subtasks are published in batches of 1000, after the
        total was recorded once.
        """
        client = FakeClient()
        result = TaskSet("t", [((n,), {}) for n in range(1001)], client).run()
        self.assertEqual(
            client.calls,
            [
                ("create_taskset", result.taskset_id, 1001),
                ("publish_many", 1000, None),
                ("publish_many", 1, None),
            ],
        )
        self.assertEqual([m.args[0] for m, _ in client.published], list(range(1001)))

    def test_progress(self):
        """
        The result's progress is the store's count of its taskset.
        """
        client = FakeClient(runner=add_runner)
        result = TaskSet("add", [((1, 2), {}), ((-1, 2), {})], client).run()
        self.assertEqual(result.completed_count(), 2)
        self.assertTrue(result.ready())
        self.assertTrue(result.failed())


class DmapTests(SynchronousTestCase):
    """
    ``dmap_async`` and ``dmap``: a distributed map over a taskset.
    """

    def test_dmap_async_arguments(self):
        """
        ``dmap_async`` publishes one subtask per item: a tuple or list is the
        positional arguments, anything else the one argument.
        """
        client = FakeClient()
        result = dmap_async("add", [(1, 2), [3, 4], 5, "ab", {"k": 1}], client=client)
        messages = [m for m, _ in client.published]
        self.assertEqual([m.args for m in messages], [(1, 2), (3, 4), (5,), ("ab",), ({"k": 1},)])
        self.assertEqual([m.kwargs for m in messages], [{}] * 5)
        self.assertEqual({m.taskset for m in messages}, {result.taskset_id})
        self.assertEqual(client.calls[0], ("create_taskset", result.taskset_id, 5))

    def test_dmap_async_task_class(self):
        """
        ``dmap_async`` accepts a Task class.
        """
        client = FakeClient()
        dmap_async(Add, [(1, 2)], client=client)
        self.assertEqual(client.published[0][0].task, Add.name)

    def test_dmap(self):
        """
        ``dmap`` returns the values in item order.
        """
        client = FakeClient(runner=add_runner)
        self.assertEqual(dmap("add", [(1, 2), (3, 4), 10], client=client), [3, 7, 10])

    def test_dmap_first_failure(self):
        """
        ``dmap`` raises the exception of the first failed item in order.
        """
        client = FakeClient(runner=add_runner)
        with self.assertRaises(ValueError) as caught:
            dmap("add", [1, -2, -3], client=client)
        self.assertEqual(str(caught.exception), "negative (-2,)")

    def test_dmap_default_client(self):
        """
        ``dmap`` without a client uses the default one.
        """
        client = FakeClient(runner=add_runner)
        use_default_client(self, client)
        self.assertEqual(dmap("add", [(2, 2)]), [4])

    def test_dmap_timeout(self):
        """
        ``dmap`` with a timeout raises :py:obj:`TimeoutError` when the
        subtasks do not finish.
        """
        client = FakeClient()
        self.assertRaises(TimeoutError, dmap, "add", [1], timeout=0, client=client)

    def test_dmap_in_task(self):
        """
        ``dmap`` inside a task raises :py:obj:`WaitInTaskError` before
        publishing anything.
        """
        client = FakeClient(runner=add_runner)
        in_child(self)
        self.assertRaises(WaitInTaskError, dmap, "add", [(1, 2)], client=client)
        self.assertEqual(client.published, [])
        self.assertEqual(client.calls, [])

    def test_dmap_async_in_task(self):
        """
        ``dmap_async`` is allowed inside a task.
        """
        client = FakeClient()
        in_child(self)
        result = dmap_async("add", [(1, 2)], client=client)
        self.assertEqual(result.total, 1)


class FacadeTests(SynchronousTestCase):
    """
    ``is_done`` and ``discard_all`` use the default client.
    """

    def test_is_done(self):
        """
        ``is_done`` is true for a success only.
        """
        ok, failed, waiting = new_task_id(), new_task_id(), new_task_id()
        client = FakeClient(
            {
                ok: success_document(ok, "add", 1),
                failed: failure_document(failed, "add", ValueError("x")),
            }
        )
        use_default_client(self, client)
        self.assertTrue(is_done(ok))
        self.assertFalse(is_done(failed))
        self.assertFalse(is_done(waiting))

    def test_discard_all(self):
        """
        ``discard_all`` purges the default client's queue (or the one
        given) and returns how many were deleted.
        """
        client = FakeClient()
        client.purge_count = 7
        use_default_client(self, client)
        self.assertEqual(discard_all(), 7)
        self.assertEqual(discard_all("other"), 7)
        self.assertEqual(client.purged, [None, "other"])
