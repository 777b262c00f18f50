"""
Rate limits, several queues and hooks on real daemons, RabbitMQ and Redis.

One daemon consumes two queues with ``flow.limited`` limited to 10/s
(shared by the rate limit and queue tests, stopped at exit); the hook test
starts a daemon of its own, since it stops it.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

TASKS = "tests.integration.flow_tasks"

_shared: dict[str, Any] = {}


def run_flow(backend: str, timeout: float = 120, **request: Any) -> Any:
    """
    Run ``tests.integration.flow_client`` with ``request``; what it printed.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.flow_client", amqp_url(), backend],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def shared_daemon() -> tuple[Daemon, list[str], str]:
    """
    The daemon of two queues with ``flow.limited`` limited to 10/s,
    started on first use and stopped when the tests exit.
    """
    if not _shared:
        backend = redis_url()
        queues = [unique_queue(), unique_queue()]
        directory = Path(tempfile.mkdtemp(prefix="twistedq-flow-"))
        daemon = Daemon(
            directory,
            queue=",".join(queues),
            result_backend=backend,
            tasks=TASKS,
            # A prefetch of 32 holds at most 16 limited tasks in memory:
            # most of RateLimitTests' 50 wait in the delay queues.
            extra=("--rate-limit", "flow.limited=10/s", "--prefetch", "32"),
        )
        atexit.register(daemon.stop)
        daemon.wait_ready()
        _shared.update(daemon=daemon, queues=queues, backend=backend)
    return _shared["daemon"], _shared["queues"], _shared["backend"]


class RateLimitTests(SynchronousTestCase):
    def test_limited_task_does_not_slow_others(self) -> None:
        """
        50 calls of a task limited to 10/s take no less than 4.5 s from the
        first to the last start; 50 calls of another task, published on
        the same queue behind them, are all done in well under half that
        time.  The limited tasks that wait in the broker wait in the delay
        queues of their own queue (the daemon's second).
        """
        daemon, queues, backend = shared_daemon()
        report = run_flow(
            backend,
            groups=[
                {"name": "limited", "task": "flow.limited", "count": 50, "queue": queues[1]},
                {"name": "quick", "task": "flow.quick", "count": 50, "queue": queues[1]},
            ],
            wait=["quick"],
        )
        limited, quick = report["limited"], report["quick"]
        self.assertTrue(all(isinstance(v, float) for v in limited + quick), report)
        limited_span = max(limited) - min(limited)
        self.assertGreaterEqual(limited_span, 4.5)
        quick_done = max(quick) - report["published"]
        limited_done = max(limited) - report["published"]
        self.assertLess(quick_done, limited_done / 2, (quick_done, limited_done))
        stats = daemon.stats()["dispatcher"]["rate_limits"]
        self.assertEqual(stats["limits"]["flow.limited"], 10.0)
        self.assertGreater(stats["sent_later"], 0)
        log = daemon.log()
        self.assertIn(f" in {queues[1]}.delay.", log)
        self.assertNotIn(f" in {queues[0]}.delay.", log)


class CarriedRateTests(SynchronousTestCase):
    def test_slow_rate_does_not_stall_others(self) -> None:
        """
        A call of ``flow.quick`` carrying ``1/h`` starts at once; the ten
        calls after it carrying 10 (a number, per second) are not held for
        its hour: they start at their own pace, 0.1 s apart.
        """
        daemon, queues, backend = shared_daemon()
        report = run_flow(
            backend,
            groups=[
                {
                    "name": "slow",
                    "task": "flow.quick",
                    "count": 1,
                    "queue": queues[0],
                    "rate_limit": "1/h",
                },
                {
                    "name": "fast",
                    "task": "flow.quick",
                    "count": 10,
                    "queue": queues[0],
                    "rate_limit": 10,
                },
            ],
            timeout=150,
        )
        fast = report["fast"]
        self.assertTrue(all(isinstance(v, float) for v in report["slow"] + fast), report)
        self.assertGreaterEqual(max(fast) - min(fast), 0.8)
        # None of them was sent to wait for the slow call's hour.
        self.assertNotRegex(daemon.log(), r"flow\.quick\[[-0-9a-f]+\] waits \d{3,} s")


class ClusterRateLimitTests(SynchronousTestCase):
    def test_two_daemons_share_the_limit(self) -> None:
        """
        Two daemons consuming one queue with ``--cluster-rate-limits`` and
        ``flow.limited`` limited to 10/s start its 30 calls no faster than
        10/s between them: at least 2.5 s from the first start to the last
        (2.9 s of slots, less what the first start may lag behind its
        claim on a loaded machine; each daemon alone would allow 10/s, so
        20/s together: about 1.4 s).
        """
        queue, backend = unique_queue(), redis_url()
        daemons = []
        for n in range(2):
            directory = Path(tempfile.mkdtemp(prefix=f"twistedq-cluster-rate-{n}-"))
            daemon = Daemon(
                directory,
                queue=queue,
                result_backend=backend,
                tasks=TASKS,
                extra=("--rate-limit", "flow.limited=10/s", "--cluster-rate-limits"),
            )
            self.addCleanup(daemon.stop)
            daemons.append(daemon)
        for daemon in daemons:
            daemon.wait_ready()
        report = run_flow(
            backend,
            groups=[{"name": "limited", "task": "flow.limited", "count": 30, "queue": queue}],
        )
        starts = sorted(report["limited"])
        self.assertGreaterEqual(starts[-1] - starts[0], 2.5, starts)
        contended = sum(d.stats()["dispatcher"]["rate_limits"]["contended"] for d in daemons)
        ran = [d.stats()["dispatcher"]["completed"] for d in daemons]
        self.assertEqual(sum(ran), 30)
        self.assertTrue(contended > 0 or 0 in ran, (contended, ran))


class QueuesTests(SynchronousTestCase):
    def test_two_queues_both_progress(self) -> None:
        """
        With a backlog of 40 slow tasks on one queue, five tasks published
        on the other queue after them are all done while most of the
        backlog still waits; then the backlog is done too.
        """
        daemon, queues, backend = shared_daemon()
        report = run_flow(
            backend,
            groups=[
                {
                    "name": "backlog",
                    "task": "flow.slow",
                    "args": [0.2],
                    "count": 40,
                    "queue": queues[0],
                },
                {"name": "other", "task": "flow.quick", "count": 5, "queue": queues[1]},
            ],
            wait=["other"],
            count_done=["backlog"],
        )
        self.assertEqual(len(report["other"]), 5)
        self.assertLessEqual(report["backlog_done_when_waited"], 20, report)
        self.assertTrue(all(isinstance(v, float) for v in report["backlog"]), report)
        self.assertEqual(daemon.log().count("Consuming "), 2)


class HooksTests(SynchronousTestCase):
    def test_signals_in_child_and_daemon(self) -> None:
        """
        A daemon started with ``--hooks`` sends worker_ready, the child's
        signals around its tasks (a receiver that raises changes nothing),
        task_received and task_revoked in the daemon, and
        worker_shutting_down when it stops.
        """
        directory = Path(tempfile.mkdtemp(prefix="twistedq-hooks-"))
        lines_file = directory / "hooks.txt"
        queue, backend = unique_queue(), redis_url()
        daemon = Daemon(
            directory,
            queue=queue,
            result_backend=backend,
            tasks=TASKS,
            extra=("--hooks", "tests.integration.flow_hooks", "--hold-eta", "1"),
            env={"TWISTEDQ_TEST_HOOKS_FILE": str(lines_file)},
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        # Due in 4 s, past --hold-eta: it goes through the delay queues
        # (2 s, then 1 s) and is received once all the same.
        eta = datetime.datetime.fromtimestamp(time.time() + 4, datetime.timezone.utc)
        report = run_flow(
            backend,
            groups=[
                {
                    "name": "hopped",
                    "task": "flow.hooked",
                    "args": [5],
                    "count": 1,
                    "queue": queue,
                    "eta": eta.isoformat(),
                },
                {"name": "hooked", "task": "flow.hooked", "args": [21], "count": 1, "queue": queue},
                {"name": "fails", "task": "flow.fails", "args": ["no"], "count": 1, "queue": queue},
                {
                    "name": "expired",
                    "task": "flow.hooked",
                    "args": [1],
                    "count": 1,
                    "queue": queue,
                    "expires": "2000-01-01T00:00:00+00:00",
                },
            ],
        )
        self.assertEqual(
            (report["hooked"], report["fails"], report["expired"]),
            ([42], ["ValueError"], ["TaskRevokedError"]),
        )
        hooked, fails = report["ids"]["hooked"][0], report["ids"]["fails"][0]
        hopped = report["ids"]["hopped"][0]
        self.assertEqual(report["hopped"], [10])
        expected = [
            f"daemon task_received flow.hooked {hopped}",
            f"child task_prerun flow.hooked {hopped}",
            "daemon worker_ready daemon ",
            "child worker_process_init child ",
            f"daemon task_received flow.hooked {hooked}",
            f"daemon task_received flow.fails {fails}",
            f"child task_prerun flow.hooked {hooked}",
            "child task_success flow.hooked 42",
            "child task_postrun flow.hooked SUCCESS",
            f"child task_prerun flow.fails {fails}",
            "child task_failure flow.fails ValueError",
            "child task_postrun flow.fails FAILURE",
            "daemon task_revoked flow.hooked expired=True",
        ]
        lines = self.wait_for_lines(lines_file, expected)
        self.assertNotIn("child task_success flow.fails", "\n".join(lines))
        self.assertIn("A receiver of task_prerun failed", daemon.log())
        self.assertIn(f"{hopped}] waits 2 s in {queue}.delay.2", daemon.log())
        received = [line for line in lines if "task_received" in line and hopped in line]
        self.assertEqual(len(received), 1, lines)
        # The daemon asked whether its queues exist (404s): no WARNING.
        self.assertNotIn("NOT_FOUND", daemon.log())
        daemon.stop()
        self.wait_for_lines(lines_file, ["daemon worker_shutting_down daemon "])

    def wait_for_lines(self, path: Path, expected: list[str], timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = path.read_text().splitlines(keepends=False) if path.exists() else []
            missing = [line for line in expected if line.rstrip() not in map(str.rstrip, lines)]
            if not missing:
                return lines
            if time.monotonic() > deadline:
                self.fail(f"missing {missing} in {lines}")
            time.sleep(0.1)
