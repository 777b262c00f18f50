"""
The process pool on real processes: crashes, time limits, memory caps,
the daemon's death, warm shutdown and fair dispatch between two daemons.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import Daemon, amqp_url, redis_url, unique_queue
from twistedq.client import AsyncClient
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class PoolTestCase(TestCase):
    """
    Daemons on a queue of the test's own, running
    ``tests.integration.pool_tasks``, and an in-process client.
    """

    timeout = 180

    def setUp(self) -> None:
        self.queue = unique_queue()
        self.backend = redis_url()
        self.client = AsyncClient(
            Settings(broker_url=amqp_url(), result_backend=self.backend, queue=self.queue),
            reactor,
        )
        self.addCleanup(self.client.close)

    def start_daemon(self, *extra: str, concurrency: int = 2) -> Daemon:
        directory = Path(tempfile.mkdtemp(prefix="twistedq-pool-"))
        daemon = Daemon(
            directory,
            queue=self.queue,
            result_backend=self.backend,
            concurrency=concurrency,
            tasks="tests.integration.pool_tasks",
            extra=extra,
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    async def publish(self, task: str, *args: Any) -> str:
        message = TaskMessage(id=new_task_id(), task=task, args=args)
        await self.client.publish(message)
        return message.id

    async def wait(self, task_ids: list[str], timeout: float = 60) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes: list[Outcome] = []
            for start in range(0, len(task_ids), 500):
                outcomes += await self.client.get_outcomes(task_ids[start : start + 500])
            if all(o.ready for o in outcomes):
                return outcomes
            await sleep(0.05)
        raise AssertionError(f"not done within {timeout} s")

    async def dead_letters(self) -> list[bytes]:
        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        bodies = []
        while True:
            got = await channel.basic_get(queue=f"{self.queue}.dead", no_ack=True)
            if got.method.name != "get-ok":
                return bodies
            bodies.append(got.content.body)


class CrashTests(PoolTestCase):
    async def test_segfault_fails_after_attempts_while_others_succeed(self) -> None:
        """
        A task that segfaults its child ends as FAILURE (WorkerLostError,
        signal 11) after the configured attempts and lands in the
        dead-letter queue, while 500 ordinary tasks published with it all
        succeed.
        """
        daemon = self.start_daemon("--task-attempts", "2")
        poison = await self.publish("segfault")
        messages = [TaskMessage(id=new_task_id(), task="add", args=(i, i)) for i in range(500)]
        await self.client.publish_many(messages)
        outcomes = await self.wait([m.id for m in messages])
        self.assertEqual([o.result for o in outcomes], [2 * i for i in range(500)])
        (failed,) = await self.wait([poison])
        self.assertEqual(failed.status, "FAILURE")
        self.assertEqual(failed.exc["type"], "WorkerLostError")
        self.assertIn("signal 11", failed.exc["message"])
        self.assertIn("2 attempts", failed.exc["message"])
        await sleep(0.3)
        dead = await self.dead_letters()
        self.assertEqual([json.loads(body)["id"] for body in dead], [poison])
        self.assertIn("ended unexpectedly", daemon.log())

    async def test_exit_is_retried_then_reported(self) -> None:
        """
        A task calling ``os._exit(3)`` fails with WorkerLostError naming
        the exit code once its attempts are spent.
        """
        self.start_daemon("--task-attempts", "1")
        task_id = await self.publish("exit_hard", 3)
        (failed,) = await self.wait([task_id])
        self.assertEqual(failed.exc["type"], "WorkerLostError")
        self.assertIn("exit code 3", failed.exc["message"])


class TimeLimitTests(PoolTestCase):
    async def test_hard_limit_kills_and_next_task_runs(self) -> None:
        """
        A hung task is killed at its 2-second hard limit (measured with a
        monotonic clock) and fails with TimeLimitExceeded; the next task
        runs on a fresh child.
        """
        daemon = self.start_daemon(concurrency=1)
        started = time.monotonic()
        hung = await self.publish("hang")
        after = await self.publish("pid")
        (failed,) = await self.wait([hung])
        took = time.monotonic() - started
        self.assertEqual(failed.exc["type"], "TimeLimitExceeded")
        self.assertGreaterEqual(took, 2.0)
        self.assertLess(took, 5.0)
        (ok,) = await self.wait([after])
        pids = [int(p) for p in re.findall(r"Started Process-\d+ \(pid (\d+)\)", daemon.log())]
        self.assertEqual(ok.result, pids[-1])
        self.assertEqual(len(pids), 2)

    async def test_soft_limit_raises_inside_task(self) -> None:
        """
        Past its soft limit a task gets SoftTimeLimitExceeded and can clean
        up and return.
        """
        self.start_daemon()
        task_id = await self.publish("soft")
        (done,) = await self.wait([task_id])
        self.assertEqual(done.result, "cleaned up")

    async def test_default_hard_limit(self) -> None:
        """
        ``--time-limit`` applies to tasks without a limit of their own.
        """
        self.start_daemon("--time-limit", "1")
        task_id = await self.publish("sleep_marked", 30, tempfile.mkdtemp())
        (failed,) = await self.wait([task_id])
        self.assertEqual(failed.exc["type"], "TimeLimitExceeded")


class RecyclingTests(PoolTestCase):
    async def test_memory_cap_recycles(self) -> None:
        """
        A child whose memory passes ``--max-memory-per-child`` after a task
        is replaced before it is given another task, even when the next
        task came in the same batch: the tasks after the leak run on a
        fresh child; the status resource counts one restart.
        """
        daemon = self.start_daemon("--max-memory-per-child", "120", concurrency=1)
        messages = [
            TaskMessage(id=new_task_id(), task=name, args=args)
            for name, args in (("pid", ()), ("leak", (150,)), ("pid", ()), ("pid", ()))
        ]
        # One publish, one batch: the daemon hands the four to its one child together.
        await self.client.publish_many(messages)
        outcomes = await self.wait([m.id for m in messages])
        self.assertEqual([o.status for o in outcomes], ["SUCCESS"] * 4)
        before, _, after, last = (o.result for o in outcomes)
        self.assertNotEqual(before, after)
        self.assertEqual(after, last)
        self.assertIn("Retiring Process-1: max-memory", daemon.log())
        stats = json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{daemon.status_port}/stats", timeout=10)
        )
        self.assertEqual(stats["pool"]["restarts"], {"max-memory": 1})

    async def test_max_tasks_recycles(self) -> None:
        """
        ``--max-tasks-per-child 3`` gives a fresh child every 3 tasks.
        """
        self.start_daemon("--max-tasks-per-child", "3", "--batch", "1", concurrency=1)
        ids = [await self.publish("pid") for _ in range(7)]
        outcomes = await self.wait(ids)
        pids = [o.result for o in outcomes]
        self.assertEqual(len(set(pids)), 3, pids)


class ResultSizeTests(PoolTestCase):
    async def test_large_result_fails_in_child(self) -> None:
        """
        A task returning 64 MiB, and one raising an exception whose message
        is 64 MiB, over ``--max-result-size`` (8 MiB by default): each ends
        as a FAILURE ResultTooLarge naming the task, the size and the
        limit; the value never reaches the daemon (its peak memory stays
        far below the value), and the next task runs.
        """
        daemon = self.start_daemon(concurrency=1)
        await self.wait([await self.publish("add", 0, 0)])
        start = _rss_kib(daemon.process.pid, "VmRSS:")
        big = await self.publish("big_result", 64)
        error = await self.publish("big_error", 64)
        after = await self.publish("add", 1, 2)
        big_outcome, error_outcome, done = await self.wait([big, error, after])
        for outcome, task in ((big_outcome, "big_result"), (error_outcome, "big_error")):
            self.assertEqual(outcome.status, "FAILURE")
            self.assertEqual(outcome.exc["type"], "ResultTooLarge")
            self.assertIn(task, outcome.exc["message"])
            self.assertIn("8,388,608 bytes", outcome.exc["message"])
        self.assertIn("returned a str", big_outcome.exc["message"])
        self.assertIn("raised ValueError: yyy", error_outcome.exc["message"])
        self.assertEqual(done.result, 3)
        peak = _rss_kib(daemon.process.pid, "VmHWM:")
        self.assertLess(peak - start, 16 * 1024, f"the daemon grew from {start} to {peak} KiB")


def _rss_kib(pid: int, field: str) -> int:
    """
    A memory figure of a process from ``/proc``: ``VmRSS:`` now,
    ``VmHWM:`` its peak, in KiB.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


class DaemonDeathTests(PoolTestCase):
    async def test_kill_9_leaves_no_child(self) -> None:
        """
        ``kill -9`` of the daemon while its children run tasks leaves no
        child alive a second later.
        """
        daemon = self.start_daemon()
        markers = tempfile.mkdtemp()
        await self.publish("sleep_marked", 30, markers)
        await self.publish("sleep_marked", 30, markers)
        while len(os.listdir(markers)) < 2:
            await sleep(0.05)
        pids = [int(p) for p in re.findall(r"Started Process-\d+ \(pid (\d+)\)", daemon.log())]
        self.assertEqual(len(pids), 2)
        daemon.process.kill()
        daemon.process.wait()
        await sleep(1.0)
        alive = [pid for pid in pids if _alive(pid)]
        self.assertEqual(alive, [])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class ShutdownTests(PoolTestCase):
    async def test_warm_shutdown_stores_running_tasks(self) -> None:
        """
        SIGTERM during 20 running tasks: all 20 finish, are stored and
        acked, none is lost, and the daemon exits.
        """
        daemon = self.start_daemon(concurrency=20)
        markers = tempfile.mkdtemp()
        ids = [await self.publish("sleep_marked", 2, markers) for _ in range(20)]
        while len(os.listdir(markers)) < 20:
            await sleep(0.05)
        daemon.process.send_signal(signal.SIGTERM)
        for _ in range(600):
            if daemon.process.poll() is not None:
                break
            await sleep(0.05)
        self.assertIsNotNone(daemon.process.returncode)
        outcomes = await self.client.get_outcomes(ids)
        self.assertEqual([o.status for o in outcomes], ["SUCCESS"] * 20)
        self.assertIn("Drained", daemon.log())

    async def test_grace_period_then_kill(self) -> None:
        """
        When running tasks outlast ``--shutdown-grace``, their children are
        killed and their messages go back to the queue, nothing stored.
        """
        daemon = self.start_daemon("--shutdown-grace", "1")
        markers = tempfile.mkdtemp()
        ids = [await self.publish("sleep_marked", 30, markers) for _ in range(2)]
        while len(os.listdir(markers)) < 2:
            await sleep(0.05)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        while daemon.process.poll() is None:
            await sleep(0.05)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("Grace period of 1.0 s over", daemon.log())
        outcomes = await self.client.get_outcomes(ids)
        self.assertEqual([o.ready for o in outcomes], [False, False])
        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        declared = await channel.queue_declare(queue=self.queue, passive=True)
        self.assertEqual(declared.message_count, 2)


class FairDispatchTests(PoolTestCase):
    async def test_short_tasks_do_not_wait_for_long_one(self) -> None:
        """
        Two daemons with one child each and ``--prefetch 1``: a 60-second
        task followed by 100 short ones; the short ones all finish on the
        idle daemon long before the long one could.
        """
        self.start_daemon("--prefetch", "1", "--batch", "1", concurrency=1)
        self.start_daemon("--prefetch", "1", "--batch", "1", concurrency=1)
        markers = tempfile.mkdtemp()
        started = time.monotonic()
        await self.publish("sleep_marked", 60, markers)
        messages = [TaskMessage(id=new_task_id(), task="add", args=(i, 1)) for i in range(100)]
        await self.client.publish_many(messages)
        outcomes = await self.wait([m.id for m in messages], timeout=50)
        self.assertEqual([o.result for o in outcomes], [i + 1 for i in range(100)])
        self.assertLess(time.monotonic() - started, 30)


class ReactorTaskTests(PoolTestCase):
    async def test_reactor_tasks(self) -> None:
        """
        With ``--reactor-tasks``, an ``async def`` task runs on the daemon's
        reactor and returns its value; a Deferred that never fires is
        cancelled at its time limit and fails with TimeLimitExceeded.
        """
        self.start_daemon("--reactor-tasks")
        echo = await self.publish("async_echo", "hello")
        hang = await self.publish("deferred_hang")
        started = time.monotonic()
        done, failed = await self.wait([echo, hang])
        self.assertEqual(done.result, "hello")
        self.assertEqual(failed.exc["type"], "TimeLimitExceeded")
        self.assertLess(time.monotonic() - started, 4)

    async def test_async_task_without_reactor_tasks(self) -> None:
        """
        Without ``--reactor-tasks`` an async task fails with a TypeError
        that says how to run it, and the child goes on.
        """
        self.start_daemon()
        echo = await self.publish("async_echo", "hello")
        after = await self.publish("add", 1, 1)
        failed, done = await self.wait([echo, after])
        self.assertEqual(failed.exc["type"], "TypeError")
        self.assertIn("--reactor-tasks", failed.exc["message"])
        self.assertEqual(done.result, 2)


class IsolationTests(PoolTestCase):
    async def test_children_inherit_only_their_pipes(self) -> None:
        """
        A child has no file descriptor of the daemon's (its broker and
        store connections, its listening port) open: only 0-4, and the one
        it uses to list them.
        """
        self.start_daemon()
        task_id = await self.publish("open_fds")
        (done,) = await self.wait([task_id])
        self.assertEqual(done.result[:5], [0, 1, 2, 3, 4])
        self.assertLessEqual(len(done.result), 6, done.result)
