"""
Waiting without polling: the time from a task's end to ``get()``
returning, with Redis's notification and with polling, at two poll
intervals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, amqp_url, redis_url


class LatencyTests(SynchronousTestCase):
    def test_notification_does_not_grow_with_poll_interval(self) -> None:
        """
        With notification (Redis), ``get()`` returns within a few
        milliseconds of the task's end whatever the poll interval; with
        polling every 200 ms it takes a good part of that interval on every
        store.  The figures of every store are printed.
        """
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            TWISTEDQ_TEST_AMQP_URL=amqp_url(),
            TWISTEDQ_TEST_REDIS_URL=redis_url(),
        )
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.latency",
                "--tasks",
                "4",
                "--stores",
                "redis,memcached,sqlite",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
        rows = json.loads(completed.stdout.strip().splitlines()[-1])
        for row in rows:
            print(f"latency {row}")
        figures = {
            (r["wakeup"], r["poll_max_ms"]): r["p50_ms"] for r in rows if r["store"] == "redis"
        }
        for row in rows:
            if row["wakeup"] == "polling" and row["poll_max_ms"] == 200.0:
                self.assertGreater(row["p50_ms"], 50, row)
        self.assertLess(figures[("notification", 20.0)], 20)
        self.assertLess(figures[("notification", 200.0)], 20)
        self.assertGreater(figures[("polling", 200.0)], 50)
        self.assertLess(figures[("notification", 200.0)], figures[("polling", 200.0)] / 3)
