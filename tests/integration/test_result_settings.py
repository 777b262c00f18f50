"""
The result settings on a real daemon and Redis: a task published with
``ignore_result`` writes nothing to the store (its keys counted before and
after), ``--result-expires`` and ``TWISTEDQ_RESULT_EXPIRES`` set the
expiry of what the daemon and the client write, and
``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` keeps the arguments in the result.
One daemon serves every test of the module.
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
from urllib.parse import urlsplit, urlunsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

#: Seconds the daemon keeps what it writes; the client keeps its own for
#: CLIENT_EXPIRES.
DAEMON_EXPIRES = 120
CLIENT_EXPIRES = 900
#: A Redis database of this module's own, whose keys are counted.
DATABASE = 11
PREFIX = b"twistedq:result:"

_daemon: Daemon | None = None


def store_url() -> str:
    parts = urlsplit(redis_url())
    return urlunsplit(parts._replace(path=f"/{DATABASE}"))


def shared_daemon(queue: str) -> Daemon:
    """
    The module's daemon, started on first use and stopped at exit.
    """
    global _daemon
    if _daemon is None:
        import atexit

        _daemon = Daemon(
            Path(tempfile.mkdtemp(prefix="twistedq-results-")),
            queue=queue,
            result_backend=store_url(),
            extra=("--result-expires", str(DAEMON_EXPIRES), "--no-scheduler"),
            env={"TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS": "100"},
        )
        atexit.register(_daemon.stop)
        _daemon.wait_ready()
    return _daemon


class ResultSettingsTests(SynchronousTestCase):
    queue = unique_queue()

    def setUp(self) -> None:
        import redis

        self.daemon = shared_daemon(self.queue)
        parts = urlsplit(redis_url())
        self.redis = redis.Redis(host=parts.hostname, port=parts.port, db=DATABASE)
        self.addCleanup(self.redis.close)

    def publish(self, **request: Any) -> Any:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TWISTEDQ_RESULT_EXPIRES=str(CLIENT_EXPIRES))
        command = [sys.executable, "-m", "tests.integration.result_settings_script"]
        completed = subprocess.run(
            [*command, amqp_url(), store_url(), self.queue],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def completed(self) -> int:
        return int(self.daemon.stats()["dispatcher"]["completed"])

    def wait_completed(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.completed() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} tasks not completed:\n{self.daemon.log()}")
            time.sleep(0.1)

    def keys(self) -> set[bytes]:
        return set(self.redis.scan_iter(count=1000))

    def test_ignore_result_writes_nothing(self) -> None:
        """
        Fifty tasks published with ``ignore_result`` run and leave the
        store's keys as they were: no pending record, no claim, no
        outcome; ``get()`` says the result is ignored.  One published
        without it then adds its outcome's key.
        """
        before, done = self.keys(), self.completed()
        report = self.publish(mode="ignored", count=50)
        self.assertEqual(report["get"][0], "ResultIgnored")
        self.wait_completed(done + 50)
        self.assertEqual(self.keys(), before)
        stored = self.publish(mode="stored")
        self.assertEqual(stored["value"], 5)
        self.assertIn(PREFIX + stored["id"].encode(), self.keys() - before)

    def test_expiry_of_daemon_and_client(self) -> None:
        """
        The daemon writes outcomes for ``--result-expires`` seconds; the
        client writes pending records and tasksets for its
        ``TWISTEDQ_RESULT_EXPIRES``.
        """
        stored = self.publish(mode="stored")
        self.assertTrue(0 < self.redis.ttl(PREFIX + stored["id"].encode()) <= DAEMON_EXPIRES)
        later = self.publish(mode="later")
        pending = self.redis.ttl(PREFIX + later["id"].encode())
        taskset = self.redis.ttl(PREFIX + b"taskset:" + later["taskset"].encode())
        for ttl in (pending, taskset):
            self.assertTrue(DAEMON_EXPIRES < ttl <= CLIENT_EXPIRES, (pending, taskset))

    def test_arguments_in_results(self) -> None:
        """
        With ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` the outcome keeps the
        task's arguments.
        """
        stored = self.publish(mode="stored")
        document = json.loads(self.redis.get(PREFIX + stored["id"].encode()))
        self.assertEqual((document["task_args"], document["task_kwargs"]), ([2], {"y": 3}))
