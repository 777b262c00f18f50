"""
Workflow faults an outside tester found, on real servers (RabbitMQ, Redis)
and real ``twistd twistedq`` daemons:

- a publish the broker refuses at the channel level (a queue in its
  reserved ``amq.`` prefix: 403; a queue that exists with other arguments:
  406) fails for good, and the publisher's next publish succeeds on a new
  channel (every later publish failed: the channel stayed closed);
- a chain step to such a queue gets its FAILURE stored and the daemon
  goes on publishing other follow-ups;
- a chord or TaskSet member revoked while queued completes the count as
  failed: the chord's callback gets ChordError, the TaskSet's join()
  raises TaskRevokedError (both waited for ever).
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
from unittest import mock
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue
from tests.integration.test_amqp_adapter import rabbitmqctl
from tests.integration.test_canvas import lines
from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerConnection,
    ChannelRefused,
    Publisher,
    QueueMismatch,
    Topology,
)
from twistedq.message import MessageError, TaskMessage, new_task_id

TASKS = "tests.integration.canvas_tasks"


def start_script(queue: str, request: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.canvas_faults_script",
            amqp_url(),
            redis_url(),
            queue,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(request))
    process.stdin.close()
    return process


def read_line(process: subprocess.Popen[str]) -> Any:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        assert process.stderr is not None
        raise AssertionError(f"script failed: {process.stderr.read()}")
    return json.loads(line)


class PublisherChannelTests(TestCase):
    """
    The daemon's publisher against a real RabbitMQ after the broker closed
    its channel.
    """

    timeout = 60

    async def _start(self, topology: Topology) -> Publisher:
        connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        publisher = Publisher(connection, topology, confirm_timeout=20)
        connection.startService()
        self.addCleanup(connection.stopService)
        await connection.when_connected(fail_after=3)
        return publisher

    async def test_reserved_prefix(self) -> None:
        """
        A publish to ``amq.typo`` is refused before anything is sent; the
        broker's own refusal of it (403, asked for here without the
        client's check) is ChannelRefused; a good publish then succeeds.
        """
        queue = unique_queue()
        publisher = await self._start(Topology(exchange=f"{queue}-x", queue=queue))
        message = TaskMessage(id=new_task_id(), task="add")
        with self.assertRaises(MessageError):
            await publisher.publish(message, "amq.typo")
        with self.assertRaises(ChannelRefused) as caught:
            await publisher._channel_for("amq.typo")
        self.assertEqual(caught.exception.code, 403)
        self.assertIn("ACCESS_REFUSED", str(caught.exception))
        await publisher.publish(message)
        await publisher.publish(TaskMessage(id=new_task_id(), task="add"), f"{queue}-other")

    async def test_other_arguments(self) -> None:
        """
        A publish to a queue that exists with other arguments (a quorum
        queue, declared classic here) fails with QueueMismatch (406, the
        broker closed the channel); the next publishes succeed.
        """
        queue = unique_queue()
        quorum = await self._start(
            Topology(exchange=f"{queue}-x", queue=f"{queue}-q", queue_type="quorum")
        )
        await quorum.publish(TaskMessage(id=new_task_id(), task="add"))
        classic = await self._start(
            Topology(exchange=f"{queue}-x", queue=queue, queue_type="classic")
        )
        for _ in range(2):
            with self.assertRaises(QueueMismatch):
                await classic.publish(TaskMessage(id=new_task_id(), task="add"), f"{queue}-q")
            await classic.publish(TaskMessage(id=new_task_id(), task="add"))


#: A broker user that may declare only the tests' queues and twistedq's
#: exchanges, as an operator may limit a daemon's user.
LIMITED_USER = ("twistedq-limited", "limited-password")


def limited_daemon(directory: Path, queue: str) -> Daemon:
    """
    A daemon of ``queue`` that connects as :py:data:`LIMITED_USER`
    (created on the broker ``scripts/services`` started; the test is
    skipped when that broker is someone else's).
    """
    user, password = LIMITED_USER
    # It may exist from an earlier run: added if not, its password set.
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "services"), "rabbitmqctl", "add_user", user, password],
        capture_output=True,
        timeout=60,
    )
    rabbitmqctl("change_password", user, password)
    rabbitmqctl("set_permissions", "-p", "/", user, "^(test-|twistedq).*", ".*", ".*")
    url = urlsplit(amqp_url())
    limited = url._replace(netloc=f"{user}:{password}@{url.hostname}:{url.port}").geturl()
    with mock.patch.dict(os.environ, {"TWISTEDQ_TEST_AMQP_URL": limited}):
        daemon = Daemon(directory, queue=queue, result_backend=redis_url(), tasks=TASKS)
    daemon.wait_ready()
    return daemon


class BadQueueFollowUpTests(SynchronousTestCase):
    def test_step_to_a_refused_queue(self) -> None:
        """
        A chain step to ``amq.typo`` is refused by the client before
        anything is published; a step to a queue the daemon's user may
        not declare (403 ACCESS_REFUSED, the channel closed) gets a
        FAILURE stored; chains published after it run to the end.
        """
        directory = Path(tempfile.mkdtemp(prefix="twistedq-refused-"))
        queue = unique_queue()
        daemon = limited_daemon(directory, queue)
        self.addCleanup(daemon.stop)
        request = {"mode": "bad_queues", "forbidden": f"forbidden-{queue}", "timeout": 60}
        process = start_script(queue, request)
        try:
            report = read_line(process)
        finally:
            process.wait(60)
        self.assertEqual(report["refused"]["raised"], "MessageError")
        self.assertIn("reserves the prefix 'amq.'", report["refused"]["text"])
        self.assertEqual(report["forbidden"]["raised"], "RemoteTaskError", report)
        self.assertIn("ChannelRefused", report["forbidden"]["text"])
        self.assertIn("ACCESS_REFUSED", report["forbidden"]["text"])
        self.assertEqual((report["first"], report["good"]), (2, 16))
        self.assertIn("Opening a new publishing channel", daemon.log())


class RevokedMemberTests(SynchronousTestCase):
    def test_revoked_members(self) -> None:
        """
        Chord and TaskSet members revoked while queued (no daemon ran):
        once a daemon runs, the chord's callback raises ChordError (its
        errback ran, the callback did not) and the TaskSet's join()
        raises TaskRevokedError.
        """
        directory = Path(tempfile.mkdtemp(prefix="twistedq-revoked-"))
        queue = unique_queue()
        callback, errback = directory / "callback.txt", directory / "errback.txt"
        request = {
            "mode": "revoked",
            "callback": str(callback),
            "errback": str(errback),
            "timeout": 60,
        }
        process = start_script(queue, request)
        daemon = None
        try:
            published = read_line(process)
            self.assertEqual(published["revoked"], [True, True])
            daemon = Daemon(directory, queue=queue, result_backend=redis_url(), tasks=TASKS)
            report = read_line(process)
        finally:
            process.wait(60)
            if daemon is not None:
                daemon.stop()
        self.assertEqual(report["callback"]["raised"], "ChordError")
        self.assertIn("is REVOKED", report["callback"]["text"])
        self.assertEqual(report["statuses"], ["SUCCESS", "REVOKED", "SUCCESS"])
        self.assertEqual(report["taskset"]["raised"], "TaskRevokedError")
        deadline = time.monotonic() + 30
        while not lines(errback) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(lines(errback), [published["callback"]])
        self.assertEqual(lines(callback), [])
