"""
Queue types and priorities on a real RabbitMQ (3.10 here), one node:
quorum queues declared and refused with a clear error when they exist
otherwise, quorum delay queues (per-queue TTL) that bring a message back,
classic queues with priorities that deliver the highest first.  The
cluster itself is in :py:mod:`tests.integration.test_cluster`.
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

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, free_port, redis_url, unique_queue
from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerConnection,
    Publisher,
    QueueMismatch,
    Topology,
)
from twistedq.amqp.protocol import BrokerProtocol
from twistedq.message import TaskMessage, new_task_id


class QueueTypeTests(TestCase):
    timeout = 60

    async def _connect(self) -> None:
        self.connection = BrokerConnection(BrokerAddress.from_url(amqp_url()), reactor)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)
        self.protocol: BrokerProtocol = await self.connection.when_connected(fail_after=3)
        self.queue = unique_queue()
        self.addCleanup(self._delete)

    def setUp(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._connect())

    async def _delete(self) -> None:
        if self.protocol.closed:
            return
        channel = await self.protocol.open_channel()
        topology = Topology(exchange=self.queue, queue=self.queue)
        for name in (self.queue, topology.dead_letter_queue, topology.delay_queue(1)):
            await channel.queue_delete(queue=name)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(exchange=exchange)

    def topology(self, **arguments: Any) -> Topology:
        return Topology(exchange=self.queue, queue=self.queue, **arguments)

    async def declare(self, topology: Topology) -> None:
        channel = await self.protocol.open_channel()
        await topology.declare(channel)
        await channel.channel_close()

    async def test_quorum_declared_and_taken_as_it_is(self) -> None:
        """
        A quorum topology declares quorum queues (declaring it again is
        fine); a topology without a type takes them as they are, as the
        client and the tools do; a classic one is refused with an error
        that names the queue, the argument and the option.
        """
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))
        await self.declare(self.topology())
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(self.topology(queue_type="classic"))
        text = str(caught.exception)
        self.assertIn(f"queue {self.queue + '.dead'!r} exists", text)
        self.assertIn("x-queue-type (--queue-type)", text)
        self.assertIn("current is the value 'quorum'", text)
        self.assertFalse(self.protocol.closed)

    async def test_client_takes_what_exists(self) -> None:
        """
        A client takes the queues as they exist, whatever type it would
        declare; the quorum queues it declares itself are those a daemon
        with the default ``--task-attempts`` declares.
        """
        await self.declare(self.topology(queue_type="quorum", delivery_limit=5))
        await self.declare(self.topology(queue_type="classic", take_existing=True))
        await self._delete()
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3, take_existing=True))
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))

    async def test_other_delivery_limit_refused(self) -> None:
        """
        A daemon with another ``--task-attempts`` than the one that made
        the quorum queue is told which option differs.
        """
        await self.declare(self.topology(queue_type="quorum", delivery_limit=3))
        with self.assertRaises(QueueMismatch) as caught:
            await self.declare(self.topology(queue_type="quorum", delivery_limit=5))
        self.assertIn("x-delivery-limit (--task-attempts)", str(caught.exception))

    async def test_quorum_delay_queue(self) -> None:
        """
        RabbitMQ 3.10's quorum queues keep a queue's message TTL: a message
        published for a 1 s delay into a quorum delay queue comes back to
        the quorum task queue after about a second.
        """
        topology = self.topology(queue_type="quorum", delivery_limit=3)
        publisher = Publisher(self.connection, topology)
        await publisher._connected(self.protocol)
        message = TaskMessage(id=new_task_id(), task="t")
        started = time.monotonic()
        await publisher.publish_later(message, 1.5)
        channel = await self.protocol.open_channel()
        while time.monotonic() - started < 20:
            got = await channel.basic_get(queue=self.queue, no_ack=True)
            if got.method.name == "get-ok":
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(got.method.name, "get-ok")
        self.assertEqual(TaskMessage.decode(got.content.body).id, message.id)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)

    async def test_priorities(self) -> None:
        """
        A classic queue declared with a maximum priority delivers the
        message of the highest priority first, whatever its place.
        """
        topology = self.topology(queue_type="classic", max_priority=9)
        publisher = Publisher(self.connection, topology)
        await publisher._connected(self.protocol)
        messages = [TaskMessage(id=new_task_id(), task="t", args=(i,)) for i in range(30)]
        for i, message in enumerate(messages):
            await publisher.publish(message, priority=9 if i == 29 else (5 if i == 20 else None))
        channel = await self.protocol.open_channel()
        order = []
        for _ in range(30):
            got = await channel.basic_get(queue=self.queue, no_ack=True)
            order.append(TaskMessage.decode(got.content.body).args[0])
        self.assertEqual(order[:3], [29, 20, 0])
        self.assertEqual(order[3:], list(range(1, 20)) + list(range(21, 29)))


class PoisonTests(SynchronousTestCase):
    def test_daemon_killer_dead_lettered(self) -> None:
        """
        A message that makes its daemon exit before it can be settled
        (the daemon, not a child) runs ``--task-attempts`` + 1 times, one
        daemon after another, and then the quorum queue's delivery limit
        sends it to the dead-letter queue: the next daemon runs on.
        """
        queue = unique_queue()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-poison-"))
        options = (
            "--queue-type",
            "quorum",
            "--task-attempts",
            "2",
            "--reactor-tasks",
            "--claim-lease",
            "2",
        )
        exits = []
        published = False
        for attempt in range(5):
            folder = directory / f"daemon-{attempt}"
            folder.mkdir()
            daemon = Daemon(
                folder,
                queue,
                redis_url(),
                concurrency=1,
                tasks="tests.integration.cluster_tasks",
                extra=options,
            )
            self.addCleanup(daemon.stop)
            if not published:
                daemon.wait_ready(60)
                run_client(amqp_url(), queue, {"tasks": [{"task": "cluster.exit_daemon"}]})
                published = True
            deadline = time.monotonic() + 60
            while daemon.process.poll() is None and time.monotonic() < deadline:
                if dead_letters(queue):
                    break
                time.sleep(0.2)
            if daemon.process.poll() is None:
                break
            exits.append(daemon.process.returncode)
        self.assertEqual(exits, [3, 3, 3])
        self.assertEqual(dead_letters(queue), 1)


def run_client(broker: str, queue: str, request: dict[str, Any]) -> dict[str, Any]:
    """
    Run :py:mod:`tests.integration.cluster_client` with ``request`` and
    return its report.
    """
    request = {"client": {}, **request}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.cluster_client", broker, redis_url(), queue],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if completed.returncode != 0:
        raise AssertionError(f"client failed:\n{completed.stderr[-5000:]}")
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def dead_letters(queue: str) -> int:
    """
    How many messages wait in the dead-letter queue of ``queue``.
    """
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "twistedq.deadletter",
            "--broker",
            amqp_url(),
            "--queue",
            queue,
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return len([line for line in completed.stdout.splitlines() if line.strip()])


class AddressListTests(SynchronousTestCase):
    def test_client_skips_a_node_that_is_down(self) -> None:
        """
        A client given two addresses, the first refusing connections,
        publishes through the second at once, and its result is read.
        """
        down = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        report = run_client(
            f"{down},{amqp_url()}",
            unique_queue(),
            {"client": {"timeout": 10}, "tasks": [{"task": "t"}], "purge": True},
        )
        self.assertLess(report["seconds"], 10)
        self.assertEqual(report["purged"], 1)
