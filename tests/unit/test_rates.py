"""
Tests for :py:mod:`twistedq.rates`: one rule for a rate limit wherever it
is written (the task's attribute, the decorator, ``apply_async``, the
message field, ``--rate-limit``).
"""

import json
import math

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient, task_id
from twistedq.message import MessageError, TaskMessage
from twistedq.ratelimit import parse_rate_limits
from twistedq.rates import MAX_RATE, MIN_RATE, parse_rate
from twistedq.task import Task, task

GOOD = (
    ("10/s", 10.0),
    ("600/m", 10.0),
    ("36000/h", 10.0),
    ("10", 10.0),
    (10, 10.0),
    (2.5, 2.5),
    ("0.5", 0.5),
    ("24/h", 24 / 3600),
    ("1000000/s", 1e6),
)
BAD = (0, 0.0, "0", "0/s", -1, True, 1e-9, 0.0001 / 86400, "1e-9/s", "1e9/s", "9999999999/s",
       "1" * 400 + "/s", " 5/s", "5/s ", "5 /s", "0.0000001/h", "0." + "0" * 300 + "1/h",
       1e7, float("inf"), float("nan"), "10/d", None, [10])  # fmt: skip


def _body(rate):
    return json.dumps(
        {"v": 1, "id": task_id(1), "task": "flow.echo", "args": [], "kwargs": {},
         "taskset": None, "eta": None, "expires": None, "retries": 0, "rate_limit": rate}
    ).encode()  # fmt: skip


class ParseRateTests(SynchronousTestCase):
    def test_good(self):
        """
        Strings with or without a unit and numbers per second are read.
        """
        for value, rate in GOOD:
            self.assertAlmostEqual(parse_rate(value), rate)
        self.assertEqual(parse_rate(MIN_RATE), MIN_RATE)
        self.assertEqual(parse_rate(MAX_RATE), MAX_RATE)

    def test_bad(self):
        """
        Zero, booleans, rates outside one a day to a million a second,
        spaces and over-long or over-precise strings are refused.
        """
        for value in BAD:
            with self.assertRaises(ValueError, msg=repr(value)):
                parse_rate(value)

    def test_command_line(self):
        """
        ``--rate-limit`` follows the same rule (spaces around entries are
        the command line's and are dropped).
        """
        self.assertEqual(parse_rate_limits("a=10, b = 600/m"), {"a": 10.0, "b": 10.0})
        for text in ("a=0", "a=1e9/s", "a=0.0000001/h"):
            with self.assertRaises(ValueError, msg=text):
                parse_rate_limits(text)


class EverySpellingTests(SynchronousTestCase):
    def setUp(self):
        self.client = FakeClient()

    def test_numbers_published(self):
        """
        A number of tasks per second is published from the decorator, the
        class attribute and ``apply_async``, and the daemon's decoder takes
        it back (it dead-lettered it as malformed).
        """

        @task(name="odd.int10", rate_limit=10)
        def int10():
            pass

        class Half(Task):
            name = "odd.half"
            rate_limit = 0.5

        int10.apply_async(client=self.client)
        Half.apply_async(client=self.client)
        int10.apply_async(client=self.client, rate_limit=2.5)
        rates = [message.rate_limit for message, _ in self.client.published]
        self.assertEqual(rates, [10, 0.5, 2.5])
        for message, _ in self.client.published:
            self.assertEqual(TaskMessage.decode(message.encode()).rate_limit, message.rate_limit)

    def test_class_attribute_checked_when_defined(self):
        """
        A class's ``rate_limit`` is checked when the class is defined, as
        the decorator's is (it was refused only at each publish).
        """
        for value in (0, "fast", " 5/s"):
            with self.assertRaises(ValueError, msg=repr(value)):

                class Bad(Task):
                    name = "odd.bad"
                    rate_limit = value

    def test_zero_refused_everywhere(self):
        """
        Zero is refused by the decorator, by ``apply_async`` (it was
        dropped silently) and on the wire.
        """
        with self.assertRaises(ValueError):
            task(name="odd.zero", rate_limit=0)(lambda: None)

        @task(name="odd.any")
        def any_task():
            pass

        for value in (0, "0/s", 1e9):
            with self.assertRaises(MessageError, msg=repr(value)):
                any_task.apply_async(client=self.client, rate_limit=value)
        self.assertEqual(self.client.published, [])

    def test_wire(self):
        """
        The daemon's decoder applies the same rule: numbers taken, the bad
        rates of the client refused as malformed.
        """
        self.assertEqual(TaskMessage.decode(_body(10)).rate_limit, 10)
        self.assertEqual(TaskMessage.decode(_body("2.5")).rate_limit, "2.5")
        for value in BAD:
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue  # not JSON
            with self.assertRaises(MessageError, msg=repr(value)) as caught:
                TaskMessage.decode(_body(value))
            self.assertEqual(caught.exception.reason, "malformed")
