"""
The whole path on Tokyo Tyrant: two daemons with default options share a
queue and a ttserver (``tyrant://``); a client in its own process runs 200
tasks, a failure and a taskset; the status URLs answer; a one-second
periodic task runs once per slot across the two daemons; neither daemon
logs an unhandled error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, server_url, unique_queue
from twistedq.scheduler import slot_task_id

#: Seconds the periodic task runs, at least.
DURATION = 10.0
#: What a daemon logs for an error nothing handled.
UNHANDLED = re.compile(r"Unhandled|Traceback \(most recent call last\)")


def get_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class TyrantEndToEndTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.backend = server_url("TWISTEDQ_TEST_TYRANT_URL")
        amqp_url()
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-tyrant-"))
        self.beats = self.directory / "beats"
        self.name = f"tests.beat.{unique_queue()}"
        self.queue = unique_queue()
        self.daemons: list[Daemon] = []
        self.addCleanup(self.stop_all)

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def start(self, number: int) -> Daemon:
        directory = self.directory / f"daemon-{number}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            self.queue,
            self.backend,
            tasks="tests.integration.tyrant_tasks",
            env={
                "TWISTEDQ_TEST_BEAT_FILE": str(self.beats),
                "TWISTEDQ_TEST_BEAT_NAME": self.name,
            },
        )
        self.daemons.append(daemon)
        return daemon

    def run_client(self) -> dict[str, Any]:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.integration.tyrant_client_script",
                amqp_url(),
                self.backend,
                self.queue,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def test_tasks_taskset_status_and_periodic(self) -> None:
        """
        200 tasks come back right; a task's exception is raised again by
        ``get()``; a taskset's progress counts up to its total; the status
        URLs answer for a task, a failure and the taskset; each slot of the
        periodic task runs once, by one of the two daemons; the daemons
        stop cleanly and their logs hold no unhandled error.
        """
        first, second = self.start(0), self.start(1)
        first.wait_ready()
        second.wait_ready()
        start = time.time()

        report = self.run_client()
        self.assertEqual(report["values"], [2 * i for i in range(200)])
        self.assertEqual(report["statuses"], ["SUCCESS"])
        self.assertEqual(report["raised"], ["TaskFailed", "boom"])
        self.assertEqual(report["failed_status"], "FAILURE")
        self.assertEqual(report["joined"], [i + 1 for i in range(20)])
        self.assertLessEqual(report["progress"][0], 20)
        self.assertEqual(report["progress"][1], 20)
        self.assertTrue(report["ready"])
        self.assertFalse(report["taskset_failed"])

        port = second.status_port
        done = report["done_id"]
        self.assertEqual(
            get_json(port, f"/celery/{done}/status/"),
            (200, {"task": {"id": done, "status": "SUCCESS", "result": 398}}),
        )
        code, body = get_json(port, f"/celery/{report['failed_id']}/status/")
        self.assertEqual(
            (code, body["task"]["status"], body["task"]["exc"]), (200, "FAILURE", "TaskFailed")
        )
        code, body = get_json(port, f"/celery/taskset/{report['taskset_id']}/status/")
        self.assertEqual(code, 200)
        self.assertEqual(
            body["taskset"],
            {"id": report["taskset_id"], "total": 20, "completed": 20, "failed": 0, "ready": True},
        )

        time.sleep(max(0.0, start + DURATION - time.time()))
        end = time.time()
        time.sleep(3)  # let the last slots run
        for daemon in self.daemons:
            self.assertIn(daemon.stop(), (0, -signal.SIGTERM), daemon.log()[-3000:])
            self.assertIsNone(UNHANDLED.search(daemon.log()), daemon.log()[-5000:])

        runs = [line.split() for line in self.beats.read_text().splitlines()]
        counts = Counter(task_id for task_id, _ in runs)
        expected = {
            slot_task_id(self.name, float(slot)): slot
            for slot in range(int(start) + 1, int(end) + 1)
        }
        missing = sorted(slot for task_id, slot in expected.items() if task_id not in counts)
        self.assertEqual(missing, [], f"slots that never ran ({len(expected)} expected)")
        self.assertEqual([task_id for task_id, count in counts.items() if count > 1], [])
        runners = {pid for _, pid in runs}
        print(f"\n{len(expected)} slots, {len(runs)} runs, by {len(runners)} daemon(s)")
