"""
Priorities end to end (issue #17): a daemon draining a backlog of 1,000
tasks of no priority from a classic queue declared with ``--max-priority
9`` starts a priority-9 task published behind them within the first 5 %
of what is left of the drain.  The broker delivers it first; the daemon
holds at most its prefetch of earlier tasks, which run before it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, amqp_url, redis_url, unique_queue
from twistedq.client import Client
from twistedq.message import TaskMessage, new_task_id

BACKLOG = 1000
#: The index of the priority task in the runs file.
URGENT = -1


def runs(path: Path) -> list[int]:
    """
    The indexes of the tasks run so far, in the order they started.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line.split()[0]) for line in text.splitlines() if line.strip()]


class PriorityTests(SynchronousTestCase):
    def drain(self, concurrency: int, extra: tuple[str, ...] = ()) -> tuple[int, int]:
        """
        Queue the backlog, start a daemon, publish the priority-9 task once
        100 tasks ran; return how many tasks had started when it was
        published and its place in the order they started.
        """
        queue = unique_queue()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-priorities-"))
        runs_file = directory / "runs"
        client = Client(
            broker_url=amqp_url(),
            result_backend=redis_url(),
            queue=queue,
            queue_type="classic",
            max_priority=9,
        )
        self.addCleanup(client.close)
        client.publish_many(
            TaskMessage(id=new_task_id(), task="cluster.record", args=(i, 0.004))
            for i in range(BACKLOG)
        )
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
        deadline = time.monotonic() + 60
        while len(runs(runs_file)) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(runs(runs_file))
        urgent = TaskMessage(id=new_task_id(), task="cluster.record", args=(URGENT, 0.004))
        client.publish(urgent, priority=9)
        client.wait_outcome(urgent.id, timeout=120)
        order = runs(runs_file)
        self.assertLess(before, BACKLOG // 2, "the backlog drained before the test could publish")
        position = order.index(URGENT)
        print(
            f"\nconcurrency {concurrency} {' '.join(extra)}: published after {before} runs, "
            f"{position - before} tasks started before it"
        )
        return before, position

    def test_priority_task_first(self) -> None:
        """
        Two children, the default prefetch: the priority-9 task starts
        within the first 5 % of the 1,000 (after at most 50 others).
        """
        before, position = self.drain(2)
        self.assertLessEqual(position - before, BACKLOG * 5 // 100)
