"""
Runs the blocking client in a process of its own for the cluster and
priority tests (a blocking client runs the global reactor in a thread,
which a trial process must keep for itself), and prints what it did as one
JSON line.

    python -m tests.integration.cluster_client BROKER BACKEND QUEUE < request.json

The request: ``{"client": {keyword arguments of Client}, "tasks": [{"task":
name, "args": [...], "priority": N}], "wait": seconds, "purge": true}``.
The tasks are published in one ``publish_many`` per priority, in order;
with ``wait``, their outcomes are awaited; with ``purge``, the queue is
purged after.  Prints ``{"ids": [...], "published_at": time, "confirmed_at": time,
"seconds": ..., "statuses": [...], "purged": N}`` (the times the first
publish began and the last was confirmed).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

from twistedq.client import Client
from twistedq.message import TaskMessage, new_task_id


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    client = Client(broker_url=broker, result_backend=backend, queue=queue, **request["client"])
    report: dict[str, Any] = {"ids": [], "published_at": time.time()}
    started = time.monotonic()
    tasks = request.get("tasks", [])
    for priority, group in itertools.groupby(tasks, key=lambda t: t.get("priority")):
        messages = [
            TaskMessage(id=new_task_id(), task=t["task"], args=tuple(t.get("args", ())))
            for t in group
        ]
        client.publish_many(messages, priority=priority)
        report["ids"].extend(m.id for m in messages)
    report["seconds"] = time.monotonic() - started
    report["confirmed_at"] = time.time()
    if request.get("wait"):
        report["statuses"] = [
            str(client.wait_outcome(task_id, timeout=request["wait"]).status)
            for task_id in report["ids"]
        ]
    if request.get("purge"):
        report["purged"] = client.purge()
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
