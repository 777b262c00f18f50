"""
Tests for :py:mod:`twistedq.cli`: the command line, what each subcommand
prints and its exit status, against a fake session (no broker, no store).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistedq import __version__
from twistedq.cli.daemons import inspect_lines
from twistedq.cli.errors import CommandFailed, Unreachable, UsageError
from twistedq.cli.main import execute, parser, run
from twistedq.cli.output import duration, event_line, flatten, table
from twistedq.cli.session import Session, reason, redact
from twistedq.cli.tail import EventFilter, topic_patterns
from twistedq.conf import Settings
from twistedq.outcome import Outcome

TASK_ID = "5f0c6a52-2a8e-4d0e-9a51-0d4c1e7f3b10"


def reply(daemon: str, answer: Any, ok: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {"daemon": daemon, "host": "web1", "pid": 42, "ok": ok}
    if ok:
        document["reply"] = answer
    else:
        document["error"] = answer
    return document


class FakeSession(Session):
    """
    A session whose broker and store are canned answers; a
    :py:class:`Exception` as an answer is raised.
    """

    def __init__(self, **answers: Any) -> None:
        super().__init__(Settings(queue="jobs"), Clock(), timeout=5.0)
        self.answers = answers
        self.broadcasts: list[tuple[str, Any, Any, float]] = []
        self.on_events: Callable[[list[dict[str, Any]]], None] | None = None
        self.patterns: list[str] = []
        self.closed = False

    def _answer(self, name: str, *key: Any) -> Any:
        answer = self.answers.get(name)
        if isinstance(answer, dict) and key and key[0] in answer:
            answer = answer[key[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply_timeout: float = 1.0,
    ) -> list[dict[str, Any]]:
        self.broadcasts.append((command, arguments, destination, reply_timeout))
        replies = self._answer("broadcast", command)
        return [r for r in replies or [] if not destination or r["daemon"] in destination]

    async def queue_counts(self, queue: str) -> tuple[int, int]:
        return self._answer("queue_counts", queue)

    async def purge_queue(self, queue: str) -> int:
        return self._answer("purge_queue", queue)

    async def delay_queues(self, topology: Any) -> list[Any]:
        return self._answer("delay_queues") or []

    async def outcome(self, task_id: str, wait: float | None = None) -> Outcome:
        return self._answer("outcome")

    async def outcomes(self, task_ids: Sequence[str]) -> list[Outcome]:
        found = self._answer("outcomes") or {}
        return [found.get(i, Outcome.pending(i)) for i in task_ids]

    async def revoke(self, task_ids: Sequence[str]) -> list[str]:
        return self._answer("revoke") or []

    async def receive_events(
        self,
        patterns: Sequence[str],
        on_events: Callable[[list[dict[str, Any]]], None],
        note: Callable[[str], None] | None = None,
    ) -> Callable[[], defer.Deferred[None]]:
        self._answer("receive_events")
        self.patterns = list(patterns)
        self.on_events = on_events
        return lambda: defer.succeed(None)

    async def close(self) -> None:
        self.closed = True


class Run:
    """
    One parsed command run on a fake session: its status and output.
    """

    def __init__(self, case: SynchronousTestCase, session: FakeSession, *argv: str) -> None:
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.session = session
        arguments = parser().parse_args(argv)
        self.running = defer.Deferred.fromCoroutine(execute(arguments, session, self.out, self.err))
        self.case = case

    @property
    def status(self) -> int:
        return self.case.successResultOf(self.running)

    @property
    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()


class ParsingTests(SynchronousTestCase):
    def test_common_options_before_or_after_the_command(self) -> None:
        """
        ``--queue``, ``--timeout`` and ``--json`` work before the
        subcommand and after it; after it they win.
        """
        before = parser().parse_args(["--queue", "a", "--timeout", "2", "--json", "ping"])
        self.assertEqual((before.queue, before.timeout, before.json), ("a", 2.0, True))
        after = parser().parse_args(["--queue", "a", "ping", "--queue", "b", "--json"])
        self.assertEqual((after.queue, after.timeout, after.json), ("b", 5.0, True))
        letters = parser().parse_args(["deadletter", "--queue", "c", "list", "--timeout", "9"])
        self.assertEqual(
            (letters.queue, letters.timeout, letters.letter_command), ("c", 9.0, "list")
        )

    def test_usage_errors_exit_2(self) -> None:
        """
        A missing or unknown subcommand, an unknown ``inspect`` question, a
        timeout that is not a positive number, ``revoke`` without ids and
        ``--count 0`` are usage errors: argparse exits with 2.
        """
        self.patch(parser().__class__, "_print_message", lambda *a, **k: None)
        for argv in (
            [],
            ["frobnicate"],
            ["inspect", "everything"],
            ["ping", "--timeout", "0"],
            ["ping", "--timeout", "soon"],
            ["revoke"],
            ["events", "--count", "0"],
            ["deadletter", "republish"],
        ):
            with self.assertRaises(SystemExit) as raised:
                parser().parse_args(argv)
            self.assertEqual(raised.exception.code, 2, argv)

    def test_version(self) -> None:
        """
        ``--version`` prints the version and exits with 0.
        """
        printed = io.StringIO()
        self.patch(sys, "stdout", printed)
        with self.assertRaises(SystemExit) as raised:
            parser().parse_args(["--version"])
        self.assertEqual(
            (raised.exception.code, printed.getvalue()), (0, f"twistedq {__version__}\n")
        )

    def test_control_options(self) -> None:
        """
        ``--destination`` may be repeated; ``--reply-timeout`` is 1 s by
        default.
        """
        arguments = parser().parse_args(["inspect", "active", "-d", "a", "--destination", "b"])
        self.assertEqual((arguments.what, arguments.destination), ("active", ["a", "b"]))
        self.assertEqual(arguments.reply_timeout, 1.0)


class PingInspectTests(SynchronousTestCase):
    def test_ping_table(self) -> None:
        """
        One line per daemon that answered, sorted by name, with its
        uptime; status 0.
        """
        session = FakeSession(
            broadcast={"ping": [reply("b:2", {"pong": True, "uptime": 75}), reply("a:1", {})]}
        )
        run = Run(self, session, "ping")
        self.assertEqual(run.status, 0)
        self.assertEqual(run.lines[0].split(), ["DAEMON", "HOST", "PID", "UPTIME", "ANSWER"])
        self.assertEqual(run.lines[1].split()[0], "a:1")
        self.assertEqual(run.lines[2].split(), ["b:2", "web1", "42", "1m15s", "pong"])
        self.assertIn("2 daemons answered", run.err.getvalue())
        self.assertTrue(session.closed)

    def test_no_daemon_answered(self) -> None:
        """
        No reply: status 1 and a line saying so within the reply timeout.
        """
        run = Run(self, FakeSession(broadcast={"ping": []}), "ping", "--reply-timeout", "0.5")
        self.assertEqual(run.status, 1)
        self.assertEqual(run.err.getvalue().splitlines()[0], "no daemon answered within 0.5 s")

    def test_destination_not_answering(self) -> None:
        """
        A daemon named by ``--destination`` that did not answer is named,
        and the status is 1 even though another answered; the request
        names the destinations.
        """
        session = FakeSession(broadcast={"ping": [reply("a:1", {"uptime": 1})]})
        run = Run(self, session, "ping", "-d", "a:1", "-d", "c:3")
        self.assertEqual(run.status, 1)
        self.assertIn("no reply from c:3", run.err.getvalue())
        self.assertEqual(session.broadcasts[0][2], ["a:1", "c:3"])

    def test_inspect_active_table_per_daemon(self) -> None:
        """
        ``inspect active``: a heading per daemon with how many tasks run,
        then a table of id, name, runtime, child and arguments.
        """
        task = {"id": TASK_ID, "name": "sleep", "args": "(60,)", "runtime": 2.5, "child": "P-2"}
        session = FakeSession(
            broadcast={"inspect.active": [reply("b:2", [task]), reply("a:1", [])]}
        )
        run = Run(self, session, "inspect", "active")
        self.assertEqual(run.status, 0)
        self.assertEqual(run.lines[0], "a:1 (host web1, pid 42): 0 active")
        self.assertEqual(run.lines[1], "b:2 (host web1, pid 42): 1 active")
        self.assertEqual(run.lines[2].split(), ["ID", "NAME", "RUNTIME", "CHILD", "ARGS"])
        self.assertEqual(run.lines[3].split(), [TASK_ID, "sleep", "2.5s", "P-2", "(60,)"])

    def test_inspect_json_and_error_reply(self) -> None:
        """
        ``--json`` prints the raw replies as one JSON document; a daemon
        that answered with an error makes the status 1.
        """
        replies = [reply("a:1", ["add"]), reply("b:2", "boom", ok=False)]
        session = FakeSession(broadcast={"inspect.registered": replies})
        run = Run(self, session, "--json", "inspect", "registered")
        self.assertEqual(run.status, 1)
        self.assertEqual(json.loads(run.out.getvalue()), replies)
        session = FakeSession(broadcast={"inspect.registered": replies})
        plain = Run(self, session, "inspect", "registered")
        self.assertIn("b:2 (host web1, pid 42): error: boom", plain.lines)
        self.assertIn("  add", plain.lines)

    def test_inspect_stats_flattened(self) -> None:
        """
        ``inspect stats`` prints the nested document as dotted keys.
        """
        stats = {"pool": {"children": 2, "busy": 1}, "consuming": True}
        session = FakeSession(broadcast={"inspect.stats": [reply("a:1", stats)]})
        run = Run(self, session, "inspect", "stats")
        self.assertEqual(
            [line.split() for line in run.lines[1:]],
            [["pool.children", "2"], ["pool.busy", "1"], ["consuming", "True"]],
        )


class InspectLinesTests(SynchronousTestCase):
    def test_reserved_and_scheduled(self) -> None:
        """
        ``reserved`` shows each task's state, ``scheduled`` its ETA.
        """
        held = reply("a:1", [{"id": TASK_ID, "name": "add", "state": "waiting"}])
        self.assertEqual(inspect_lines("reserved", held)[2].split(), [TASK_ID, "add", "waiting"])
        eta = "2026-12-05T10:00:00+00:00"
        later = reply("a:1", [{"id": TASK_ID, "name": "add", "eta": eta}])
        self.assertEqual(inspect_lines("scheduled", later)[2].split(), [TASK_ID, "add", eta])

    def test_bad_signing_keys_are_a_usage_error(self) -> None:
        """
        Signing keys that cannot be read stop the command with status 2
        before anything is sent.
        """
        session = Session(Settings(signing_keys="no-colon"), Clock(), 1.0)
        self.assertRaises(UsageError, session.signing)
        self.assertIsNone(Session(Settings(), Clock(), 1.0).signing())

    def test_cluster_broker_urls(self) -> None:
        """
        A broker URL naming the nodes of a cluster, comma-separated, gives
        one connection that knows every node; a list with a part that is
        no amqp URL is a usage error.
        """
        reactor = MemoryReactorClock()
        nodes = "amqp://guest:guest@10.0.0.1:5672/,amqp://guest:guest@10.0.0.2:5673/"
        session = Session(Settings(broker_url=nodes), reactor, 1.0)
        waiting = defer.Deferred.fromCoroutine(session.connection())
        self.addCleanup(waiting.addErrback, lambda failure: None)
        assert session._connection is not None
        self.assertEqual(
            [(a.host, a.port) for a in session._connection.addresses],
            [("10.0.0.1", 5672), ("10.0.0.2", 5673)],
        )
        reactor.advance(2)
        self.failureResultOf(waiting, Unreachable)
        bad = Session(Settings(broker_url="amqp://h1/,http://h2/"), MemoryReactorClock(), 1.0)
        self.failureResultOf(defer.Deferred.fromCoroutine(bad.connection()), UsageError)


class StatusTests(SynchronousTestCase):
    def answers(self, daemons: list[dict[str, Any]]) -> dict[str, Any]:
        stats = {
            "pool": {"children": 4, "busy": 3},
            "dispatcher": {"completed": 9, "failed": 1, "held": 500},
        }
        return {
            "broadcast": {
                "ping": daemons,
                "inspect.stats": [reply(d["daemon"], stats) for d in daemons],
            },
            "queue_counts": {"jobs": (12, 2), "jobs.dead": CommandFailed("no queue")},
        }

    def test_status(self) -> None:
        """
        The queue's ready messages and consumers, the dead letters (a
        queue not declared says so) and a row per daemon with uptime,
        children, busy and the deliveries it holds unacknowledged (which
        the queue's ready count does not show) from its statistics.
        """
        session = FakeSession(**self.answers([reply("a:1", {"pong": True, "uptime": 3700})]))
        session._connection = type("C", (), {"address": "amqp://guest@h:5672//"})()
        session.connection = lambda: _succeed(session._connection)  # type: ignore[method-assign]
        run = Run(self, session, "status")
        self.assertEqual(run.status, 0)
        text = run.out.getvalue()
        self.assertIn("queue         jobs: 12 ready, 2 consumers", text)
        self.assertIn("dead letters  jobs.dead: not declared", text)
        self.assertEqual(
            run.lines[-1].split(), ["a:1", "web1", "42", "1h01m", "4", "3", "500", "9", "1"]
        )
        self.assertEqual({b[0] for b in session.broadcasts}, {"ping", "inspect.stats"})

    def test_status_without_daemons_json(self) -> None:
        """
        ``--json`` gives one document; no daemon answering is status 1.
        """
        session = FakeSession(**self.answers([]))
        session.connection = lambda: _succeed(type("C", (), {"address": "amqp://h"})())  # type: ignore[method-assign]
        run = Run(self, session, "status", "--json")
        self.assertEqual(run.status, 1)
        document = json.loads(run.out.getvalue())
        self.assertEqual(
            document["queue"], {"name": "jobs", "declared": True, "ready": 12, "consumers": 2}
        )
        self.assertEqual(document["daemons"], [])


async def _succeed(value: Any) -> Any:
    return value


class UnreachableTests(SynchronousTestCase):
    def test_broker_down_is_one_line_and_status_3(self) -> None:
        """
        The broker or the store not answering is one line naming it on
        stderr, nothing on stdout, status 3; the session is closed.
        """
        down = Unreachable("cannot reach the broker at amqp://guest@h:5672//: refused")
        for argv in (["ping"], ["status"], ["purge", "--yes"], ["result", TASK_ID]):
            session = FakeSession(broadcast=down, queue_counts=down, purge_queue=down, outcome=down)
            run = Run(self, session, *argv)
            self.assertEqual(run.status, 3, argv)
            self.assertEqual(run.err.getvalue(), f"twistedq: {down}\n")
            self.assertEqual(run.out.getvalue(), "")
            self.assertTrue(session.closed)

    def test_reason_is_one_line(self) -> None:
        """
        A broker's refusal gives its code and text; a failure wrapped in
        an exception its own description; never more than one line.
        """
        refusal = type("Method", (), {"fields": (403, "ACCESS_REFUSED - Login\nrefused")})()
        self.assertEqual(reason(Exception(refusal)), "403 ACCESS_REFUSED - Login refused")
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        wrapped = Exception(Failure(ConnectionDone("closed\ncleanly")))
        self.assertEqual(
            reason(wrapped), "ConnectionDone: Connection was closed cleanly: closed cleanly."
        )

    def test_settings_and_usage_errors_before_connecting(self) -> None:
        """
        A bad setting in the environment or a bad command line is status
        2 with the reason, before anything is reached.
        """
        err = io.StringIO()
        self.patch(os, "environ", {"TWISTEDQ_MAX_MESSAGE_SIZE": "huge"})
        self.assertEqual(run(["ping"], io.StringIO(), err), 2)
        self.assertIn("TWISTEDQ_MAX_MESSAGE_SIZE", err.getvalue())
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(run(["frobnicate"], io.StringIO(), io.StringIO()), 2)

    def test_redact(self) -> None:
        """
        A password never appears in what is printed.
        """
        self.assertEqual(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0")
        self.assertEqual(redact("amqp://u:p@h/v"), "amqp://u:***@h/v")
        self.assertEqual(redact("sqlite:///tmp/x"), "sqlite:///tmp/x")
        self.assertEqual(redact("amqp://h/v"), "amqp://h/v")
        self.assertEqual(
            redact("redis+sentinel://:pw@h1:26379,h2:26380/twistedq/0"),
            "redis+sentinel://:***@h1:26379,h2:26380/twistedq/0",
        )
        self.assertEqual(
            redact("amqp://u:a:b@h1:5672/,amqp://u:c@h2:5673/"),
            "amqp://u:***@h1:5672/,amqp://u:***@h2:5673/",
        )


class ResultPurgeTests(SynchronousTestCase):
    def test_success(self) -> None:
        """
        A success prints its result; status 0.
        """
        outcome = Outcome(TASK_ID, "SUCCESS", result=[1, 2], task="add", date_done="today")
        run = Run(self, FakeSession(outcome=outcome), "result", TASK_ID)
        self.assertEqual(run.status, 0)
        self.assertIn("status:    SUCCESS", run.lines)
        self.assertIn("result:    [1, 2]", run.lines)

    def test_failure_prints_exception_and_traceback(self) -> None:
        """
        A failure prints the exception and its traceback; status 1.
        """
        outcome = Outcome(
            TASK_ID,
            "FAILURE",
            task="div",
            exc={"type": "ZeroDivisionError", "message": "division by zero"},
            traceback="Traceback (most recent call last):\n  boom\n",
        )
        run = Run(self, FakeSession(outcome=outcome), "result", TASK_ID)
        self.assertEqual(run.status, 1)
        self.assertIn("exception: ZeroDivisionError: division by zero", run.lines)
        self.assertIn("    boom", run.lines)

    def test_unknown_and_not_ready(self) -> None:
        """
        A task the store does not know is status 1; a pending one is
        status 0 without ``--wait``, 1 when still not ready after it.
        """
        unknown = Run(self, FakeSession(outcome=Outcome.pending(TASK_ID)), "result", TASK_ID)
        self.assertEqual(unknown.status, 1)
        self.assertIn("knows no task", unknown.err.getvalue())
        pending = Outcome(TASK_ID, "PENDING", sent_at="now")
        self.assertEqual(Run(self, FakeSession(outcome=pending), "result", TASK_ID).status, 0)
        waited = Run(self, FakeSession(outcome=pending), "result", TASK_ID, "--wait", "1")
        self.assertEqual(waited.status, 1)
        self.assertIn("not ready after 1 s", waited.err.getvalue())

    def test_result_json(self) -> None:
        """
        ``--json`` prints every field of the outcome.
        """
        outcome = Outcome(TASK_ID, "REVOKED", task="sleep", reason="terminated")
        run = Run(self, FakeSession(outcome=outcome), "--json", "result", TASK_ID)
        self.assertEqual(run.status, 1)
        document = json.loads(run.out.getvalue())
        self.assertEqual((document["status"], document["reason"]), ("REVOKED", "terminated"))

    def test_purge_needs_yes(self) -> None:
        """
        ``purge`` without ``--yes`` deletes nothing and is a usage error;
        with it, it says how many went, from the queue named or --queue.
        """
        session = FakeSession(purge_queue={"jobs": 3, "other": 5})
        refused = Run(self, session, "purge")
        self.assertEqual(refused.status, 2)
        self.assertIn("add --yes", refused.err.getvalue())
        self.assertEqual(Run(self, session, "purge", "--yes").lines, ["3 tasks purged from jobs"])
        other = Run(self, FakeSession(purge_queue={"other": 5}), "purge", "other", "--yes")
        self.assertEqual(other.lines, ["5 tasks purged from other"])
        missing = Run(self, FakeSession(purge_queue=CommandFailed("no queue")), "purge", "--yes")
        self.assertEqual(missing.status, 1)


class RevokeTests(SynchronousTestCase):
    def test_revoked_in_the_store(self) -> None:
        """
        A task revoked in the store: status 0; the daemons are asked to
        drop their copies all the same, without terminating.
        """
        session = FakeSession(revoke=[TASK_ID], broadcast={"revoke": []})
        run = Run(self, session, "revoke", TASK_ID)
        self.assertEqual(run.status, 0)
        self.assertEqual(run.lines, [f"{TASK_ID}\trevoked in the store"])
        self.assertEqual(
            [b[:2] for b in session.broadcasts],
            [("revoke", {"ids": [TASK_ID], "terminate": False})],
        )

    def test_plain_revoke_drops_a_task_a_daemon_holds(self) -> None:
        """
        Without ``--terminate``, a task a daemon has received but not
        started is dropped by it: status 0, and the line names the daemon.
        """
        answer = {"revoked": [TASK_ID], "terminated": [], "running": []}
        session = FakeSession(revoke=[], broadcast={"revoke": [reply("a:1", answer)]})
        run = Run(self, session, "revoke", TASK_ID)
        self.assertEqual(run.status, 0)
        self.assertEqual(run.lines, [f"{TASK_ID}\tdropped by daemon a:1 before it started"])

    def test_running_task_needs_terminate(self) -> None:
        """
        A task running on a daemon is not revoked without --terminate:
        status 1, and the line names the daemon and says --terminate kills
        it; one already finished says so.
        """
        done = "0b7e1c1e-0000-4000-8000-000000000001"
        answer = {"revoked": [], "terminated": [], "running": [TASK_ID]}
        session = FakeSession(
            revoke=[],
            outcomes={done: Outcome(done, "SUCCESS")},
            broadcast={"revoke": [reply("a:1", answer)]},
        )
        run = Run(self, session, "revoke", TASK_ID, done)
        self.assertEqual(run.status, 1)
        self.assertEqual(
            run.lines,
            [
                f"{TASK_ID}\trunning on daemon a:1: --terminate kills it",
                f"{done}\talready SUCCESS",
            ],
        )

    def test_terminate(self) -> None:
        """
        ``--terminate`` broadcasts ``revoke`` with ``terminate`` and prints
        what each daemon did; status 0.
        """
        answer = {"revoked": [TASK_ID], "terminated": [TASK_ID], "running": []}
        session = FakeSession(revoke=[], broadcast={"revoke": [reply("a:1", answer)]})
        run = Run(self, session, "revoke", TASK_ID, "--terminate")
        self.assertEqual(run.status, 0)
        self.assertEqual(run.lines, [f"{TASK_ID}\tterminated by a:1 (its child killed)"])
        self.assertEqual(
            session.broadcasts[0][:2], ("revoke", {"ids": [TASK_ID], "terminate": True})
        )

    def test_broker_down(self) -> None:
        """
        When the broker cannot be reached to ask the daemons, what the
        store did is printed all the same, then the error: status 3.
        """
        down = Unreachable("cannot reach the broker at amqp://h//: refused")
        for extra in ([], ["--terminate"]):
            session = FakeSession(revoke=[TASK_ID], broadcast=down)
            run = Run(self, session, "revoke", TASK_ID, *extra)
            self.assertEqual(run.status, 3)
            self.assertEqual(run.lines, [f"{TASK_ID}\trevoked in the store"])
            self.assertEqual(run.err.getvalue(), f"twistedq: {down}\n")


class EventsTests(SynchronousTestCase):
    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "time": 0.0, "daemon": "a:1", "host": "web1", "pid": 42, **fields}

    def test_count_filter_and_lines(self) -> None:
        """
        Events are printed one line each, those not matching the filters
        skipped, until ``--count`` were printed: status 0.  The binding
        is the type's own topic pattern.
        """
        session = FakeSession()
        run = Run(self, session, "events", "--type", "task.*", "--task", "ad?", "--count", "2")
        self.assertEqual(session.patterns, ["task.*"])
        assert session.on_events is not None
        self.assertNoResult(run.running)
        session.on_events(
            [
                self.event("daemon.heartbeat"),
                self.event("task.received", id=TASK_ID, name="mul"),
                self.event("task.received", id=TASK_ID, name="add", args="(1, 2)"),
            ]
        )
        self.assertNoResult(run.running)
        session.on_events(
            [
                self.event("task.failed", id=TASK_ID, name="add", runtime=0.25, exception="E"),
                self.event("task.succeeded", id=TASK_ID, name="add"),
            ]
        )
        self.assertEqual(run.status, 0)
        self.assertEqual(len(run.lines), 2)
        self.assertTrue(run.lines[0].endswith(f"a:1 task.received add[{TASK_ID}] (1, 2)"))
        self.assertTrue(run.lines[1].endswith(f"task.failed add[{TASK_ID}] 0.250s exception=E"))

    def test_json_lines_until_interrupted(self) -> None:
        """
        ``--json``: one JSON object per line; Ctrl-C ends the tail with
        status 0.  Heartbeats are left out unless asked for.
        """
        session = FakeSession()
        run = Run(self, session, "events", "--json", "--id", TASK_ID)
        assert session.on_events is not None
        first = self.event("task.started", id=TASK_ID, name="add")
        session.on_events([self.event("daemon.heartbeat"), first, self.event("task.x", id="o")])
        self.assertNoResult(run.running)
        session.interrupt()
        self.assertEqual(run.status, 0)
        self.assertEqual([json.loads(line) for line in run.lines], [first])

    def test_topic_patterns(self) -> None:
        """
        Globs of whole words bind as themselves, others bind everything.
        """
        self.assertEqual(topic_patterns(["task.failed", "daemon.*"]), ["task.failed", "daemon.*"])
        self.assertEqual(topic_patterns(["task.fail*"]), ["#"])
        self.assertEqual(topic_patterns(["*"]), ["#"])

    def test_filter(self) -> None:
        """
        The type and task name are globs; the id is exact.
        """
        keep = EventFilter(["task.*"], task="mail.*", task_id=None)
        self.assertTrue(keep({"type": "task.failed", "name": "mail.send"}))
        self.assertFalse(keep({"type": "daemon.online"}))
        self.assertFalse(keep({"type": "task.failed", "name": "add"}))


class OutputTests(SynchronousTestCase):
    def test_duration(self) -> None:
        self.assertEqual(
            [duration(s) for s in (None, 0.0042, 2.54, 185, 7380, 180000)],
            ["-", "0.004s", "2.5s", "3m05s", "2h03m", "2d02h"],
        )

    def test_table_aligns(self) -> None:
        self.assertEqual(table(["A", "BB"], [["xyz", None]]), ["A    BB", "xyz  -"])

    def test_flatten(self) -> None:
        self.assertEqual(
            flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}),
            [("a.b", 1), ("a.c", "1, 2"), ("d", "{}")],
        )

    def test_daemon_event_line(self) -> None:
        line = event_line({"type": "daemon.heartbeat", "daemon": "a:1", "busy": 1, "uptime": 61})
        self.assertEqual(line, "- a:1 daemon.heartbeat busy=1 up 1m01s")
