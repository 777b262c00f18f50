"""
Publishes workflows with the blocking client in a process of its own and
prints what it saw, one JSON object a line.

    python -m tests.integration.canvas_script BROKER BACKEND QUEUE < request.json
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from tests.integration import canvas_tasks as t
from twistedq.canvas import chain, chord
from twistedq.client import Client, set_default_client


def say(report: dict[str, Any]) -> None:
    print(json.dumps(report), flush=True)


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    set_default_client(client)
    mode = request["mode"]
    if mode == "chain":
        last = chain(t.add.s(2, 2), t.mul.s(4), t.mul.s(10)).delay()
        piped = (t.add.s(1, 1) | t.mul.si(3, 3)).delay()
        say(
            {
                "values": [last.parent.parent.get(30), last.parent.get(30), last.get(30)],
                "immutable": piped.get(30),
            }
        )
    elif mode == "links":
        link_path, error_path = request["link"], request["error"]
        callbacks = {
            "link": t.record.s(path=link_path),
            "link_error": t.record.s(path=error_path),
        }
        worked = t.add.apply_async((20, 22), **callbacks)
        failed = t.fail.apply_async(("boom",), **callbacks)
        say({"worked": worked.get(30), "failed": failed.task_id})
    elif mode == "chord":
        members = [
            t.member.s(i, request["members"], request["pause"]) for i in range(request["size"])
        ]
        result = chord(members)(t.tsum.s(path=request["callback"]))
        say({"id": result.task_id, "taskset": result.parent.taskset_id})
        say({"value": result.get(request["timeout"])})
    elif mode == "redelivered":
        # The same message again, now with a link: as if the daemon that
        # stored its outcome had died before publishing the link and acking.
        task_id = str(uuid.uuid4())
        first = t.add.apply_async((3, 4), task_id=task_id).get(30)
        t.add.apply_async((3, 4), task_id=task_id, link=t.record.s(path=request["link"]))
        say({"first": first, "id": task_id})
    elif mode == "done":
        say({"value": t.add.delay(0, 0).get(30), "unknown": str(uuid.uuid4())})
    client.close()


if __name__ == "__main__":
    main()
