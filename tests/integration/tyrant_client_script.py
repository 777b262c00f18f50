"""
The client side of the Tokyo Tyrant end-to-end test, in a process of its
own as a Django view's would be: 200 tasks, a failure, a taskset.  Prints
what it saw as one JSON line.

    python -m tests.integration.tyrant_client_script BROKER BACKEND QUEUE
"""

from __future__ import annotations

import json
import sys

from tests.integration.tasks import TaskFailed
from twistedq.client import Client
from twistedq.task import TaskSet


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    report: dict[str, object] = {}
    results = [client.delay_task("add", i, i) for i in range(200)]
    report["values"] = [result.get(timeout=60) for result in results]
    report["statuses"] = sorted({str(result.status) for result in results})
    report["done_id"] = results[-1].task_id

    failed = client.delay_task("fail", "boom")
    try:
        failed.get(timeout=30)
    except TaskFailed as error:
        report["raised"] = ["TaskFailed", str(error)]
    report["failed_id"] = failed.task_id
    report["failed_status"] = str(failed.status)

    taskset = TaskSet("add", [((i, 1), {}) for i in range(20)], client).run(queue)
    progress = [taskset.completed_count()]
    report["joined"] = taskset.join(timeout=60)
    progress.append(taskset.completed_count())
    report["progress"] = progress
    report["ready"] = taskset.ready()
    report["taskset_failed"] = taskset.failed()
    report["taskset_id"] = taskset.taskset_id
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
