"""
Priorities end to end (issue #17): a daemon draining a backlog of 1,000
tasks of no priority from a classic queue declared with ``--max-priority
9`` starts a priority-9 task published behind them within the first 5 %
of what is left of the drain.  The broker delivers it first, and the
daemon runs it before the tasks it holds that no child has yet.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, amqp_url, redis_url, unique_queue
from tests.integration.test_cluster_queues import run_client

BACKLOG = 1000
#: The index of the priority task in the runs file.
URGENT = -1
#: How long each task runs, in seconds: long enough for the backlog to
#: outlast the start of the client that publishes the priority task.
PAUSE = 0.01


def runs(path: Path) -> list[tuple[int, float]]:
    """
    The index and start time of each task run so far, in the order they
    started.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = [line.split() for line in text.splitlines() if line.strip()]
    return [(int(index), float(started)) for index, _, started in lines]


class PriorityTests(SynchronousTestCase):
    def drain(self, concurrency: int, extra: tuple[str, ...] = ()) -> tuple[int, int]:
        """
        Queue the backlog, start a daemon, publish the priority-9 task;
        return how many tasks had started when the broker confirmed it and
        how many before it started.
        """
        queue = unique_queue()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-priorities-"))
        runs_file = directory / "runs"
        client = {"queue_type": "classic", "max_priority": 9}
        backlog = [{"task": "cluster.record", "args": [i, PAUSE]} for i in range(BACKLOG)]
        run_client(amqp_url(), queue, {"client": client, "tasks": backlog})
        daemon = Daemon(
            directory,
            queue,
            redis_url(),
            concurrency=concurrency,
            tasks="tests.integration.cluster_tasks",
            extra=("--queue-type", "classic", "--max-priority", "9", *extra),
            env={"TWISTEDQ_TEST_RUNS_FILE": str(runs_file)},
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready(60)
        urgent = {"task": "cluster.record", "args": [URGENT, PAUSE], "priority": 9}
        report = run_client(amqp_url(), queue, {"client": client, "tasks": [urgent], "wait": 120})
        self.assertEqual(report["statuses"], ["SUCCESS"])
        order = runs(runs_file)
        urgent_started = next(started for index, started in order if index == URGENT)
        # Queued once the broker confirmed it: the tasks that started
        # after that and before it overtook it.
        before = sum(1 for _, started in order if started < report["confirmed_at"])
        position = sum(1 for _, started in order if started < urgent_started)
        self.assertLess(before, BACKLOG // 2, "the backlog drained before the test could publish")
        print(
            f"\nconcurrency {concurrency} {' '.join(extra)}: confirmed after {before} runs, "
            f"{position - before} tasks started after that and before it"
        )
        return before, position

    def test_priority_task_first(self) -> None:
        """
        Two children, the default prefetch: the priority-9 task starts
        within the first 5 % of the 1,000 (after at most 50 others).
        """
        before, position = self.drain(2)
        self.assertLessEqual(position - before, BACKLOG * 5 // 100)
