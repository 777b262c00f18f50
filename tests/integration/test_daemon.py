"""
What the daemon does with bad input, a killed child, a SIGTERM, the
embedded SQLite store, bad options and a dead broker.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.servers import Daemon, amqp_url, free_port, redis_url, unique_queue
from twistedq.amqp.broker import BrokerUnavailable
from twistedq.client import AsyncClient
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome


async def wait_outcome(client: AsyncClient, task_id: str, timeout: float = 30) -> Outcome:
    """
    Poll the result store until the task's outcome is there.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (outcome,) = await client.get_outcomes([task_id])
        if outcome.ready:
            return outcome
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"task {task_id} not done within {timeout} s")


class DaemonTestCase(TestCase):
    """
    A daemon on a queue of its own, and an in-process client.
    """

    timeout = 120
    result_backend: str | None = None

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-daemon-"))
        self.queue = unique_queue()
        backend = self.result_backend or redis_url()
        self.daemon = Daemon(self.directory, queue=self.queue, result_backend=backend)
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()
        self.client = AsyncClient(
            Settings(broker_url=amqp_url(), result_backend=backend, queue=self.queue), reactor
        )
        self.addCleanup(self.client.close)

    def publish(self, task: str, *args: Any) -> defer.Deferred[str]:
        message = TaskMessage(id=new_task_id(), task=task, args=args)
        return self.client.publish(message).addCallback(lambda _: message.id)

    async def publish_raw(self, body: bytes) -> None:
        await self.client.connection.when_connected()
        channel = self.client.publisher._channel
        assert channel is not None
        topology = self.client.publisher.topology
        await channel.publish(topology.exchange, topology.routing_key, body, {})

    async def queue_depth(self, queue: str) -> int:
        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        declared = await channel.queue_declare(queue=queue, passive=True)
        await channel.channel_close()
        return declared.message_count


class BadInputTests(DaemonTestCase):
    async def test_malformed_messages_dead_lettered(self) -> None:
        """
        Bodies that are not JSON, or JSON that is not a task message, go to
        the dead-letter queue unchanged with one log line each, and the
        daemon runs the next valid task.  (Their reason headers are tested
        in ``test_dead_letters``.)
        """
        garbage = [b"\xff\xfe not json", b'{"v": 1, "task": "add"}', b"[1, 2, 3]"]
        for body in garbage:
            await self.publish_raw(body)
        task_id = await self.publish("add", 1, 2)
        outcome = await wait_outcome(self.client, task_id)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", 3))

        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        dead = []
        for _ in range(100):
            got = await channel.basic_get(queue=f"{self.queue}.dead", no_ack=True)
            if got.method.name == "get-ok":
                dead.append(got.content.body)
                if len(dead) == len(garbage):
                    break
            else:
                await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(sorted(dead), sorted(garbage))
        log = self.daemon.log()
        self.assertEqual(log.count("Dead-lettered a message ("), 3, log[-3000:])
        self.assertIn("body is not UTF-8 text", log)

    async def test_killed_child_task_runs_again(self) -> None:
        """
        A child killed (SIGKILL) while running a task is replaced; its
        unacknowledged task goes back to the queue and completes on a
        fresh child.
        """
        marker = str(self.directory / "died-once")
        task_id = await self.publish("die_once", marker)
        outcome = await wait_outcome(self.client, task_id)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", "survived"))
        self.assertTrue(Path(marker).exists())
        log = self.daemon.log()
        self.assertIn("ended unexpectedly", log)
        for _ in range(200):
            if "Started Process-3" in self.daemon.log():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIn("Started Process-3", self.daemon.log())

    async def test_sigterm_drains_without_loss(self) -> None:
        """
        SIGTERM while tasks run: the daemon stops consuming, stores and acks
        what it ran, returns the rest to the queue and exits (twistd
        re-raises the signal once shut down); every task is either stored
        as SUCCESS or still queued.
        """
        ids = [await self.publish("sleep", 0.05) for _ in range(40)]
        await wait_outcome(self.client, ids[0])
        self.daemon.process.terminate()
        for _ in range(600):
            if self.daemon.process.poll() is not None:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIn(self.daemon.process.returncode, (0, -15))
        log = self.daemon.log()
        self.assertIn("Drained", log)
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log)
        outcomes = await self.client.get_outcomes(ids)
        stored = [o for o in outcomes if o.ready]
        self.assertTrue(all(o.status == "SUCCESS" for o in stored))
        queued = await self.queue_depth(self.queue)
        self.assertEqual(len(stored) + queued, 40, (len(stored), queued))
        self.assertGreater(queued, 0)


class StoreBehaviour:
    """
    What the daemon and client do through whichever result store the test
    case uses: taskset counters, pending records, forgetting, expiry, ETA.
    """

    client: AsyncClient
    publish: Any

    async def test_taskset_counts_each_task_once(self: Any) -> None:
        """
        The store counts a taskset's finished and failed subtasks, each
        once even when its message is delivered twice.
        """
        taskset = new_task_id()
        await self.client.create_taskset(taskset, 4)
        messages = [
            TaskMessage(id=new_task_id(), task="add", args=(i, i), taskset=taskset)
            for i in range(3)
        ]
        messages.append(
            TaskMessage(id=new_task_id(), task="fail_builtin", args=("x",), taskset=taskset)
        )
        await self.client.publish_many(messages)
        await self.client.publish(messages[0])
        for message in messages:
            await wait_outcome(self.client, message.id)
        await deferLater(reactor, 0.3, lambda: None)
        state = await self.client.get_taskset(taskset)
        self.assertEqual((state.total, state.completed, state.failed), (4, 4, 1))
        self.assertTrue(state.ready)
        self.assertIsNone(await self.client.get_taskset(new_task_id()))

    async def test_pending_record_and_forget(self: Any) -> None:
        """
        A published task is known to the store at once (a pending record
        that never overwrites its outcome); an id never published is not;
        a forgotten outcome is gone.
        """
        task_id = await self.publish("add", 1, 1)
        (outcome,) = await self.client.get_outcomes([task_id])
        self.assertTrue(outcome.known)
        done = await wait_outcome(self.client, task_id)
        self.assertEqual(done.result, 2)
        await self.client.backend.mark_sent([(task_id, b'{"status": "PENDING"}')])
        (again,) = await self.client.get_outcomes([task_id])
        self.assertEqual(again.status, "SUCCESS")
        (unknown,) = await self.client.get_outcomes([new_task_id()])
        self.assertFalse(unknown.known)
        await self.client.forget([task_id])
        (forgotten,) = await self.client.get_outcomes([task_id])
        self.assertFalse(forgotten.known)

    async def test_committed_task_not_run_again(self: Any) -> None:
        """
        A task published again with the same id after its outcome was
        committed (as after PublishUncertain) is acked without running.
        """
        marker = tempfile.mktemp()
        message = TaskMessage(id=new_task_id(), task="count_run", args=(marker,))
        await self.client.publish(message)
        await wait_outcome(self.client, message.id)
        await self.client.publish(message)
        for _ in range(100):
            if "acked without running" in self.daemon.log():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIn("acked without running", self.daemon.log())
        with open(marker) as runs:
            self.assertEqual(runs.read().count("ran"), 1)

    async def test_expired_and_eta(self: Any) -> None:
        """
        A task past its expiry is recorded REVOKED without running; a task
        with an ETA one second ahead does not run before it.
        """
        now = time.time()
        expired = TaskMessage(
            id=new_task_id(),
            task="add",
            args=(1, 2),
            expires=_iso(now - 10),
        )
        later = TaskMessage(id=new_task_id(), task="add", args=(2, 2), eta=_iso(now + 1.0))
        await self.client.publish_many([expired, later])
        revoked = await wait_outcome(self.client, expired.id)
        self.assertEqual(revoked.status, "REVOKED")
        self.assertIn("expired", revoked.reason)
        (early,) = await self.client.get_outcomes([later.id])
        self.assertFalse(early.ready)
        done = await wait_outcome(self.client, later.id)
        self.assertEqual(done.result, 4)
        self.assertGreaterEqual(time.time(), now + 1.0)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


class RedisStoreTests(StoreBehaviour, DaemonTestCase):
    """
    Store behaviour with Redis.
    """


class SQLiteTests(StoreBehaviour, DaemonTestCase):
    """
    The embedded default store: an SQLite file, no result server.
    """

    def setUp(self) -> None:
        self.result_backend = f"sqlite:///{tempfile.mkdtemp()}/results.sqlite3"
        super().setUp()

    async def test_results_in_sqlite(self) -> None:
        """
        Results and failures are stored in and read from the SQLite file.
        """
        ok = await self.publish("add", 40, 2)
        bad = await self.publish("fail_builtin", "nope")
        self.assertEqual((await wait_outcome(self.client, ok)).result, 42)
        failure = await wait_outcome(self.client, bad)
        self.assertEqual(failure.status, "FAILURE")
        self.assertEqual(failure.exc["type"], "ValueError")
        self.assertIsInstance(failure.exception(), ValueError)


class OptionTests(SynchronousTestCase):
    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        twistd = str(Path(sys.executable).parent / "twistd")
        return subprocess.run(
            [twistd, "-n", "--pidfile=", "twistedq", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_bad_broker_url(self) -> None:
        """
        A broker URL that is not amqp:// stops twistd with a one-line usage
        error, not a traceback.
        """
        completed = self.twistd("--broker", "http://example.invalid/")
        self.assertNotEqual(completed.returncode, 0)
        output = completed.stdout + completed.stderr
        self.assertIn("broker URL must start with amqp://", output)
        self.assertNotIn("Traceback", output)

    def test_bad_concurrency_and_backend(self) -> None:
        """
        A concurrency below one and an unknown result store are usage
        errors.
        """
        for args, expected in [
            (("--concurrency", "0"), "concurrency"),
            (("--result-backend", "mongodb://x"), "unknown result backend"),
        ]:
            completed = self.twistd(*args)
            output = completed.stdout + completed.stderr
            self.assertNotEqual(completed.returncode, 0)
            self.assertIn(expected, output)
            self.assertNotIn("Traceback", output)

    def test_bad_django_settings(self) -> None:
        """
        A Django settings module that cannot be imported is a one-line
        usage error.
        """
        completed = self.twistd("--django-settings", "no.such.settings")
        output = completed.stdout + completed.stderr
        self.assertNotEqual(completed.returncode, 0)
        self.assertIn("cannot read the Django settings", output)
        self.assertNotIn("Traceback", output)


class DeadBrokerTests(TestCase):
    async def test_publish_to_dead_broker(self) -> None:
        """
        Publishing when no broker listens fails within the timeout with
        BrokerUnavailable naming the address, instead of hanging.
        """
        settings = Settings(
            broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
            result_backend="sqlite://",
        )
        client = AsyncClient(settings, reactor, confirm_timeout=1.0)
        self.addCleanup(client.close)
        started = time.monotonic()
        with self.assertRaises(BrokerUnavailable) as caught:
            await client.publish(TaskMessage(id=new_task_id(), task="add"))
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("127.0.0.1", str(caught.exception))
