"""
The ``twistedq`` command on real servers: RabbitMQ, Redis and two real
``twistd twistedq`` daemons, the command run as a subprocess (the
installed script when there is one, else ``python -m twistedq.cli``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import (
    ROOT,
    Daemon,
    amqp_url,
    free_port,
    redis_url,
    services,
    unique_queue,
)
from tests.integration.test_end_to_end import run_client

SCRIPT = Path(sys.executable).with_name("twistedq")


def command_line() -> list[str]:
    """
    How to run the command: the installed script, or the module.
    """
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "twistedq.cli"]


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """
    Call ``condition`` until it returns something true; return that.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[str]) -> None:
    """
    Kill a process still running, and wait for it.
    """
    if process.poll() is None:
        process.kill()
        process.wait()


class Lines:
    """
    The lines a running process prints, read by a thread, taken with a
    timeout.
    """

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, wanted: Callable[[str], bool], timeout: float) -> list[str]:
        """
        The lines read until one ``wanted`` (included).
        """
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no wanted line within {timeout} s; read: {seen}") from None
            if line is None:
                raise AssertionError(f"the output ended; read: {seen}")
            seen.append(line)
            if wanted(line):
                return seen


class CommandTestCase(SynchronousTestCase):
    """
    A queue of its own, and the command pointed at it.
    """

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-cli-"))
        self.queue = unique_queue()
        self.backend = redis_url()
        self.broker = amqp_url()
        self.env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )

    def arguments(self, *argv: str) -> list[str]:
        return [
            *command_line(),
            "--broker",
            self.broker,
            "--queue",
            self.queue,
            "--result-backend",
            self.backend,
            *argv,
        ]

    def twistedq(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.arguments(*argv), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_daemon(self, name: str, *extra: str) -> Daemon:
        directory = self.directory / name
        directory.mkdir()
        daemon = Daemon(
            directory,
            queue=self.queue,
            result_backend=self.backend,
            concurrency=1,
            extra=("--name", name, *extra),
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        poll(lambda: "Listening for remote control" in daemon.log(), 30, f"{name} control")
        return daemon


class TwoDaemonsTests(CommandTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.names = [f"cli-{self.queue}-{n}" for n in ("a", "b")]
        self.daemons = [self.start_daemon(name) for name in self.names]

    def active(self, task_id: str) -> list[str]:
        """
        The daemons that ``inspect active --json`` says run ``task_id``.
        """
        done = self.twistedq(
            "inspect", "active", "--json", "-d", self.names[0], "-d", self.names[1]
        )
        replies = json.loads(done.stdout)
        return [r["daemon"] for r in replies if any(t["id"] == task_id for t in r["reply"])]

    def test_status_and_ping(self) -> None:
        """
        ``status`` shows both daemons with their children and the queue
        with two consumers; ``ping -d`` answers for the daemon named.
        """
        done = self.twistedq("status")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"queue         {self.queue}: 0 ready, 2 consumers", done.stdout)
        for name in self.names:
            self.assertIn(name, done.stdout)
        document = json.loads(self.twistedq("status", "--json").stdout)
        mine = [d for d in document["daemons"] if d["daemon"] in self.names]
        self.assertEqual([d["children"] for d in mine], [1, 1])
        pinged = self.twistedq("ping", "-d", self.names[1])
        self.assertEqual(pinged.returncode, 0, pinged.stderr)
        self.assertEqual(
            [line.split()[0] for line in pinged.stdout.splitlines()[1:]], [self.names[1]]
        )
        missing = self.twistedq("ping", "-d", "nobody", "--reply-timeout", "0.5")
        self.assertEqual(
            (missing.returncode, missing.stderr), (1, "no reply from nobody within 0.5 s\n")
        )

    def test_inspect_active_then_revoke_terminate(self) -> None:
        """
        ``inspect active`` lists a running 60-second task under the daemon
        that runs it; ``revoke --terminate`` kills it: it is REVOKED long
        before its 60 seconds, stays so, and runs nowhere any more.
        """
        task_id = run_client(self.queue, self.backend, mode="send", task="sleep", args=[60])["id"]
        (runner,) = poll(lambda: self.active(task_id), 30, "the task listed as active")
        self.assertIn(runner, self.names)
        plain = self.twistedq("inspect", "active", "-d", runner).stdout.splitlines()
        self.assertTrue(plain[0].startswith(f"{runner} (host "), plain)
        self.assertEqual(plain[2].split()[:2], [task_id, "sleep"])

        started = time.monotonic()
        revoked = self.twistedq("revoke", task_id, "--terminate")
        self.assertEqual(revoked.returncode, 0, revoked.stderr)
        self.assertIn(f"terminated by {runner}", revoked.stdout)

        def result() -> subprocess.CompletedProcess[str] | None:
            done = self.twistedq("result", task_id)
            return done if "status:    REVOKED" in done.stdout else None

        final = poll(result, 20, "the task REVOKED")
        ended = time.monotonic() - started
        self.assertEqual(final.returncode, 1)
        self.assertLess(ended, 30, "REVOKED only once the task could have run to its end")
        print(f"revoke --terminate to REVOKED: {ended:.2f} s")
        self.assertEqual(self.active(task_id), [])
        time.sleep(1)  # the daemons keep settling; nothing may run it again
        self.assertIn("status:    REVOKED", self.twistedq("result", task_id).stdout)
        self.assertEqual(self.active(task_id), [])


class OneChildRevokeTests(CommandTestCase):
    def reserved(self, name: str, task_id: str) -> bool:
        """
        Whether ``inspect reserved`` says daemon ``name`` holds ``task_id``.
        """
        done = self.twistedq("inspect", "reserved", "--json", "-d", name)
        replies = json.loads(done.stdout or "[]")
        return any(t["id"] == task_id for r in replies for t in r.get("reply") or [])

    def test_plain_revoke_drops_a_queued_task(self) -> None:
        """
        A task queued behind a long one on a one-child daemon is revoked
        by a plain ``revoke`` (no --terminate): the daemon drops it, it is
        REVOKED and never runs, even once the child is free.
        """
        name = f"cli-{self.queue}-one"
        self.start_daemon(name)
        long_id = run_client(self.queue, self.backend, mode="send", task="sleep", args=[60])["id"]
        queued_id = run_client(
            self.queue, self.backend, mode="send", task="echo", args=["must not run"]
        )["id"]
        poll(lambda: self.reserved(name, queued_id), 30, "the echo task held by the daemon")

        revoked = self.twistedq("revoke", queued_id)
        self.assertEqual(revoked.returncode, 0, revoked.stderr)
        self.assertEqual(
            revoked.stdout, f"{queued_id}\tdropped by daemon {name} before it started\n"
        )
        running = self.twistedq("revoke", long_id)
        self.assertEqual(running.returncode, 1, running.stderr)
        self.assertIn(f"running on daemon {name}: --terminate kills it", running.stdout)
        terminated = self.twistedq("revoke", long_id, "--terminate")
        self.assertEqual(terminated.returncode, 0, terminated.stderr)

        def status(task_id: str) -> str:
            return str(run_client(self.queue, self.backend, mode="status", id=task_id)["status"])

        poll(lambda: status(long_id) == "REVOKED", 30, "the long task REVOKED")
        # The child is free now, and a task sent after the revoked one
        # runs: the revoked one would have run before it.
        after = run_client(self.queue, self.backend, mode="send", task="echo", args=["after"])
        poll(lambda: status(after["id"]) == "SUCCESS", 30, "a task sent after it done")
        self.assertEqual(status(queued_id), "REVOKED")
        self.assertFalse(self.reserved(name, queued_id))


class EventsTests(CommandTestCase):
    def test_a_task_whole_path_then_interrupt(self) -> None:
        """
        ``events`` prints a task's received, claimed, started and
        succeeded events, in that order, each naming the daemon; SIGINT
        ends it with status 0.  ``--count 2`` ends after two events.
        """
        name = f"cli-{self.queue}"
        self.start_daemon(name, "--heartbeat-interval", "0.5")
        tail = subprocess.Popen(
            self.arguments("events", "--json", "--type", "task.*", "--type", "daemon.heartbeat"),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(stop, tail)
        lines = Lines(tail.stdout)
        # The daemon publishes once it knows the listener: its heartbeat says so.
        lines.until(lambda line: json.loads(line)["type"] == "daemon.heartbeat", 30)
        task_id = run_client(self.queue, self.backend, mode="send", task="add", args=[2, 3])["id"]
        seen = lines.until(
            lambda line: (
                json.loads(line).get("id") == task_id
                and json.loads(line)["type"] == "task.succeeded"
            ),
            30,
        )
        path = [json.loads(line) for line in seen]
        mine = [event for event in path if event.get("id") == task_id]
        self.assertEqual(
            [event["type"] for event in mine],
            ["task.received", "task.claimed", "task.started", "task.succeeded"],
        )
        self.assertEqual({event["daemon"] for event in mine}, {name})
        self.assertEqual({event["name"] for event in mine}, {"add"})
        tail.send_signal(signal.SIGINT)
        self.assertEqual(tail.wait(30), 0)
        self.assertIn("listening for events", tail.stderr.read() if tail.stderr else "")

        counted = self.twistedq("events", "--type", "daemon.heartbeat", "--count", "2")
        self.assertEqual(counted.returncode, 0, counted.stderr)
        self.assertEqual(
            [line.split()[2] for line in counted.stdout.splitlines()], ["daemon.heartbeat"] * 2
        )

    def test_broker_restart(self) -> None:
        """
        While ``events`` runs, RabbitMQ restarts: the command says it lost
        the connection, then that it is connected again, and the daemon's
        events come again.
        """
        name = f"cli-{self.queue}"
        self.start_daemon(name, "--heartbeat-interval", "0.5")
        tail = subprocess.Popen(
            self.arguments("events", "--json", "--type", "daemon.heartbeat"),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(stop, tail)
        lines, notes = Lines(tail.stdout), Lines(tail.stderr)
        lines.until(lambda line: json.loads(line)["daemon"] == name, 30)
        services("restart", "rabbitmq")
        restarted = time.time()
        notes.until(lambda line: line.startswith("lost the connection to the broker"), 90)
        notes.until(lambda line: line.startswith("connected to the broker at"), 90)
        lines.until(
            lambda line: (
                json.loads(line)["daemon"] == name and json.loads(line)["time"] > restarted
            ),
            90,
        )
        tail.send_signal(signal.SIGINT)
        self.assertEqual(tail.wait(30), 0)


class NoDaemonTests(CommandTestCase):
    def test_broker_down(self) -> None:
        """
        A broker that cannot be reached: one line on stderr naming its
        URL (without the password), no traceback, status 3, within the
        timeout.
        """
        port = free_port()
        for argv in (["status"], ["ping"], ["events"], ["purge", "--yes"], ["deadletter", "list"]):
            started = time.monotonic()
            done = self.twistedq(
                "--broker", f"amqp://guest:s3cret@127.0.0.1:{port}/", "--timeout", "5", *argv
            )
            self.assertLess(time.monotonic() - started, 30)
            self.assertEqual(done.returncode, 3, (argv, done.stderr))
            self.assertEqual(len(done.stderr.splitlines()), 1, done.stderr)
            self.assertIn(f"127.0.0.1:{port}", done.stderr)
            self.assertNotIn("s3cret", done.stderr)
            self.assertEqual(done.stdout, "")

    def test_store_down(self) -> None:
        """
        A result store that does not answer: one line naming it, status 3,
        after ``--timeout`` even with a longer ``--wait``.
        """
        port = free_port()
        store = f"redis://:pw@127.0.0.1:{port}/0"
        for wait in ((), ("--wait", "120")):
            started = time.monotonic()
            done = self.twistedq("--result-backend", store, "--timeout", "2", "result", "x", *wait)
            self.assertEqual(done.returncode, 3, done.stderr)
            self.assertEqual(
                done.stderr,
                f"twistedq: the result store at redis://:***@127.0.0.1:{port}/0 "
                "did not answer within 2 s\n",
            )
            self.assertLess(time.monotonic() - started, 60, "bounded by --timeout, not --wait")

    def test_purge_and_result(self) -> None:
        """
        ``purge`` refuses without ``--yes`` and leaves the tasks; with it,
        says how many it deleted.  ``result`` of a task never run says
        PENDING; of an unknown id, not found (status 1).
        """
        ids = run_client(self.queue, self.backend, mode="publish", count=3)["ids"]
        refused = self.twistedq("purge")
        self.assertEqual(refused.returncode, 2)
        self.assertIn("--yes", refused.stderr)
        pending = self.twistedq("result", ids[0])
        self.assertEqual(pending.returncode, 0, pending.stderr)
        self.assertIn("status:    PENDING", pending.stdout)
        purged = self.twistedq("purge", self.queue, "--yes", "--json")
        self.assertEqual(json.loads(purged.stdout), {"queue": self.queue, "purged": 3})
        again = self.twistedq("purge", "--yes")
        self.assertEqual(again.stdout, f"0 tasks purged from {self.queue}\n")
        unknown = self.twistedq("result", "no-such-task")
        self.assertEqual(unknown.returncode, 1)
        self.assertIn("knows no task no-such-task", unknown.stderr)
        letters = self.twistedq("deadletter", "list")
        self.assertEqual((letters.returncode, letters.stdout), (0, ""))
        self.assertIn(f"0 dead letters in {self.queue}.dead", letters.stderr)


class BackgroundDaemonTests(CommandTestCase):
    def test_ping_names_the_running_process(self) -> None:
        """
        A daemon that twistd runs in the background (no ``-n``) answers
        ``ping`` with the pid of its own process, the one in its pid
        file, and is named ``host:pid`` by it: twistd forks after it built
        the daemon, and the parent that built it has exited.
        """
        pidfile = self.directory / "twistd.pid"
        log = self.directory / "twistd.log"
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        started = subprocess.run(
            [
                twistd,
                "--pidfile",
                str(pidfile),
                "--logfile",
                str(log),
                "twistedq",
                "--broker",
                self.broker,
                "--queue",
                self.queue,
                "--result-backend",
                self.backend,
                "--concurrency",
                "1",
                "--tasks",
                "tests.integration.tasks",
                "--status",
                "none",
            ],
            cwd=self.directory,
            env=self.env,
            timeout=60,
        )
        self.assertEqual(started.returncode, 0)
        pid = int(poll(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "pid file"))
        self.addCleanup(self._stop, pid)
        poll(lambda: "Listening for remote control" in log.read_text(), 30, "remote control")
        done = self.twistedq("ping", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        (reply,) = json.loads(done.stdout)
        self.assertEqual(reply["pid"], pid)
        self.assertEqual(reply["daemon"], f"{reply['host']}:{pid}")

    def _stop(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        poll(gone, 60, "the daemon stopped")
