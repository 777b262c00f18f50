"""
Pieces shared by the unit tests' fakes.
"""

import time


def wait_by_polling(client, task_id, timeout=None):
    """
    What the real client's ``wait_outcome`` promises, for a fake client
    with ``get_outcome``: read until ready, TimeoutError past ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        outcome = client.get_outcome(task_id)
        if outcome.ready:
            return outcome
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"task {task_id} not ready within {timeout} s")
        time.sleep(0.001)
