"""
How long after a task ends does ``get()`` return?  For each result store,
with the store's notification (where it has one) and with polling, at two
poll intervals: notification does not grow with the poll interval.

    python -m bench.latency [--tasks 20] [--stores redis,memcached,sqlite]

RabbitMQ and the stores must be running (``scripts/services start``); the
URLs come from ``TWISTEDQ_TEST_*_URL`` or the defaults.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.throughput import start_twistedq

ROOT = Path(__file__).resolve().parent.parent

STORES = {
    "redis": lambda: os.environ.get("TWISTEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "memcached": lambda: os.environ.get(
        "TWISTEDQ_TEST_MEMCACHED_URL", "memcached://127.0.0.1:11211"
    ),
    "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp()}/results.sqlite3",
}


def measure(broker: str, store: str, notify: bool, poll_max: float, count: int) -> list[float]:
    """
    Milliseconds from each task's end (its stored ``date_done``) to its
    ``get()`` returning, for ``count`` tasks of 50 ms run one at a time.
    """
    import twistedq.result
    from twistedq.client import Client

    # A fixed interval: every read waits poll_max.
    twistedq.result.POLL_START = twistedq.result.POLL_MAX = poll_max
    queue = f"latency-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="twistedq-latency-"))
    daemon = start_twistedq(workdir, broker, store, queue, 1)
    try:
        client = Client(broker_url=broker, result_backend=store, queue=queue, notify=notify)
        latencies = []
        for _ in range(count + 2):
            result = client.delay_task("nap", 0.05)
            result.get(timeout=30)
            returned = time.time()
            done = datetime.datetime.fromisoformat(client.get_outcome(result.task_id).date_done)
            latencies.append((returned - done.timestamp()) * 1000)
        client.close()
        return latencies[2:]
    finally:
        daemon.terminate()
        daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker",
        default=os.environ.get("TWISTEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--stores", default="redis,memcached,sqlite")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    options = parser.parse_args()
    rows = []
    for name in options.stores.split(","):
        for notify in (True, False) if name == "redis" else (False,):
            for poll_max in (0.02, 0.2):
                samples = measure(options.broker, STORES[name](), notify, poll_max, options.tasks)
                rows.append(
                    {
                        "store": name,
                        "wakeup": "notification" if notify else "polling",
                        "poll_max_ms": poll_max * 1000,
                        "p50_ms": statistics.median(samples),
                        "max_ms": max(samples),
                    }
                )
    if options.json:
        print(json.dumps(rows))
        return
    print(f"{'store':<10} {'wake-up':<13} {'poll every ms':>13} {'p50 ms':>8} {'max ms':>8}")
    for row in rows:
        print(
            f"{row['store']:<10} {row['wakeup']:<13} {row['poll_max_ms']:>13.0f} "
            f"{row['p50_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
