"""
Revocation is durable: a REVOKED outcome in the result store that a daemon
reads before running a task, even a daemon that was down when the task was
revoked, and again when a held ETA comes due.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, redis_url, unique_queue
from tests.integration.test_end_to_end import run_client


class RevokeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-revoke-"))
        self.queue = unique_queue()
        self.backend = redis_url()

    def start_daemon(self) -> Daemon:
        daemon = Daemon(self.directory, queue=self.queue, result_backend=self.backend)
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    def status(self, task_id: str) -> str:
        report = run_client(self.queue, self.backend, mode="statuses", ids=[task_id])
        return report["statuses"][0]

    def test_revoked_while_no_daemon_ran(self) -> None:
        """
        A task revoked while no daemon consumed its queue is acked without
        running by the daemon started later.  Revoking it again returns
        False: it is final already.
        """
        revoked = run_client(self.queue, self.backend, mode="revoke")
        self.assertEqual((revoked["revoked"], revoked["again"]), (True, False))
        daemon = self.start_daemon()
        after = run_client(self.queue, self.backend, mode="one", task="add", args=[1, 1])
        self.assertEqual(after["value"], 2)
        time.sleep(0.5)
        self.assertEqual(self.status(revoked["id"]), "REVOKED")
        self.assertIn("is already done: acked without running", daemon.log())

    def test_running_task_not_revoked(self) -> None:
        """
        A task a daemon has claimed and runs is not revoked (the revocation
        claims the task first): revoke() says so and the task succeeds.
        """
        self.start_daemon()
        report = run_client(self.queue, self.backend, mode="revoke_running")
        self.assertEqual((report["revoked"], report["value"]), (False, 2))

    def test_revoked_while_waiting_for_eta(self) -> None:
        """
        A countdown task held by a running daemon and revoked meanwhile does
        not run when its time comes.
        """
        daemon = self.start_daemon()
        revoked = run_client(self.queue, self.backend, mode="revoke", countdown=2)
        self.assertTrue(revoked["revoked"])
        time.sleep(3)
        after = run_client(self.queue, self.backend, mode="one", task="add", args=[2, 2])
        self.assertEqual(after["value"], 4)
        self.assertEqual(self.status(revoked["id"]), "REVOKED")
        self.assertIn("is already done: acked without running", daemon.log())
