"""
Publishes the workflows of :py:mod:`tests.integration.test_canvas_faults`
with the blocking client in a process of its own and prints what it saw,
one JSON object a line.

    python -m tests.integration.canvas_faults_script BROKER BACKEND QUEUE < request.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.integration import canvas_tasks as t
from twistedq.canvas import chain, chord
from twistedq.client import Client, set_default_client
from twistedq.result import AsyncResult
from twistedq.task import TaskSet


def say(report: dict[str, Any]) -> None:
    print(json.dumps(report), flush=True)


def outcome(call: Any) -> dict[str, Any]:
    """
    What ``call()`` returned, or the class and text of what it raised.
    """
    try:
        return {"value": call()}
    except Exception as e:
        return {"raised": type(e).__name__, "text": str(e)}


def revoked_members(request: dict[str, Any]) -> None:
    """
    A chord of three and a TaskSet of two, each with its second member
    revoked while queued (no daemon runs yet): says the ids, then, once a
    daemon runs, what waiting for them gives.
    """
    callback = t.record.s(path=request["callback"])
    callback.link_error(t.record.s(path=request["errback"]))
    result = chord([t.add.s(i, i) for i in range(3)])(callback)
    taskset = TaskSet("canvas.add", [((i, i), {}) for i in range(2)]).run()
    revoked = [result.parent.subtasks[1].revoke(), taskset.subtasks[1].revoke()]
    say({"revoked": revoked, "callback": result.task_id})
    timeout = request["timeout"]
    say(
        {
            "callback": outcome(lambda: result.get(timeout)),
            "statuses": [s.status for s in result.parent.subtasks],
            "taskset": outcome(lambda: taskset.join(timeout)),
        }
    )


def bad_queues(request: dict[str, Any]) -> None:
    """
    A chain whose second step goes to ``amq.typo`` (refused before it is
    published); one whose second step goes to a queue the daemon's broker
    user may not declare (its FAILURE stored by the daemon); then a good
    chain.
    """
    refused = outcome(lambda: chain(t.add.s(1, 1), t.mul.s(2).set(queue="amq.typo")).delay())
    refused.pop("value", None)
    forbidden = chain(t.add.s(1, 1), t.mul.s(2).set(queue=request["forbidden"])).delay()
    timeout = request["timeout"]
    say(
        {
            "refused": refused,
            "forbidden": outcome(lambda: forbidden.get(timeout)),
            "first": forbidden.parent.get(timeout),
            "good": chain(t.add.s(2, 2), t.mul.s(4)).delay().get(timeout),
        }
    )


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    set_default_client(client)
    if request["mode"] == "revoked":
        revoked_members(request)
    elif request["mode"] == "bad_queues":
        bad_queues(request)
    elif request["mode"] == "status":
        say({"status": AsyncResult(request["id"]).status})
    client.close()


if __name__ == "__main__":
    main()
