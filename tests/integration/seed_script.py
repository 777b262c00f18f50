"""
The seed README's client-side examples, run in a process of their own with
the settings in the environment (``TWISTEDQ_BROKER_URL``,
``TWISTEDQ_RESULT_BACKEND``, ``TWISTEDQ_QUEUE``, ``TWISTEDQ_SEED_STATES``),
as a Django view would.  Prints one JSON line.

    python -m tests.integration.seed_script MODE
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request


def readme() -> dict[str, object]:
    from twistedq.task import delay_task, tasks

    report: dict[str, object] = {}
    result = delay_task("do_something", some_arg="foo bar baz")
    report["ready_at_once"] = result.ready()
    report["queued_at_once"] = result.queued()
    report["get"] = result.get()
    report["status_call"] = result.status()
    report["status"] = str(result.status)
    report["is_done"] = result.is_done()

    failing = delay_task("divide", 1, 0)
    try:
        failing.get(timeout=30)
    except ZeroDivisionError:
        report["raised"] = "ZeroDivisionError"
    report["failing_status"] = failing.status()
    report["failing_result"] = repr(failing.result)

    report["periodic"] = delay_task("foo.my-periodic-task").get(timeout=30)
    report["discovered"] = delay_task("increment_click", "/home").get(timeout=30)

    unknown = __import__("twistedq.result", fromlist=["AsyncResult"]).AsyncResult(
        "00000000-0000-4000-8000-000000000000"
    )
    report["unknown_known"] = unknown.known()
    report["registry_is_local"] = "do_something" not in tasks
    return report


def taskset(port: int) -> dict[str, object]:
    from twistedq.task import TaskSet

    result = TaskSet("pause", [((0.002,), {}) for _ in range(500)]).run()
    counts = []
    bodies = []
    while True:
        done = result.completed_count()
        counts.append(done)
        if done >= result.total:
            break
        if len(bodies) < 3:
            url = f"http://127.0.0.1:{port}/celery/taskset/{result.taskset_id}/status/"
            with urllib.request.urlopen(url, timeout=10) as response:
                bodies.append(json.load(response))
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}/celery/taskset/{result.taskset_id}/status/"
    with urllib.request.urlopen(url, timeout=10) as response:
        final = json.load(response)
    return {
        "counts": counts,
        "total": result.total,
        "ready": result.ready(),
        "successful": result.successful(),
        "failed": result.failed(),
        "join": result.join(timeout=60)[:3],
        "bodies": bodies,
        "final": final,
        "taskset_id": result.taskset_id,
    }


def mapping() -> dict[str, object]:
    from twistedq.task import delay_task, dmap

    report: dict[str, object] = {}
    started = time.monotonic()
    report["squares"] = dmap("square", range(1000), timeout=120)
    report["seconds"] = time.monotonic() - started
    try:
        dmap("fail_on", [(i, 7) for i in range(20)], timeout=60)
    except ValueError as e:
        report["raised"] = str(e)
    nested = delay_task("nested_dmap", 10)
    started = time.monotonic()
    try:
        nested.get(timeout=30)
    except Exception as e:
        report["nested"] = [type(e).__name__, str(e)]
    report["nested_seconds"] = time.monotonic() - started
    return report


def main() -> None:
    mode = sys.argv[1]
    if mode == "readme":
        report = readme()
    elif mode == "taskset":
        report = taskset(int(sys.argv[2]))
    elif mode == "dmap":
        report = mapping()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
