"""
Tests for :py:mod:`twistedq.publishing`: what publishing a task and
publishing a workflow share.
"""

import datetime
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import BrokerUnavailable
from twistedq.message import TaskMessage, new_task_id
from twistedq.publishing import abandon_taskset, message_times

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkflowsWithoutTaskModuleTests(SynchronousTestCase):
    def test_canvas_alone(self):
        """
        A signature's message is built (its ETA too) in a process that
        imports only :py:mod:`twistedq.canvas`: the workflows do not need
        :py:mod:`twistedq.task`, which imports them.
        """
        script = (
            "import sys\n"
            "from twistedq.canvas import signature\n"
            "message = signature('add', (2, 2), countdown=30).message()\n"
            "print('twistedq.task' in sys.modules, message.task, message.eta is not None)\n"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        self.assertEqual((done.returncode, done.stdout), (0, "False add True\n"), done.stderr)


class MessageTimesTests(SynchronousTestCase):
    """
    The ETA and expiry a message carries, from the options of a publish.
    """

    def test_none(self):
        """
        No countdown, ETA or expiry: neither time.
        """
        self.assertEqual(message_times(None, None, None), (None, None))

    def test_countdown(self):
        """
        A countdown is an ETA that many seconds from now, in UTC.
        """
        before = datetime.datetime.now(datetime.timezone.utc)
        eta, expires = message_times(60, None, None)
        moment = datetime.datetime.fromisoformat(eta)
        self.assertEqual(moment.utcoffset(), datetime.timedelta(0))
        self.assertGreaterEqual(moment, before + datetime.timedelta(seconds=60))
        self.assertLess(moment, before + datetime.timedelta(seconds=3600))
        self.assertIsNone(expires)

    def test_naive_and_unix_times(self):
        """
        A naive datetime is UTC; a number is a Unix time.
        """
        eta, expires = message_times(None, datetime.datetime(2030, 1, 2, 3, 4, 5), 0)
        self.assertEqual(eta, "2030-01-02T03:04:05+00:00")
        self.assertEqual(expires, "1970-01-01T00:00:00+00:00")

    def test_expiry_as_timedelta(self):
        """
        An expiry given as a timedelta is that long from now.
        """
        before = datetime.datetime.now(datetime.timezone.utc)
        _, expires = message_times(None, None, datetime.timedelta(hours=1))
        moment = datetime.datetime.fromisoformat(expires)
        self.assertGreaterEqual(moment, before + datetime.timedelta(hours=1))
        self.assertLess(moment, before + datetime.timedelta(hours=2))

    def test_countdown_and_eta(self):
        """
        A countdown and an ETA together are refused.
        """
        self.assertRaises(ValueError, message_times, 5, 1_000_000_000, None)


class RecordingClient:
    """
    A client that records what it is asked to abandon, or fails to.
    """

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.abandoned: list[tuple[list[str], str]] = []

    def abandon(self, messages: list[TaskMessage], reason: str) -> list[str]:
        if self.error is not None:
            raise self.error
        self.abandoned.append(([m.id for m in messages], reason))
        return [m.id for m in messages]


class AbandonTasksetTests(SynchronousTestCase):
    """
    After a failed publish, the subtasks the broker did not confirm are
    recorded as REVOKED, and the error says so.
    """

    def setUp(self):
        self.messages = [TaskMessage(id=new_task_id(), task="add", args=(i, i)) for i in range(3)]
        self.confirmed = {self.messages[0].id}

    def test_unconfirmed_recorded(self):
        """
        Every unconfirmed subtask is abandoned, with the error as the
        reason; the error's message counts them.
        """
        client = RecordingClient()
        error = BrokerUnavailable("connection lost")
        abandon_taskset(client, "ts-1", self.messages, self.confirmed, error)
        self.assertEqual(
            client.abandoned,
            [([m.id for m in self.messages[1:]], "not published: connection lost")],
        )
        self.assertEqual(
            str(error),
            "connection lost; taskset ts-1: 1 of 3 subtasks were published; "
            "2 others are recorded as REVOKED",
        )

    def test_recording_fails(self):
        """
        When the store cannot record them, the error's message says the
        taskset will not complete, and why.
        """
        error = BrokerUnavailable("connection lost")
        abandon_taskset(
            RecordingClient(OSError("store down")), "ts-2", self.messages, self.confirmed, error
        )
        self.assertIn("1 of 3 subtasks were published", str(error))
        self.assertIn("could not be recorded as REVOKED (store down)", str(error))
        self.assertIn("will not complete", str(error))
