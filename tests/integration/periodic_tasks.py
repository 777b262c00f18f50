"""
A periodic task for the scheduler's integration tests.  Each run
appends ``<task id> <daemon pid>`` to the file named by
``TWISTEDQ_TEST_BEAT_FILE``; the task's name comes from
``TWISTEDQ_TEST_BEAT_NAME`` so that each test run has fresh periodic state.
It runs every second, or every ``TWISTEDQ_TEST_BEAT_EVERY`` seconds, with
the catch-up policy ``TWISTEDQ_TEST_BEAT_CATCH_UP`` (``"once"`` if unset).
"""

import os

from twistedq.task import PeriodicTask, tasks


class Beat(PeriodicTask):
    name = os.environ.get("TWISTEDQ_TEST_BEAT_NAME", "tests.integration.beat")
    run_every = float(os.environ.get("TWISTEDQ_TEST_BEAT_EVERY", "1"))
    catch_up = os.environ.get("TWISTEDQ_TEST_BEAT_CATCH_UP", "once")

    def run(self, task_id: str, **kwargs: object) -> None:
        line = f"{task_id} {os.getppid()}\n".encode()
        descriptor = os.open(
            os.environ["TWISTEDQ_TEST_BEAT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
        )
        try:
            os.write(descriptor, line)  # one small O_APPEND write: lines never interleave
        finally:
            os.close(descriptor)


tasks.register(Beat)
