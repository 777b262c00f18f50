"""
The blocking client from many threads and across ``os.fork()``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, redis_url, unique_queue
from tests.integration.test_end_to_end import run_client


class BlockingClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.queue = unique_queue()
        self.backend = redis_url()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-client-"))
        self.daemon = Daemon(directory, queue=self.queue, result_backend=self.backend)
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def test_twenty_threads(self) -> None:
        """
        One client shared by 20 threads, each publishing 25 tasks and
        waiting for them: every thread gets all its values, in order.
        """
        report = run_client(self.queue, self.backend, mode="threads", count=25)
        expected = {str(t): [t + i for i in range(25)] for t in range(20)}
        self.assertEqual(report["values"], expected)

    def test_fork(self) -> None:
        """
        A client first used after ``os.fork()`` works in the child (the
        gunicorn ``--preload`` case); the parent goes on using it; a child
        forked after the parent used it gets a clear ForkError.
        """
        report = run_client(self.queue, self.backend, mode="fork")
        self.assertEqual(report["fresh_child_exit"], 0)
        self.assertEqual(report["parent_after_fork"], 4)
        self.assertEqual(report["used_child_exit"], 0)
