"""
Remote control from a blocking program, as the command line does it:
:py:class:`twistedq.control.ControlClient` on the reactor thread of
:py:mod:`twistedq.reactor_thread`, beside the blocking client.  Prints one
JSON line.

    python -m tests.integration.control_script BROKER BACKEND QUEUE < request.json

The request is one of ``{"mode": "broadcast", "command": ..., "arguments":
{...}, "destination": [...], "timeout": s, "limit": n}``, ``{"mode":
"revoke", "ids": [...], "terminate": bool, "destination": [...],
"limit": n, "wait_revoked": bool}``, ``{"mode": "delay", "task":
name, "args": [...]}`` (publish, do not wait) and ``{"mode": "statuses",
"ids": [...]}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twistedq.client import Client
from twistedq.control import ControlClient, revoke_tasks
from twistedq.reactor_thread import reactor_thread


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    mode = request["mode"]
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    report: dict[str, Any] = {}
    if mode == "delay":
        report["id"] = client.delay_task(request["task"], *request["args"]).task_id
    elif mode == "statuses":
        report["statuses"] = [str(client.get_outcome(i).status) for i in request["ids"]]
    else:
        asynchronous = client._client()
        control = ControlClient(
            asynchronous.connection,
            client.settings.exchange,
            reactor_thread.reactor,
            client.settings.signing(),
        )
        timeout = request.get("timeout", 2.0)
        started = time.monotonic()
        if mode == "broadcast":
            report["replies"] = reactor_thread.call(
                control.broadcast,
                request["command"],
                request.get("arguments"),
                request.get("destination"),
                timeout,
                request.get("limit"),
                timeout=timeout + 30,
            )
        elif mode == "revoke":
            report.update(
                reactor_thread.call(
                    lambda: revoke_tasks(
                        asynchronous,
                        control,
                        request["ids"],
                        terminate=request.get("terminate", False),
                        timeout=timeout,
                        destination=request.get("destination"),
                        limit=request.get("limit"),
                    ),
                    timeout=timeout + 30,
                )
            )
            if request.get("wait_revoked"):
                # How long after the request its tasks were REVOKED in the store.
                deadline = started + 60
                while time.monotonic() < deadline:
                    statuses = [str(client.get_outcome(i).status) for i in request["ids"]]
                    if statuses == ["REVOKED"] * len(statuses):
                        report["revoked_after"] = time.monotonic() - started
                        break
                    time.sleep(0.02)
        report["seconds"] = time.monotonic() - started
    print(json.dumps(report))


if __name__ == "__main__":
    main()
