"""
Tests for :py:mod:`twistedq.amqp.deadletters` (the daemon's publisher of
dead letters and what the reader makes of one) and the formatting of
:py:mod:`twistedq.deadletter`, with fake channels and a Clock.
"""

import datetime
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeChannel
from twistedq.amqp.consumer import AckWindow, Delivery
from twistedq.amqp.deadletters import (
    DETAIL_HEADER,
    MAX_DETAIL,
    REASON_HEADER,
    TIME_HEADER,
    DeadLetter,
    DeadLetterPublisher,
    dead_letter_properties,
    republish_properties,
)
from twistedq.amqp.protocol import PublishNacked
from twistedq.deadletter import list_line, parser, show_text
from twistedq.message import TaskMessage
from twistedq.signing import SigningKeys

TASK_ID = "00000000-0000-4000-8000-000000000001"
BODY = TaskMessage(id=TASK_ID, task="add", args=(1, 2)).encode()


class PropertiesTests(SynchronousTestCase):
    """
    The headers a dead letter gets, and loses when republished.
    """

    def test_dead_letter_properties(self):
        """
        The copy keeps the original's properties and headers, adds the
        reason, detail and time, and is persistent.
        """
        original = {"content-type": "application/json", "headers": {"x-mine": 1}}
        copied = dead_letter_properties(original, "malformed", "args is not a JSON array", 0.0)
        self.assertEqual(copied["content-type"], "application/json")
        self.assertEqual(copied["delivery-mode"], 2)
        self.assertEqual(
            copied["headers"],
            {
                "x-mine": 1,
                REASON_HEADER: "malformed",
                DETAIL_HEADER: "args is not a JSON array",
                TIME_HEADER: "1970-01-01T00:00:00.000+00:00",
            },
        )
        self.assertEqual(original["headers"], {"x-mine": 1})

    def test_long_detail_cut(self):
        """
        A detail longer than :py:data:`MAX_DETAIL` is cut, with an ellipsis.
        """
        copied = dead_letter_properties({}, "malformed", "x" * 100_000, 0.0)
        detail = copied["headers"][DETAIL_HEADER]
        self.assertEqual(len(detail), MAX_DETAIL)
        self.assertTrue(detail.endswith("..."))

    def test_republish_properties(self):
        """
        Republishing drops the reason headers and the broker's ``x-death``
        record and keeps the rest, the signature among it; with nothing
        left, no headers at all.
        """
        signature = SigningKeys.parse("k:s").sign(BODY)
        dead = dead_letter_properties({"headers": dict(signature)}, "unknown-task", "d", 0.0)
        dead["headers"]["x-death"] = [{"reason": "rejected"}]
        self.assertEqual(republish_properties(dead)["headers"], signature)
        bare = republish_properties(dead_letter_properties({}, "not-json", "d", 0.0))
        self.assertNotIn("headers", bare)
        self.assertEqual(bare["delivery-mode"], 2)


class PublisherTests(SynchronousTestCase):
    """
    The original is acked only after the broker confirmed its copy.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.consumer_channel = FakeChannel([1])
        self.window = AckWindow(self.consumer_channel)
        self.window.add(1)
        self.channel = FakeChannel()
        self.publisher = DeadLetterPublisher(
            self.channel, "tq.dead", "tq", self.clock, confirm_timeout=5
        )
        self.delivery = Delivery(
            self.consumer_channel,
            1,
            BODY,
            {"message-id": TASK_ID},
            False,
            self.window,
            self.publisher,
        )

    def test_ack_after_confirm(self):
        """
        The copy goes to the dead-letter exchange, mandatory, with the
        reason; the original is acked when (and not before) it is confirmed.
        """
        done = self.delivery.dead_letter("unknown-task", "no such task")
        [(exchange, key, body, properties, mandatory, confirm)] = self.channel.published
        self.assertEqual((exchange, key, body, mandatory), ("tq.dead", "tq", BODY, True))
        self.assertEqual(properties["headers"][REASON_HEADER], "unknown-task")
        self.assertEqual(properties["message-id"], TASK_ID)
        self.assertEqual(self.consumer_channel.calls, [])
        self.assertNoResult(done)
        confirm.callback(None)
        self.successResultOf(done)
        self.assertEqual(self.consumer_channel.calls, [("ack", 1, True)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nack_falls_back_to_reject(self):
        """
        A copy the broker refuses: the original is rejected into the
        queue's dead-letter exchange, not acked, not requeued.
        """
        done = self.delivery.dead_letter("malformed", "bad")
        self.channel.published[0][-1].errback(PublishNacked("refused"))
        self.successResultOf(done)
        self.assertEqual(self.consumer_channel.calls, [("reject", 1, False)])

    def test_confirm_timeout_falls_back_to_reject(self):
        """
        No confirm within ``confirm_timeout``: the original is rejected
        into the dead-letter exchange.
        """
        done = self.delivery.dead_letter("malformed", "bad")
        self.clock.advance(5)
        self.successResultOf(done)
        self.assertEqual(self.consumer_channel.calls, [("reject", 1, False)])

    def test_closed_consumer_channel(self):
        """
        A delivery whose channel closed already went back to the queue:
        nothing is published.
        """
        self.consumer_channel.closed = True
        self.successResultOf(self.delivery.dead_letter("malformed", "bad"))
        self.assertEqual(self.channel.published, [])

    def test_message_id_for_returns(self):
        """
        A message without a message id gets one on its copy, so a return
        of the unroutable copy is matched to its confirm.
        """
        self.delivery.properties = {}
        self.delivery.dead_letter("not-json", "bad")
        self.assertTrue(self.channel.published[0][3]["message-id"].startswith("dead-letter-"))


def letter(body=BODY, headers=None, position=1, **properties):
    if headers is not None:
        properties["headers"] = headers
    return DeadLetter(position, body, properties, delivery_tag=position)


class DeadLetterTests(SynchronousTestCase):
    """
    What a reader makes of a dead letter.
    """

    def test_from_daemon(self):
        """
        A daemon's dead letter: id and task from the body, reason, detail
        and time from the headers.
        """
        headers = dead_letter_properties({}, "unknown-task", "no child", 0.0)["headers"]
        dead = letter(headers=headers)
        self.assertEqual((dead.task_id, dead.task), (TASK_ID, "add"))
        self.assertEqual((dead.reason, dead.detail), ("unknown-task", "no child"))
        self.assertEqual(dead.time, "1970-01-01T00:00:00.000+00:00")

    def test_from_broker(self):
        """
        A message the broker dead-lettered: the reason of its ``x-death``.
        """
        moment = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
        death = {"reason": "delivery_limit", "queue": "tq", "time": moment}
        dead = letter(b"junk", headers={"x-death": [death]})
        self.assertEqual(dead.reason, "delivery-limit")
        self.assertIn("from queue tq", dead.detail)
        self.assertEqual(dead.time, moment.isoformat())
        self.assertEqual((dead.task_id, dead.task), (None, None))
        self.assertEqual(letter(b"junk").reason, "unknown")

    def test_ids(self):
        """
        A JSON body not written by the client still gives its id and task;
        else a task id in ``message-id`` is used.
        """
        body = json.dumps({"task": "mul", "id": TASK_ID, "args": "x"}).encode()
        self.assertEqual((letter(body).task_id, letter(body).task), (TASK_ID, "mul"))
        self.assertEqual(letter(b"\xff", **{"message-id": TASK_ID}).task_id, TASK_ID)
        self.assertIsNone(letter(b"\xff", **{"message-id": "other"}).task_id)


class CommandFormatTests(SynchronousTestCase):
    """
    The output of ``twistedq-deadletter``.
    """

    def test_list_line(self):
        """
        One tab-separated line: position, task id, task, reason, detail (on
        one line), time; ``-`` where unknown.
        """
        headers = dead_letter_properties({}, "malformed", "two\nlines\there", 0.0)["headers"]
        self.assertEqual(
            list_line(letter(headers=headers, position=3)).split("\t"),
            ["3", TASK_ID, "add", "malformed", "two lines here", "1970-01-01T00:00:00.000+00:00"],
        )
        self.assertEqual(list_line(letter(b"x")).split("\t"), ["1", "-", "-", "unknown", "-", "-"])

    def test_show(self):
        """
        ``show`` prints the properties and headers as JSON and the body
        pretty-printed, or as bytes when it is not JSON.
        """
        headers = dead_letter_properties({}, "malformed", "bad", 0.0)["headers"]
        text = show_text(letter(headers=headers, **{"content-type": "application/json"}))
        self.assertIn('"x-twistedq-reason": "malformed"', text)
        self.assertIn('"content-type": "application/json"', text)
        self.assertIn('  "task": "add"', text)
        self.assertIn("b'\\xff\\xfe'", show_text(letter(b"\xff\xfe")))

    def test_republish_needs_a_choice(self):
        """
        ``republish`` takes ``--all`` or task ids, not both, not neither.
        """
        self.assertTrue(parser().parse_args(["republish", "--all"]).all)
        self.assertEqual(parser().parse_args(["republish", "a", "b"]).letters, ["a", "b"])
        for argv in (["republish"], ["republish", "--all", "a"]):
            self.assertRaises(SystemExit, parser().parse_args, argv)
