"""
Tests for :py:obj:`twistedq.registry.TaskRegistry`: registering functions,
task classes and periodic tasks, unregistering, and the Django
``autodiscover()``.
"""

import atexit
import datetime
import os
import shutil
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from twistedq.registry import AlreadyRegistered, NotRegistered, TaskRegistry
from twistedq.task import FunctionTask, PeriodicTask, Task, task, tasks


def add(x, y):
    return x + y


def mul(x, y):
    return x * y


class AddTask(Task):
    name = "tests.registry.add"

    def run(self, x, y, **kwargs):
        return x + y


class OtherAddTask(Task):
    name = "tests.registry.add"

    def run(self, x, y, **kwargs):
        return x - y


class NamelessTask(Task):
    def run(self, **kwargs):
        return None


class EveryMinute(PeriodicTask):
    name = "tests.registry.every-minute"
    run_every = datetime.timedelta(minutes=1)

    def run(self, **kwargs):
        return "tick"


class EveryFiveSeconds(PeriodicTask):
    name = "tests.registry.every-five"
    run_every = 5

    def run(self, **kwargs):
        return "tick"


def periodic(period):
    """
    A fresh PeriodicTask class with ``run_every = period``.
    """
    return type(
        "Periodic",
        (PeriodicTask,),
        {"name": "tests.registry.periodic", "run_every": period, "run": lambda self: None},
    )


class RegisterTests(SynchronousTestCase):
    """
    ``register`` stores functions, task classes and task instances.
    """

    def setUp(self):
        self.registry = TaskRegistry()

    def test_function_with_name(self):
        """
        ``register(function, name)`` stores the function under the name.
        """
        self.registry.register(add, "math.add")
        self.assertIs(self.registry["math.add"], add)
        self.assertIn("math.add", self.registry)
        self.assertEqual(len(self.registry), 1)
        self.assertEqual(self.registry.get_all(), {"math.add": add})

    def test_function_default_name(self):
        """
        A function registered without a name is stored under its module and
        qualified name.
        """
        self.registry.register(add)
        self.assertIs(self.registry[f"{__name__}.add"], add)

    def test_task_class(self):
        """
        ``register(TaskClass)`` stores an instance of the class under the
        class's ``name``.
        """
        self.registry.register(AddTask)
        stored = self.registry[AddTask.name]
        self.assertIsInstance(stored, AddTask)
        self.assertEqual(stored(2, 3), 5)

    def test_task_instance(self):
        """
        A task instance is stored as it is, under its ``name``.
        """
        instance = AddTask()
        self.registry.register(instance)
        self.assertIs(self.registry[AddTask.name], instance)

    def test_function_task(self):
        """
        A :py:obj:`FunctionTask` is stored under its task name.
        """
        wrapped = FunctionTask(add, "tests.registry.wrapped")
        self.registry.register(wrapped)
        self.assertIs(self.registry["tests.registry.wrapped"], wrapped)

    def test_returns_what_it_was_given(self):
        """
        ``register`` returns the function or class it was given, so it can
        decorate.
        """
        self.assertIs(self.registry.register(add, "math.add"), add)
        self.assertIs(self.registry.register(AddTask), AddTask)

    def test_as_decorator(self):
        """
        ``@registry.register`` on a class or a function leaves the name
        bound to the original and registers it.
        """
        registry = self.registry

        @registry.register
        class Decorated(Task):
            name = "tests.registry.decorated"

            def run(self, **kwargs):
                return "ran"

        @registry.register
        def plain():
            return "plain"

        self.assertTrue(issubclass(Decorated, Task))
        self.assertIsInstance(registry["tests.registry.decorated"], Decorated)
        self.assertEqual(plain(), "plain")
        self.assertIs(registry[f"{__name__}.{plain.__qualname__}"], plain)

    def test_same_function_twice(self):
        """
        Registering the same function under the same name again does
        nothing.
        """
        self.registry.register(add, "math.add")
        self.registry.register(add, "math.add")
        self.assertIs(self.registry["math.add"], add)
        self.assertEqual(len(self.registry), 1)

    def test_same_class_twice(self):
        """
        Registering the same task class again does nothing: the first
        instance stays.
        """
        self.registry.register(AddTask)
        first = self.registry[AddTask.name]
        self.registry.register(AddTask)
        self.assertIs(self.registry[AddTask.name], first)
        self.assertEqual(len(self.registry), 1)

    def test_different_function_same_name(self):
        """
        A different function under a taken name raises
        :py:obj:`AlreadyRegistered`, whose text names it, and leaves the
        first in place.
        """
        self.registry.register(add, "math.op")
        with self.assertRaises(AlreadyRegistered) as caught:
            self.registry.register(mul, "math.op")
        self.assertIn("'math.op'", str(caught.exception))
        self.assertIs(self.registry["math.op"], add)

    def test_different_class_same_name(self):
        """
        A different task class with a taken name raises
        :py:obj:`AlreadyRegistered`.
        """
        self.registry.register(AddTask)
        with self.assertRaises(AlreadyRegistered) as caught:
            self.registry.register(OtherAddTask)
        self.assertIn(AddTask.name, str(caught.exception))
        self.assertIsInstance(self.registry[AddTask.name], AddTask)

    def test_already_registered_is_key_error(self):
        """
        :py:obj:`AlreadyRegistered` is a :py:obj:`KeyError`, as in the seed.
        """
        self.registry.register(add, "x")
        self.assertRaises(KeyError, self.registry.register, mul, "x")

    def test_nameless_class(self):
        """
        A task class without a ``name`` raises :py:obj:`ValueError` and
        registers nothing.
        """
        with self.assertRaises(ValueError) as caught:
            self.registry.register(NamelessTask)
        self.assertIn("NamelessTask", str(caught.exception))
        self.assertEqual(len(self.registry), 0)

    def test_nameless_class_with_explicit_name(self):
        """
        A task class without a ``name`` may be registered under an explicit
        name.
        """
        self.registry.register(NamelessTask, "tests.registry.named-here")
        self.assertIsInstance(self.registry["tests.registry.named-here"], NamelessTask)

    def test_not_callable(self):
        """
        Something that is not callable raises :py:obj:`TypeError`.
        """
        self.assertRaises(TypeError, self.registry.register, 42, "answer")
        self.assertRaises(TypeError, self.registry.register, "a string", "text")
        self.assertEqual(len(self.registry), 0)

    def test_iteration_sorted(self):
        """
        Iterating a registry gives the names in sorted order.
        """
        self.registry.register(mul, "b")
        self.registry.register(add, "a")
        self.assertEqual(list(self.registry), ["a", "b"])

    def test_get_all_is_a_copy(self):
        """
        ``get_all()`` returns a copy: changing it leaves the registry alone.
        """
        self.registry.register(add, "a")
        self.registry.get_all().clear()
        self.assertIn("a", self.registry)


class PeriodicTests(SynchronousTestCase):
    """
    Periodic tasks need a positive ``run_every``.
    """

    def setUp(self):
        self.registry = TaskRegistry()

    def test_timedelta(self):
        """
        ``run_every`` as a timedelta is accepted and read in seconds.
        """
        self.registry.register(EveryMinute)
        self.assertEqual(EveryMinute.run_every_seconds(), 60.0)
        self.assertIsInstance(self.registry[EveryMinute.name], EveryMinute)

    def test_seconds(self):
        """
        ``run_every`` as a number of seconds is accepted.
        """
        self.registry.register(EveryFiveSeconds)
        self.assertEqual(EveryFiveSeconds.run_every_seconds(), 5.0)

    def test_fractional_seconds(self):
        """
        A fractional number of seconds is accepted.
        """
        self.registry.register(periodic(0.5))
        self.assertEqual(self.registry["tests.registry.periodic"].run_every_seconds(), 0.5)

    def test_missing(self):
        """
        A periodic task without ``run_every`` raises :py:obj:`ValueError`.
        """
        self.assertRaises(ValueError, self.registry.register, periodic(None))
        self.assertEqual(len(self.registry), 0)

    def test_zero(self):
        """
        ``run_every`` of zero seconds raises :py:obj:`ValueError`.
        """
        self.assertRaises(ValueError, self.registry.register, periodic(0))
        self.assertRaises(ValueError, self.registry.register, periodic(datetime.timedelta(0)))

    def test_negative(self):
        """
        A negative ``run_every`` raises :py:obj:`ValueError`.
        """
        self.assertRaises(ValueError, self.registry.register, periodic(-5))
        self.assertRaises(
            ValueError, self.registry.register, periodic(datetime.timedelta(seconds=-1))
        )

    def test_string(self):
        """
        ``run_every`` given as a string raises :py:obj:`ValueError`.
        """
        self.assertRaises(ValueError, self.registry.register, periodic("30"))

    def test_bool(self):
        """
        ``run_every = True`` is not taken for one second.
        """
        self.assertRaises(ValueError, self.registry.register, periodic(True))

    def test_get_all_periodic(self):
        """
        ``get_all_periodic()`` returns only the periodic tasks, by name.
        """
        self.registry.register(EveryMinute)
        self.registry.register(EveryFiveSeconds)
        self.registry.register(AddTask)
        self.registry.register(add, "math.add")
        found = self.registry.get_all_periodic()
        self.assertEqual(sorted(found), sorted([EveryMinute.name, EveryFiveSeconds.name]))
        self.assertIsInstance(found[EveryMinute.name], EveryMinute)


class UnregisterTests(SynchronousTestCase):
    """
    ``unregister`` removes tasks by name or by the task itself.
    """

    def setUp(self):
        self.registry = TaskRegistry()

    def test_by_name(self):
        """
        A task is removed by its name.
        """
        self.registry.register(add, "math.add")
        self.registry.unregister("math.add")
        self.assertNotIn("math.add", self.registry)
        self.assertEqual(len(self.registry), 0)

    def test_by_class(self):
        """
        A task class is removed by passing the class.
        """
        self.registry.register(AddTask)
        self.registry.unregister(AddTask)
        self.assertNotIn(AddTask.name, self.registry)

    def test_by_instance(self):
        """
        A task is removed by passing its instance, a FunctionTask included.
        """
        wrapped = FunctionTask(add, "tests.registry.wrapped")
        self.registry.register(wrapped)
        self.registry.unregister(wrapped)
        self.assertNotIn("tests.registry.wrapped", self.registry)

    def test_unknown(self):
        """
        Unregistering an unknown name raises :py:obj:`NotRegistered`, whose
        text names it.
        """
        with self.assertRaises(NotRegistered) as caught:
            self.registry.unregister("nope")
        self.assertEqual(str(caught.exception), "no task named 'nope' is registered")

    def test_lookup_unknown(self):
        """
        Looking up an unknown name raises :py:obj:`NotRegistered`, a
        :py:obj:`KeyError`, naming it.
        """
        with self.assertRaises(KeyError) as caught:
            self.registry["nope"]
        self.assertIsInstance(caught.exception, NotRegistered)
        self.assertIn("'nope'", str(caught.exception))

    def test_register_again_after_unregister(self):
        """
        Once unregistered, a name may take a different task.
        """
        self.registry.register(add, "math.op")
        self.registry.unregister("math.op")
        self.registry.register(mul, "math.op")
        self.assertIs(self.registry["math.op"], mul)


class DecoratorRegistryTests(SynchronousTestCase):
    """
    The ``@task`` decorator registers into the registry it is given.
    """

    def test_into_given_registry(self):
        """
        ``@task(name=..., registry=...)`` registers the wrapper there and not
        in the default registry.
        """
        registry = TaskRegistry()
        wrapped = task(name="tests.registry.via-decorator", registry=registry)(add)
        self.assertIs(registry["tests.registry.via-decorator"], wrapped)
        self.assertNotIn("tests.registry.via-decorator", tasks)

    def test_two_wrappers_same_name(self):
        """
        Two different functions decorated with the same name raise
        :py:obj:`AlreadyRegistered`.
        """
        registry = TaskRegistry()
        task(name="tests.registry.dup", registry=registry)(add)
        self.assertRaises(
            AlreadyRegistered, task(name="tests.registry.dup", registry=registry), mul
        )


# Django autodiscovery.  Django's settings can be configured once per
# process, so the three applications below are created once, in a temporary
# directory removed when the process exits, and put in INSTALLED_APPS
# together.  The bad application's tasks module raises only when the
# environment variable below says so.

GOOD_APP = "twistedq_regtest_good"
PLAIN_APP = "twistedq_regtest_plain"
BAD_APP = "twistedq_regtest_bad"
BAD_FLAG = "TWISTEDQ_REGTEST_BAD_TASKS"
DISCOVERED_TASK = "twistedq_regtest_good.tasks.ping"

_app_root = None

_GOOD_TASKS = f"""
from twistedq.task import tasks


def ping():
    return "pong"


tasks.register(ping, {DISCOVERED_TASK!r})
"""

_BAD_TASKS = f"""
import os

_mode = os.environ.get({BAD_FLAG!r})
if _mode == "raise":
    raise ImportError("boom inside")
if _mode == "missing":
    import twistedq_regtest_no_such_module  # noqa: F401
"""


def _app_directory():
    """
    Create the application packages once; return their directory.
    """
    global _app_root
    if _app_root is None:
        root = tempfile.mkdtemp(prefix="twistedq-autodiscover-")
        atexit.register(shutil.rmtree, root, True)
        for app, tasks_source in (
            (GOOD_APP, _GOOD_TASKS),
            (PLAIN_APP, None),
            (BAD_APP, _BAD_TASKS),
        ):
            package = os.path.join(root, app)
            os.mkdir(package)
            with open(os.path.join(package, "__init__.py"), "w") as f:
                f.write("")
            if tasks_source is not None:
                with open(os.path.join(package, "tasks.py"), "w") as f:
                    f.write(tasks_source)
        _app_root = root
    return _app_root


class AutodiscoverTests(SynchronousTestCase):
    """
    ``autodiscover()`` imports the ``tasks`` module of each Django
    application.
    """

    def setUp(self):
        try:
            from django.conf import settings
        except ImportError:
            raise SkipTest("Django is not installed") from None
        root = _app_directory()
        sys.path.insert(0, root)
        self.addCleanup(sys.path.remove, root)
        if not settings.configured:
            settings.configure(INSTALLED_APPS=[GOOD_APP, PLAIN_APP, BAD_APP])
        elif list(settings.INSTALLED_APPS) != [GOOD_APP, PLAIN_APP, BAD_APP]:
            raise SkipTest("Django settings were configured elsewhere in this process")
        self.addCleanup(self._forget_modules)
        previous = os.environ.pop(BAD_FLAG, None)
        if previous is not None:
            self.addCleanup(os.environ.__setitem__, BAD_FLAG, previous)
        self.addCleanup(os.environ.pop, BAD_FLAG, None)

    def _forget_modules(self):
        """
        Forget the imported tasks modules and the task registered, so each
        test imports them afresh.
        """
        for app in (GOOD_APP, PLAIN_APP, BAD_APP):
            sys.modules.pop(f"{app}.tasks", None)
            package = sys.modules.get(app)
            if package is not None and hasattr(package, "tasks"):
                del package.tasks
        if DISCOVERED_TASK in tasks:
            tasks.unregister(DISCOVERED_TASK)

    def test_imports_tasks_modules(self):
        """
        Every application with a ``tasks`` module has it imported, in
        INSTALLED_APPS order; one without is skipped; the imported module's
        registrations take effect.
        """
        imported = TaskRegistry().autodiscover()
        self.assertEqual(imported, [f"{GOOD_APP}.tasks", f"{BAD_APP}.tasks"])
        self.assertIn(f"{GOOD_APP}.tasks", sys.modules)
        self.assertNotIn(f"{PLAIN_APP}.tasks", sys.modules)
        self.assertIn(DISCOVERED_TASK, tasks)
        self.assertEqual(tasks[DISCOVERED_TASK](), "pong")

    def test_twice(self):
        """
        Discovering twice is harmless: the same modules, no
        :py:obj:`AlreadyRegistered`.
        """
        first = TaskRegistry().autodiscover()
        second = TaskRegistry().autodiscover()
        self.assertEqual(first, second)

    def test_import_error_inside_propagates(self):
        """
        An :py:obj:`ImportError` raised inside an existing ``tasks`` module
        propagates instead of being taken for a missing module.
        """
        os.environ[BAD_FLAG] = "raise"
        with self.assertRaises(ImportError) as caught:
            TaskRegistry().autodiscover()
        self.assertEqual(str(caught.exception), "boom inside")

    def test_missing_dependency_propagates(self):
        """
        A ``tasks`` module importing a module that does not exist raises that
        :py:obj:`ModuleNotFoundError`, naming the missing module.
        """
        os.environ[BAD_FLAG] = "missing"
        with self.assertRaises(ModuleNotFoundError) as caught:
            TaskRegistry().autodiscover()
        self.assertEqual(caught.exception.name, "twistedq_regtest_no_such_module")
