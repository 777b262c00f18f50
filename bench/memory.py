"""
The daemon's memory with a backlog: its resident memory idle, then its
peak while ``--tasks`` queued tasks drain through it, and while it takes
``--tasks`` tasks whose ETA is an hour ahead (it sends them on to its
delay queues and holds none).  The aim: each peak within 20 MiB of idle.

It needs RabbitMQ and Redis; from the repository root::

    scripts/services start rabbitmq redis
    eval "$(scripts/services env)"
    .venv/bin/python -m bench.memory --tasks 100000

The delay queues it fills are purged at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.processes import rss_mib
from bench.throughput import ROOT, TwistedqSystem, wait_done

#: The most the daemon's resident memory may grow with a backlog (MiB).
AIM_MIB = 20.0


def own_rss_mib(pid: int) -> float:
    """
    Resident memory of the process alone (not its children), in MiB.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    """
    Reads a process's resident memory every 50 ms in a thread of its
    own, and keeps the highest.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, own_rss_mib(self.pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, own_rss_mib(self.pid))


def twistedq(options: argparse.Namespace, queue: str, *command: str) -> str:
    """
    What the ``twistedq`` command prints for ``command`` on ``queue``.
    """
    found = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "twistedq"),
            "--broker", options.broker, "--queue", queue, *command,
        ],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    return found.stdout


def status(options: argparse.Namespace, queue: str) -> dict[str, Any]:
    """
    ``twistedq status --json`` of the benchmark's queue.
    """
    return dict(json.loads(twistedq(options, queue, "--json", "status")))


def publish_later(system: TwistedqSystem, count: int) -> None:
    """
    Publish ``count`` no-op tasks due an hour from now, in batches.
    """
    from twistedq.message import TaskMessage, new_task_id

    eta = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    for start in range(0, count, 1000):
        batch = [
            TaskMessage(id=new_task_id(), task="noop", eta=eta)
            for _ in range(min(1000, count - start))
        ]
        system.client.publish_many(batch)


def wait_delayed(options: argparse.Namespace, queue: str, count: int) -> None:
    """
    Return once the queue is empty and its delay queues hold ``count``.
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = status(options, queue)
        delayed = sum(each["ready"] for each in found["delay_queues"])
        if found["queue"].get("ready") == 0 and delayed >= count:
            return
        time.sleep(0.5)
    raise SystemExit(f"the delay queues did not fill within 600 s: {found}")


def purge_delay_queues(options: argparse.Namespace, queue: str) -> None:
    for each in status(options, queue)["delay_queues"]:
        twistedq(options, each["name"], "purge", "--yes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("TWISTEDQ_TEST_AMQP_URL",
                        "amqp://guest:guest@127.0.0.1:5672/"))  # fmt: skip
    parser.add_argument("--result-backend", default=os.environ.get("TWISTEDQ_TEST_REDIS_URL",
                        "redis://127.0.0.1:6379/0"))  # fmt: skip
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    options.daemons, options.source = 1, ROOT
    system = TwistedqSystem(options)
    system.start_worker()
    rows = []
    try:
        pid = system.processes[0].pid
        for _ in range(200):
            system.round_trip()
        time.sleep(1)
        idle = own_rss_mib(pid)
        with PeakSampler(pid) as queued:
            wait_done(system, system.publish(options.tasks))
        rows.append((f"{options.tasks} queued tasks, drained", queued.peak))
        with PeakSampler(pid) as later:
            publish_later(system, options.tasks)
            wait_delayed(options, system.queue, options.tasks)
        rows.append((f"{options.tasks} tasks with an ETA an hour ahead", later.peak))
        with_children = rss_mib(pid)
    finally:
        system.stop_worker()
        purge_delay_queues(options, system.queue)
    print(f"\ndaemon RSS idle: {idle:.1f} MiB (with its children: {with_children:.1f} MiB)")
    print(f"{'case':<44} {'peak MiB':>9} {'growth':>7}  aim <= {AIM_MIB:.0f} MiB")
    for name, peak in rows:
        growth = peak - idle
        verdict = "met" if growth <= AIM_MIB else "MISSED"
        print(f"{name:<44} {peak:>9.1f} {growth:>7.1f}  {verdict}")


if __name__ == "__main__":
    main()
