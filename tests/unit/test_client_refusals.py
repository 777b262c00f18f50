"""
Tests that :py:mod:`twistedq.task` refuses, before anything is published,
a message the daemon would dead-letter or that would not arrive as it was
written (issue #13, point 3).
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient
from twistedq.message import MessageError
from twistedq.task import Task, TaskSet, publish_task


class Add(Task):
    name = "tests.refusals.add"


class PublishRefusalTests(SynchronousTestCase):
    """
    ``publish_task`` and ``apply_async`` refuse bad ids and arguments with
    :py:class:`MessageError`; nothing reaches the client.
    """

    def test_task_id_not_uuid(self):
        """
        A ``task_id`` that is not a UUID is refused: the daemon would
        dead-letter it without a FAILURE and ``get()`` would wait for ever.
        """
        client = FakeClient()
        error = self.assertRaises(
            MessageError, publish_task, "add", (1,), task_id="order-42", client=client
        )
        self.assertIn("'order-42' is not a UUID", str(error))
        self.assertEqual(client.calls, [])

    def test_kwargs_keys_not_strings(self):
        """
        Keyword argument names that are not strings are refused instead of
        silently becoming strings.
        """
        client = FakeClient()
        self.assertRaises(MessageError, publish_task, "add", (), {1: "a", "1": "b"}, client=client)
        self.assertRaises(MessageError, Add.apply_async, (), {2: "x"}, client=client)
        self.assertEqual(client.calls, [])

    def test_args_string(self):
        """
        ``args="abc"`` is refused instead of running as three arguments.
        """
        client = FakeClient()
        error = self.assertRaises(MessageError, publish_task, "add", "abc", client=client)
        self.assertIn("args must be a list or tuple, not str", str(error))
        self.assertRaises(MessageError, Add.apply_async, "xy", client=client)
        self.assertEqual(client.calls, [])

    def test_list_args(self):
        """
        A list is a valid ``args``, published as the same values.
        """
        client = FakeClient()
        publish_task("add", [1, 2], client=client)
        self.assertEqual(client.published[0][0].args, (1, 2))


class TaskSetRefusalTests(SynchronousTestCase):
    """
    A TaskSet with one bad argument set publishes nothing and records no
    taskset.
    """

    def test_bad_subtask(self):
        """
        One subtask whose ``args`` is a string, or whose keyword names are
        not strings, fails the run before the taskset is recorded.
        """
        for arguments in ([((1,), {}), ("ab", {})], [((1,), {}), ((), {3: 4})]):
            client = FakeClient()
            taskset = TaskSet("add", arguments, client)
            self.assertRaises(MessageError, taskset.run)
            self.assertEqual(client.calls, [])
