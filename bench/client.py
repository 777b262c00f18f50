"""
The client's own costs: what ``Client`` spends to publish and to wait for an
outcome, apart from the daemon.

* publish: ``publish_many`` in batches of 1,000 with no worker running,
  tasks/s and the client process's CPU time per message (all its threads:
  the caller's and the reactor's);
* calls: ``delay_task`` one after another from one thread, calls/s, CPU
  per call and the median time of one call (``call_p50``, ms: steadier than
  the rate on a busy machine);
* latency (unless ``--no-latency``): round trips one at a time
  (``delay_task`` then ``get()``) against one daemon of its own, p50, p90
  and p99 in ms.

Each figure is measured ``--repeat`` times; the rows and their medians are
printed.  Rates swing on a busy machine; CPU per message swings less.
RabbitMQ and Redis must be running; the URLs are those of
``$TWISTEDQ_TEST_AMQP_URL`` and ``$TWISTEDQ_TEST_REDIS_URL`` unless given::

    python -m bench.client [--tasks 20000] [--calls 2000] [--latency 1000]
                           [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.processes import percentiles, stop
from bench.throughput import start_twistedq
from twistedq.client import Client
from twistedq.message import TaskMessage, new_task_id

WINDOW = 1000


def timed(function: Any, count: int) -> tuple[float, float]:
    """
    Run ``function()`` and return its rate (``count`` per second) and the
    process's CPU time per unit, in microseconds.
    """
    cpu0, t0 = time.process_time(), time.perf_counter()
    function()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return count / elapsed, cpu / count * 1e6


def publish_batches(client: Client, count: int) -> None:
    for start in range(0, count, WINDOW):
        batch = [
            TaskMessage(id=new_task_id(), task="noop") for _ in range(min(WINDOW, count - start))
        ]
        client.publish_many(batch)


def calls(client: Client, count: int, samples: list[float]) -> None:
    for _ in range(count):
        t0 = time.perf_counter()
        client.delay_task("noop")
        samples.append((time.perf_counter() - t0) * 1000)


def round_trips(client: Client, count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.delay_task("noop").get(timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency", type=int, default=1000)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--broker", default=os.environ.get("TWISTEDQ_TEST_AMQP_URL", "amqp://127.0.0.1:5672/")
    )
    parser.add_argument(
        "--result-backend",
        default=os.environ.get("TWISTEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    options = parser.parse_args()
    queue = f"bench-client-{uuid.uuid4().hex[:8]}"
    client = Client(broker_url=options.broker, result_backend=options.result_backend, queue=queue)
    rows: list[dict[str, Any]] = []
    publish_batches(client, WINDOW)  # connect and warm up
    for _ in range(options.repeat):
        row: dict[str, Any] = {}
        row["publish"], row["publish_cpu"] = timed(
            lambda: publish_batches(client, options.tasks), options.tasks
        )
        samples: list[float] = []
        row["calls"], row["calls_cpu"] = timed(
            functools.partial(calls, client, options.calls, samples), options.calls
        )
        row["call_p50"] = statistics.median(samples)
        client.purge()
        rows.append(row)
    if not options.no_latency:
        workdir = Path(tempfile.mkdtemp(prefix="twistedq-bench-client-"))
        daemon = start_twistedq(workdir, options.broker, options.result_backend, queue, 2)
        try:
            round_trips(client, 200)  # warm up
            for row in rows:
                row.update(round_trips(client, options.latency))
        finally:
            stop(daemon)
    client.purge()
    client.close()
    report(rows, options.json)


def report(rows: list[dict[str, Any]], as_json: bool) -> None:
    names = ("publish", "publish_cpu", "calls", "calls_cpu", "call_p50", "p50", "p90", "p99")
    keys = [key for key in names if key in rows[0]]
    medians = {key: statistics.median(row[key] for row in rows) for key in keys}
    if as_json:
        print(json.dumps({"rows": rows, "median": medians}))
        return
    print("  ".join(f"{key:>11}" for key in keys))
    for row in [*rows, medians]:
        print("  ".join(f"{row[key]:>11.2f}" for key in keys))
    print("(last row: medians; *_cpu in microseconds of this process per message)")


if __name__ == "__main__":
    main()
