"""
Publishes tasks with the blocking client in a process of its own, for
``test_result_settings``, and prints what it saw as one JSON line.

    python -m tests.integration.result_settings_script BROKER BACKEND QUEUE < request.json

The request is ``{"mode": "ignored" | "stored" | "later", "count": N}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twistedq.client import Client
from twistedq.exceptions import ResultIgnored
from twistedq.message import new_task_id
from twistedq.task import publish_task


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    report: dict[str, Any] = {}
    mode = request["mode"]
    if mode == "ignored":
        results = [
            publish_task("add", (i, i), ignore_result=True, client=client)
            for i in range(request["count"])
        ]
        report["ids"] = [result.task_id for result in results]
        try:
            results[0].get(timeout=30)
        except ResultIgnored as e:
            report["get"] = ["ResultIgnored", str(e)]
    elif mode == "stored":
        result = publish_task("add", (2,), {"y": 3}, client=client)
        report["id"] = result.task_id
        report["value"] = result.get(timeout=30)
    elif mode == "later":
        taskset = new_task_id()
        client.create_taskset(taskset, 3)
        report["id"] = publish_task("add", (1, 1), countdown=3600, client=client).task_id
        report["taskset"] = taskset
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
