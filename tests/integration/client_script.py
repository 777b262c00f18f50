"""
Runs the blocking client in a process of its own, as a Django view or a
script would, and prints what it saw as one JSON line.

    python -m tests.integration.client_script BROKER BACKEND QUEUE < request.json

The request is ``{"mode": ..., "count": N, "task": name, "args": [...]}``.
"""

from __future__ import annotations

import json
import sys
import time

from twistedq.client import Client


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    mode = request["mode"]
    count = request.get("count", 0)
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    report: dict[str, object] = {}
    if mode == "add":
        started = time.monotonic()
        results = [client.delay_task("add", i, i) for i in range(count)]
        report["ids"] = [r.task_id for r in results]
        report["values"] = [r.get(timeout=60) for r in results]
        report["statuses"] = sorted({str(r.status) for r in results})
        report["seconds"] = time.monotonic() - started
    elif mode == "fail":
        from tests.integration.tasks import TaskFailed

        result = client.delay_task("fail", "boom")
        try:
            result.get(timeout=30)
        except TaskFailed as e:
            report["raised"] = ["TaskFailed", str(e)]
        report["status"] = str(result.status)
        report["result_type"] = type(result.result).__name__
        report["traceback"] = result.traceback
        report["ready"] = result.ready()
        report["successful"] = result.successful()
        report["id"] = result.task_id
        builtin = client.delay_task("fail_builtin", "bad value")
        try:
            builtin.get(timeout=30)
        except ValueError as e:
            report["builtin"] = ["ValueError", str(e)]
        unknown = client.delay_task("no-such-task")
        try:
            unknown.get(timeout=30)
        except KeyError as e:
            report["unknown"] = [type(e).__name__, str(e)]
    elif mode == "one":
        result = client.delay_task(request["task"], *request["args"])
        report["id"] = result.task_id
        report["value"] = result.get(timeout=30)
    elif mode == "publish":
        results = [client.delay_task("add", i, 1) for i in range(count)]
        report["ids"] = [r.task_id for r in results]
    else:
        raise SystemExit(f"unknown mode {mode}")
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
