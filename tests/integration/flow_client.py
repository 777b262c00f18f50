"""
Publishes groups of tasks with the blocking client, in a process of its
own, and prints what became of them as one JSON line
(``tests/integration/test_flow.py``).

    python -m tests.integration.flow_client BROKER BACKEND < request.json

The request: ``{"groups": [{"name": g, "task": t, "args": [...],
"count": n, "queue": q, "expires": iso, "eta": iso,
"rate_limit": rate}, ...], "wait": [g, ...],
"count_done": [g, ...]}``.  Every group is published in order (each in
one call), then the results of the ``wait`` groups are awaited; then how
many tasks of each ``count_done`` group are done is read; then every
other group is awaited.  It prints ``published`` (the time before the
first publish), per group its ``values`` and, for ``count_done`` groups,
``done_when_waited``.
"""

from __future__ import annotations

import json
import sys
import time

from twistedq.client import Client
from twistedq.message import TaskMessage, new_task_id
from twistedq.result import AsyncResult


def _value(result: AsyncResult) -> object:
    """
    The task's value, or the name of the exception it raised.
    """
    try:
        return result.get(timeout=90)
    except Exception as e:
        return type(e).__name__


def main() -> None:
    broker, backend = sys.argv[1:3]
    request = json.load(sys.stdin)
    client = Client(broker_url=broker, result_backend=backend)
    report: dict[str, object] = {"published": time.time()}
    ids: dict[str, list[str]] = {}
    for group in request["groups"]:
        messages = [
            TaskMessage(
                id=new_task_id(),
                task=group["task"],
                args=tuple(group.get("args", ())),
                expires=group.get("expires"),
                eta=group.get("eta"),
                rate_limit=group.get("rate_limit"),
            )
            for _ in range(group["count"])
        ]
        client.publish_many(messages, group["queue"])
        ids[group["name"]] = [message.id for message in messages]

    def values(name: str) -> list[object]:
        results = [AsyncResult(task_id, client) for task_id in ids[name]]
        return [_value(result) for result in results]

    for name in request.get("wait", []):
        report[name] = values(name)
    for name in request.get("count_done", []):
        outcomes = client.get_outcomes(ids[name])
        report[f"{name}_done_when_waited"] = sum(o.status == "SUCCESS" for o in outcomes)
    for name in ids:
        if name not in report:
            report[name] = values(name)
    report["ids"] = ids
    print(json.dumps(report, default=str))
    client.close()


if __name__ == "__main__":
    main()
