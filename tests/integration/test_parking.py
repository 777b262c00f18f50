"""
Tasks that run longer than the broker lets a delivery stay unacknowledged
(RabbitMQ's consumer timeout, 30 minutes by default): their messages are
parked in the result store and acknowledged, they complete once, and a
parked task whose daemon dies is published again and completes.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, redis_url, unique_queue
from tests.integration.test_end_to_end import run_client

#: Park after 1 s with 3-second claims: the mechanism of a 30-minute
#: timeout, in seconds.
OPTIONS = ("--park-after", "1", "--claim-lease", "3")


class ParkingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-parking-"))
        self.queue = unique_queue()
        self.backend = redis_url()
        self.runs = self.directory / "runs"

    def start_daemon(self, name: str) -> Daemon:
        directory = self.directory / name
        directory.mkdir()
        daemon = Daemon(directory, queue=self.queue, result_backend=self.backend, extra=OPTIONS)
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    def unacknowledged(self) -> int | None:
        """
        The messages of the queue delivered and not yet acknowledged, as
        the broker of ``scripts/services`` counts them.
        """
        services = str(ROOT / "scripts" / "services")
        completed = subprocess.run(
            ["bash", services, "rabbitmqctl", "list_queues", "name", "messages_unacknowledged"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in completed.stdout.splitlines():
            name, _, count = line.partition("\t")
            if name == self.queue:
                return int(count)
        return None

    def status(self, task_id: str) -> str:
        return run_client(self.queue, self.backend, mode="statuses", ids=[task_id])["statuses"][0]

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not within {timeout} s: {what}")
            time.sleep(0.2)

    def test_long_task_acked_while_running(self) -> None:
        """
        A task running 5 s has its message parked and acknowledged after
        1 s, and completes once.
        """
        daemon = self.start_daemon("only")
        report = run_client(
            self.queue, self.backend, mode="one", task="slow_count", args=[str(self.runs), 5]
        )
        self.assertEqual(report["value"], "slow")
        self.assertIn("its message is parked in the result store and acknowledged", daemon.log())
        self.assertEqual(self.runs.read_text().count("ran"), 1)

    def test_parked_task_recovered_after_daemon_dies(self) -> None:
        """
        The daemon running a parked task is killed once the broker has its
        ack, so only the store holds the message; once the claim lapses a
        daemon's recovery job publishes it again (the one started here, or
        any other on the store), and the task completes, run twice in all.
        """
        first = self.start_daemon("first")
        sent = run_client(
            self.queue, self.backend, mode="send", task="slow_count", args=[str(self.runs), 4]
        )
        self.wait_for(lambda: "is parked" in first.log(), 20, "the task parked")
        # The ack is logged as it is handed to the transport: wait until the
        # broker has it, or the kill makes the broker deliver the message
        # again and the recovery path under test is not taken (a loaded
        # machine took longer than a second).
        self.wait_for(lambda: self.unacknowledged() == 0, 30, "the broker took the ack")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        self.start_daemon("second")
        self.wait_for(lambda: self.status(sent["id"]) == "SUCCESS", 60, "the task completed")
        # Any daemon on the store may publish the orphan again: in the full
        # suite the daemons other test modules share (on the same store)
        # often do it before the second one, and log it themselves.
        self.assertEqual(self.runs.read_text().count("ran"), 2)
