"""
Tests for the options of the :py:func:`twistedq.task.task` decorator.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistedq.registry import TaskRegistry
from twistedq.retries import DEFAULT_MAX_RETRIES
from twistedq.task import FunctionTask, task


def triple(x):
    return 3 * x


class TaskDecoratorOptionsTests(SynchronousTestCase):
    """
    ``@task`` and ``@task(...)`` make the same :py:class:`FunctionTask`
    from the options given, and refuse any other.
    """

    def test_unknown_option(self):
        """
        An option ``task`` does not have is a :py:obj:`TypeError` naming
        it, whether or not a function is given too.
        """
        error = self.assertRaises(TypeError, task, max_retry=3)
        self.assertIn("max_retry", str(error))
        error = self.assertRaises(TypeError, task, triple, registry=TaskRegistry(), bogus=1)
        self.assertIn("bogus", str(error))

    def test_options_applied(self):
        """
        Every option reaches the task; retry options left out keep their
        defaults; the task is registered in the registry given.
        """
        registry = TaskRegistry()
        wrapped = task(
            name="math.triple",
            registry=registry,
            time_limit=10,
            rate_limit="5/s",
            priority=7,
            autoretry_for=[ValueError],
            retry_jitter=False,
        )(triple)
        self.assertIsInstance(wrapped, FunctionTask)
        self.assertIs(registry["math.triple"], wrapped)
        self.assertEqual(
            (wrapped.time_limit, wrapped.rate_limit, wrapped.priority, wrapped.retry_jitter),
            (10, "5/s", 7, False),
        )
        self.assertEqual(wrapped.autoretry_for, (ValueError,))
        self.assertEqual(wrapped.max_retries, DEFAULT_MAX_RETRIES)
        self.assertEqual(wrapped(2), 6)

    def test_options_with_the_function(self):
        """
        ``task(function, **options)`` is ``task(**options)(function)``.
        """
        registry = TaskRegistry()
        wrapped = task(triple, name="math.triple", registry=registry)
        self.assertIs(registry["math.triple"], wrapped)
