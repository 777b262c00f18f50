"""
Exceptions a task's caller may see in its result, importable on both sides.
"""

from __future__ import annotations

__all__ = [
    "MaxRetriesExceededError",
    "ResultIgnored",
    "ResultTooLarge",
    "Retry",
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "WorkerLostError",
]


class SoftTimeLimitExceeded(Exception):
    """
    Raised inside a task when it runs past its soft time limit, so it can
    clean up; a task that lets it propagate fails with it.
    """


class TimeLimitExceeded(Exception):
    """
    The outcome of a task that ran past its hard time limit: the child
    running it was killed.
    """


class WorkerLostError(Exception):
    """
    The outcome of a task whose child process died while running it (a
    signal, a segfault, ``os._exit``, out of memory) on every attempt.
    """


class Retry(Exception):
    """
    Raised by :py:func:`twistedq.task.retry` (and :py:meth:`Task.retry
    <twistedq.task.Task.retry>`) to ask for the task to run again later.
    The child turns it into a ``RETRY`` outcome while the task has retries
    left, else into the task's failure.

    :ivar exc: the exception that made the task retry, if any; the task
        fails with it when it has no retries left.
    :ivar countdown: run again after this many seconds, if given.
    :ivar eta: run again at this Unix time, if given.
    :ivar max_retries: this call's limit on retries instead of the task's,
        if given.
    """

    def __init__(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        if countdown is not None and eta is not None:
            raise ValueError("give countdown or eta, not both")
        if countdown is not None:
            when = f" in {countdown:g} s"
        elif eta is not None:
            when = f" at Unix time {eta:.3f}"
        else:
            when = ""
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(f"retry{when}{reason}")
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        self.max_retries = max_retries


class MaxRetriesExceededError(Exception):
    """
    The outcome of a task that asked to retry, without an exception of
    its own, when it had no retries left.
    """


class ResultTooLarge(Exception):
    """
    The outcome of a task whose outcome document (its return value, or
    its exception's message, arguments and traceback) is larger than the
    daemon's result size limit (``--max-result-size``, 8 MiB by default).
    The child replaces it before it leaves the child: the value never
    reaches the daemon nor the result store.

    ``str()`` is the message, which names the task, the size and the
    limit, and what the task returned or raised.

    :ivar size: the size of the outcome document, in bytes.
    :ivar limit: the limit it passed, in bytes.
    """

    def __init__(self, message: str, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message, size, limit)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return str(self.args[0])


class ResultIgnored(Exception):
    """
    ``get()`` of a task published with ``ignore_result``: nothing of it is
    stored, so there is no result to wait for.
    """
