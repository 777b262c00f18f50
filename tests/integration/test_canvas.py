"""
Workflows on real servers (RabbitMQ, Redis) and real ``twistd twistedq``
daemons: a chain, link and link_error, and a chord whose callback runs
once while one of two daemons is killed with SIGKILL halfway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

TASKS = "tests.integration.canvas_tasks"


def start_script(queue: str, request: dict[str, Any]) -> subprocess.Popen[str]:
    """
    Start :py:mod:`tests.integration.canvas_script` with ``request``.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.canvas_script", amqp_url(), redis_url(), queue],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(request))
    process.stdin.close()
    return process


def read_line(process: subprocess.Popen[str]) -> Any:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        assert process.stderr is not None
        raise AssertionError(f"canvas script failed: {process.stderr.read()}")
    return json.loads(line)


def run_script(queue: str, timeout: float = 60, **request: Any) -> Any:
    process = start_script(queue, request)
    try:
        return read_line(process)
    finally:
        process.wait(timeout)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.05)


_shared: dict[str, Any] = {}


def shared_daemon() -> tuple[Daemon, str, Path]:
    """
    One daemon for the chain and link tests of this module (stopped when
    the test run ends).
    """
    if not _shared:
        directory = Path(tempfile.mkdtemp(prefix="twistedq-canvas-"))
        queue = unique_queue()
        daemon = Daemon(directory, queue=queue, result_backend=redis_url(), tasks=TASKS)
        import atexit

        atexit.register(daemon.stop)
        daemon.wait_ready()
        _shared.update(daemon=daemon, queue=queue, directory=directory)
    return _shared["daemon"], _shared["queue"], _shared["directory"]


class ChainLinkTests(SynchronousTestCase):
    def test_chain(self) -> None:
        """
        A chain of three returns the last result, each result the first
        argument of the next; its parents give the earlier ones.  An
        immutable step ignores its parent's result.
        """
        _, queue, _ = shared_daemon()
        report = run_script(queue, mode="chain")
        self.assertEqual(report, {"values": [4, 16, 160], "immutable": 9})

    def test_links(self) -> None:
        """
        link runs with the result on success only; link_error with the
        failed task's id on failure only.
        """
        _, queue, directory = shared_daemon()
        link, error = directory / "link.txt", directory / "error.txt"
        report = run_script(queue, mode="links", link=str(link), error=str(error))
        self.assertEqual(report["worked"], 42)
        wait_for(lambda: lines(link) and lines(error), 30, "the link and the errback")
        # Anything published wrongly went out before the parents' acks,
        # before this task of the same queue.
        run_script(queue, mode="done")
        self.assertEqual((lines(link), lines(error)), (["42"], [report["failed"]]))

    def test_redelivered_done_task_publishes(self) -> None:
        """
        A message delivered again after its task's outcome was stored (its
        daemon died before publishing the follow-ups and acking) is not
        run again, but its link is published then, with the stored result.
        """
        daemon, queue, directory = shared_daemon()
        link = directory / "redelivered.txt"
        report = run_script(queue, mode="redelivered", link=str(link))
        self.assertEqual(report["first"], 7)
        wait_for(lambda: lines(link), 30, "the link")
        self.assertEqual(lines(link), ["7"])
        self.assertIn(f"add[{report['id']}] is already done: acked without running", daemon.log())


class ChordTests(SynchronousTestCase):
    def test_chord_survives_kill(self) -> None:
        """
        A chord of 200 members runs its callback exactly once, with every
        member's result in order, while one of two daemons is killed with
        SIGKILL halfway through the members.
        """
        directory = Path(tempfile.mkdtemp(prefix="twistedq-chord-"))
        queue = unique_queue()
        extra = ("--claim-lease", "2", "--batch", "1")
        daemons = []
        for name in ("a", "b"):
            home = directory / name
            home.mkdir()
            daemon = Daemon(home, queue=queue, result_backend=redis_url(), tasks=TASKS, extra=extra)
            self.addCleanup(daemon.stop)
            daemons.append(daemon)
        for daemon in daemons:
            daemon.wait_ready()
        members, callback = directory / "members.txt", directory / "callback.txt"
        process = start_script(
            queue,
            {
                "mode": "chord",
                "size": 200,
                "pause": 0.02,
                "members": str(members),
                "callback": str(callback),
                "timeout": 120,
            },
        )
        self.addCleanup(process.kill)
        read_line(process)
        wait_for(lambda: len(lines(members)) >= 100, 60, "half the members")
        daemons[0].process.kill()
        daemons[0].process.wait(10)
        report = read_line(process)
        self.assertEqual(report["value"], sum(2 * i for i in range(200)))
        run_script(queue, mode="done")
        self.assertEqual(lines(callback), [f"{sum(2 * i for i in range(200))} 200"])
        ran = {int(line.split()[0]) for line in lines(members)}
        self.assertEqual(ran, set(range(200)))
