"""
Tasks of the cluster tests: one that records its run, and one that makes
the daemon itself exit before the task can be settled (it runs on the
daemon's reactor: ``--reactor-tasks``).
"""

import os
import time

from twistedq.task import task


@task(name="cluster.record")
def record(index: int, pause: float = 0.001) -> int:
    """
    Append ``<index> <pid> <time started>`` to ``$TWISTEDQ_TEST_RUNS_FILE``,
    sleep ``pause`` seconds and return the index.
    """
    line = f"{index} {os.getpid()} {time.time()}\n".encode()
    descriptor = os.open(
        os.environ["TWISTEDQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    time.sleep(pause)
    return index


@task(name="cluster.exit_daemon", on_reactor=True)
async def exit_daemon() -> None:
    """
    End the daemon at once, as a crash would: no outcome, no ack.
    """
    os._exit(3)
