"""
What a queue type costs: twistedq's end-to-end figures (see
:py:mod:`bench.throughput`) with ``--queue-type classic`` and ``--queue-type
quorum``, in turn, ``--repeat`` times, on one broker (a single node, or a
cluster given as comma-separated URLs: the daemons and the client connect
to the first).

    python -m bench.queue_types [--broker URLS] [--tasks 10000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from bench.throughput import ROOT, TwistedqSystem, measure

TYPES = ("classic", "quorum")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker",
        default=os.environ.get("TWISTEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--result-backend",
        default=os.environ.get("TWISTEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    options = parser.parse_args()
    options.daemons = 1
    options.source = Path(ROOT)
    rows: list[tuple[str, dict[str, Any]]] = []
    for round_number in range(options.repeat):
        for queue_type in TYPES:
            print(f"running {queue_type} ({round_number + 1}/{options.repeat}) ...", flush=True)
            system = TwistedqSystem(options, queue_type, ("--queue-type", queue_type))
            system.client.close()
            from twistedq.client import Client

            system.client = Client(
                broker_url=options.broker,
                result_backend=options.result_backend,
                queue=system.queue,
                queue_type=queue_type,
            )
            rows.append((queue_type, measure(system, options)))
    print(
        f"\n{options.tasks} no-op tasks, concurrency {options.concurrency}, results in "
        f"{options.result_backend}, broker {options.broker.split('@')[-1]}"
    )
    header = (
        f"{'type':<8} {'stream/s':>9} {'drain/s':>9} {'publish/s':>10} {'calls/s':>8} "
        f"{'p50 ms':>7} {'CPU us/task':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, f in rows:
        print(
            f"{name:<8} {f['stream']:>9.0f} {f['drain']:>9.0f} {f['publish']:>10.0f} "
            f"{f['calls']:>8.0f} {f['latency']['p50']:>7.2f} {f['cpu'][0]:>12.0f}"
        )
    print("\nmeans:")
    for queue_type in TYPES:
        mine = [f for n, f in rows if n == queue_type]
        print(
            f"{queue_type:<8} "
            + "  ".join(
                f"{key} {statistics.mean(f[key] for f in mine):.0f}/s"
                for key in ("stream", "drain", "publish", "calls")
            )
            + f"  p50 {statistics.mean(f['latency']['p50'] for f in mine):.2f} ms"
        )


if __name__ == "__main__":
    main()
