"""
Every example of the celery 0.2.0 README, with ``celery`` spelled
``twistedq``, against a real daemon and RabbitMQ; TaskSet progress and
``dmap``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue


class SeedAPITests(SynchronousTestCase):
    """
    A daemon running ``tests.integration.seed_tasks`` (the README's task
    module, autodiscovery included), and the README's client code in a
    process of its own.
    """

    def setUp(self) -> None:
        self.queue = unique_queue()
        self.backend = redis_url()
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-seed-"))
        self.daemon = Daemon(
            self.directory,
            queue=self.queue,
            result_backend=self.backend,
            tasks="tests.integration.seed_tasks",
        )
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def run_script(self, *args: str, seed_states: bool = True) -> Any:
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            TWISTEDQ_BROKER_URL=amqp_url(),
            TWISTEDQ_RESULT_BACKEND=self.backend,
            TWISTEDQ_QUEUE=self.queue,
            TWISTEDQ_SEED_STATES="1" if seed_states else "0",
        )
        completed = subprocess.run(
            [sys.executable, "-m", "tests.integration.seed_script", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"script failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def test_readme_examples(self) -> None:
        """
        ``delay_task`` returns at once with ``ready()`` False; ``get()``
        waits and returns 42; ``status()`` is the seed's ``'DONE'``; the
        task's ``setup_logger(**kwargs)`` line reaches the daemon's log in
        the seed's format; a raising task has status FAILURE and
        ``result`` holds the exception; the README's PeriodicTask class and
        a task found by ``tasks.autodiscover()`` run.
        """
        report = self.run_script("readme")
        self.assertFalse(report["ready_at_once"])
        self.assertTrue(report["queued_at_once"])
        self.assertEqual(report["get"], 42)
        self.assertEqual(report["status_call"], "DONE")
        self.assertEqual(report["status"], "DONE")
        self.assertTrue(report["is_done"])
        self.assertEqual(report["raised"], "ZeroDivisionError")
        self.assertEqual(report["failing_status"], "FAILURE")
        self.assertEqual(report["failing_result"], "ZeroDivisionError('division by zero')")
        self.assertEqual(report["periodic"], "ran")
        self.assertEqual(report["discovered"], "/home")
        self.assertFalse(report["unknown_known"])
        self.assertTrue(report["registry_is_local"])
        log = self.daemon.log()
        self.assertRegex(
            log,
            r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: INFO/Process-\d\] Did something: foo bar baz",
        )
        self.assertRegex(log, r"INFO/Process-\d\] Running periodic task!")
        self.assertRegex(log, r"INFO/Process-\d\] Incremented click count for /home")
        self.assertRegex(log, r"\[[\d :,-]+: INFO/MainProcess\] Consuming ")

    def test_taskset_progress(self) -> None:
        """
        A TaskSet of 500 subtasks reports a monotonically increasing
        ``completed_count()`` while it runs, up to 500; its progress URL
        answers the documented JSON; ``join()`` returns the values in order.
        """
        report = self.run_script("taskset", str(self.daemon.status_port))
        counts = report["counts"]
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(counts[-1], 500)
        self.assertGreater(len(set(counts)), 3, counts)
        self.assertEqual(report["total"], 500)
        self.assertTrue(report["ready"])
        self.assertTrue(report["successful"])
        self.assertFalse(report["failed"])
        self.assertEqual(report["join"], [0.002, 0.002, 0.002])
        self.assertEqual(
            report["final"],
            {
                "taskset": {
                    "id": report["taskset_id"],
                    "total": 500,
                    "completed": 500,
                    "failed": 0,
                    "ready": True,
                }
            },
        )
        for body in report["bodies"]:
            self.assertEqual(set(body["taskset"]), {"id", "total", "completed", "failed", "ready"})
            self.assertFalse(body["taskset"]["ready"])

    def test_dmap(self) -> None:
        """
        ``dmap`` over 1,000 items returns their results in order; a failing
        item raises its exception; ``dmap`` inside a task fails at once with
        WaitInTaskError instead of hanging the pool.
        """
        report = self.run_script("dmap")
        self.assertEqual(report["squares"], [i * i for i in range(1000)])
        self.assertEqual(report["raised"], "item 7 is bad")
        self.assertEqual(report["nested"][0], "WaitInTaskError")
        self.assertIn("dmap()", report["nested"][1])
        self.assertLess(report["nested_seconds"], 5)
