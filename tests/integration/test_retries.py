"""
Retries and durable delays against a real daemon, RabbitMQ and Redis: a
task that asks to retry is published again (same id, one more retry) and
runs again; a task due later than ``--hold-eta`` waits in the broker's
delay queues, not in the daemon, and survives the daemon's death there.
"""

from __future__ import annotations

import datetime
import itertools
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, redis_url, unique_queue
from tests.integration.test_end_to_end import run_client


def starts(path: Path) -> list[float]:
    """
    The start times a task recorded in ``path``.
    """
    try:
        return [float(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


class RetryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-retries-"))
        self.queue = unique_queue()
        self.backend = redis_url()

    def start_daemon(self, *extra: str) -> Daemon:
        daemon = Daemon(self.directory, queue=self.queue, result_backend=self.backend, extra=extra)
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    def apply(self, task: str, *args: Any, **options: Any) -> Any:
        return run_client(
            self.queue, self.backend, mode="apply", task=task, args=list(args), **options
        )

    def status(self, task_id: str) -> Any:
        return run_client(self.queue, self.backend, mode="status", id=task_id)


class RetryTests(RetryTestCase):
    """
    Tasks that ask to retry, with the daemon's default ``--hold-eta``.
    """

    def setUp(self) -> None:
        super().setUp()
        self.daemon = self.start_daemon()

    def test_autoretry_then_success(self) -> None:
        """
        A task raising one of its ``autoretry_for`` twice, then returning,
        ends SUCCESS after three runs, each at least its
        ``default_retry_delay`` (0.2 s) after the one before.
        """
        runs = self.directory / "flaky"
        report = self.apply("flaky", str(runs), 2)
        self.assertEqual((report["status"], report["value"]), ("SUCCESS", 3))
        times = starts(runs)
        self.assertEqual(len(times), 3)
        for before, after in itertools.pairwise(times):
            self.assertGreaterEqual(after - before, 0.2)
        self.assertIn(f"Task flaky[{report['id']}] retries (2)", self.daemon.log())

    def test_max_retries_exceeded(self) -> None:
        """
        A task that keeps failing runs once and retries ``max_retries`` (2)
        times, then ends FAILURE with its own exception.
        """
        runs = self.directory / "always"
        report = self.apply("always_fails", str(runs))
        self.assertEqual(report["status"], "FAILURE")
        self.assertEqual(report["raised"], ["TaskFailed", "run 3 fails"])
        self.assertEqual(len(starts(runs)), 3)

    def test_countdown_respected_and_retry_status(self) -> None:
        """
        ``self.retry(countdown=2)`` runs the task again no sooner than two
        seconds later; meanwhile its status is RETRY, with one retry and
        the ETA of the next run.
        """
        runs = self.directory / "later"
        report = self.apply("retry_later", str(runs), 2, wait=False)
        deadline = time.monotonic() + 10
        while not starts(runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        seen = self.status(report["id"])
        self.assertEqual((seen["status"], seen["retries"]), ("RETRY", 1))
        eta = datetime.datetime.fromisoformat(seen["eta"]).timestamp()
        first = starts(runs)[0]
        self.assertLess(abs(eta - first - 2), 0.5)
        deadline = time.monotonic() + 15
        while len(starts(runs)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        second = starts(runs)[1]
        self.assertGreaterEqual(second, eta)
        self.assertLess(second - eta, 1.0)
        time.sleep(0.5)
        self.assertEqual(self.status(report["id"])["status"], "SUCCESS")


class DelayQueueTests(RetryTestCase):
    """
    With ``--hold-eta 1``, a task due later waits in the broker's delay
    queues.
    """

    def test_countdown_through_delay_queues(self) -> None:
        """
        A task published with a 5 s countdown goes through delay queues
        (the daemon logs each hop) and starts at its ETA, within a second.
        """
        daemon = self.start_daemon("--hold-eta", "1")
        runs = self.directory / "start"
        report = self.apply("record_start", str(runs), countdown=5)
        self.assertEqual(report["status"], "SUCCESS")
        eta = report["publishing_at"] + 5
        self.assertGreaterEqual(report["value"], eta)
        self.assertLess(report["value"] - eta, 1.0)
        log = daemon.log()
        self.assertIn(f"{self.queue}.delay.4", log)
        self.assertEqual(len(starts(runs)), 1)

    def test_daemon_killed_while_task_waits(self) -> None:
        """
        A daemon killed (SIGKILL) while a task waits in a delay queue loses
        nothing: the task runs at its ETA under a daemon started after.
        """
        first = self.start_daemon("--hold-eta", "1")
        runs = self.directory / "survivor"
        report = self.apply("record_start", str(runs), countdown=6, wait=False)
        eta = report["publishing_at"] + 6
        deadline = time.monotonic() + 10
        while f"{self.queue}.delay.4" not in first.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(f"{self.queue}.delay.4", first.log())
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        self.start_daemon("--hold-eta", "1")
        deadline = time.monotonic() + 20
        while not starts(runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        [start] = starts(runs)
        self.assertGreaterEqual(start, eta)
        self.assertLess(start - eta, 1.5)
        time.sleep(0.5)
        self.assertEqual(self.status(report["id"])["status"], "SUCCESS")
