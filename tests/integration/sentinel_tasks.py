"""
The task of the Sentinel failover test.  Each run appends ``<task id>
<child pid>`` to ``$TWISTEDQ_TEST_RUNS_FILE``, and first asks the primary
the sentinels name whether the task's outcome is committed already: if it
is, the run should never have happened, and the line says
``after-commit``.
"""

import os
import time

from tests.integration import sentinel_set
from twistedq.task import tasks

_RESULT_PREFIX = "twistedq:result:"


def _committed(task_id: str) -> bool:
    """
    Whether the primary holds a final outcome for the task; False when it
    cannot be asked.
    """
    try:
        document = sentinel_set.command(sentinel_set.primary(), "GET", _RESULT_PREFIX + task_id)
    except (OSError, RuntimeError, ValueError):
        return False
    return isinstance(document, bytes) and (
        b'"status":"SUCCESS"' in document or b'"status":"FAILURE"' in document
    )


def record(index: int, task_id: str, **kwargs: object) -> int:
    late = " after-commit" if _committed(task_id) else ""
    line = f"{task_id} {os.getpid()}{late}\n".encode()
    descriptor = os.open(
        os.environ["TWISTEDQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    time.sleep(0.002)
    return index


tasks.register(record, "sentinel.record")
# The name tests.integration.fault_publisher publishes.
tasks.register(record, "fault.record")
