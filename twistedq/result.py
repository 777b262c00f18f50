"""
:py:obj:`AsyncResult`: the handle of one published task.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twistedq.outcome import Outcome
from twistedq.states import FAILURE, SUCCESS

if TYPE_CHECKING:
    from twistedq.client import Client

__all__ = ["AsyncResult", "Status"]


class Status(str):
    """
    A task state.  It is a string (``result.status == "SUCCESS"``) that may
    also be called, as the seed's ``result.status()`` was.
    """

    def __call__(self) -> str:
        return str(self)


class AsyncResult:
    """
    The result of a task, read from the result store on demand.

    :ivar task_id: the task's UUID.
    """

    #: First and largest pause between two reads while waiting.
    POLL_START = 0.0005
    POLL_MAX = 0.05

    def __init__(self, task_id: str, client: Client | None = None) -> None:
        self.task_id = task_id
        self._client = client
        self._outcome: Outcome | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_id}>"

    @property
    def client(self) -> Client:
        if self._client is None:
            from twistedq.client import default_client

            self._client = default_client()
        return self._client

    def _read(self) -> Outcome:
        outcome = self._outcome
        if outcome is None or not outcome.ready:
            outcome = self.client.get_outcome(self.task_id)
            if outcome.ready:
                self._outcome = outcome
        return outcome

    @property
    def status(self) -> Status:
        """
        The task's state, e.g. ``"PENDING"``, ``"SUCCESS"``, ``"FAILURE"``.
        """
        return Status(self._read().status)

    def ready(self) -> bool:
        """
        Whether the task has finished (succeeded or failed).
        """
        return self._read().ready

    def successful(self) -> bool:
        """
        Whether the task finished and returned a value.
        """
        return self._read().status == SUCCESS

    def failed(self) -> bool:
        """
        Whether the task finished by raising an exception.
        """
        return self._read().status == FAILURE

    @property
    def result(self) -> Any:
        """
        The return value; the exception for a failed task; :py:obj:`None` while it
        is not ready.
        """
        outcome = self._read()
        if outcome.status == FAILURE:
            return outcome.exception()
        return outcome.result

    @property
    def traceback(self) -> str | None:
        """
        The traceback text of a failed task.
        """
        return self._read().traceback

    def get(self, timeout: float | None = None) -> Any:
        """
        Wait until the task is ready and return its value, or raise the
        exception it raised (rebuilt here; see
        :py:obj:`twistedq.outcome.Outcome.exception`).

        :raises TimeoutError: not ready within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = self.POLL_START
        while True:
            outcome = self._read()
            if outcome.ready:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {self.task_id} not ready within {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, self.POLL_MAX)
        if outcome.status == FAILURE:
            raise outcome.exception()
        return outcome.result

    wait = get
