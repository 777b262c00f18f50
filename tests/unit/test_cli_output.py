"""
Tests that the ``twistedq`` command never prints the control and format
characters of what it reads (task names, ids, reasons, details, exception
text, event fields, daemon answers) raw: they reach the terminal escaped.
"""

from __future__ import annotations

import io
import json

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import TASK_ID, FakeSession, Run, reply
from twistedq.amqp.deadletters import DeadLetter, dead_letter_properties
from twistedq.cli.daemons import inspect_lines
from twistedq.cli.deadletters import list_line, show_text
from twistedq.cli.errors import CommandFailed
from twistedq.cli.main import execute, parser
from twistedq.cli.output import dumps, event_line, printable, text
from twistedq.cli.tasks import outcome_lines
from twistedq.outcome import Outcome

#: A task name with an escape sequence, a newline, a bidirectional
#: override and a C1 control character.
BAD = "evil\x1b[31m\nname\u202e\x9b"


def assert_clean(case: SynchronousTestCase, output: str) -> None:
    """
    ``output`` has no control or format character but newlines.
    """
    for bad in ("\x1b", "\u202e", "\x9b", "\r"):
        case.assertNotIn(bad, output)


class PrintableTests(SynchronousTestCase):
    def test_escapes(self) -> None:
        """
        Control and format characters are written as Python escapes;
        printable text, accents included, is left alone.
        """
        self.assertEqual(
            printable("a\x1b[31mb\nc\td\r\u202ee\x9b\u2028\U000e0001"),
            "a\\x1b[31mb\\nc\\td\\r\\u202ee\\x9b\\u2028\\U000e0001",
        )
        self.assertEqual(printable("café 1 2"), "café 1 2")
        self.assertEqual(printable(None), "None")

    def test_fold(self) -> None:
        """
        Folded, whitespace runs become one space and what is left is
        escaped: one line for a table cell.
        """
        self.assertEqual(printable("a\n\t b\x1bc", fold=True), "a b\\x1bc")
        self.assertEqual(text(BAD), "evil\\x1b[31m name\\u202e\\x9b")
        self.assertEqual(text(""), "-")


class EscapedOutputTests(SynchronousTestCase):
    def test_event_line(self) -> None:
        """
        An event's task name, id, reason, child and arguments are escaped.
        """
        line = event_line(
            {
                "time": 0,
                "daemon": "d\x1b",
                "type": "task.failed",
                "id": "i\x1b",
                "name": BAD,
                "exception": "E\x1b",
                "reason": "r\n\x1b",
                "child": "c\x1b",
                "args": "a\x1b",
            }
        )
        assert_clean(self, line)
        self.assertNotIn("\n", line)
        self.assertIn("evil\\x1b[31m name", line)

    def test_daemon_event_fields(self) -> None:
        line = event_line({"time": 0, "daemon": "d", "type": "daemon.online", "busy": "\x1b"})
        self.assertIn("busy=\\x1b", line)

    def dead_letter(self) -> DeadLetter:
        # Such a name is refused when sent through a client, not when
        # published by hand.
        body = json.dumps({"id": TASK_ID, "task": BAD, "args": [1]}).encode()
        headers = dead_letter_properties({}, "malformed\x1b", "de\x1btail\nmore", 0.0)["headers"]
        return DeadLetter(1, body, {"headers": headers}, delivery_tag=1)

    def test_deadletter_list_line(self) -> None:
        """
        ``deadletter list``: one line, its task name and detail escaped.
        """
        fields = list_line(self.dead_letter()).split("\t")
        self.assertEqual(
            fields[2:5], ["evil\\x1b[31m name\\u202e\\x9b", "malformed\\x1b", "de\\x1btail more"]
        )

    def test_deadletter_show(self) -> None:
        """
        ``deadletter show``: the task name's escape and newline are
        escaped, in its line and in the body.
        """
        shown = show_text(self.dead_letter())
        assert_clean(self, shown)
        self.assertIn("task: evil\\x1b[31m\\nname\\u202e\\x9b\n", shown)
        self.assertIn("detail: de\\x1btail\\nmore\n", shown)

    def test_result(self) -> None:
        """
        ``result``: the task name, exception, reason and traceback lines
        are escaped; the traceback keeps one line per line.
        """
        outcome = Outcome(
            TASK_ID,
            "FAILURE",
            task=BAD,
            exc={"type": "E\x1b", "message": "m\x1b\nm"},
            reason="r\x1b",
            traceback="Traceback\n  line \x1b[2J\n",
        )
        lines = outcome_lines(outcome)
        assert_clean(self, "\n".join(lines))
        self.assertIn("exception: E\\x1b: m\\x1b\\nm", lines)
        self.assertEqual(lines[-2:], ["  Traceback", "    line \\x1b[2J"])
        self.assertTrue(all("\n" not in line for line in lines))

    def test_inspect_and_ping(self) -> None:
        """
        A daemon's name, its error and the task names it lists are escaped.
        """
        registered = inspect_lines("registered", reply("d\x1b", [BAD]))
        self.assertEqual(registered[1], "  evil\\x1b[31m name\\u202e\\x9b")
        failed = inspect_lines("active", reply("d\x1b", "bad\x1b", ok=False))
        self.assertEqual(failed, ["d\\x1b (host web1, pid 42): error: bad\\x1b"])
        stats = inspect_lines("stats", reply("d", {"k\x1b": {"x\n": "v\x1b"}}))
        self.assertEqual(stats[1], "  k\\x1b.x  v\\x1b")
        ping = Run(
            self, FakeSession(broadcast={"ping": [reply("d\x1b", "no\x1b", ok=False)]}), "ping"
        )
        assert_clean(self, ping.out.getvalue() + ping.err.getvalue())

    def test_revoke_lines(self) -> None:
        """
        ``revoke`` names the daemons escaped.
        """
        answer = {"revoked": [TASK_ID], "terminated": [], "running": []}
        session = FakeSession(revoke=[], broadcast={"revoke": [reply("d\x1b", answer)]})
        run = Run(self, session, "revoke", TASK_ID)
        self.assertEqual(run.lines, [f"{TASK_ID}\tdropped by daemon d\\x1b before it started"])

    def test_error_lines(self) -> None:
        """
        The one line of an error (a broker's or a store's text in it) is
        escaped.
        """
        for error in (CommandFailed("no queue 'q\x1b'"), RuntimeError("store said \x1b\n")):
            err = io.StringIO()
            session = FakeSession(outcome=error)
            arguments = parser().parse_args(["result", TASK_ID])
            status = self.successResultOf(
                defer.Deferred.fromCoroutine(execute(arguments, session, io.StringIO(), err))
            )
            self.assertEqual(status, 1)
            assert_clean(self, err.getvalue())
            self.assertEqual(err.getvalue().count("\n"), 1)

    def test_json_is_escaped(self) -> None:
        """
        ``--json`` output is JSON: the escape is ``\\u001b`` in it.
        """
        outcome = Outcome(TASK_ID, "SUCCESS", task=BAD, result="ok")
        run = Run(self, FakeSession(outcome=outcome), "--json", "result", TASK_ID)
        self.assertNotIn("\x1b", run.out.getvalue())
        self.assertEqual(json.loads(run.out.getvalue())["task"], BAD)

    def test_json_escapes_every_control_character(self) -> None:
        """
        In ``--json`` output (pretty or one line per event) the C1
        controls, DEL and format characters are ``\\u`` escapes too;
        accents stay, and the JSON reads back the same.
        """
        document = {"task": BAD + "\x7f café \U000e0001"}
        for pretty in (True, False):
            written = dumps(document, pretty=pretty)
            for bad in ("\x1b", "\x9b", "\x7f", "\u202e", "\U000e0001"):
                self.assertNotIn(bad, written)
            self.assertIn("café", written)
            self.assertIn("\\u009b", written)
            self.assertEqual(json.loads(written), document)
