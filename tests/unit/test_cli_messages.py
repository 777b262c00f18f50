"""
Tests of the ``twistedq`` command's notes: why no daemon may have
answered, the count of those that did, an event without a task id.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import TASK_ID, FakeSession, Run, _succeed, reply
from twistedq.cli.output import event_line
from twistedq.conf import Settings

UNSIGNED_HINT = "TWISTEDQ_SIGNING_KEYS is not set"
#: What ``status`` reads of the broker connection.
ADDRESS = type("Connection", (), {"address": "amqp://h"})()


class SignedSession(FakeSession):
    """
    A fake session with the cluster's signing key.
    """

    def __init__(self, **answers: Any) -> None:
        super().__init__(**answers)
        self.settings = Settings(queue="jobs", signing_keys="k1:secret")


class NoAnswerTests(SynchronousTestCase):
    def test_unsigned_and_nobody_answered(self) -> None:
        """
        When no daemon answered and the command has no signing key, it
        says that daemons with keys ignore unsigned requests: for
        ``revoke --terminate``, ``ping``, ``inspect`` and ``status``.
        """
        for argv in (
            ["revoke", TASK_ID, "--terminate"],
            ["ping"],
            ["inspect", "active"],
            ["status"],
        ):
            session = FakeSession(revoke=[], queue_counts=(0, 0))
            session.connection = lambda: _succeed(ADDRESS)  # type: ignore[method-assign]
            run = Run(self, session, *argv)
            self.assertEqual(run.status, 1, argv)
            lines = run.err.getvalue().splitlines()
            self.assertEqual(lines[0], "no daemon answered within 1 s", argv)
            self.assertIn(UNSIGNED_HINT, lines[1], argv)
            self.assertIn("ignore unsigned requests", lines[1], argv)

    def test_no_hint_when_signed_or_answered(self) -> None:
        """
        With a signing key, or when a daemon answered, there is no hint.
        """
        signed = Run(self, SignedSession(), "ping")
        self.assertEqual(signed.err.getvalue(), "no daemon answered within 1 s\n")
        pong = {"pong": True, "uptime": 1.0}
        answered = Run(self, FakeSession(broadcast={"ping": [reply("a:1", pong)]}), "ping")
        self.assertNotIn(UNSIGNED_HINT, answered.err.getvalue())

    def test_one_daemon_answered(self) -> None:
        """
        "1 daemon answered", "2 daemons answered".
        """
        pong = {"pong": True, "uptime": 1.0}
        one = Run(self, FakeSession(broadcast={"ping": [reply("a:1", pong)]}), "ping")
        self.assertEqual(one.err.getvalue(), "1 daemon answered\n")
        both = [reply("a:1", pong), reply("b:1", pong)]
        two = Run(self, FakeSession(broadcast={"ping": both}), "ping")
        self.assertEqual(two.err.getvalue(), "2 daemons answered\n")


class EventLineTests(SynchronousTestCase):
    def test_task_event_without_id(self) -> None:
        """
        A task event without an id (or with a null one) is printed without
        the ``name[id]`` part, not as ``?[None]``; its name alone is kept.
        """
        for event in (
            {"type": "task.failed", "daemon": "a:1", "id": None, "exception": "E"},
            {"type": "task.failed", "daemon": "a:1", "exception": "E"},
        ):
            self.assertEqual(event_line(event), "- a:1 task.failed exception=E")
        named = event_line({"type": "task.failed", "daemon": "a:1", "id": None, "name": "add"})
        self.assertEqual(named, "- a:1 task.failed add")
        full = event_line({"type": "task.failed", "daemon": "a:1", "id": "i", "name": "add"})
        self.assertEqual(full, "- a:1 task.failed add[i]")
