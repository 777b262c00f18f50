"""
The Server-Sent Events twin of the taskset status on a real daemon:
``GET /celery/taskset/<id>/status/stream`` follows a 20-task taskset to
100 % and ends; an unknown taskset answers 404.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

PUBLISH_TASKSET = """
import json, sys
from twistedq.client import Client
from twistedq.task import TaskSet
broker, backend, queue, count, seconds = sys.argv[1:6]
client = Client(broker_url=broker, result_backend=backend, queue=queue)
result = TaskSet("sleep", [((float(seconds),), {}) for _ in range(int(count))], client).run()
print(json.dumps({"taskset": result.taskset_id}))
client.close()
"""


def run_python(code: str, *args: str) -> Any:
    """
    Run ``code`` in a process of its own; return the JSON of its last line.
    """
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"script failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def read_events(response: Any) -> list[Any]:
    """
    Every ``data:`` document of an event stream, until it ends.
    """
    documents = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data: "):
            documents.append(json.loads(line[6:]))
    return documents


class TasksetProgressStreamTests(SynchronousTestCase):
    """
    One daemon with two children, results in Redis.
    """

    def setUp(self) -> None:
        self.backend = redis_url()
        self.queue = unique_queue()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-progress-"))
        self.daemon = Daemon(directory, queue=self.queue, result_backend=self.backend)
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def url(self, taskset: str) -> str:
        return f"http://127.0.0.1:{self.daemon.status_port}/celery/taskset/{taskset}/status/stream"

    def test_stream_to_one_hundred_percent(self) -> None:
        """
        The stream of a 20-task taskset sends its status as it changes,
        never going back, up to 20 completed of 20, and then ends.
        """
        published = run_python(PUBLISH_TASKSET, amqp_url(), self.backend, self.queue, "20", "0.2")
        with urllib.request.urlopen(self.url(published["taskset"]), timeout=60) as response:
            self.assertTrue(response.headers["Content-Type"].startswith("text/event-stream"))
            documents = read_events(response)
        progress = [d["taskset"]["completed"] for d in documents]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(len(set(progress)), len(progress))
        self.assertGreater(len(progress), 2)
        last = documents[-1]["taskset"]
        self.assertEqual(
            (last["id"], last["total"], last["completed"], last["failed"], last["ready"]),
            (published["taskset"], 20, 20, 0, True),
        )

    def test_unknown_taskset(self) -> None:
        """
        A taskset the store does not know answers 404, as the JSON URL does.
        """
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(self.url(str(uuid.uuid4())), timeout=10)
        self.assertEqual(raised.exception.code, 404)
        self.assertEqual(json.loads(raised.exception.read())["error"], "unknown taskset")
