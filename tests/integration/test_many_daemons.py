"""
Ten daemons of one child each on one queue, on the real RabbitMQ and
Redis: a one-second periodic task runs for a minute while 2,000 tasks are
published, and two daemons are killed with SIGKILL and started again.

- the scheduler: every slot of that minute runs, once (twice only where
  the daemon running it was killed);
- the claims: every confirmed task ends with its outcome, and no task runs
  twice unless one of its runs was in a killed daemon;
- fair dispatch: every daemon that lived through the minute ran some of
  the tasks.

It prints what ten daemons cost: the time until all were consuming, and
the resident memory of a daemon and of its child.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.servers import (
    ROOT,
    Daemon,
    amqp_url,
    redis_url,
    server_url,
    unique_queue,
)
from tests.integration.test_periodic import STEP
from twistedq.scheduler import slot_task_id

#: Daemons on the queue.
DAEMONS = 10
#: Seconds the daemons run the schedule.
DURATION = float(os.environ.get("TWISTEDQ_TEST_MANY_SECONDS", "60"))
#: Seconds into the run each of two daemons is killed, and which.
KILLS = ((DURATION * 0.25, 0), (DURATION * 0.6, DAEMONS // 2))
#: Seconds a killed daemon stays down.
DOWN_FOR = 3.0
#: Tasks published over the run.
TASKS = 2000
FINAL = {"SUCCESS", "FAILURE"}


def rss_kib(pid: int) -> int:
    """
    A process's resident memory in KiB (0 once it is gone).
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def clock_steps(daemons: list[Daemon]) -> list[tuple[float, float]]:
    """
    The spans of the forward wall-clock steps and scheduler hold-ups the
    daemons logged, as (from, to) in seconds since the epoch, a second
    wider each side: slots in them follow the catch-up policy.
    """
    spans = []
    for daemon in daemons:
        for found in STEP.finditer(daemon.log()):
            when = datetime.datetime.strptime(found["when"], "%Y-%m-%d %H:%M:%S,%f")
            to = when.timestamp()
            spans.append((to - float(found["seconds"]) - 1.0, to + 1.0))
    return spans


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


class TenDaemonTests(TestCase):
    timeout = DURATION + 300

    def setUp(self) -> None:
        server_url("TWISTEDQ_TEST_AMQP_URL")
        server_url("TWISTEDQ_TEST_REDIS_URL")
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-many-"))
        self.beats = self.directory / "beats"
        self.runs = self.directory / "runs"
        self.name = f"tests.beat.{unique_queue()}"
        self.queue = unique_queue()
        self.daemons: list[Daemon] = []
        self.addCleanup(self.stop_all)

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def start(self, number: int) -> Daemon:
        directory = self.directory / f"daemon-{number}-{len(self.daemons)}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            self.queue,
            redis_url(),
            concurrency=1,
            tasks="tests.integration.many_tasks",
            extra=("--slot-lease", "5"),
            env={
                "TWISTEDQ_TEST_BEAT_FILE": str(self.beats),
                "TWISTEDQ_TEST_BEAT_NAME": self.name,
                "TWISTEDQ_TEST_RUNS_FILE": str(self.runs),
            },
        )
        self.daemons.append(daemon)
        return daemon

    def publish(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.fault_publisher",
                amqp_url(),
                redis_url(),
                self.queue,
                str(TASKS),
                str(DURATION * 0.8),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )

    def test_ten_daemons(self) -> None:
        """
        Every slot once, every task once (but for kills), work spread.
        """
        began = time.monotonic()
        running = [self.start(number) for number in range(DAEMONS)]
        for daemon in running:
            daemon.wait_ready(120)
        ready_in = time.monotonic() - began
        memory = [
            (rss_kib(d.process.pid), sum(rss_kib(c) for c in children(d.process.pid)))
            for d in running
        ]
        start = time.time()
        publisher = self.publish()
        killed: set[str] = set()
        t0 = time.monotonic()
        for at, number in KILLS:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            victim = running[number]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            killed.add(str(victim.process.pid))
            time.sleep(DOWN_FOR)
            running[number] = self.start(number)
            running[number].wait_ready(120)
        time.sleep(max(0.0, t0 + DURATION - time.monotonic()))
        end = time.time()
        out, err = publisher.communicate(timeout=300)
        self.assertEqual(publisher.returncode, 0, err[-5000:])
        confirmed = json.loads(out.strip().splitlines()[-1])["ids"]
        statuses = self.wait_final(confirmed)
        time.sleep(2)  # the last slots run
        for daemon in running:
            self.assertIn(daemon.stop(), (0, -signal.SIGTERM), daemon.log()[-3000:])

        _, twice = self.check_slots(start, end, killed)
        lost = [t for t in confirmed if statuses.get(t) not in FINAL]
        self.assertEqual(lost, [], "confirmed tasks without a final outcome")
        runs = [line.split() for line in self.runs.read_text().splitlines()]
        by_task: dict[str, list[str]] = {}
        for task_id, pid in runs:
            by_task.setdefault(task_id, []).append(pid)
        unexplained = [
            task_id
            for task_id, pids in by_task.items()
            if len(pids) > 1 and not killed.intersection(pids)
        ]
        self.assertEqual(unexplained, [], "tasks run twice with no daemon killed during them")
        per_daemon = Counter(pid for _, pid in runs)
        restarted = self.daemons[DAEMONS:]
        survivors = [str(d.process.pid) for d in running if d not in restarted]
        idle = [pid for pid in survivors if per_daemon[pid] == 0]
        self.assertEqual(idle, [], f"daemons that ran no task: {dict(per_daemon)}")
        daemon_kib = sorted(m for m, _ in memory)[DAEMONS // 2]
        child_kib = sorted(c for _, c in memory)[DAEMONS // 2]
        print(
            f"\n{DAEMONS} daemons consuming {ready_in:.1f} s after starting; median RSS "
            f"{daemon_kib / 1024:.0f} MiB a daemon + {child_kib / 1024:.0f} MiB its child; "
            f"{len(confirmed)} tasks, {len(runs) - len(by_task)} repeated runs, "
            f"fewest/most per daemon {min(per_daemon[p] for p in survivors)}/"
            f"{max(per_daemon[p] for p in survivors)}; {len(twice)} slots of "
            f"{int(end) - int(start)} run twice, {len(killed)} daemons killed"
        )

    def check_slots(self, start: float, end: float, killed: set[str]) -> tuple[list[int], set[str]]:
        """
        Every slot between ``start`` and ``end`` ran; a slot ran twice
        only where a killed daemon ran it.
        """
        beats = [line.split() for line in self.beats.read_text().splitlines()]
        counts = Counter(task_id for task_id, _ in beats)
        stepped = clock_steps(self.daemons)
        expected = {
            slot_task_id(self.name, float(slot)): slot
            for slot in range(int(start) + 1, int(end) + 1)
            if not any(low <= slot <= high for low, high in stepped)
        }
        missing = sorted(slot for task_id, slot in expected.items() if task_id not in counts)
        self.assertEqual(missing, [], f"slots that never ran ({len(expected)} expected)")
        twice = {task_id for task_id, count in counts.items() if count > 1}
        unexplained = [
            task_id
            for task_id in twice
            if not any(pid in killed for run_id, pid in beats if run_id == task_id)
        ]
        self.assertEqual(unexplained, [], "slots run twice with no daemon killed during them")
        return missing, twice

    def wait_final(self, ids: list[str]) -> dict[str, str]:
        """
        Poll the store until every task has a final outcome (at most 2
        minutes).
        """
        code = (
            "import json, sys\n"
            "from twistedq.client import Client\n"
            "client = Client(broker_url=sys.argv[1], result_backend=sys.argv[2], queue='x')\n"
            "ids = json.load(sys.stdin)\n"
            "print(json.dumps([str(o.status) for o in client.get_outcomes(ids)]))\n"
            "client.close()\n"
        )
        deadline = time.monotonic() + 120
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            completed = subprocess.run(
                [sys.executable, "-c", code, amqp_url(), redis_url()],
                input=json.dumps(ids),
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                cwd=ROOT,
            )
            if completed.returncode == 0:
                found = json.loads(completed.stdout.strip().splitlines()[-1])
                statuses = dict(zip(ids, found, strict=True))
                if all(status in FINAL for status in found):
                    break
            time.sleep(1)
        return statuses
