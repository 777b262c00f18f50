"""
The tasks of the many-daemons test: the one-second periodic task of
:py:mod:`tests.integration.periodic_tasks`, and ``fault.record`` (the name
:py:mod:`tests.integration.fault_publisher` publishes), which appends
``<task id> <daemon pid>`` to ``$TWISTEDQ_TEST_RUNS_FILE``.
"""

import os

import tests.integration.periodic_tasks  # noqa: F401  (registers the periodic task)
from twistedq.task import tasks


def record(index: int, task_id: str, **kwargs: object) -> int:
    line = f"{task_id} {os.getppid()}\n".encode()
    descriptor = os.open(
        os.environ["TWISTEDQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(descriptor, line)  # one small O_APPEND write: lines never interleave
    finally:
        os.close(descriptor)
    return index


tasks.register(record, "fault.record")
