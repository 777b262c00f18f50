"""
Tests of what the ``twistedq`` command refuses before it does anything:
ids that are not task ids, empty queue names, ``deadletter purge``
without ``--yes``.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import TASK_ID, FakeSession, Run
from twistedq.cli.main import run
from twistedq.deadletter import parser as old_parser


class RefusalTests(SynchronousTestCase):
    def usage_error(self, *argv: str) -> str:
        """
        Run ``argv`` as far as parsing: it must end with status 2 before
        anything is reached; return what was said.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)  # where argparse says it
        status = run(list(argv), io.StringIO(), err, thread=None)  # type: ignore[arg-type]
        self.assertEqual(status, 2, argv)
        return err.getvalue()

    def test_revoke_refuses_what_is_not_a_task_id(self) -> None:
        """
        ``revoke not-a-uuid`` (or an upper-case or braced UUID) is a usage
        error naming the id, and nothing is revoked.
        """
        said = self.usage_error("revoke", TASK_ID, "not-a-uuid")
        self.assertIn("'not-a-uuid' is not a task id", said)
        self.usage_error("revoke", TASK_ID.upper())
        self.usage_error("revoke", "{" + TASK_ID + "}")
        self.assertIn("is not a task id", self.usage_error("revoke", "\x1b[2J"))
        self.assertNotIn("\x1b", self.usage_error("revoke", "\x1b[2J"))

    def test_empty_queue_names(self) -> None:
        """
        ``purge --yes ''``, ``--queue ''`` (before or after the command)
        and ``--exchange ''`` are usage errors, not the default queue.
        """
        for argv in (
            ["purge", "--yes", ""],
            ["purge", "--yes", " "],
            ["--queue", "", "purge", "--yes"],
            ["purge", "--yes", "--queue", ""],
            ["--exchange", "", "ping"],
            ["deadletter", "--queue", "", "list"],
        ):
            self.assertIn("an empty name", self.usage_error(*argv))

    def test_deadletter_purge_needs_yes(self) -> None:
        """
        ``twistedq deadletter purge`` refuses without ``--yes`` (status 2,
        the dead-letter queue not even opened); the old
        ``twistedq-deadletter purge`` does not ask for it.
        """
        session = LettersSession(dead_letters=AssertionError("opened"))
        refused = Run(self, session, "deadletter", "purge")
        self.assertEqual(refused.status, 2)
        self.assertIn("'jobs.dead': add --yes", refused.err.getvalue())
        self.assertTrue(parser_has_no_yes())

    def test_deadletter_purge_with_yes(self) -> None:
        purged = Run(
            self, LettersSession(dead_letters=FakeDeadLetters()), "deadletter", "purge", "--yes"
        )
        self.assertEqual(purged.status, 0)
        self.assertEqual(purged.err.getvalue(), "4 dead letters purged from jobs.dead\n")


def parser_has_no_yes() -> bool:
    arguments = old_parser().parse_args(["purge"])
    return not hasattr(arguments, "yes")


class FakeDeadLetters:
    async def purge(self) -> int:
        return 4


class LettersSession(FakeSession):
    """
    A fake session whose dead-letter queue is its ``dead_letters`` answer.
    """

    async def dead_letters(self, confirm_timeout: float) -> Any:
        return self._answer("dead_letters")
