"""
One task's whole path through a real daemon: the blocking client publishes
to RabbitMQ, ``twistd twistedq`` runs it in a child and stores the outcome
in Redis, and the client and the status resource read it back.
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


def run_client(queue: str, backend: str, timeout: float = 120, **request: Any) -> Any:
    """
    Run the blocking client in its own process; return what it printed.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.client_script", amqp_url(), backend, queue],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def get_json(port: int, path: str) -> tuple[int, str, Any]:
    """
    GET a path of the status resource: status code, content type, JSON.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


class EndToEndTests(SynchronousTestCase):
    """
    Each test runs a daemon with two children and Redis results.
    """

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-e2e-"))
        self.queue = unique_queue()
        self.backend = redis_url()
        self.daemon = Daemon(self.directory, queue=self.queue, result_backend=self.backend)
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def test_thousand_tasks_from_blocking_client(self) -> None:
        """
        1,000 tasks published one by one from the blocking client all come
        back with the right values and status SUCCESS.
        """
        report = run_client(self.queue, self.backend, mode="add", count=1000)
        self.assertEqual(report["values"], [2 * i for i in range(1000)])
        self.assertEqual(report["statuses"], ["SUCCESS"])
        self.assertEqual(len(set(report["ids"])), 1000)
        for task_id in report["ids"][:5]:
            self.assertEqual(str(uuid.UUID(task_id, version=4)), task_id)

    def test_failure_raised_by_get(self) -> None:
        """
        A task's exception comes back through ``get()`` as the same class
        with the same message; ``status`` is FAILURE, ``result`` is the
        exception and ``traceback`` the child's traceback.  A task name no
        child knows fails with NotRegistered.
        """
        report = run_client(self.queue, self.backend, mode="fail")
        self.assertEqual(report["raised"], ["TaskFailed", "boom"])
        self.assertEqual(report["status"], "FAILURE")
        self.assertEqual(report["result_type"], "TaskFailed")
        self.assertIn("raise TaskFailed(message)", report["traceback"])
        self.assertTrue(report["ready"])
        self.assertFalse(report["successful"])
        self.assertEqual(report["builtin"], ["ValueError", "bad value"])
        self.assertEqual(report["unknown"][0], "NotRegistered")
        self.assertIn("no-such-task", report["unknown"][1])

    def test_status_json(self) -> None:
        """
        ``GET /celery/<id>/status/`` answers JSON of the documented shape
        for a pending, a successful and a failed task, and 404 for an id
        that is not a UUID.
        """
        port = self.daemon.status_port
        pending = str(uuid.uuid4())
        code, kind, body = get_json(port, f"/celery/{pending}/status/")
        self.assertEqual((code, kind), (200, "application/json"))
        self.assertEqual(body, {"task": {"id": pending, "status": "PENDING", "result": None}})

        done = run_client(self.queue, self.backend, mode="one", task="add", args=[20, 22])
        code, kind, body = get_json(port, f"/celery/{done['id']}/status/")
        self.assertEqual(code, 200)
        self.assertEqual(body, {"task": {"id": done["id"], "status": "SUCCESS", "result": 42}})

        failed = run_client(self.queue, self.backend, mode="fail")
        code, kind, body = get_json(port, f"/celery/{failed['id']}/status/")
        self.assertEqual(code, 200)
        # The public URL leaves the traceback out (--status-tracebacks shows it).
        self.assertEqual(set(body["task"]), {"id", "status", "result", "exc"})
        self.assertEqual(body["task"]["status"], "FAILURE")
        self.assertEqual(body["task"]["exc"], "TaskFailed")
        self.assertEqual(body["task"]["result"], "boom")

        code, _, _ = get_json(port, "/celery/not-a-uuid/status/")
        self.assertEqual(code, 404)

    def test_large_argument_and_result(self) -> None:
        """
        An argument and a result of 300 KB (several AMQP frames, several
        AMP values) arrive intact.
        """
        value = "é" + "x" * 300_000 + "ü"
        done = run_client(self.queue, self.backend, mode="one", task="echo", args=[value])
        self.assertEqual(done["value"], value)

    def test_child_output_is_logged(self) -> None:
        """
        What a task prints reaches the daemon's log in the seed's line
        format, tagged with the child's name, and does not disturb the AMP
        channel.
        """
        done = run_client(self.queue, self.backend, mode="one", task="shout", args=[])
        self.assertEqual(done["value"], "ok")
        lines = [line for line in self.daemon.log().splitlines() if "printed to stdout" in line]
        self.assertTrue(lines, self.daemon.log()[-2000:])
        self.assertRegex(
            lines[0], r"^\[\d{4}-\d\d-\d\d [\d:,]+: INFO/Process-\d+\] printed to stdout by a task$"
        )
