"""
:py:obj:`AsyncResult`, the handle of one published task, and
:py:obj:`TaskSetResult`, the handle of a taskset.

Waiting never busy-polls: ``get()`` is woken by the store's notification
where it has one (Redis), else reads with a pause doubling from half a
millisecond up to 50 ms; ``join()`` reads taskset progress with that
back-off.  Waiting from
inside a task raises :py:obj:`WaitInTaskError` at once, since the task waited
for may need the very child that waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twistedq import context
from twistedq.outcome import SEED_SUCCESS, Outcome
from twistedq.states import FAILURE, PENDING, REVOKED, SUCCESS

if TYPE_CHECKING:
    from twistedq.client import Client

__all__ = [
    "AsyncResult",
    "Status",
    "TaskRevokedError",
    "TaskSetResult",
    "WaitInTaskError",
    "refuse_wait_in_task",
]

#: First and largest pause between two reads while waiting, in seconds.
POLL_START = 0.0005
POLL_MAX = 0.05


class WaitInTaskError(RuntimeError):
    """
    A task tried to wait for other tasks' results.  With every child busy
    waiting, nothing would run the tasks waited for: the pool would hang.
    Publish the subtasks and return their ids (or the taskset id) instead.
    """


class TaskRevokedError(Exception):
    """
    The task was not run: it was revoked (for example, it expired before a
    daemon could run it).
    """


class Status(str):
    """
    A task state.  It is a string (``result.status == "SUCCESS"``) that may
    also be called, as the seed's ``result.status()`` was.
    """

    def __call__(self) -> str:
        return str(self)


def refuse_wait_in_task(what: str) -> None:
    """
    Refuse to wait for other tasks inside a task.

    :param what: the call that would wait, for the message.
    :raises WaitInTaskError: this process is a pool child.
    """
    child = context.current_child()
    if child is not None:
        raise WaitInTaskError(
            f"{what} inside a task ({child}) could wait for ever: the "
            "tasks it waits for may need this very child. Publish them and return "
            "their ids instead, or use dmap_async."
        )


def _left(deadline: float | None) -> float | None:
    """
    The seconds left until ``deadline`` (a ``time.monotonic()`` time), at
    least 0; None for no deadline.
    """
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _wait_until(ready: Callable[[], bool], timeout: float | None, what: str) -> None:
    """
    Call ``ready`` with doubling pauses until it is true.

    :raises TimeoutError: still not ready after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = POLL_START
    while not ready():
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} not ready within {timeout} s")
            pause = min(pause, left)
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)


class AsyncResult:
    """
    The result of a task, read from the result store on demand.

    :ivar task_id: the task's UUID.
    :ivar parent: the result of the task before it in a chain (the header's
        :py:class:`TaskSetResult` for a chord's callback), when this
        result was given by publishing the workflow; else :py:obj:`None`.
    """

    def __init__(
        self,
        task_id: str,
        client: Client | None = None,
        parent: AsyncResult | TaskSetResult | None = None,
    ) -> None:
        self.task_id = task_id
        self._client = client
        self.parent = parent
        self._outcome: Outcome | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)

    @property
    def client(self) -> Client:
        """
        The client that reads the store (the default one unless given).
        """
        if self._client is None:
            self._client = context.default_client()
        return self._client

    def _read(self) -> Outcome:
        outcome = self._outcome
        if outcome is None or not outcome.ready:
            outcome = self.client.get_outcome(self.task_id)
            self._set(outcome)
        return outcome

    def _set(self, outcome: Outcome) -> None:
        if outcome.ready:
            self._outcome = outcome

    @property
    def status(self) -> Status:
        """
        The task's state: ``"PENDING"``, ``"SUCCESS"`` (``"DONE"`` with the
        seed compatibility switch), ``"FAILURE"`` or ``"REVOKED"``.
        """
        status = self._read().status
        if status == SUCCESS and self.client.settings.seed_states:
            status = SEED_SUCCESS
        return Status(status)

    state = status

    def ready(self) -> bool:
        """
        Whether the task has finished (succeeded, failed or was revoked).
        """
        return self._read().ready

    def successful(self) -> bool:
        """
        Whether the task finished and returned a value.
        """
        return self._read().status == SUCCESS

    is_done = successful

    def failed(self) -> bool:
        """
        Whether the task finished by raising an exception.
        """
        return self._read().status == FAILURE

    def known(self) -> bool:
        """
        Whether the store knows this task: finished, or recorded as
        published and waiting.  False for an id that was never published
        (or whose record expired or was forgotten).
        """
        return self._read().known

    def queued(self) -> bool:
        """
        Whether the task was published and has not finished yet.
        """
        outcome = self._read()
        return outcome.status == PENDING and outcome.known

    @property
    def result(self) -> Any:
        """
        The return value; the exception for a failed task; :py:obj:`None`
        while it is not ready.
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

        The last result of a chain (its ``parent`` is an
        :py:class:`AsyncResult`) waits for the tasks before it first, from
        the first one: the exception of a step that failed is raised (and
        :py:class:`TaskRevokedError` for one revoked), since the steps
        after it never run.

        :raises TimeoutError: not ready within ``timeout`` seconds.
        :raises WaitInTaskError: called inside a task.
        """
        refuse_wait_in_task("AsyncResult.get()")
        if isinstance(self.parent, AsyncResult) and not self._read().ready:
            return self._chain_value(timeout)
        return self._value(timeout)

    def _chain_value(self, timeout: float | None) -> Any:
        """
        The value of the last result of a chain, each step waited for in
        turn within one ``timeout``.

        :raises TimeoutError: a step was not ready in time; the text names
            the chain, its timeout and the step.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        steps = [*reversed(self._ancestors()), self]
        for number, step in enumerate(steps, 1):
            try:
                value = step._value(_left(deadline))
            except TimeoutError as e:
                raise TimeoutError(
                    f"chain ending in task {self.task_id} not ready within {timeout} s: "
                    f"step {number} of {len(steps)} (task {step.task_id}) has not finished"
                ) from e
        return value

    def _ancestors(self) -> list[AsyncResult]:
        """
        The results before this one in its chain, the nearest first.
        """
        found = []
        parent = self.parent
        while isinstance(parent, AsyncResult):
            found.append(parent)
            parent = parent.parent
        return found

    def _value(self, timeout: float | None) -> Any:
        outcome = self._outcome
        if outcome is None or not outcome.ready:
            outcome = self.client.wait_outcome(self.task_id, timeout)
            self._set(outcome)
        if outcome.status == FAILURE:
            raise outcome.exception()
        if outcome.status == REVOKED:
            raise TaskRevokedError(f"task {self.task_id} was revoked: {outcome.reason}")
        return outcome.result

    wait = get

    def forget(self) -> None:
        """
        Delete the task's stored outcome.
        """
        self.client.forget([self.task_id])
        self._outcome = None

    def revoke(self, reason: str = "revoked") -> bool:
        """
        Revoke the task if it has not run yet: no daemon will run it, even
        one that was down when it was revoked (the revocation is an outcome
        in the result store, checked when a daemon receives the task and
        when its ETA comes).  A task already running is not stopped.
        Returns whether it was revoked (False if it had already finished).
        """
        self._outcome = None
        return bool(self.client.revoke([self.task_id], reason))


class TaskSetResult:
    """
    The results of a taskset's subtasks.  Progress (``completed_count``,
    ``ready``, ``failed``) is one read of a counter the result store keeps;
    the values are read only by :py:obj:`join` and :py:obj:`iterate`.

    :ivar taskset_id: the taskset's UUID.
    :ivar subtasks: the subtasks' :py:obj:`AsyncResult`, in call order.
    """

    def __init__(
        self, taskset_id: str, subtasks: list[AsyncResult], client: Client | None = None
    ) -> None:
        self.taskset_id = taskset_id
        self.subtasks = subtasks
        self._client = client

    def __repr__(self) -> str:
        return f"<TaskSetResult {self.taskset_id} ({self.total} subtasks)>"

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = context.default_client()
        return self._client

    @property
    def total(self) -> int:
        """
        How many subtasks the taskset has.
        """
        return len(self.subtasks)

    def _progress(self) -> tuple[int, int]:
        state = self.client.get_taskset(self.taskset_id)
        if state is None:
            return 0, 0
        return state.completed, state.failed

    def completed_count(self) -> int:
        """
        How many subtasks have finished (succeeded or failed): one store read.
        """
        return self._progress()[0]

    def ready(self) -> bool:
        """
        Whether every subtask has finished.
        """
        return self.completed_count() >= self.total

    def waiting(self) -> bool:
        """
        Whether some subtask has not finished yet.
        """
        return not self.ready()

    def failed(self) -> bool:
        """
        Whether any subtask failed.
        """
        return self._progress()[1] > 0

    def successful(self) -> bool:
        """
        Whether every subtask finished and none failed.
        """
        completed, failures = self._progress()
        return completed >= self.total and failures == 0

    def join(self, timeout: float | None = None) -> list[Any]:
        """
        Wait for every subtask; return their values in call order, or raise
        the exception of the first failed subtask in call order.

        :raises TimeoutError: not all finished within ``timeout`` seconds.
        :raises WaitInTaskError: called inside a task.
        """
        refuse_wait_in_task("TaskSetResult.join()")
        _wait_until(self.ready, timeout, f"taskset {self.taskset_id}")
        values = []
        ids = [subtask.task_id for subtask in self.subtasks]
        for start in range(0, len(ids), 1000):
            for outcome in self.client.get_outcomes(ids[start : start + 1000]):
                if outcome.status == FAILURE:
                    raise outcome.exception()
                if outcome.status == REVOKED:
                    raise TaskRevokedError(f"task {outcome.task_id} was revoked: {outcome.reason}")
                values.append(outcome.result)
        return values

    def iterate(self, timeout: float | None = None) -> Iterator[Any]:
        """
        Yield the subtasks' values in call order, each as soon as it is
        ready; raise a failed subtask's exception when its turn comes.
        """
        for subtask in self.subtasks:
            yield subtask.get(timeout=timeout)
