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
    elif mode == "threads":
        import threading

        values: dict[int, list[int]] = {}

        def work(thread: int) -> None:
            results = [client.delay_task("add", thread, i) for i in range(count)]
            values[thread] = [r.get(timeout=60) for r in results]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["values"] = {str(t): v for t, v in sorted(values.items())}
    elif mode == "fork":
        import os

        from twistedq.reactor_thread import ForkError

        fresh = Client(broker_url=broker, result_backend=backend, queue=queue)
        pid = os.fork()
        if pid == 0:
            # A client first used after the fork works in the child.
            code = 0 if fresh.delay_task("add", 1, 1).get(timeout=30) == 2 else 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        report["fresh_child_exit"] = os.waitstatus_to_exitcode(status)
        report["parent_after_fork"] = fresh.delay_task("add", 2, 2).get(timeout=30)
        pid = os.fork()
        if pid == 0:
            # The reactor thread of the parent does not exist here.
            try:
                fresh.delay_task("add", 3, 3)
            except ForkError as e:
                os._exit(0 if "os.fork()" in str(e) else 4)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        report["used_child_exit"] = os.waitstatus_to_exitcode(status)
        fresh.close()
    elif mode == "revoke":
        from twistedq.task import publish_task

        result = publish_task(
            "echo", ["must not run"], countdown=request.get("countdown"), client=client
        )
        report["id"] = result.task_id
        report["revoked"] = result.revoke()
        report["again"] = result.revoke()
    elif mode == "apply":
        from twistedq.task import publish_task

        report["publishing_at"] = time.time()
        result = publish_task(
            request["task"], request["args"], countdown=request.get("countdown"), client=client
        )
        report["id"] = result.task_id
        if request.get("wait", True):
            try:
                report["value"] = result.get(timeout=request.get("timeout", 60))
            except Exception as e:
                report["raised"] = [type(e).__name__, str(e)]
            report["status"] = str(result.status)
    elif mode == "status":
        outcome = client.get_outcomes([request["id"]])[0]
        report["status"] = str(outcome.status)
        report["retries"] = outcome.retries
        report["eta"] = outcome.eta
    elif mode == "revoke_running":
        result = client.delay_task("sleep", 2)
        time.sleep(1)
        report["revoked"] = result.revoke()
        report["value"] = result.get(timeout=30)
    elif mode == "send":
        report["id"] = client.delay_task(request["task"], *request["args"]).task_id
    elif mode == "statuses":
        report["statuses"] = [
            str(outcome.status) for outcome in client.get_outcomes(request["ids"])
        ]
    elif mode == "publish":
        results = [client.delay_task("add", i, 1) for i in range(count)]
        report["ids"] = [r.task_id for r in results]
    else:
        raise SystemExit(f"unknown mode {mode}")
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
